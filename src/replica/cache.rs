//! Loading documents from the store into the in-memory LRU cache.
//!
//! A document is its snapshot chunk followed by its incremental chunks,
//! loaded with one `Automerge::load`; remote changes still waiting for their
//! dependencies (the `pending` tree) are queued inside it again, so they are
//! applied as soon as the dependencies arrive. Each loaded document keeps
//! its [`EffectiveClock`]: the effective timestamps last-writer-wins compares
//! (`docs/conflicts.md`), computed once per change while it stays cached.

use automerge::{ActorId, Automerge, Change, ReadDoc};

use super::{Replica, State};
use crate::conflict::{EffectiveClock, LwwView};
use crate::entity::{self, EntityError};
use crate::error::Result;
use crate::id::DocId;
use crate::store::DocRecord;

/// A loaded document with its record.
pub(super) struct DocState {
    /// The document.
    pub(super) doc: Automerge,
    /// Its record in the `docs` tree, as last persisted.
    pub(super) record: DocRecord,
    /// Effective timestamps of the document's changes (last-writer-wins and
    /// the HLC of local commits), filled as they are needed.
    pub(super) clock: EffectiveClock,
    /// What [`DocCache`] last counted for this document in its total (0
    /// while it is not in the cache).
    pub(super) charged: usize,
}

impl DocState {
    /// A loaded document, its effective timestamps not computed yet.
    pub(super) fn new(doc: Automerge, record: DocRecord) -> Self {
        Self {
            doc,
            record,
            clock: EffectiveClock::new(),
            charged: 0,
        }
    }

    /// A document with no changes yet, written by `actor`.
    pub(super) fn empty(actor: &ActorId, record: DocRecord) -> Self {
        let mut doc = Automerge::new();
        doc.set_actor(actor.clone());
        Self::new(doc, record)
    }

    /// The last-writer-wins view of the document.
    pub(super) fn view(&self) -> LwwView<'_> {
        LwwView::new(&self.doc, &self.clock)
    }

    /// The approximate memory the loaded document takes, from its change
    /// and operation counts (Automerge keeps both counts, so this is O(1)),
    /// plus the effective-timestamp cache, plus a fixed overhead. Calibrated
    /// against the heap a loaded document really takes (`tests/cache_memory.rs`,
    /// `docs/storage.md`, "The in-memory cache").
    pub(super) fn approx_bytes(&self) -> usize {
        let stats = self.doc.stats();
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        n(stats.num_changes)
            .saturating_mul(BYTES_PER_CHANGE)
            .saturating_add(n(stats.num_ops).saturating_mul(BYTES_PER_OP))
            .saturating_add(self.clock.len().saturating_mul(CLOCK_ENTRY_BYTES))
            .saturating_add(DOC_OVERHEAD_BYTES)
    }
}

// Measured with a counting allocator (`tests/cache_memory.rs`, which checks
// the estimate stays within 0.8–3× of the heap; 0.97–1.39× when set):
// documents loaded from incremental chunks cost 250–340 bytes per change
// once edited, 18–19 KiB each when nearly empty; loaded from a snapshot,
// less (Automerge 0.12 keeps compacted history in compressed columns:
// 0.4–0.8× as much), so the estimate errs high there.

/// Heap per change in a loaded document's history (Automerge's change
/// graph: hash, index entries, actor, sequence).
const BYTES_PER_CHANGE: usize = 160;
/// Heap per operation.
const BYTES_PER_OP: usize = 45;
/// Memory of one entry of the effective-timestamp cache (filled for the
/// whole history by the first write or conflict read).
const CLOCK_ENTRY_BYTES: usize = 64;
/// Memory of an empty loaded document and its record.
const DOC_OVERHEAD_BYTES: usize = 18 * 1024;

/// Refuses a loaded document that is not an entity (yet): `NotFound` while
/// only early arrivals are there, `NotAnEntity` when its changes created no
/// `_meta` map.
pub(super) fn require_entity(ds: &DocState, id: &DocId) -> Result<()> {
    if entity::meta_obj(ds.view()).is_some() {
        return Ok(());
    }
    if ds.doc.get_heads().is_empty() {
        return Err(EntityError::NotFound { id: *id }.into());
    }
    Err(EntityError::NotAnEntity { id: *id }.into())
}

impl Replica {
    pub(super) fn load(&self, id: &DocId) -> Result<DocState> {
        let record = self
            .inner
            .store
            .get_doc(id)?
            .ok_or(EntityError::NotFound { id: *id })?;
        let chunks = self.inner.store.chunks(id)?;
        let total: usize = chunks.iter().map(|(_, c)| c.bytes.len()).sum();
        let mut bytes = Vec::with_capacity(total);
        for (_, c) in &chunks {
            bytes.extend_from_slice(&c.bytes);
        }
        let mut doc = if bytes.is_empty() {
            Automerge::new()
        } else {
            Automerge::load(&bytes).map_err(|source| EntityError::CorruptDocument {
                id: *id,
                source: Box::new(source),
            })?
        };
        doc.set_actor(self.inner.actor.clone());
        let pending = self.inner.store.pending_for(id)?;
        if !pending.is_empty() {
            let changes: Vec<Change> = pending
                .into_iter()
                .filter_map(|(_, p)| Change::from_bytes(p.bytes).ok())
                .collect();
            // Early arrivals whose deps are still missing stay queued inside
            // Automerge; the persisted copy stays in `pending`.
            let _ = doc.apply_changes(changes);
        }
        Ok(DocState::new(doc, record))
    }

    pub(super) fn get_loaded<'s>(&self, st: &'s mut State, id: &DocId) -> Result<&'s mut DocState> {
        if st.cache.contains(id) {
            // Count what the last use added (effective timestamps a read
            // computed).
            st.cache.recharge(id);
        } else {
            let ds = self.load(id)?;
            st.cache.put(*id, ds);
            self.trim_cache(st);
        }
        st.cache
            .get_mut(id)
            .ok_or_else(|| EntityError::NotFound { id: *id }.into())
    }

    pub(super) fn visible<'s>(&self, st: &'s mut State, id: &DocId) -> Result<&'s mut DocState> {
        let ds = self.get_loaded(st, id)?;
        require_entity(ds, id)?;
        if ds.record.deleted {
            return Err(EntityError::Deleted { id: *id }.into());
        }
        Ok(ds)
    }

    /// Drops the least recently used documents from memory while the
    /// cache's estimate exceeds its budget, keeping the most recent one.
    /// O(1) per call plus one step per dropped document: the cache keeps
    /// its total as it goes ([`DocCache`](super::DocCache)); a caller that
    /// changed a cached document recharges it first.
    /// Safe at any point: everything in the cache is also on disk, or is
    /// planned and about to be persisted (and then read back from disk).
    pub(super) fn trim_cache(&self, st: &mut State) {
        let budget = self.inner.cache_bytes;
        while st.cache.total_bytes() > budget && st.cache.len() > 1 {
            if st.cache.pop_lru().is_none() {
                break;
            }
        }
    }

    /// The cache's estimate of the memory its loaded documents take, in
    /// bytes (see [`ReplicaBuilder::with_cache_bytes`](super::ReplicaBuilder::with_cache_bytes)).
    pub fn cached_bytes(&self) -> usize {
        self.lock().cache.total_bytes()
    }

    /// How many documents are loaded in the in-memory LRU cache right now
    /// (at most the configured capacity, see
    /// [`ReplicaBuilder::with_cache_capacity`](super::ReplicaBuilder::with_cache_capacity)).
    pub fn cached_docs(&self) -> usize {
        self.lock().cache.len()
    }
}
