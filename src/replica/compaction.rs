//! Compaction: when a document's incremental chunks are folded into a new
//! snapshot (a pure policy over its record), and the fold itself (one
//! transaction replacing every chunk by the snapshot).

use super::cache::DocState;
use super::{Replica, State};
use crate::error::Result;
use crate::id::DocId;
use crate::store::{Chunk, ChunkKind, DocRecord};

/// When documents are compacted: a document whose incremental chunks
/// (local commits, pulled batches) reach `min_chunks` chunks *or*
/// `min_bytes` bytes, and (with `when_larger_than_snapshot`) are together
/// larger than its snapshot, is folded into one new snapshot. A local
/// commit folds only once its document's chunks are larger than
/// `local_growth` times the snapshot; the acknowledgement of a push (and a
/// remote apply) folds at once the snapshot is outgrown. So typing pays
/// for a fold (a `save()` of the whole document) a `local_growth`-th as
/// often, and a replica that syncs keeps the ×1 bound.
///
/// Counting bytes as well as chunks keeps a replica's directory within a
/// small multiple of its documents' saved size whatever the chunk sizes: a
/// pulling replica writes one chunk per document per applied batch, and
/// few large chunks must not wait for a count (`docs/storage.md`,
/// "Compaction"). The cost stays linear: a fold writes the snapshot, and
/// the next one waits until the new chunks outgrow it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Compact once a document has at least this many incremental chunks...
    pub min_chunks: u64,
    /// ...or its incremental chunks hold at least this many bytes...
    pub min_bytes: u64,
    /// ...and together they are larger than its snapshot.
    pub when_larger_than_snapshot: bool,
    /// On a local commit, with `when_larger_than_snapshot`: larger than
    /// this many times the snapshot (at least 1). The acknowledgement of
    /// the document's pushed changes folds it at ×1 (`docs/storage.md`,
    /// "Compaction").
    pub local_growth: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        Self {
            min_chunks: 16,
            min_bytes: 1024,
            when_larger_than_snapshot: true,
            local_growth: 4,
        }
    }
}

impl CompactionPolicy {
    /// Whether a document with this record is due for compaction.
    pub(super) fn is_due(&self, r: &DocRecord) -> bool {
        self.is_due_at(r, 1)
    }

    /// Whether a document with this record is due for compaction right
    /// after a local commit: as [`is_due`](Self::is_due), with the
    /// snapshot multiplied by `local_growth`.
    pub(super) fn is_due_local(&self, r: &DocRecord) -> bool {
        self.is_due_at(r, self.local_growth.max(1))
    }

    /// The rule, with the chunks compared to `growth` times the snapshot.
    fn is_due_at(&self, r: &DocRecord, growth: u64) -> bool {
        (r.incremental_count >= self.min_chunks || r.incremental_len >= self.min_bytes)
            && r.incremental_count > 0
            && (!self.when_larger_than_snapshot
                || r.incremental_len > r.snapshot_len.saturating_mul(growth))
    }
}

impl Replica {
    /// Compacts the cached document `id` when the policy says it is due,
    /// then keeps the cache within its budget (`id` stays: it is the most
    /// recently used). Called after every remote apply, import and migration.
    pub(super) fn maybe_compact(&self, st: &mut State, id: &DocId) -> Result<()> {
        self.maybe_compact_by(st, id, CompactionPolicy::is_due)
    }

    /// [`maybe_compact`](Self::maybe_compact) after a local commit: by
    /// [`CompactionPolicy::is_due_local`].
    pub(super) fn maybe_compact_local(&self, st: &mut State, id: &DocId) -> Result<()> {
        self.maybe_compact_by(st, id, CompactionPolicy::is_due_local)
    }

    fn maybe_compact_by(
        &self,
        st: &mut State,
        id: &DocId,
        due: fn(&CompactionPolicy, &DocRecord) -> bool,
    ) -> Result<()> {
        let policy = self.inner.compaction;
        if let Some(ds) = st.cache.get_mut(id) {
            if due(&policy, &ds.record) {
                self.compact_loaded(ds, id)?;
            }
        }
        st.cache.recharge(id);
        self.trim_cache(st);
        Ok(())
    }

    /// After a push was acknowledged: folds those of `ids` that are cached
    /// and due by [`CompactionPolicy::is_due`] (their local commits may have
    /// let them grow to `local_growth` times the snapshot). A document no
    /// longer cached keeps its chunks until its next commit or apply.
    pub(super) fn compact_acknowledged(&self, ids: &[DocId]) -> Result<()> {
        let policy = self.inner.compaction;
        let mut st = self.lock();
        for id in ids {
            if let Some(ds) = st.cache.get_mut(id) {
                if policy.is_due(&ds.record) {
                    self.compact_loaded(ds, id)?;
                    st.cache.recharge(id);
                }
            }
        }
        self.trim_cache(&mut st);
        Ok(())
    }

    fn compact_loaded(&self, ds: &mut DocState, id: &DocId) -> Result<()> {
        let snapshot = ds.doc.save();
        let old: Vec<u64> = self
            .inner
            .store
            .chunks(id)?
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let mut record = ds.record.clone();
        let seq = record.next_chunk;
        record.next_chunk += 1;
        record.snapshot_len = snapshot.len() as u64;
        record.incremental_len = 0;
        record.incremental_count = 0;
        self.inner.store.transact("compact", |tx| {
            for s in &old {
                tx.remove_chunk(id, *s)?;
            }
            tx.put_chunk(
                id,
                seq,
                &Chunk {
                    kind: ChunkKind::Snapshot,
                    bytes: snapshot.clone(),
                },
            )?;
            tx.put_doc(id, &record)?;
            Ok(())
        })?;
        ds.record = record;
        Ok(())
    }

    /// Folds a document's chunks into one snapshot now.
    ///
    /// # Errors
    /// [`EntityError::NotFound`](crate::entity::EntityError::NotFound);
    /// storage errors (the old chunks stay then).
    pub fn compact(&self, id: &DocId) -> Result<()> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        self.compact_loaded(ds, id)
    }
}
