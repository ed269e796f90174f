//! Synchronisation: the wire protocol, push, pull and the tokio engine.
//!
//! - [`wire`]: the serde types every backend speaks;
//! - [`chunk`]: verification of change chunks (hash and framing);
//! - [`snapshot_check`]: a downloaded snapshot is trusted only if it holds
//!   exactly the changes it replaces;
//! - [`backoff`]: the pure retry schedule;
//! - [`session`]: one sync pass — push the outbox, pull every page, bootstrap
//!   from snapshots, upload snapshots — as plain async functions;
//! - [`engine`]: the tokio task that decides when to run a session.

pub mod backoff;
pub mod chunk;
pub mod engine;
pub mod session;
pub mod snapshot_check;
pub mod wire;

pub use engine::{
    SyncEngine, SyncEngineBuilder, SyncError, SyncEvent, SyncHandle, SyncState, SyncStatus,
};
pub use session::{SyncConfig, SyncReport};
