//! The push half of a pass: the outbox in bounded batches, one request per
//! workspace, a batch the remote finds too large split in halves, each
//! outcome mapped to acknowledge or dead letter.

use std::collections::VecDeque;

use automerge::ChangeHash;

use super::{unexpected, Ctx, Effect, EffectId, Outcome, Sub, SyncProgress};
use crate::error::Error;
use crate::id::WorkspaceId;
use crate::protocol::wire::{ChangeEnvelope, PushOutcome, PushRequest, PushResponse, WIRE_VERSION};
use crate::remote::RemoteError;
use crate::store::OutboxEntry;

/// Groups a peeked batch by workspace, each group in outbox order (a
/// document belongs to one workspace, so its changes stay in order), groups
/// in the order their first entry appears.
pub(crate) fn group_by_workspace(batch: Vec<OutboxEntry>) -> Vec<(WorkspaceId, Vec<OutboxEntry>)> {
    let mut groups: Vec<(WorkspaceId, Vec<OutboxEntry>)> = Vec::new();
    for e in batch {
        match groups.iter_mut().find(|(ws, _)| *ws == e.workspace) {
            Some((_, g)) => g.push(e),
            None => groups.push((e.workspace, vec![e])),
        }
    }
    groups
}

/// The request that pushes `batch` of workspace `ws`.
pub(crate) fn request(ws: WorkspaceId, batch: &[OutboxEntry]) -> PushRequest {
    PushRequest {
        v: WIRE_VERSION,
        workspace: ws,
        changes: batch
            .iter()
            .map(|e| ChangeEnvelope {
                doc_id: e.doc_id,
                collection: e.collection.clone(),
                hash: e.hash,
                bytes: e.bytes.clone(),
            })
            .collect(),
    }
}

/// What to do with a batch after the remote's answer.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Too large: push the two halves, `left` first.
    Split {
        /// The first half.
        left: Vec<OutboxEntry>,
        /// The second half.
        right: Vec<OutboxEntry>,
    },
    /// Remove these entries from the outbox: `acks` confirmed, `dead` to the
    /// dead letters with the reason. `not_a_member`: the workspace refused
    /// us (every other batch of it goes to the dead letters too).
    Settle {
        /// Confirmed: stored or already present.
        acks: Vec<ChangeHash>,
        /// Refused, with the reason.
        dead: Vec<(ChangeHash, String)>,
        /// Stored now.
        stored: usize,
        /// The remote had them already.
        already_present: usize,
        /// The workspace said we are not a member.
        not_a_member: bool,
    },
    /// The pass ends with this error (nothing of the batch is removed).
    Fail(Error),
}

/// Maps the remote's answer to a push of `batch` of `ws` to a decision.
pub(crate) fn decide(
    ws: WorkspaceId,
    batch: Vec<OutboxEntry>,
    answer: Result<PushResponse, RemoteError>,
) -> Decision {
    let dead_all = |batch: &[OutboxEntry], reason: &str| -> Vec<(ChangeHash, String)> {
        batch.iter().map(|e| (e.hash, reason.to_owned())).collect()
    };
    match answer {
        Ok(resp) => {
            if resp.results.len() != batch.len() {
                return Decision::Fail(
                    RemoteError::Protocol {
                        reason: format!(
                            "{} outcomes for {} changes",
                            resp.results.len(),
                            batch.len()
                        ),
                    }
                    .into(),
                );
            }
            let (mut acks, mut dead) = (Vec::new(), Vec::new());
            let (mut stored, mut already_present) = (0, 0);
            for (e, outcome) in batch.iter().zip(resp.results) {
                match outcome {
                    PushOutcome::Stored { .. } => {
                        stored += 1;
                        acks.push(e.hash);
                    }
                    PushOutcome::AlreadyPresent => {
                        already_present += 1;
                        acks.push(e.hash);
                    }
                    PushOutcome::Rejected { reason } => {
                        tracing::warn!(doc = %e.doc_id, hash = %e.hash, %reason, "change rejected by the remote");
                        dead.push((e.hash, reason));
                    }
                }
            }
            Decision::Settle {
                acks,
                dead,
                stored,
                already_present,
                not_a_member: false,
            }
        }
        Err(RemoteError::TooLarge { message }) => {
            if batch.len() > 1 {
                let mut left = batch;
                let right = left.split_off(left.len() / 2);
                return Decision::Split { left, right };
            }
            let reason = format!("too large for the remote: {message}");
            Decision::Settle {
                acks: Vec::new(),
                dead: dead_all(&batch, &reason),
                stored: 0,
                already_present: 0,
                not_a_member: false,
            }
        }
        // Issue 16: removed from the workspace. Its changes can never be
        // pushed by this user: dead letters, with the reason (nothing is
        // dropped), and the pass goes on with the other workspaces.
        Err(RemoteError::NotAMember { message }) => {
            let reason = if message.contains("no longer a member") {
                message
            } else {
                format!("no longer a member of workspace {ws}: {message}")
            };
            Decision::Settle {
                acks: Vec::new(),
                dead: dead_all(&batch, &reason),
                stored: 0,
                already_present: 0,
                not_a_member: true,
            }
        }
        Err(e) => Decision::Fail(e.into()),
    }
}

/// The workspace group being pushed.
#[derive(Debug)]
struct Group {
    ws: WorkspaceId,
    /// Batches still to push, the next on top.
    stack: Vec<Vec<OutboxEntry>>,
    /// Entries that left the outbox so far.
    removed: usize,
}

/// What the push half waits for.
#[derive(Debug)]
enum Waiting {
    Nothing,
    Peek(EffectId),
    Push {
        id: EffectId,
        batch: Vec<OutboxEntry>,
    },
    Settle(EffectId),
}

/// The push half of a pass.
#[derive(Debug)]
pub(crate) struct PushState {
    max_count: usize,
    max_bytes: usize,
    /// Outbox size when the pass started (for progress).
    total: usize,
    /// Entries that left the outbox in this pass.
    done: usize,
    groups: VecDeque<(WorkspaceId, Vec<OutboxEntry>)>,
    current: Option<Group>,
    waiting: Waiting,
}

impl PushState {
    /// Starts pushing: asks for the oldest outbox entries.
    pub(crate) fn start(ctx: &mut Ctx<'_>, total: usize) -> Self {
        let (max_count, max_bytes) = ctx.cfg.push_bounds();
        let mut s = Self {
            max_count,
            max_bytes,
            total,
            done: 0,
            groups: VecDeque::new(),
            current: None,
            waiting: Waiting::Nothing,
        };
        s.peek(ctx);
        s
    }

    fn peek(&mut self, ctx: &mut Ctx<'_>) {
        self.waiting = Waiting::Peek(ctx.emit(Effect::Peek {
            max_count: self.max_count,
            max_bytes: self.max_bytes,
        }));
    }

    /// Whether `id` is the effect this half waits for.
    pub(crate) fn waits_for(&self, id: EffectId) -> bool {
        match &self.waiting {
            Waiting::Nothing => false,
            Waiting::Peek(w) | Waiting::Settle(w) => *w == id,
            Waiting::Push { id: w, .. } => *w == id,
        }
    }

    /// Feeds the outcome of the effect this half waits for.
    pub(crate) fn handle(&mut self, ctx: &mut Ctx<'_>, result: Result<Outcome, Error>) -> Sub {
        match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
            Waiting::Nothing => Sub::Failed(unexpected("nothing", &Outcome::Done)),
            Waiting::Peek(_) => match result {
                Ok(Outcome::Peeked(batch)) => {
                    if batch.is_empty() {
                        return Sub::Finished;
                    }
                    self.groups = group_by_workspace(batch).into();
                    self.next_group(ctx)
                }
                Ok(other) => Sub::Failed(unexpected("outbox entries", &other)),
                Err(e) => Sub::Failed(e),
            },
            Waiting::Push { batch, .. } => {
                let answer = match result {
                    Ok(Outcome::Pushed(resp)) => Ok(resp),
                    Ok(other) => return Sub::Failed(unexpected("a push response", &other)),
                    Err(Error::Remote(e)) => Err(e),
                    Err(e) => return Sub::Failed(e),
                };
                self.answered(ctx, batch, answer)
            }
            Waiting::Settle(_) => match result {
                Ok(Outcome::Done) => self.next_batch(ctx),
                Ok(other) => Sub::Failed(unexpected("settled", &other)),
                Err(e) => Sub::Failed(e),
            },
        }
    }

    fn next_group(&mut self, ctx: &mut Ctx<'_>) -> Sub {
        match self.groups.pop_front() {
            Some((ws, entries)) => {
                self.current = Some(Group {
                    ws,
                    stack: vec![entries],
                    removed: 0,
                });
                self.next_batch(ctx)
            }
            None => {
                // A pass pushes what was queued when it started (and what
                // its peeks brought along), then goes on to pull: an app
                // that keeps committing would otherwise hold the pass in its
                // push half, and its pull would wait for the app to stop
                // (then pull everything pushed meanwhile at once). Commits
                // made during the pass get the follow-up pass.
                if self.done >= self.total {
                    return Sub::Finished;
                }
                self.peek(ctx);
                Sub::Running
            }
        }
    }

    fn next_batch(&mut self, ctx: &mut Ctx<'_>) -> Sub {
        let Some(group) = self.current.as_mut() else {
            return self.next_group(ctx);
        };
        let ws = group.ws;
        let Some(batch) = group.stack.pop() else {
            self.done += group.removed;
            self.current = None;
            ctx.progress(SyncProgress::Pushed {
                done: self.done,
                total: self.total,
            });
            return self.next_group(ctx);
        };
        if ctx.report.not_a_member.contains(&ws) {
            let answer = Err(RemoteError::NotAMember {
                message: "refused earlier in this pass".into(),
            });
            return self.answered(ctx, batch, answer);
        }
        ctx.report.push_batches += 1;
        let id = ctx.emit(Effect::Push(request(ws, &batch)));
        self.waiting = Waiting::Push { id, batch };
        Sub::Running
    }

    fn answered(
        &mut self,
        ctx: &mut Ctx<'_>,
        batch: Vec<OutboxEntry>,
        answer: Result<PushResponse, RemoteError>,
    ) -> Sub {
        let Some(group) = self.current.as_mut() else {
            return Sub::Failed(unexpected("a workspace being pushed", &Outcome::Done));
        };
        let ws = group.ws;
        let n = batch.len();
        match decide(ws, batch, answer) {
            Decision::Split { left, right } => {
                group.stack.push(right);
                group.stack.push(left);
                self.next_batch(ctx)
            }
            Decision::Settle {
                acks,
                mut dead,
                stored,
                already_present,
                not_a_member,
            } => {
                if not_a_member {
                    // Every other batch of this workspace goes too.
                    let reason = dead.first().map(|(_, r)| r.clone()).unwrap_or_default();
                    dead.extend(
                        group
                            .stack
                            .drain(..)
                            .flatten()
                            .map(|e| (e.hash, reason.clone())),
                    );
                    if !ctx.report.not_a_member.contains(&ws) {
                        ctx.report.not_a_member.push(ws);
                    }
                }
                ctx.report.pushed += stored;
                ctx.report.already_present += already_present;
                ctx.report.dead_lettered += dead.len();
                group.removed += acks.len() + dead.len();
                tracing::debug!(workspace = %ws, changes = n, "batch pushed");
                self.waiting = Waiting::Settle(ctx.emit(Effect::Settle { acks, dead }));
                Sub::Running
            }
            Decision::Fail(e) => Sub::Failed(e),
        }
    }
}
