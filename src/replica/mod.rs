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
//!
//! One concern per file:
//! - this file: the [`Replica`] handle, its shared state and its events;
//! - [`builder`]: [`ReplicaBuilder`], the options of opening a replica;
//! - [`cache`]: loading documents from the store into the LRU cache;
//! - [`write`]: local writes (create, update, patch, transact, delete) and
//!   their persistence (chunk + outbox, one transaction);
//! - [`read`]: typed and JSON reads, listing, info, history;
//! - [`resolve`]: the conflict list and one-shot resolutions, as pure work on
//!   an `&Automerge` plus one local write;
//! - [`migrations`]: applying registered schema migrations;
//! - [`apply`]: remote changes and snapshots, as a pure *plan* per document
//!   and one *persist* transaction for the batch;
//! - [`compaction`]: when and how chunks are folded into a snapshot;
//! - [`sync_port`]: what a sync engine needs (outbox, cursors, snapshot
//!   candidates).

mod apply;
mod builder;
mod cache;
mod compaction;
mod doc_cache;
mod import;
mod migrations;
mod read;
mod resolve;
mod sync_port;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::ActorId;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::conflict::Conflict;
use crate::error::Result;
use crate::id::DocId;
use crate::migrate::Migrations;
use crate::store::Store;

pub use apply::{ApplyReport, ChangeError, RemoteChange};
pub use builder::{ReplicaBuilder, DEFAULT_CACHE_BYTES};
pub use compaction::CompactionPolicy;
pub use import::ImportedDoc;
pub use read::{EntityInfo, HistoryEntry};
pub use sync_port::SyncPort;

use doc_cache::DocCache;

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
    /// The document cache's budget, in approximate bytes.
    cache_bytes: usize,
    /// Loaded documents and the random source; one writer at a time.
    state: Mutex<State>,
}

struct State {
    /// Loaded documents, least recently used evicted first.
    cache: DocCache,
    /// Random bits for document ids.
    rng: rand::rngs::StdRng,
    /// The last timestamp a local commit stamped: the next is later, so
    /// this actor's changes never share a time (two identical creations in
    /// one millisecond would otherwise share a change hash). In memory
    /// only: every open is a new actor.
    last_stamp: i64,
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

    /// What opening repaired: files an interrupted open or snapshot left in
    /// the directory (empty almost always; see `docs/storage.md`, "Crash
    /// safety").
    pub fn recovered(&self) -> &[crate::store::Recovery] {
        self.inner.store.recovered()
    }

    /// The current wall-clock time of the replica's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Receives [`ReplicaEvent`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReplicaEvent> {
        self.inner.events.subscribe()
    }

    /// Flushes everything to disk (only needed with buffered durability).
    ///
    /// # Errors
    /// Storage errors.
    pub fn flush(&self) -> Result<()> {
        Ok(self.inner.store.flush()?)
    }

    /// The store, for the crate's own tools that read it raw
    /// ([`crate::doctor`]) and the inspection and fault-injection helpers of
    /// `test_util`: there is no public way into the store.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
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
}
