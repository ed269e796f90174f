//! Local writes: create, update, patch, transact, delete.
//!
//! Every write runs an Automerge transaction on the cached document, commits
//! it with a hybrid-logical-clock timestamp (the wall clock, raised above the
//! effective timestamps of the heads it builds on) and persists the new change as an
//! incremental chunk *and* an outbox entry in one sled transaction
//! (`persist_local`). When persisting fails the cached copy is dropped, so
//! memory is never ahead of disk.

use std::sync::atomic::Ordering;

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ChangeHash, ObjId, ObjType, ReadDoc, ROOT};
use autosurgeon::{Hydrate, Reconcile};
use rand::Rng;
use serde_json::Value as Json;

use super::cache::DocState;
use super::{Origin, Replica, ReplicaEvent, State};
use crate::clock::{hlc_timestamp, MAX_TIME};
use crate::conflict::LwwView;
use crate::entity::{self, EntityError};
use crate::error::{Error, Result};
use crate::id::{Collection, DocId, WorkspaceId};
use crate::store::{Chunk, ChunkKind, DocRecord, OutboxEntry};

impl Replica {
    fn new_doc_id(&self, st: &mut State) -> DocId {
        let mut random = [0u8; 10];
        st.rng.fill(&mut random[..]);
        let ms = u64::try_from(self.inner.clock.now_ms()).unwrap_or(0);
        DocId::new_v7(ms, random)
    }

    /// Commits a local edit: `prepare` reads the document, `write` edits it in
    /// a transaction; the change is persisted with its outbox entry atomically.
    pub(super) fn commit<P, R>(
        &self,
        st: &mut State,
        id: &DocId,
        prepare: impl FnOnce(LwwView<'_>) -> Result<P>,
        write: impl FnOnce(&mut Transaction<'_>, P) -> Result<R>,
    ) -> Result<(R, Option<ChangeHash>)> {
        let now = self.inner.clock.now_ms();
        let floor = st.last_stamp;
        let ds = self.get_loaded(st, id)?;
        let prepared = prepare(ds.view())?;
        let heads = ds.doc.get_heads();
        // Strictly increasing on this actor (see `State::last_stamp`).
        let ts = hlc_timestamp(now, ds.clock.max_effective(&ds.doc, &heads))
            .max(floor.saturating_add(1).min(MAX_TIME));
        let mut tx = ds.doc.transaction();
        let out = match write(&mut tx, prepared) {
            Ok(out) => out,
            Err(e) => {
                tx.rollback();
                return Err(e);
            }
        };
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(ts));
        let Some(hash) = hash else {
            return Ok((out, None));
        };
        let result = self.persist_local(ds, id, &hash, now);
        match result {
            Ok(()) => {
                ds.clock.record_commit(hash, ts, &heads, ds.doc.get_heads());
                st.last_stamp = ts;
                self.maybe_compact_local(st, id)?;
                self.emit(ReplicaEvent::DocChanged {
                    id: *id,
                    origin: Origin::Local,
                });
                Ok((out, Some(hash)))
            }
            Err(e) => {
                // Memory is ahead of disk: forget the in-memory copy.
                st.cache.pop(id);
                Err(e)
            }
        }
    }

    pub(super) fn persist_local(
        &self,
        ds: &mut DocState,
        id: &DocId,
        hash: &ChangeHash,
        now: i64,
    ) -> Result<()> {
        let bytes = ds
            .doc
            .get_change_by_hash(hash)
            .map(|c| c.raw_bytes().to_vec())
            .ok_or(EntityError::NotFound { id: *id })?;
        let mut record = ds.record.clone();
        record.deleted = entity::is_deleted(ds.view());
        let seq = record.next_chunk;
        record.next_chunk += 1;
        record.incremental_len += bytes.len() as u64;
        record.incremental_count += 1;
        record.changes_since_upload += 1;
        let entry = OutboxEntry {
            workspace: record.workspace,
            doc_id: *id,
            collection: record.collection.clone(),
            hash: *hash,
            bytes,
            enqueued_ms: now,
        };
        let first = seq == 0;
        let record_actor = !self.inner.actor_recorded.load(Ordering::Acquire);
        self.inner.store.transact("local commit", |tx| {
            if record_actor {
                tx.record_local_actor(self.inner.actor.to_bytes())?;
            }
            tx.put_chunk(
                id,
                seq,
                &Chunk {
                    kind: ChunkKind::Incremental,
                    bytes: entry.bytes.clone(),
                },
            )?;
            tx.put_doc(id, &record)?;
            if first {
                tx.index_collection(&record.collection, id)?;
            }
            tx.push_outbox(&entry)?;
            Ok(())
        })?;
        if record_actor {
            self.inner.actor_recorded.store(true, Ordering::Release);
        }
        ds.record = record;
        Ok(())
    }

    fn create_with(
        &self,
        ws: WorkspaceId,
        collection: &Collection,
        fill: impl FnOnce(&mut Transaction<'_>, DocId) -> Result<()>,
    ) -> Result<DocId> {
        let mut st = self.lock();
        let id = self.new_doc_id(&mut st);
        st.cache.put(
            id,
            DocState::empty(&self.inner.actor, DocRecord::new(ws, collection.clone())),
        );
        let res = self.commit(
            &mut st,
            &id,
            |_| Ok(()),
            |tx, ()| {
                let am = |source| {
                    Error::from(EntityError::Automerge {
                        id,
                        source: Box::new(source),
                    })
                };
                let meta = tx
                    .put_object(ROOT, entity::META, ObjType::Map)
                    .map_err(am)?;
                tx.put(&meta, entity::META_COLLECTION, collection.as_str())
                    .map_err(am)?;
                tx.put(&meta, entity::META_WORKSPACE, ws.to_string())
                    .map_err(am)?;
                tx.put(&meta, entity::META_DELETED, false).map_err(am)?;
                // A plain integer: JavaScript reads an unsigned one as a BigInt.
                tx.put(&meta, entity::META_SCHEMA, 0i64).map_err(am)?;
                fill(tx, id)
            },
        );
        if res.is_err() {
            st.cache.pop(&id);
        }
        res.map(|_| id)
    }

    /// Creates an entity from a typed value (an autosurgeon `Reconcile` type
    /// that writes a map, e.g. a struct with `#[derive(Reconcile)]`).
    ///
    /// # Errors
    /// [`EntityError::Reconcile`] when the value cannot be written; storage
    /// errors. Nothing is stored on error.
    pub fn create<T: Reconcile>(
        &self,
        ws: WorkspaceId,
        collection: &Collection,
        value: &T,
    ) -> Result<DocId> {
        self.create_with(ws, collection, |tx, id| {
            autosurgeon::reconcile_prop(tx, ROOT, entity::DATA, value).map_err(|source| {
                EntityError::Reconcile {
                    id,
                    source: Box::new(source),
                }
            })?;
            match tx.get(ROOT, entity::DATA) {
                Ok(Some((automerge::Value::Object(ObjType::Map), _))) => Ok(()),
                _ => Err(EntityError::NotAnObject {
                    found: "a non-map value",
                }
                .into()),
            }
        })
    }

    /// Creates an entity from a JSON object.
    ///
    /// # Errors
    /// [`EntityError::NotAnObject`] when `value` is not an object; storage errors.
    pub fn create_json(
        &self,
        ws: WorkspaceId,
        collection: &Collection,
        value: &Json,
    ) -> Result<DocId> {
        let obj = entity::expect_object(value)?;
        self.create_with(ws, collection, |tx, id| {
            let data = tx
                .put_object(ROOT, entity::DATA, ObjType::Map)
                .map_err(|source| EntityError::Automerge {
                    id,
                    source: Box::new(source),
                })?;
            for (k, v) in obj {
                entity::put_json(tx, &data, k, v).map_err(|source| EntityError::Automerge {
                    id,
                    source: Box::new(source),
                })?;
            }
            Ok(())
        })
    }

    /// Edits a typed entity: `f` changes a hydrated copy, and only the fields
    /// that differ are written. Returns the new change's hash (`None` when
    /// nothing changed).
    ///
    /// # Errors
    /// [`EntityError::NotFound`], [`EntityError::Deleted`], hydrate or
    /// reconcile errors, storage errors. Nothing is stored on error.
    pub fn update<T: Hydrate + Reconcile>(
        &self,
        id: &DocId,
        f: impl FnOnce(&mut T),
    ) -> Result<Option<ChangeHash>> {
        let mut st = self.lock();
        self.visible(&mut st, id)?;
        let id = *id;
        let (_, hash) = self.commit(
            &mut st,
            &id,
            |view| {
                let mut value: T = entity::hydrate_data(view, id)?;
                f(&mut value);
                Ok(value)
            },
            |tx, value| {
                autosurgeon::reconcile_prop(tx, ROOT, entity::DATA, &value).map_err(|source| {
                    EntityError::Reconcile {
                        id,
                        source: Box::new(source),
                    }
                    .into()
                })
            },
        )?;
        Ok(hash)
    }

    /// Applies an RFC 7396 JSON merge patch to an entity. Returns the new
    /// change's hash (`None` when the patch changed nothing). A counter field
    /// set to an integer is incremented by the difference (concurrent
    /// increments add up).
    ///
    /// # Errors
    /// [`EntityError::NotAnObject`] when the patch is not an object;
    /// [`EntityError::CounterPatch`] when it sets a counter to anything but an
    /// integer or `null`; [`EntityError::NotFound`], [`EntityError::Deleted`],
    /// [`EntityError::NotAnEntity`]; storage errors.
    pub fn patch_json(&self, id: &DocId, patch: &Json) -> Result<Option<ChangeHash>> {
        let patch = entity::expect_object(patch)?;
        let mut st = self.lock();
        self.visible(&mut st, id)?;
        let id = *id;
        let (_, hash) = self.commit(
            &mut st,
            &id,
            |view| {
                let data = entity::data_obj(view).ok_or(EntityError::NotFound { id })?;
                let resolved = entity::resolve_for_patch(view, &id, &data, patch)?;
                Ok((data, resolved))
            },
            |tx, (data, resolved)| {
                entity::merge_patch(tx, &data, patch, &resolved).map_err(|source| {
                    EntityError::Automerge {
                        id,
                        source: Box::new(source),
                    }
                    .into()
                })
            },
        )?;
        Ok(hash)
    }

    /// Edits an entity with a raw Automerge transaction (text splices,
    /// counters, list edits). `f` gets the transaction and the id of the
    /// entity's `data` map. Returns `f`'s result and the change hash.
    ///
    /// # Errors
    /// [`EntityError::Automerge`] when `f` fails (the transaction is rolled
    /// back, nothing is stored); not found / deleted; storage errors.
    pub fn transact<R>(
        &self,
        id: &DocId,
        f: impl FnOnce(
            &mut Transaction<'_>,
            &ObjId,
        ) -> std::result::Result<R, automerge::AutomergeError>,
    ) -> Result<(R, Option<ChangeHash>)> {
        let mut st = self.lock();
        self.visible(&mut st, id)?;
        let id = *id;
        self.commit(
            &mut st,
            &id,
            |view| entity::data_obj(view).ok_or_else(|| EntityError::NotFound { id }.into()),
            |tx, data| {
                f(tx, &data).map_err(|source| {
                    EntityError::Automerge {
                        id,
                        source: Box::new(source),
                    }
                    .into()
                })
            },
        )
    }

    /// Deletes an entity: sets its replicated tombstone. The entity disappears
    /// from reads and lists here and, once synced, everywhere.
    ///
    /// # Errors
    /// [`EntityError::NotFound`], [`EntityError::Deleted`]; storage errors.
    pub fn delete(&self, id: &DocId) -> Result<ChangeHash> {
        let mut st = self.lock();
        self.visible(&mut st, id)?;
        let id = *id;
        let (_, hash) = self.commit(
            &mut st,
            &id,
            |view| entity::meta_obj(view).ok_or_else(|| EntityError::NotFound { id }.into()),
            |tx, meta| {
                tx.put(&meta, entity::META_DELETED, true).map_err(|source| {
                    EntityError::Automerge {
                        id,
                        source: Box::new(source),
                    }
                    .into()
                })
            },
        )?;
        hash.ok_or_else(|| EntityError::Deleted { id }.into())
    }
}
