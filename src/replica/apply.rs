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

use super::cache::DocState;
use super::resolve::doc_conflicts;
use super::{Origin, Replica, ReplicaEvent};
use crate::conflict::{Conflict, EffectiveClock, LwwView};
use crate::entity;
use crate::error::{Error, Result};
use crate::id::{Collection, DocId, WorkspaceId};
use crate::protocol::snapshot_check::{self, DownloadedSnapshot, SnapshotCheckError};
use crate::protocol::ChangeEnvelope;
use crate::store::{Chunk, ChunkKind, CursorRecord, DocRecord, PendingChange, Store, StoreError};

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
        // (id, record, bytes, number of changes, whether it is an entity)
        let mut fresh: Vec<(DocId, DocRecord, Vec<u8>, usize, bool)> = Vec::new();
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
                let view_clock = EffectiveClock::new();
                let view = LwwView::new(&doc, &view_clock);
                record.deleted = entity::is_deleted(view);
                let entity = entity::meta_obj(view).is_some();
                record.next_chunk = 1;
                record.snapshot_len = bytes.len() as u64;
                let n = doc.stats().num_changes as usize;
                fresh_ids.insert(id);
                fresh.push((id, record, bytes, n, entity));
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
                for (id, record, bytes, _, entity) in &fresh {
                    tx.put_chunk(
                        id,
                        0,
                        &Chunk {
                            kind: ChunkKind::Snapshot,
                            bytes: bytes.clone(),
                        },
                    )?;
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
    pub(super) fn apply_changes_batch(
        &self,
        changes: Vec<RemoteChange>,
        cursor: Option<(WorkspaceId, CursorRecord)>,
    ) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        // 1. decode and verify, grouped by document (batch order kept)
        let groups = decode_batch(changes, &mut report);

        let mut st = self.lock();
        let mut plans: Vec<(DocId, bool, ApplyPlan)> = Vec::new();
        // Conflicts before the batch, to announce only new or changed ones.
        let watch_conflicts = self.inner.events.receiver_count() > 0;
        let mut conflicts_before: BTreeMap<DocId, Vec<Conflict>> = BTreeMap::new();
        // 2. plan every group on its cached document
        for (id, (ws, coll, batch)) in groups {
            // A cached document exists: only an uncached one costs a read.
            let is_new = !st.cache.contains(&id) && self.inner.store.get_doc(&id)?.is_none();
            if is_new {
                st.cache.put(
                    id,
                    DocState::empty(&self.inner.actor, DocRecord::new(ws, coll)),
                );
            }
            let loaded = self
                .inner
                .store
                .pending_for(&id)
                .map_err(Error::from)
                .and_then(|pending| Ok((pending, self.get_loaded(&mut st, &id)?)));
            let (stored_pending, ds) = match loaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    // The documents planned so far are ahead of disk.
                    for (id, ..) in &plans {
                        st.cache.pop(id);
                    }
                    return Err(e);
                }
            };
            if watch_conflicts {
                conflicts_before.insert(id, doc_conflicts(ds.view()));
            }
            let had_meta = !is_new && entity::meta_obj(ds.view()).is_some();
            let reload = || self.load(&id).ok();
            let plan = plan_group(ds, &id, batch, stored_pending, reload, &mut report);
            // A document is listed in its collection once it is an entity
            // (has `_meta`): early arrivals alone, or a document another
            // client wrote without `_meta`, are not.
            let index = !had_meta && entity::meta_obj(ds.view()).is_some();
            plans.push((id, index, plan));
        }

        // 3. persist everything (and the cursor) in one transaction
        if let Err(e) = persist_plans(&self.inner.store, &plans, cursor.as_ref()) {
            for (id, ..) in &plans {
                st.cache.pop(id);
            }
            return Err(e.into());
        }
        let mut changed = Vec::new();
        for (id, _, plan) in plans {
            if let Some(ds) = st.cache.get_mut(&id) {
                ds.record = plan.record;
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
}

/// The changes of one document in a batch: its workspace, collection and
/// the decoded changes in batch order.
type Group = (WorkspaceId, Collection, Vec<Change>);

/// Decodes every change and checks its claimed hash; refusals go to
/// `report.rejected`, the rest is grouped per document (batch order kept).
fn decode_batch(changes: Vec<RemoteChange>, report: &mut ApplyReport) -> BTreeMap<DocId, Group> {
    let mut groups: BTreeMap<DocId, Group> = BTreeMap::new();
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
        let actual = change.hash();
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
    groups
}

/// What one document group of a remote batch writes.
struct ApplyPlan {
    /// The document's record after the batch.
    record: DocRecord,
    /// The new incremental chunk (its sequence number and bytes), if any
    /// change was applied.
    chunk: Option<(u64, Vec<u8>)>,
    /// Early arrivals applied now: removed from `pending`.
    unpend: Vec<ChangeHash>,
    /// New early arrivals: kept in `pending` until their dependencies come.
    pend: Vec<(ChangeHash, Vec<u8>)>,
    /// Whether the document's heads moved.
    changed: bool,
}

/// Applies one document's group to its cached state and plans the writes.
///
/// `stored_pending` are the document's early arrivals on disk; they are
/// retried with the batch. When the batch does not apply as a whole, the
/// offending changes are isolated one at a time on a fresh copy of the
/// document from `reload` (an empty document when it cannot be loaded), and
/// reported in `report.rejected`.
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
    let mut seen = HashSet::new();
    let mut incoming = Vec::new();
    for c in batch {
        let h = c.hash();
        let in_doc = !absent.contains(&h) && !queued.contains(&h);
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
        if !seen.contains(&h) {
            if let Ok(c) = Change::from_bytes(p.bytes) {
                seen.insert(c.hash());
                all.push(c);
            }
        }
    }
    let applied_whole = ds.doc.apply_changes(all.clone()).is_ok();
    if !applied_whole {
        // Isolate the offending change(s): reload and apply one at a time.
        let mut fresh = reload()
            .unwrap_or_else(|| DocState::empty(&ds.doc.get_actor().clone(), ds.record.clone()));
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
                            hash: c.hash(),
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
        let was_pending = pending_hashes.contains(&h);
        match (now_in, was_pending) {
            (true, true) => {
                plan.unpend.push(h);
                chunk.extend_from_slice(c.raw_bytes());
                applied += 1;
            }
            (true, false) => {
                chunk.extend_from_slice(c.raw_bytes());
                applied += 1;
            }
            (false, false) => {
                plan.pend.push((h, c.raw_bytes().to_vec()));
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
    plan.record.deleted = entity::is_deleted(ds.view());
    plan
}

/// Writes every plan of a batch (each with whether the document is to be
/// added to its collection index now), and the cursor when given, in one
/// sled transaction: all of it is on disk afterwards, or none of it.
fn persist_plans(
    store: &Store,
    plans: &[(DocId, bool, ApplyPlan)],
    cursor: Option<&(WorkspaceId, CursorRecord)>,
) -> std::result::Result<(), StoreError> {
    store.transact("apply remote", |tx| {
        for (id, index, plan) in plans {
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
            if *index {
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
        if let Some((ws, rec)) = cursor {
            tx.put_cursor(ws, rec)?;
        }
        Ok(())
    })
}
