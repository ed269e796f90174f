//! [`ReplicaBuilder`]: the options of opening a replica.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use automerge::ActorId;
use rand::{RngCore, SeedableRng};
use tokio::sync::broadcast;

use super::{CompactionPolicy, Inner, Replica, State};
use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::migrate::{Migration, Migrations};
use crate::store::{Durability, Store};

/// Options for opening a replica.
#[derive(Debug, Clone)]
pub struct ReplicaBuilder {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    actor: Option<ActorId>,
    cache_capacity: NonZeroUsize,
    cache_bytes: usize,
    store_cache_bytes: u64,
    durability: Durability,
    compaction: CompactionPolicy,
    seed: Option<u64>,
    migrations: Vec<Migration>,
}

const DEFAULT_CACHE: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// The default budget of the document cache (approximate bytes).
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl ReplicaBuilder {
    /// Options for the replica stored in `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            clock: Arc::new(SystemClock),
            actor: None,
            cache_capacity: DEFAULT_CACHE,
            cache_bytes: DEFAULT_CACHE_BYTES,
            store_cache_bytes: crate::store::STORE_CACHE_BYTES,
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

    /// At most how many documents stay loaded in memory (default 1024).
    pub fn with_cache_capacity(mut self, n: NonZeroUsize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// The memory budget of the document cache, in approximate bytes
    /// (default [`DEFAULT_CACHE_BYTES`], 64 MiB). A loaded document holds its
    /// whole history, so its size is estimated from what it takes on disk
    /// (snapshot plus incremental chunks, times a factor measured for
    /// Automerge 0.12, see `docs/storage.md`); when the cache's estimate
    /// exceeds the budget, the least recently used documents are dropped
    /// from memory (their history with them) and loaded again from disk
    /// when next used. The most recently used document always stays, even
    /// alone over the budget. Both this and
    /// [`ReplicaBuilder::with_cache_capacity`] apply.
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// The cap of sled's page cache under the replica, in bytes (default
    /// `STORE_CACHE_BYTES`, 16 MiB). Apart
    /// from the documents' cache ([`ReplicaBuilder::with_cache_bytes`]):
    /// sled keeps the store's recently read and written pages here. sled
    /// counts pages at their size on disk, so the heap it takes when full is
    /// larger than the cap (docs/benchmarks.md, "Soak"); a smaller cap costs
    /// reads from the file (the OS's page cache) when documents are loaded.
    pub fn with_store_cache_bytes(mut self, bytes: u64) -> Self {
        self.store_cache_bytes = bytes;
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

    /// Registers a schema migration (a [`Migration`]; `docs/conflicts.md`
    /// explains how every replica makes the identical change). May be called
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
        let store = Store::open(&self.path, self.durability, self.store_cache_bytes)?;
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
                cache_bytes: self.cache_bytes,
                state: Mutex::new(State {
                    cache: super::DocCache::new(self.cache_capacity),
                    rng,
                    last_stamp: i64::MIN,
                }),
            }),
        })
    }
}
