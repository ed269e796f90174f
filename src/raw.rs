//! Reading an entity's raw Automerge document — what
//! [`Replica::with_doc`](crate::Replica::with_doc) hands out: where the
//! entity lives in the document, and how last-writer-wins picks the value a
//! read returns.
//!
//! An entity's document holds two maps at its root: [`DATA`], the entity's
//! value, and [`META`], its bookkeeping ([`META_COLLECTION`],
//! [`META_WORKSPACE`], [`META_DELETED`], [`META_SCHEMA`]). `docs/storage.md`
//! and `docs/conflicts.md` describe both.
//!
//! Last-writer-wins compares the **effective timestamps** of the changes
//! that wrote concurrent values ([`effective_time`], `docs/conflicts.md`);
//! reads go through an [`LwwView`]: the document and an [`EffectiveClock`]
//! caching those timestamps. A fresh clock works for any document (it fills
//! itself on first use):
//!
//! ```
//! use supamerge::automerge::transaction::Transactable;
//! use supamerge::automerge::{AutoCommit, ObjType, ROOT};
//! use supamerge::raw::{data_json, EffectiveClock, LwwView, DATA};
//!
//! let mut doc = AutoCommit::new();
//! let data = doc.put_object(ROOT, DATA, ObjType::Map).unwrap();
//! doc.put(&data, "title", "hello").unwrap();
//! let doc = doc.document();
//! let clock = EffectiveClock::new();
//! let value = data_json(LwwView::new(doc, &clock));
//! assert_eq!(value, serde_json::json!({ "title": "hello" }));
//! ```
//!
//! A document's first change must create `_meta` with its collection as a
//! scalar string; both servers refuse a pushed change that breaks this rule
//! with one of the reasons below ([`creation_meta`] reads it from a change;
//! `docs/interop.md`, "Document layout").

pub use crate::clock::{effective_time, normalize_time, MAX_TIME, SECONDS_BELOW};
pub use crate::conflict::{EffectiveClock, LwwView, WriteStamp};
pub use crate::entity::{
    counter_paths, creation_meta, data_json, data_obj, is_deleted, meta_obj, schema_version,
    CreationMeta, COLLECTION_IS_TEXT, COLLECTION_NOT_STRING, DATA, META, META_COLLECTION,
    META_DELETED, META_SCHEMA, META_WORKSPACE, MISSING_COLLECTION, MISSING_META, NOT_DECODABLE,
};
