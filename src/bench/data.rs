//! Benchmark data: entity documents with chains of small map changes, large
//! text documents, and the automerge-paper editing trace.
//!
//! Generated documents look exactly like entities a [`Replica`](crate::Replica)
//! creates (`_meta` with collection, workspace, tombstone and schema; `data`
//! with the fields), so the engine reads them like any other entity.
//! Everything is deterministic: fixed actors, ids and timestamps.

use std::io::Read;
use std::path::{Path, PathBuf};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, AutomergeError, Change, ObjType, ROOT};
use serde::Deserialize;
use uuid::Uuid;

use super::{BenchError, BenchResult};
use crate::entity;
use crate::id::{Collection, DocId, WorkspaceId};
use crate::protocol::wire::{ChangeEnvelope, PushRequest, WIRE_VERSION};
use crate::remote::Remote;

/// The workspace every benchmark document lives in.
pub fn workspace() -> WorkspaceId {
    WorkspaceId::from_uuid(Uuid::from_u128(0x0190_f3a4_7c1e_7b5a_9c7e_3f1d_2a4b_5c6d))
}

/// The collection of every benchmark document.
pub fn collection() -> BenchResult<Collection> {
    Collection::new("bench").map_err(|e| BenchError::Mismatch {
        workload: "data",
        what: format!("the collection name is refused: {e}"),
    })
}

/// The id of the `n`-th generated document (UUIDv7-shaped, in order).
pub fn doc_id(n: u64) -> DocId {
    DocId::from_uuid(Uuid::from_u128(
        0x0190_f3a4_0000_7000_8000_0000_0000_0000 | u128::from(n),
    ))
}

fn actor(seed: u64) -> ActorId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_be_bytes());
    b[8..].copy_from_slice(&0x5375_7061_6d65_7267u64.to_be_bytes());
    ActorId::from(&b[..])
}

const T0: i64 = 1_763_000_000_000;

/// A generated entity document and its changes (in causal order).
#[derive(Debug)]
pub struct GenDoc {
    /// The entity id.
    pub id: DocId,
    /// The document.
    pub doc: Automerge,
    /// Its changes, oldest first.
    pub changes: Vec<Change>,
}

impl GenDoc {
    /// The changes as wire envelopes.
    pub fn envelopes(&self, collection: &Collection) -> Vec<ChangeEnvelope> {
        self.changes
            .iter()
            .map(|c| ChangeEnvelope {
                doc_id: self.id,
                collection: collection.clone(),
                hash: c.hash(),
                bytes: c.raw_bytes().to_vec(),
            })
            .collect()
    }

    /// The raw change bytes.
    pub fn change_bytes(&self) -> Vec<Vec<u8>> {
        self.changes
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect()
    }
}

/// Starts an entity document: the creating change (meta plus a `data` map
/// with one field), committed at `T0`.
///
/// # Errors
/// Automerge errors (none expected).
pub fn new_entity(
    n: u64,
    collection: &Collection,
) -> Result<(DocId, Automerge, automerge::ObjId), AutomergeError> {
    let mut doc = Automerge::new();
    doc.set_actor(actor(n));
    let mut tx = doc.transaction();
    let meta = tx.put_object(ROOT, entity::META, ObjType::Map)?;
    tx.put(&meta, entity::META_COLLECTION, collection.as_str())?;
    tx.put(&meta, entity::META_WORKSPACE, workspace().to_string())?;
    tx.put(&meta, entity::META_DELETED, false)?;
    tx.put(&meta, entity::META_SCHEMA, 0u64)?;
    let data = tx.put_object(ROOT, entity::DATA, ObjType::Map)?;
    tx.put(&data, "title", format!("entity {n}"))?;
    tx.commit_with(CommitOptions::default().with_time(T0));
    Ok((doc_id(n), doc, data))
}

/// An entity with `changes` changes in total: the creation, then small map
/// edits (`data.n = i`, `data.k{i % 8} = "v{i}"` alternating).
///
/// # Errors
/// Automerge errors (none expected).
pub fn entity_with_changes(
    n: u64,
    changes: usize,
    collection: &Collection,
) -> Result<GenDoc, AutomergeError> {
    let (id, mut doc, data) = new_entity(n, collection)?;
    for i in 1..changes {
        small_edit(&mut doc, &data, i)?;
    }
    let changes = doc.get_changes(&[]);
    Ok(GenDoc { id, doc, changes })
}

/// One small map change on `data` (the `i`-th edit).
///
/// # Errors
/// Automerge errors (none expected).
pub fn small_edit(
    doc: &mut Automerge,
    data: &automerge::ObjId,
    i: usize,
) -> Result<(), AutomergeError> {
    let mut tx = doc.transaction();
    if i.is_multiple_of(2) {
        tx.put(data, "n", i as i64)?;
    } else {
        tx.put(data, format!("k{}", i % 8), format!("v{i}"))?;
    }
    tx.commit_with(CommitOptions::default().with_time(T0 + i as i64));
    Ok(())
}

/// An entity whose `data.text` holds `ops` characters, inserted in changes
/// of at most 1,000 characters (one operation each).
///
/// # Errors
/// Automerge errors (none expected).
pub fn large_text_entity(
    n: u64,
    ops: usize,
    collection: &Collection,
) -> Result<(GenDoc, automerge::ObjId), AutomergeError> {
    let (id, mut doc, data) = new_entity(n, collection)?;
    let mut tx = doc.transaction();
    let text = tx.put_object(&data, "text", ObjType::Text)?;
    tx.commit_with(CommitOptions::default().with_time(T0 + 1));
    let mut done = 0;
    let mut i = 2;
    while done < ops {
        let k = (ops - done).min(1_000);
        let chunk: String = (0..k)
            .map(|j| char::from(b'a' + ((done + j) % 26) as u8))
            .collect();
        let mut tx = doc.transaction();
        tx.splice_text(&text, done, 0, &chunk)?;
        tx.commit_with(CommitOptions::default().with_time(T0 + i));
        done += k;
        i += 1;
    }
    let changes = doc.get_changes(&[]);
    Ok((GenDoc { id, doc, changes }, data))
}

/// Pushes envelopes to a remote in batches within the wire limits (setup,
/// not measured).
///
/// # Errors
/// The first failing push.
pub async fn push_all(
    remote: &dyn Remote,
    ws: WorkspaceId,
    envelopes: Vec<ChangeEnvelope>,
) -> Result<(), crate::remote::RemoteError> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for e in envelopes {
        if batch.len() >= 1_000 || bytes + e.bytes.len() > 600 * 1024 {
            push_batch(remote, ws, std::mem::take(&mut batch)).await?;
            bytes = 0;
        }
        bytes += e.bytes.len();
        batch.push(e);
    }
    if !batch.is_empty() {
        push_batch(remote, ws, batch).await?;
    }
    Ok(())
}

async fn push_batch(
    remote: &dyn Remote,
    ws: WorkspaceId,
    changes: Vec<ChangeEnvelope>,
) -> Result<(), crate::remote::RemoteError> {
    remote
        .push(PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes,
        })
        .await
        .map(|_| ())
}

/// One patch of the trace: `(position, characters deleted, text inserted)`.
pub type Patch = (usize, usize, String);

/// The automerge-paper editing trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The patches, one per transaction, in order.
    pub patches: Vec<Patch>,
    /// The text after every patch.
    pub end_content: String,
}

#[derive(Deserialize)]
struct TraceFile {
    #[serde(rename = "endContent")]
    end_content: String,
    txns: Vec<TraceTxn>,
}

#[derive(Deserialize)]
struct TraceTxn {
    patches: Vec<Patch>,
}

/// Reads a gzip-compressed trace in the josephg/editing-traces format.
///
/// # Errors
/// [`BenchError::Io`] when the file cannot be read; [`BenchError::Trace`]
/// when it does not parse.
pub fn load_trace(path: &Path) -> BenchResult<Trace> {
    let io = |source| BenchError::Io {
        what: "cannot read the editing trace",
        path: PathBuf::from(path),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(io)?;
    let parsed: TraceFile = serde_json::from_str(&text).map_err(|source| BenchError::Trace {
        path: PathBuf::from(path),
        source,
    })?;
    Ok(Trace {
        patches: parsed.txns.into_iter().flat_map(|t| t.patches).collect(),
        end_content: parsed.end_content,
    })
}
