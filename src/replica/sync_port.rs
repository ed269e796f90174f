//! The sync port: what a sync engine needs from a replica — the outbox
//! (peek, acknowledge, dead-letter), the pull cursors, the workspaces to
//! pull, and the documents worth a snapshot upload. Applying pulled changes
//! and snapshots is in `apply.rs`.

use std::collections::HashSet;

use automerge::ChangeHash;

use super::Replica;
use crate::error::Result;
use crate::id::{Collection, DocId, WorkspaceId};
use crate::store::{CursorRecord, DeadLetter, OutboxEntry};

impl Replica {
    /// How many local changes wait to be pushed.
    pub fn pending(&self) -> usize {
        self.inner.store.outbox_len()
    }

    /// The oldest outbox entries: at most `max_count`, at most `max_bytes` of
    /// change bytes (at least one entry when the outbox is not empty).
    ///
    /// # Errors
    /// Storage errors.
    pub fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<OutboxEntry>> {
        Ok(self.inner.store.outbox_peek(max_count, max_bytes)?)
    }

    /// Removes the entries of these hashes from the outbox (the remote
    /// confirmed them). Returns how many were removed.
    ///
    /// # Errors
    /// Storage errors (nothing is removed then).
    pub fn ack(&self, hashes: &[ChangeHash]) -> Result<usize> {
        Ok(self.inner.store.transact("ack", |tx| {
            let mut n = 0;
            for h in hashes {
                if tx.take_outbox(h)?.is_some() {
                    n += 1;
                }
            }
            Ok(n)
        })?)
    }

    /// Moves the entry of `hash` from the outbox to the dead letters with the
    /// remote's reason. Returns whether it was in the outbox.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_letter(&self, hash: &ChangeHash, reason: &str) -> Result<bool> {
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

    /// The changes the remote rejected, with reasons.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Ok(self.inner.store.dead_letters()?)
    }

    /// The cursor record of a workspace.
    ///
    /// # Errors
    /// Storage errors.
    pub fn cursor(&self, ws: &WorkspaceId) -> Result<Option<CursorRecord>> {
        Ok(self.inner.store.cursor(ws)?)
    }

    /// Sets a workspace's cursor record alone (no changes).
    ///
    /// # Errors
    /// Storage errors.
    pub fn set_cursor(&self, ws: &WorkspaceId, rec: &CursorRecord) -> Result<()> {
        Ok(self
            .inner
            .store
            .transact("cursor", |tx| tx.put_cursor(ws, rec))?)
    }

    /// Every workspace this replica holds documents of or has synced.
    ///
    /// # Errors
    /// Storage errors.
    pub fn workspaces(&self) -> Result<Vec<WorkspaceId>> {
        let mut set: std::collections::BTreeSet<WorkspaceId> = self
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

    /// The compacted `save()` of a document with its heads.
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors.
    pub fn save(&self, id: &DocId) -> Result<(Vec<u8>, Vec<ChangeHash>)> {
        self.with_doc(id, |d| (d.save(), d.get_heads()))
    }

    /// Documents worth a snapshot upload: at least `threshold` changes since
    /// the last upload, nothing in the outbox and nothing pending for them.
    ///
    /// # Errors
    /// Storage errors.
    pub fn snapshot_candidates(
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

    /// Records that a snapshot of `id` was uploaded (resets its counter).
    ///
    /// # Errors
    /// Storage errors.
    pub fn mark_snapshot_uploaded(&self, id: &DocId) -> Result<()> {
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

    /// The number of remote changes waiting for their dependencies.
    pub fn pending_remote(&self) -> usize {
        self.inner.store.pending_len()
    }
}
