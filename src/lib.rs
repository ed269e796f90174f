//! supamerge: an offline-first, CRDT-based replication engine.
//!
//! Every entity (a task, a note, a board...) is an [Automerge] document. The
//! application reads and writes a local [`Replica`] that works with no network
//! at all; a sync engine pushes the replica's local changes to a backend
//! (an embedded hub, or Supabase/PostgreSQL) and pulls everyone else's. Replicas
//! that hold the same changes converge to the same state, whatever the order
//! the changes arrived in.
//!
//! # Architecture
//!
//! | module | responsibility |
//! |--------|----------------|
//! | [`replica`] | the local replica: entities (typed, JSON, raw Automerge), the outbox, applying remote changes, events. Plain blocking I/O, no tokio. |
//! | [`store`] | the sled trees under a replica: typed keys ([`store::keys`]), versioned records ([`store::codec`]), one atomic transaction per commit. |
//! | [`entity`], [`conflict`], [`clock`], [`id`] | how an entity lives in its document, last-writer-wins by effective timestamp (a hybrid logical clock derived from the change graph), the injectable clock, typed ids. |
//! | [`pointer`](mod@pointer) | JSON pointers naming a field: the paths of [`Replica::conflicts`] and [`Replica::resolve`]. |
//! | [`migrate`] | deterministic schema migrations: every replica makes the identical change. |
//! | [`sync`] | the wire types, one push/pull session as plain async functions, and the tokio [`SyncEngine`](sync::SyncEngine) deciding when to sync. |
//! | [`remote`] | the [`Remote`](remote::Remote) contract and its implementations: the embedded `LocalHub`, a fault-injecting wrapper for tests, and the Supabase client. |
//! | gateway | (feature `gateway`) a local PostgREST-compatible RPC server over a real PostgreSQL, so the Supabase path runs on one machine. |
//! | [`demo`] | the demo scenario behind `supamerge demo`: replicas editing offline and converging through the embedded hub. |
//! | `bench` | (feature `bench`, on by default) the benchmark workloads behind `supamerge bench` and `benches/`, each measured against a raw Automerge (or samod) baseline; see `docs/benchmarks.md`. |
//! | `cli` | the `supamerge` command line (`src/bin/supamerge.rs` is a thin shell). |
//!
//! The on-disk layout is documented in `docs/storage.md`, the command line in
//! `docs/cli.md`, conflicts, their resolution and schema migrations in
//! `docs/conflicts.md`.
//!
//! # The life of an edit
//!
//! 1. **Local commit.** [`Replica::patch_json`] (or [`Replica::update`],
//!    [`Replica::transact`], ...) opens an Automerge transaction on the cached
//!    document, writes only what changed, and commits it with the timestamp
//!    `max(wall clock, 1 + the largest timestamp it depends on)` (a hybrid
//!    logical clock, see [`clock`]).
//! 2. **Chunk + outbox, one transaction.** The new change's bytes are stored
//!    as an incremental chunk of the document *and* appended to the outbox in
//!    one sled transaction over all trees, flushed before the call returns
//!    ([`store::Durability::Immediate`]). There is no moment where one is on
//!    disk and the other is not; a `SIGKILL` right after the call returns loses
//!    nothing. Subscribers get [`ReplicaEvent::DocChanged`] with
//!    [`Origin::Local`]. Once the chunks outgrow the snapshot, compaction folds
//!    them into a new snapshot — again one atomic transaction.
//! 3. **Push.** The sync engine reads the oldest outbox entries
//!    ([`Replica::peek`]), pushes them in bounded batches, and removes the ones
//!    the server confirmed ([`Replica::ack`]). A lost response is simply pushed
//!    again: the server deduplicates by (document, change hash).
//! 4. **Server.** The backend verifies each change's hash and appends it to a
//!    gap-free per-workspace log.
//! 5. **Pull.** Other replicas pull pages of changes after their cursor,
//!    gathering consecutive pages into batches (fetching the next while one
//!    is applied).
//! 6. **Batched apply.** [`Replica::apply_remote`] groups a batch by document
//!    and applies each group with one `apply_changes` call; a change whose
//!    dependencies have not arrived is kept on disk (the `pending` tree) and
//!    applied once they do, even after a restart.
//! 7. **Cursor.** The batch's chunks, pending entries and the new cursor are
//!    written in the same sled transaction, so the cursor never moves past a
//!    change that is not stored. Subscribers get [`Origin::Remote`] events.
//!
//! # Example
//!
//! ```
//! use autosurgeon::{Hydrate, Reconcile};
//! use serde_json::json;
//! use supamerge::{Collection, Replica, WorkspaceId};
//!
//! #[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
//! struct Task {
//!     title: String,
//!     done: bool,
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let replica = Replica::open(dir.path())?;
//! let ws: WorkspaceId = "0190f3a4-7c1e-7b5a-9c7e-3f1d2a4b5c6d".parse()?;
//! let tasks = Collection::new("tasks")?;
//!
//! // Create (typed), update only what changed, read back.
//! let id = replica.create(ws, &tasks, &Task { title: "write docs".into(), done: false })?;
//! replica.update::<Task>(&id, |t| t.done = true)?;
//! assert!(replica.get::<Task>(&id)?.done);
//!
//! // The same entity as JSON, edited with an RFC 7396 merge patch.
//! replica.patch_json(&id, &json!({ "title": "write better docs" }))?;
//! assert_eq!(replica.get_json(&id)?, json!({ "title": "write better docs", "done": true }));
//! assert_eq!(replica.list(&tasks)?, vec![id]);
//!
//! // Every commit waits in the durable outbox until the server confirms it.
//! let outbox = replica.peek(100, 1 << 20)?;
//! assert_eq!(outbox.len(), 3);
//! assert!(outbox.iter().all(|e| e.doc_id == id));
//! let hashes: Vec<_> = outbox.iter().map(|e| automerge::ChangeHash(e.hash)).collect();
//! replica.ack(&hashes)?;
//! assert_eq!(replica.pending(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! [Automerge]: https://automerge.org

#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
#[doc(hidden)]
pub mod cli;
pub mod clock;
pub mod conflict;
pub mod demo;
pub mod entity;
pub mod error;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod id;
pub mod migrate;
pub mod pointer;
pub mod remote;
pub mod replica;
pub mod store;
pub mod sync;

pub use error::{Error, Result};
pub use id::{Collection, DocId, WorkspaceId};
pub use migrate::Migration;
pub use replica::{Origin, Replica, ReplicaBuilder, ReplicaEvent};
