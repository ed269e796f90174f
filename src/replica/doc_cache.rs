//! The document cache: an LRU of loaded documents that keeps a running
//! total of their estimated memory, so keeping it within its byte budget
//! costs O(1) per access instead of a sum over every cached document.
//!
//! Each entry records what it was last counted for
//! ([`DocState::charged`](super::cache::DocState)); [`DocCache::recharge`]
//! re-estimates one document after it changed (a commit, an applied batch,
//! a compaction, timestamps computed by a read), and every removal
//! subtracts what the entry was counted for. The total is exact with
//! respect to those counts at every step.

use std::num::NonZeroUsize;

use lru::LruCache;

use super::cache::DocState;
use crate::id::DocId;

/// Loaded documents, least recently used first out, with their estimated
/// total memory.
pub(super) struct DocCache {
    /// The documents.
    lru: LruCache<DocId, DocState>,
    /// The sum of the entries' `charged`.
    total: usize,
}

impl DocCache {
    /// An empty cache of at most `capacity` documents.
    pub(super) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            lru: LruCache::new(capacity),
            total: 0,
        }
    }

    /// Whether `id` is loaded (does not touch the LRU order).
    pub(super) fn contains(&self, id: &DocId) -> bool {
        self.lru.contains(id)
    }

    /// The loaded document `id`, now the most recently used.
    pub(super) fn get_mut(&mut self, id: &DocId) -> Option<&mut DocState> {
        self.lru.get_mut(id)
    }

    /// Adds (or replaces) `id`, counted at its current estimate. Returns the
    /// document it replaced or the least recently used one the capacity
    /// pushed out, for the caller to drop (outside the replica's lock when
    /// that matters).
    pub(super) fn push(&mut self, id: DocId, mut ds: DocState) -> Option<(DocId, DocState)> {
        ds.charged = ds.approx_bytes();
        self.total = self.total.saturating_add(ds.charged);
        let out = self.lru.push(id, ds);
        if let Some((_, old)) = &out {
            self.total = self.total.saturating_sub(old.charged);
        }
        out.map(|(k, mut old)| {
            old.charged = 0;
            (k, old)
        })
    }

    /// Adds (or replaces) `id`, dropping whatever it pushes out.
    pub(super) fn put(&mut self, id: DocId, ds: DocState) {
        drop(self.push(id, ds));
    }

    /// Takes `id` out of the cache.
    pub(super) fn pop(&mut self, id: &DocId) -> Option<DocState> {
        let mut ds = self.lru.pop(id)?;
        self.total = self.total.saturating_sub(ds.charged);
        ds.charged = 0;
        Some(ds)
    }

    /// Takes the least recently used document out.
    pub(super) fn pop_lru(&mut self) -> Option<(DocId, DocState)> {
        let (id, mut ds) = self.lru.pop_lru()?;
        self.total = self.total.saturating_sub(ds.charged);
        ds.charged = 0;
        Some((id, ds))
    }

    /// Re-estimates `id` (after it changed) without touching the LRU order.
    pub(super) fn recharge(&mut self, id: &DocId) {
        if let Some(ds) = self.lru.peek_mut(id) {
            let now = ds.approx_bytes();
            self.total = self.total.saturating_sub(ds.charged).saturating_add(now);
            ds.charged = now;
        }
    }

    /// The estimated memory of every loaded document, in bytes.
    pub(super) fn total_bytes(&self) -> usize {
        self.total
    }

    /// How many documents are loaded.
    pub(super) fn len(&self) -> usize {
        self.lru.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Collection, WorkspaceId};
    use crate::store::DocRecord;
    use automerge::{transaction::Transactable, Automerge, ROOT};

    fn doc_with(n: usize) -> DocState {
        let mut doc = Automerge::new();
        for i in 0..n {
            let mut tx = doc.transaction();
            tx.put(ROOT, "n", i as i64).unwrap();
            tx.commit();
        }
        let record = DocRecord::new(WorkspaceId::new(), Collection::new("c").unwrap());
        DocState::new(doc, record)
    }

    fn sum(c: &DocCache) -> usize {
        c.lru.iter().map(|(_, ds)| ds.approx_bytes()).sum()
    }

    #[test]
    fn the_running_total_is_the_sum_of_the_estimates() {
        let mut c = DocCache::new(NonZeroUsize::new(3).unwrap());
        let ids: Vec<DocId> = (0..5u8).map(|i| DocId::new_v7(1, [i; 10])).collect();
        assert_eq!(c.total_bytes(), 0);
        c.put(ids[0], doc_with(1));
        c.put(ids[1], doc_with(20));
        assert_eq!(c.total_bytes(), sum(&c));
        // Replacing an entry counts only the new one.
        c.put(ids[1], doc_with(40));
        assert_eq!(c.total_bytes(), sum(&c));
        // The capacity pushes the least recently used out, and its count.
        c.put(ids[2], doc_with(5));
        let out = c.push(ids[3], doc_with(5));
        assert_eq!(out.map(|(k, _)| k), Some(ids[0]));
        assert_eq!(c.len(), 3);
        assert_eq!(c.total_bytes(), sum(&c));
        // A document that grows in place is counted anew on recharge.
        let before = c.total_bytes();
        let ds = c.get_mut(&ids[2]).unwrap();
        for i in 0..100 {
            let mut tx = ds.doc.transaction();
            tx.put(ROOT, "m", i).unwrap();
            tx.commit();
        }
        assert_eq!(c.total_bytes(), before);
        c.recharge(&ids[2]);
        assert!(c.total_bytes() > before);
        assert_eq!(c.total_bytes(), sum(&c));
        c.pop(&ids[2]);
        assert_eq!(c.total_bytes(), sum(&c));
        while c.pop_lru().is_some() {}
        assert_eq!(c.total_bytes(), 0);
    }
}
