//! Last-writer-wins by effective timestamp, and the conflicts API types.
//!
//! Automerge keeps every concurrently written value of a field (`get_all`).
//! supamerge picks the visible one by the **effective timestamp** of the
//! change that wrote it: the larger one wins, ties broken by the larger actor
//! id (then the larger op id). The effective timestamp trusts no writer's
//! clock (DESIGN.md §2 item 9, §3): it is derived from the change graph,
//!
//! ```text
//! eff(c) = max(norm(c.time), 1 + max { eff(d) : d a dependency of c })
//! norm(t) = t × 1000   when 0 < t < 10^11   (unix seconds: Automerge's documented unit)
//!         = t          otherwise             (ms; 0 = no time; < 0 = before 1970)
//! ```
//!
//! clamped to ±([`MAX_TIME`](crate::clock::MAX_TIME) = 2^53 − 1) so that JavaScript numbers hold
//! every value exactly ([`effective_time`]). A write that has seen another
//! write therefore always has the larger effective timestamp, whatever its
//! writer stamped — seconds (the JavaScript default), nothing (0, the Rust
//! crate's default) or a skewed clock — so a value that beat some write is
//! beaten by every later write that saw it. supamerge's own local changes
//! stamp `max(wall-clock ms, 1 + the largest effective timestamp among the
//! heads)` ([`crate::clock::hlc_timestamp`]), so for them the effective
//! timestamp equals the stamped one. Every replica holding the same changes
//! computes the same winner; `docs/interop.md` gives the rule step by step for
//! other clients, and the JavaScript reference client (`clients/js`)
//! implements it.
//!
//! [`EffectiveClock`] caches the effective timestamp of every change of one
//! loaded document, filled incrementally: from the changes it lacks when a
//! conflicted field is read ([`EffectiveClock::effective`]), and from each
//! local commit ([`EffectiveClock::record_commit`]). [`LwwView`] is a read view
//! of a document through such a cache.
//!
//! Every concurrent value stays readable ([`crate::Replica::conflicts`]) until
//! an app resolves the field with [`crate::Replica::resolve`],
//! [`crate::Replica::keep_local`] or [`crate::Replica::keep_remote`]: one new,
//! causally later write. There is deliberately no automatic "local wins"
//! policy (see `docs/conflicts.md`).

use std::cell::RefCell;
use std::collections::HashMap;

use automerge::{ActorId, Automerge, ChangeHash, ObjId, Prop, ReadDoc, Value};
use serde::{Deserialize, Serialize};

use crate::clock::effective_time;

/// The effective timestamps of the changes of one document, computed once
/// per change and kept while the document stays loaded.
///
/// A change's effective timestamp depends only on the change and its
/// ancestors, so a cached value never goes stale. The cache knows every
/// change up to the heads it was last filled at; a lookup of a change it does
/// not know fills it with the changes the document has gained since (in the
/// document's causal order, each from its dependencies). Interior mutability
/// lets read views ([`LwwView`]) fill it; it is not `Sync`, like the
/// document cache that owns it.
#[derive(Debug, Default)]
pub struct EffectiveClock {
    /// The cache and how far it reaches.
    inner: RefCell<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    /// Effective timestamp per change hash.
    eff: HashMap<ChangeHash, i64>,
    /// Every change at or before these heads is in `eff` (sorted, as
    /// `Automerge::get_heads` returns them; empty: nothing filled yet).
    heads: Vec<ChangeHash>,
}

impl EffectiveClock {
    /// An empty cache (filled on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// How many changes the cache holds.
    pub fn len(&self) -> usize {
        self.inner.borrow().eff.len()
    }

    /// Whether the cache holds no change yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The effective timestamp of the change `hash` of `doc` (`None` when
    /// `doc` does not have that change).
    pub fn effective(&self, doc: &Automerge, hash: &ChangeHash) -> Option<i64> {
        if let Some(e) = self.inner.borrow().eff.get(hash) {
            return Some(*e);
        }
        self.fill(doc);
        self.inner.borrow().eff.get(hash).copied()
    }

    /// The largest effective timestamp among `hashes` (`None` for none): what
    /// a new change depending on them must exceed.
    pub fn max_effective(&self, doc: &Automerge, hashes: &[ChangeHash]) -> Option<i64> {
        hashes.iter().filter_map(|h| self.effective(doc, h)).max()
    }

    /// Brings the cache up to `doc`'s heads: computes every change `doc` has
    /// gained since the cache was last filled.
    pub fn fill(&self, doc: &Automerge) {
        let mut st = self.inner.borrow_mut();
        let heads = doc.get_heads();
        if st.heads == heads {
            return;
        }
        // The changes not covered yet, in the document's (causal) order.
        let missing = doc.get_changes_meta(&st.heads);
        for meta in &missing {
            if st.eff.contains_key(&meta.hash) {
                continue;
            }
            let mut deps = Vec::with_capacity(meta.deps.len());
            for d in &meta.deps {
                match st.eff.get(d) {
                    Some(e) => deps.push(*e),
                    None => deps.push(compute_from_graph(doc, &mut st.eff, d)),
                }
            }
            let e = effective_time(meta.timestamp, deps);
            st.eff.insert(meta.hash, e);
        }
        st.heads = heads;
    }

    /// Records a change just committed locally with time `time` on top of
    /// `deps` (the heads before the commit); `heads_after` are the
    /// document's heads now. Returns its effective timestamp when the
    /// dependencies were known (they are when the time was computed with
    /// [`EffectiveClock::max_effective`]).
    pub fn record_commit(
        &self,
        hash: ChangeHash,
        time: i64,
        deps: &[ChangeHash],
        heads_after: Vec<ChangeHash>,
    ) -> Option<i64> {
        let mut st = self.inner.borrow_mut();
        let dep_effs: Option<Vec<i64>> = deps.iter().map(|d| st.eff.get(d).copied()).collect();
        let e = effective_time(time, dep_effs?);
        st.eff.insert(hash, e);
        let mut before = deps.to_vec();
        before.sort_unstable();
        if st.heads == before {
            st.heads = heads_after;
        }
        Some(e)
    }
}

/// The effective timestamp of `hash` when the ordered fill meets a
/// dependency it has not computed (not expected: Automerge lists changes in
/// causal order): walks the ancestors it lacks, depth first, and computes
/// them dependencies first. A change the document lacks counts as `i64::MIN`.
fn compute_from_graph(
    doc: &Automerge,
    eff: &mut HashMap<ChangeHash, i64>,
    hash: &ChangeHash,
) -> i64 {
    let mut stack = vec![(*hash, false)];
    while let Some((h, expanded)) = stack.pop() {
        if eff.contains_key(&h) {
            continue;
        }
        let Some(meta) = doc.get_change_meta_by_hash(&h) else {
            eff.insert(h, i64::MIN);
            continue;
        };
        if expanded {
            let deps: Vec<i64> = meta
                .deps
                .iter()
                .map(|d| eff.get(d).copied().unwrap_or(i64::MIN))
                .collect();
            eff.insert(h, effective_time(meta.timestamp, deps));
        } else {
            stack.push((h, true));
            stack.extend(
                meta.deps
                    .iter()
                    .filter(|d| !eff.contains_key(*d))
                    .map(|d| (*d, false)),
            );
        }
    }
    eff.get(hash).copied().unwrap_or(i64::MIN)
}

/// Who wrote one candidate value: the key that orders candidates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteStamp {
    /// The effective timestamp of the change (ms, see `docs/conflicts.md`).
    pub timestamp: i64,
    /// The actor that made the change.
    pub actor: ActorId,
}

/// A read view of a document in which every field reads as its
/// last-writer-wins winner: what JSON and typed reads (autosurgeon
/// `hydrate`) see.
#[derive(Debug, Clone, Copy)]
pub struct LwwView<'a> {
    /// The document.
    doc: &'a Automerge,
    /// The effective timestamps of its changes.
    clock: &'a EffectiveClock,
}

impl<'a> LwwView<'a> {
    /// A view of `doc` ordering writes by the effective timestamps in
    /// `clock` (which must belong to `doc`, or be new).
    pub fn new(doc: &'a Automerge, clock: &'a EffectiveClock) -> Self {
        Self { doc, clock }
    }

    /// The document.
    pub fn doc(&self) -> &'a Automerge {
        self.doc
    }

    /// The effective-timestamp cache.
    pub fn clock(&self) -> &'a EffectiveClock {
        self.clock
    }

    /// The stamp of the change that created op `opid`, and that change's
    /// hash (`None` for the root or an op the document does not have).
    pub fn stamp_of(&self, opid: &ObjId) -> Option<(WriteStamp, ChangeHash)> {
        let ObjId::Id(_, actor, _) = opid else {
            return None;
        };
        let hash = self.doc.hash_for_opid(opid)?;
        let timestamp = self.clock.effective(self.doc, &hash)?;
        Some((
            WriteStamp {
                timestamp,
                actor: actor.clone(),
            },
            hash,
        ))
    }

    /// The visible value of `obj[prop]` under last-writer-wins: among the
    /// concurrent values, the one whose change has the largest (effective
    /// timestamp, actor), then the largest op id.
    ///
    /// # Errors
    /// Automerge's error when `obj` is not an object of this document.
    pub fn winner(
        &self,
        obj: &ObjId,
        prop: impl Into<Prop>,
    ) -> Result<Option<(Value<'a>, ObjId)>, automerge::AutomergeError> {
        let mut all = self.doc.get_all(obj, prop)?;
        if all.len() <= 1 {
            return Ok(all.pop());
        }
        Ok(all.into_iter().max_by(|(_, a), (_, b)| {
            let sa = self.stamp_of(a).map(|s| s.0);
            let sb = self.stamp_of(b).map(|s| s.0);
            sa.cmp(&sb).then_with(|| a.cmp(b))
        }))
    }
}

/// One of the concurrent values of a conflicted field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The value, as JSON.
    pub value: serde_json::Value,
    /// The actor that wrote it (hex).
    pub actor: String,
    /// The effective timestamp of the change that wrote it (ms): the
    /// ordering key.
    pub timestamp: i64,
    /// The time the writer stamped on that change, as stamped (seconds, ms
    /// or 0, see `docs/conflicts.md`).
    pub time: i64,
    /// The hash of that change (hex in JSON).
    #[serde(with = "crate::hash::hex")]
    pub change: ChangeHash,
}

/// A field holding concurrent values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Where, as a JSON pointer into the entity (`/title`, `/tags/2`).
    pub path: String,
    /// Every concurrent value, winner included, ordered by (effective
    /// timestamp, actor).
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the value every read returns.
    pub winner: usize,
}

/// Which writer a one-shot resolution keeps ([`crate::Replica::keep_local`],
/// [`crate::Replica::keep_remote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A value written by this replica (any actor it has committed with).
    Local,
    /// A value written by another replica.
    Remote,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Remote => "remote",
        })
    }
}

impl autosurgeon::ReadDoc for LwwView<'_> {
    type Parents<'b>
        = automerge::Parents<'b>
    where
        Self: 'b;

    fn get_heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    fn get<P: Into<Prop>>(
        &self,
        obj: &ObjId,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, automerge::AutomergeError> {
        self.winner(obj, prop)
    }

    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Option<automerge::ObjType> {
        ReadDoc::object_type(self.doc, obj).ok()
    }

    fn map_range<'b, O, R>(&'b self, obj: O, range: R) -> automerge::iter::MapRange<'b>
    where
        R: std::ops::RangeBounds<String> + 'b,
        O: AsRef<ObjId>,
    {
        ReadDoc::map_range(self.doc, obj, range)
    }

    fn list_range<O: AsRef<ObjId>, R: std::ops::RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> automerge::iter::ListRange<'_> {
        ReadDoc::list_range(self.doc, obj, range)
    }

    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        ReadDoc::length(self.doc, obj)
    }

    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, automerge::AutomergeError> {
        ReadDoc::text(self.doc, obj)
    }

    fn parents<O: AsRef<ObjId>>(
        &self,
        obj: O,
    ) -> Result<Self::Parents<'_>, automerge::AutomergeError> {
        ReadDoc::parents(self.doc, obj)
    }

    fn is_empty(&self) -> bool {
        ReadDoc::keys(self.doc, automerge::ROOT).count() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::{CommitOptions, Transactable};
    use automerge::ROOT;

    const T: i64 = 1_790_000_000_000;

    fn commit(doc: &mut Automerge, key: &str, v: &str, time: i64) -> ChangeHash {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, v).unwrap();
        tx.commit_with(CommitOptions::default().with_time(time))
            .0
            .unwrap()
    }

    #[test]
    fn the_cache_fills_incrementally_and_orders_foreign_writers() {
        // A supamerge writer at T, then a JavaScript writer (seconds) that has
        // seen it and stamps a second *earlier*, then a writer with no clock.
        let mut a = Automerge::new();
        a.set_actor(ActorId::from(&[1u8; 16][..]));
        let c1 = commit(&mut a, "x", "rust", T);
        let clock = EffectiveClock::new();
        assert_eq!(clock.effective(&a, &c1), Some(T));
        assert_eq!(clock.len(), 1);
        let c2 = commit(&mut a, "x", "js", T / 1000 - 1);
        let c3 = commit(&mut a, "x", "zero", 0);
        assert_eq!(clock.effective(&a, &c3), Some(T + 2));
        assert_eq!(clock.effective(&a, &c2), Some(T + 1));
        assert_eq!(clock.len(), 3);

        // A concurrent write from seconds 1.1 s after T wins over c1's value
        // in a fresh document holding c1 and it.
        let mut b = a.fork_at(&[c1]).unwrap();
        b.set_actor(ActorId::from(&[0u8; 16][..]));
        let rival = commit(&mut b, "x", "js later", T / 1000 + 1);
        let mut both = a.fork_at(&[c1]).unwrap();
        both.merge(&mut b).unwrap();
        let clock = EffectiveClock::new();
        let view = LwwView::new(&both, &clock);
        assert_eq!(clock.effective(&both, &rival), Some(T + 1_000));
        let (v, _) = view.winner(&ROOT, "x").unwrap().unwrap();
        assert_eq!(v.as_str(), Some("js later"));

        // Merged with the rest of the chain (effective T + 1 and T + 2, both
        // concurrent with the rival), the rival (T + 1000) still wins.
        both.merge(&mut a).unwrap();
        let view = LwwView::new(&both, &clock);
        let (v, _) = view.winner(&ROOT, "x").unwrap().unwrap();
        assert_eq!(v.as_str(), Some("js later"));
        assert_eq!(clock.len(), 4, "filled with the merged changes only");
    }

    #[test]
    fn ties_go_to_the_larger_actor() {
        let mut base = Automerge::new();
        let c0 = commit(&mut base, "x", "base", T);
        let mut lo = base.fork_at(&[c0]).unwrap();
        lo.set_actor(ActorId::from(&[1u8; 16][..]));
        let mut hi = base.fork_at(&[c0]).unwrap();
        hi.set_actor(ActorId::from(&[2u8; 16][..]));
        commit(&mut lo, "x", "lo", 0);
        commit(&mut hi, "x", "hi", 0);
        lo.merge(&mut hi).unwrap();
        let clock = EffectiveClock::new();
        let (v, _) = LwwView::new(&lo, &clock)
            .winner(&ROOT, "x")
            .unwrap()
            .unwrap();
        assert_eq!(v.as_str(), Some("hi"), "both T + 1: the larger actor");
    }

    #[test]
    fn a_recorded_commit_keeps_the_cache_complete() {
        let mut doc = Automerge::new();
        let clock = EffectiveClock::new();
        let c1 = commit(&mut doc, "x", "a", T);
        clock.fill(&doc);
        let heads = doc.get_heads();
        let ts = crate::clock::hlc_timestamp(T - 50, clock.max_effective(&doc, &heads));
        assert_eq!(ts, T + 1);
        let c2 = commit(&mut doc, "x", "b", ts);
        assert_eq!(
            clock.record_commit(c2, ts, &heads, doc.get_heads()),
            Some(T + 1)
        );
        // Complete: a lookup of an unknown hash does not refill.
        assert_eq!(clock.effective(&doc, &ChangeHash([7; 32])), None);
        assert_eq!(clock.effective(&doc, &c1), Some(T));
        assert_eq!(clock.len(), 2);
    }
}
