//! Test utilities (feature `test-util`): fault injection and inspection for
//! tests of this crate and of apps built on it. Nothing here is needed, or
//! available, in a normal build.
//!
//! - [`sim`]: the deterministic simulation of whole networks — real
//!   replicas and a real server behind a simulated network and clock, the
//!   product's own sync core stepping through it, one seed for every
//!   choice (lost, duplicated, reordered and delayed messages, partitions,
//!   crashes at effect boundaries, clock jumps);
//! - [`FaultyRemote`]: a wrapper around a real [`Remote`](crate::Remote)
//!   that loses, duplicates, delays or fails calls on a script;
//! - [`chunks`] and [`doc_record`]: read-only views of how a replica stores a
//!   document (to check compaction, or where a crash left it);
//! - [`push_raw_outbox`]: fault injection into a replica's outbox (entries
//!   no local commit would make: garbage bytes, a wrong hash), to test what
//!   the remote and the sync pass do with a damaged local queue;
//! - [`store_format`]: the on-disk layout (tree names, keys, the versioned
//!   record codec, the quarantine record, sled's `conf` as supamerge writes
//!   it), for tests that damage or inspect a closed replica's files with raw
//!   sled and check that the damage is reported, isolated, repaired or
//!   quarantined.

pub mod sim;

use crate::error::Result;
use crate::id::DocId;
use crate::replica::Replica;
use crate::store::{Chunk, DocRecord, OutboxEntry};

pub use crate::remote::faulty::{Fault, FaultyRemote, Op};

/// Every stored chunk of a document, in sequence order: its snapshot (if
/// any) first, then the incremental chunks written since.
///
/// # Errors
/// Storage errors.
pub fn chunks(replica: &Replica, id: &DocId) -> Result<Vec<(u64, Chunk)>> {
    Ok(replica.store().chunks(id)?)
}

/// A document's record in the `docs` tree (`None`: no such document).
///
/// # Errors
/// Storage errors, or [`StoreError::Corrupt`](crate::StoreError::Corrupt)
/// for a damaged record.
pub fn doc_record(replica: &Replica, id: &DocId) -> Result<Option<DocRecord>> {
    Ok(replica.store().get_doc(id)?)
}

/// Appends `entries` to the replica's outbox exactly as given, unverified,
/// in one transaction (fault injection: a damaged or tampered local queue).
///
/// # Errors
/// Storage errors (nothing is appended then).
pub fn push_raw_outbox(replica: &Replica, entries: &[OutboxEntry]) -> Result<()> {
    Ok(replica.store().transact("test: raw outbox entries", |tx| {
        for e in entries {
            tx.push_outbox(e)?;
        }
        Ok(())
    })?)
}

/// The on-disk layout of a replica directory (see `docs/storage.md`): tree
/// names, key encodings, the versioned codec of stored records, the records
/// `supamerge doctor --repair` moves to the `quarantine` tree, and the
/// sled `conf` file exactly as supamerge writes it.
pub mod store_format {
    pub use crate::store::dir::expected_conf;
    pub use crate::store::keys::{self, trees};
    pub use crate::store::{codec, Chunk, ChunkKind, DocRecord, PendingChange, QuarantinedRecord};
}
