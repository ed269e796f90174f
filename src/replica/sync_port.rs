//! The sync port: what a sync engine needs from a replica, as one narrow
//! trait ([`SyncPort`]) — the outbox (peek, acknowledge, dead-letter), the
//! pull cursors, the workspaces to pull, applying pulled changes and
//! snapshots, and the documents worth a snapshot upload.
//!
//! The engine (`crate::sync`) reaches the replica only through this port
//! (plus [`Replica::save`], [`Replica::pending`] and the other public
//! reads). Every call is blocking I/O on the store; each one that writes is
//! one sled transaction.

use std::collections::{BTreeSet, HashSet};

use automerge::ChangeHash;

use super::{ApplyReport, RemoteChange, Replica};
use crate::error::Result;
use crate::id::{Collection, DocId, WorkspaceId};
use crate::protocol::DownloadedSnapshot;
use crate::store::{CursorRecord, DeadLetter, OutboxEntry};

mod sealed {
    /// Only [`Replica`](super::Replica) implements the port: methods can be
    /// added to it without breaking anyone.
    pub trait Sealed {}

    impl Sealed for super::Replica {}
}

/// What a sync engine needs from a replica.
///
/// [`SyncEngine`](crate::SyncEngine) and [`sync_once`](crate::sync_once)
/// drive it; an app needs it only to inspect the outbox or to move changes
/// over a transport of its own (`use supamerge::SyncPort;`). Sealed:
/// implemented by [`Replica`] only.
pub trait SyncPort: sealed::Sealed {
    /// The oldest outbox entries: at most `max_count`, at most `max_bytes` of
    /// change bytes (at least one entry when the outbox is not empty).
    ///
    /// # Errors
    /// Storage errors.
    fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<OutboxEntry>>;

    /// Removes the entries of these hashes from the outbox (the remote
    /// confirmed them). Returns how many were removed.
    ///
    /// # Errors
    /// Storage errors (nothing is removed then).
    fn ack(&self, hashes: &[ChangeHash]) -> Result<usize>;

    /// Moves the entry of `hash` from the outbox to the dead letters with the
    /// remote's reason. Returns whether it was in the outbox.
    ///
    /// # Errors
    /// Storage errors.
    fn dead_letter(&self, hash: &ChangeHash, reason: &str) -> Result<bool>;

    /// The cursor record of a workspace.
    ///
    /// # Errors
    /// Storage errors.
    fn cursor(&self, ws: &WorkspaceId) -> Result<Option<CursorRecord>>;

    /// Every workspace's cursor record.
    ///
    /// # Errors
    /// Storage errors.
    fn cursors(&self) -> Result<Vec<(WorkspaceId, CursorRecord)>>;

    /// Sets a workspace's cursor record alone (no changes).
    ///
    /// # Errors
    /// Storage errors.
    fn set_cursor(&self, ws: &WorkspaceId, rec: &CursorRecord) -> Result<()>;

    /// Every workspace this replica holds documents of, has synced or was
    /// told to join ([`SyncPort::join_workspace`]).
    ///
    /// # Errors
    /// Storage errors.
    fn workspaces(&self) -> Result<Vec<WorkspaceId>>;

    /// Records `ws` as a workspace to pull (a cursor that has never synced),
    /// unless the replica knows it already: from then on every sync pass
    /// pulls it, also after a restart. Returns whether it was new.
    /// [`SyncHandle::join`](crate::SyncHandle::join) calls this.
    ///
    /// # Errors
    /// Storage errors.
    fn join_workspace(&self, ws: &WorkspaceId) -> Result<bool>;

    /// Applies changes pulled from a remote, grouped per document in one
    /// `apply_changes` call each, and persists them — with `cursor`, when
    /// given — in one sled transaction. A batch touching more than a few
    /// documents that are not in the cache is applied in waves (loaded,
    /// planned, persisted, cached, the cache trimmed), one transaction each,
    /// the cursor with the last, so the batch never has every document loaded
    /// at once. Changes whose dependencies are missing are kept on disk and
    /// applied when the dependencies arrive. Corrupt changes are reported in
    /// [`ApplyReport::rejected`]; the rest applies.
    ///
    /// # Errors
    /// Storage errors: then the cursor is not stored, nor the failing wave;
    /// earlier waves may be (applying the batch again finds their changes
    /// already there).
    fn apply_remote(
        &self,
        changes: Vec<RemoteChange>,
        cursor: Option<(WorkspaceId, CursorRecord)>,
    ) -> Result<ApplyReport>;

    /// Merges downloaded snapshots (`save()` bytes) into the replica, as
    /// [`SyncPort::apply_remote`] does for changes.
    ///
    /// A snapshot of a document this replica has never seen (the fresh-device
    /// case) is loaded once and stored as the document's snapshot chunk, all
    /// such documents in one sled transaction. A snapshot of a document that
    /// already exists here (or has early arrivals waiting) is merged change by
    /// change through the same path as pulled changes.
    ///
    /// A snapshot is applied only if it loads and holds exactly the changes
    /// its digest says (`docs/protocol.md`, snapshot verification); any other
    /// is left out and reported in [`ApplyReport::untrusted`] (the caller
    /// then pulls those documents' changes instead).
    ///
    /// # Errors
    /// Storage errors.
    fn apply_snapshots(&self, snapshots: Vec<DownloadedSnapshot>) -> Result<ApplyReport>;

    /// Documents worth a snapshot upload: at least `threshold` changes since
    /// the last upload, nothing in the outbox and nothing pending for them.
    ///
    /// # Errors
    /// Storage errors.
    fn snapshot_candidates(
        &self,
        ws: &WorkspaceId,
        threshold: u64,
    ) -> Result<Vec<(DocId, Collection)>>;

    /// Records that a snapshot of `id` was uploaded (resets its counter).
    ///
    /// # Errors
    /// Storage errors.
    fn mark_snapshot_uploaded(&self, id: &DocId) -> Result<()>;
}

impl SyncPort for Replica {
    fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<OutboxEntry>> {
        Ok(self.inner.store.outbox_peek(max_count, max_bytes)?)
    }

    fn ack(&self, hashes: &[ChangeHash]) -> Result<usize> {
        let mut docs = self.inner.store.transact("ack", |tx| {
            let mut docs = Vec::new();
            for h in hashes {
                if let Some(e) = tx.take_outbox(h)? {
                    docs.push(e.doc_id);
                }
            }
            Ok(docs)
        })?;
        let n = docs.len();
        docs.sort_unstable();
        docs.dedup();
        // Local commits let a document's chunks grow to `local_growth`
        // times its snapshot; once they are pushed, fold at ×1.
        self.compact_acknowledged(&docs)?;
        Ok(n)
    }

    fn dead_letter(&self, hash: &ChangeHash, reason: &str) -> Result<bool> {
        let now = self.inner.clock.now_ms();
        Ok(self
            .inner
            .store
            .transact("dead letter", |tx| match tx.take_outbox(hash)? {
                Some(entry) => {
                    tx.push_dead_letter(&DeadLetter {
                        entry,
                        reason: reason.to_owned(),
                        at_ms: now,
                    })?;
                    Ok(true)
                }
                None => Ok(false),
            })?)
    }

    fn cursor(&self, ws: &WorkspaceId) -> Result<Option<CursorRecord>> {
        Ok(self.inner.store.cursor(ws)?)
    }

    fn cursors(&self) -> Result<Vec<(WorkspaceId, CursorRecord)>> {
        Ok(self.inner.store.cursors()?)
    }

    fn set_cursor(&self, ws: &WorkspaceId, rec: &CursorRecord) -> Result<()> {
        Ok(self
            .inner
            .store
            .transact("cursor", |tx| tx.put_cursor(ws, rec))?)
    }

    fn workspaces(&self) -> Result<Vec<WorkspaceId>> {
        let mut set: BTreeSet<WorkspaceId> = self
            .inner
            .store
            .cursors()?
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        for r in self.inner.store.docs() {
            set.insert(r?.1.workspace);
        }
        Ok(set.into_iter().collect())
    }

    fn join_workspace(&self, ws: &WorkspaceId) -> Result<bool> {
        Ok(self.inner.store.transact("join", |tx| tx.join_cursor(ws))?)
    }

    fn apply_remote(
        &self,
        changes: Vec<RemoteChange>,
        cursor: Option<(WorkspaceId, CursorRecord)>,
    ) -> Result<ApplyReport> {
        self.apply_changes_batch(changes, cursor)
    }

    fn apply_snapshots(&self, snapshots: Vec<DownloadedSnapshot>) -> Result<ApplyReport> {
        self.apply_snapshot_batch(snapshots)
    }

    fn snapshot_candidates(
        &self,
        ws: &WorkspaceId,
        threshold: u64,
    ) -> Result<Vec<(DocId, Collection)>> {
        let mut out = Vec::new();
        let mut outbox_docs = HashSet::new();
        for e in self.inner.store.outbox_peek(usize::MAX, usize::MAX)? {
            outbox_docs.insert(e.doc_id);
        }
        for r in self.inner.store.docs() {
            let (id, rec) = r?;
            if rec.workspace == *ws
                && rec.changes_since_upload >= threshold
                && !outbox_docs.contains(&id)
                && self.inner.store.pending_for(&id)?.is_empty()
            {
                out.push((id, rec.collection));
            }
        }
        Ok(out)
    }

    fn mark_snapshot_uploaded(&self, id: &DocId) -> Result<()> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        let mut record = ds.record.clone();
        record.changes_since_upload = 0;
        self.inner
            .store
            .transact("mark snapshot", |tx| tx.put_doc(id, &record))?;
        ds.record = record;
        Ok(())
    }
}

impl Replica {
    /// How many local changes wait to be pushed.
    pub fn pending(&self) -> usize {
        self.inner.store.outbox_len()
    }

    /// The changes the remote rejected, with reasons.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Ok(self.inner.store.dead_letters()?)
    }

    /// The number of remote changes waiting for their dependencies.
    pub fn pending_remote(&self) -> usize {
        self.inner.store.pending_len()
    }
}
