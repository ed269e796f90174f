//! Applying remote changes and snapshots.
//!
//! A batch goes through three steps:
//! 1. **decode** ([`decode_batch`], pure): every change is parsed and its
//!    claimed hash checked; the rest is grouped per document, batch order
//!    kept;
//! 2. **plan** ([`plan_group`], pure work on the cached document): each group
//!    is applied to its document in one `apply_changes` call (one change at a
//!    time only when that fails, to isolate the offending one), and what must
//!    be written is gathered in an [`ApplyPlan`]: the new chunk, the record,
//!    early arrivals to keep or release;
//! 3. **persist** ([`persist_plans`]): every plan of the batch, and the
//!    cursor, in one sled transaction. When it fails the planned documents
//!    are dropped from the cache, so memory is never ahead of disk.

use std::collections::{BTreeMap, HashSet};

use automerge::{Change, ChangeHash, ReadDoc};
use rayon::prelude::*;

use super::cache::DocState;
use super::resolve::doc_conflicts;
use super::{Origin, Replica, ReplicaEvent};
use crate::conflict::{Conflict, EffectiveClock, LwwView};
use crate::entity;
use crate::error::Result;
use crate::id::{Collection, DocId, WorkspaceId};
use crate::protocol::snapshot_check::{self, DownloadedSnapshot, SnapshotCheckError};
use crate::protocol::ChangeEnvelope;
use crate::store::{ChunkKind, CursorRecord, DocRecord, PendingChange, Store, StoreError};

/// A remote change handed to [`SyncPort::apply_remote`](super::SyncPort::apply_remote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChange {
    /// The workspace it was pulled from.
    pub workspace: WorkspaceId,
    /// The document.
    pub doc_id: DocId,
    /// The document's collection.
    pub collection: Collection,
    /// The hash the sender claims (checked against the bytes when given).
    pub hash: Option<ChangeHash>,
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
        claimed: ChangeHash,
        /// The hash of the bytes.
        actual: ChangeHash,
    },
    /// The change decodes but the document refuses it (e.g. a reused
    /// sequence number of an actor).
    #[error("change {hash} cannot be applied to document {doc_id}: {source}")]
    Incompatible {
        /// The document.
        doc_id: DocId,
        /// The change's hash.
        hash: ChangeHash,
        /// Automerge's error.
        #[source]
        source: automerge::AutomergeError,
    },
}

/// What [`SyncPort::apply_remote`](super::SyncPort::apply_remote) did.
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
    /// Downloaded snapshots not trusted (and not applied), each with why
    /// ([`SyncPort::apply_snapshots`](super::SyncPort::apply_snapshots)).
    pub untrusted: Vec<SnapshotCheckError>,
}

impl Replica {
    /// [`SyncPort::apply_snapshots`](super::SyncPort::apply_snapshots).
    pub(super) fn apply_snapshot_batch(
        &self,
        snapshots: Vec<DownloadedSnapshot>,
    ) -> Result<ApplyReport> {
        let mut changes = Vec::new();
        // (id, record, encoded snapshot chunk, number of changes, whether it
        // is an entity)
        let mut fresh: Vec<(DocId, DocRecord, Vec<u8>, usize, bool)> = Vec::new();
        let mut fresh_ids = HashSet::new();
        let mut untrusted = Vec::new();
        // Loading and checking a snapshot is the work here: on every core,
        // before the lock is taken.
        let loaded: Vec<_> = snapshots
            .into_par_iter()
            .map(|snap| {
                let doc =
                    snapshot_check::load_checked(snap.doc_id, &snap.bytes, snap.replaces.as_ref());
                (snap, doc)
            })
            .collect();
        let st = self.lock();
        for (snap, doc) in loaded {
            let (ws, coll, id, bytes) = (snap.workspace, snap.collection, snap.doc_id, snap.bytes);
            let doc = match doc {
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
                let view_clock = EffectiveClock::new();
                let view = LwwView::new(&doc, &view_clock);
                let meta = entity::meta_obj(view);
                record.deleted = meta
                    .as_ref()
                    .is_some_and(|m| entity::is_deleted_in(view, m));
                let entity = meta.is_some();
                record.next_chunk = 1;
                record.snapshot_len = bytes.len() as u64;
                let n = doc.stats().num_changes as usize;
                fresh_ids.insert(id);
                let encoded = Store::encode_chunk(ChunkKind::Snapshot, &bytes)?;
                fresh.push((id, record, encoded, n, entity));
                continue;
            }
            for mut c in doc.get_changes(&[]) {
                let _ = c.bytes();
                changes.push(RemoteChange {
                    workspace: ws,
                    doc_id: id,
                    collection: coll.clone(),
                    hash: Some(c.hash()),
                    bytes: c.raw_bytes().to_vec(),
                });
            }
        }
        if !fresh.is_empty() {
            self.inner.store.transact("load snapshots", |tx| {
                for (id, record, encoded, _, entity) in &fresh {
                    tx.put_chunk_encoded(id, 0, encoded)?;
                    tx.put_doc(id, record)?;
                    // Listed once it is an entity (has `_meta`).
                    if *entity {
                        tx.index_collection(&record.collection, id)?;
                    }
                }
                Ok(())
            })?;
        }
        drop(st);
        let mut report = if changes.is_empty() {
            ApplyReport::default()
        } else {
            self.apply_changes_batch(changes, None)?
        };
        report.untrusted = untrusted;
        for (id, _, _, n, _) in fresh {
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

    /// [`SyncPort::apply_remote`](super::SyncPort::apply_remote).
    ///
    /// The documents of a batch are planned in waves of at most
    /// [`LOAD_WAVE`] documents that are not in the cache (cached ones are
    /// already within the budget): each wave is loaded, planned, persisted
    /// and put back into the cache, which is then trimmed to its budget,
    /// before the next wave is loaded. A batch touching more documents than
    /// the cache holds (a replica's own changes coming back after a long
    /// offline spell, a first pull) so never has them all loaded at once.
    /// The cursor is written with the last wave: a crash between waves
    /// leaves the earlier waves applied and the cursor before the batch,
    /// and pulling the batch again finds their changes already there.
    pub(super) fn apply_changes_batch(
        &self,
        changes: Vec<RemoteChange>,
        cursor: Option<(WorkspaceId, CursorRecord)>,
    ) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        // 1. decode and verify (in parallel), grouped by document (batch
        //    order kept)
        let groups = decode_batch(changes, &mut report);
        // Conflicts before the batch, to announce only new or changed ones.
        let watch_conflicts = self.inner.events.receiver_count() > 0;
        let mut changed = Vec::new();
        let mut conflicts_before: BTreeMap<DocId, Vec<Conflict>> = BTreeMap::new();
        let mut groups = groups.into_iter().peekable();
        // At least one wave: an empty batch still writes its cursor.
        loop {
            let mut st = self.lock();
            // Early arrivals are rare: when the tree is empty, no document
            // of the wave has any, and the per-document scan is skipped.
            let any_pending = !self.inner.store.pending_is_empty();
            // 2. take the wave's documents out of the cache (or note where
            //    they come from), then plan them on both cores: documents
            //    are independent, and the store is read-only here.
            let mut work = Vec::new();
            let mut to_load = 0;
            while to_load < LOAD_WAVE {
                let Some((id, (ws, coll, batch))) = groups.next() else {
                    break;
                };
                let source = match st.cache.pop(&id) {
                    Some(ds) => Source::Cached(Box::new(ds)),
                    None => {
                        to_load += 1;
                        Source::Stored(DocRecord::new(ws, coll))
                    }
                };
                work.push((id, source, batch));
            }
            let last = groups.peek().is_none();
            let planned: Vec<Result<Planned>> = work
                .into_par_iter()
                .map(|(id, source, batch)| {
                    self.plan_doc(id, source, batch, any_pending, watch_conflicts)
                })
                .collect();
            let mut plans = Vec::with_capacity(planned.len());
            for p in planned {
                // On error the documents taken out of the cache are dropped
                // with `plans`: the next read loads them from disk, so memory
                // is never ahead of disk.
                plans.push(p?);
            }

            // 3. persist the wave (and, with the last, the cursor) in one
            //    transaction
            let wave_cursor = if last { cursor.as_ref() } else { None };
            persist_plans(&self.inner.store, &plans, wave_cursor)?;
            let mut evicted = Vec::new();
            for p in plans {
                let Planned {
                    id,
                    mut ds,
                    is_new,
                    plan,
                    report: part,
                    conflicts,
                    ..
                } = p;
                report.applied += part.applied;
                report.duplicates += part.duplicates;
                report.pending += part.pending;
                report.rejected.extend(part.rejected);
                ds.record = plan.record;
                if let Some(c) = conflicts {
                    conflicts_before.insert(id, c);
                }
                if let Some((_, old)) = st.cache.push(id, ds) {
                    evicted.push(old);
                }
                if plan.changed {
                    changed.push(id);
                    if !is_new {
                        self.maybe_compact(&mut st, &id)?;
                    }
                    // A document this batch created is not compacted in the
                    // same apply: its one chunk is all it has (no snapshot to
                    // outgrow by more than a chunk), and folding it at once
                    // cost a `save()` and a transaction per new document (11 %
                    // of `merge_many_docs`' instructions). Its next applied
                    // batch or commit compacts it as usual. `push` above
                    // counted it at its current size; the loop below keeps the
                    // cache within its budget.
                }
            }
            // Documents the batch only confirmed (every change already
            // here, as a replica's own changes coming back) are cached too:
            // keep to the budget for them as well.
            while st.cache.total_bytes() > self.inner.cache_bytes && st.cache.len() > 1 {
                match st.cache.pop_lru() {
                    Some((_, old)) => evicted.push(old),
                    None => break,
                }
            }
            drop(st);
            // Freeing Automerge documents is not free: do it outside the
            // lock and on both cores, before the next wave is loaded.
            evicted.into_par_iter().for_each(drop);
            if last {
                break;
            }
        }
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

    /// Loads (when needed) and plans one document's group. Runs on a rayon
    /// worker: reads the store, never writes it, never takes the lock.
    fn plan_doc(
        &self,
        id: DocId,
        source: Source,
        batch: Vec<Change>,
        any_pending: bool,
        watch_conflicts: bool,
    ) -> Result<Planned> {
        let (mut ds, is_new) = match source {
            Source::Cached(ds) => (*ds, false),
            Source::Stored(fresh) => match self.inner.store.get_doc(&id)? {
                None => (DocState::empty(&self.inner.actor, fresh), true),
                Some(_) => (self.load(&id)?, false),
            },
        };
        let stored_pending = if any_pending && !is_new {
            self.inner.store.pending_for(&id)?
        } else {
            Vec::new()
        };
        let conflicts = watch_conflicts.then(|| doc_conflicts(ds.view()));
        let had_meta = !is_new && entity::meta_obj(ds.view()).is_some();
        let mut report = ApplyReport::default();
        let reload = || self.load(&id).ok();
        let mut plan = plan_group(&mut ds, &id, batch, stored_pending, reload, &mut report);
        // A document is listed in its collection once it is an entity
        // (has `_meta`): early arrivals alone, or a document another
        // client wrote without `_meta`, are not. `_meta` is looked up once
        // for this and the tombstone.
        let meta = entity::meta_obj(ds.view());
        plan.record.deleted = meta
            .as_ref()
            .is_some_and(|m| entity::is_deleted_in(ds.view(), m));
        let index = !had_meta && meta.is_some();
        let chunk = match plan.chunk.take() {
            Some((seq, bytes)) => Some((seq, encode_chunk(&bytes)?)),
            None => None,
        };
        Ok(Planned {
            id,
            ds,
            is_new,
            index,
            chunk,
            plan,
            report,
            conflicts,
        })
    }
}

/// How many documents not in the cache one wave of a remote batch loads at
/// most (see [`Replica::apply_changes_batch`]): enough to keep the cores
/// busy, few enough that a batch touching every document of a large replica
/// stays near the cache's budget.
pub(crate) const LOAD_WAVE: usize = 8;

/// Where a document of a batch comes from.
enum Source {
    /// It was in the cache (taken out while it is planned).
    Cached(Box<DocState>),
    /// Not cached: loaded from the store, or new (with this record) when
    /// the store does not have it.
    Stored(DocRecord),
}

/// One document of a batch, planned.
struct Planned {
    id: DocId,
    /// The document with the batch applied (back into the cache once
    /// persisted).
    ds: DocState,
    /// Whether the store had no record of it before this batch.
    is_new: bool,
    /// Whether it is to be added to its collection index now.
    index: bool,
    /// The new chunk, encoded for the store (off the lock, in parallel).
    chunk: Option<(u64, Vec<u8>)>,
    plan: ApplyPlan,
    /// This document's part of the report.
    report: ApplyReport,
    /// Its conflicts before the batch, when someone listens for conflicts.
    conflicts: Option<Vec<Conflict>>,
}

/// The changes of one document in a batch: its workspace, collection and
/// the decoded changes in batch order.
type Group = (WorkspaceId, Collection, Vec<Change>);

/// Decodes every change (on both cores) and checks its claimed hash;
/// refusals go to `report.rejected`, the rest is grouped per document
/// (batch order kept).
fn decode_batch(changes: Vec<RemoteChange>, report: &mut ApplyReport) -> BTreeMap<DocId, Group> {
    let decoded: Vec<(
        DocId,
        WorkspaceId,
        Collection,
        std::result::Result<Change, ChangeError>,
    )> = changes
        .into_par_iter()
        .enumerate()
        .map(|(index, rc)| {
            let RemoteChange {
                workspace,
                doc_id,
                collection,
                hash,
                bytes,
            } = rc;
            let change = match Change::from_bytes(bytes) {
                Ok(c) => match hash {
                    Some(claimed) if claimed != c.hash() => Err(ChangeError::HashMismatch {
                        doc_id,
                        index,
                        claimed,
                        actual: c.hash(),
                    }),
                    _ => Ok(c),
                },
                Err(source) => Err(ChangeError::Corrupt {
                    doc_id,
                    index,
                    source,
                }),
            };
            (doc_id, workspace, collection, change)
        })
        .collect();
    let mut groups: BTreeMap<DocId, Group> = BTreeMap::new();
    for (doc_id, workspace, collection, change) in decoded {
        match change {
            Ok(change) => groups
                .entry(doc_id)
                .or_insert_with(|| (workspace, collection, Vec::new()))
                .2
                .push(change),
            Err(e) => report.rejected.push(e),
        }
    }
    groups
}

/// What one document group of a remote batch writes.
struct ApplyPlan {
    /// The document's record after the batch.
    record: DocRecord,
    /// The new incremental chunk (its sequence number and bytes), if any
    /// change was applied (taken out and encoded by the caller).
    chunk: Option<(u64, Vec<u8>)>,
    /// Early arrivals applied now: removed from `pending`.
    unpend: Vec<ChangeHash>,
    /// New early arrivals: kept in `pending` until their dependencies come.
    pend: Vec<(ChangeHash, Vec<u8>)>,
    /// Whether the document's heads moved.
    changed: bool,
}

/// One change of a group: its hash, where its bytes are in the group's
/// buffer, and whether it came from the `pending` tree.
struct Entry {
    hash: ChangeHash,
    range: std::ops::Range<usize>,
    was_pending: bool,
}

/// Applies one document's group to its cached state and plans the writes.
///
/// `stored_pending` are the document's early arrivals on disk; they are
/// retried with the batch. When the batch does not apply as a whole, the
/// offending changes are isolated one at a time on a fresh copy of the
/// document from `reload` (an empty document when it cannot be loaded), and
/// reported in `report.rejected`.
///
/// The changes are moved into `apply_changes`, not copied: their bytes are
/// kept once, concatenated, and that buffer is the new chunk when every
/// change went in (the common case).
fn plan_group(
    ds: &mut DocState,
    id: &DocId,
    batch: Vec<Change>,
    stored_pending: Vec<(ChangeHash, PendingChange)>,
    reload: impl FnOnce() -> Option<DocState>,
    report: &mut ApplyReport,
) -> ApplyPlan {
    let before = ds.doc.get_heads();
    // Which of the batch the document already holds. `get_change_by_hash`
    // would rebuild every present change from the op set (Automerge 0.12),
    // which made re-pulling a replica's own changes quadratic; instead ask
    // once which hashes are missing. A hash is neither missing nor in the
    // document only while it waits in the queue, i.e. in `pending`.
    let hashes: Vec<ChangeHash> = batch.iter().map(Change::hash).collect();
    let absent: HashSet<ChangeHash> = ds.doc.get_missing_deps(&hashes).into_iter().collect();
    let queued: HashSet<ChangeHash> = stored_pending.iter().map(|(h, _)| *h).collect();
    let mut seen = HashSet::with_capacity(batch.len());
    let mut all = Vec::with_capacity(batch.len() + stored_pending.len());
    for (c, h) in batch.into_iter().zip(hashes) {
        let in_doc = !absent.contains(&h) && !queued.contains(&h);
        if in_doc || !seen.insert(h) {
            report.duplicates += 1;
        } else {
            all.push(c);
        }
    }
    for (h, p) in stored_pending {
        if !seen.contains(&h) {
            if let Ok(c) = Change::from_bytes(p.bytes) {
                seen.insert(c.hash());
                all.push(c);
            }
        }
    }
    let mut buf = Vec::with_capacity(all.iter().map(|c| c.raw_bytes().len()).sum());
    let mut entries = Vec::with_capacity(all.len());
    for c in &all {
        let start = buf.len();
        buf.extend_from_slice(c.raw_bytes());
        let hash = c.hash();
        entries.push(Entry {
            hash,
            range: start..buf.len(),
            // Also a stored early arrival that came again in this batch.
            was_pending: queued.contains(&hash),
        });
    }
    let applied_whole = ds.doc.apply_changes(all).is_ok();
    let mut rejected = HashSet::new();
    if !applied_whole {
        // Isolate the offending change(s): reload and apply one at a time.
        let mut fresh = reload()
            .unwrap_or_else(|| DocState::empty(&ds.doc.get_actor().clone(), ds.record.clone()));
        let mut remaining: Vec<Change> = entries
            .iter()
            .filter_map(|e| Change::from_bytes(buf[e.range.clone()].to_vec()).ok())
            .collect();
        loop {
            let mut progress = false;
            let mut next = Vec::new();
            for c in remaining {
                let deps_ok = c
                    .deps()
                    .iter()
                    .all(|d| fresh.doc.get_change_meta_by_hash(d).is_some());
                if !deps_ok {
                    next.push(c);
                    continue;
                }
                let hash = c.hash();
                match fresh.doc.apply_changes([c]) {
                    Ok(()) => progress = true,
                    Err(source) => {
                        report.rejected.push(ChangeError::Incompatible {
                            doc_id: *id,
                            hash,
                            source,
                        });
                        rejected.insert(hash);
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
    // When nothing is left waiting for dependencies, every change is in the
    // document and the buffer is the chunk. Otherwise each change is looked
    // up by its metadata (`get_change_by_hash` would rebuild it). (Not
    // after the one-by-one isolation above: it leaves changes with missing
    // dependencies out of the document instead of queueing them.)
    let all_in = applied_whole && ds.doc.get_missing_deps(&[]).is_empty();
    let mut applied = 0u64;
    let chunk = if all_in {
        applied = entries.len() as u64;
        plan.unpend = entries
            .iter()
            .filter(|e| e.was_pending)
            .map(|e| e.hash)
            .collect();
        buf
    } else {
        let mut chunk = Vec::new();
        for e in entries.iter().filter(|e| !rejected.contains(&e.hash)) {
            let now_in = ds.doc.get_change_meta_by_hash(&e.hash).is_some();
            match (now_in, e.was_pending) {
                (true, was_pending) => {
                    if was_pending {
                        plan.unpend.push(e.hash);
                    }
                    chunk.extend_from_slice(&buf[e.range.clone()]);
                    applied += 1;
                }
                (false, false) => {
                    plan.pend.push((e.hash, buf[e.range.clone()].to_vec()));
                    report.pending += 1;
                }
                (false, true) => report.pending += 1,
            }
        }
        chunk
    };
    report.applied += applied as usize;
    if !chunk.is_empty() {
        let seq = plan.record.next_chunk;
        plan.record.next_chunk += 1;
        plan.record.incremental_len += chunk.len() as u64;
        plan.record.incremental_count += 1;
        plan.record.changes_since_upload += applied;
        plan.chunk = Some((seq, chunk));
    }
    // (`plan.record.deleted` is set by the caller, with the same lookup of
    // `_meta` as the collection index.)
    plan
}

/// A chunk of changes encoded for the store (done before the transaction,
/// whose body sled may run more than once).
fn encode_chunk(bytes: &[u8]) -> std::result::Result<Vec<u8>, StoreError> {
    Store::encode_chunk(ChunkKind::Incremental, bytes)
}

/// Writes every plan of a batch (each with whether the document is to be
/// added to its collection index now), and the cursor when given, in one
/// sled transaction: all of it is on disk afterwards, or none of it.
fn persist_plans(
    store: &Store,
    plans: &[Planned],
    cursor: Option<&(WorkspaceId, CursorRecord)>,
) -> std::result::Result<(), StoreError> {
    store.transact("apply remote", |tx| {
        for p in plans {
            let id = &p.id;
            if let Some((seq, encoded)) = &p.chunk {
                tx.put_chunk_encoded(id, *seq, encoded)?;
            }
            // A document the batch only confirmed (every change already
            // here: a replica's own changes coming back) keeps its record
            // as it is; rewriting it on every pass only fed sled's garbage.
            if p.is_new || p.plan.record != p.ds.record {
                tx.put_doc(id, &p.plan.record)?;
            }
            if p.index {
                tx.index_collection(&p.plan.record.collection, id)?;
            }
            for h in &p.plan.unpend {
                tx.remove_pending(id, h)?;
            }
            for (h, bytes) in &p.plan.pend {
                tx.put_pending(
                    id,
                    h,
                    &PendingChange {
                        bytes: bytes.clone(),
                    },
                )?;
            }
        }
        if let Some((ws, rec)) = cursor {
            tx.put_cursor(ws, rec)?;
        }
        Ok(())
    })
}
