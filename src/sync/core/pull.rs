//! The pull half of a pass, one workspace at a time: bootstrap or not,
//! pages gathered into apply batches, the next pages fetched while a batch
//! is applied, the snapshot pages of a bootstrap and the log fallback for
//! untrusted snapshots, and the cursor record at the end.
//!
//! The cursor is persisted only with what it covers: each batch is applied
//! together with the cursor after its last page, in one store transaction
//! (the [`Effect::Apply`] of a batch carries it). A failure or crash
//! re-fetches whatever was not applied.

use std::collections::{BTreeSet, VecDeque};

use super::{unexpected, Ctx, Effect, EffectId, Outcome, Sub, SyncConfig, SyncProgress};
use crate::error::Error;
use crate::id::{DocId, WorkspaceId};
use crate::protocol::snapshot_check::DownloadedSnapshot;
use crate::protocol::wire::{
    Cursor, PullPage, PullRequest, SnapshotQuery, SNAPSHOT_PAGE_VERSION, WIRE_VERSION,
};
use crate::remote::RemoteError;
use crate::replica::{ApplyReport, RemoteChange};
use crate::store::CursorRecord;

/// The record of a workspace never synced.
pub(crate) fn fresh_record() -> CursorRecord {
    CursorRecord {
        cursor: String::new(),
        last_sync_ms: 0,
        bootstrapped: false,
    }
}

/// Whether a pull of a workspace with this record bootstraps (skips changes
/// covered by snapshots, then downloads the snapshots). An interrupted
/// bootstrap must finish as one (its pages skipped changes covered by
/// snapshots), even if bootstrapping was switched off since.
pub(crate) fn bootstraps(rec: &CursorRecord, cfg: &SyncConfig) -> bool {
    !rec.bootstrapped && (cfg.bootstrap_from_snapshots || !rec.cursor.is_empty())
}

/// Whether the pages gathered so far make a batch to apply now.
pub(crate) fn batch_full(cfg: &SyncConfig, changes: usize, bytes: usize, last: bool) -> bool {
    last || changes >= cfg.apply_batch_changes.max(1) || bytes >= cfg.apply_batch_bytes
}

/// Pulled pages gathered for one apply.
#[derive(Debug)]
struct Batch {
    changes: Vec<RemoteChange>,
    /// The cursor after the batch's last page.
    cursor: String,
    /// Pages and changes fetched so far in this pull, this batch included.
    pages: usize,
    received: usize,
}

/// The phases of one workspace's pull.
#[derive(Debug)]
enum Phase {
    /// Reading the cursor record.
    Cursor(EffectId),
    /// Pulling pages and applying batches.
    Log,
    /// Bootstrap: waiting for a snapshot page.
    SnapshotPage(EffectId),
    /// Bootstrap: applying a snapshot page.
    SnapshotApply {
        id: EffectId,
        has_more: bool,
        n: usize,
    },
    /// Bootstrap fallback: pulling the whole log for untrusted documents.
    Fallback(EffectId),
    /// Bootstrap fallback: applying one page of it.
    FallbackApply {
        id: EffectId,
        next: Cursor,
        has_more: bool,
    },
    /// Writing the final cursor record.
    Finish(EffectId),
}

/// One workspace's pull.
#[derive(Debug)]
pub(crate) struct PullState {
    ws: WorkspaceId,
    rec: CursorRecord,
    bootstrap: bool,
    phase: Phase,
    // ----- the log phase: a fetcher and an applier -----
    /// The cursor the next page is asked after.
    fetch_cursor: String,
    /// The page request in flight.
    fetching: Option<EffectId>,
    /// The last page arrived (or the fetch failed).
    fetch_over: bool,
    /// A failed fetch: the pull's error once the fetched batches are applied.
    fetch_error: Option<Error>,
    /// The batch being gathered.
    gathering: Vec<RemoteChange>,
    gathering_bytes: usize,
    pages: usize,
    received: usize,
    /// Full batches waiting for the applier.
    ready: VecDeque<Batch>,
    /// The batch being applied.
    applying: Option<(EffectId, Batch)>,
    /// `report.pages` when the pull started (for progress).
    pages_before: usize,
    // ----- bootstrap -----
    after: Option<DocId>,
    untrusted: BTreeSet<DocId>,
}

/// Full batches that may wait while one is applied before the fetcher
/// pauses (about three batches in memory at once: one applied, one waiting,
/// one gathered).
const READY_MAX: usize = 2;

impl PullState {
    /// Starts a pull of `ws`: reads its cursor record.
    pub(crate) fn start(ctx: &mut Ctx<'_>, ws: WorkspaceId) -> Self {
        let id = ctx.emit(Effect::ReadCursor { ws });
        Self {
            ws,
            rec: fresh_record(),
            bootstrap: false,
            phase: Phase::Cursor(id),
            fetch_cursor: String::new(),
            fetching: None,
            fetch_over: false,
            fetch_error: None,
            gathering: Vec::new(),
            gathering_bytes: 0,
            pages: 0,
            received: 0,
            ready: VecDeque::new(),
            applying: None,
            pages_before: ctx.report.pages,
            after: None,
            untrusted: BTreeSet::new(),
        }
    }

    /// The workspace.
    pub(crate) fn ws(&self) -> WorkspaceId {
        self.ws
    }

    /// The cursor record as last persisted (or to be persisted at the end).
    pub(crate) fn record(&self) -> &CursorRecord {
        &self.rec
    }

    /// Whether `id` is an effect this pull waits for.
    pub(crate) fn waits_for(&self, id: EffectId) -> bool {
        match &self.phase {
            Phase::Cursor(w) | Phase::SnapshotPage(w) | Phase::Fallback(w) | Phase::Finish(w) => {
                *w == id
            }
            Phase::SnapshotApply { id: w, .. } | Phase::FallbackApply { id: w, .. } => *w == id,
            Phase::Log => {
                self.fetching == Some(id) || self.applying.as_ref().is_some_and(|(w, _)| *w == id)
            }
        }
    }

    fn pull_request(
        &self,
        cursor: Cursor,
        skip_snapshotted: bool,
        cfg: &SyncConfig,
    ) -> PullRequest {
        PullRequest {
            v: WIRE_VERSION,
            workspace: self.ws,
            cursor,
            limit: cfg.pull_limit,
            skip_snapshotted,
        }
    }

    /// Feeds the outcome of effect `id`.
    pub(crate) fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: EffectId,
        result: Result<Outcome, Error>,
    ) -> Sub {
        match &self.phase {
            Phase::Cursor(_) => match result {
                Ok(Outcome::Cursor(rec)) => {
                    self.rec = rec.unwrap_or_else(fresh_record);
                    self.bootstrap = bootstraps(&self.rec, ctx.cfg);
                    self.fetch_cursor = self.rec.cursor.clone();
                    self.phase = Phase::Log;
                    self.fetch(ctx);
                    Sub::Running
                }
                Ok(other) => Sub::Failed(unexpected("a cursor record", &other)),
                Err(e) => Sub::Failed(e),
            },
            Phase::Log => {
                if self.fetching == Some(id) {
                    self.fetching = None;
                    self.fetched(ctx, result)
                } else {
                    self.applied(ctx, result)
                }
            }
            Phase::SnapshotPage(_) => match result {
                Ok(Outcome::Snapshots(page)) => {
                    self.after = page.snapshots.last().map(|s| s.doc_id);
                    let ws = self.ws;
                    let snapshots: Vec<_> = page
                        .snapshots
                        .into_iter()
                        .map(|s| DownloadedSnapshot::from_record(ws, s))
                        .collect();
                    let n = snapshots.len();
                    let id = ctx.emit(Effect::ApplySnapshots { snapshots });
                    self.phase = Phase::SnapshotApply {
                        id,
                        has_more: page.has_more,
                        n,
                    };
                    Sub::Running
                }
                Ok(other) => Sub::Failed(unexpected("a snapshot page", &other)),
                Err(e) => Sub::Failed(e),
            },
            Phase::SnapshotApply { has_more, n, .. } => {
                let (has_more, n) = (*has_more, *n);
                match result {
                    Ok(Outcome::Applied(applied)) => {
                        for e in &applied.untrusted {
                            tracing::warn!(workspace = %self.ws, error = %e, "snapshot not trusted; pulling its changes instead");
                            self.untrusted.insert(e.doc_id());
                        }
                        ctx.report.snapshots_untrusted += applied.untrusted.len();
                        ctx.report.snapshots_loaded += n - applied.untrusted.len().min(n);
                        ctx.report.applied += applied.applied;
                        ctx.report.duplicates += applied.duplicates;
                        ctx.progress(SyncProgress::Snapshots {
                            workspace: self.ws,
                            loaded: ctx.report.snapshots_loaded,
                        });
                        if has_more && self.after.is_some() {
                            self.snapshot_page(ctx);
                        } else if !self.untrusted.is_empty() {
                            self.fallback_page(ctx, Cursor::start());
                        } else {
                            self.finish(ctx);
                        }
                        Sub::Running
                    }
                    Ok(other) => Sub::Failed(unexpected("an apply report", &other)),
                    Err(e) => Sub::Failed(e),
                }
            }
            Phase::Fallback(_) => match result {
                Ok(Outcome::Pulled(page)) => {
                    ctx.report.pages += 1;
                    ctx.report.pulled += page.changes.len();
                    let ws = self.ws;
                    let changes: Vec<RemoteChange> = page
                        .changes
                        .into_iter()
                        .filter(|c| self.untrusted.contains(&c.change.doc_id))
                        .map(|c| RemoteChange::from_envelope(ws, c.change))
                        .collect();
                    // Not persisted as a cursor: until the bootstrap is
                    // marked done, an interrupted fallback is redone.
                    let id = ctx.emit(Effect::Apply {
                        ws,
                        changes,
                        cursor: None,
                    });
                    self.phase = Phase::FallbackApply {
                        id,
                        next: page.next_cursor,
                        has_more: page.has_more,
                    };
                    Sub::Running
                }
                Ok(other) => Sub::Failed(unexpected("a page", &other)),
                Err(e) => Sub::Failed(e),
            },
            Phase::FallbackApply { next, has_more, .. } => {
                let (next, has_more) = (next.clone(), *has_more);
                match result {
                    Ok(Outcome::Applied(applied)) => {
                        ctx.report.applied += applied.applied;
                        ctx.report.duplicates += applied.duplicates;
                        ctx.report.remote_rejected += applied.rejected.len();
                        if has_more {
                            self.fallback_page(ctx, next);
                        } else {
                            self.finish(ctx);
                        }
                        Sub::Running
                    }
                    Ok(other) => Sub::Failed(unexpected("an apply report", &other)),
                    Err(e) => Sub::Failed(e),
                }
            }
            Phase::Finish(_) => match result {
                Ok(Outcome::Done) => Sub::Finished,
                Ok(other) => Sub::Failed(unexpected("the cursor written", &other)),
                Err(e) => Sub::Failed(e),
            },
        }
    }

    fn fetch(&mut self, ctx: &mut Ctx<'_>) {
        let req = self.pull_request(Cursor(self.fetch_cursor.clone()), self.bootstrap, ctx.cfg);
        self.fetching = Some(ctx.emit(Effect::Pull(req)));
    }

    /// A page arrived (or the fetch failed).
    fn fetched(&mut self, ctx: &mut Ctx<'_>, result: Result<Outcome, Error>) -> Sub {
        let page: PullPage = match result {
            Ok(Outcome::Pulled(page)) => page,
            Ok(other) => {
                self.fetch_over = true;
                self.fetch_error = Some(unexpected("a page", &other));
                return self.log_progress(ctx);
            }
            Err(Error::Remote(RemoteError::CursorPruned { horizon, message }))
                if !self.bootstrap =>
            {
                // The remote pruned changes after our cursor (each folded into
                // its document's snapshot): bootstrap from here, as a fresh
                // device does — pull what no snapshot holds, then merge the
                // snapshots. The outbox is not touched; the record says
                // "not bootstrapped" with every batch from now on, so an
                // interrupted re-bootstrap resumes as one.
                tracing::info!(workspace = %self.ws, cursor = %self.fetch_cursor, %horizon, %message,
                    "cursor behind the remote's horizon; re-bootstrapping from snapshots");
                ctx.report.rebootstraps += 1;
                self.bootstrap = true;
                self.rec.bootstrapped = false;
                return self.log_progress(ctx);
            }
            Err(e) => {
                self.fetch_over = true;
                self.fetch_error = Some(e);
                return self.log_progress(ctx);
            }
        };
        self.pages += 1;
        self.received += page.changes.len();
        self.gathering_bytes += page
            .changes
            .iter()
            .map(|c| c.change.bytes.len())
            .sum::<usize>();
        let ws = self.ws;
        self.gathering.extend(
            page.changes
                .into_iter()
                .map(|c| RemoteChange::from_envelope(ws, c.change)),
        );
        self.fetch_cursor = page.next_cursor.0;
        let last = !page.has_more;
        if batch_full(ctx.cfg, self.gathering.len(), self.gathering_bytes, last) {
            self.ready.push_back(Batch {
                changes: std::mem::take(&mut self.gathering),
                cursor: self.fetch_cursor.clone(),
                pages: self.pages,
                received: self.received,
            });
            self.gathering_bytes = 0;
        }
        if last {
            self.fetch_over = true;
        }
        self.log_progress(ctx)
    }

    /// A batch was applied (or the apply failed).
    fn applied(&mut self, ctx: &mut Ctx<'_>, result: Result<Outcome, Error>) -> Sub {
        let Some((_, batch)) = self.applying.take() else {
            return Sub::Failed(unexpected("no apply", &Outcome::Done));
        };
        let applied: ApplyReport = match result {
            Ok(Outcome::Applied(a)) => a,
            Ok(other) => return Sub::Failed(unexpected("an apply report", &other)),
            // An applier error comes first: the fetcher stops with it.
            Err(e) => return Sub::Failed(e),
        };
        ctx.report.applied += applied.applied;
        ctx.report.duplicates += applied.duplicates;
        ctx.report.remote_rejected += applied.rejected.len();
        for e in &applied.rejected {
            tracing::warn!(workspace = %self.ws, error = %e, "pulled change rejected");
        }
        ctx.progress(SyncProgress::Pulled {
            workspace: self.ws,
            changes: batch.received,
            pages: self.pages_before + batch.pages,
        });
        tracing::debug!(workspace = %self.ws, cursor = %self.rec.cursor, "pages applied");
        self.log_progress(ctx)
    }

    /// Starts whatever the log phase can start now; finishes it when the
    /// fetcher is over and every batch is applied.
    fn log_progress(&mut self, ctx: &mut Ctx<'_>) -> Sub {
        if self.applying.is_none() {
            if let Some(mut batch) = self.ready.pop_front() {
                self.rec.cursor = batch.cursor.clone();
                // The changes travel in the effect; the batch keeps its counts.
                let changes = std::mem::take(&mut batch.changes);
                let id = ctx.emit(Effect::Apply {
                    ws: self.ws,
                    changes,
                    cursor: Some(self.rec.clone()),
                });
                self.applying = Some((id, batch));
            }
        }
        if !self.fetch_over && self.fetching.is_none() && self.ready.len() < READY_MAX {
            self.fetch(ctx);
        }
        if self.fetch_over && self.fetching.is_none() && self.applying.is_none() {
            if let Some(e) = self.fetch_error.take() {
                return Sub::Failed(e);
            }
            ctx.report.pages += self.pages;
            ctx.report.pulled += self.received;
            if self.bootstrap {
                // Snapshots are fetched after the pull: any change the pull
                // skipped is covered by a snapshot at least as new as the one
                // that made it skip.
                self.snapshot_page(ctx);
            } else {
                self.finish(ctx);
            }
        }
        Sub::Running
    }

    fn snapshot_page(&mut self, ctx: &mut Ctx<'_>) {
        let id = ctx.emit(Effect::GetSnapshots(SnapshotQuery {
            v: SNAPSHOT_PAGE_VERSION,
            workspace: self.ws,
            after: self.after,
            limit: ctx.cfg.snapshot_page_limit.max(1),
        }));
        self.phase = Phase::SnapshotPage(id);
    }

    fn fallback_page(&mut self, ctx: &mut Ctx<'_>, cursor: Cursor) {
        let req = self.pull_request(cursor, false, ctx.cfg);
        self.phase = Phase::Fallback(ctx.emit(Effect::Pull(req)));
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>) {
        self.rec.bootstrapped = true;
        self.rec.last_sync_ms = ctx.now;
        let id = ctx.emit(Effect::WriteCursor {
            ws: self.ws,
            rec: self.rec.clone(),
        });
        self.phase = Phase::Finish(id);
    }
}
