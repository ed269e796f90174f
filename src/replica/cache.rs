//! Loading documents from the store into the in-memory LRU cache.
//!
//! A document is its snapshot chunk followed by its incremental chunks,
//! loaded with one `Automerge::load`; remote changes still waiting for their
//! dependencies (the `pending` tree) are queued inside it again, so they are
//! applied as soon as the dependencies arrive. Each loaded document keeps
//! its [`EffectiveClock`]: the effective timestamps last-writer-wins compares
//! (`docs/conflicts.md`), computed once per change while it stays cached.

use automerge::{ActorId, Automerge, Change};

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
}

impl DocState {
    /// A loaded document, its effective timestamps not computed yet.
    pub(super) fn new(doc: Automerge, record: DocRecord) -> Self {
        Self {
            doc,
            record,
            clock: EffectiveClock::new(),
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
}

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
        if !st.cache.contains(id) {
            let ds = self.load(id)?;
            st.cache.put(*id, ds);
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

    /// How many documents are loaded in the in-memory LRU cache right now
    /// (at most the configured capacity, see
    /// [`ReplicaBuilder::with_cache_capacity`](super::ReplicaBuilder::with_cache_capacity)).
    pub fn cached_docs(&self) -> usize {
        self.lock().cache.len()
    }
}
