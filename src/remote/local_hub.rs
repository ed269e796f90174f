//! The embedded hub: a sled-backed [`Remote`] with the same semantics as the
//! Supabase SQL functions.
//!
//! Many replicas in one process (tests, the demo, apps that keep several
//! replicas) share one `LocalHub` by cloning it. Per workspace it keeps a
//! change log with a gap-free sequence: pushes are serialised by a lock and
//! each batch is committed in one sled transaction while the lock is held, so
//! a reader never sees seq n+1 before seq n. Deduplication is by
//! (workspace, document, hash); the hash is recomputed from the bytes. A
//! document's changes are filed under one collection: its first change must
//! name it in `_meta.collection`, and a change pushed to another collection
//! than the one the hub holds the document under is rejected
//! ([`crate::entity::collection_problem`], the same rule as the SQL backend).
//!
//! A push is flushed to disk before it is answered (the client deletes its
//! outbox entries on the answer).
//!
//! Trees: `changes` (ws ‖ seq BE → change), `dedup` (ws ‖ doc ‖ hash → seq),
//! `counters` (ws → last seq), `docs` (ws ‖ doc → collection, format 2),
//! `meta` (`format` → the directory's format), `snapshots` (ws ‖ doc → snapshot),
//! `snapshot_digests` (ws ‖ doc → the [`SnapshotDigest`] of the changes the
//! snapshot replaces, computed from the log when it was stored; written in
//! the same transaction as the snapshot).
//!
//! The change records and the directory's format are in `hub_records.rs`
//! (`docs/storage.md`, "LocalHub").
//!
//! Snapshots are limited to [`MAX_SNAPSHOT_BYTES`] and may not claim to cover
//! a position beyond the end of the log, as in SQL.
//!
//! Compaction ([`LocalHub::prune`], as `supamerge_prune` in SQL): changes
//! folded into their document's snapshot leave `changes`; their `dedup`
//! entries stay (deduplication and snapshot digests still count them), the
//! document's collection (format 1; format 2 keeps it in `docs`) moves to
//! `pruned_docs` (ws ‖ doc → collection) and
//! the workspace's horizon, the highest pruned seq, to `horizons` (ws →
//! seq). A log pull whose cursor is behind the horizon answers
//! [`RemoteError::CursorPruned`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::hub_live::{HubLive, LocalLive};
use super::hub_records::{self, HubFormat};
use super::{Remote, RemoteError};
use crate::id::{Collection, DocId, WorkspaceId};
use crate::protocol::chunk;
use crate::protocol::wire::{
    ChangeEnvelope, Cursor, PullPage, PullRequest, PulledChange, PushOutcome, PushRequest,
    PushResponse, SnapshotDigest, SnapshotOutcome, SnapshotPage, SnapshotQuery, SnapshotRecord,
    SnapshotUpload, MAX_PULL_LIMIT, MAX_PUSH_BYTES, MAX_PUSH_COUNT, MAX_SNAPSHOT_BYTES,
    SNAPSHOT_PAGE_VERSION, WIRE_VERSION,
};
use crate::store::{codec, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HubSnapshot {
    collection: Collection,
    #[serde(with = "crate::hash::bytes_vec")]
    heads: Vec<ChangeHash>,
    covers: u64,
    bytes: Vec<u8>,
}

/// The embedded hub. Cheap to clone; clones share the same database.
#[derive(Clone)]
pub struct LocalHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    db: sled::Db,
    /// The directory's record format (`hub_records`).
    format: HubFormat,
    changes: sled::Tree,
    /// The collection of each document (format 2).
    docs: sled::Tree,
    dedup: sled::Tree,
    counters: sled::Tree,
    snapshots: sled::Tree,
    snapshot_digests: sled::Tree,
    /// Compaction: the collection of documents with pruned changes.
    pruned_docs: sled::Tree,
    /// Compaction: each workspace's horizon (highest pruned seq).
    horizons: sled::Tree,
    /// Serialises pushes: the gap-free sequence.
    push_lock: Mutex<()>,
    /// The workspaces' channels: pushes nudge their subscriptions.
    live: Arc<LocalLive>,
    /// The directory lock (none for a temporary hub); the last field, so it
    /// is released after sled's handles above.
    _dir_lock: Option<crate::store::dir::DirLock>,
}

impl std::fmt::Debug for LocalHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHub").finish_non_exhaustive()
    }
}

fn sled_err(op: &'static str) -> impl Fn(sled::Error) -> RemoteError {
    move |source| RemoteError::Storage(StoreError::Sled { op, source })
}

/// Parses a hub cursor ("" = 0).
fn parse_cursor(c: &Cursor) -> Result<u64, RemoteError> {
    if c.is_start() {
        return Ok(0);
    }
    c.0.parse().map_err(|_| RemoteError::BadRequest {
        code: "invalid_cursor".into(),
        message: format!("cursor {:?} was not issued by this hub", c.0),
    })
}

fn change_key(ws: &WorkspaceId, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&ws.to_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn dedup_key(ws: &WorkspaceId, doc: &DocId, hash: &ChangeHash) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(&ws.to_bytes());
    k.extend_from_slice(&doc.to_bytes());
    k.extend_from_slice(&hash.0);
    k
}

fn snapshot_key(ws: &WorkspaceId, doc: &DocId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&ws.to_bytes());
    k[16..].copy_from_slice(&doc.to_bytes());
    k
}

impl LocalHub {
    /// Opens (or creates) a hub stored in `path`, crash-safely like a
    /// replica (see `docs/storage.md`, "Crash safety").
    ///
    /// # Errors
    /// [`RemoteError::Storage`] when sled cannot open it, or another process
    /// (`Locked`) or this one (`AlreadyOpen`: clone the hub) holds it, or a
    /// newer supamerge wrote it (`UnsupportedHubFormat`, nothing changed).
    ///
    /// A new directory is written in the newest record format; an existing
    /// one keeps its own (`docs/storage.md`, "LocalHub").
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RemoteError> {
        Self::open_format(path.as_ref(), HubFormat::NEWEST)
    }

    /// [`LocalHub::open`] with sled's page cache capped at `cache_bytes`
    /// instead of the default `STORE_CACHE_BYTES` (16 MiB). The hub's memory grows with its log whatever the cap
    /// (sled keeps a record of every page, in memory or not); the cap bounds
    /// the pages it keeps loaded (docs/benchmarks.md, "Soak").
    ///
    /// # Errors
    /// As [`LocalHub::open`].
    pub fn open_with_store_cache(
        path: impl AsRef<Path>,
        cache_bytes: u64,
    ) -> Result<Self, RemoteError> {
        Self::open_format_with_cache(path.as_ref(), HubFormat::NEWEST, cache_bytes)
    }

    /// Opens a hub directory, creating it in `new` if it is new (an
    /// existing one keeps its format).
    pub(crate) fn open_format(path: &Path, new: HubFormat) -> Result<Self, RemoteError> {
        Self::open_format_with_cache(path, new, crate::store::STORE_CACHE_BYTES)
    }

    fn open_format_with_cache(
        path: &Path,
        new: HubFormat,
        cache_bytes: u64,
    ) -> Result<Self, RemoteError> {
        let config = sled::Config::new()
            .flush_every_ms(Some(200))
            .cache_capacity(cache_bytes);
        let (db, lock, _) = crate::store::dir::open_sled(path, config)?;
        Self::from_db(db, Some(lock), new)
    }

    /// A hub in a fresh temporary directory (removed when the process exits
    /// normally is not guaranteed; prefer [`LocalHub::open`] in apps).
    ///
    /// # Errors
    /// [`RemoteError::Storage`].
    pub fn temporary() -> Result<Self, RemoteError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(sled_err("open hub"))?;
        Self::from_db(db, None, HubFormat::NEWEST)
    }

    fn from_db(
        db: sled::Db,
        dir_lock: Option<crate::store::dir::DirLock>,
        new: HubFormat,
    ) -> Result<Self, RemoteError> {
        let t = |n: &str| db.open_tree(n).map_err(sled_err("open hub tree"));
        let changes = t("changes")?;
        let format = hub_records::open_format(&t("meta")?, &changes, new)?;
        Ok(Self {
            inner: Arc::new(HubInner {
                format,
                changes,
                docs: t("docs")?,
                dedup: t("dedup")?,
                counters: t("counters")?,
                snapshots: t("snapshots")?,
                snapshot_digests: t("snapshot_digests")?,
                pruned_docs: t("pruned_docs")?,
                horizons: t("horizons")?,
                db,
                push_lock: Mutex::new(()),
                live: Arc::new(LocalLive::default()),
                _dir_lock: dir_lock,
            }),
        })
    }

    /// Live updates of this hub, in process: every push that stores changes
    /// nudges the workspace's subscriptions once it is durable; presence is
    /// shared by the hub's clients. Each call is a new client with its own
    /// presence key.
    pub fn live(&self) -> HubLive {
        HubLive::new(self.inner.live.clone(), None)
    }

    /// Like [`LocalHub::live`], with a chosen presence key (a user id, a
    /// device name).
    pub fn live_with_presence_key(&self, key: impl Into<String>) -> HubLive {
        HubLive::new(self.inner.live.clone(), Some(key.into()))
    }

    /// The number of changes stored for a workspace.
    pub fn change_count(&self, ws: &WorkspaceId) -> usize {
        self.inner.changes.scan_prefix(ws.to_bytes()).count()
    }

    /// How many times each (doc, hash) is stored in a workspace: for tests
    /// proving "stored exactly once".
    ///
    /// # Errors
    /// Storage or decoding errors.
    pub fn stored_hashes(&self, ws: &WorkspaceId) -> Result<Vec<(DocId, ChangeHash)>, RemoteError> {
        self.inner
            .changes
            .scan_prefix(ws.to_bytes())
            .map(|r| {
                let (k, v) = r.map_err(sled_err("scan"))?;
                let c = hub_records::decode_change(&k, &v)?;
                Ok((c.doc_id, c.hash(&k)?))
            })
            .collect()
    }

    /// The collection the hub holds a document under: its `docs` entry
    /// (format 2), else that of any of its stored changes (format 1: they
    /// all agree); `None` when it stores none.
    fn stored_collection(
        &self,
        ws: &WorkspaceId,
        doc: &DocId,
    ) -> Result<Option<Collection>, RemoteError> {
        if let Some(c) = self.pruned_collection(ws, doc)? {
            return Ok(Some(c));
        }
        let dk = snapshot_key(ws, doc);
        if let Some(v) = self.inner.docs.get(dk).map_err(sled_err("read hub docs"))? {
            return Ok(Some(hub_records::decode_collection(&dk, &v)?));
        }
        let mut prefix = Vec::with_capacity(32);
        prefix.extend_from_slice(&ws.to_bytes());
        prefix.extend_from_slice(&doc.to_bytes());
        // Format 1: the collection of the first of its stored changes that
        // names one (format-2 records leave it to `docs`).
        for entry in self.inner.dedup.scan_prefix(&prefix) {
            let (k, seq) = entry.map_err(sled_err("read dedup"))?;
            let seq = <[u8; 8]>::try_from(seq.as_ref()).map_err(|_| {
                RemoteError::Storage(StoreError::Corrupt {
                    tree: "hub dedup",
                    key: codec::hex(&k),
                    reason: format!("a sequence number of {} bytes", seq.len()),
                })
            })?;
            let key = change_key(ws, u64::from_be_bytes(seq));
            let Some(v) = self
                .inner
                .changes
                .get(key)
                .map_err(sled_err("read change"))?
            else {
                continue;
            };
            if let Some(c) = hub_records::decode_change(&key, &v)?.collection {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn push_sync(&self, req: PushRequest) -> Result<PushResponse, RemoteError> {
        if req.changes.len() > MAX_PUSH_COUNT
            || req.changes.iter().map(|c| c.bytes.len()).sum::<usize>() > MAX_PUSH_BYTES
        {
            return Err(RemoteError::TooLarge {
                message: format!(
                    "batch of {} changes exceeds the hub's limits",
                    req.changes.len()
                ),
            });
        }
        let ws = req.workspace;
        let _guard = self
            .inner
            .push_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut last = self.last_seq(&ws)?;
        let mut results = Vec::with_capacity(req.changes.len());
        let mut writes: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
        // Format 2: the `docs` entries of documents new to the hub.
        let mut new_docs: Vec<([u8; 32], Vec<u8>)> = Vec::new();
        let mut docs_checked = std::collections::HashSet::new();
        let mut batch_seen = std::collections::HashSet::new();
        // The collection each document of the batch is held under.
        let mut held: std::collections::HashMap<DocId, Option<Collection>> =
            std::collections::HashMap::new();
        for env in &req.changes {
            if let Err(e) = chunk::verify(&env.bytes, &env.hash) {
                results.push(PushOutcome::Rejected {
                    reason: e.to_string(),
                });
                continue;
            }
            let stored = match held.get(&env.doc_id) {
                Some(c) => c.clone(),
                None => {
                    let c = self.stored_collection(&ws, &env.doc_id)?;
                    held.insert(env.doc_id, c.clone());
                    c
                }
            };
            if let Some(reason) = crate::entity::collection_problem(
                &env.doc_id,
                env.collection.as_str(),
                &env.bytes,
                stored.as_ref().map(Collection::as_str),
            ) {
                results.push(PushOutcome::Rejected { reason });
                continue;
            }
            let dk = dedup_key(&ws, &env.doc_id, &env.hash);
            if !batch_seen.insert(dk.clone())
                || self
                    .inner
                    .dedup
                    .contains_key(&dk)
                    .map_err(sled_err("read dedup"))?
            {
                results.push(PushOutcome::AlreadyPresent);
                continue;
            }
            last += 1;
            let value = hub_records::encode_change(
                self.inner.format,
                env.doc_id,
                &env.collection,
                env.hash,
                &env.bytes,
            )?;
            writes.push((last, dk, value));
            if self.inner.format == HubFormat::V2 && docs_checked.insert(env.doc_id) {
                // Its first change here, or the first since a format-1
                // build wrote to this directory: name its collection.
                let k = snapshot_key(&ws, &env.doc_id);
                if !self
                    .inner
                    .docs
                    .contains_key(k)
                    .map_err(sled_err("read hub docs"))?
                {
                    let held_under = stored.as_ref().unwrap_or(&env.collection);
                    new_docs.push((k, hub_records::encode_collection(held_under)));
                }
            }
            held.insert(env.doc_id, Some(env.collection.clone()));
            results.push(PushOutcome::Stored {
                seq: i64::try_from(last).unwrap_or(i64::MAX),
            });
        }
        let counter = codec::encode("hub counters", &last)?;
        (
            &self.inner.changes,
            &self.inner.dedup,
            &self.inner.counters,
            &self.inner.docs,
        )
            .transaction(|(changes, dedup, counters, docs)| {
                for (seq, dk, value) in &writes {
                    changes.insert(&change_key(&ws, *seq)[..], value.clone())?;
                    dedup.insert(dk.clone(), &seq.to_be_bytes()[..])?;
                }
                for (k, v) in &new_docs {
                    docs.insert(&k[..], v.clone())?;
                }
                counters.insert(&ws.to_bytes()[..], counter.clone())?;
                // Nothing aborts this transaction: its only failures are
                // sled's (conflicts are retried by sled itself).
                Ok::<_, sled::transaction::ConflictableTransactionError<std::convert::Infallible>>(
                    (),
                )
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(s) => sled_err("push")(s),
                sled::transaction::TransactionError::Abort(never) => match never {},
            })?;
        // Durable before acknowledged: the client deletes its outbox entries
        // on this answer, so a crash after it must not lose the changes.
        if let (Some(first), Some(last)) = (writes.first(), writes.last()) {
            self.flush()?;
            let docs: Vec<DocId> = req
                .changes
                .iter()
                .zip(&results)
                .filter(|(_, r)| matches!(r, PushOutcome::Stored { .. }))
                .map(|(c, _)| c.doc_id)
                .collect();
            self.inner.live.announce(ws, first.0, last.0, &docs);
        }
        Ok(PushResponse {
            v: WIRE_VERSION,
            results,
        })
    }

    fn pull_sync(&self, req: PullRequest) -> Result<PullPage, RemoteError> {
        let after = parse_cursor(&req.cursor)?;
        let limit = req.limit.clamp(1, MAX_PULL_LIMIT) as usize;
        let ws = req.workspace;
        let horizon = self.behind_horizon(&ws, after, req.skip_snapshotted)?;
        let start = change_key(&ws, after.saturating_add(1));
        let end = change_key(&ws, u64::MAX);
        let mut changes = Vec::new();
        let mut last = after;
        let mut has_more = false;
        // Format 2 keeps collections per document: look each up once.
        let mut collections: std::collections::HashMap<DocId, Collection> =
            std::collections::HashMap::new();
        // What each document's snapshot covers, read (and its whole record
        // decoded) once per page, not once per change.
        let mut covered: std::collections::HashMap<DocId, Option<u64>> =
            std::collections::HashMap::new();
        for r in self.inner.changes.range(start..=end) {
            let (k, v) = r.map_err(sled_err("scan changes"))?;
            if changes.len() >= limit {
                has_more = true;
                break;
            }
            let seq =
                u64::from_be_bytes(k[16..24].try_into().map_err(|_| RemoteError::Protocol {
                    reason: "malformed hub key".into(),
                })?);
            let c = hub_records::decode_change(&k, &v)?;
            last = seq;
            if req.skip_snapshotted {
                let covers = match covered.get(&c.doc_id) {
                    Some(covers) => *covers,
                    None => {
                        let covers = self.snapshot(&ws, &c.doc_id)?.map(|s| s.covers);
                        covered.insert(c.doc_id, covers);
                        covers
                    }
                };
                if covers.is_some_and(|covers| covers >= seq) {
                    continue;
                }
            }
            let hash = c.hash(&k)?;
            let collection = match c.collection {
                Some(coll) => coll,
                None => match collections.get(&c.doc_id) {
                    Some(coll) => coll.clone(),
                    None => {
                        let coll = self.stored_collection(&ws, &c.doc_id)?.ok_or_else(|| {
                            RemoteError::Storage(StoreError::Corrupt {
                                tree: "hub docs",
                                key: codec::hex(&snapshot_key(&ws, &c.doc_id)),
                                reason: "a stored change of a document with no collection".into(),
                            })
                        })?;
                        collections.insert(c.doc_id, coll.clone());
                        coll
                    }
                },
            };
            changes.push(PulledChange {
                seq: i64::try_from(seq).unwrap_or(i64::MAX),
                change: ChangeEnvelope {
                    doc_id: c.doc_id,
                    collection,
                    hash,
                    bytes: c.bytes,
                },
            });
        }
        if !has_more {
            // Pruned changes are held by snapshots: the end of the log is at
            // least the horizon even when every change up to it is gone.
            last = last.max(horizon);
        }
        let next_cursor = if last == 0 {
            req.cursor.clone()
        } else {
            Cursor(last.to_string())
        };
        Ok(PullPage {
            v: WIRE_VERSION,
            changes,
            next_cursor,
            has_more,
        })
    }

    fn snapshot(&self, ws: &WorkspaceId, doc: &DocId) -> Result<Option<HubSnapshot>, RemoteError> {
        let k = snapshot_key(ws, doc);
        match self
            .inner
            .snapshots
            .get(k)
            .map_err(sled_err("read snapshot"))?
        {
            Some(v) => Ok(Some(codec::decode("hub snapshots", &k, &v)?)),
            None => Ok(None),
        }
    }

    fn put_snapshot_sync(&self, s: SnapshotUpload) -> Result<SnapshotOutcome, RemoteError> {
        let covers = parse_cursor(&s.covers)?;
        if s.bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(RemoteError::TooLarge {
                message: format!(
                    "snapshot of {} bytes exceeds the limit of {MAX_SNAPSHOT_BYTES} bytes",
                    s.bytes.len()
                ),
            });
        }
        let _guard = self
            .inner
            .push_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let last = self.last_seq(&s.workspace)?;
        if covers > last {
            return Err(RemoteError::BadRequest {
                code: "invalid_covers".into(),
                message: format!(
                    "snapshot claims to cover position {covers}, beyond the end of the log ({last})"
                ),
            });
        }
        if let Some(old) = self.snapshot(&s.workspace, &s.doc_id)? {
            if old.covers >= covers {
                return Ok(SnapshotOutcome::Superseded);
            }
        }
        let digest = self.log_digest(&s.workspace, &s.doc_id, covers)?;
        let key = snapshot_key(&s.workspace, &s.doc_id);
        let v = codec::encode(
            "hub snapshots",
            &HubSnapshot {
                collection: s.collection,
                heads: s.heads,
                covers,
                bytes: s.bytes,
            },
        )?;
        let d = codec::encode("hub snapshot digests", &digest)?;
        (&self.inner.snapshots, &self.inner.snapshot_digests)
            .transaction(|(snapshots, digests)| {
                snapshots.insert(&key[..], v.clone())?;
                digests.insert(&key[..], d.clone())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(s) => sled_err("write snapshot")(s),
                sled::transaction::TransactionError::Abort(()) => RemoteError::Server {
                    status: 0,
                    message: "hub transaction aborted".into(),
                },
            })?;
        self.flush()?;
        Ok(SnapshotOutcome::Stored)
    }

    /// The last sequence number of a workspace's log (0 when empty).
    fn last_seq(&self, ws: &WorkspaceId) -> Result<u64, RemoteError> {
        match self
            .inner
            .counters
            .get(ws.to_bytes())
            .map_err(sled_err("read counter"))?
        {
            Some(v) => Ok(codec::decode::<u64>("hub counters", &ws.to_bytes(), &v)?),
            None => Ok(0),
        }
    }

    /// The digest of the changes of `doc` at or before `covers`: what a pull
    /// with `skip_snapshotted` leaves out for it (the SQL computes the same).
    fn log_digest(
        &self,
        ws: &WorkspaceId,
        doc: &DocId,
        covers: u64,
    ) -> Result<SnapshotDigest, RemoteError> {
        let mut prefix = Vec::with_capacity(32);
        prefix.extend_from_slice(&ws.to_bytes());
        prefix.extend_from_slice(&doc.to_bytes());
        let mut hashes = Vec::new();
        for r in self.inner.dedup.scan_prefix(&prefix) {
            let (k, v) = r.map_err(sled_err("scan dedup"))?;
            let seq = <[u8; 8]>::try_from(&v[..])
                .map(u64::from_be_bytes)
                .map_err(|_| RemoteError::Protocol {
                    reason: "malformed hub dedup entry".into(),
                })?;
            let hash = <[u8; 32]>::try_from(&k[32..]).map_err(|_| RemoteError::Protocol {
                reason: "malformed hub dedup key".into(),
            })?;
            if seq <= covers {
                hashes.push(ChangeHash(hash));
            }
        }
        Ok(SnapshotDigest::of_hashes(hashes))
    }

    fn get_snapshots_sync(&self, q: SnapshotQuery) -> Result<SnapshotPage, RemoteError> {
        let limit = q.limit.clamp(1, 1000) as usize;
        let start = match q.after {
            Some(d) => {
                let mut k = snapshot_key(&q.workspace, &d).to_vec();
                k.push(0);
                k
            }
            None => q.workspace.to_bytes().to_vec(),
        };
        let mut end = q.workspace.to_bytes().to_vec();
        end.extend_from_slice(&[0xff; 17]);
        let mut snapshots = Vec::new();
        let mut has_more = false;
        for r in self.inner.snapshots.range(start..end) {
            let (k, v) = r.map_err(sled_err("scan snapshots"))?;
            if snapshots.len() >= limit {
                has_more = true;
                break;
            }
            let doc_id = DocId::from_slice(&k[16..32]).map_err(|e| RemoteError::Protocol {
                reason: e.to_string(),
            })?;
            let s: HubSnapshot = codec::decode("hub snapshots", &k, &v)?;
            // Snapshots stored before digests existed have none: the reader
            // does not trust them.
            let replaces = match (q.v >= 2, self.inner.snapshot_digests.get(&k)) {
                (false, _) => None,
                (true, Ok(Some(d))) => Some(codec::decode("hub snapshot digests", &k, &d)?),
                (true, Ok(None)) => None,
                (true, Err(e)) => return Err(sled_err("read snapshot digest")(e)),
            };
            snapshots.push(SnapshotRecord {
                doc_id,
                collection: s.collection,
                heads: s.heads,
                covers: Cursor(s.covers.to_string()),
                bytes: s.bytes,
                replaces,
            });
        }
        Ok(SnapshotPage {
            v: q.v,
            snapshots,
            has_more,
        })
    }

    /// Flushes the hub to disk.
    ///
    /// # Errors
    /// Storage errors.
    pub fn flush(&self) -> Result<(), RemoteError> {
        self.inner
            .db
            .flush()
            .map(|_| ())
            .map_err(sled_err("flush hub"))
    }
}

/// What [`LocalHub::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Changes pruned.
    pub pruned: usize,
    /// Their change bytes.
    pub bytes: u64,
    /// The new horizon of each workspace where something was pruned.
    pub horizons: Vec<(WorkspaceId, u64)>,
}

/// Compaction (see the module documentation).
impl LocalHub {
    /// Prunes the changes folded into their document's stored snapshot
    /// (position at or before the snapshot's `covers`) in workspace `ws`, or
    /// in every workspace with `None`, and raises each workspace's horizon to
    /// its highest pruned position. The hub keeps no push times, so there is
    /// no age limit here: everything folded goes (SQL's
    /// `supamerge_prune('0')`); call it on your own schedule. Pushes wait
    /// while it runs.
    ///
    /// # Errors
    /// Storage errors (nothing is pruned then).
    pub fn prune(&self, ws: Option<&WorkspaceId>) -> Result<PruneReport, RemoteError> {
        let _guard = self
            .inner
            .push_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let prefix = ws.map(|w| w.to_bytes().to_vec()).unwrap_or_default();
        // (change key, seq) to remove; (pruned_docs key, collection);
        // workspace → highest pruned seq.
        let mut doomed: Vec<[u8; 24]> = Vec::new();
        let mut docs: Vec<([u8; 32], Vec<u8>)> = Vec::new();
        let mut tops: std::collections::BTreeMap<WorkspaceId, u64> = Default::default();
        let mut report = PruneReport::default();
        for r in self.inner.snapshots.scan_prefix(&prefix) {
            let (k, v) = r.map_err(sled_err("scan snapshots"))?;
            let malformed = || RemoteError::Protocol {
                reason: "malformed hub snapshot key".into(),
            };
            let w = WorkspaceId::from_slice(k.get(..16).ok_or_else(malformed)?)
                .map_err(|_| malformed())?;
            let snap: HubSnapshot = codec::decode("hub snapshots", &k, &v)?;
            let mut collection = None;
            for e in self.inner.dedup.scan_prefix(&k) {
                let (dk, sv) = e.map_err(sled_err("scan dedup"))?;
                let seq = <[u8; 8]>::try_from(sv.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| RemoteError::Protocol {
                        reason: format!("malformed hub dedup entry {}", codec::hex(&dk)),
                    })?;
                if seq > snap.covers {
                    continue;
                }
                let ck = change_key(&w, seq);
                let Some(cv) = self
                    .inner
                    .changes
                    .get(ck)
                    .map_err(sled_err("read change"))?
                else {
                    continue; // pruned before
                };
                let c = hub_records::decode_change(&ck, &cv)?;
                report.pruned += 1;
                report.bytes += c.bytes.len() as u64;
                // Format 1 records name their collection; format 2 keeps it
                // in `docs`, which pruning leaves alone.
                if c.collection.is_some() {
                    collection = c.collection;
                }
                doomed.push(ck);
                let top = tops.entry(w).or_default();
                *top = (*top).max(seq);
            }
            if let Some(c) = collection {
                let key: [u8; 32] = k.as_ref().try_into().map_err(|_| malformed())?;
                docs.push((key, codec::encode("hub pruned docs", &c)?));
            }
        }
        let mut horizons = Vec::with_capacity(tops.len());
        for (w, top) in &tops {
            let h = self.horizon(w)?.max(*top);
            horizons.push((*w, h, codec::encode("hub horizons", &h)?));
        }
        (
            &self.inner.changes,
            &self.inner.pruned_docs,
            &self.inner.horizons,
        )
            .transaction(|(changes, pruned_docs, hz)| {
                for k in &doomed {
                    changes.remove(&k[..])?;
                }
                for (k, c) in &docs {
                    pruned_docs.insert(&k[..], c.clone())?;
                }
                for (w, _, h) in &horizons {
                    hz.insert(&w.to_bytes()[..], h.clone())?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<std::convert::Infallible>>(
                    (),
                )
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(s) => sled_err("prune")(s),
                sled::transaction::TransactionError::Abort(never) => match never {},
            })?;
        self.flush()?;
        report.horizons = horizons.into_iter().map(|(w, h, _)| (w, h)).collect();
        Ok(report)
    }

    /// A workspace's horizon: its highest pruned position (0: none).
    ///
    /// # Errors
    /// Storage errors.
    pub fn horizon(&self, ws: &WorkspaceId) -> Result<u64, RemoteError> {
        match self
            .inner
            .horizons
            .get(ws.to_bytes())
            .map_err(sled_err("read horizon"))?
        {
            Some(v) => Ok(codec::decode::<u64>("hub horizons", &ws.to_bytes(), &v)?),
            None => Ok(0),
        }
    }

    /// Every pruned (doc, hash) of a workspace: for tests proving "stored
    /// exactly once" across pruning (a pruned change is still stored, as
    /// part of its document's snapshot).
    ///
    /// # Errors
    /// Storage or decoding errors.
    pub fn pruned_hashes(&self, ws: &WorkspaceId) -> Result<Vec<(DocId, ChangeHash)>, RemoteError> {
        let mut out = Vec::new();
        for r in self.inner.dedup.scan_prefix(ws.to_bytes()) {
            let (k, v) = r.map_err(sled_err("scan dedup"))?;
            let seq = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| RemoteError::Protocol {
                    reason: "malformed hub dedup entry".into(),
                })?;
            if self
                .inner
                .changes
                .contains_key(change_key(ws, seq))
                .map_err(sled_err("read change"))?
            {
                continue;
            }
            let bad = || RemoteError::Protocol {
                reason: "malformed hub dedup key".into(),
            };
            let doc = DocId::from_slice(k.get(16..32).ok_or_else(bad)?).map_err(|_| bad())?;
            let hash = <[u8; 32]>::try_from(k.get(32..).ok_or_else(bad)?).map_err(|_| bad())?;
            out.push((doc, ChangeHash(hash)));
        }
        Ok(out)
    }

    /// The collection of a document with pruned changes.
    fn pruned_collection(
        &self,
        ws: &WorkspaceId,
        doc: &DocId,
    ) -> Result<Option<Collection>, RemoteError> {
        let k = snapshot_key(ws, doc);
        match self
            .inner
            .pruned_docs
            .get(k)
            .map_err(sled_err("read pruned doc"))?
        {
            Some(v) => Ok(Some(codec::decode("hub pruned docs", &k, &v)?)),
            None => Ok(None),
        }
    }

    /// The horizon of `ws`, or [`RemoteError::CursorPruned`] when a log pull
    /// (not a bootstrap, which skips what snapshots hold) starts behind it.
    fn behind_horizon(
        &self,
        ws: &WorkspaceId,
        after: u64,
        skip_snapshotted: bool,
    ) -> Result<u64, RemoteError> {
        let horizon = self.horizon(ws)?;
        if after < horizon && !skip_snapshotted {
            return Err(RemoteError::CursorPruned {
                horizon: horizon.to_string(),
                message: format!(
                    "cursor {after} is behind the horizon {horizon} of workspace {ws}: changes up \
                     to the horizon were pruned; bootstrap from the snapshots"
                ),
            });
        }
        Ok(horizon)
    }
}

impl LocalHub {
    /// Checks the request's protocol version, then runs `f` on a blocking
    /// thread (sled calls block).
    async fn serve<T: Send + 'static>(
        &self,
        op: &'static str,
        v: u32,
        f: impl FnOnce(&LocalHub) -> Result<T, RemoteError> + Send + 'static,
    ) -> Result<T, RemoteError> {
        if v != WIRE_VERSION {
            return Err(RemoteError::BadRequest {
                code: "unsupported_version".into(),
                message: format!(
                    "protocol version {v} is not supported; this hub speaks {WIRE_VERSION}"
                ),
            });
        }
        let hub = self.clone();
        tokio::task::spawn_blocking(move || f(&hub))
            .await
            .map_err(|source| RemoteError::Task { op, source })?
    }
}

#[async_trait]
impl Remote for LocalHub {
    fn live_updates(&self) -> Option<Arc<dyn super::live::LiveUpdates>> {
        Some(Arc::new(self.live()))
    }

    async fn push(&self, req: PushRequest) -> Result<PushResponse, RemoteError> {
        self.serve("push", req.v, move |hub| hub.push_sync(req))
            .await
    }

    async fn pull(&self, req: PullRequest) -> Result<PullPage, RemoteError> {
        self.serve("pull", req.v, move |hub| hub.pull_sync(req))
            .await
    }

    async fn put_snapshot(&self, snap: SnapshotUpload) -> Result<SnapshotOutcome, RemoteError> {
        self.serve("put_snapshot", snap.v, move |hub| {
            hub.put_snapshot_sync(snap)
        })
        .await
    }

    async fn get_snapshots(&self, query: SnapshotQuery) -> Result<SnapshotPage, RemoteError> {
        // Snapshot pages have their own version (1 without digests, 2 with).
        let v = if (1..=SNAPSHOT_PAGE_VERSION).contains(&query.v) {
            WIRE_VERSION
        } else {
            query.v
        };
        self.serve("get_snapshots", v, move |hub| hub.get_snapshots_sync(query))
            .await
    }
}
