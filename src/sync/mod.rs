//! Synchronisation: push, pull and the tokio engine (the wire protocol is
//! [`crate::protocol`]).
//!
//! - [`core`]: every decision of a sync pass as a state machine with no I/O
//!   (no tokio, sled, reqwest or clock reads): it takes the time and the
//!   outcome of an effect and returns the next effects; and the schedule
//!   of passes (triggers, debounce, coalescing, backoff) the same way;
//! - [`session`]: one sync pass executed — the shell that runs the core's
//!   effects on tokio (replica calls on the blocking pool, remote calls);
//! - [`engine`]: the tokio task that runs the core's schedule: it feeds it
//!   commands, nudges and the time, and runs the passes it asks for;
//! - [`live`]: the engine's live updates (a subscription per synced
//!   workspace, nudges as triggers, the live status);
//! - [`own_pushes`]: what the engine's own pushes stored (their nudges need
//!   no pull) and which workspaces it pulls;
//! - [`presence`]: [`Presence`], who else is here;
//! - [`nonblocking`]: [`AsyncReplica`], the replica's calls on the blocking
//!   pool for apps' async code.

pub(crate) mod core;
mod engine;
mod live;
mod nonblocking;
mod own_pushes;
mod presence;
pub(crate) mod session;

pub use self::core::{Backoff, SyncErrorKind};
pub use engine::{
    SyncEngine, SyncEngineBuilder, SyncError, SyncEvent, SyncHandle, SyncState, SyncStatus,
    SyncWarning,
};
pub use live::LiveStatus;
pub use nonblocking::AsyncReplica;
pub use presence::Presence;
pub use session::{sync_once, SyncConfig, SyncProgress, SyncReport};
