//! One sync pass: push the outbox, then pull every page of every workspace,
//! bootstrapping from snapshots on a fresh replica, then upload snapshots.
//!
//! Persist before acknowledge: an outbox entry is removed only after the
//! remote confirmed it (stored or already present); a pulled page is applied
//! and its cursor written in one sled transaction before the next page is
//! asked for. Any step may fail or the process may die at any point: the next
//! pass redoes the unfinished work, and the remote's deduplication and the
//! replica's duplicate detection make redoing harmless.

use std::time::Instant;

use automerge::ChangeHash;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::WorkspaceId;
use crate::protocol::snapshot_check::DownloadedSnapshot;
use crate::protocol::wire::{
    ChangeEnvelope, Cursor, PullRequest, PushOutcome, PushRequest, SnapshotQuery, SnapshotUpload,
    MAX_PUSH_BYTES, MAX_PUSH_COUNT, MAX_SNAPSHOT_BYTES, SNAPSHOT_PAGE_VERSION, WIRE_VERSION,
};
use crate::remote::{Remote, RemoteError};
use crate::replica::{RemoteChange, Replica, SyncPort};
use crate::store::{CursorRecord, OutboxEntry};

/// Batch sizes and thresholds of a sync pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// At most this many changes per push request.
    pub push_max_count: usize,
    /// At most this many change bytes per push request.
    pub push_max_bytes: usize,
    /// Changes per pulled page.
    pub pull_limit: u32,
    /// Upload a snapshot of a document once this many changes were applied
    /// to it since the last upload (0 disables uploads).
    pub snapshot_threshold: u64,
    /// Bootstrap a fresh replica from snapshots plus the tail of changes.
    pub bootstrap_from_snapshots: bool,
    /// Snapshots per page while bootstrapping (each page is applied and
    /// persisted before the next is fetched).
    pub snapshot_page_limit: u32,
    /// Pulled pages are applied together, in one `apply_remote` call and one
    /// store transaction with the cursor, until they hold this many changes
    /// (Automerge applies one large batch much faster than many small ones;
    /// 1 applies page by page).
    pub apply_batch_changes: usize,
    /// ... or this many bytes of changes, whichever comes first. While one
    /// batch is applied the next is fetched, so about three batches can be
    /// in memory at once.
    pub apply_batch_bytes: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            push_max_count: 500,
            push_max_bytes: 512 * 1024,
            pull_limit: 1000,
            snapshot_threshold: 256,
            bootstrap_from_snapshots: true,
            snapshot_page_limit: 100,
            apply_batch_changes: 25_000,
            apply_batch_bytes: 16 * 1024 * 1024,
        }
    }
}

impl SyncConfig {
    fn clamp(&self) -> (usize, usize) {
        (
            self.push_max_count.clamp(1, MAX_PUSH_COUNT),
            self.push_max_bytes.clamp(1, MAX_PUSH_BYTES),
        )
    }
}

/// What a sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Local changes the remote stored now.
    pub pushed: usize,
    /// Local changes the remote already had (a retry after a lost response).
    pub already_present: usize,
    /// Local changes the remote rejected (moved to the dead letters).
    pub dead_lettered: usize,
    /// Push requests sent.
    pub push_batches: usize,
    /// Changes received in pulled pages.
    pub pulled: usize,
    /// Changes applied (including early arrivals that now fit).
    pub applied: usize,
    /// Pulled changes the replica already had.
    pub duplicates: usize,
    /// Remote changes still waiting for their dependencies.
    pub waiting: usize,
    /// Pulled changes that were corrupt (reported, skipped).
    pub remote_rejected: usize,
    /// Pages pulled.
    pub pages: usize,
    /// Snapshots uploaded.
    pub snapshots_uploaded: usize,
    /// Snapshots the server would not take (too large, refused for this
    /// document, or a read-only member): an optimisation skipped, not an
    /// error — the changes themselves are on the server.
    pub snapshots_skipped: usize,
    /// Snapshots downloaded and merged (bootstrap).
    pub snapshots_loaded: usize,
    /// Snapshots downloaded but not trusted (they did not hold exactly the
    /// changes they replace): their documents were pulled from the log.
    pub snapshots_untrusted: usize,
    /// Workspaces this pass pulled: those the replica holds documents of,
    /// has synced or joined, plus those the caller named. 0 means there was
    /// nothing to pull (a fresh replica nobody told which workspace to join:
    /// [`SyncHandle::join`](crate::SyncHandle::join)).
    pub workspaces: usize,
    /// Wall time of the pass in ms.
    pub elapsed_ms: u64,
    /// Workspaces the remote said the user is no longer a member of
    /// ([`RemoteError::NotAMember`]): their pull was skipped and their
    /// outbox entries moved to the dead letters with that reason; the rest
    /// of the pass went on. (Issue 16.)
    pub not_a_member: Vec<WorkspaceId>,
}

/// Progress of a pass, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncProgress {
    /// A push batch was confirmed.
    Pushed {
        /// Changes confirmed so far in this pass.
        done: usize,
        /// Outbox size when the pass started.
        total: usize,
    },
    /// A page was applied.
    Pulled {
        /// The workspace.
        workspace: WorkspaceId,
        /// Changes received so far in this pass.
        changes: usize,
        /// Pages so far.
        pages: usize,
    },
    /// A page of snapshots was loaded (bootstrap).
    Snapshots {
        /// The workspace.
        workspace: WorkspaceId,
        /// Snapshots loaded so far in this pass.
        loaded: usize,
    },
}

async fn blocking<R: Send + 'static>(
    replica: &Replica,
    f: impl FnOnce(&Replica) -> Result<R> + Send + 'static,
) -> Result<R> {
    let r = replica.clone();
    tokio::task::spawn_blocking(move || f(&r))
        .await
        .map_err(|source| Error::Task {
            task: "a replica call of a sync pass",
            source,
        })?
}

fn envelope(e: &OutboxEntry) -> ChangeEnvelope {
    ChangeEnvelope {
        doc_id: e.doc_id,
        collection: e.collection.clone(),
        hash: e.hash,
        bytes: e.bytes.clone(),
    }
}

/// Pushes the whole outbox in bounded batches (one workspace per request).
/// A batch the remote finds too large is split in halves; a single change it
/// still refuses goes to the dead letters with the reason.
///
/// # Errors
/// The first failing remote call (what was confirmed before stays acked).
pub async fn push(
    replica: &Replica,
    remote: &dyn Remote,
    cfg: &SyncConfig,
    report: &mut SyncReport,
    progress: &(dyn Fn(SyncProgress) + Send + Sync),
) -> Result<()> {
    let (max_count, max_bytes) = cfg.clamp();
    let total = replica.pending();
    let mut done = 0;
    loop {
        let batch = blocking(replica, move |r| r.peek(max_count, max_bytes)).await?;
        if batch.is_empty() {
            break;
        }
        // One request per workspace in the batch, each in outbox order (a
        // document belongs to one workspace, so its changes stay in order).
        let mut groups: Vec<(WorkspaceId, Vec<OutboxEntry>)> = Vec::new();
        for e in batch {
            match groups.iter_mut().find(|(ws, _)| *ws == e.workspace) {
                Some((_, g)) => g.push(e),
                None => groups.push((e.workspace, vec![e])),
            }
        }
        for (ws, group) in groups {
            done += push_batch(replica, remote, ws, group, report).await?;
            progress(SyncProgress::Pushed { done, total });
        }
    }
    Ok(())
}

/// Pushes one batch, splitting it on "too large". Returns how many entries
/// left the outbox.
async fn push_batch(
    replica: &Replica,
    remote: &dyn Remote,
    ws: WorkspaceId,
    batch: Vec<OutboxEntry>,
    report: &mut SyncReport,
) -> Result<usize> {
    let mut stack = vec![batch];
    let mut removed = 0;
    while let Some(batch) = stack.pop() {
        let req = PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes: batch.iter().map(envelope).collect(),
        };
        let answer = if report.not_a_member.contains(&ws) {
            Err(RemoteError::NotAMember {
                message: "refused earlier in this pass".into(),
            })
        } else {
            report.push_batches += 1;
            remote.push(req).await
        };
        let resp = match answer {
            Ok(resp) => resp,
            Err(RemoteError::TooLarge { message }) => {
                if batch.len() > 1 {
                    let mut left = batch;
                    let right = left.split_off(left.len() / 2);
                    stack.push(right);
                    stack.push(left);
                    continue;
                }
                let reason = format!("too large for the remote: {message}");
                let hashes: Vec<ChangeHash> = batch.iter().map(|e| e.hash).collect();
                blocking(replica, move |r| {
                    for h in &hashes {
                        r.dead_letter(h, &reason)?;
                    }
                    Ok(())
                })
                .await?;
                report.dead_lettered += batch.len();
                removed += batch.len();
                continue;
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
                let mut hashes: Vec<ChangeHash> = batch.iter().map(|e| e.hash).collect();
                hashes.extend(stack.drain(..).flatten().map(|e| e.hash));
                let n = hashes.len();
                blocking(replica, move |r| {
                    for h in &hashes {
                        r.dead_letter(h, &reason)?;
                    }
                    Ok(())
                })
                .await?;
                report.dead_lettered += n;
                removed += n;
                if !report.not_a_member.contains(&ws) {
                    report.not_a_member.push(ws);
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if resp.results.len() != batch.len() {
            return Err(RemoteError::Protocol {
                reason: format!(
                    "{} outcomes for {} changes",
                    resp.results.len(),
                    batch.len()
                ),
            }
            .into());
        }
        let mut acks = Vec::new();
        let mut dead = Vec::new();
        for (e, outcome) in batch.iter().zip(resp.results) {
            match outcome {
                PushOutcome::Stored { .. } => {
                    report.pushed += 1;
                    acks.push(e.hash);
                }
                PushOutcome::AlreadyPresent => {
                    report.already_present += 1;
                    acks.push(e.hash);
                }
                PushOutcome::Rejected { reason } => {
                    tracing::warn!(doc = %e.doc_id, hash = %e.hash, %reason, "change rejected by the remote");
                    report.dead_lettered += 1;
                    dead.push((e.hash, reason));
                }
            }
        }
        removed += acks.len() + dead.len();
        blocking(replica, move |r| {
            r.ack(&acks)?;
            for (h, reason) in &dead {
                r.dead_letter(h, reason)?;
            }
            Ok(())
        })
        .await?;
        tracing::debug!(workspace = %ws, changes = batch.len(), "batch pushed");
    }
    Ok(removed)
}

/// Pulled pages gathered for one apply.
struct Batch {
    changes: Vec<RemoteChange>,
    /// The cursor after the batch's last page.
    cursor: String,
    /// Pages and changes fetched so far in this pull, this batch included.
    pages: usize,
    received: usize,
}

/// What the fetching half of a pull counted.
#[derive(Default)]
struct Fetched {
    pages: usize,
    pulled: usize,
}

/// What the applying half of a pull counted.
#[derive(Default)]
struct Applied {
    applied: usize,
    duplicates: usize,
    rejected: usize,
}

/// Pulls every page of one workspace; bootstraps from snapshots when the
/// replica has never completed a sync of it.
///
/// # Errors
/// The first failing remote call or storage error; every page applied
/// before stays applied with its cursor.
pub async fn pull(
    replica: &Replica,
    remote: &dyn Remote,
    cfg: &SyncConfig,
    ws: WorkspaceId,
    report: &mut SyncReport,
    progress: &(dyn Fn(SyncProgress) + Send + Sync),
) -> Result<()> {
    let mut rec = blocking(replica, move |r| r.cursor(&ws))
        .await?
        .unwrap_or(CursorRecord {
            cursor: String::new(),
            last_sync_ms: 0,
            bootstrapped: false,
        });
    // An interrupted bootstrap must finish as one (its pages skipped changes
    // covered by snapshots), even if bootstrapping was switched off since.
    let bootstrap = !rec.bootstrapped && (cfg.bootstrap_from_snapshots || !rec.cursor.is_empty());
    // Fetching and applying overlap: one future pulls pages and gathers
    // them into batches, the other applies each batch with the cursor after
    // its last page (one transaction), so the next pages travel while
    // Automerge and sled work. At most one finished batch waits between the
    // two. The cursor is persisted only by the applier, with what it
    // applied: a failure or crash re-fetches whatever was not applied.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(1);
    let start_cursor = rec.cursor.clone();
    let fetch = async move {
        let mut fetched = Fetched::default();
        let mut cursor = start_cursor;
        let mut batch: Vec<RemoteChange> = Vec::new();
        let mut batch_bytes = 0usize;
        loop {
            let page = remote
                .pull(PullRequest {
                    v: WIRE_VERSION,
                    workspace: ws,
                    cursor: Cursor(cursor.clone()),
                    limit: cfg.pull_limit,
                    skip_snapshotted: bootstrap,
                })
                .await?;
            fetched.pages += 1;
            fetched.pulled += page.changes.len();
            batch_bytes += page
                .changes
                .iter()
                .map(|c| c.change.bytes.len())
                .sum::<usize>();
            batch.extend(
                page.changes
                    .into_iter()
                    .map(|c| RemoteChange::from_envelope(ws, c.change)),
            );
            cursor = page.next_cursor.0;
            let last = !page.has_more;
            if last
                || batch.len() >= cfg.apply_batch_changes.max(1)
                || batch_bytes >= cfg.apply_batch_bytes
            {
                let b = Batch {
                    changes: std::mem::take(&mut batch),
                    cursor: cursor.clone(),
                    pages: fetched.pages,
                    received: fetched.pulled,
                };
                batch_bytes = 0;
                if tx.send(b).await.is_err() {
                    // The applier failed; its error is the pass's.
                    break;
                }
            }
            if last {
                break;
            }
        }
        Ok::<Fetched, Error>(fetched)
    };
    let pages_before = report.pages;
    let mut applied_total = Applied::default();
    let apply = async {
        while let Some(b) = rx.recv().await {
            rec.cursor = b.cursor;
            let next = rec.clone();
            let changes = b.changes;
            let applied =
                blocking(replica, move |r| r.apply_remote(changes, Some((ws, next)))).await?;
            applied_total.applied += applied.applied;
            applied_total.duplicates += applied.duplicates;
            applied_total.rejected += applied.rejected.len();
            for e in &applied.rejected {
                tracing::warn!(workspace = %ws, error = %e, "pulled change rejected");
            }
            progress(SyncProgress::Pulled {
                workspace: ws,
                changes: b.received,
                pages: pages_before + b.pages,
            });
            tracing::debug!(workspace = %ws, cursor = %rec.cursor, "pages applied");
        }
        Ok::<(), Error>(())
    };
    let (fetched, applied) = tokio::join!(fetch, apply);
    report.applied += applied_total.applied;
    report.duplicates += applied_total.duplicates;
    report.remote_rejected += applied_total.rejected;
    // An applier error comes first: the fetcher only stopped because of it.
    applied?;
    let fetched = fetched?;
    report.pages += fetched.pages;
    report.pulled += fetched.pulled;
    if bootstrap {
        // Snapshots are fetched after the pull: any change the pull skipped is
        // covered by a snapshot at least as new as the one that made it skip.
        let mut after = None;
        let mut untrusted = std::collections::BTreeSet::new();
        loop {
            let page = remote
                .get_snapshots(SnapshotQuery {
                    v: SNAPSHOT_PAGE_VERSION,
                    workspace: ws,
                    after,
                    limit: cfg.snapshot_page_limit.max(1),
                })
                .await?;
            after = page.snapshots.last().map(|s| s.doc_id);
            let snaps: Vec<_> = page
                .snapshots
                .into_iter()
                .map(|s| DownloadedSnapshot::from_record(ws, s))
                .collect();
            let n = snaps.len();
            let applied = blocking(replica, move |r| r.apply_snapshots(snaps)).await?;
            for e in &applied.untrusted {
                tracing::warn!(workspace = %ws, error = %e, "snapshot not trusted; pulling its changes instead");
                untrusted.insert(e.doc_id());
            }
            report.snapshots_untrusted += applied.untrusted.len();
            report.snapshots_loaded += n - applied.untrusted.len();
            report.applied += applied.applied;
            report.duplicates += applied.duplicates;
            progress(SyncProgress::Snapshots {
                workspace: ws,
                loaded: report.snapshots_loaded,
            });
            if !page.has_more || after.is_none() {
                break;
            }
        }
        if !untrusted.is_empty() {
            pull_documents_from_log(replica, remote, cfg, ws, &untrusted, report).await?;
        }
    }
    rec.bootstrapped = true;
    rec.last_sync_ms = replica.now_ms();
    let rec2 = rec.clone();
    blocking(replica, move |r| r.set_cursor(&ws, &rec2)).await?;
    Ok(())
}

/// The fallback for untrusted snapshots: pulls the whole log of `ws` again
/// without skipping snapshotted changes and applies the changes of `docs`
/// (what the replica already has counts as duplicates). Not persisted as a
/// cursor: until the bootstrap is marked done, an interrupted fallback is
/// redone by the next pass.
async fn pull_documents_from_log(
    replica: &Replica,
    remote: &dyn Remote,
    cfg: &SyncConfig,
    ws: WorkspaceId,
    docs: &std::collections::BTreeSet<crate::id::DocId>,
    report: &mut SyncReport,
) -> Result<()> {
    let mut cursor = Cursor::start();
    loop {
        let page = remote
            .pull(PullRequest {
                v: WIRE_VERSION,
                workspace: ws,
                cursor,
                limit: cfg.pull_limit,
                skip_snapshotted: false,
            })
            .await?;
        report.pages += 1;
        report.pulled += page.changes.len();
        let changes: Vec<RemoteChange> = page
            .changes
            .into_iter()
            .filter(|c| docs.contains(&c.change.doc_id))
            .map(|c| RemoteChange::from_envelope(ws, c.change))
            .collect();
        let applied = blocking(replica, move |r| r.apply_remote(changes, None)).await?;
        report.applied += applied.applied;
        report.duplicates += applied.duplicates;
        report.remote_rejected += applied.rejected.len();
        cursor = page.next_cursor;
        if !page.has_more {
            return Ok(());
        }
    }
}

/// Uploads snapshots of the documents of `ws` that changed enough since the
/// last upload (see [`SyncConfig::snapshot_threshold`]).
///
/// # Errors
/// The first failing remote call or storage error.
pub async fn upload_snapshots(
    replica: &Replica,
    remote: &dyn Remote,
    cfg: &SyncConfig,
    ws: WorkspaceId,
    report: &mut SyncReport,
) -> Result<()> {
    if cfg.snapshot_threshold == 0 {
        return Ok(());
    }
    let threshold = cfg.snapshot_threshold;
    let covers = match blocking(replica, move |r| r.cursor(&ws)).await? {
        Some(rec) if !rec.cursor.is_empty() => rec.cursor,
        _ => return Ok(()),
    };
    let candidates = blocking(replica, move |r| r.snapshot_candidates(&ws, threshold)).await?;
    for (id, collection) in candidates {
        let (bytes, heads) = blocking(replica, move |r| r.save(&id)).await?;
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            // Every remote refuses it: do not send it (retried only after
            // another `snapshot_threshold` changes).
            blocking(replica, move |r| r.mark_snapshot_uploaded(&id)).await?;
            report.snapshots_skipped += 1;
            continue;
        }
        let upload = remote
            .put_snapshot(SnapshotUpload {
                v: WIRE_VERSION,
                workspace: ws,
                doc_id: id,
                collection,
                heads,
                covers: Cursor(covers.clone()),
                bytes,
            })
            .await;
        match upload {
            Ok(_) => {
                blocking(replica, move |r| r.mark_snapshot_uploaded(&id)).await?;
                report.snapshots_uploaded += 1;
            }
            // A reader may pull but not write snapshots: none of this
            // workspace's will be taken, so stop asking for this pass.
            Err(RemoteError::Forbidden { message }) => {
                tracing::info!(%ws, %message, "snapshot upload not allowed; skipping snapshots");
                report.snapshots_skipped += 1;
                return Ok(());
            }
            // This document's snapshot will not fit (or was refused): mark it
            // so it is retried only after another `snapshot_threshold`
            // changes, instead of on every pass.
            Err(e @ (RemoteError::TooLarge { .. } | RemoteError::BadRequest { .. })) => {
                tracing::warn!(%ws, doc = %id, error = %e, "snapshot not accepted; skipped");
                blocking(replica, move |r| r.mark_snapshot_uploaded(&id)).await?;
                report.snapshots_skipped += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Runs one whole sync pass without an engine: push the outbox, then pull
/// and upload snapshots of every workspace in `workspaces` plus every
/// workspace the replica holds documents of. `progress` hears of every
/// confirmed push batch and every applied batch of pages.
///
/// [`SyncEngine`](crate::SyncEngine) runs this pass when its triggers say
/// so; call it directly for a one-shot sync (the `supamerge sync` command
/// does). Safe to interrupt or fail at any point: the next pass redoes the
/// unfinished work.
///
/// # Errors
/// The first failing step: a remote call ([`Error::Remote`]), the store
/// ([`Error::Store`]), a blocking task ([`Error::Task`]). What was confirmed
/// or applied before stays so.
pub async fn sync_once(
    replica: &Replica,
    remote: &dyn Remote,
    cfg: &SyncConfig,
    workspaces: &[WorkspaceId],
    progress: &(dyn Fn(SyncProgress) + Send + Sync),
) -> Result<SyncReport> {
    let started = Instant::now();
    let mut report = SyncReport::default();
    push(replica, remote, cfg, &mut report, progress).await?;
    let mut all: Vec<WorkspaceId> = blocking(replica, |r| r.workspaces()).await?;
    for w in workspaces {
        if !all.contains(w) {
            all.push(*w);
        }
    }
    report.workspaces = all.len();
    for ws in all {
        if report.not_a_member.contains(&ws) {
            continue;
        }
        match pull(replica, remote, cfg, ws, &mut report, progress).await {
            // Issue 16: reported, not an error of the pass.
            Err(Error::Remote(RemoteError::NotAMember { .. })) => {
                report.not_a_member.push(ws);
                continue;
            }
            other => other?,
        }
        upload_snapshots(replica, remote, cfg, ws, &mut report).await?;
    }
    report.waiting = blocking(replica, |r| Ok(r.pending_remote())).await?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}
