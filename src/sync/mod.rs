//! Synchronisation: push, pull and the tokio engine (the wire protocol is
//! [`crate::protocol`]).
//!
//! - [`backoff`]: the pure retry schedule;
//! - [`session`]: one sync pass — push the outbox, pull every page, bootstrap
//!   from snapshots, upload snapshots — as plain async functions;
//! - [`engine`]: the tokio task that decides when to run a session.

mod backoff;
mod engine;
mod nonblocking;
pub(crate) mod session;

pub use backoff::Backoff;
pub use engine::{
    SyncEngine, SyncEngineBuilder, SyncError, SyncErrorKind, SyncEvent, SyncHandle, SyncState,
    SyncStatus, SyncWarning,
};
pub use nonblocking::AsyncReplica;
pub use session::{sync_once, SyncConfig, SyncProgress, SyncReport};
