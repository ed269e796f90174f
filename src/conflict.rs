//! Last-writer-wins by hybrid logical clock, and the conflicts API types.
//!
//! Automerge keeps every concurrently written value of a field (`get_all`).
//! supamerge picks the visible one by the timestamp of the change that wrote
//! it: the larger timestamp wins, ties broken by the larger actor id. Because
//! local timestamps are hybrid logical clocks ([`crate::clock::hlc_timestamp`]),
//! a write that has seen another write always carries a larger timestamp; and a
//! causally later write replaces the earlier value anyway, so only truly
//! concurrent values ever compete here. Every replica holding the same changes
//! computes the same winner.
//!
//! Every concurrent value stays readable ([`crate::Replica::conflicts`]) until
//! an app resolves the field with [`crate::Replica::resolve`],
//! [`crate::Replica::keep_local`] or [`crate::Replica::keep_remote`]: one new,
//! causally later write. There is deliberately no automatic "local wins"
//! policy (see `docs/conflicts.md`).

use automerge::{ActorId, Automerge, ChangeHash, ObjId, Prop, ReadDoc, Value};
use serde::{Deserialize, Serialize};

/// Who wrote one candidate value: the key that orders candidates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteStamp {
    /// The HLC timestamp of the change (ms).
    pub timestamp: i64,
    /// The actor that made the change.
    pub actor: ActorId,
}

/// The stamp of the change that created op `opid`.
pub fn stamp_of(doc: &Automerge, opid: &ObjId) -> Option<(WriteStamp, ChangeHash)> {
    let ObjId::Id(_, actor, _) = opid else {
        return None;
    };
    let hash = doc.hash_for_opid(opid)?;
    let meta = doc.get_change_meta_by_hash(&hash)?;
    Some((
        WriteStamp {
            timestamp: meta.timestamp,
            actor: actor.clone(),
        },
        hash,
    ))
}

/// The visible value of `obj[prop]` under last-writer-wins by HLC.
///
/// # Errors
/// Automerge's error when `obj` is not an object of this document.
pub fn winner<'a>(
    doc: &'a Automerge,
    obj: &ObjId,
    prop: impl Into<Prop>,
) -> Result<Option<(Value<'a>, ObjId)>, automerge::AutomergeError> {
    let mut all = doc.get_all(obj, prop)?;
    if all.len() <= 1 {
        return Ok(all.pop());
    }
    Ok(all.into_iter().max_by(|(_, a), (_, b)| {
        let sa = stamp_of(doc, a).map(|s| s.0);
        let sb = stamp_of(doc, b).map(|s| s.0);
        sa.cmp(&sb).then_with(|| a.cmp(b))
    }))
}

/// One of the concurrent values of a conflicted field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The value, as JSON.
    pub value: serde_json::Value,
    /// The actor that wrote it (hex).
    pub actor: String,
    /// The HLC timestamp of the change that wrote it (ms).
    pub timestamp: i64,
    /// The hash of that change (hex in JSON).
    #[serde(with = "crate::hash::hex")]
    pub change: ChangeHash,
}

/// A field holding concurrent values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Where, as a JSON pointer into the entity (`/title`, `/tags/2`).
    pub path: String,
    /// Every concurrent value, winner included, in a stable order.
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

/// A read view of a document in which every field reads as its
/// last-writer-wins winner: what typed reads (autosurgeon `hydrate`) see.
#[derive(Debug, Clone, Copy)]
pub struct LwwView<'a>(pub &'a Automerge);

impl autosurgeon::ReadDoc for LwwView<'_> {
    type Parents<'b>
        = automerge::Parents<'b>
    where
        Self: 'b;

    fn get_heads(&self) -> Vec<ChangeHash> {
        self.0.get_heads()
    }

    fn get<P: Into<Prop>>(
        &self,
        obj: &ObjId,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, automerge::AutomergeError> {
        winner(self.0, obj, prop)
    }

    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Option<automerge::ObjType> {
        ReadDoc::object_type(self.0, obj).ok()
    }

    fn map_range<'b, O, R>(&'b self, obj: O, range: R) -> automerge::iter::MapRange<'b>
    where
        R: std::ops::RangeBounds<String> + 'b,
        O: AsRef<ObjId>,
    {
        ReadDoc::map_range(self.0, obj, range)
    }

    fn list_range<O: AsRef<ObjId>, R: std::ops::RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> automerge::iter::ListRange<'_> {
        ReadDoc::list_range(self.0, obj, range)
    }

    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        ReadDoc::length(self.0, obj)
    }

    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, automerge::AutomergeError> {
        ReadDoc::text(self.0, obj)
    }

    fn parents<O: AsRef<ObjId>>(
        &self,
        obj: O,
    ) -> Result<Self::Parents<'_>, automerge::AutomergeError> {
        ReadDoc::parents(self.0, obj)
    }

    fn is_empty(&self) -> bool {
        ReadDoc::keys(self.0, automerge::ROOT).count() == 0
    }
}
