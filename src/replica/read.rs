//! Reads: typed and JSON values (every field resolved last-writer-wins),
//! listing, facts, heads and history, raw access to the document.

use automerge::{Automerge, ChangeHash};
use autosurgeon::Hydrate;
use serde::Serialize;
use serde_json::Value as Json;

use super::Replica;
use crate::entity;
#[cfg(doc)]
use crate::entity::EntityError;
use crate::error::Result;
use crate::id::{Collection, DocId, WorkspaceId};
use crate::store::ListReport;

/// Facts about one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityInfo {
    /// The id.
    pub id: DocId,
    /// Its workspace.
    pub workspace: WorkspaceId,
    /// Its collection.
    pub collection: Collection,
    /// Whether its tombstone is set.
    pub deleted: bool,
    /// The current heads (hex in JSON).
    #[serde(with = "crate::hash::hex_vec")]
    pub heads: Vec<ChangeHash>,
    /// Its schema version.
    pub schema: u64,
    /// The JSON pointers of the fields that hold counters (they read as
    /// plain numbers; a merge patch setting one increments it by the
    /// difference).
    pub counters: Vec<String>,
}

/// One change in an entity's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The change hash (hex in JSON).
    #[serde(with = "crate::hash::hex")]
    pub hash: ChangeHash,
    /// The actor (hex).
    pub actor: String,
    /// The actor's sequence number.
    pub seq: u64,
    /// The time the writer stamped on it (ms for supamerge's changes; other
    /// writers may stamp seconds or 0, see `docs/conflicts.md`).
    pub timestamp: i64,
    /// Its effective timestamp (ms): what last-writer-wins compares. Equal
    /// to `timestamp` for supamerge's own changes.
    pub effective: i64,
    /// The number of operations.
    pub ops: u64,
    /// The hashes it depends on (hex in JSON).
    #[serde(with = "crate::hash::hex_vec")]
    pub deps: Vec<ChangeHash>,
    /// The commit message, if any.
    pub message: Option<String>,
}

impl Replica {
    /// Reads an entity as a typed value (every field resolved by LWW).
    ///
    /// # Errors
    /// [`EntityError::NotFound`], [`EntityError::Deleted`],
    /// [`EntityError::NotAnEntity`], [`EntityError::Hydrate`] when the stored
    /// value does not fit `T`.
    pub fn get<T: Hydrate>(&self, id: &DocId) -> Result<T> {
        let mut st = self.lock();
        let ds = self.visible(&mut st, id)?;
        Ok(entity::hydrate_data(ds.view(), *id)?)
    }

    /// Reads an entity as JSON (every field resolved by last-writer-wins).
    ///
    /// Text objects and scalar strings both read as strings; counters read as
    /// plain numbers ([`EntityInfo::counters`] lists which fields are
    /// counters; a merge patch setting one increments it by the difference).
    ///
    /// # Errors
    /// [`EntityError::NotFound`], [`EntityError::Deleted`],
    /// [`EntityError::NotAnEntity`].
    pub fn get_json(&self, id: &DocId) -> Result<Json> {
        let mut st = self.lock();
        let ds = self.visible(&mut st, id)?;
        Ok(entity::data_json(ds.view()))
    }

    /// Runs `f` on the current document (no LWW view: raw Automerge; read it
    /// as the replica does with [`raw::LwwView`](crate::raw::LwwView)).
    ///
    /// # Errors
    /// [`EntityError::NotFound`] or a storage error.
    pub fn with_doc<R>(&self, id: &DocId, f: impl FnOnce(&Automerge) -> R) -> Result<R> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        Ok(f(&ds.doc))
    }

    /// The live (not deleted) entities of a collection, in id (creation) order.
    ///
    /// A damaged record is skipped, not listed and not fatal for the others
    /// (a `tracing` warning names it); [`Replica::list_report`] says what was
    /// skipped.
    ///
    /// # Errors
    /// Storage errors reading the collection index itself.
    pub fn list(&self, collection: &Collection) -> Result<Vec<DocId>> {
        Ok(self.list_report(collection)?.live)
    }

    /// Like [`Replica::list`], with the damaged records that were skipped
    /// (`supamerge doctor --repair` moves them to quarantine).
    ///
    /// # Errors
    /// Storage errors reading the collection index itself.
    pub fn list_report(&self, collection: &Collection) -> Result<ListReport> {
        let report = self.inner.store.list_collection(collection)?;
        for d in &report.damaged {
            match d.id {
                Some(id) => {
                    tracing::warn!(doc = %id, error = %d.error, "skipped a damaged record while listing");
                }
                None => {
                    tracing::warn!(error = %d.error, "skipped a damaged index entry while listing")
                }
            }
        }
        Ok(report)
    }

    /// Facts about an entity (also for deleted ones).
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors.
    pub fn info(&self, id: &DocId) -> Result<EntityInfo> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        Ok(EntityInfo {
            id: *id,
            workspace: ds.record.workspace,
            collection: ds.record.collection.clone(),
            deleted: ds.record.deleted,
            heads: ds.doc.get_heads(),
            schema: entity::schema_version(ds.view()),
            counters: entity::counter_paths(ds.view()),
        })
    }

    /// The heads of a document.
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors.
    pub fn heads(&self, id: &DocId) -> Result<Vec<ChangeHash>> {
        self.with_doc(id, |d| d.get_heads())
    }

    /// Every change of an entity in causal order.
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors.
    pub fn history(&self, id: &DocId) -> Result<Vec<HistoryEntry>> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        Ok(ds
            .doc
            .get_changes(&[])
            .into_iter()
            .map(|c| HistoryEntry {
                hash: c.hash(),
                actor: c.actor_id().to_hex_string(),
                seq: c.seq(),
                timestamp: c.timestamp(),
                effective: ds
                    .clock
                    .effective(&ds.doc, &c.hash())
                    .unwrap_or(c.timestamp()),
                ops: c.len() as u64,
                deps: c.deps().to_vec(),
                message: c.message().map(str::to_owned),
            })
            .collect())
    }

    /// The compacted `save()` of a document with its heads.
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors.
    pub fn save(&self, id: &DocId) -> Result<(Vec<u8>, Vec<ChangeHash>)> {
        self.with_doc(id, |d| (d.save(), d.get_heads()))
    }

    /// Every document of `ws` this replica holds: live, deleted, and those
    /// that so far only have early arrivals (changes waiting for their
    /// dependencies), in id order.
    ///
    /// # Errors
    /// Storage errors.
    pub fn documents(&self, ws: &WorkspaceId) -> Result<Vec<DocId>> {
        let mut out = Vec::new();
        for r in self.inner.store.docs() {
            let (id, rec) = r?;
            if rec.workspace == *ws {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The number of documents (live, deleted and not yet materialised).
    pub fn doc_count(&self) -> usize {
        self.inner.store.doc_count()
    }
}
