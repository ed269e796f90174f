//! Applying registered schema migrations (see [`crate::migrate`]) to
//! documents, each as a deterministic local change.

use automerge::ReadDoc;

use super::cache::require_entity;
use super::{Origin, Replica, ReplicaEvent, State};
use crate::entity::{self, EntityError};
use crate::error::{Error, Result};
use crate::id::{Collection, DocId};
use crate::migrate;

impl Replica {
    /// Applies every registered [`Migration`](crate::Migration) the
    /// document has not had yet, in version order, each as a deterministic
    /// local change (outbox, `DocChanged` event). Returns the document's
    /// schema version afterwards. Idempotent: a migration whose change is
    /// already in the document — made here before, or by another replica and
    /// pulled — commits nothing. Deleted entities are migrated too.
    ///
    /// # Errors
    /// [`crate::migrate::MigrationError::Failed`] when a migration function fails (the
    /// document keeps the migrations before it, which are committed, and
    /// nothing of the failing one); [`crate::migrate::MigrationError::NoStartingPoint`];
    /// [`EntityError::NotFound`], [`EntityError::NotAnEntity`]; storage errors.
    pub fn migrate(&self, id: &DocId) -> Result<u64> {
        self.migrate_doc(id).map(|(version, _)| version)
    }

    /// [`Replica::migrate`] for every document of the collection (deleted
    /// ones included); returns how many documents changed.
    ///
    /// # Errors
    /// The first error of [`Replica::migrate`]; the documents migrated before
    /// it stay migrated.
    pub fn migrate_collection(&self, collection: &Collection) -> Result<usize> {
        let mut changed = 0;
        for id in self.inner.store.collection_ids(collection) {
            let id = id?;
            let materialised = self
                .inner
                .store
                .get_doc(&id)?
                .is_some_and(|r| r.snapshot_len > 0 || r.incremental_count > 0);
            if materialised && self.migrate_doc(&id)?.1 {
                changed += 1;
            }
        }
        Ok(changed)
    }

    fn migrate_doc(&self, id: &DocId) -> Result<(u64, bool)> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        require_entity(ds, id)?;
        let collection = ds.record.collection.clone();
        let mut changed = false;
        let outcome = self.apply_migrations(&mut st, id, &collection, &mut changed);
        if changed {
            // Also when a later migration failed: the earlier ones are
            // committed and subscribers must hear of them.
            self.emit(ReplicaEvent::DocChanged {
                id: *id,
                origin: Origin::Local,
            });
            outcome?;
            self.maybe_compact(&mut st, id)?;
        } else {
            outcome?;
        }
        let ds = self.get_loaded(&mut st, id)?;
        Ok((entity::schema_version(ds.view()), changed))
    }

    /// Commits each missing migration of `collection` to `id`, in version
    /// order; sets `changed` as soon as one is committed.
    fn apply_migrations(
        &self,
        st: &mut State,
        id: &DocId,
        collection: &Collection,
        changed: &mut bool,
    ) -> Result<()> {
        for m in self.inner.migrations.for_collection(collection) {
            let ds = self.get_loaded(st, id)?;
            // Only migrations write `_meta.schema` after creation, each on
            // top of the previous one: a version >= v means v is there.
            if entity::schema_version(ds.view()) >= m.version()
                || migrate::migration_change(&ds.doc, collection, m.version()).is_some()
            {
                continue;
            }
            let change = migrate::build_change(&ds.doc, &ds.clock, id, m)?;
            let hash = change.hash();
            if ds.doc.get_change_by_hash(&hash).is_some() {
                continue;
            }
            let now = self.inner.clock.now_ms();
            let applied = ds
                .doc
                .apply_changes([change])
                .map_err(|source| {
                    Error::from(EntityError::Automerge {
                        id: *id,
                        source: Box::new(source),
                    })
                })
                .and_then(|()| self.persist_local(ds, id, &hash, now));
            if let Err(e) = applied {
                // Memory may be ahead of disk: forget the in-memory copy.
                st.cache.pop(id);
                return Err(e);
            }
            *changed = true;
        }
        Ok(())
    }
}
