//! Reading an entity's raw Automerge document — what
//! [`Replica::with_doc`](crate::Replica::with_doc) hands out: where the
//! entity lives in the document, and how last-writer-wins picks the value a
//! read returns.
//!
//! An entity's document holds two maps at its root: [`DATA`], the entity's
//! value, and [`META`], its bookkeeping ([`META_COLLECTION`],
//! [`META_WORKSPACE`], [`META_DELETED`], [`META_SCHEMA`]). `docs/storage.md`
//! and `docs/conflicts.md` describe both.

pub use crate::conflict::{stamp_of, winner, LwwView, WriteStamp};
pub use crate::entity::{
    data_json, data_obj, is_deleted, meta_obj, schema_version, DATA, META, META_COLLECTION,
    META_DELETED, META_SCHEMA, META_WORKSPACE,
};
