//! What the engine learns from its own remote calls, for its live updates:
//! the sequence numbers the remote stored for **its** pushes (a nudge that
//! only announces them needs no pull), and the workspaces it pulls (it
//! subscribes to exactly the set it syncs).
//!
//! [`Recorder`] wraps the engine's remote and records both as the answers
//! pass through; [`OwnSeqs`] is the bounded memory of seqs and the pure
//! decision [`OwnSeqs::covers`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::id::WorkspaceId;
use crate::protocol::wire::{
    PullPage, PullRequest, PushOutcome, PushRequest, PushResponse, SnapshotOutcome, SnapshotPage,
    SnapshotQuery, SnapshotUpload,
};
use crate::remote::{LiveUpdates, Remote, RemoteError};

/// How many of its own seqs the engine remembers per workspace (the oldest
/// are forgotten first: a nudge naming a forgotten one just pulls).
pub(crate) const OWN_SEQS_KEPT: usize = 65_536;

/// The seqs the remote stored for this engine's pushes, per workspace.
#[derive(Debug, Default)]
pub(crate) struct OwnSeqs {
    by_workspace: HashMap<WorkspaceId, BTreeSet<u64>>,
}

impl OwnSeqs {
    /// Remembers that the remote stored one of our changes at `seq`.
    pub(crate) fn record(&mut self, ws: WorkspaceId, seq: u64) {
        let seqs = self.by_workspace.entry(ws).or_default();
        seqs.insert(seq);
        while seqs.len() > OWN_SEQS_KEPT {
            seqs.pop_first();
        }
    }

    /// Whether every seq of `from..=to` is one of ours: then a nudge for
    /// that range announces nothing this replica lacks.
    pub(crate) fn covers(&self, ws: WorkspaceId, from: u64, to: u64) -> bool {
        if from > to {
            return false;
        }
        let Some(seqs) = self.by_workspace.get(&ws) else {
            return false;
        };
        // `span + 1` seqs are wanted; a range wider than what is remembered
        // cannot be covered (and is not counted).
        let span = to - from;
        span < seqs.len() as u64 && seqs.range(from..=to).count() as u64 == span + 1
    }
}

/// What the [`Recorder`] saw, shared with the engine.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    own: Mutex<OwnSeqs>,
    pulled: Mutex<BTreeSet<WorkspaceId>>,
}

impl Seen {
    /// Whether `from..=to` of `ws` was all stored by our pushes.
    pub(crate) fn own_covers(&self, ws: WorkspaceId, from: u64, to: u64) -> bool {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .covers(ws, from, to)
    }

    /// Every workspace a pull succeeded for.
    pub(crate) fn pulled(&self) -> Vec<WorkspaceId> {
        self.pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// The engine's remote: the app's, recording what [`Seen`] holds.
pub(crate) struct Recorder {
    inner: Arc<dyn Remote>,
    seen: Arc<Seen>,
}

impl Recorder {
    pub(crate) fn new(inner: Arc<dyn Remote>, seen: Arc<Seen>) -> Self {
        Self { inner, seen }
    }
}

#[async_trait]
impl Remote for Recorder {
    async fn push(&self, req: PushRequest) -> Result<PushResponse, RemoteError> {
        let ws = req.workspace;
        let resp = self.inner.push(req).await?;
        let mut own = self.seen.own.lock().unwrap_or_else(|e| e.into_inner());
        for o in &resp.results {
            if let PushOutcome::Stored { seq } = o {
                if let Ok(seq) = u64::try_from(*seq) {
                    own.record(ws, seq);
                }
            }
        }
        drop(own);
        Ok(resp)
    }

    async fn pull(&self, req: PullRequest) -> Result<PullPage, RemoteError> {
        let ws = req.workspace;
        let page = self.inner.pull(req).await?;
        self.seen
            .pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ws);
        Ok(page)
    }

    async fn put_snapshot(&self, snap: SnapshotUpload) -> Result<SnapshotOutcome, RemoteError> {
        self.inner.put_snapshot(snap).await
    }

    async fn get_snapshots(&self, query: SnapshotQuery) -> Result<SnapshotPage, RemoteError> {
        self.inner.get_snapshots(query).await
    }

    fn live_updates(&self) -> Option<Arc<dyn LiveUpdates>> {
        self.inner.live_updates()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(n: u8) -> WorkspaceId {
        WorkspaceId::from_random([n; 16])
    }

    #[test]
    fn a_range_is_covered_only_when_every_seq_is_ours() {
        let mut own = OwnSeqs::default();
        for s in [3, 4, 5, 9] {
            own.record(ws(1), s);
        }
        assert!(own.covers(ws(1), 3, 5));
        assert!(own.covers(ws(1), 9, 9));
        // 6..8 are someone else's: pull.
        assert!(!own.covers(ws(1), 3, 9));
        assert!(!own.covers(ws(1), 2, 3));
        // Another workspace, an empty or inverted range.
        assert!(!own.covers(ws(2), 3, 3));
        assert!(!own.covers(ws(1), 5, 4));
        assert!(!own.covers(ws(1), 0, u64::MAX));
    }

    #[test]
    fn the_memory_is_bounded_and_forgets_the_oldest() {
        let mut own = OwnSeqs::default();
        for s in 0..(OWN_SEQS_KEPT as u64 + 10) {
            own.record(ws(1), s);
        }
        assert_eq!(own.by_workspace[&ws(1)].len(), OWN_SEQS_KEPT);
        assert!(!own.covers(ws(1), 0, 0));
        assert!(own.covers(ws(1), 10, OWN_SEQS_KEPT as u64 + 9));
    }
}
