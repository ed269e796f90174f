//! The sled store under a replica: typed trees, versioned records, atomic
//! multi-tree transactions.
//!
//! Layout (see [`keys`] for the byte layout of every key):
//! - `docs`, `chunks`, `by_collection`: the documents, as a snapshot plus
//!   incremental chunks each (the way automerge-repo stores them);
//! - `outbox`, `outbox_index`: local changes waiting for the remote;
//! - `pending`: remote changes that arrived before their dependencies;
//! - `cursors`: the pull position per workspace; `dead_letters`: rejected pushes.
//!
//! Every write that must be atomic (a local commit: chunk + outbox entry + doc
//! record; a pulled page: chunks + pending + cursor) goes through
//! [`Store::transact`], one sled transaction over all trees.

pub mod codec;
pub mod dir;
pub mod keys;
mod list;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

use crate::id::{Collection, DocId, WorkspaceId};
pub use dir::Recovery;
use keys::trees;
pub use list::{DamagedRecord, ListReport};

/// Errors of the local store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled reported an I/O or storage failure.
    #[error("storage failure during {op}: {source}")]
    Sled {
        /// What the store was doing.
        op: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Another process holds the replica directory: one process at a time
    /// may open it. Reported after waiting 1 s for it (see
    /// `docs/storage.md`, "Locking").
    #[error(
        "the replica at {path} is in use by another process; close it (or stop its sync) and retry"
    )]
    Locked {
        /// The replica directory.
        path: PathBuf,
    },
    /// This process already has the directory open. Reported at once.
    #[error("the replica at {path} is already open in this process: clone the Replica (clones share one store) instead of opening it again")]
    AlreadyOpen {
        /// The replica directory.
        path: PathBuf,
    },
    /// sled's settings file is damaged in a way an interrupted write cannot
    /// explain, so repairing it would be a guess.
    #[error("sled's settings file {path} is damaged (neither complete nor cut short while being written); keep a copy of the directory; if supamerge created it, move this file away and open again (supamerge writes it anew), else restore the directory from a backup")]
    DamagedConf {
        /// The file.
        path: PathBuf,
    },
    /// The newest complete snapshot of sled's page table fails its checksum.
    /// sled writes snapshots to a temporary name, fsyncs and renames them,
    /// so this is damage on disk, not an interrupted write; sled cannot open
    /// the directory without it and deleting it could lose data.
    #[error("sled's snapshot file {path} is damaged (checksum mismatch after a completed write: disk damage, not a crash); keep a copy of the directory and restore it from a backup")]
    DamagedSnapshot {
        /// The file.
        path: PathBuf,
    },
    /// A file-system operation on the directory failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value does not decode: the store is damaged.
    #[error("corrupt value in tree {tree} at key {key}: {reason}")]
    Corrupt {
        /// The tree holding the value.
        tree: &'static str,
        /// The key, in hex.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A stored value was written by a newer version of supamerge.
    #[error("value in tree {tree} at key {key} has format {found}, this build reads format 1; upgrade supamerge")]
    UnsupportedFormat {
        /// The tree holding the value.
        tree: &'static str,
        /// The key, in hex.
        key: String,
        /// The format byte found.
        found: u8,
    },
    /// A `LocalHub` directory was written in a format this build does not
    /// read (a newer supamerge), or cannot be opened in the format asked
    /// for; nothing in it was changed.
    #[error("hub directory has format {found}; this build reads hub formats up to {newest}: upgrade supamerge")]
    UnsupportedHubFormat {
        /// The directory's format.
        found: u8,
        /// The newest format this build (or this way of opening) handles.
        newest: u8,
    },
    /// A value could not be encoded.
    #[error("cannot encode a value for tree {tree}: {reason}")]
    Encode {
        /// The tree the value was meant for.
        tree: &'static str,
        /// The encoder's message.
        reason: String,
    },
}

impl StoreError {
    fn sled(op: &'static str) -> impl FnOnce(sled::Error) -> Self {
        move |source| StoreError::Sled { op, source }
    }

    fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| StoreError::Io { op, path, source }
    }

    /// Whether this error says a stored value is damaged or unreadable by
    /// this version (as opposed to the store as a whole failing).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::UnsupportedFormat { .. }
        )
    }
}

/// The per-document record in the `docs` tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    /// The workspace the document is shared in.
    pub workspace: WorkspaceId,
    /// The collection it belongs to.
    pub collection: Collection,
    /// Whether the tombstone is set (cached from the document for listing).
    pub deleted: bool,
    /// The sequence number the next chunk of this document gets.
    pub next_chunk: u64,
    /// Size in bytes of the latest snapshot chunk (0 when there is none).
    pub snapshot_len: u64,
    /// Total size in bytes of the incremental chunks written since it.
    pub incremental_len: u64,
    /// Number of incremental chunks written since it.
    pub incremental_count: u64,
    /// Changes applied since this replica last uploaded a snapshot of it.
    pub changes_since_upload: u64,
}

impl DocRecord {
    /// A record for a document with no chunks yet.
    pub fn new(workspace: WorkspaceId, collection: Collection) -> Self {
        Self {
            workspace,
            collection,
            deleted: false,
            next_chunk: 0,
            snapshot_len: 0,
            incremental_len: 0,
            incremental_count: 0,
            changes_since_upload: 0,
        }
    }
}

/// What a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkKind {
    /// A whole-document `save()`.
    Snapshot,
    /// One or more raw change chunks written since the snapshot.
    Incremental,
}

/// One stored chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Snapshot or incremental.
    pub kind: ChunkKind,
    /// The Automerge bytes (a document or concatenated change chunks).
    #[serde(with = "serde_bytes_vec")]
    pub bytes: Vec<u8>,
}

/// A local change waiting to be pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The workspace the document belongs to.
    pub workspace: WorkspaceId,
    /// The document.
    pub doc_id: DocId,
    /// The document's collection.
    pub collection: Collection,
    /// The Automerge change hash (stored as its 32 bytes).
    #[serde(with = "crate::hash::bytes")]
    pub hash: ChangeHash,
    /// The raw (uncompressed) change chunk.
    #[serde(with = "serde_bytes_vec")]
    pub bytes: Vec<u8>,
    /// When it was committed (HLC ms).
    pub enqueued_ms: i64,
}

/// A remote change kept until its dependencies arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// The raw change chunk.
    #[serde(with = "serde_bytes_vec")]
    pub bytes: Vec<u8>,
}

/// The pull position of one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRecord {
    /// The opaque cursor the remote returned with the last applied page.
    pub cursor: String,
    /// Wall-clock ms of the last successful sync of this workspace (0: never).
    pub last_sync_ms: i64,
    /// Whether this workspace has finished its first (bootstrap) sync.
    pub bootstrapped: bool,
}

/// An outbox entry the remote rejected, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The rejected entry, whole.
    pub entry: OutboxEntry,
    /// Why the remote rejected it.
    pub reason: String,
    /// When (wall-clock ms).
    pub at_ms: i64,
}

mod serde_bytes_vec {
    //! `Vec<u8>` as one length-prefixed byte string (not a sequence of u8s).
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// The error type of a store transaction body.
pub type TxError = ConflictableTransactionError<StoreError>;

/// How durable a write is when the call that made it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every write is flushed to disk (fsync) before the call returns: it
    /// survives a killed process and a power cut. The default.
    #[default]
    Immediate,
    /// Writes reach sled's log buffers and are flushed in the background
    /// every `flush_every_ms`: much faster, but a crash can lose the last
    /// writes of that window. For bulk imports and benchmarks.
    Buffered {
        /// The background flush interval.
        flush_every_ms: u64,
    },
}

/// The sled database and its trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    docs: sled::Tree,
    chunks: sled::Tree,
    by_collection: sled::Tree,
    outbox: sled::Tree,
    outbox_index: sled::Tree,
    pending: sled::Tree,
    cursors: sled::Tree,
    dead_letters: sled::Tree,
    quarantine: sled::Tree,
    durability: Durability,
    /// The number of outbox entries: the `meta/outbox_len` value, mirrored
    /// in memory so [`Store::outbox_len`] needs no read (updated by the
    /// delta of every committed transaction).
    outbox_len: Arc<AtomicU64>,
    /// What opening had to repair (files left by an interrupted open).
    recovered: Arc<Vec<Recovery>>,
    /// The directory lock; the last field, so it is released after sled's
    /// handles above are dropped.
    lock: Arc<dir::DirLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.lock.path())
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// The trees of one transaction, by name.
pub struct StoreTx<'a> {
    t: &'a [TransactionalTree],
    /// Outbox entries added minus removed so far in this attempt.
    outbox_delta: Cell<i64>,
}

const N_TREES: usize = 10;

/// The page cache sled may fill for one store (a replica or a hub), in
/// bytes, unless set with `ReplicaBuilder::with_store_cache_bytes` or
/// `LocalHub::open_with_store_cache`. sled's own default is 1 GiB, which a
/// long-running replica fills with every page version it ever wrote (the RSS
/// of issue 14's soak grew without a plateau); the documents' own cache is
/// separate (`ReplicaBuilder::with_cache_bytes`). sled counts a page at its
/// size on disk: its heap is larger than this cap once the cache is full
/// (see docs/benchmarks.md, "Soak").
pub const STORE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

fn unab(e: UnabortableTransactionError) -> TxError {
    e.into()
}

fn abort(e: StoreError) -> TxError {
    ConflictableTransactionError::Abort(e)
}

impl StoreTx<'_> {
    fn docs(&self) -> &TransactionalTree {
        &self.t[0]
    }
    fn chunks(&self) -> &TransactionalTree {
        &self.t[1]
    }
    fn by_collection(&self) -> &TransactionalTree {
        &self.t[2]
    }
    fn outbox(&self) -> &TransactionalTree {
        &self.t[3]
    }
    fn outbox_index(&self) -> &TransactionalTree {
        &self.t[4]
    }
    fn pending(&self) -> &TransactionalTree {
        &self.t[5]
    }
    fn cursors(&self) -> &TransactionalTree {
        &self.t[6]
    }
    fn dead_letters(&self) -> &TransactionalTree {
        &self.t[7]
    }
    fn meta(&self) -> &TransactionalTree {
        &self.t[8]
    }
    fn quarantine_tree(&self) -> &TransactionalTree {
        &self.t[9]
    }

    /// Writes a document record.
    ///
    /// # Errors
    /// Storage failure.
    pub fn put_doc(&self, id: &DocId, rec: &DocRecord) -> Result<(), TxError> {
        let v = codec::encode(trees::DOCS, rec).map_err(abort)?;
        self.docs().insert(&keys::doc(id), v).map_err(unab)?;
        Ok(())
    }

    /// Indexes a document under its collection.
    ///
    /// # Errors
    /// Storage failure.
    pub fn index_collection(&self, collection: &Collection, id: &DocId) -> Result<(), TxError> {
        self.by_collection()
            .insert(keys::collection_entry(collection, id), &[] as &[u8])
            .map_err(unab)?;
        Ok(())
    }

    /// Writes a chunk at `seq`.
    ///
    /// # Errors
    /// Storage failure.
    pub fn put_chunk(&self, id: &DocId, seq: u64, chunk: &Chunk) -> Result<(), TxError> {
        let v = codec::encode(trees::CHUNKS, chunk).map_err(abort)?;
        self.chunks()
            .insert(&keys::chunk(id, seq), v)
            .map_err(unab)?;
        Ok(())
    }

    /// Writes a chunk already encoded with [`Store::encode_chunk`] at `seq`
    /// (encoding before the transaction keeps it out of a body sled may
    /// run more than once).
    ///
    /// # Errors
    /// Storage failure.
    pub fn put_chunk_encoded(&self, id: &DocId, seq: u64, encoded: &[u8]) -> Result<(), TxError> {
        self.chunks()
            .insert(&keys::chunk(id, seq), encoded)
            .map_err(unab)?;
        Ok(())
    }

    /// Removes the chunk at `seq`.
    ///
    /// # Errors
    /// Storage failure.
    pub fn remove_chunk(&self, id: &DocId, seq: u64) -> Result<(), TxError> {
        self.chunks().remove(&keys::chunk(id, seq)).map_err(unab)?;
        Ok(())
    }

    /// Appends an entry to the outbox (and its hash index).
    ///
    /// # Errors
    /// Storage failure.
    pub fn push_outbox(&self, entry: &OutboxEntry) -> Result<u64, TxError> {
        let seq = self
            .outbox()
            .generate_id()
            .map_err(|e| abort(StoreError::sled("generate_id")(e)))?;
        let v = codec::encode(trees::OUTBOX, entry).map_err(abort)?;
        self.outbox().insert(&keys::seq(seq), v).map_err(unab)?;
        self.outbox_index()
            .insert(&entry.hash.0, &keys::seq(seq))
            .map_err(unab)?;
        self.outbox_delta.set(self.outbox_delta.get() + 1);
        Ok(seq)
    }

    /// Removes the outbox entry of `hash`; returns it when it was there.
    ///
    /// # Errors
    /// Storage failure or a corrupt entry.
    pub fn take_outbox(&self, hash: &ChangeHash) -> Result<Option<OutboxEntry>, TxError> {
        let Some(seq) = self.outbox_index().remove(&hash.0).map_err(unab)? else {
            return Ok(None);
        };
        match self.outbox().remove(&seq).map_err(unab)? {
            Some(v) => {
                self.outbox_delta.set(self.outbox_delta.get() - 1);
                codec::decode(trees::OUTBOX, &seq, &v)
                    .map(Some)
                    .map_err(abort)
            }
            None => Ok(None),
        }
    }

    /// Stores a remote change that waits for its dependencies.
    ///
    /// # Errors
    /// Storage failure.
    pub fn put_pending(
        &self,
        id: &DocId,
        hash: &ChangeHash,
        p: &PendingChange,
    ) -> Result<(), TxError> {
        let v = codec::encode(trees::PENDING, p).map_err(abort)?;
        self.pending()
            .insert(&keys::pending(id, &hash.0)[..], v)
            .map_err(unab)?;
        Ok(())
    }

    /// Forgets a pending change (it was applied).
    ///
    /// # Errors
    /// Storage failure.
    pub fn remove_pending(&self, id: &DocId, hash: &ChangeHash) -> Result<(), TxError> {
        self.pending()
            .remove(&keys::pending(id, &hash.0)[..])
            .map_err(unab)?;
        Ok(())
    }

    /// Sets the cursor record of a workspace.
    ///
    /// # Errors
    /// Storage failure.
    pub fn put_cursor(&self, ws: &WorkspaceId, rec: &CursorRecord) -> Result<(), TxError> {
        let v = codec::encode(trees::CURSORS, rec).map_err(abort)?;
        self.cursors().insert(&keys::cursor(ws), v).map_err(unab)?;
        Ok(())
    }

    /// Records a workspace to pull (a never-synced cursor) unless it has a
    /// cursor already. Returns whether it was new.
    ///
    /// # Errors
    /// Storage failure.
    pub fn join_cursor(&self, ws: &WorkspaceId) -> Result<bool, TxError> {
        let key = keys::cursor(ws);
        if self.cursors().get(key).map_err(unab)?.is_some() {
            return Ok(false);
        }
        self.put_cursor(
            ws,
            &CursorRecord {
                cursor: String::new(),
                last_sync_ms: 0,
                bootstrapped: false,
            },
        )?;
        Ok(true)
    }

    /// Appends a dead letter.
    ///
    /// # Errors
    /// Storage failure.
    pub fn push_dead_letter(&self, d: &DeadLetter) -> Result<u64, TxError> {
        let seq = self
            .dead_letters()
            .generate_id()
            .map_err(|e| abort(StoreError::sled("generate_id")(e)))?;
        let v = codec::encode(trees::DEAD_LETTERS, d).map_err(abort)?;
        self.dead_letters()
            .insert(&keys::seq(seq), v)
            .map_err(unab)?;
        Ok(seq)
    }

    /// Records that this replica directory made local changes as `actor`
    /// (see [`Store::is_local_actor`]).
    ///
    /// # Errors
    /// Storage failure.
    pub fn record_local_actor(&self, actor: &[u8]) -> Result<(), TxError> {
        self.meta()
            .insert(keys::local_actor(actor), &[codec::FORMAT_V1])
            .map_err(unab)?;
        Ok(())
    }

    /// Adds `delta` to the stored outbox count, in the transaction.
    fn add_outbox_len(&self, delta: i64) -> Result<(), TxError> {
        let key = keys::META_OUTBOX_LEN;
        let current: u64 = match self.meta().get(key).map_err(unab)? {
            Some(v) => codec::decode(trees::META, key, &v).map_err(abort)?,
            None => {
                return Err(abort(StoreError::Corrupt {
                    tree: trees::META,
                    key: codec::hex(key),
                    reason: "the outbox count is missing".into(),
                }))
            }
        };
        let next = current.saturating_add_signed(delta);
        let v = codec::encode(trees::META, &next).map_err(abort)?;
        self.meta().insert(key, v).map_err(unab)?;
        Ok(())
    }

    fn tree(&self, name: &str) -> Option<&TransactionalTree> {
        Some(match name {
            trees::DOCS => self.docs(),
            trees::CHUNKS => self.chunks(),
            trees::BY_COLLECTION => self.by_collection(),
            trees::OUTBOX => self.outbox(),
            trees::OUTBOX_INDEX => self.outbox_index(),
            trees::PENDING => self.pending(),
            trees::CURSORS => self.cursors(),
            trees::DEAD_LETTERS => self.dead_letters(),
            trees::META => self.meta(),
            _ => return None,
        })
    }

    /// Moves the value at `key` of `tree` into the `quarantine` tree, whole,
    /// with the reason (nothing is deleted). Returns whether there was a value.
    /// An outbox entry's index entry is removed with it (the quarantined
    /// value keeps the change) and the outbox count follows.
    ///
    /// # Errors
    /// Storage failure; an unknown tree name.
    pub fn quarantine(
        &self,
        tree: &'static str,
        key: &[u8],
        reason: &str,
        at_ms: i64,
    ) -> Result<bool, TxError> {
        let t = self.tree(tree).ok_or_else(|| {
            abort(StoreError::Corrupt {
                tree,
                key: codec::hex(key),
                reason: "no such tree".into(),
            })
        })?;
        let Some(value) = t.remove(key).map_err(unab)? else {
            return Ok(false);
        };
        if tree == trees::OUTBOX {
            self.outbox_delta.set(self.outbox_delta.get() - 1);
            if let Ok(e) = codec::decode::<OutboxEntry>(tree, key, &value) {
                if self.outbox_index().get(e.hash.0).map_err(unab)?.as_deref() == Some(key) {
                    self.outbox_index().remove(&e.hash.0).map_err(unab)?;
                }
            }
        }
        let seq = self
            .quarantine_tree()
            .generate_id()
            .map_err(|e| abort(StoreError::sled("generate_id")(e)))?;
        let record = QuarantinedRecord {
            tree: tree.to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
            reason: reason.to_owned(),
            at_ms,
        };
        let v = codec::encode(trees::QUARANTINE, &record).map_err(abort)?;
        self.quarantine_tree()
            .insert(&keys::seq(seq), v)
            .map_err(unab)?;
        Ok(true)
    }

    /// Indexes an outbox entry's hash (repairs a missing index entry).
    ///
    /// # Errors
    /// Storage failure.
    pub fn index_outbox(&self, hash: &ChangeHash, seq_key: &[u8]) -> Result<(), TxError> {
        self.outbox_index().insert(&hash.0, seq_key).map_err(unab)?;
        Ok(())
    }
}

/// A value moved out of its tree by `supamerge doctor --repair` (tree
/// `quarantine`): kept whole, never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedRecord {
    /// The tree it was in.
    pub tree: String,
    /// Its key there.
    #[serde(with = "serde_bytes_vec")]
    pub key: Vec<u8>,
    /// Its value, byte for byte.
    #[serde(with = "serde_bytes_vec")]
    pub value: Vec<u8>,
    /// Why it was moved.
    pub reason: String,
    /// When (wall-clock ms).
    pub at_ms: i64,
}

impl Store {
    /// Opens (or creates) the store at `path`, crash-safely: the directory
    /// is locked and what an interrupted open can leave behind is repaired
    /// before sled reads it (see [`dir`]). sled's page cache is capped at
    /// `cache_bytes` ([`STORE_CACHE_BYTES`] unless the app sets another).
    ///
    /// # Errors
    /// [`StoreError::AlreadyOpen`] when this process has the directory open;
    /// [`StoreError::Locked`] when another process holds it;
    /// [`StoreError::DamagedConf`] / [`StoreError::DamagedSnapshot`] when a
    /// sled file is damaged beyond what a crash explains;
    /// [`StoreError::Sled`] when sled cannot open the directory (missing
    /// permissions, damaged files);
    /// [`StoreError::UnsupportedFormat`] when a newer supamerge wrote it.
    pub fn open(path: &Path, durability: Durability, cache_bytes: u64) -> Result<Self, StoreError> {
        let config = sled::Config::new().cache_capacity(cache_bytes);
        let config = match durability {
            Durability::Immediate => config.flush_every_ms(Some(500)),
            Durability::Buffered { flush_every_ms } => config.flush_every_ms(Some(flush_every_ms)),
        };
        let (db, lock, recovered) = dir::open_sled(path, config)?;
        let tree = |name: &'static str| db.open_tree(name).map_err(StoreError::sled("open_tree"));
        let mut store = Store {
            meta: tree(trees::META)?,
            docs: tree(trees::DOCS)?,
            chunks: tree(trees::CHUNKS)?,
            by_collection: tree(trees::BY_COLLECTION)?,
            outbox: tree(trees::OUTBOX)?,
            outbox_index: tree(trees::OUTBOX_INDEX)?,
            pending: tree(trees::PENDING)?,
            cursors: tree(trees::CURSORS)?,
            dead_letters: tree(trees::DEAD_LETTERS)?,
            quarantine: tree(trees::QUARANTINE)?,
            db,
            durability,
            outbox_len: Arc::new(AtomicU64::new(0)),
            recovered: Arc::new(recovered),
            lock: Arc::new(lock),
        };
        store.check_format()?;
        let n = store.load_outbox_len()?;
        store.outbox_len = Arc::new(AtomicU64::new(n));
        Ok(store)
    }

    /// Reads `meta/outbox_len`; a store written before the key existed (or
    /// whose value is damaged) is counted once and the key written.
    fn load_outbox_len(&self) -> Result<u64, StoreError> {
        let key = keys::META_OUTBOX_LEN;
        if let Some(v) = self
            .meta
            .get(key)
            .map_err(StoreError::sled("read outbox count"))?
        {
            match codec::decode::<u64>(trees::META, key, &v) {
                Ok(n) => return Ok(n),
                Err(e) => {
                    tracing::warn!(error = %e, "recounting the outbox: its stored count is damaged");
                }
            }
        }
        self.recount_outbox()
    }

    /// Counts the outbox entries (a full scan) and stores the count. For a
    /// tool holding the replica alone (`supamerge doctor`): a transaction
    /// running meanwhile would be counted or not.
    ///
    /// # Errors
    /// Storage failure.
    pub(crate) fn recount_outbox(&self) -> Result<u64, StoreError> {
        let n = self.outbox.len() as u64;
        let v = codec::encode(trees::META, &n)?;
        self.meta
            .insert(keys::META_OUTBOX_LEN, v)
            .map_err(StoreError::sled("write outbox count"))?;
        self.flush()?;
        self.outbox_len.store(n, Ordering::Release);
        Ok(n)
    }

    fn check_format(&self) -> Result<(), StoreError> {
        match self
            .meta
            .get(keys::META_FORMAT)
            .map_err(StoreError::sled("read format"))?
        {
            Some(v) if v.as_ref() == [codec::FORMAT_V1] => Ok(()),
            Some(v) => Err(StoreError::UnsupportedFormat {
                tree: trees::META,
                key: codec::hex(keys::META_FORMAT),
                found: v.first().copied().unwrap_or(0),
            }),
            None => {
                self.meta
                    .insert(keys::META_FORMAT, &[codec::FORMAT_V1])
                    .map_err(StoreError::sled("write format"))?;
                self.flush()
            }
        }
    }

    /// A tree by its name (see [`keys::trees`]), for tools that read every
    /// value raw (`supamerge doctor`).
    pub(crate) fn tree_by_name(&self, name: &str) -> Option<&sled::Tree> {
        Some(match name {
            trees::META => &self.meta,
            trees::DOCS => &self.docs,
            trees::CHUNKS => &self.chunks,
            trees::BY_COLLECTION => &self.by_collection,
            trees::OUTBOX => &self.outbox,
            trees::OUTBOX_INDEX => &self.outbox_index,
            trees::PENDING => &self.pending,
            trees::CURSORS => &self.cursors,
            trees::DEAD_LETTERS => &self.dead_letters,
            trees::QUARANTINE => &self.quarantine,
            _ => return None,
        })
    }

    /// What opening repaired (files left by an interrupted open), if anything.
    pub fn recovered(&self) -> &[Recovery] {
        &self.recovered
    }

    /// The directory the store lives in (canonical).
    pub fn path(&self) -> &Path {
        self.lock.path()
    }

    /// Runs `f` as one atomic transaction over every tree, then flushes when
    /// the durability is [`Durability::Immediate`].
    ///
    /// `f` may run more than once (sled retries on conflict): it must not have
    /// side effects outside the transaction.
    ///
    /// # Errors
    /// What `f` aborted with, or [`StoreError::Sled`].
    pub fn transact<R>(
        &self,
        op: &'static str,
        f: impl Fn(&StoreTx<'_>) -> Result<R, TxError>,
    ) -> Result<R, StoreError> {
        let trees: [&sled::Tree; N_TREES] = [
            &self.docs,
            &self.chunks,
            &self.by_collection,
            &self.outbox,
            &self.outbox_index,
            &self.pending,
            &self.cursors,
            &self.dead_letters,
            &self.meta,
            &self.quarantine,
        ];
        let (result, delta) = trees[..]
            .transaction(|t| {
                let tx = StoreTx {
                    t,
                    outbox_delta: Cell::new(0),
                };
                let r = f(&tx)?;
                let delta = tx.outbox_delta.get();
                if delta != 0 {
                    tx.add_outbox_len(delta)?;
                }
                Ok((r, delta))
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(source) => StoreError::Sled { op, source },
            })?;
        if delta > 0 {
            self.outbox_len
                .fetch_add(delta.unsigned_abs(), Ordering::AcqRel);
        } else if delta < 0 {
            self.outbox_len
                .fetch_sub(delta.unsigned_abs(), Ordering::AcqRel);
        }
        if self.durability == Durability::Immediate {
            self.flush()?;
        }
        Ok(result)
    }

    /// A chunk of `kind` holding `bytes`, encoded as [`StoreTx::put_chunk`]
    /// would store it (the same bytes as encoding a [`Chunk`]), without
    /// copying `bytes` into a `Chunk` first.
    ///
    /// # Errors
    /// [`StoreError::Encode`] (not expected for chunks).
    pub fn encode_chunk(kind: ChunkKind, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        /// [`Chunk`] with borrowed bytes: the same fields, serialized alike.
        #[derive(Serialize)]
        struct ChunkRef<'a> {
            kind: ChunkKind,
            #[serde(with = "serde_bytes_vec")]
            bytes: &'a [u8],
        }
        codec::encode(trees::CHUNKS, &ChunkRef { kind, bytes })
    }

    /// Whether no remote change waits for its dependencies (the `pending`
    /// tree is empty; a read of its first key, not a count).
    pub fn pending_is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Flushes everything written so far to disk.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the flush fails.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(StoreError::sled("flush"))
    }

    /// Whether this replica directory ever committed a local change as
    /// `actor` (actors are fresh at every open, so one directory has many).
    ///
    /// # Errors
    /// Storage failure.
    pub fn is_local_actor(&self, actor: &[u8]) -> Result<bool, StoreError> {
        self.meta
            .contains_key(keys::local_actor(actor))
            .map_err(StoreError::sled("read local actor"))
    }

    /// Reads a document record.
    ///
    /// # Errors
    /// Storage failure or a corrupt record.
    pub fn get_doc(&self, id: &DocId) -> Result<Option<DocRecord>, StoreError> {
        let key = keys::doc(id);
        match self.docs.get(key).map_err(StoreError::sled("read doc"))? {
            Some(v) => codec::decode(trees::DOCS, &key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every document id with its record, in id order.
    pub fn docs(&self) -> impl Iterator<Item = Result<(DocId, DocRecord), StoreError>> + '_ {
        self.docs.iter().map(|r| {
            let (k, v) = r.map_err(StoreError::sled("scan docs"))?;
            let id = DocId::from_slice(&k).map_err(|e| StoreError::Corrupt {
                tree: trees::DOCS,
                key: codec::hex(&k),
                reason: e.to_string(),
            })?;
            Ok((id, codec::decode(trees::DOCS, &k, &v)?))
        })
    }

    /// The number of documents.
    pub fn doc_count(&self) -> usize {
        self.docs.len()
    }

    /// The chunks of a document, in write order, with their sequence numbers.
    ///
    /// # Errors
    /// Storage failure or a corrupt chunk.
    pub fn chunks(&self, id: &DocId) -> Result<Vec<(u64, Chunk)>, StoreError> {
        self.chunks
            .scan_prefix(keys::doc(id))
            .map(|r| {
                let (k, v) = r.map_err(StoreError::sled("scan chunks"))?;
                let seq = keys::chunk_seq(&k).ok_or_else(|| StoreError::Corrupt {
                    tree: trees::CHUNKS,
                    key: codec::hex(&k),
                    reason: "malformed chunk key".into(),
                })?;
                Ok((seq, codec::decode(trees::CHUNKS, &k, &v)?))
            })
            .collect()
    }

    /// The ids of a collection (deleted ones included; callers filter).
    pub fn collection_ids(
        &self,
        collection: &Collection,
    ) -> impl Iterator<Item = Result<DocId, StoreError>> + '_ {
        let prefix = keys::collection_prefix(collection);
        let plen = prefix.len();
        self.by_collection.scan_prefix(prefix).map(move |r| {
            let (k, _) = r.map_err(StoreError::sled("scan collection"))?;
            DocId::from_slice(&k[plen..]).map_err(|e| StoreError::Corrupt {
                tree: trees::BY_COLLECTION,
                key: codec::hex(&k),
                reason: e.to_string(),
            })
        })
    }

    /// The oldest outbox entries, at most `max_count` of them and at most
    /// `max_bytes` of change bytes (but always at least one entry when the
    /// outbox is not empty, so one large change cannot block the queue).
    ///
    /// # Errors
    /// Storage failure or a corrupt entry.
    pub fn outbox_peek(
        &self,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for r in self.outbox.iter() {
            if out.len() >= max_count {
                break;
            }
            let (k, v) = r.map_err(StoreError::sled("scan outbox"))?;
            let e: OutboxEntry = codec::decode(trees::OUTBOX, &k, &v)?;
            if !out.is_empty() && bytes + e.bytes.len() > max_bytes {
                break;
            }
            bytes += e.bytes.len();
            out.push(e);
        }
        Ok(out)
    }

    /// The number of outbox entries (kept in `meta/outbox_len` by every
    /// transaction that adds or removes entries; no scan).
    pub fn outbox_len(&self) -> usize {
        usize::try_from(self.outbox_len.load(Ordering::Acquire)).unwrap_or(usize::MAX)
    }

    /// The pending (early-arrival) changes of a document.
    ///
    /// # Errors
    /// Storage failure or a corrupt entry.
    pub fn pending_for(&self, id: &DocId) -> Result<Vec<(ChangeHash, PendingChange)>, StoreError> {
        self.pending
            .scan_prefix(keys::doc(id))
            .map(|r| {
                let (k, v) = r.map_err(StoreError::sled("scan pending"))?;
                let hash: [u8; 32] =
                    k.get(16..48)
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| StoreError::Corrupt {
                            tree: trees::PENDING,
                            key: codec::hex(&k),
                            reason: "malformed pending key".into(),
                        })?;
                Ok((ChangeHash(hash), codec::decode(trees::PENDING, &k, &v)?))
            })
            .collect()
    }

    /// The number of pending changes across all documents.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The cursor record of a workspace.
    ///
    /// # Errors
    /// Storage failure or a corrupt record.
    pub fn cursor(&self, ws: &WorkspaceId) -> Result<Option<CursorRecord>, StoreError> {
        let key = keys::cursor(ws);
        match self
            .cursors
            .get(key)
            .map_err(StoreError::sled("read cursor"))?
        {
            Some(v) => codec::decode(trees::CURSORS, &key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every workspace cursor.
    ///
    /// # Errors
    /// Storage failure or a corrupt record.
    pub fn cursors(&self) -> Result<Vec<(WorkspaceId, CursorRecord)>, StoreError> {
        self.cursors
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(StoreError::sled("scan cursors"))?;
                let ws = WorkspaceId::from_slice(&k).map_err(|e| StoreError::Corrupt {
                    tree: trees::CURSORS,
                    key: codec::hex(&k),
                    reason: e.to_string(),
                })?;
                Ok((ws, codec::decode(trees::CURSORS, &k, &v)?))
            })
            .collect()
    }

    /// Every dead letter, oldest first.
    ///
    /// # Errors
    /// Storage failure or a corrupt record.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead_letters
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(StoreError::sled("scan dead letters"))?;
                codec::decode(trees::DEAD_LETTERS, &k, &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_chunk_is_what_put_chunk_stores() {
        for kind in [ChunkKind::Incremental, ChunkKind::Snapshot] {
            let bytes: Vec<u8> = (0..=255u8).cycle().take(1_000).collect();
            let chunk = Chunk {
                kind,
                bytes: bytes.clone(),
            };
            let whole = codec::encode(trees::CHUNKS, &chunk).expect("encode");
            assert_eq!(Store::encode_chunk(kind, &bytes).expect("encode"), whole);
            let back: Chunk = codec::decode(trees::CHUNKS, b"k", &whole).expect("decode");
            assert_eq!(back, chunk);
        }
    }
}
