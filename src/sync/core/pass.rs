//! A whole sync pass as a state machine: push the outbox, list the
//! workspaces, then per workspace pull (bootstrapping when fresh) and upload
//! snapshots. A workspace that says we are no longer a member is reported
//! and skipped; any other failure ends the pass.

use std::collections::VecDeque;

use super::pull::PullState;
use super::push::PushState;
use super::upload::UploadState;
use super::{unexpected, Ctx, EffectId, Outcome, Step, Sub, SyncConfig, SyncReport};
use crate::error::Error;
use crate::id::WorkspaceId;
use crate::remote::RemoteError;

/// Where a pass is.
#[derive(Debug)]
enum Phase {
    /// Not started.
    Idle,
    Push(PushState),
    Workspaces(EffectId),
    Pull(Box<PullState>),
    Upload(UploadState),
    Over,
}

/// One sync pass (see the module docs of [`super`]).
#[derive(Debug)]
pub(crate) struct Pass {
    cfg: SyncConfig,
    /// Workspaces to pull besides those the replica holds.
    asked: Vec<WorkspaceId>,
    /// Outbox size when the pass started (progress).
    outbox_len: usize,
    /// Push first (a whole pass) or pull only.
    push: bool,
    /// Upload snapshots after each pull.
    upload: bool,
    queue: VecDeque<WorkspaceId>,
    phase: Phase,
    report: SyncReport,
    next_id: u64,
}

impl Pass {
    /// A whole pass: push the outbox (`outbox_len` entries, for progress),
    /// then pull and upload snapshots of every workspace the replica holds
    /// plus `workspaces`.
    pub(crate) fn new(cfg: SyncConfig, workspaces: &[WorkspaceId], outbox_len: usize) -> Self {
        Self {
            cfg,
            asked: workspaces.to_vec(),
            outbox_len,
            push: true,
            upload: true,
            queue: VecDeque::new(),
            phase: Phase::Idle,
            report: SyncReport::default(),
            next_id: 0,
        }
    }

    /// Pulls one workspace only (bootstrapping when fresh; no push, no
    /// snapshot upload): what the benchmarks measure, and the simulation's
    /// pull-only passes.
    #[cfg(any(feature = "bench", feature = "test-util", test))]
    pub(crate) fn pull_only(cfg: SyncConfig, ws: WorkspaceId) -> Self {
        Self {
            cfg,
            asked: Vec::new(),
            outbox_len: 0,
            push: false,
            upload: false,
            queue: VecDeque::from([ws]),
            phase: Phase::Idle,
            report: SyncReport::default(),
            next_id: 0,
        }
    }

    /// Starts the pass at `now` (ms of the replica's clock).
    pub(crate) fn start(&mut self, now: i64) -> Step {
        let mut step = Step::default();
        if !matches!(self.phase, Phase::Idle) {
            return step;
        }
        let mut ctx = Ctx {
            cfg: &self.cfg,
            report: &mut self.report,
            now,
            next_id: &mut self.next_id,
            step: &mut step,
        };
        let (phase, sub) = if self.push {
            (
                Phase::Push(PushState::start(&mut ctx, self.outbox_len)),
                Sub::Running,
            )
        } else {
            ctx.report.workspaces = self.queue.len();
            next_workspace(&mut ctx, &mut self.queue)
        };
        self.phase = phase;
        self.after(sub, step)
    }

    /// Feeds the outcome of effect `id` at `now`.
    pub(crate) fn handle(
        &mut self,
        now: i64,
        id: EffectId,
        result: Result<Outcome, Error>,
    ) -> Step {
        let mut step = Step::default();
        let mut ctx = Ctx {
            cfg: &self.cfg,
            report: &mut self.report,
            now,
            next_id: &mut self.next_id,
            step: &mut step,
        };
        let sub = match &mut self.phase {
            Phase::Push(p) if p.waits_for(id) => match p.handle(&mut ctx, result) {
                Sub::Finished => {
                    self.phase = Phase::Workspaces(ctx.emit(super::Effect::Workspaces));
                    Sub::Running
                }
                other => other,
            },
            Phase::Workspaces(w) if *w == id => match result {
                Ok(Outcome::Workspaces(mut all)) => {
                    for w in &self.asked {
                        if !all.contains(w) {
                            all.push(*w);
                        }
                    }
                    ctx.report.workspaces = all.len();
                    self.queue = all.into();
                    let (phase, sub) = next_workspace(&mut ctx, &mut self.queue);
                    self.phase = phase;
                    sub
                }
                Ok(other) => Sub::Failed(unexpected("the workspaces", &other)),
                Err(e) => Sub::Failed(e),
            },
            Phase::Pull(p) if p.waits_for(id) => {
                let ws = p.ws();
                match p.handle(&mut ctx, id, result) {
                    Sub::Finished => {
                        let covers = p.record().cursor.clone();
                        let upload = if self.upload {
                            UploadState::start(&mut ctx, ws, &covers)
                        } else {
                            None
                        };
                        match upload {
                            Some(u) => {
                                self.phase = Phase::Upload(u);
                                Sub::Running
                            }
                            None => {
                                let (phase, sub) = next_workspace(&mut ctx, &mut self.queue);
                                self.phase = phase;
                                sub
                            }
                        }
                    }
                    // Issue 16: reported, not an error of the pass.
                    Sub::Failed(Error::Remote(RemoteError::NotAMember { .. })) => {
                        ctx.report.not_a_member.push(ws);
                        let (phase, sub) = next_workspace(&mut ctx, &mut self.queue);
                        self.phase = phase;
                        sub
                    }
                    other => other,
                }
            }
            Phase::Upload(u) if u.waits_for(id) => match u.handle(&mut ctx, result) {
                Sub::Finished => {
                    let (phase, sub) = next_workspace(&mut ctx, &mut self.queue);
                    self.phase = phase;
                    sub
                }
                other => other,
            },
            // An outcome nobody waits for: an effect of a phase that is over
            // (impossible with a correct shell), or after the end.
            Phase::Over => Sub::Running,
            _ => Sub::Failed(unexpected("another effect's outcome", &Outcome::Done)),
        };
        self.after(sub, step)
    }

    /// Ends the pass when a phase finished it or failed.
    fn after(&mut self, sub: Sub, mut step: Step) -> Step {
        match sub {
            Sub::Running => {}
            Sub::Finished => {
                self.phase = Phase::Over;
                step.effects.clear();
                step.done = Some(Ok(std::mem::take(&mut self.report)));
            }
            Sub::Failed(e) => {
                self.phase = Phase::Over;
                step.effects.clear();
                step.done = Some(Err(e));
            }
        }
        step
    }
}

/// The next workspace to pull (skipping those that refused us); `Finished`
/// when none is left.
fn next_workspace(ctx: &mut Ctx<'_>, queue: &mut VecDeque<WorkspaceId>) -> (Phase, Sub) {
    while let Some(ws) = queue.pop_front() {
        if ctx.report.not_a_member.contains(&ws) {
            continue;
        }
        return (
            Phase::Pull(Box::new(PullState::start(ctx, ws))),
            Sub::Running,
        );
    }
    (Phase::Over, Sub::Finished)
}
