//! Synchronisation: push, pull and the tokio engine (the wire protocol is
//! [`crate::protocol`]).
//!
//! - [`backoff`]: the pure retry schedule;
//! - [`session`]: one sync pass — push the outbox, pull every page, bootstrap
//!   from snapshots, upload snapshots — as plain async functions;
//! - [`engine`]: the tokio task that decides when to run a session;
//! - [`live`]: the engine's live updates (a subscription per synced
//!   workspace, nudges as triggers, the live status);
//! - [`own_pushes`]: what the engine's own pushes stored (their nudges need
//!   no pull) and which workspaces it pulls;
//! - [`presence`]: [`Presence`], who else is here;
//! - [`nonblocking`]: [`AsyncReplica`], the replica's calls on the blocking
//!   pool for apps' async code.

mod backoff;
mod engine;
mod live;
mod nonblocking;
mod own_pushes;
mod presence;
pub(crate) mod session;

pub use backoff::Backoff;
pub use engine::{
    SyncEngine, SyncEngineBuilder, SyncError, SyncErrorKind, SyncEvent, SyncHandle, SyncState,
    SyncStatus, SyncWarning,
};
pub use live::LiveStatus;
pub use nonblocking::AsyncReplica;
pub use presence::Presence;
pub use session::{sync_once, SyncConfig, SyncProgress, SyncReport};
