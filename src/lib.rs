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
//! The crate is layered; each module imports only modules below it (a unit
//! test, `layering`, reads every `use crate::` and checks it; the picture is
//! in `docs/architecture.md`). The modules are private: what an app needs is
//! re-exported here.
//!
//! | layer | modules | responsibility |
//! |-------|---------|----------------|
//! | foundation | `id`, `clock`, `hash`, `pointer` | typed ids, the injectable clock and the hybrid logical clock, the one change-hash type and its serde forms, JSON pointers. |
//! | model | `conflict`, `entity`, `migrate` | last-writer-wins by effective timestamp (a hybrid logical clock derived from the change graph), how an entity lives in its Automerge document, deterministic schema migrations. |
//! | protocol | `protocol` | the wire types every backend speaks and change-chunk verification, below both replicas and remotes. |
//! | storage | `store` | the sled trees under a replica: typed keys, versioned records, one atomic transaction per commit. |
//! | remotes | `remote` | the [`Remote`] contract, the embedded [`LocalHub`], the Supabase client (feature `supabase`). |
//! | errors | `error` | the crate [`Error`], every module's error gathered. |
//! | replica | `replica` | the local [`Replica`]: writes, reads, conflicts, migrations, remote apply, compaction, and the [`SyncPort`] the engine uses. Plain blocking I/O, no tokio. |
//! | sync | `sync` | one sync pass ([`sync_once`]) and the tokio [`SyncEngine`] deciding when to run it (local commits, live nudges, polls), and [`Presence`]. |
//! | doctor | [`doctor`] | checking a replica directory, and moving what is damaged to quarantine (`supamerge doctor`). |
//! | tools | `gateway`, `bench`, `cli`, `demo` | (features `gateway`, `bench`, `cli`) the local PostgREST-compatible gateway, the benchmark workloads, the `supamerge` command line and its demo. |
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | `supabase` | yes | `SupabaseRemote`, the client of a Supabase project (reqwest). Without it (`default-features = false`) the crate is the engine alone: replica, sync engine, [`LocalHub`], and any [`Remote`] of your own. |
//! | `test-util` | no | `supamerge::test_util`: the fault-injecting remote, storage inspection and outbox fault injection, for tests. |
//! | `gateway` | no | `supamerge::gateway`, the local PostgREST-compatible RPC gateway (axum, tokio-postgres). |
//! | `bench` | no | `supamerge::bench`, the benchmark workloads (samod as a baseline). |
//! | `cli` | no | the `supamerge` command line (clap, indicatif); the binary needs `cli`, `gateway` and `bench`. |
//!
//! # Automerge and autosurgeon
//!
//! The crate re-exports the versions it is built with:
//! [`supamerge::automerge`](automerge) is automerge **0.12** and
//! [`supamerge::autosurgeon`](autosurgeon) is autosurgeon **0.14**. Use them
//! for raw documents ([`Replica::with_doc`], [`Replica::transact`]) so the
//! types always match. autosurgeon's derive macros (`#[derive(Reconcile,
//! Hydrate)]`) expand to paths starting with `::autosurgeon`, so an app
//! deriving them also lists `autosurgeon = "0.14"` in its own
//! `[dependencies]`; Cargo then uses that one copy for both.
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
//!    logical clock).
//! 2. **Chunk + outbox, one transaction.** The new change's bytes are stored
//!    as an incremental chunk of the document *and* appended to the outbox in
//!    one sled transaction over all trees, flushed before the call returns
//!    ([`Durability::Immediate`]). There is no moment where one is on
//!    disk and the other is not; a `SIGKILL` right after the call returns loses
//!    nothing. Subscribers get [`ReplicaEvent::DocChanged`] with
//!    [`Origin::Local`]. Once the chunks outgrow the snapshot, compaction folds
//!    them into a new snapshot — again one atomic transaction.
//! 3. **Push.** The sync engine reads the oldest outbox entries
//!    ([`SyncPort::peek`]), pushes them in bounded batches, and removes the ones
//!    the server confirmed ([`SyncPort::ack`]). A lost response is simply pushed
//!    again: the server deduplicates by (document, change hash).
//! 4. **Server.** The backend verifies each change's hash and appends it to a
//!    gap-free per-workspace log, and announces the push on the workspace's
//!    Realtime channel (a nudge: where the log grew, never data).
//! 5. **Pull.** Other replicas' engines, subscribed to that channel, pull at
//!    once (or at their next poll if the nudge was lost): pages of changes
//!    after their cursor,
//!    gathering consecutive pages into batches (fetching the next while one
//!    is applied).
//! 6. **Batched apply.** [`SyncPort::apply_remote`] groups a batch by document
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
//! use supamerge::{Collection, Replica, SyncPort, WorkspaceId};
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
//! let hashes: Vec<_> = outbox.iter().map(|e| e.hash).collect();
//! replica.ack(&hashes)?;
//! assert_eq!(replica.pending(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! [Automerge]: https://automerge.org

#![warn(missing_docs)]

mod clock;
mod conflict;
mod entity;
mod error;
mod hash;
mod id;
mod migrate;
mod pointer;
mod protocol;
mod remote;
mod replica;
mod store;
mod sync;

pub mod archive;
#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
#[cfg(feature = "cli")]
mod demo;
pub mod doctor;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod raw;
#[cfg(feature = "test-util")]
pub mod test_util;

#[cfg(test)]
mod layering;

/// Every Rust snippet of the README and `docs/` is compiled (and, unless
/// marked `no_run`, run) as a doc test: `cargo test --doc`.
#[cfg(doctest)]
mod doc_snippets {
    #[doc = include_str!("../README.md")]
    mod readme {}
    #[doc = include_str!("../docs/conflicts.md")]
    mod conflicts {}
    #[cfg(feature = "supabase")]
    #[doc = include_str!("../docs/operations.md")]
    mod operations {}
    #[cfg(feature = "supabase")]
    #[doc = include_str!("../docs/realtime.md")]
    mod realtime {}
    #[cfg(feature = "supabase")]
    #[doc = include_str!("../docs/supabase.md")]
    mod supabase {}
}

pub use automerge;
pub use autosurgeon;

pub use clock::{Clock, ManualClock, SkewedClock, SystemClock};
pub use conflict::{Candidate, Conflict, Side};
pub use entity::EntityError;
pub use error::{Error, Result};
pub use id::{Collection, DocId, IdError, WorkspaceId, MAX_COLLECTION_LEN};
pub use migrate::{migration_actor, migration_actor_v1, Migration, MigrationError};
pub use pointer::{JsonPointer, PointerError};
pub use protocol::realtime::{
    workspace_topic, NudgePayload, MAX_NUDGE_DOCS, NUDGE_EVENT, NUDGE_VERSION,
};
pub use protocol::{
    ChangeEnvelope, Cursor, DownloadedSnapshot, PullPage, PullRequest, PulledChange, PushOutcome,
    PushRequest, PushResponse, SnapshotCheckError, SnapshotDigest, SnapshotOutcome, SnapshotPage,
    SnapshotQuery, SnapshotRecord, SnapshotUpload, MAX_PULL_LIMIT, MAX_PUSH_BYTES, MAX_PUSH_COUNT,
    MAX_SNAPSHOT_BYTES, SNAPSHOT_PAGE_VERSION, WIRE_VERSION,
};
#[cfg(feature = "supabase")]
pub use remote::{
    jwt_claims, jwt_expiry, AccessTokenProvider, AuthSession, RealtimeClient,
    RealtimeClientBuilder, RefreshingToken, SessionSink, StaticToken, SupabaseConfigError,
    SupabaseRemote, SupabaseRemoteBuilder, TokenError,
};
pub use remote::{
    ChannelState, ConnectionState, HubLive, LiveError, LiveUpdates, Nudge, NudgeKind,
    PresenceEntry, PresenceState, Subscription,
};
pub use remote::{
    CreatedInvite, InvalidRole, Invite, InviteOptions, InviteRef, InviteState, Joined, LocalHub,
    Member, MemberRole, PruneReport, Remote, RemoteError, WorkspaceAdmin, WorkspaceSummary,
};
pub use replica::{
    ApplyReport, ChangeError, CompactionPolicy, EntityInfo, HistoryEntry, ImportedDoc, Origin,
    RemoteChange, Replica, ReplicaBuilder, ReplicaEvent, SyncPort, DEFAULT_CACHE_BYTES,
};
pub use store::{
    CursorRecord, DamagedRecord, DeadLetter, Durability, ListReport, OutboxEntry, Recovery,
    StoreError,
};
pub use sync::{
    sync_once, AsyncReplica, Backoff, LiveStatus, Presence, SyncConfig, SyncEngine,
    SyncEngineBuilder, SyncError, SyncErrorKind, SyncEvent, SyncHandle, SyncProgress, SyncReport,
    SyncState, SyncStatus, SyncWarning,
};
