//! Entities: how an entity lives inside its Automerge document, and the JSON
//! view of it.
//!
//! Document layout (root map):
//! - `data` — the entity's value (a map): what typed and JSON reads return;
//! - `_meta` — `{ collection, workspace, deleted, schema }`: replicated
//!   metadata. `deleted: true` is the tombstone (a plain last-writer-wins write,
//!   replicated like any other); `schema` is the collection schema version.
//!
//! JSON conversion resolves every field by last-writer-wins
//! ([`crate::conflict::winner`]); merge patches follow RFC 7396 and touch only
//! the keys they name, so concurrent patches of different keys never conflict.

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use base64::Engine;
use serde_json::{Map, Number, Value as Json};

use crate::conflict::{winner, Side};
use crate::id::DocId;
use crate::pointer::PointerError;

/// Root key of the entity's value.
pub const DATA: &str = "data";
/// Root key of the replicated metadata.
pub const META: &str = "_meta";
/// `_meta` key: the tombstone flag.
pub const META_DELETED: &str = "deleted";
/// `_meta` key: the collection name.
pub const META_COLLECTION: &str = "collection";
/// `_meta` key: the workspace id.
pub const META_WORKSPACE: &str = "workspace";
/// `_meta` key: the schema version.
pub const META_SCHEMA: &str = "schema";

/// Errors about one entity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntityError {
    /// No entity with this id in the replica.
    #[error("no entity {id}")]
    NotFound {
        /// The id asked for.
        id: DocId,
    },
    /// The entity was deleted (its tombstone is set).
    #[error("entity {id} is deleted")]
    Deleted {
        /// The id asked for.
        id: DocId,
    },
    /// The value is not a JSON object (entities are maps at the top).
    #[error("an entity must be a JSON object, got {found}")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// The stored entity does not fit the requested Rust type.
    #[error("entity {id} does not match the requested type: {source}")]
    Hydrate {
        /// The entity.
        id: DocId,
        /// autosurgeon's error (names the field).
        #[source]
        source: Box<autosurgeon::HydrateError>,
    },
    /// The Rust value could not be written into the document.
    #[error("cannot write entity {id}: {source}")]
    Reconcile {
        /// The entity.
        id: DocId,
        /// autosurgeon's error.
        #[source]
        source: Box<autosurgeon::ReconcileError>,
    },
    /// An Automerge operation on the entity failed.
    #[error("automerge error on entity {id}: {source}")]
    Automerge {
        /// The entity.
        id: DocId,
        /// Automerge's error.
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    /// The stored chunks of the entity do not load: the local store is damaged.
    #[error("stored document {id} is corrupt: {source}")]
    CorruptDocument {
        /// The entity.
        id: DocId,
        /// Automerge's load error.
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    /// A path given to `resolve` or a raw helper does not exist in the entity.
    #[error("no field at path {path:?} in entity {id}")]
    NoSuchPath {
        /// The entity.
        id: DocId,
        /// The path given.
        path: String,
    },
    /// A path is not a valid JSON pointer naming a field.
    #[error("invalid path {path:?} for entity {id}: {source}")]
    InvalidPath {
        /// The entity.
        id: DocId,
        /// The path given.
        path: String,
        /// What is wrong with it.
        #[source]
        source: PointerError,
    },
    /// `resolve` was asked to resolve a field that holds only one value
    /// (use a merge patch or a transaction for a plain write).
    #[error("the field {path:?} of entity {id} is not in conflict (see `conflicts`); write it with a normal edit instead")]
    NotConflicted {
        /// The entity.
        id: DocId,
        /// The path given.
        path: String,
    },
    /// `keep_local` / `keep_remote` found no candidate written on that side.
    #[error("the conflict at {path:?} in entity {id} has no {side} candidate")]
    NoCandidate {
        /// The entity.
        id: DocId,
        /// The conflicted path.
        path: String,
        /// Which side was asked for.
        side: Side,
    },
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Requires `v` to be a JSON object.
///
/// # Errors
/// [`EntityError::NotAnObject`].
pub fn expect_object(v: &Json) -> Result<&Map<String, Json>, EntityError> {
    v.as_object().ok_or(EntityError::NotAnObject {
        found: json_type(v),
    })
}

/// The object id of the `data` map, if the document has one.
pub fn data_obj(doc: &Automerge) -> Option<ObjId> {
    match winner(doc, &ROOT, DATA) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    }
}

/// The object id of the `_meta` map, if the document has one.
pub fn meta_obj(doc: &Automerge) -> Option<ObjId> {
    match winner(doc, &ROOT, META) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    }
}

/// Whether the tombstone is set.
pub fn is_deleted(doc: &Automerge) -> bool {
    let Some(meta) = meta_obj(doc) else {
        return false;
    };
    matches!(
        winner(doc, &meta, META_DELETED),
        Ok(Some((Value::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Boolean(true))
    )
}

/// The schema version recorded in the document (0 when absent).
pub fn schema_version(doc: &Automerge) -> u64 {
    let Some(meta) = meta_obj(doc) else { return 0 };
    match winner(doc, &meta, META_SCHEMA) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Uint(u) => *u,
            ScalarValue::Int(i) => u64::try_from(*i).unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    }
}

/// Converts a scalar to JSON.
pub fn scalar_to_json(s: &ScalarValue) -> Json {
    match s {
        ScalarValue::Str(s) => Json::String(s.to_string()),
        ScalarValue::Int(i) => Json::from(*i),
        ScalarValue::Uint(u) => Json::from(*u),
        ScalarValue::F64(f) => Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
        ScalarValue::Counter(c) => Json::from(i64::from(c)),
        ScalarValue::Timestamp(t) => Json::from(*t),
        ScalarValue::Boolean(b) => Json::Bool(*b),
        ScalarValue::Null => Json::Null,
        ScalarValue::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        ScalarValue::Unknown { .. } => Json::Null,
    }
}

/// The JSON form of a value read from the document.
pub fn value_to_json(doc: &Automerge, value: &Value<'_>, id: &ObjId) -> Json {
    match value {
        Value::Scalar(s) => scalar_to_json(s.as_ref()),
        Value::Object(ObjType::Text) => Json::String(doc.text(id).unwrap_or_default()),
        Value::Object(ObjType::List) => {
            let len = doc.length(id);
            Json::Array(
                (0..len)
                    .map(|i| match winner(doc, id, i) {
                        Ok(Some((v, vid))) => value_to_json(doc, &v, &vid),
                        _ => Json::Null,
                    })
                    .collect(),
            )
        }
        Value::Object(ObjType::Map | ObjType::Table) => Json::Object(map_to_json(doc, id)),
    }
}

/// The JSON form of a map object, every field resolved by last-writer-wins.
pub fn map_to_json(doc: &Automerge, obj: &ObjId) -> Map<String, Json> {
    let mut out = Map::new();
    for key in doc.keys(obj) {
        if let Ok(Some((v, id))) = winner(doc, obj, key.as_str()) {
            out.insert(key, value_to_json(doc, &v, &id));
        }
    }
    out
}

/// The entity's value as JSON (an empty object when the document has no data).
pub fn data_json(doc: &Automerge) -> Json {
    match data_obj(doc) {
        Some(obj) => Json::Object(map_to_json(doc, &obj)),
        None => Json::Object(Map::new()),
    }
}

fn json_scalar(v: &Json) -> Option<ScalarValue> {
    Some(match v {
        Json::Null => ScalarValue::Null,
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        Json::Array(_) | Json::Object(_) => return None,
    })
}

/// Writes `v` at `obj[key]` (a map key), creating nested objects and lists.
///
/// # Errors
/// Automerge's error.
pub fn put_json(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    v: &Json,
) -> Result<(), automerge::AutomergeError> {
    match v {
        Json::Object(m) => {
            let child = tx.put_object(obj, key, ObjType::Map)?;
            fill_map(tx, &child, m)
        }
        Json::Array(items) => {
            let child = tx.put_object(obj, key, ObjType::List)?;
            fill_list(tx, &child, items)
        }
        other => tx.put(obj, key, json_scalar(other).unwrap_or(ScalarValue::Null)),
    }
}

fn fill_map(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    m: &Map<String, Json>,
) -> Result<(), automerge::AutomergeError> {
    for (k, v) in m {
        put_json(tx, obj, k, v)?;
    }
    Ok(())
}

fn fill_list(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    items: &[Json],
) -> Result<(), automerge::AutomergeError> {
    for (i, v) in items.iter().enumerate() {
        match v {
            Json::Object(m) => {
                let child = tx.insert_object(obj, i, ObjType::Map)?;
                fill_map(tx, &child, m)?;
            }
            Json::Array(inner) => {
                let child = tx.insert_object(obj, i, ObjType::List)?;
                fill_list(tx, &child, inner)?;
            }
            other => tx.insert(obj, i, json_scalar(other).unwrap_or(ScalarValue::Null))?,
        }
    }
    Ok(())
}

/// Applies an RFC 7396 merge patch to the map `obj`.
///
/// Only the keys the patch names are touched; a key whose resolved value
/// already equals the patch value is not written (so re-applying a patch makes
/// no change and creates no conflict); a string written over a text object is
/// spliced in as a diff (collaborative text stays collaborative).
///
/// # Errors
/// Automerge's error.
pub fn merge_patch(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    patch: &Map<String, Json>,
    resolved: &Resolved,
) -> Result<(), automerge::AutomergeError> {
    for (k, pv) in patch {
        let current = current_value(tx, obj, k, resolved);
        match (pv, current) {
            (Json::Null, Some(_)) => tx.delete(obj, k.as_str())?,
            (Json::Null, None) => {}
            (Json::Object(m), Some((Value::Object(ObjType::Map), child))) => {
                merge_patch(tx, &child, m, resolved)?;
            }
            (Json::Object(m), _) => {
                let child = tx.put_object(obj, k.as_str(), ObjType::Map)?;
                merge_patch(tx, &child, m, resolved)?;
            }
            (Json::String(s), Some((Value::Object(ObjType::Text), text))) => {
                tx.update_text(&text, s)?;
            }
            (Json::Array(items), _) => {
                let child = tx.put_object(obj, k.as_str(), ObjType::List)?;
                fill_list(tx, &child, items)?;
            }
            (scalar, Some((Value::Scalar(cur), _)))
                if Some(cur.as_ref()) == json_scalar(scalar).as_ref()
                    && !matches!(cur.as_ref(), ScalarValue::Counter(_)) =>
            {
                // unchanged and not in conflict: writing it again would only add an op
                if tx.get_all(obj, k.as_str()).map(|a| a.len()).unwrap_or(0) > 1 {
                    tx.put(
                        obj,
                        k.as_str(),
                        json_scalar(scalar).unwrap_or(ScalarValue::Null),
                    )?;
                }
            }
            (scalar, _) => {
                tx.put(
                    obj,
                    k.as_str(),
                    json_scalar(scalar).unwrap_or(ScalarValue::Null),
                )?;
            }
        }
    }
    Ok(())
}

/// Last-writer-wins winners of the conflicted keys a patch touches, computed
/// on the document before the patch's transaction opens (a transaction cannot
/// look up change timestamps).
pub type Resolved = std::collections::HashMap<(ObjId, String), ObjId>;

/// Computes [`Resolved`] for `patch` applied at `obj`.
pub fn resolve_for_patch(doc: &Automerge, obj: &ObjId, patch: &Map<String, Json>) -> Resolved {
    let mut out = Resolved::new();
    resolve_into(doc, obj, patch, &mut out);
    out
}

fn resolve_into(doc: &Automerge, obj: &ObjId, patch: &Map<String, Json>, out: &mut Resolved) {
    for (k, pv) in patch {
        let conflicted = doc
            .get_all(obj, k.as_str())
            .map(|a| a.len() > 1)
            .unwrap_or(false);
        let Ok(Some((v, id))) = winner(doc, obj, k.as_str()) else {
            continue;
        };
        if conflicted {
            out.insert((obj.clone(), k.clone()), id.clone());
        }
        if let (Json::Object(m), Value::Object(ObjType::Map)) = (pv, v) {
            resolve_into(doc, &id, m, out);
        }
    }
}

/// The current resolved value of `obj[key]` inside a transaction (owned).
fn current_value(
    tx: &Transaction<'_>,
    obj: &ObjId,
    key: &str,
    resolved: &Resolved,
) -> Option<(Value<'static>, ObjId)> {
    let all = tx.get_all(obj, key).ok()?;
    let want = resolved.get(&(obj.clone(), key.to_owned()));
    let pick = match want {
        Some(w) => all.into_iter().find(|(_, id)| id == w),
        None => all.into_iter().next(),
    };
    pick.map(|(v, id)| (v.into_owned(), id))
}

/// An owned value to write into a document: like JSON, but keeping the
/// Automerge types JSON cannot express (text objects, counters, timestamps,
/// bytes, unsigned integers), so that keeping a candidate writes exactly the
/// value that candidate holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Written {
    /// A scalar, with its exact Automerge type.
    Scalar(ScalarValue),
    /// A collaborative text object.
    Text(String),
    /// A list.
    List(Vec<Written>),
    /// A map.
    Map(Vec<(String, Written)>),
}

/// A deep copy of a value read from the document, every nested field resolved
/// by last-writer-wins.
pub(crate) fn written_of(doc: &Automerge, value: &Value<'_>, id: &ObjId) -> Written {
    match value {
        Value::Scalar(s) => Written::Scalar(s.as_ref().clone()),
        Value::Object(ObjType::Text) => Written::Text(doc.text(id).unwrap_or_default()),
        Value::Object(ObjType::List) => Written::List(
            (0..doc.length(id))
                .filter_map(|i| match winner(doc, id, i) {
                    Ok(Some((v, vid))) => Some(written_of(doc, &v, &vid)),
                    _ => None,
                })
                .collect(),
        ),
        Value::Object(ObjType::Map | ObjType::Table) => Written::Map(
            doc.keys(id)
                .filter_map(|k| match winner(doc, id, k.as_str()) {
                    Ok(Some((v, vid))) => Some((k, written_of(doc, &v, &vid))),
                    _ => None,
                })
                .collect(),
        ),
    }
}

/// A JSON value to write in place of `like` (the value it replaces): a string
/// replacing a text object becomes a text object, an integer replacing a
/// counter becomes a counter; everything else is written as JSON is
/// everywhere else ([`put_json`]).
pub(crate) fn written_from_json(v: &Json, like: Option<&Written>) -> Written {
    match (v, like) {
        (Json::String(s), Some(Written::Text(_))) => Written::Text(s.clone()),
        (Json::Number(n), Some(Written::Scalar(ScalarValue::Counter(_)))) if n.is_i64() => {
            Written::Scalar(ScalarValue::counter(n.as_i64().unwrap_or(0)))
        }
        (Json::Object(m), _) => Written::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), written_from_json(v, None)))
                .collect(),
        ),
        (Json::Array(items), _) => {
            Written::List(items.iter().map(|v| written_from_json(v, None)).collect())
        }
        (other, _) => Written::Scalar(json_scalar(other).unwrap_or(ScalarValue::Null)),
    }
}

/// Writes `w` at `obj[prop]` (a map key or an existing list index), replacing
/// every value there.
///
/// # Errors
/// Automerge's error.
pub(crate) fn put_written(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    prop: automerge::Prop,
    w: &Written,
) -> Result<(), automerge::AutomergeError> {
    match w {
        Written::Scalar(s) => tx.put(obj, prop, s.clone()),
        Written::Text(s) => {
            let text = tx.put_object(obj, prop, ObjType::Text)?;
            tx.splice_text(&text, 0, 0, s)
        }
        Written::List(items) => {
            let list = tx.put_object(obj, prop, ObjType::List)?;
            fill_written_list(tx, &list, items)
        }
        Written::Map(entries) => {
            let map = tx.put_object(obj, prop, ObjType::Map)?;
            for (k, v) in entries {
                put_written(tx, &map, automerge::Prop::Map(k.clone()), v)?;
            }
            Ok(())
        }
    }
}

fn fill_written_list(
    tx: &mut Transaction<'_>,
    list: &ObjId,
    items: &[Written],
) -> Result<(), automerge::AutomergeError> {
    for (i, item) in items.iter().enumerate() {
        match item {
            Written::Scalar(s) => tx.insert(list, i, s.clone())?,
            Written::Text(s) => {
                let text = tx.insert_object(list, i, ObjType::Text)?;
                tx.splice_text(&text, 0, 0, s)?;
            }
            Written::List(inner) => {
                let child = tx.insert_object(list, i, ObjType::List)?;
                fill_written_list(tx, &child, inner)?;
            }
            Written::Map(entries) => {
                let child = tx.insert_object(list, i, ObjType::Map)?;
                for (k, v) in entries {
                    put_written(tx, &child, automerge::Prop::Map(k.clone()), v)?;
                }
            }
        }
    }
    Ok(())
}
