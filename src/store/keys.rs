//! The storage key layout, in one place.
//!
//! | tree            | key                                   | value                     |
//! |-----------------|---------------------------------------|---------------------------|
//! | `meta`          | ASCII name (`format`, ...)            | versioned record          |
//! | `meta`          | `local_actor/` ‖ actor id bytes       | format byte (`1`)         |
//! | `meta`          | `outbox_len`                          | versioned u64             |
//! | `docs`          | doc id (16 bytes)                     | [`DocRecord`]             |
//! | `chunks`        | doc id (16) ‖ chunk seq (u64 BE)      | [`Chunk`]                 |
//! | `by_collection` | len (u8) ‖ collection ‖ doc id (16)   | empty                     |
//! | `outbox`        | outbox seq (u64 BE)                   | [`OutboxEntry`]           |
//! | `outbox_index`  | change hash (32)                      | outbox seq (u64 BE)       |
//! | `pending`       | doc id (16) ‖ change hash (32)        | [`PendingChange`]         |
//! | `cursors`       | workspace id (16)                     | [`CursorRecord`]          |
//! | `dead_letters`  | dead-letter seq (u64 BE)              | [`DeadLetter`]            |
//! | `quarantine`    | quarantine seq (u64 BE)               | [`QuarantinedRecord`]     |
//!
//! Big-endian integers make sled's byte order equal numeric order, so a prefix
//! scan of `chunks` returns a document's chunks in the order they were written
//! and a scan of `outbox` returns entries in commit order.
//!
//! [`DocRecord`]: super::DocRecord
//! [`Chunk`]: super::Chunk
//! [`OutboxEntry`]: super::OutboxEntry
//! [`PendingChange`]: super::PendingChange
//! [`CursorRecord`]: super::CursorRecord
//! [`DeadLetter`]: super::DeadLetter
//! [`QuarantinedRecord`]: super::QuarantinedRecord

use crate::id::{Collection, DocId, WorkspaceId};

/// Tree names (stable: they are part of the on-disk format).
pub mod trees {
    /// Replica-wide settings.
    pub const META: &str = "meta";
    /// One record per document.
    pub const DOCS: &str = "docs";
    /// Snapshot and incremental chunks per document.
    pub const CHUNKS: &str = "chunks";
    /// Index for listing by collection.
    pub const BY_COLLECTION: &str = "by_collection";
    /// Local changes not yet confirmed by the remote.
    pub const OUTBOX: &str = "outbox";
    /// Change hash → outbox seq, for acknowledgements.
    pub const OUTBOX_INDEX: &str = "outbox_index";
    /// Remote changes whose dependencies have not arrived.
    pub const PENDING: &str = "pending";
    /// Pull cursor per workspace.
    pub const CURSORS: &str = "cursors";
    /// Outbox entries the remote rejected.
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// Damaged values moved aside by `supamerge doctor --repair`.
    pub const QUARANTINE: &str = "quarantine";
}

/// The `meta` key holding the store format version.
pub const META_FORMAT: &[u8] = b"format";

/// The `meta` key holding the number of outbox entries (updated in the
/// transaction that adds or removes them).
pub const META_OUTBOX_LEN: &[u8] = b"outbox_len";

/// Prefix of the `meta` keys recording the actors this directory committed as.
pub const META_LOCAL_ACTOR_PREFIX: &[u8] = b"local_actor/";

/// The `meta` key recording that this directory committed as `actor`.
pub fn local_actor(actor: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(META_LOCAL_ACTOR_PREFIX.len() + actor.len());
    k.extend_from_slice(META_LOCAL_ACTOR_PREFIX);
    k.extend_from_slice(actor);
    k
}

/// Key of a document record.
pub fn doc(id: &DocId) -> [u8; 16] {
    id.to_bytes()
}

/// Key of one chunk of a document.
pub fn chunk(id: &DocId, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&id.to_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The chunk sequence number encoded in a chunk key.
pub fn chunk_seq(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(16..24)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Prefix of every key of a collection in `by_collection`.
pub fn collection_prefix(collection: &Collection) -> Vec<u8> {
    let name = collection.as_str().as_bytes();
    let mut k = Vec::with_capacity(1 + name.len() + 16);
    // Collection names are at most 64 bytes (validated), so the length fits a byte.
    k.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(name);
    k
}

/// Key of a document in the collection index.
pub fn collection_entry(collection: &Collection, id: &DocId) -> Vec<u8> {
    let mut k = collection_prefix(collection);
    k.extend_from_slice(&id.to_bytes());
    k
}

/// Key of an outbox or dead-letter entry.
pub fn seq(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Key of a pending (early-arrival) change.
pub fn pending(id: &DocId, hash: &[u8; 32]) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(&id.to_bytes());
    k[16..].copy_from_slice(hash);
    k
}

/// Key of a workspace cursor.
pub fn cursor(ws: &WorkspaceId) -> [u8; 16] {
    ws.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_sort_by_seq_within_a_doc() {
        let d = DocId::new_v7(5, [3; 10]);
        let a = chunk(&d, 2);
        let b = chunk(&d, 256);
        assert!(a < b);
        assert_eq!(chunk_seq(&b), Some(256));
        assert!(a.starts_with(&doc(&d)));
    }

    #[test]
    fn collection_prefixes_do_not_overlap() {
        let a = Collection::new("task").unwrap();
        let b = Collection::new("tasks").unwrap();
        let d = DocId::new_v7(5, [3; 10]);
        assert!(!collection_entry(&b, &d).starts_with(&collection_prefix(&a)));
    }
}
