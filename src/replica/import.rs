//! Importing a document's history from elsewhere (an export's `save()`):
//! the changes this replica lacks are merged and queued in the outbox like
//! local edits, so the next sync pushes them (the remote deduplicates what
//! it already has). Importing the same history twice adds nothing.

use automerge::transaction::Transactable;
use automerge::Automerge;

use super::cache::DocState;
use super::{Origin, Replica, ReplicaEvent};
use crate::entity::{self, EntityError};
use crate::error::{Error, Result};
use crate::id::{Collection, DocId, WorkspaceId};
use crate::store::DocRecord;

/// What importing one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportedDoc {
    /// The document.
    pub id: DocId,
    /// Changes this replica did not have (now in its outbox), including the
    /// one that moved the document to another workspace, if any.
    pub new_changes: usize,
    /// Whether the replica did not hold the document before.
    pub created: bool,
}

impl Replica {
    /// Merges every change of `saved` this replica lacks into document `id`
    /// of `workspace` (created when missing), persisting each one with an
    /// outbox entry as a local edit. When the document's `_meta.workspace`
    /// is not `workspace` (an import into another workspace), one more
    /// change rewrites it. Idempotent: a second import of the same history
    /// finds nothing new and writes nothing.
    ///
    /// # Errors
    /// [`EntityError::Automerge`] when the changes do not apply; storage
    /// errors. Changes persisted before an error stay (importing again
    /// completes the rest).
    pub fn import_document(
        &self,
        id: &DocId,
        workspace: WorkspaceId,
        collection: &Collection,
        saved: &Automerge,
    ) -> Result<ImportedDoc> {
        let mut st = self.lock();
        let created = self.inner.store.get_doc(id)?.is_none();
        if created {
            st.cache.put(
                *id,
                DocState::empty(
                    &self.inner.actor,
                    DocRecord::new(workspace, collection.clone()),
                ),
            );
        }
        let res = self.import_into(&mut st, id, workspace, saved);
        if res.is_err() {
            // Memory may be ahead of disk: reload from the store next time.
            st.cache.pop(id);
        }
        let new_changes = res?;
        Ok(ImportedDoc {
            id: *id,
            new_changes,
            created,
        })
    }

    fn import_into(
        &self,
        st: &mut super::State,
        id: &DocId,
        workspace: WorkspaceId,
        saved: &Automerge,
    ) -> Result<usize> {
        let am = |source| {
            Error::from(EntityError::Automerge {
                id: *id,
                source: Box::new(source),
            })
        };
        let now = self.inner.clock.now_ms();
        let ds = self.get_loaded(st, id)?;
        let missing = ds.doc.get_changes_added(saved);
        let hashes: Vec<_> = missing.iter().map(automerge::Change::hash).collect();
        let mut count = 0;
        if !missing.is_empty() {
            ds.doc.apply_changes(missing).map_err(am)?;
            for h in &hashes {
                self.persist_local(ds, id, h, now)?;
                count += 1;
            }
        }
        let ws_text = workspace.to_string();
        let is_entity = entity::meta_obj(ds.view()).is_some();
        let current = entity::meta_str(ds.view(), entity::META_WORKSPACE);
        if is_entity && current.as_deref() != Some(ws_text.as_str()) {
            let (_, hash) = self.commit(
                st,
                id,
                |view| {
                    entity::meta_obj(view)
                        .ok_or_else(|| Error::from(EntityError::NotFound { id: *id }))
                },
                |tx, meta| {
                    tx.put(&meta, entity::META_WORKSPACE, ws_text.clone())
                        .map_err(am)
                },
            )?;
            if hash.is_some() {
                count += 1;
            }
        } else if count > 0 {
            self.maybe_compact(st, id)?;
            self.emit(ReplicaEvent::DocChanged {
                id: *id,
                origin: Origin::Local,
            });
        }
        Ok(count)
    }
}
