//! Checking a replica directory, and quarantining what is damaged
//! (`supamerge doctor`).
//!
//! [`run`] with [`DoctorMode::Check`] reads every tree of an open replica:
//! every record decodes, every document loads (through the replica's own
//! loader), every outbox entry's change is in its document, the outbox index
//! and count agree with the outbox, cursors and dead letters decode, and
//! nothing (chunk, index entry, early arrival) belongs to a document that
//! does not exist. [`DoctorMode::Repair`] then fixes what it found without
//! losing anything:
//! - a damaged value, or a whole damaged document (its record, chunks,
//!   collection entries and early arrivals), is **moved** to the
//!   `quarantine` tree, byte for byte, with the reason — never deleted;
//! - the outbox is never dropped: an entry whose change is missing from its
//!   document is re-attached (applied to the document, which is recreated
//!   from the entry's workspace and collection when it is missing); an entry
//!   of a quarantined document stays queued and is pushed as usual; only an
//!   entry that does not decode (it could never be pushed) is quarantined;
//! - the outbox index and count are rebuilt from the outbox.
//!
//! Afterwards the directory is checked again; [`DoctorReport::remaining`]
//! lists what is still wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use automerge::{Change, ChangeHash, ReadDoc};
use serde::Serialize;

use crate::error::Result;
use crate::id::{Collection, DocId};
use crate::replica::{RemoteChange, Replica, SyncPort};
use crate::store::keys::{self, trees};
use crate::store::{
    codec, Chunk, CursorRecord, DeadLetter, DocRecord, OutboxEntry, PendingChange,
    QuarantinedRecord, Store, StoreError,
};

/// Whether [`run`] only looks or also repairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoctorMode {
    /// Report, change nothing.
    Check,
    /// Report, then quarantine and re-attach (see the module docs).
    Repair,
}

/// What a check found and, with [`DoctorMode::Repair`], what was done.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DoctorReport {
    /// The replica directory.
    pub path: PathBuf,
    /// Files the open itself had to repair (left by an interrupted open).
    pub repaired_at_open: Vec<String>,
    /// What was checked.
    pub counts: Counts,
    /// Every problem found, with the action taken in repair mode.
    pub problems: Vec<Problem>,
    /// Facts worth knowing that are not problems (e.g. outbox entries of a
    /// quarantined document, kept to be pushed).
    pub notes: Vec<String>,
    /// Problems still there after the repair (repair mode; in check mode the
    /// same as `problems`).
    pub remaining: Vec<Problem>,
    /// Values in the quarantine tree (after the repair).
    pub quarantined: usize,
    /// Whether the repair ran.
    pub repaired: bool,
}

impl DoctorReport {
    /// Whether nothing is (still) wrong.
    pub fn healthy(&self) -> bool {
        self.remaining.is_empty()
    }
}

/// How many values of each kind were checked.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Counts {
    /// Document records.
    pub documents: usize,
    /// Document chunks.
    pub chunks: usize,
    /// Collection index entries.
    pub collection_entries: usize,
    /// Outbox entries.
    pub outbox: usize,
    /// Remote changes waiting for their dependencies.
    pub pending_remote: usize,
    /// Workspace cursors.
    pub cursors: usize,
    /// Dead letters.
    pub dead_letters: usize,
}

/// What kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// A value (or its key) does not decode, or was written by a newer
    /// version.
    Undecodable,
    /// A document's record or one of its chunks is damaged, or its chunks do
    /// not load as an Automerge document.
    DamagedDocument,
    /// A chunk, collection entry or early arrival of a document that has no
    /// record.
    Orphan,
    /// An outbox entry of a document that does not exist.
    OutboxOrphan,
    /// An outbox entry whose change is not in its (existing) document.
    OutboxChangeMissing,
    /// The outbox index disagrees with the outbox.
    OutboxIndex,
    /// The stored outbox count disagrees with the outbox.
    OutboxCount,
}

/// What the repair did about a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Moved to the quarantine tree.
    Quarantined,
    /// The outbox entry's change was applied to its document again.
    Reattached,
    /// The outbox index entry was rebuilt or a dangling one quarantined.
    Reindexed,
    /// The outbox count was recounted.
    Recounted,
}

/// One problem.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The tree holding the value.
    pub tree: &'static str,
    /// Its key, in hex.
    pub key: String,
    /// The document concerned, when known.
    pub doc: Option<DocId>,
    /// What is wrong, in words.
    pub detail: String,
    /// What the repair did (repair mode).
    pub action: Option<Action>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.tree, self.key)?;
        if let Some(d) = self.doc {
            write!(f, " (document {d})")?;
        }
        write!(f, ": {}", self.detail)?;
        if let Some(a) = self.action {
            let a = match a {
                Action::Quarantined => "moved to quarantine",
                Action::Reattached => "re-attached to its document",
                Action::Reindexed => "reindexed",
                Action::Recounted => "recounted",
            };
            write!(f, " -> {a}")?;
        }
        Ok(())
    }
}

/// Checks the replica, and repairs it in [`DoctorMode::Repair`]. Run it on
/// a replica nothing else is using (the CLI opens the directory for itself).
///
/// # Errors
/// Storage failures while reading or repairing (damage is reported, not an
/// error).
pub fn run(replica: &Replica, mode: DoctorMode) -> Result<DoctorReport> {
    let store = replica.store();
    let first = examine(replica, store)?;
    let mut report = DoctorReport {
        path: store.path().to_path_buf(),
        repaired_at_open: store.recovered().iter().map(|r| r.to_string()).collect(),
        counts: first.counts.clone(),
        problems: first.problems.clone(),
        notes: first.notes.clone(),
        remaining: first.problems.clone(),
        quarantined: first.quarantined,
        repaired: false,
    };
    if mode == DoctorMode::Check || first.problems.is_empty() {
        return Ok(report);
    }
    let actions = repair(replica, store, &first)?;
    for (p, a) in report.problems.iter_mut().zip(actions) {
        p.action = a;
    }
    let after = examine(replica, store)?;
    report.remaining = after.problems;
    report.notes = after.notes;
    report.quarantined = after.quarantined;
    report.repaired = true;
    Ok(report)
}

/// The findings of one pass, with what repair needs to act on them.
struct Findings {
    counts: Counts,
    problems: Vec<Problem>,
    /// Per problem (same index): how to repair it.
    fixes: Vec<Fix>,
    notes: Vec<String>,
    quarantined: usize,
}

enum Fix {
    /// Move this value to quarantine.
    Quarantine { tree: &'static str, key: Vec<u8> },
    /// Move a whole document to quarantine.
    QuarantineDoc(DocId),
    /// Apply an outbox entry's change to its document.
    Reattach(Box<OutboxEntry>),
    /// Index an outbox entry.
    Index { hash: ChangeHash, seq_key: Vec<u8> },
    /// Recount the outbox.
    Recount,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Every key and value of a tree, raw.
fn raw(store: &Store, tree: &'static str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    raw_prefix(store, tree, &[])
}

/// The keys and values of a tree under a prefix, raw.
fn raw_prefix(store: &Store, tree: &'static str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let t = store
        .tree_by_name(tree)
        .ok_or_else(|| StoreError::Corrupt {
            tree,
            key: String::new(),
            reason: "no such tree".into(),
        })?;
    let mut out = Vec::new();
    for r in t.scan_prefix(prefix) {
        let (k, v) = r.map_err(|source| StoreError::Sled {
            op: "doctor scan",
            source,
        })?;
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

fn examine(replica: &Replica, store: &Store) -> Result<Findings> {
    let mut f = Findings {
        counts: Counts::default(),
        problems: Vec::new(),
        fixes: Vec::new(),
        notes: Vec::new(),
        quarantined: 0,
    };
    let push = |f: &mut Findings, p: Problem, fix: Fix| {
        f.problems.push(p);
        f.fixes.push(fix);
    };
    let problem = |kind, tree, key: &[u8], doc, detail: String| Problem {
        kind,
        tree,
        key: codec::hex(key),
        doc,
        detail,
        action: None,
    };

    // Documents quarantined by an earlier repair.
    let mut quarantined_docs = BTreeSet::new();
    for (k, v) in raw(store, trees::QUARANTINE)? {
        f.quarantined += 1;
        if let Ok(q) = codec::decode::<QuarantinedRecord>(trees::QUARANTINE, &k, &v) {
            if q.tree == trees::DOCS {
                if let Ok(id) = DocId::from_slice(&q.key) {
                    quarantined_docs.insert(id);
                }
            }
        }
    }

    // Records. A document is damaged when its record or a chunk is.
    let mut records: BTreeMap<DocId, DocRecord> = BTreeMap::new();
    let mut damaged: BTreeMap<DocId, String> = BTreeMap::new();
    for (k, v) in raw(store, trees::DOCS)? {
        f.counts.documents += 1;
        match DocId::from_slice(&k) {
            Ok(id) => match codec::decode::<DocRecord>(trees::DOCS, &k, &v) {
                Ok(rec) => {
                    records.insert(id, rec);
                }
                Err(e) => {
                    damaged.insert(id, format!("its record is damaged: {e}"));
                }
            },
            Err(e) => push(
                &mut f,
                problem(
                    ProblemKind::Undecodable,
                    trees::DOCS,
                    &k,
                    None,
                    format!("malformed key: {e}"),
                ),
                Fix::Quarantine {
                    tree: trees::DOCS,
                    key: k,
                },
            ),
        }
    }
    let mut known: BTreeSet<DocId> = records.keys().copied().collect();
    known.extend(damaged.keys().copied());
    let exists = |id: &DocId| known.contains(id);
    for (k, v) in raw(store, trees::CHUNKS)? {
        f.counts.chunks += 1;
        let id = k.get(..16).and_then(|b| DocId::from_slice(b).ok());
        match id {
            Some(id) if k.len() == 24 && exists(&id) => {
                if let Err(e) = codec::decode::<Chunk>(trees::CHUNKS, &k, &v) {
                    damaged
                        .entry(id)
                        .or_insert_with(|| format!("a chunk is damaged: {e}"));
                }
            }
            Some(id) if k.len() == 24 => push(
                &mut f,
                problem(
                    ProblemKind::Orphan,
                    trees::CHUNKS,
                    &k,
                    Some(id),
                    "a chunk of a document that has no record".into(),
                ),
                Fix::Quarantine {
                    tree: trees::CHUNKS,
                    key: k,
                },
            ),
            _ => push(
                &mut f,
                problem(
                    ProblemKind::Undecodable,
                    trees::CHUNKS,
                    &k,
                    None,
                    "malformed chunk key".into(),
                ),
                Fix::Quarantine {
                    tree: trees::CHUNKS,
                    key: k,
                },
            ),
        }
    }
    // Every document with a sound record and chunks loads, through the
    // replica's own loader.
    let mut loadable = BTreeSet::new();
    for id in records.keys() {
        if damaged.contains_key(id) {
            continue;
        }
        match replica.with_doc(id, |_| ()) {
            Ok(()) => {
                loadable.insert(*id);
            }
            Err(crate::Error::Store(e)) if !e.is_damage() => return Err(e.into()),
            Err(e) => {
                damaged.insert(*id, format!("it does not load: {e}"));
            }
        }
    }
    for (id, why) in &damaged {
        push(
            &mut f,
            problem(
                ProblemKind::DamagedDocument,
                trees::DOCS,
                &keys::doc(id),
                Some(*id),
                why.clone(),
            ),
            Fix::QuarantineDoc(*id),
        );
    }

    for (k, _) in raw(store, trees::BY_COLLECTION)? {
        f.counts.collection_entries += 1;
        let parsed = k.split_first().and_then(|(len, rest)| {
            let len = usize::from(*len);
            let name = std::str::from_utf8(rest.get(..len)?).ok()?;
            Collection::new(name).ok()?;
            DocId::from_slice(rest.get(len..)?).ok()
        });
        match parsed {
            Some(id) if exists(&id) => {}
            Some(id) => push(
                &mut f,
                problem(
                    ProblemKind::Orphan,
                    trees::BY_COLLECTION,
                    &k,
                    Some(id),
                    "a collection entry of a document that has no record".into(),
                ),
                Fix::Quarantine {
                    tree: trees::BY_COLLECTION,
                    key: k,
                },
            ),
            None => push(
                &mut f,
                problem(
                    ProblemKind::Undecodable,
                    trees::BY_COLLECTION,
                    &k,
                    None,
                    "malformed collection entry".into(),
                ),
                Fix::Quarantine {
                    tree: trees::BY_COLLECTION,
                    key: k,
                },
            ),
        }
    }

    for (k, v) in raw(store, trees::PENDING)? {
        f.counts.pending_remote += 1;
        let id = k.get(..16).and_then(|b| DocId::from_slice(b).ok());
        let decoded = codec::decode::<PendingChange>(trees::PENDING, &k, &v);
        let (kind, detail) = match (id, decoded) {
            (Some(id), Ok(_)) if k.len() == 48 && exists(&id) => continue,
            (Some(_), Ok(_)) if k.len() == 48 => (
                ProblemKind::Orphan,
                "an early arrival for a document that has no record".to_owned(),
            ),
            (_, Err(e)) => (ProblemKind::Undecodable, e.to_string()),
            _ => (ProblemKind::Undecodable, "malformed key".to_owned()),
        };
        push(
            &mut f,
            problem(kind, trees::PENDING, &k, id, detail),
            Fix::Quarantine {
                tree: trees::PENDING,
                key: k,
            },
        );
    }

    for (k, v) in raw(store, trees::CURSORS)? {
        f.counts.cursors += 1;
        let bad = match crate::id::WorkspaceId::from_slice(&k) {
            Err(e) => Some(format!("malformed key: {e}")),
            Ok(_) => codec::decode::<CursorRecord>(trees::CURSORS, &k, &v)
                .err()
                .map(|e| format!("{e} (the workspace is pulled again from the start)")),
        };
        if let Some(detail) = bad {
            push(
                &mut f,
                problem(ProblemKind::Undecodable, trees::CURSORS, &k, None, detail),
                Fix::Quarantine {
                    tree: trees::CURSORS,
                    key: k,
                },
            );
        }
    }
    for (k, v) in raw(store, trees::DEAD_LETTERS)? {
        f.counts.dead_letters += 1;
        if let Err(e) = codec::decode::<DeadLetter>(trees::DEAD_LETTERS, &k, &v) {
            push(
                &mut f,
                problem(
                    ProblemKind::Undecodable,
                    trees::DEAD_LETTERS,
                    &k,
                    None,
                    e.to_string(),
                ),
                Fix::Quarantine {
                    tree: trees::DEAD_LETTERS,
                    key: k,
                },
            );
        }
    }

    // The outbox: every entry decodes and its change is in its document.
    let mut outbox_hashes: BTreeMap<ChangeHash, Vec<u8>> = BTreeMap::new();
    let mut by_doc: BTreeMap<DocId, Vec<(Vec<u8>, OutboxEntry)>> = BTreeMap::new();
    for (k, v) in raw(store, trees::OUTBOX)? {
        f.counts.outbox += 1;
        let entry = codec::decode::<OutboxEntry>(trees::OUTBOX, &k, &v).and_then(|e| {
            let change =
                Change::from_bytes(e.bytes.clone()).map_err(|err| StoreError::Corrupt {
                    tree: trees::OUTBOX,
                    key: codec::hex(&k),
                    reason: format!("the change does not decode: {err}"),
                })?;
            if change.hash() != e.hash {
                return Err(StoreError::Corrupt {
                    tree: trees::OUTBOX,
                    key: codec::hex(&k),
                    reason: "the change does not hash to the entry's hash".into(),
                });
            }
            Ok(e)
        });
        match entry {
            Ok(e) if k.len() == 8 => {
                outbox_hashes.insert(e.hash, k.clone());
                by_doc.entry(e.doc_id).or_default().push((k, e));
            }
            Ok(_) => push(
                &mut f,
                problem(
                    ProblemKind::Undecodable,
                    trees::OUTBOX,
                    &k,
                    None,
                    "malformed outbox key".into(),
                ),
                Fix::Quarantine {
                    tree: trees::OUTBOX,
                    key: k,
                },
            ),
            Err(e) => push(
                &mut f,
                problem(
                    ProblemKind::Undecodable,
                    trees::OUTBOX,
                    &k,
                    None,
                    format!("{e} (it can never be pushed)"),
                ),
                Fix::Quarantine {
                    tree: trees::OUTBOX,
                    key: k,
                },
            ),
        }
    }
    for (id, entries) in by_doc {
        if damaged.contains_key(&id) || quarantined_docs.contains(&id) {
            f.notes.push(format!(
                "{} of document {id}, which is {}, stay{} queued and will be pushed",
                if entries.len() == 1 {
                    "1 outbox entry".to_owned()
                } else {
                    format!("{} outbox entries", entries.len())
                },
                if damaged.contains_key(&id) {
                    "damaged"
                } else {
                    "quarantined"
                },
                if entries.len() == 1 { "s" } else { "" }
            ));
            continue;
        }
        let missing: BTreeSet<ChangeHash> = if loadable.contains(&id) {
            let hashes: Vec<ChangeHash> = entries.iter().map(|(_, e)| e.hash).collect();
            replica
                .with_doc(&id, |d| d.get_missing_deps(&hashes))?
                .into_iter()
                .collect()
        } else {
            entries.iter().map(|(_, e)| e.hash).collect()
        };
        for (k, e) in entries {
            if !missing.contains(&e.hash) {
                continue;
            }
            let (kind, detail) = if loadable.contains(&id) {
                (
                    ProblemKind::OutboxChangeMissing,
                    "its change is not in its document".to_owned(),
                )
            } else {
                (
                    ProblemKind::OutboxOrphan,
                    "its document does not exist".to_owned(),
                )
            };
            push(
                &mut f,
                problem(kind, trees::OUTBOX, &k, Some(id), detail),
                Fix::Reattach(Box::new(e)),
            );
        }
    }
    // The index agrees with the outbox.
    let mut indexed = BTreeSet::new();
    for (k, v) in raw(store, trees::OUTBOX_INDEX)? {
        let ok = <[u8; 32]>::try_from(&k[..])
            .ok()
            .map(ChangeHash)
            .filter(|h| outbox_hashes.get(h) == Some(&v));
        match ok {
            Some(h) => {
                indexed.insert(h);
            }
            None => push(
                &mut f,
                problem(
                    ProblemKind::OutboxIndex,
                    trees::OUTBOX_INDEX,
                    &k,
                    None,
                    "an index entry that points to no outbox entry with this hash".into(),
                ),
                Fix::Quarantine {
                    tree: trees::OUTBOX_INDEX,
                    key: k,
                },
            ),
        }
    }
    for (h, seq_key) in &outbox_hashes {
        if !indexed.contains(h) {
            push(
                &mut f,
                problem(
                    ProblemKind::OutboxIndex,
                    trees::OUTBOX,
                    seq_key,
                    None,
                    "an outbox entry missing from the index (its ack would not remove it)".into(),
                ),
                Fix::Index {
                    hash: *h,
                    seq_key: seq_key.clone(),
                },
            );
        }
    }
    let stored = store.outbox_len();
    let actual = f.counts.outbox;
    if stored != actual {
        push(
            &mut f,
            problem(
                ProblemKind::OutboxCount,
                trees::META,
                keys::META_OUTBOX_LEN,
                None,
                format!("the stored outbox count is {stored}, the outbox holds {actual}"),
            ),
            Fix::Recount,
        );
    }
    Ok(f)
}

/// Applies the fixes; returns the action taken per problem.
fn repair(replica: &Replica, store: &Store, found: &Findings) -> Result<Vec<Option<Action>>> {
    let at = now_ms();
    let mut actions = Vec::with_capacity(found.fixes.len());
    // Quarantine first, so that re-attaching never writes over an orphan.
    let mut later = Vec::new();
    for (i, (fix, p)) in found.fixes.iter().zip(&found.problems).enumerate() {
        let action = match fix {
            Fix::Quarantine { tree, key } => {
                let reason = p.detail.clone();
                store.transact("doctor quarantine", |tx| {
                    tx.quarantine(tree, key, &reason, at)
                })?;
                Some(if p.kind == ProblemKind::OutboxIndex {
                    Action::Reindexed
                } else {
                    Action::Quarantined
                })
            }
            Fix::QuarantineDoc(id) => {
                quarantine_doc(store, id, &p.detail, at)?;
                Some(Action::Quarantined)
            }
            Fix::Index { hash, seq_key } => {
                store.transact("doctor reindex", |tx| tx.index_outbox(hash, seq_key))?;
                Some(Action::Reindexed)
            }
            Fix::Reattach(_) | Fix::Recount => {
                later.push(i);
                None
            }
        };
        actions.push(action);
    }
    for i in later {
        match &found.fixes[i] {
            Fix::Reattach(e) => {
                let change = RemoteChange {
                    workspace: e.workspace,
                    doc_id: e.doc_id,
                    collection: e.collection.clone(),
                    hash: Some(e.hash),
                    bytes: e.bytes.clone(),
                };
                let report = replica.apply_remote(vec![change], None)?;
                if report.rejected.is_empty() {
                    actions[i] = Some(Action::Reattached);
                }
            }
            Fix::Recount => {
                store.recount_outbox()?;
                actions[i] = Some(Action::Recounted);
            }
            _ => {}
        }
    }
    // Quarantining outbox entries changes the count; recount once more.
    store.recount_outbox()?;
    Ok(actions)
}

/// Moves a whole document (record, chunks, collection entries, early
/// arrivals) to quarantine in one transaction.
fn quarantine_doc(store: &Store, id: &DocId, reason: &str, at: i64) -> Result<()> {
    let mut moves: Vec<(&'static str, Vec<u8>)> = vec![(trees::DOCS, keys::doc(id).to_vec())];
    for tree in [trees::CHUNKS, trees::PENDING] {
        for (k, _) in raw_prefix(store, tree, &keys::doc(id))? {
            moves.push((tree, k));
        }
    }
    for (k, _) in raw(store, trees::BY_COLLECTION)? {
        if k.ends_with(&keys::doc(id)) {
            moves.push((trees::BY_COLLECTION, k));
        }
    }
    store.transact("doctor quarantine document", |tx| {
        for (tree, key) in &moves {
            tx.quarantine(tree, key, reason, at)?;
        }
        Ok(())
    })?;
    Ok(())
}
