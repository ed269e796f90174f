//! Conflicts and their one-shot resolution.
//!
//! Finding conflicts and planning a resolution are pure work on a document's
//! last-writer-wins view (an [`LwwView`]: the document and the effective
//! timestamps of its changes; [`doc_conflicts`], `plan_resolution`); the
//! resolution itself
//! is one ordinary local write (see `write.rs`), causally after every
//! candidate, so it replaces all of them on every replica once synced.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue};
use serde_json::Value as Json;

use super::Replica;
use crate::conflict::{Candidate, Conflict, LwwView, Side, WriteStamp};
use crate::entity::{self, EntityError, Written};
use crate::error::{Error, Result};
use crate::id::DocId;
use crate::pointer::JsonPointer;

impl Replica {
    /// Every field of an entity holding concurrent values.
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors.
    pub fn conflicts(&self, id: &DocId) -> Result<Vec<Conflict>> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        Ok(doc_conflicts(ds.view()))
    }

    /// Resolves the conflict at `path` (a JSON pointer into the entity, as in
    /// [`Conflict::path`]: `/title`, `/address/city`, `/tags/2`) by writing
    /// `value` as a new local change.
    ///
    /// The change has seen every candidate, so it replaces all of them on
    /// every replica once synced (it is causally later, whatever the clocks
    /// say) and the conflict disappears everywhere; it goes to the outbox like
    /// any local commit. The value is always written as a new operation with a
    /// fresh HLC timestamp, also when it equals one of the candidates. A
    /// string replacing a text object is written as a text object, an integer
    /// replacing a counter as a counter; otherwise JSON maps to Automerge as
    /// in [`Replica::create_json`].
    ///
    /// Resolving a field that holds a single value is refused with
    /// [`EntityError::NotConflicted`] rather than performed as a plain write:
    /// a UI offering a choice for a field that is no longer in conflict (e.g.
    /// someone else resolved it meanwhile) should learn about it.
    ///
    /// # Errors
    /// [`EntityError::InvalidPath`] (not a JSON pointer naming a field),
    /// [`EntityError::NoSuchPath`], [`EntityError::NotConflicted`],
    /// [`EntityError::NotFound`], [`EntityError::Deleted`]; storage errors.
    /// Nothing is stored on error.
    pub fn resolve(&self, id: &DocId, path: &str, value: &Json) -> Result<ChangeHash> {
        self.resolve_with(id, path, |cands| {
            let like = cands.iter().find(|c| c.winner).map(|c| &c.written);
            Ok(entity::written_from_json(value, like))
        })
    }

    /// Resolves the conflict at `path` by keeping the value written by this
    /// replica: by any actor this replica directory has committed with (a
    /// replica takes a fresh actor at every open, and the store records each
    /// one with its first commit). Among several local candidates the
    /// last-writer-wins winner is kept. The exact value is written again
    /// (text stays text, a counter stays a counter) as with
    /// [`Replica::resolve`].
    ///
    /// A one-shot choice, never an automatic policy: applied automatically on
    /// every replica, "local wins" would make each replica overwrite the
    /// others forever.
    ///
    /// # Errors
    /// [`EntityError::NoCandidate`] with [`Side::Local`] when no candidate
    /// was written here; otherwise as [`Replica::resolve`].
    pub fn keep_local(&self, id: &DocId, path: &str) -> Result<ChangeHash> {
        self.keep(id, path, Side::Local)
    }

    /// Resolves the conflict at `path` by keeping a value written by another
    /// replica: the last-writer-wins winner among the candidates not written
    /// by this replica (see [`Replica::keep_local`] for what counts as
    /// local). Values written by a schema migration count as remote.
    ///
    /// # Errors
    /// [`EntityError::NoCandidate`] with [`Side::Remote`] when every
    /// candidate was written here; otherwise as [`Replica::resolve`].
    pub fn keep_remote(&self, id: &DocId, path: &str) -> Result<ChangeHash> {
        self.keep(id, path, Side::Remote)
    }

    fn keep(&self, id: &DocId, path: &str, side: Side) -> Result<ChangeHash> {
        let doc_id = *id;
        self.resolve_with(id, path, |cands| {
            cands
                .iter()
                .filter(|c| c.side == side)
                .max_by(|a, b| a.stamp.cmp(&b.stamp).then_with(|| a.opid.cmp(&b.opid)))
                .map(|c| c.written.clone())
                .ok_or_else(|| {
                    EntityError::NoCandidate {
                        id: doc_id,
                        path: path.to_owned(),
                        side,
                    }
                    .into()
                })
        })
    }

    /// Whether `actor` is one this replica directory committed with.
    fn is_local_actor(&self, actor: &ActorId) -> Result<bool> {
        Ok(*actor == self.inner.actor || self.inner.store.is_local_actor(actor.to_bytes())?)
    }

    fn resolve_with(
        &self,
        id: &DocId,
        path: &str,
        choose: impl FnOnce(&[ResolveCandidate]) -> Result<Written>,
    ) -> Result<ChangeHash> {
        let id = *id;
        let pointer = JsonPointer::parse(path).map_err(|source| EntityError::InvalidPath {
            id,
            path: path.to_owned(),
            source,
        })?;
        let mut st = self.lock();
        self.visible(&mut st, &id)?;
        let (_, hash) = self.commit(
            &mut st,
            &id,
            |view| {
                plan_resolution(
                    view,
                    &id,
                    &pointer,
                    |actor| self.is_local_actor(actor),
                    choose,
                )
            },
            |tx, plan| {
                if let Some(p) = plan.placeholder {
                    tx.put(&plan.obj, plan.prop.clone(), p).map_err(am(id))?;
                }
                entity::put_written(tx, &plan.obj, plan.prop, &plan.chosen).map_err(am(id))
            },
        )?;
        hash.ok_or_else(|| {
            EntityError::NotConflicted {
                id,
                path: pointer.to_string(),
            }
            .into()
        })
    }
}

/// An Automerge error while resolving a field of `id`.
fn am(id: DocId) -> impl Fn(automerge::AutomergeError) -> Error {
    move |source| {
        EntityError::Automerge {
            id,
            source: Box::new(source),
        }
        .into()
    }
}

/// What a resolution writes: `chosen` at `prop` of `obj`, after
/// `placeholder` when the chosen value repeats a candidate.
struct ResolutionPlan {
    obj: ObjId,
    prop: Prop,
    chosen: Written,
    placeholder: Option<ScalarValue>,
}

/// Plans the resolution of the conflict at `pointer` (pure work on the
/// document): finds the field, lists its candidates (each marked local or
/// remote by `is_local`, and the last-writer-wins winner), lets `choose`
/// pick the value to write, and decides whether a placeholder must be
/// written first.
fn plan_resolution(
    view: LwwView<'_>,
    id: &DocId,
    pointer: &JsonPointer,
    is_local: impl Fn(&ActorId) -> Result<bool>,
    choose: impl FnOnce(&[ResolveCandidate]) -> Result<Written>,
) -> Result<ResolutionPlan> {
    let id = *id;
    let am = am(id);
    let doc = view.doc();
    let (obj, prop) = locate(view, &id, pointer)?;
    let all = doc.get_all(&obj, prop.clone()).map_err(&am)?;
    match all.len() {
        0 => {
            return Err(EntityError::NoSuchPath {
                id,
                path: pointer.to_string(),
            }
            .into())
        }
        1 => {
            return Err(EntityError::NotConflicted {
                id,
                path: pointer.to_string(),
            }
            .into())
        }
        _ => {}
    }
    let win = view
        .winner(&obj, prop.clone())
        .map_err(&am)?
        .map(|(_, w)| w);
    let mut cands = Vec::with_capacity(all.len());
    for (v, opid) in &all {
        let stamp = view.stamp_of(opid).map(|(s, _)| s);
        let local = match &stamp {
            Some(s) => is_local(&s.actor)?,
            None => false,
        };
        cands.push(ResolveCandidate {
            written: entity::written_of(view, v, opid),
            winner: win.as_ref() == Some(opid),
            side: if local { Side::Local } else { Side::Remote },
            stamp,
            opid: opid.clone(),
        });
    }
    let chosen = choose(&cands)?;
    // Automerge turns a put of the value its own winner already holds into a
    // mere deletion of the other values, which would keep the old write (and
    // its old timestamp). Writing a different value first makes the chosen
    // one a new write.
    let placeholder = match &chosen {
        Written::Scalar(v) if cands.iter().any(|c| c.written == chosen) => {
            Some(if *v == ScalarValue::Null {
                ScalarValue::Boolean(false)
            } else {
                ScalarValue::Null
            })
        }
        _ => None,
    };
    Ok(ResolutionPlan {
        obj,
        prop,
        chosen,
        placeholder,
    })
}

/// One candidate of a conflict being resolved.
struct ResolveCandidate {
    /// Its value, exactly.
    written: Written,
    /// Whether it is the last-writer-wins winner.
    winner: bool,
    /// Who wrote it, relative to this replica.
    side: Side,
    /// The stamp of the change that wrote it.
    stamp: Option<WriteStamp>,
    /// The op that wrote it (the tie-breaker, as in [`LwwView::winner`]).
    opid: ObjId,
}

/// The object and property a pointer names inside the `data` map; each
/// intermediate step follows the last-writer-wins winner (as
/// [`Replica::conflicts`] does).
fn locate(view: LwwView<'_>, id: &DocId, pointer: &JsonPointer) -> Result<(ObjId, Prop)> {
    let doc = view.doc();
    let no_path = || -> Error {
        EntityError::NoSuchPath {
            id: *id,
            path: pointer.to_string(),
        }
        .into()
    };
    let mut obj = entity::data_obj(view).ok_or_else(no_path)?;
    let (last, parents) = pointer.tokens().split_last().ok_or_else(no_path)?;
    for token in parents {
        let prop = prop_in(doc, &obj, token).ok_or_else(no_path)?;
        match view.winner(&obj, prop) {
            Ok(Some((
                automerge::Value::Object(ObjType::Map | ObjType::Table | ObjType::List),
                child,
            ))) => obj = child,
            _ => return Err(no_path()),
        }
    }
    let prop = prop_in(doc, &obj, last).ok_or_else(no_path)?;
    Ok((obj, prop))
}

/// A pointer token as a property of `obj`: a key of a map, an existing index
/// of a list; nothing inside text or scalars.
fn prop_in(doc: &Automerge, obj: &ObjId, token: &str) -> Option<Prop> {
    match doc.object_type(obj).ok()? {
        ObjType::Map | ObjType::Table => Some(Prop::Map(token.to_owned())),
        ObjType::List => {
            let i = JsonPointer::index(token)?;
            (i < doc.length(obj)).then_some(Prop::Seq(i))
        }
        ObjType::Text => None,
    }
}

/// Every conflicted field of a document's `data` map.
pub(super) fn doc_conflicts(view: LwwView<'_>) -> Vec<Conflict> {
    match entity::data_obj(view) {
        Some(data) => collect_conflicts(view, &data, ""),
        None => Vec::new(),
    }
}

fn collect_conflicts(view: LwwView<'_>, obj: &ObjId, path: &str) -> Vec<Conflict> {
    let doc = view.doc();
    let mut out = Vec::new();
    let props: Vec<automerge::Prop> = match doc.object_type(obj) {
        Ok(ObjType::Map | ObjType::Table) => doc.keys(obj).map(automerge::Prop::Map).collect(),
        Ok(ObjType::List) => (0..doc.length(obj)).map(automerge::Prop::Seq).collect(),
        _ => Vec::new(),
    };
    for prop in props {
        let seg = match &prop {
            automerge::Prop::Map(k) => JsonPointer::escape(k),
            automerge::Prop::Seq(i) => i.to_string(),
        };
        let here = format!("{path}/{seg}");
        let all = doc.get_all(obj, prop.clone()).unwrap_or_default();
        if all.len() > 1 {
            let mut cands: Vec<(WriteStamp, Candidate)> = all
                .iter()
                .filter_map(|(v, id)| {
                    let (stamp, hash) = view.stamp_of(id)?;
                    let time = doc.get_change_meta_by_hash(&hash)?.timestamp;
                    Some((
                        stamp.clone(),
                        Candidate {
                            value: entity::value_to_json(view, v, id),
                            actor: stamp.actor.to_hex_string(),
                            timestamp: stamp.timestamp,
                            time,
                            change: hash,
                        },
                    ))
                })
                .collect();
            cands.sort_by(|a, b| a.0.cmp(&b.0));
            let winner = view.winner(obj, prop.clone()).ok().flatten();
            let winner_idx = winner
                .and_then(|(_, wid)| {
                    let (ws, _) = view.stamp_of(&wid)?;
                    cands.iter().position(|(s, _)| *s == ws)
                })
                .unwrap_or(cands.len().saturating_sub(1));
            out.push(Conflict {
                path: here.clone(),
                candidates: cands.into_iter().map(|(_, c)| c).collect(),
                winner: winner_idx,
            });
        }
        if let Ok(Some((automerge::Value::Object(_), child))) = view.winner(obj, prop) {
            out.extend(collect_conflicts(view, &child, &here));
        }
    }
    out
}
