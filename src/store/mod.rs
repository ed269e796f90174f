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
pub mod keys;

use std::path::Path;

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

use crate::id::{Collection, DocId, WorkspaceId};
use keys::trees;

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
    /// Another process (or another open handle in this process) holds the
    /// replica directory: sled allows one opener at a time.
    #[error(
        "the replica at {path} is in use by another process; close it (or stop its sync) and retry"
    )]
    Locked {
        /// The replica directory.
        path: std::path::PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
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

/// How long [`Store::open`] waits for a held directory lock before it
/// reports [`StoreError::Locked`].
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether sled refused to open because the directory's lock file is held.
///
/// sled 0.34 reports this as an `Io` error of kind `Other` whose message starts
/// with "could not acquire lock" (`Config::open_file`); there is no dedicated
/// variant, so the message is the only signal.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::Other
            && io.to_string().contains("could not acquire lock"))
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
    durability: Durability,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// The trees of one transaction, by name.
pub struct StoreTx<'a> {
    t: &'a [TransactionalTree],
}

const N_TREES: usize = 9;

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
            Some(v) => codec::decode(trees::OUTBOX, &seq, &v)
                .map(Some)
                .map_err(abort),
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
}

impl Store {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process (or a live handle in this
    /// one) still holds the directory after [`LOCK_WAIT`];
    /// [`StoreError::Sled`] when sled cannot open the directory (missing
    /// permissions, damaged files);
    /// [`StoreError::UnsupportedFormat`] when a newer supamerge wrote it.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let mut config = sled::Config::new().path(path);
        config = match durability {
            Durability::Immediate => config.flush_every_ms(Some(500)),
            Durability::Buffered { flush_every_ms } => config.flush_every_ms(Some(flush_every_ms)),
        };
        // sled releases its directory lock from background threads a moment
        // after the last handle is dropped (pending log writes hold the
        // file), so a reopen in the same process can briefly see the lock.
        // Retry for a bounded time before reporting `Locked`.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(source) if is_lock_error(&source) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked {
                            path: path.to_path_buf(),
                            source,
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(source) => return Err(StoreError::Sled { op: "open", source }),
            }
        };
        let tree = |name: &'static str| db.open_tree(name).map_err(StoreError::sled("open_tree"));
        let store = Store {
            meta: tree(trees::META)?,
            docs: tree(trees::DOCS)?,
            chunks: tree(trees::CHUNKS)?,
            by_collection: tree(trees::BY_COLLECTION)?,
            outbox: tree(trees::OUTBOX)?,
            outbox_index: tree(trees::OUTBOX_INDEX)?,
            pending: tree(trees::PENDING)?,
            cursors: tree(trees::CURSORS)?,
            dead_letters: tree(trees::DEAD_LETTERS)?,
            db,
            durability,
        };
        store.check_format()?;
        Ok(store)
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
        ];
        let result = trees[..]
            .transaction(|t| f(&StoreTx { t }))
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(source) => StoreError::Sled { op, source },
            })?;
        if self.durability == Durability::Immediate {
            self.flush()?;
        }
        Ok(result)
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

    /// The number of outbox entries.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
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
