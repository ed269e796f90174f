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

/// The live bytes of every tree of a **closed** replica or hub directory:
/// (tree name, number of keys, bytes of keys and values), read with raw sled.
/// What sled's files hold beyond that is log overhead, page rewrites not yet
/// reclaimed, and its snapshot (`benches/soak.rs` prints both).
///
/// # Errors
/// [`StoreError::Sled`](crate::StoreError::Sled) when sled cannot open the
/// directory (it must not be open, in this process or another).
pub fn tree_bytes(dir: &std::path::Path) -> Result<Vec<(String, u64, u64)>> {
    let err = |op: &'static str| move |source| crate::store::StoreError::Sled { op, source };
    // A handle of this process dropped a moment ago may still hold sled's
    // file lock (sled releases it from a background thread): retry a while.
    let mut tries = 0;
    let db = loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => break db,
            Err(_) if tries < 200 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => return Err(err("open")(e).into()),
        }
    };
    let mut out = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).map_err(err("open_tree"))?;
        let (mut keys, mut bytes) = (0u64, 0u64);
        for kv in tree.iter() {
            let (k, v) = kv.map_err(err("iter"))?;
            keys += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        out.push((String::from_utf8_lossy(&name).into_owned(), keys, bytes));
    }
    Ok(out)
}

/// Opens (or creates) a [`LocalHub`](crate::LocalHub) directory in the
/// hub's first record format, as builds before format 2 wrote it
/// (`docs/storage.md`, "LocalHub"): for tests of old directories and for
/// the soak's before/after figure. An existing directory of a newer format
/// is refused.
///
/// # Errors
/// As [`LocalHub::open`](crate::LocalHub::open);
/// [`StoreError::UnsupportedHubFormat`](crate::StoreError::UnsupportedHubFormat)
/// for a format-2 directory.
pub fn open_hub_v1(
    path: impl AsRef<std::path::Path>,
) -> std::result::Result<crate::LocalHub, crate::RemoteError> {
    crate::LocalHub::open_format(path.as_ref(), crate::remote::HubFormat::V1)
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
