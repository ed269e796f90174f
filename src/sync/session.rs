//! One sync pass, executed: the shell around the sync core
//! ([`super::core`]). The core decides (what to push, how to split, when to
//! pull, what to apply with which cursor, which snapshots to upload); this
//! file runs its effects — replica calls on tokio's blocking pool, remote
//! calls on the [`Remote`] — and feeds the outcomes back.
//!
//! Persist before acknowledge: an outbox entry is removed only after the
//! remote confirmed it (stored or already present); a pulled batch is
//! applied and its cursor written in one sled transaction. Any step may fail
//! or the process may die at any point: the next pass redoes the unfinished
//! work, and the remote's deduplication and the replica's duplicate
//! detection make redoing harmless.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::id::WorkspaceId;
use crate::remote::{Remote, RemoteError};
use crate::replica::{Replica, SyncPort};

use super::core::{Effect, EffectId, Outcome, Pass};
pub use super::core::{SyncConfig, SyncProgress, SyncReport};

/// Runs a replica effect on the blocking pool.
async fn blocking(replica: &Replica, effect: Effect) -> Result<Outcome> {
    let r = replica.clone();
    tokio::task::spawn_blocking(move || replica_effect(&r, effect))
        .await
        .map_err(|source| Error::Task {
            task: "a replica call of a sync pass",
            source,
        })?
}

/// Executes a replica effect (blocking store I/O). Shared with the
/// simulation (`test_util::sim`), which runs it inline.
pub(crate) fn replica_effect(r: &Replica, effect: Effect) -> Result<Outcome> {
    Ok(match effect {
        Effect::Peek {
            max_count,
            max_bytes,
        } => Outcome::Peeked(r.peek(max_count, max_bytes)?),
        Effect::Settle { acks, dead } => {
            if !acks.is_empty() {
                r.ack(&acks)?;
            }
            for (h, reason) in &dead {
                r.dead_letter(h, reason)?;
            }
            Outcome::Done
        }
        Effect::Workspaces => Outcome::Workspaces(r.workspaces()?),
        Effect::ReadCursor { ws } => Outcome::Cursor(r.cursor(&ws)?),
        Effect::Apply {
            ws,
            changes,
            cursor,
        } => Outcome::Applied(r.apply_remote(changes, cursor.map(|c| (ws, c)))?),
        Effect::ApplySnapshots { snapshots } => Outcome::Applied(r.apply_snapshots(snapshots)?),
        Effect::WriteCursor { ws, rec } => {
            r.set_cursor(&ws, &rec)?;
            Outcome::Done
        }
        Effect::SnapshotCandidates { ws, threshold } => {
            Outcome::Candidates(r.snapshot_candidates(&ws, threshold)?)
        }
        Effect::Save { id } => {
            let (bytes, heads) = r.save(&id)?;
            Outcome::Saved { bytes, heads }
        }
        Effect::MarkSnapshotUploaded { id } => {
            r.mark_snapshot_uploaded(&id)?;
            Outcome::Done
        }
        Effect::Push(_) | Effect::Pull(_) | Effect::GetSnapshots(_) | Effect::PutSnapshot(_) => {
            return Err(misrouted("a remote call was given to the replica"));
        }
    })
}

/// An effect sent to the wrong side: a bug in the shell, never retried.
fn misrouted(what: &str) -> Error {
    Error::Remote(RemoteError::Protocol {
        reason: format!("sync shell: {what}"),
    })
}

/// Executes a remote effect. Shared with the simulation (`test_util::sim`),
/// which runs it against its simulated network.
pub(crate) async fn remote_effect(remote: &dyn Remote, effect: Effect) -> Result<Outcome> {
    Ok(match effect {
        Effect::Push(req) => Outcome::Pushed(remote.push(req).await?),
        Effect::Pull(req) => Outcome::Pulled(remote.pull(req).await?),
        Effect::GetSnapshots(q) => Outcome::Snapshots(remote.get_snapshots(q).await?),
        Effect::PutSnapshot(s) => {
            remote.put_snapshot(s).await?;
            Outcome::SnapshotStored
        }
        _ => return Err(misrouted("a replica call was given to the remote")),
    })
}

type Running<'a> = Pin<Box<dyn Future<Output = (EffectId, Result<Outcome>)> + Send + 'a>>;

/// Runs `pass` to its end: every effect it asks for is started at once (the
/// core keeps at most one replica and one remote call in flight), and each
/// outcome is fed back as soon as it is there.
async fn drive(
    replica: &Replica,
    remote: &dyn Remote,
    mut pass: Pass,
    progress: &(dyn Fn(SyncProgress) + Send + Sync),
) -> Result<SyncReport> {
    let mut step = pass.start(replica.now_ms());
    let mut running: Vec<Running<'_>> = Vec::new();
    loop {
        for p in step.progress.drain(..) {
            progress(p);
        }
        if let Some(done) = step.done.take() {
            return done;
        }
        for (id, effect) in step.effects.drain(..) {
            let fut: Running<'_> = if effect.is_remote() {
                Box::pin(async move { (id, remote_effect(remote, effect).await) })
            } else {
                Box::pin(async move { (id, blocking(replica, effect).await) })
            };
            running.push(fut);
        }
        if running.is_empty() {
            // The core waits for nothing and did not finish: a core bug,
            // reported rather than hung on.
            return Err(Error::Remote(RemoteError::Protocol {
                reason: "sync core: a pass stalled with nothing in flight".into(),
            }));
        }
        let (id, outcome) = std::future::poll_fn(|cx| {
            for i in 0..running.len() {
                if let Poll::Ready(out) = running[i].as_mut().poll(cx) {
                    drop(running.swap_remove(i));
                    return Poll::Ready(out);
                }
            }
            Poll::Pending
        })
        .await;
        step = pass.handle(replica.now_ms(), id, outcome);
    }
}

/// Pulls every page of one workspace; bootstraps from snapshots when the
/// replica has never completed a sync of it (no push, no snapshot upload).
///
/// # Errors
/// The first failing remote call or storage error; every batch applied
/// before stays applied with its cursor.
#[cfg(feature = "bench")]
pub async fn pull(
    replica: &Replica,
    remote: &dyn Remote,
    cfg: &SyncConfig,
    ws: WorkspaceId,
    progress: &(dyn Fn(SyncProgress) + Send + Sync),
) -> Result<SyncReport> {
    drive(replica, remote, Pass::pull_only(cfg.clone(), ws), progress).await
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
    let pass = Pass::new(cfg.clone(), workspaces, replica.pending());
    let mut report = drive(replica, remote, pass, progress).await?;
    let r = replica.clone();
    report.waiting = tokio::task::spawn_blocking(move || r.pending_remote())
        .await
        .map_err(|source| Error::Task {
            task: "a replica call of a sync pass",
            source,
        })?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}
