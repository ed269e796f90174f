//! Entities: how an entity lives inside its Automerge document, and the JSON
//! view of it.
//!
//! Document layout (root map; the contract for other clients is
//! `docs/interop.md`):
//! - `_meta` — `{ collection, workspace, deleted, schema }`: replicated
//!   metadata, created by the document's first change. `collection` (a scalar
//!   string) is required: the server refuses a first change without it, and a
//!   document without `_meta` is not an entity ([`EntityError::NotAnEntity`]).
//!   `deleted: true` is the tombstone (a plain last-writer-wins write,
//!   replicated like any other; absent = false); `schema` is the collection
//!   schema version (a plain integer, absent = 0);
//! - `data` — the entity's value (a map): what typed and JSON reads return.
//!
//! JSON conversion resolves every field by last-writer-wins
//! ([`crate::conflict::LwwView::winner`]): scalar strings and text objects
//! both read as strings, counters and integers as numbers (the counter fields
//! are listed by [`counter_paths`]), timestamps as ms numbers, bytes as base64.
//! Merge patches follow RFC 7396 and touch only the keys they name, so
//! concurrent patches of different keys never conflict; a string written over
//! a text object is spliced in as a diff, an integer written over a counter is
//! applied as an increment by the difference.

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, Change, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use base64::Engine;
use serde_json::{Map, Number, Value as Json};

use crate::conflict::{LwwView, Side};
use crate::id::DocId;
use crate::pointer::PointerError;

/// The reason of an [`EntityError::Hydrate`], in words.
fn hydrate_reason(field: &str, source: &autosurgeon::HydrateError) -> String {
    let at = if field.is_empty() {
        "the entity".to_string()
    } else {
        format!("the field {field:?}")
    };
    match source {
        autosurgeon::HydrateError::Unexpected(autosurgeon::hydrate::Unexpected::None) => {
            format!("{at} is missing")
        }
        other => format!("{at}: {other}"),
    }
}

/// Reads the entity's value (`data`) as a `T`; on failure the error names
/// the entity, the type and the field being read.
///
/// # Errors
/// [`EntityError::Hydrate`].
pub fn hydrate_data<T: autosurgeon::Hydrate>(
    view: LwwView<'_>,
    id: DocId,
) -> Result<T, EntityError> {
    let traced = Traced {
        view,
        last: std::cell::RefCell::new(None),
    };
    autosurgeon::hydrate_prop(&traced, &ROOT, DATA).map_err(|source| EntityError::Hydrate {
        id,
        ty: std::any::type_name::<T>(),
        field: traced.field(),
        source: Box::new(source),
    })
}

/// A read view that remembers the last property read, so a hydrate error
/// can name the field it failed on (autosurgeon's errors do not).
struct Traced<'a> {
    view: LwwView<'a>,
    last: std::cell::RefCell<Option<(ObjId, automerge::Prop)>>,
}

impl Traced<'_> {
    /// The last property read, as a JSON pointer below `data`.
    fn field(&self) -> String {
        let Some((obj, prop)) = self.last.borrow().clone() else {
            return String::new();
        };
        let mut path: Vec<automerge::Prop> = match self.view.doc().parents(&obj) {
            Ok(parents) => parents.path().into_iter().map(|(_, p)| p).collect(),
            Err(_) => Vec::new(),
        };
        path.push(prop);
        // The path starts at the root: drop its `data` step.
        let below = match path.first() {
            Some(automerge::Prop::Map(k)) if k == DATA => &path[1..],
            _ => &path[..],
        };
        below
            .iter()
            .map(|p| match p {
                automerge::Prop::Map(k) => format!("/{}", crate::pointer::JsonPointer::escape(k)),
                automerge::Prop::Seq(i) => format!("/{i}"),
            })
            .collect()
    }
}

impl autosurgeon::ReadDoc for Traced<'_> {
    type Parents<'b>
        = automerge::Parents<'b>
    where
        Self: 'b;

    fn get_heads(&self) -> Vec<automerge::ChangeHash> {
        autosurgeon::ReadDoc::get_heads(&self.view)
    }

    fn get<P: Into<automerge::Prop>>(
        &self,
        obj: &ObjId,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, automerge::AutomergeError> {
        let prop = prop.into();
        *self.last.borrow_mut() = Some((obj.clone(), prop.clone()));
        self.view.winner(obj, prop)
    }

    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Option<ObjType> {
        autosurgeon::ReadDoc::object_type(&self.view, obj)
    }

    fn map_range<'b, O, R>(&'b self, obj: O, range: R) -> automerge::iter::MapRange<'b>
    where
        R: std::ops::RangeBounds<String> + 'b,
        O: AsRef<ObjId>,
    {
        autosurgeon::ReadDoc::map_range(&self.view, obj, range)
    }

    fn list_range<O: AsRef<ObjId>, R: std::ops::RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> automerge::iter::ListRange<'_> {
        autosurgeon::ReadDoc::list_range(&self.view, obj, range)
    }

    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        autosurgeon::ReadDoc::length(&self.view, obj)
    }

    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, automerge::AutomergeError> {
        autosurgeon::ReadDoc::text(&self.view, obj)
    }

    fn parents<O: AsRef<ObjId>>(
        &self,
        obj: O,
    ) -> Result<Self::Parents<'_>, automerge::AutomergeError> {
        autosurgeon::ReadDoc::parents(&self.view, obj)
    }

    fn is_empty(&self) -> bool {
        autosurgeon::ReadDoc::is_empty(&self.view)
    }
}

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
    /// The document exists but is not an entity: it has no `_meta` map
    /// (written by a client that does not follow `docs/interop.md`).
    #[error(
        "document {id} is not a supamerge entity: it has no `_meta` map (see docs/interop.md)"
    )]
    NotAnEntity {
        /// The document.
        id: DocId,
    },
    /// A merge patch gives a counter field a value other than an integer or
    /// `null` (an integer is applied as an increment by the difference).
    #[error("the field {path:?} of entity {id} is a counter: a merge patch may set it to an integer (applied as an increment by the difference) or null (removes it), not {found}; replace it with a transaction instead")]
    CounterPatch {
        /// The entity.
        id: DocId,
        /// The counter's path (JSON pointer).
        path: String,
        /// The JSON type given.
        found: &'static str,
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
    /// The stored entity does not fit the requested Rust type: a field is
    /// missing or holds another type.
    #[error("entity {id} does not fit {ty}: {}", hydrate_reason(field, source))]
    Hydrate {
        /// The entity.
        id: DocId,
        /// The requested Rust type (`std::any::type_name`).
        ty: &'static str,
        /// The field being read when it failed, as a JSON pointer into the
        /// entity (`/title`, `/tags/2`; empty for the entity itself).
        field: String,
        /// autosurgeon's error.
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
pub fn data_obj(view: LwwView<'_>) -> Option<ObjId> {
    match view.winner(&ROOT, DATA) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    }
}

/// The object id of the `_meta` map, if the document has one.
pub fn meta_obj(view: LwwView<'_>) -> Option<ObjId> {
    match view.winner(&ROOT, META) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    }
}

/// A string field of `_meta` (`collection`, `workspace`), as
/// last-writer-wins resolves it.
pub fn meta_str(view: LwwView<'_>, key: &str) -> Option<String> {
    let meta = meta_obj(view)?;
    match view.winner(&meta, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Str(t) => Some(t.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the tombstone is set.
pub fn is_deleted(view: LwwView<'_>) -> bool {
    meta_obj(view).is_some_and(|meta| is_deleted_in(view, &meta))
}

/// Whether the tombstone is set in `meta`, the document's `_meta` object
/// as [`meta_obj`] found it (for callers that need both: one lookup of
/// `_meta` instead of two).
pub fn is_deleted_in(view: LwwView<'_>, meta: &ObjId) -> bool {
    matches!(
        view.winner(meta, META_DELETED),
        Ok(Some((Value::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Boolean(true))
    )
}

/// The schema version recorded in the document (0 when absent). Read from a
/// plain integer (what supamerge writes) or an unsigned one (documents
/// migrated by earlier versions).
pub fn schema_version(view: LwwView<'_>) -> u64 {
    let Some(meta) = meta_obj(view) else { return 0 };
    match view.winner(&meta, META_SCHEMA) {
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
pub fn value_to_json(view: LwwView<'_>, value: &Value<'_>, id: &ObjId) -> Json {
    let doc = view.doc();
    match value {
        Value::Scalar(s) => scalar_to_json(s.as_ref()),
        Value::Object(ObjType::Text) => Json::String(doc.text(id).unwrap_or_default()),
        Value::Object(ObjType::List) => {
            let len = doc.length(id);
            Json::Array(
                (0..len)
                    .map(|i| match view.winner(id, i) {
                        Ok(Some((v, vid))) => value_to_json(view, &v, &vid),
                        _ => Json::Null,
                    })
                    .collect(),
            )
        }
        Value::Object(ObjType::Map | ObjType::Table) => Json::Object(map_to_json(view, id)),
    }
}

/// The JSON form of a map object, every field resolved by last-writer-wins.
pub fn map_to_json(view: LwwView<'_>, obj: &ObjId) -> Map<String, Json> {
    let mut out = Map::new();
    for key in view.doc().keys(obj) {
        if let Ok(Some((v, id))) = view.winner(obj, key.as_str()) {
            out.insert(key, value_to_json(view, &v, &id));
        }
    }
    out
}

/// The entity's value as JSON (an empty object when the document has no data).
pub fn data_json(view: LwwView<'_>) -> Json {
    match data_obj(view) {
        Some(obj) => Json::Object(map_to_json(view, &obj)),
        None => Json::Object(Map::new()),
    }
}

/// The JSON pointers of the fields of the entity's value that hold counters
/// (in the last-writer-wins view; they read as plain numbers in
/// [`data_json`]), in document order.
pub fn counter_paths(view: LwwView<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(data) = data_obj(view) {
        collect_counters(view, &data, "", &mut out);
    }
    out
}

fn collect_counters(view: LwwView<'_>, obj: &ObjId, path: &str, out: &mut Vec<String>) {
    let doc = view.doc();
    let props: Vec<automerge::Prop> = match doc.object_type(obj) {
        Ok(ObjType::Map | ObjType::Table) => doc.keys(obj).map(automerge::Prop::Map).collect(),
        Ok(ObjType::List) => (0..doc.length(obj)).map(automerge::Prop::Seq).collect(),
        _ => Vec::new(),
    };
    for prop in props {
        let seg = match &prop {
            automerge::Prop::Map(k) => crate::pointer::JsonPointer::escape(k),
            automerge::Prop::Seq(i) => i.to_string(),
        };
        let here = format!("{path}/{seg}");
        match view.winner(obj, prop) {
            Ok(Some((Value::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Counter(_)) => {
                out.push(here);
            }
            Ok(Some((Value::Object(ObjType::Map | ObjType::Table | ObjType::List), child))) => {
                collect_counters(view, &child, &here, out);
            }
            _ => {}
        }
    }
}

/// What the first change of a document (the one without dependencies) says
/// about its collection: the rule servers apply to pushed changes
/// (`docs/interop.md`, "Document layout").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreationMeta {
    /// The change has dependencies: not a creation.
    NotCreation,
    /// A creation whose `_meta.collection` is this scalar string.
    Collection(String),
    /// A creation that does not name its collection; the reason says what is
    /// missing.
    Missing(&'static str),
}

/// Reads `_meta.collection` from a document's creation change (a change with
/// no dependencies), as it stands after that change alone.
pub fn creation_meta(change: &Change) -> CreationMeta {
    if !change.deps().is_empty() {
        return CreationMeta::NotCreation;
    }
    let mut doc = Automerge::new();
    if doc.apply_changes([change.clone()]).is_err() {
        return CreationMeta::Missing(NOT_DECODABLE);
    }
    let meta = match doc.get(ROOT, META) {
        Ok(Some((Value::Object(ObjType::Map), id))) => id,
        _ => return CreationMeta::Missing(MISSING_META),
    };
    match doc.get(&meta, META_COLLECTION) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Str(c) => CreationMeta::Collection(c.to_string()),
            _ => CreationMeta::Missing(COLLECTION_NOT_STRING),
        },
        Ok(Some((Value::Object(ObjType::Text), _))) => CreationMeta::Missing(COLLECTION_IS_TEXT),
        Ok(Some(_)) => CreationMeta::Missing(COLLECTION_NOT_STRING),
        _ => CreationMeta::Missing(MISSING_COLLECTION),
    }
}

/// Why a server refuses to file a pushed change under `collection`, if it
/// does (`None`: accept). The rule every server applies (`LocalHub` here,
/// `supamerge_push` in SQL, with the same messages; `docs/interop.md`):
/// - a document's first change (no dependencies) must create `_meta` with the
///   scalar string `collection`, equal to the collection it is pushed to;
/// - every change of a document must be pushed to the collection the server
///   already holds the document under (`stored`), when it holds it.
///
/// Bytes that are not a change are left to the chunk verification.
pub fn collection_problem(
    doc_id: &DocId,
    collection: &str,
    bytes: &[u8],
    stored: Option<&str>,
) -> Option<String> {
    // Names quoted as they are, cut at 80 characters (the SQL does the same).
    let q = |s: &str| format!("\"{}\"", s.chars().take(80).collect::<String>());
    if let Some(held) = stored {
        if held != collection {
            return Some(format!(
                "document {doc_id} is stored under collection {}; this change is pushed to {}",
                q(held),
                q(collection)
            ));
        }
    }
    match crate::protocol::chunk::dependency_count(bytes) {
        Some(0) => {}
        Some(_) => return None,
        None => return Some(format!("document {doc_id}: {NOT_DECODABLE}")),
    }
    let Ok(change) = Change::from_bytes(bytes.to_vec()) else {
        return Some(format!("document {doc_id}: {NOT_DECODABLE}"));
    };
    match creation_meta(&change) {
        CreationMeta::NotCreation => None,
        CreationMeta::Collection(c) if c == collection => None,
        CreationMeta::Collection(c) => Some(format!(
            "_meta.collection of document {doc_id} is {} but the change is pushed to {}",
            q(&c),
            q(collection)
        )),
        CreationMeta::Missing(reason) => Some(format!("document {doc_id}: {reason}")),
    }
}

/// The reasons of [`CreationMeta::Missing`] (the SQL function
/// `supamerge_private.creation_collection` gives the same texts).
pub const MISSING_META: &str = "the first change of a document must create the map _meta with the scalar string _meta.collection (see docs/interop.md)";
/// See [`MISSING_META`].
pub const MISSING_COLLECTION: &str =
    "the first change of a document must set _meta.collection (see docs/interop.md)";
/// See [`MISSING_META`].
pub const COLLECTION_IS_TEXT: &str = "_meta.collection must be a scalar string, not a text object (in JavaScript: new ImmutableString(name))";
/// See [`MISSING_META`].
pub const COLLECTION_NOT_STRING: &str = "_meta.collection must be a scalar string";
/// See [`MISSING_META`].
pub const NOT_DECODABLE: &str =
    "the first change of a document does not decode as an Automerge change";

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
/// spliced in as a diff (collaborative text stays collaborative); an integer
/// written over a counter increments it by the difference (a concurrent
/// increment elsewhere still adds up), and [`resolve_for_patch`] has refused
/// any other value for a counter, except `null`.
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
            (Json::Number(n), Some((Value::Scalar(cur), _)))
                if matches!(cur.as_ref(), ScalarValue::Counter(_)) =>
            {
                let current = match cur.as_ref() {
                    ScalarValue::Counter(c) => i64::from(c),
                    _ => 0,
                };
                if let Some(by) = n.as_i64().and_then(|want| want.checked_sub(current)) {
                    if by != 0 {
                        tx.increment(obj, k.as_str(), by)?;
                    }
                }
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

/// Computes [`Resolved`] for `patch` applied at `obj` of entity `id`, and
/// checks that the patch gives every counter it names an integer or `null`.
///
/// # Errors
/// [`EntityError::CounterPatch`] naming the first counter given another value.
pub fn resolve_for_patch(
    view: LwwView<'_>,
    id: &DocId,
    obj: &ObjId,
    patch: &Map<String, Json>,
) -> Result<Resolved, EntityError> {
    let mut out = Resolved::new();
    resolve_into(view, id, obj, "", patch, &mut out)?;
    Ok(out)
}

fn resolve_into(
    view: LwwView<'_>,
    id: &DocId,
    obj: &ObjId,
    path: &str,
    patch: &Map<String, Json>,
    out: &mut Resolved,
) -> Result<(), EntityError> {
    for (k, pv) in patch {
        let conflicted = view
            .doc()
            .get_all(obj, k.as_str())
            .map(|a| a.len() > 1)
            .unwrap_or(false);
        let Ok(Some((v, vid))) = view.winner(obj, k.as_str()) else {
            continue;
        };
        let here = format!("{path}/{}", crate::pointer::JsonPointer::escape(k));
        if let Value::Scalar(s) = &v {
            let integer = matches!(pv, Json::Number(n) if n.is_i64());
            if matches!(s.as_ref(), ScalarValue::Counter(_)) && !integer && !pv.is_null() {
                return Err(EntityError::CounterPatch {
                    id: *id,
                    path: here,
                    found: json_type(pv),
                });
            }
        }
        if conflicted {
            out.insert((obj.clone(), k.clone()), vid.clone());
        }
        if let (Json::Object(m), Value::Object(ObjType::Map)) = (pv, v) {
            resolve_into(view, id, &vid, &here, m, out)?;
        }
    }
    Ok(())
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
pub(crate) fn written_of(view: LwwView<'_>, value: &Value<'_>, id: &ObjId) -> Written {
    let doc = view.doc();
    match value {
        Value::Scalar(s) => Written::Scalar(s.as_ref().clone()),
        Value::Object(ObjType::Text) => Written::Text(doc.text(id).unwrap_or_default()),
        Value::Object(ObjType::List) => Written::List(
            (0..doc.length(id))
                .filter_map(|i| match view.winner(id, i) {
                    Ok(Some((v, vid))) => Some(written_of(view, &v, &vid)),
                    _ => None,
                })
                .collect(),
        ),
        Value::Object(ObjType::Map | ObjType::Table) => Written::Map(
            doc.keys(id)
                .filter_map(|k| match view.winner(id, k.as_str()) {
                    Ok(Some((v, vid))) => Some((k, written_of(view, &v, &vid))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::CommitOptions;

    fn first_change(fill: impl FnOnce(&mut Transaction<'_>)) -> Change {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        fill(&mut tx);
        let (h, _) = tx.commit_with(CommitOptions::default().with_time(0));
        doc.get_change_by_hash(&h.expect("a change"))
            .expect("change")
    }

    fn meta_with(tx: &mut Transaction<'_>, coll: impl FnOnce(&mut Transaction<'_>, &ObjId)) {
        let meta = tx.put_object(ROOT, META, ObjType::Map).unwrap();
        coll(tx, &meta);
    }

    #[test]
    fn the_first_change_names_the_collection() {
        let ok = first_change(|tx| {
            meta_with(tx, |tx, m| tx.put(m, META_COLLECTION, "tasks").unwrap());
            tx.put_object(ROOT, DATA, ObjType::Map).unwrap();
        });
        assert_eq!(creation_meta(&ok), CreationMeta::Collection("tasks".into()));

        let none = first_change(|tx| tx.put(ROOT, "title", "x").unwrap());
        assert_eq!(creation_meta(&none), CreationMeta::Missing(MISSING_META));
        let text = first_change(|tx| {
            meta_with(tx, |tx, m| {
                let t = tx.put_object(m, META_COLLECTION, ObjType::Text).unwrap();
                tx.splice_text(&t, 0, 0, "tasks").unwrap();
            })
        });
        assert_eq!(
            creation_meta(&text),
            CreationMeta::Missing(COLLECTION_IS_TEXT)
        );
        let number =
            first_change(|tx| meta_with(tx, |tx, m| tx.put(m, META_COLLECTION, 7).unwrap()));
        assert_eq!(
            creation_meta(&number),
            CreationMeta::Missing(COLLECTION_NOT_STRING)
        );
        let empty_meta = first_change(|tx| meta_with(tx, |_, _| {}));
        assert_eq!(
            creation_meta(&empty_meta),
            CreationMeta::Missing(MISSING_COLLECTION)
        );
        let replaced = first_change(|tx| {
            meta_with(tx, |tx, m| tx.put(m, META_COLLECTION, "tasks").unwrap());
            tx.put(ROOT, META, "gone").unwrap();
        });
        assert_eq!(
            creation_meta(&replaced),
            CreationMeta::Missing(MISSING_META)
        );
    }

    #[test]
    fn servers_refuse_a_collection_the_document_does_not_have() {
        let id = DocId::from_uuid(uuid::Uuid::from_u128(7));
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let meta = tx.put_object(ROOT, META, ObjType::Map).unwrap();
        tx.put(&meta, META_COLLECTION, "tasks").unwrap();
        let (h1, _) = tx.commit();
        let first = doc.get_change_by_hash(&h1.unwrap()).unwrap();
        let mut tx = doc.transaction();
        tx.put(&meta, META_DELETED, true).unwrap();
        let (h2, _) = tx.commit();
        let second = doc.get_change_by_hash(&h2.unwrap()).unwrap();

        assert_eq!(
            collection_problem(&id, "tasks", first.raw_bytes(), None),
            None
        );
        assert_eq!(
            collection_problem(&id, "notes", first.raw_bytes(), None).as_deref(),
            Some(
                "_meta.collection of document 00000000-0000-0000-0000-000000000007 is \"tasks\" \
                 but the change is pushed to \"notes\""
            )
        );
        assert_eq!(
            collection_problem(&id, "notes", second.raw_bytes(), None),
            None
        );
        assert_eq!(
            collection_problem(&id, "notes", second.raw_bytes(), Some("tasks")).as_deref(),
            Some(
                "document 00000000-0000-0000-0000-000000000007 is stored under collection \
                 \"tasks\"; this change is pushed to \"notes\""
            )
        );
        assert_eq!(
            collection_problem(&id, "tasks", second.raw_bytes(), Some("tasks")),
            None
        );
    }
}
