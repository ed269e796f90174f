//! Loading documents from the store into the in-memory LRU cache.
//!
//! A document is its snapshot chunk followed by its incremental chunks,
//! loaded with one `Automerge::load`; remote changes still waiting for their
//! dependencies (the `pending` tree) are queued inside it again, so they are
//! applied as soon as the dependencies arrive.

use std::collections::HashSet;

use automerge::{ActorId, Automerge, Change};

use super::{Replica, State};
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
    /// Largest timestamp among the heads' changes (for the HLC).
    pub(super) max_ts: Option<i64>,
}

impl DocState {
    /// A document with no changes yet, written by `actor`.
    pub(super) fn empty(actor: &ActorId, record: DocRecord) -> Self {
        let mut doc = Automerge::new();
        doc.set_actor(actor.clone());
        Self {
            doc,
            record,
            max_ts: None,
        }
    }
}

/// The largest timestamp among the changes a new local change depends on.
///
/// Usually the largest timestamp of the heads. Migration changes carry the
/// fixed timestamp 0 ([`crate::migrate`]) and are not later than what they
/// build on, so a head with a timestamp of 0 or less is looked through to its
/// own dependencies: the hybrid logical clock stays monotonic along every
/// causal chain.
pub(super) fn heads_max_ts(doc: &Automerge) -> Option<i64> {
    let mut max = None;
    let mut stack = doc.get_heads();
    let mut seen = HashSet::new();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        let Some(meta) = doc.get_change_meta_by_hash(&h) else {
            continue;
        };
        max = max.max(Some(meta.timestamp));
        if meta.timestamp <= 0 {
            stack.extend(meta.deps.iter().copied());
        }
    }
    max
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
        let max_ts = heads_max_ts(&doc);
        Ok(DocState {
            doc,
            record,
            max_ts,
        })
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
        if entity::meta_obj(&ds.doc).is_none() {
            // Only early arrivals so far: the entity does not exist yet here.
            return Err(EntityError::NotFound { id: *id }.into());
        }
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
