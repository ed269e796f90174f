//! The sync protocol, below both sides: the wire types every backend speaks,
//! the verification of change chunks and of downloaded snapshots.
//!
//! Replicas ([`crate::replica`]), the sync engine ([`crate::sync`]) and every
//! remote ([`crate::remote`]) import this module; it imports none of them
//! (only ids and change hashes), so the protocol has one definition that
//! both ends of a connection share.
//!
//! - [`wire`]: the serde types of requests and responses (`docs/protocol.md`);
//! - [`chunk`]: recomputing and checking the hash of a change chunk;
//! - [`snapshot_check`]: a downloaded snapshot is trusted only if it holds
//!   exactly the changes the remote's digest says it replaces.

pub mod chunk;
pub mod snapshot_check;
pub mod wire;

pub use snapshot_check::{DownloadedSnapshot, SnapshotCheckError};

pub use wire::{
    ChangeEnvelope, Cursor, PullPage, PullRequest, PulledChange, PushOutcome, PushRequest,
    PushResponse, SnapshotDigest, SnapshotOutcome, SnapshotPage, SnapshotQuery, SnapshotRecord,
    SnapshotUpload, MAX_PULL_LIMIT, MAX_PUSH_BYTES, MAX_PUSH_COUNT, MAX_SNAPSHOT_BYTES,
    SNAPSHOT_PAGE_VERSION, WIRE_VERSION,
};
