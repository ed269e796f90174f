//! The local replica: entities as Automerge documents in sled, with a durable
//! outbox.
//!
//! Every write is one sled transaction that stores the new change as an
//! incremental chunk of its document *and* appends it to the outbox, so there
//! is no moment where one is on disk without the other. Reads are served from
//! a bounded LRU cache of loaded documents; a document not in the cache is
//! loaded from its snapshot and incremental chunks. Remote changes are applied
//! per document in one `apply_changes` call; a change whose dependencies have
//! not arrived is kept in the `pending` tree and applied when they do, also
//! after a restart. No tokio is needed: every call is plain blocking I/O.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue, ROOT,
};
use autosurgeon::{Hydrate, Reconcile};
use lru::LruCache;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::broadcast;

use crate::clock::{hlc_timestamp, Clock, SystemClock};
use crate::conflict::{self, Candidate, Conflict, LwwView, Side, WriteStamp};
use crate::entity::{self, EntityError, Written};
use crate::error::{Error, Result};
use crate::id::{Collection, DocId, WorkspaceId};
use crate::migrate::{self, Migration, Migrations};
use crate::pointer::JsonPointer;
use crate::store::{
    Chunk, ChunkKind, CursorRecord, DeadLetter, DocRecord, Durability, OutboxEntry, PendingChange,
    Store,
};
use crate::sync::snapshot_check::{self, DownloadedSnapshot, SnapshotCheckError};
use crate::sync::wire::{ChangeEnvelope, HashHex};

/// Where a document change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A local edit through this replica.
    Local,
    /// Changes pulled from a remote (or a loaded snapshot).
    Remote,
}

/// What a replica announces to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplicaEvent {
    /// A document's state changed.
    DocChanged {
        /// The document.
        id: DocId,
        /// Who changed it.
        origin: Origin,
    },
    /// Applying remote changes left a field with concurrent values.
    Conflict {
        /// The document.
        id: DocId,
        /// The conflicted fields, each with every candidate and the winner.
        conflicts: Vec<Conflict>,
    },
}

/// A remote change handed to [`Replica::apply_remote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChange {
    /// The workspace it was pulled from.
    pub workspace: WorkspaceId,
    /// The document.
    pub doc_id: DocId,
    /// The document's collection.
    pub collection: Collection,
    /// The hash the sender claims (checked against the bytes when given).
    pub hash: Option<HashHex>,
    /// The raw change chunk.
    pub bytes: Vec<u8>,
}

impl RemoteChange {
    /// A remote change from a wire envelope.
    pub fn from_envelope(workspace: WorkspaceId, env: ChangeEnvelope) -> Self {
        Self {
            workspace,
            doc_id: env.doc_id,
            collection: env.collection,
            hash: Some(env.hash),
            bytes: env.bytes,
        }
    }
}

/// Why one remote change was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The bytes are not an Automerge change.
    #[error("change #{index} for document {doc_id} is corrupt: {source}")]
    Corrupt {
        /// The document it claimed to belong to.
        doc_id: DocId,
        /// Its position in the batch.
        index: usize,
        /// Automerge's decoding error.
        #[source]
        source: automerge::LoadChangeError,
    },
    /// The bytes do not hash to the claimed hash.
    #[error("change #{index} for document {doc_id}: claimed hash {claimed} but the bytes hash to {actual}")]
    HashMismatch {
        /// The document.
        doc_id: DocId,
        /// Its position in the batch.
        index: usize,
        /// The claimed hash.
        claimed: HashHex,
        /// The hash of the bytes.
        actual: HashHex,
    },
    /// The change decodes but the document refuses it (e.g. a reused
    /// sequence number of an actor).
    #[error("change {hash} cannot be applied to document {doc_id}: {source}")]
    Incompatible {
        /// The document.
        doc_id: DocId,
        /// The change's hash.
        hash: HashHex,
        /// Automerge's error.
        #[source]
        source: automerge::AutomergeError,
    },
}

/// What [`Replica::apply_remote`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Changes applied now (including earlier early arrivals that now fit).
    pub applied: usize,
    /// Changes the replica already had.
    pub duplicates: usize,
    /// Changes kept because their dependencies have not arrived.
    pub pending: usize,
    /// Changes refused, each with the reason.
    pub rejected: Vec<ChangeError>,
    /// Documents whose state changed.
    pub changed: Vec<DocId>,
    /// Downloaded snapshots not trusted (and not applied): each with why
    /// ([`crate::sync::snapshot_check`]).
    pub untrusted: Vec<SnapshotCheckError>,
}

/// When documents are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Compact once a document has at least this many incremental chunks...
    pub min_chunks: u64,
    /// ...and together they are larger than its snapshot.
    pub when_larger_than_snapshot: bool,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        Self {
            min_chunks: 16,
            when_larger_than_snapshot: true,
        }
    }
}

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
    /// The current heads (hex).
    pub heads: Vec<String>,
    /// Its schema version.
    pub schema: u64,
}

/// One change in an entity's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The change hash (hex).
    pub hash: String,
    /// The actor (hex).
    pub actor: String,
    /// The actor's sequence number.
    pub seq: u64,
    /// The HLC timestamp (ms).
    pub timestamp: i64,
    /// The number of operations.
    pub ops: u64,
    /// The hashes it depends on (hex).
    pub deps: Vec<String>,
    /// The commit message, if any.
    pub message: Option<String>,
}

/// Options for opening a replica.
#[derive(Debug, Clone)]
pub struct ReplicaBuilder {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    actor: Option<ActorId>,
    cache_capacity: NonZeroUsize,
    durability: Durability,
    compaction: CompactionPolicy,
    seed: Option<u64>,
    migrations: Vec<Migration>,
}

const DEFAULT_CACHE: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

impl ReplicaBuilder {
    /// Options for the replica stored in `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            clock: Arc::new(SystemClock),
            actor: None,
            cache_capacity: DEFAULT_CACHE,
            durability: Durability::default(),
            compaction: CompactionPolicy::default(),
            seed: None,
            migrations: Vec::new(),
        }
    }

    /// The wall clock for timestamps (default: the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A fixed actor id (default: a fresh random one at every open, so a
    /// restored backup or a copied directory can never reuse an actor's
    /// sequence numbers).
    pub fn with_actor(mut self, actor: ActorId) -> Self {
        self.actor = Some(actor);
        self
    }

    /// How many documents stay loaded in memory (default 1024).
    pub fn with_cache_capacity(mut self, n: NonZeroUsize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// Durability of writes (default [`Durability::Immediate`]).
    pub fn with_durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// When to compact documents.
    pub fn with_compaction(mut self, c: CompactionPolicy) -> Self {
        self.compaction = c;
        self
    }

    /// Seed for the random source (ids, actor): deterministic tests.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Registers a schema migration (see [`crate::migrate`]). May be called
    /// repeatedly; the versions of each collection must be `1, 2, 3, ...`
    /// without gaps or duplicates, which [`ReplicaBuilder::open`] checks.
    pub fn with_migration(mut self, m: Migration) -> Self {
        self.migrations.push(m);
        self
    }

    /// Opens the replica.
    ///
    /// # Errors
    /// [`crate::migrate::MigrationError::Duplicate`] or [`crate::migrate::MigrationError::Gap`] when the
    /// registered migrations of a collection are not numbered `1, 2, 3, ...`
    /// (checked before the directory is touched);
    /// [`StoreError`](crate::store::StoreError) when the directory cannot be
    /// opened (`Locked` while another process holds it) or was written by a
    /// newer version.
    pub fn open(self) -> Result<Replica> {
        let migrations = Migrations::new(self.migrations)?;
        let store = Store::open(&self.path, self.durability)?;
        let mut rng = match self.seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_entropy(),
        };
        let actor = self.actor.unwrap_or_else(|| {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            ActorId::from(&b[..])
        });
        let (events, _) = broadcast::channel(1024);
        Ok(Replica {
            inner: Arc::new(Inner {
                store,
                clock: self.clock,
                actor,
                path: self.path,
                compaction: self.compaction,
                migrations,
                actor_recorded: AtomicBool::new(false),
                events,
                state: Mutex::new(State {
                    cache: LruCache::new(self.cache_capacity),
                    rng,
                }),
            }),
        })
    }
}

/// A local replica. Cheap to clone; clones share the same store and cache.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("path", &self.inner.path)
            .field("actor", &self.inner.actor.to_hex_string())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The sled trees.
    store: Store,
    /// Wall clock for HLC timestamps and ids.
    clock: Arc<dyn Clock>,
    /// This process's actor id for local changes.
    actor: ActorId,
    /// Where the store lives (for messages).
    path: PathBuf,
    /// When to fold chunks into a snapshot.
    compaction: CompactionPolicy,
    /// The registered schema migrations, per collection.
    migrations: Migrations,
    /// Whether `actor` is recorded in the store as one of this directory's
    /// local actors (done with the first local commit of this session).
    actor_recorded: AtomicBool,
    /// Announcements to subscribers.
    events: broadcast::Sender<ReplicaEvent>,
    /// Loaded documents and the random source; one writer at a time.
    state: Mutex<State>,
}

struct State {
    /// Loaded documents, least recently used evicted first.
    cache: LruCache<DocId, DocState>,
    /// Random bits for document ids.
    rng: rand::rngs::StdRng,
}

/// A loaded document with its record.
struct DocState {
    doc: Automerge,
    record: DocRecord,
    /// Largest timestamp among the heads' changes (for the HLC).
    max_ts: Option<i64>,
}

/// The largest timestamp among the changes a new local change depends on.
///
/// Usually the largest timestamp of the heads. Migration changes carry the
/// fixed timestamp 0 ([`crate::migrate`]) and are not later than what they
/// build on, so a head with a timestamp of 0 or less is looked through to its
/// own dependencies: the hybrid logical clock stays monotonic along every
/// causal chain.
fn heads_max_ts(doc: &Automerge) -> Option<i64> {
    let mut max = None;
    let mut stack = doc.get_heads();
    let mut seen = HashSet::new();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        let Some(meta) = doc.get_change_meta_by_hash(&h) else {
            continue;
        };
        max = max.max(Some(meta.timestamp));
        if meta.timestamp <= 0 {
            stack.extend(meta.deps.iter().copied());
        }
    }
    max
}

impl Replica {
    /// Opens (or creates) the replica stored in `path` with default options.
    ///
    /// # Errors
    /// See [`ReplicaBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        ReplicaBuilder::new(path).open()
    }

    /// Options for opening a replica.
    pub fn builder(path: impl AsRef<Path>) -> ReplicaBuilder {
        ReplicaBuilder::new(path)
    }

    /// This replica's actor id.
    pub fn actor(&self) -> &ActorId {
        &self.inner.actor
    }

    /// The directory the replica is stored in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The store (for the sync engine and tools).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The current wall-clock time of the replica's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Receives [`ReplicaEvent`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReplicaEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, e: ReplicaEvent) {
        // No subscriber is fine.
        let _ = self.inner.events.send(e);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a user closure poisons the lock; the cache stays
        // consistent (open transactions roll back on drop), so carry on.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- loading -------------------------------------------------------

    fn load(&self, id: &DocId) -> Result<DocState> {
        let record = self
            .inner
            .store
            .get_doc(id)?
            .ok_or(EntityError::NotFound { id: *id })?;
        let chunks = self.inner.store.chunks(id)?;
        let total: usize = chunks.iter().map(|(_, c)| c.bytes.len()).sum();
        let mut bytes = Vec::with_capacity(total);
        for (_, c) in &chunks {
            bytes.extend_from_slice(&c.bytes);
        }
        let mut doc = if bytes.is_empty() {
            Automerge::new()
        } else {
            Automerge::load(&bytes).map_err(|source| EntityError::CorruptDocument {
                id: *id,
                source: Box::new(source),
            })?
        };
        doc.set_actor(self.inner.actor.clone());
        let pending = self.inner.store.pending_for(id)?;
        if !pending.is_empty() {
            let changes: Vec<Change> = pending
                .into_iter()
                .filter_map(|(_, p)| Change::from_bytes(p.bytes).ok())
                .collect();
            // Early arrivals whose deps are still missing stay queued inside
            // Automerge; the persisted copy stays in `pending`.
            let _ = doc.apply_changes(changes);
        }
        let max_ts = heads_max_ts(&doc);
        Ok(DocState {
            doc,
            record,
            max_ts,
        })
    }

    fn get_loaded<'s>(&self, st: &'s mut State, id: &DocId) -> Result<&'s mut DocState> {
        if !st.cache.contains(id) {
            let ds = self.load(id)?;
            st.cache.put(*id, ds);
        }
        st.cache
            .get_mut(id)
            .ok_or_else(|| EntityError::NotFound { id: *id }.into())
    }

    /// Runs `f` on the current document (no LWW view: raw Automerge).
    ///
    /// # Errors
    /// [`EntityError::NotFound`] or a storage error.
    pub fn with_doc<R>(&self, id: &DocId, f: impl FnOnce(&Automerge) -> R) -> Result<R> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        Ok(f(&ds.doc))
    }

    fn visible<'s>(&self, st: &'s mut State, id: &DocId) -> Result<&'s mut DocState> {
        let ds = self.get_loaded(st, id)?;
        if entity::meta_obj(&ds.doc).is_none() {
            // Only early arrivals so far: the entity does not exist yet here.
            return Err(EntityError::NotFound { id: *id }.into());
        }
        if ds.record.deleted {
            return Err(EntityError::Deleted { id: *id }.into());
        }
        Ok(ds)
    }

    // ----- local writes --------------------------------------------------

    fn new_doc_id(&self, st: &mut State) -> DocId {
        let mut random = [0u8; 10];
        st.rng.fill(&mut random[..]);
        let ms = u64::try_from(self.inner.clock.now_ms()).unwrap_or(0);
        DocId::new_v7(ms, random)
    }

    /// Commits a local edit: `prepare` reads the document, `write` edits it in
    /// a transaction; the change is persisted with its outbox entry atomically.
    fn commit<P, R>(
        &self,
        st: &mut State,
        id: &DocId,
        prepare: impl FnOnce(&Automerge) -> Result<P>,
        write: impl FnOnce(&mut Transaction<'_>, P) -> Result<R>,
    ) -> Result<(R, Option<ChangeHash>)> {
        let now = self.inner.clock.now_ms();
        let ds = self.get_loaded(st, id)?;
        let prepared = prepare(&ds.doc)?;
        let ts = hlc_timestamp(now, ds.max_ts);
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
                ds.max_ts = Some(ts);
                self.maybe_compact(st, id)?;
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

    fn persist_local(
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
        record.deleted = entity::is_deleted(&ds.doc);
        let seq = record.next_chunk;
        record.next_chunk += 1;
        record.incremental_len += bytes.len() as u64;
        record.incremental_count += 1;
        record.changes_since_upload += 1;
        let entry = OutboxEntry {
            workspace: record.workspace,
            doc_id: *id,
            collection: record.collection.clone(),
            hash: hash.0,
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
        fill: impl FnOnce(&mut Transaction<'_>) -> Result<()>,
    ) -> Result<DocId> {
        let mut st = self.lock();
        let id = self.new_doc_id(&mut st);
        let mut doc = Automerge::new();
        doc.set_actor(self.inner.actor.clone());
        st.cache.put(
            id,
            DocState {
                doc,
                record: DocRecord::new(ws, collection.clone()),
                max_ts: None,
            },
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
                tx.put(&meta, entity::META_SCHEMA, 0u64).map_err(am)?;
                fill(tx)
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
        self.create_with(ws, collection, |tx| {
            let id_for_err = DocId::from_uuid(uuid::Uuid::nil());
            autosurgeon::reconcile_prop(tx, ROOT, entity::DATA, value).map_err(|source| {
                EntityError::Reconcile {
                    id: id_for_err,
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
        self.create_with(ws, collection, |tx| {
            let data = tx
                .put_object(ROOT, entity::DATA, ObjType::Map)
                .map_err(|source| EntityError::Automerge {
                    id: DocId::from_uuid(uuid::Uuid::nil()),
                    source: Box::new(source),
                })?;
            for (k, v) in obj {
                entity::put_json(tx, &data, k, v).map_err(|source| EntityError::Automerge {
                    id: DocId::from_uuid(uuid::Uuid::nil()),
                    source: Box::new(source),
                })?;
            }
            Ok(())
        })
    }

    /// Reads an entity as a typed value (every field resolved by LWW).
    ///
    /// # Errors
    /// [`EntityError::NotFound`], [`EntityError::Deleted`],
    /// [`EntityError::Hydrate`] when the stored value does not fit `T`.
    pub fn get<T: Hydrate>(&self, id: &DocId) -> Result<T> {
        let mut st = self.lock();
        let ds = self.visible(&mut st, id)?;
        autosurgeon::hydrate_prop(&LwwView(&ds.doc), &ROOT, entity::DATA).map_err(|source| {
            EntityError::Hydrate {
                id: *id,
                source: Box::new(source),
            }
            .into()
        })
    }

    /// Reads an entity as JSON (every field resolved by LWW).
    ///
    /// # Errors
    /// [`EntityError::NotFound`], [`EntityError::Deleted`].
    pub fn get_json(&self, id: &DocId) -> Result<Json> {
        let mut st = self.lock();
        let ds = self.visible(&mut st, id)?;
        Ok(entity::data_json(&ds.doc))
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
            |doc| {
                let mut value: T = autosurgeon::hydrate_prop(&LwwView(doc), &ROOT, entity::DATA)
                    .map_err(|source| EntityError::Hydrate {
                        id,
                        source: Box::new(source),
                    })?;
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
    /// change's hash (`None` when the patch changed nothing).
    ///
    /// # Errors
    /// [`EntityError::NotAnObject`] when the patch is not an object;
    /// [`EntityError::NotFound`], [`EntityError::Deleted`]; storage errors.
    pub fn patch_json(&self, id: &DocId, patch: &Json) -> Result<Option<ChangeHash>> {
        let patch = entity::expect_object(patch)?;
        let mut st = self.lock();
        self.visible(&mut st, id)?;
        let id = *id;
        let (_, hash) = self.commit(
            &mut st,
            &id,
            |doc| {
                let data = entity::data_obj(doc).ok_or(EntityError::NotFound { id })?;
                let resolved = entity::resolve_for_patch(doc, &data, patch);
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
            |doc| entity::data_obj(doc).ok_or_else(|| EntityError::NotFound { id }.into()),
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
            |doc| entity::meta_obj(doc).ok_or_else(|| EntityError::NotFound { id }.into()),
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

    /// The live (not deleted) entities of a collection, in id (creation) order.
    ///
    /// An entity whose stored record is damaged is listed too (whether it was
    /// deleted cannot be known): reading it returns the typed corruption
    /// error, and the other entities stay readable.
    ///
    /// # Errors
    /// Storage errors reading the collection index itself.
    pub fn list(&self, collection: &Collection) -> Result<Vec<DocId>> {
        let mut out = Vec::new();
        for id in self.inner.store.collection_ids(collection) {
            let id = id?;
            match self.inner.store.get_doc(&id) {
                Ok(Some(rec)) => {
                    if !rec.deleted && (rec.snapshot_len > 0 || rec.incremental_count > 0) {
                        out.push(id);
                    }
                }
                Ok(None) => {}
                // A damaged record is listed, not hidden and not fatal for
                // the others: reading that entity reports the damage.
                Err(e) => {
                    tracing::warn!(doc = %id, error = %e, "listing a damaged document record");
                    out.push(id);
                }
            }
        }
        Ok(out)
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
            heads: ds.doc.get_heads().iter().map(|h| h.to_string()).collect(),
            schema: entity::schema_version(&ds.doc),
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
        self.with_doc(id, |d| {
            d.get_changes(&[])
                .into_iter()
                .map(|c| HistoryEntry {
                    hash: c.hash().to_string(),
                    actor: c.actor_id().to_hex_string(),
                    seq: c.seq(),
                    timestamp: c.timestamp(),
                    ops: c.len() as u64,
                    deps: c.deps().iter().map(|h| h.to_string()).collect(),
                    message: c.message().map(str::to_owned),
                })
                .collect()
        })
    }

    /// Every field of an entity holding concurrent values.
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors.
    pub fn conflicts(&self, id: &DocId) -> Result<Vec<Conflict>> {
        self.with_doc(id, doc_conflicts)
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
        let am = move |source| -> Error {
            EntityError::Automerge {
                id,
                source: Box::new(source),
            }
            .into()
        };
        let mut st = self.lock();
        self.visible(&mut st, &id)?;
        let (_, hash) = self.commit(
            &mut st,
            &id,
            |doc| {
                let (obj, prop) = locate(doc, &id, &pointer)?;
                let all = doc.get_all(&obj, prop.clone()).map_err(am)?;
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
                let win = conflict::winner(doc, &obj, prop.clone())
                    .map_err(am)?
                    .map(|(_, w)| w);
                let mut cands = Vec::with_capacity(all.len());
                for (v, opid) in &all {
                    let stamp = conflict::stamp_of(doc, opid).map(|(s, _)| s);
                    let local = match &stamp {
                        Some(s) => self.is_local_actor(&s.actor)?,
                        None => false,
                    };
                    cands.push(ResolveCandidate {
                        written: entity::written_of(doc, v, opid),
                        winner: win.as_ref() == Some(opid),
                        side: if local { Side::Local } else { Side::Remote },
                        stamp,
                        opid: opid.clone(),
                    });
                }
                let chosen = choose(&cands)?;
                // Automerge turns a put of the value its own winner already
                // holds into a mere deletion of the other values, which would
                // keep the old write (and its old timestamp). Writing a
                // different value first makes the chosen one a new write.
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
                Ok((obj, prop, chosen, placeholder))
            },
            |tx, (obj, prop, chosen, placeholder)| {
                if let Some(p) = placeholder {
                    tx.put(&obj, prop.clone(), p).map_err(am)?;
                }
                entity::put_written(tx, &obj, prop, &chosen).map_err(am)
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

    // ----- schema migrations ------------------------------------------------

    /// Applies every registered migration (see [`crate::migrate`]) the
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
    /// [`EntityError::NotFound`]; storage errors.
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
        if entity::meta_obj(&ds.doc).is_none() {
            return Err(EntityError::NotFound { id: *id }.into());
        }
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
        Ok((entity::schema_version(&ds.doc), changed))
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
            if entity::schema_version(&ds.doc) >= m.version()
                || migrate::migration_change(&ds.doc, collection, m.version()).is_some()
            {
                continue;
            }
            let change = migrate::build_change(&ds.doc, id, m)?;
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
            ds.max_ts = heads_max_ts(&ds.doc);
            *changed = true;
        }
        Ok(())
    }

    // ----- outbox ---------------------------------------------------------

    /// How many local changes wait to be pushed.
    pub fn pending(&self) -> usize {
        self.inner.store.outbox_len()
    }

    /// The oldest outbox entries: at most `max_count`, at most `max_bytes` of
    /// change bytes (at least one entry when the outbox is not empty).
    ///
    /// # Errors
    /// Storage errors.
    pub fn peek(&self, max_count: usize, max_bytes: usize) -> Result<Vec<OutboxEntry>> {
        Ok(self.inner.store.outbox_peek(max_count, max_bytes)?)
    }

    /// Removes the entries of these hashes from the outbox (the remote
    /// confirmed them). Returns how many were removed.
    ///
    /// # Errors
    /// Storage errors (nothing is removed then).
    pub fn ack(&self, hashes: &[ChangeHash]) -> Result<usize> {
        Ok(self.inner.store.transact("ack", |tx| {
            let mut n = 0;
            for h in hashes {
                if tx.take_outbox(&h.0)?.is_some() {
                    n += 1;
                }
            }
            Ok(n)
        })?)
    }

    /// Moves the entry of `hash` from the outbox to the dead letters with the
    /// remote's reason. Returns whether it was in the outbox.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_letter(&self, hash: &ChangeHash, reason: &str) -> Result<bool> {
        let now = self.inner.clock.now_ms();
        Ok(self
            .inner
            .store
            .transact("dead letter", |tx| match tx.take_outbox(&hash.0)? {
                Some(entry) => {
                    tx.push_dead_letter(&DeadLetter {
                        entry,
                        reason: reason.to_owned(),
                        at_ms: now,
                    })?;
                    Ok(true)
                }
                None => Ok(false),
            })?)
    }

    /// The changes the remote rejected, with reasons.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Ok(self.inner.store.dead_letters()?)
    }

    /// The cursor record of a workspace.
    ///
    /// # Errors
    /// Storage errors.
    pub fn cursor(&self, ws: &WorkspaceId) -> Result<Option<CursorRecord>> {
        Ok(self.inner.store.cursor(ws)?)
    }

    /// Sets a workspace's cursor record alone (no changes).
    ///
    /// # Errors
    /// Storage errors.
    pub fn set_cursor(&self, ws: &WorkspaceId, rec: &CursorRecord) -> Result<()> {
        Ok(self
            .inner
            .store
            .transact("cursor", |tx| tx.put_cursor(ws, rec))?)
    }

    /// Every workspace this replica holds documents of or has synced.
    ///
    /// # Errors
    /// Storage errors.
    pub fn workspaces(&self) -> Result<Vec<WorkspaceId>> {
        let mut set: std::collections::BTreeSet<WorkspaceId> = self
            .inner
            .store
            .cursors()?
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        for r in self.inner.store.docs() {
            set.insert(r?.1.workspace);
        }
        Ok(set.into_iter().collect())
    }

    // ----- remote changes ----------------------------------------------------

    /// Applies changes pulled from a remote, grouped per document in one
    /// `apply_changes` call each, and persists them — with `cursor`, when
    /// given — in one sled transaction. Changes whose dependencies are missing
    /// are kept on disk and applied when the dependencies arrive. Corrupt
    /// changes are reported in [`ApplyReport::rejected`]; the rest applies.
    ///
    /// # Errors
    /// Storage errors: then nothing of the batch (nor the cursor) is stored.
    pub fn apply_remote(
        &self,
        changes: Vec<RemoteChange>,
        cursor: Option<(WorkspaceId, CursorRecord)>,
    ) -> Result<ApplyReport> {
        self.apply_inner(changes, cursor)
    }

    /// Merges downloaded snapshots (`save()` bytes) into the replica, as
    /// [`Replica::apply_remote`] does for changes.
    ///
    /// A snapshot of a document this replica has never seen (the fresh-device
    /// case) is loaded once and stored as the document's snapshot chunk, all
    /// such documents in one sled transaction. A snapshot of a document that
    /// already exists here (or has early arrivals waiting) is merged change by
    /// change through the same path as pulled changes.
    ///
    /// A snapshot is applied only if it loads and holds exactly the changes
    /// its digest says ([`snapshot_check::check`]); any other is left out and
    /// reported in [`ApplyReport::untrusted`] (the caller then pulls those
    /// documents' changes instead).
    ///
    /// # Errors
    /// Storage errors.
    pub fn apply_snapshots(&self, snapshots: Vec<DownloadedSnapshot>) -> Result<ApplyReport> {
        let mut changes = Vec::new();
        let mut fresh: Vec<(DocId, DocRecord, Vec<u8>, usize)> = Vec::new();
        let mut fresh_ids = HashSet::new();
        let mut untrusted = Vec::new();
        let st = self.lock();
        for snap in snapshots {
            let (ws, coll, id, bytes) = (snap.workspace, snap.collection, snap.doc_id, snap.bytes);
            let doc = match snapshot_check::load_checked(id, &bytes, snap.replaces.as_ref()) {
                Ok(doc) => doc,
                Err(e) => {
                    untrusted.push(e);
                    continue;
                }
            };
            let is_new = !st.cache.contains(&id)
                && !fresh_ids.contains(&id)
                && self.inner.store.get_doc(&id)?.is_none();
            if is_new {
                let mut record = DocRecord::new(ws, coll);
                record.deleted = entity::is_deleted(&doc);
                record.next_chunk = 1;
                record.snapshot_len = bytes.len() as u64;
                let n = doc.stats().num_changes as usize;
                fresh_ids.insert(id);
                fresh.push((id, record, bytes, n));
                continue;
            }
            for mut c in doc.get_changes(&[]) {
                let _ = c.bytes();
                changes.push(RemoteChange {
                    workspace: ws,
                    doc_id: id,
                    collection: coll.clone(),
                    hash: Some(HashHex::from_change_hash(&c.hash())),
                    bytes: c.raw_bytes().to_vec(),
                });
            }
        }
        if !fresh.is_empty() {
            self.inner.store.transact("load snapshots", |tx| {
                for (id, record, bytes, _) in &fresh {
                    tx.put_chunk(
                        id,
                        0,
                        &Chunk {
                            kind: ChunkKind::Snapshot,
                            bytes: bytes.clone(),
                        },
                    )?;
                    tx.put_doc(id, record)?;
                    tx.index_collection(&record.collection, id)?;
                }
                Ok(())
            })?;
        }
        drop(st);
        let mut report = if changes.is_empty() {
            ApplyReport::default()
        } else {
            self.apply_inner(changes, None)?
        };
        report.untrusted = untrusted;
        for (id, _, _, n) in fresh {
            report.applied += n;
            report.changed.push(id);
            self.emit(ReplicaEvent::DocChanged {
                id,
                origin: Origin::Remote,
            });
            if self.inner.events.receiver_count() > 0 {
                if let Ok(conflicts) = self.conflicts(&id) {
                    if !conflicts.is_empty() {
                        self.emit(ReplicaEvent::Conflict { id, conflicts });
                    }
                }
            }
        }
        Ok(report)
    }

    fn apply_inner(
        &self,
        changes: Vec<RemoteChange>,
        cursor: Option<(WorkspaceId, CursorRecord)>,
    ) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        // 1. decode and verify, grouped by document (batch order kept)
        let mut groups: BTreeMap<DocId, (WorkspaceId, Collection, Vec<Change>)> = BTreeMap::new();
        for (index, rc) in changes.into_iter().enumerate() {
            let change = match Change::from_bytes(rc.bytes) {
                Ok(c) => c,
                Err(source) => {
                    report.rejected.push(ChangeError::Corrupt {
                        doc_id: rc.doc_id,
                        index,
                        source,
                    });
                    continue;
                }
            };
            let actual = HashHex::from_change_hash(&change.hash());
            if let Some(claimed) = rc.hash {
                if claimed != actual {
                    report.rejected.push(ChangeError::HashMismatch {
                        doc_id: rc.doc_id,
                        index,
                        claimed,
                        actual,
                    });
                    continue;
                }
            }
            groups
                .entry(rc.doc_id)
                .or_insert_with(|| (rc.workspace, rc.collection, Vec::new()))
                .2
                .push(change);
        }

        let mut st = self.lock();
        let mut plans: Vec<(DocId, bool, ApplyPlan)> = Vec::new();
        // Conflicts before the batch, to announce only new or changed ones.
        let watch_conflicts = self.inner.events.receiver_count() > 0;
        let mut conflicts_before: BTreeMap<DocId, Vec<Conflict>> = BTreeMap::new();
        for (id, (ws, coll, batch)) in groups {
            // A cached document exists: only an uncached one costs a read.
            let is_new = !st.cache.contains(&id) && self.inner.store.get_doc(&id)?.is_none();
            if is_new {
                let mut doc = Automerge::new();
                doc.set_actor(self.inner.actor.clone());
                st.cache.put(
                    id,
                    DocState {
                        doc,
                        record: DocRecord::new(ws, coll),
                        max_ts: None,
                    },
                );
            }
            let ds = match self.get_loaded(&mut st, &id) {
                Ok(ds) => ds,
                Err(e) => {
                    for (id, ..) in &plans {
                        st.cache.pop(id);
                    }
                    return Err(e);
                }
            };
            if watch_conflicts {
                conflicts_before.insert(id, doc_conflicts(&ds.doc));
            }
            let plan = self.apply_group(ds, &id, batch, &mut report)?;
            plans.push((id, is_new, plan));
        }

        // 2. persist everything (and the cursor) in one transaction
        let persisted = self.inner.store.transact("apply remote", |tx| {
            for (id, is_new, plan) in &plans {
                if let Some((seq, bytes)) = &plan.chunk {
                    tx.put_chunk(
                        id,
                        *seq,
                        &Chunk {
                            kind: ChunkKind::Incremental,
                            bytes: bytes.clone(),
                        },
                    )?;
                }
                tx.put_doc(id, &plan.record)?;
                if *is_new {
                    tx.index_collection(&plan.record.collection, id)?;
                }
                for h in &plan.unpend {
                    tx.remove_pending(id, h)?;
                }
                for (h, bytes) in &plan.pend {
                    tx.put_pending(
                        id,
                        h,
                        &PendingChange {
                            bytes: bytes.clone(),
                        },
                    )?;
                }
            }
            if let Some((ws, rec)) = &cursor {
                tx.put_cursor(ws, rec)?;
            }
            Ok(())
        });
        if let Err(e) = persisted {
            for (id, ..) in &plans {
                st.cache.pop(id);
            }
            return Err(e.into());
        }
        let mut changed = Vec::new();
        for (id, _, plan) in plans {
            if let Some(ds) = st.cache.get_mut(&id) {
                ds.record = plan.record;
                ds.max_ts = heads_max_ts(&ds.doc);
            }
            if plan.changed {
                changed.push(id);
                self.maybe_compact(&mut st, &id)?;
            }
        }
        drop(st);
        for id in &changed {
            self.emit(ReplicaEvent::DocChanged {
                id: *id,
                origin: Origin::Remote,
            });
            if watch_conflicts {
                if let Ok(conflicts) = self.conflicts(id) {
                    let before = conflicts_before.get(id).map(Vec::as_slice).unwrap_or(&[]);
                    if conflicts.iter().any(|c| !before.contains(c)) {
                        self.emit(ReplicaEvent::Conflict { id: *id, conflicts });
                    }
                }
            }
        }
        report.changed = changed;
        Ok(report)
    }

    fn apply_group(
        &self,
        ds: &mut DocState,
        id: &DocId,
        batch: Vec<Change>,
        report: &mut ApplyReport,
    ) -> Result<ApplyPlan> {
        let before = ds.doc.get_heads();
        let stored_pending = self.inner.store.pending_for(id)?;
        // Which of the batch the document already holds. `get_change_by_hash`
        // would rebuild every present change from the op set (Automerge 0.12),
        // which made re-pulling a replica's own changes quadratic; instead ask
        // once which hashes are missing. A hash is neither missing nor in the
        // document only while it waits in the queue, i.e. in `pending`.
        let hashes: Vec<ChangeHash> = batch.iter().map(Change::hash).collect();
        let absent: HashSet<ChangeHash> = ds.doc.get_missing_deps(&hashes).into_iter().collect();
        let queued: HashSet<[u8; 32]> = stored_pending.iter().map(|(h, _)| *h).collect();
        let mut seen = HashSet::new();
        let mut incoming = Vec::new();
        for c in batch {
            let h = c.hash();
            let in_doc = !absent.contains(&h) && !queued.contains(&h.0);
            if in_doc || !seen.insert(h) {
                report.duplicates += 1;
            } else {
                incoming.push(c);
            }
        }
        let mut pending_hashes = HashSet::new();
        let mut all = incoming.clone();
        for (h, p) in stored_pending {
            pending_hashes.insert(h);
            if !seen.contains(&ChangeHash(h)) {
                if let Ok(c) = Change::from_bytes(p.bytes) {
                    seen.insert(c.hash());
                    all.push(c);
                }
            }
        }
        let applied_whole = ds.doc.apply_changes(all.clone()).is_ok();
        if !applied_whole {
            // Isolate the offending change(s): reload and apply one at a time.
            let mut fresh = self.load(id).or_else(|_| {
                let mut doc = Automerge::new();
                doc.set_actor(self.inner.actor.clone());
                Ok::<_, Error>(DocState {
                    doc,
                    record: ds.record.clone(),
                    max_ts: None,
                })
            })?;
            let mut remaining = all.clone();
            loop {
                let mut progress = false;
                let mut next = Vec::new();
                for c in remaining {
                    let deps_ok = c
                        .deps()
                        .iter()
                        .all(|d| fresh.doc.get_change_by_hash(d).is_some());
                    if !deps_ok {
                        next.push(c);
                        continue;
                    }
                    match fresh.doc.apply_changes([c.clone()]) {
                        Ok(()) => progress = true,
                        Err(source) => {
                            report.rejected.push(ChangeError::Incompatible {
                                doc_id: *id,
                                hash: HashHex::from_change_hash(&c.hash()),
                                source,
                            });
                            all.retain(|x| x.hash() != c.hash());
                        }
                    }
                }
                remaining = next;
                if !progress || remaining.is_empty() {
                    break;
                }
            }
            fresh.record = ds.record.clone();
            *ds = fresh;
        }
        let mut plan = ApplyPlan {
            record: ds.record.clone(),
            chunk: None,
            unpend: Vec::new(),
            pend: Vec::new(),
            changed: ds.doc.get_heads() != before,
        };
        let mut chunk = Vec::new();
        let mut applied = 0u64;
        // `get_change_by_hash` rebuilds the change from the op set in
        // Automerge 0.12 (a fifth of a page's apply time in the profile). When
        // nothing is left waiting for dependencies, every change of `all` is
        // in the document and the lookup is not needed. (Not after the
        // one-by-one isolation above: it leaves changes with missing
        // dependencies out of the document instead of queueing them.)
        let all_in = applied_whole && ds.doc.get_missing_deps(&[]).is_empty();
        for c in &all {
            let h = c.hash();
            let now_in = all_in || ds.doc.get_change_by_hash(&h).is_some();
            let was_pending = pending_hashes.contains(&h.0);
            match (now_in, was_pending) {
                (true, true) => {
                    plan.unpend.push(h.0);
                    chunk.extend_from_slice(c.raw_bytes());
                    applied += 1;
                }
                (true, false) => {
                    chunk.extend_from_slice(c.raw_bytes());
                    applied += 1;
                }
                (false, false) => {
                    plan.pend.push((h.0, c.raw_bytes().to_vec()));
                    report.pending += 1;
                }
                (false, true) => report.pending += 1,
            }
        }
        report.applied += applied as usize;
        if !chunk.is_empty() {
            let seq = plan.record.next_chunk;
            plan.record.next_chunk += 1;
            plan.record.incremental_len += chunk.len() as u64;
            plan.record.incremental_count += 1;
            plan.record.changes_since_upload += applied;
            plan.chunk = Some((seq, chunk));
        }
        plan.record.deleted = entity::is_deleted(&ds.doc);
        Ok(plan)
    }

    // ----- compaction and snapshots ---------------------------------------

    fn maybe_compact(&self, st: &mut State, id: &DocId) -> Result<()> {
        let policy = self.inner.compaction;
        let Some(ds) = st.cache.get_mut(id) else {
            return Ok(());
        };
        let r = &ds.record;
        let due = r.incremental_count >= policy.min_chunks
            && (!policy.when_larger_than_snapshot || r.incremental_len > r.snapshot_len);
        if due {
            self.compact_loaded(ds, id)?;
        }
        Ok(())
    }

    fn compact_loaded(&self, ds: &mut DocState, id: &DocId) -> Result<()> {
        let snapshot = ds.doc.save();
        let old: Vec<u64> = self
            .inner
            .store
            .chunks(id)?
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let mut record = ds.record.clone();
        let seq = record.next_chunk;
        record.next_chunk += 1;
        record.snapshot_len = snapshot.len() as u64;
        record.incremental_len = 0;
        record.incremental_count = 0;
        self.inner.store.transact("compact", |tx| {
            for s in &old {
                tx.remove_chunk(id, *s)?;
            }
            tx.put_chunk(
                id,
                seq,
                &Chunk {
                    kind: ChunkKind::Snapshot,
                    bytes: snapshot.clone(),
                },
            )?;
            tx.put_doc(id, &record)?;
            Ok(())
        })?;
        ds.record = record;
        Ok(())
    }

    /// Folds a document's chunks into one snapshot now.
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors (the old chunks stay then).
    pub fn compact(&self, id: &DocId) -> Result<()> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        self.compact_loaded(ds, id)
    }

    /// The compacted `save()` of a document with its heads.
    ///
    /// # Errors
    /// [`EntityError::NotFound`]; storage errors.
    pub fn save(&self, id: &DocId) -> Result<(Vec<u8>, Vec<ChangeHash>)> {
        self.with_doc(id, |d| (d.save(), d.get_heads()))
    }

    /// Documents worth a snapshot upload: at least `threshold` changes since
    /// the last upload, nothing in the outbox and nothing pending for them.
    ///
    /// # Errors
    /// Storage errors.
    pub fn snapshot_candidates(
        &self,
        ws: &WorkspaceId,
        threshold: u64,
    ) -> Result<Vec<(DocId, Collection)>> {
        let mut out = Vec::new();
        let mut outbox_docs = HashSet::new();
        for e in self.inner.store.outbox_peek(usize::MAX, usize::MAX)? {
            outbox_docs.insert(e.doc_id);
        }
        for r in self.inner.store.docs() {
            let (id, rec) = r?;
            if rec.workspace == *ws
                && rec.changes_since_upload >= threshold
                && !outbox_docs.contains(&id)
                && self.inner.store.pending_for(&id)?.is_empty()
            {
                out.push((id, rec.collection));
            }
        }
        Ok(out)
    }

    /// Records that a snapshot of `id` was uploaded (resets its counter).
    ///
    /// # Errors
    /// Storage errors.
    pub fn mark_snapshot_uploaded(&self, id: &DocId) -> Result<()> {
        let mut st = self.lock();
        let ds = self.get_loaded(&mut st, id)?;
        let mut record = ds.record.clone();
        record.changes_since_upload = 0;
        self.inner
            .store
            .transact("mark snapshot", |tx| tx.put_doc(id, &record))?;
        ds.record = record;
        Ok(())
    }

    /// The number of documents (live, deleted and not yet materialised).
    pub fn doc_count(&self) -> usize {
        self.inner.store.doc_count()
    }

    /// How many documents are loaded in the in-memory LRU cache right now
    /// (at most the configured capacity, see
    /// [`ReplicaBuilder::with_cache_capacity`]).
    pub fn cached_docs(&self) -> usize {
        self.lock().cache.len()
    }

    /// The number of remote changes waiting for their dependencies.
    pub fn pending_remote(&self) -> usize {
        self.inner.store.pending_len()
    }

    /// Flushes everything to disk (only needed with buffered durability).
    ///
    /// # Errors
    /// Storage errors.
    pub fn flush(&self) -> Result<()> {
        Ok(self.inner.store.flush()?)
    }
}

/// What one document group of a remote batch writes.
struct ApplyPlan {
    record: DocRecord,
    chunk: Option<(u64, Vec<u8>)>,
    unpend: Vec<[u8; 32]>,
    pend: Vec<([u8; 32], Vec<u8>)>,
    changed: bool,
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
    /// The op that wrote it (the tie-breaker, as in [`conflict::winner`]).
    opid: ObjId,
}

/// The object and property a pointer names inside the `data` map; each
/// intermediate step follows the last-writer-wins winner (as
/// [`Replica::conflicts`] does).
fn locate(doc: &Automerge, id: &DocId, pointer: &JsonPointer) -> Result<(ObjId, Prop)> {
    let no_path = || -> Error {
        EntityError::NoSuchPath {
            id: *id,
            path: pointer.to_string(),
        }
        .into()
    };
    let mut obj = entity::data_obj(doc).ok_or_else(no_path)?;
    let (last, parents) = pointer.tokens().split_last().ok_or_else(no_path)?;
    for token in parents {
        let prop = prop_in(doc, &obj, token).ok_or_else(no_path)?;
        match conflict::winner(doc, &obj, prop) {
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
fn doc_conflicts(doc: &Automerge) -> Vec<Conflict> {
    match entity::data_obj(doc) {
        Some(data) => collect_conflicts(doc, &data, ""),
        None => Vec::new(),
    }
}

fn collect_conflicts(doc: &Automerge, obj: &ObjId, path: &str) -> Vec<Conflict> {
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
            let mut cands: Vec<(conflict::WriteStamp, Candidate)> = all
                .iter()
                .filter_map(|(v, id)| {
                    let (stamp, hash) = conflict::stamp_of(doc, id)?;
                    Some((
                        stamp.clone(),
                        Candidate {
                            value: entity::value_to_json(doc, v, id),
                            actor: stamp.actor.to_hex_string(),
                            timestamp: stamp.timestamp,
                            change: hash.to_string(),
                        },
                    ))
                })
                .collect();
            cands.sort_by(|a, b| a.0.cmp(&b.0));
            let winner = conflict::winner(doc, obj, prop.clone()).ok().flatten();
            let winner_idx = winner
                .and_then(|(_, wid)| {
                    let (ws, _) = conflict::stamp_of(doc, &wid)?;
                    cands.iter().position(|(s, _)| *s == ws)
                })
                .unwrap_or(cands.len().saturating_sub(1));
            out.push(Conflict {
                path: here.clone(),
                candidates: cands.into_iter().map(|(_, c)| c).collect(),
                winner: winner_idx,
            });
        }
        if let Ok(Some((automerge::Value::Object(_), child))) = conflict::winner(doc, obj, prop) {
            out.extend(collect_conflicts(doc, &child, &here));
        }
    }
    out
}
