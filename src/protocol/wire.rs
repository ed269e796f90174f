//! Wire types of the sync protocol, shared by every backend.
//!
//! These are the serde structs that travel between a replica and a remote. The
//! JSON forms are what the Supabase RPC functions take and return (bytes as
//! base64 text, hashes as lower-case hex, ids as UUID text); `docs/protocol.md`
//! documents them field by field. Every request and response carries `v`, the
//! protocol version ([`WIRE_VERSION`]).

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use crate::id::{Collection, DocId, WorkspaceId};

/// The protocol version this build speaks.
pub const WIRE_VERSION: u32 = 1;

/// Upper bound on the number of changes in one push batch (also enforced by
/// every remote).
pub const MAX_PUSH_COUNT: usize = 1000;

/// Upper bound on the raw change bytes in one push batch (the JSON body is
/// about 4/3 of it).
pub const MAX_PUSH_BYTES: usize = 768 * 1024;

/// Upper bound on the number of changes in one pulled page.
pub const MAX_PULL_LIMIT: u32 = 1000;

/// The version of [`SnapshotQuery`] / [`SnapshotPage`] this build speaks:
/// 2 adds [`SnapshotRecord::replaces`]. A remote still answers version 1
/// pages (no digests) to a client that asks for 1; their snapshots cannot be
/// verified, so this build does not trust them (see `docs/protocol.md`).
pub const SNAPSHOT_PAGE_VERSION: u32 = 2;

/// Upper bound on the bytes of one snapshot (every remote refuses more with
/// [`RemoteError::TooLarge`](crate::remote::RemoteError::TooLarge); the
/// uploader then skips it).
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024;

/// Bytes that travel as standard base64 text in JSON.
pub mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as base64 text.
    ///
    /// # Errors
    /// Never fails for JSON.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    /// Parses base64 text.
    ///
    /// # Errors
    /// Text that is not valid standard base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// One change as it travels: enough for the server to store, deduplicate and
/// verify it, and for a replica to file it under the right document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEnvelope {
    /// The document the change belongs to.
    pub doc_id: DocId,
    /// The document's collection.
    pub collection: Collection,
    /// The Automerge change hash (SHA-256 of the change chunk; hex in JSON).
    #[serde(with = "crate::hash::hex")]
    pub hash: ChangeHash,
    /// The raw, uncompressed change chunk.
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
}

/// A batch of changes of one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Protocol version.
    pub v: u32,
    /// The workspace every change belongs to.
    pub workspace: WorkspaceId,
    /// The changes, at most [`MAX_PUSH_COUNT`] and [`MAX_PUSH_BYTES`].
    pub changes: Vec<ChangeEnvelope>,
}

/// What the remote did with one pushed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PushOutcome {
    /// Stored now, at this position of the workspace's change log.
    Stored {
        /// The server sequence number it got.
        seq: i64,
    },
    /// The remote already had it (a retry after a lost response): nothing stored.
    AlreadyPresent,
    /// Refused: bad bytes, hash mismatch, not a change chunk, ...
    Rejected {
        /// Why, in words a person can act on.
        reason: String,
    },
}

/// The outcome of a push: one entry per pushed change, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Protocol version.
    pub v: u32,
    /// One outcome per change of the request, same order.
    pub results: Vec<PushOutcome>,
}

/// A position in a workspace's change log, opaque to the client.
///
/// The empty cursor is the beginning. Only the remote that issued a cursor
/// interprets it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(pub String);

impl Cursor {
    /// The beginning of the log.
    pub fn start() -> Self {
        Self(String::new())
    }

    /// Whether this is the beginning of the log.
    pub fn is_start(&self) -> bool {
        self.0.is_empty()
    }
}

/// Ask for the changes after a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Protocol version.
    pub v: u32,
    /// The workspace to read.
    pub workspace: WorkspaceId,
    /// Where to start (exclusive).
    pub cursor: Cursor,
    /// At most this many changes (capped at [`MAX_PULL_LIMIT`]).
    pub limit: u32,
    /// Bootstrap mode: skip changes already covered by the current snapshot
    /// of their document (the client fetches snapshots after the pull).
    #[serde(default)]
    pub skip_snapshotted: bool,
}

/// One change in a pulled page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledChange {
    /// The server sequence number.
    pub seq: i64,
    /// The change itself.
    #[serde(flatten)]
    pub change: ChangeEnvelope,
}

/// A page of changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullPage {
    /// Protocol version.
    pub v: u32,
    /// The changes, in log order.
    pub changes: Vec<PulledChange>,
    /// The cursor to send next time (after the last change of this page).
    pub next_cursor: Cursor,
    /// Whether more changes follow right now.
    pub has_more: bool,
}

/// A compacted document offered to the remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotUpload {
    /// Protocol version.
    pub v: u32,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The document.
    pub doc_id: DocId,
    /// Its collection.
    pub collection: Collection,
    /// The heads the snapshot covers (hex in JSON).
    #[serde(with = "crate::hash::hex_vec")]
    pub heads: Vec<ChangeHash>,
    /// The uploader's pull cursor: the snapshot holds every change of this
    /// document at or before this position of the log.
    pub covers: Cursor,
    /// The `save()` bytes.
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
}

/// What the remote did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotOutcome {
    /// Stored: it is now the document's snapshot.
    Stored,
    /// Ignored: the remote holds one that covers at least as much.
    Superseded,
}

/// What a snapshot replaces: the changes of its document in the log at or
/// before its `covers` position — exactly those a pull with
/// `skip_snapshotted` leaves out. The remote computes it from its log when
/// the snapshot is stored; a reader loads the snapshot, computes the same
/// over the loaded document's changes, and trusts the snapshot only if both
/// agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDigest {
    /// How many changes.
    pub count: u64,
    /// SHA-256 of their 32-byte hashes, sorted and concatenated (held in the
    /// crate's 32-byte hash type; hex in JSON, like a change hash).
    #[serde(with = "crate::hash::hex")]
    pub sha256: ChangeHash,
}

impl SnapshotDigest {
    /// The digest of a set of change hashes (in any order; duplicates are
    /// the caller's to avoid: a log and a document hold each change once).
    pub fn of_hashes(hashes: impl IntoIterator<Item = ChangeHash>) -> Self {
        use sha2::Digest;
        let mut sorted: Vec<ChangeHash> = hashes.into_iter().collect();
        sorted.sort_unstable();
        let mut h = sha2::Sha256::new();
        for x in &sorted {
            h.update(x.0);
        }
        Self {
            count: sorted.len() as u64,
            sha256: ChangeHash(h.finalize().into()),
        }
    }
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The document.
    pub doc_id: DocId,
    /// Its collection.
    pub collection: Collection,
    /// The heads it covers (hex in JSON).
    #[serde(with = "crate::hash::hex_vec")]
    pub heads: Vec<ChangeHash>,
    /// The log position it covers (see [`SnapshotUpload::covers`]).
    pub covers: Cursor,
    /// The `save()` bytes.
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
    /// What it replaces, as the remote's log says (pages of version 2; `None`
    /// in version 1 pages, and then the snapshot is not trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<SnapshotDigest>,
}

/// Ask for a page of a workspace's snapshots, by document id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotQuery {
    /// The page version wanted: [`SNAPSHOT_PAGE_VERSION`] (or 1, without
    /// digests).
    pub v: u32,
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Start after this document id (`None`: from the first).
    pub after: Option<DocId>,
    /// At most this many snapshots.
    pub limit: u32,
}

/// A page of snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPage {
    /// Page version: 2 with [`SnapshotRecord::replaces`], 1 without.
    pub v: u32,
    /// The snapshots, in document id order.
    pub snapshots: Vec<SnapshotRecord>,
    /// Whether more follow (ask again with `after` = the last doc id).
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let env = ChangeEnvelope {
            doc_id: DocId::new_v7(1, [0; 10]),
            collection: Collection::new("tasks").unwrap(),
            hash: ChangeHash([0xab; 32]),
            bytes: vec![1, 2, 3],
        };
        let j = serde_json::to_value(&env).unwrap();
        assert_eq!(j["bytes"], "AQID");
        assert_eq!(j["hash"].as_str().unwrap().len(), 64);
        let back: ChangeEnvelope = serde_json::from_value(j).unwrap();
        assert_eq!(back, env);
        let o = serde_json::to_value(PushOutcome::Stored { seq: 4 }).unwrap();
        assert_eq!(o, serde_json::json!({"status": "stored", "seq": 4}));
        let r: PushOutcome =
            serde_json::from_value(serde_json::json!({"status": "rejected", "reason": "x"}))
                .unwrap();
        assert_eq!(r, PushOutcome::Rejected { reason: "x".into() });
        let mut bad = serde_json::to_value(&env).unwrap();
        bad["hash"] = "zz".into();
        assert!(serde_json::from_value::<ChangeEnvelope>(bad).is_err());
    }

    #[test]
    fn snapshot_digest_is_order_independent_and_matches_its_definition() {
        use sha2::Digest;
        let a = SnapshotDigest::of_hashes([ChangeHash([2; 32]), ChangeHash([1; 32])]);
        let b = SnapshotDigest::of_hashes([ChangeHash([1; 32]), ChangeHash([2; 32])]);
        assert_eq!(a, b);
        assert_eq!(a.count, 2);
        let mut cat = vec![1u8; 32];
        cat.extend([2u8; 32]);
        assert_eq!(a.sha256.0, <[u8; 32]>::from(sha2::Sha256::digest(&cat)));
        // The empty set: SHA-256 of nothing (what SQL's sha256('') gives).
        assert_eq!(
            SnapshotDigest::of_hashes([]).sha256.to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let j = serde_json::to_value(a).unwrap();
        assert_eq!(j["count"], 2);
        assert_eq!(j["sha256"].as_str().unwrap().len(), 64);
    }
}
