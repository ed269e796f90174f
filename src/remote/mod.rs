//! Remotes: what a backend must do, and the implementations.
//!
//! [`Remote`] is the whole contract between the sync engine and a backend.
//! Every implementation has the same semantics:
//! - `push` stores each change once per (workspace, document, hash), verifies
//!   that the hash is the SHA-256 of the change chunk, and answers one
//!   [`PushOutcome`](crate::protocol::wire::PushOutcome) per change;
//! - `pull` returns the changes after a cursor in a gap-free order: a cursor
//!   never moves past a change that is not yet visible;
//! - snapshots are kept per document, the one covering the most wins.

use async_trait::async_trait;

use crate::protocol::wire::{
    PullPage, PullRequest, PushRequest, PushResponse, SnapshotOutcome, SnapshotPage, SnapshotQuery,
    SnapshotUpload,
};

/// Errors of a remote call (the call as a whole; per-change refusals are
/// [`PushOutcome::Rejected`](crate::protocol::wire::PushOutcome::Rejected) values).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The remote could not be reached, or the response was lost.
    #[error("remote unreachable: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
    },
    /// The call timed out.
    #[error("remote call timed out after {after_ms} ms")]
    Timeout {
        /// How long it waited.
        after_ms: u64,
    },
    /// The remote failed on its side (5xx, serialization failure); worth retrying.
    #[error("remote server error {status}: {message}")]
    Server {
        /// HTTP status or 0 for in-process remotes.
        status: u16,
        /// The remote's message.
        message: String,
    },
    /// The credentials are missing, invalid or expired: sync stops until the
    /// app supplies a fresh token.
    #[error("not authenticated: {message}")]
    Unauthenticated {
        /// The remote's message.
        message: String,
    },
    /// Authenticated, but not allowed (not a member of the workspace).
    #[error("forbidden: {message}")]
    Forbidden {
        /// The remote's message.
        message: String,
    },
    /// The request was malformed or refused as a whole.
    #[error("bad request ({code}): {message}")]
    BadRequest {
        /// The remote's error code (PostgREST/SQLSTATE code, or ours).
        code: String,
        /// The remote's message.
        message: String,
    },
    /// The request was too large: split the batch and retry.
    #[error("request too large: {message}")]
    TooLarge {
        /// The remote's message.
        message: String,
    },
    /// The remote speaks another protocol version or answered nonsense.
    #[error("protocol error: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The caller was a member of the workspace and is not any more (removed
    /// by an owner, or left): it can no longer pull or push there. Not
    /// retryable; the sync engine stops pushing that workspace's changes
    /// (they move to the dead letters) and reports the workspace.
    #[error("{message}")]
    NotAMember {
        /// The remote's message (`no longer a member of workspace W`).
        message: String,
    },
    /// A log pull's cursor is behind the workspace's horizon: the remote
    /// pruned changes after it (each folded into its document's snapshot,
    /// `docs/protocol.md`, "Pruned log"). Not retryable as it is: the sync
    /// core re-bootstraps the workspace from the snapshots (a pull that
    /// skips what snapshots hold, then the snapshots) and keeps the local
    /// outbox.
    #[error("{message}")]
    CursorPruned {
        /// The workspace's horizon: the highest pruned position (a cursor).
        horizon: String,
        /// The remote's message.
        message: String,
    },
    /// The change would leave a workspace without an owner.
    #[error("{message}")]
    LastOwner {
        /// The remote's message.
        message: String,
    },
    /// An invitation code that cannot be used: wrong, expired, used up or
    /// revoked (the server does not say which, nor whether the workspace
    /// exists).
    #[error("{message}")]
    InvalidInvitation {
        /// The remote's message.
        message: String,
    },
    /// This backend does not offer the operation.
    #[error("{op} is not supported here: {reason}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The embedded hub's storage failed.
    #[error("hub storage: {0}")]
    Storage(#[from] crate::store::StoreError),
    /// The embedded hub's blocking task panicked or was cancelled before it
    /// answered. Not retryable: a panic is a bug, a cancellation means the
    /// runtime is shutting down.
    #[error("the hub's blocking task for {op} failed: {source}")]
    Task {
        /// The remote operation (`push`, `pull`, ...).
        op: &'static str,
        /// tokio's report (panic or cancellation).
        #[source]
        source: tokio::task::JoinError,
    },
}

impl RemoteError {
    /// Whether retrying the same call later can succeed (drives backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RemoteError::Unavailable { .. }
                | RemoteError::Timeout { .. }
                | RemoteError::Server { .. }
                | RemoteError::Storage(_)
        )
    }

    /// Whether the error means "offline" (no answer at all) rather than an
    /// answer saying no.
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            RemoteError::Unavailable { .. } | RemoteError::Timeout { .. }
        )
    }
}

/// A backend that stores change logs and snapshots per workspace.
#[async_trait]
pub trait Remote: Send + Sync {
    /// Stores a batch of changes; one outcome per change, in order.
    ///
    /// # Errors
    /// The call as a whole failed; nothing can be assumed stored or not
    /// (retrying is safe: the remote deduplicates).
    async fn push(&self, req: PushRequest) -> Result<PushResponse, RemoteError>;

    /// Reads the changes after `req.cursor`.
    ///
    /// # Errors
    /// The call failed; the cursor did not move.
    async fn pull(&self, req: PullRequest) -> Result<PullPage, RemoteError>;

    /// Offers a snapshot of a document.
    ///
    /// # Errors
    /// The call failed.
    async fn put_snapshot(&self, snap: SnapshotUpload) -> Result<SnapshotOutcome, RemoteError>;

    /// Reads a page of a workspace's snapshots.
    ///
    /// # Errors
    /// The call failed.
    async fn get_snapshots(&self, query: SnapshotQuery) -> Result<SnapshotPage, RemoteError>;

    /// The live updates of this backend (nudges when a workspace's log
    /// grows, presence), if it has any: `LocalHub` in process, Supabase
    /// Realtime for `SupabaseRemote`. `None` (the default): poll.
    /// See `docs/realtime.md`.
    fn live_updates(&self) -> Option<std::sync::Arc<dyn LiveUpdates>> {
        None
    }
}

#[cfg(feature = "test-util")]
pub(crate) mod faulty;
mod hub_live;
mod hub_records;
mod live;
mod local_hub;
#[cfg(feature = "supabase")]
mod realtime;
#[cfg(feature = "supabase")]
mod refresh;
#[cfg(feature = "supabase")]
mod supabase;
#[cfg(feature = "supabase")]
mod supabase_workspaces;
mod workspaces;

pub use hub_live::HubLive;
#[cfg(feature = "test-util")]
pub(crate) use hub_records::HubFormat;
pub use live::{
    ChannelState, ConnectionState, LiveError, LiveUpdates, Nudge, NudgeKind, PresenceEntry,
    PresenceState, Subscription,
};
pub use local_hub::{LocalHub, PruneReport};
#[cfg(feature = "supabase")]
pub use realtime::{RealtimeClient, RealtimeClientBuilder};
#[cfg(feature = "supabase")]
pub use refresh::{jwt_claims, jwt_expiry, AuthSession, RefreshingToken, SessionSink};
#[cfg(feature = "supabase")]
pub use supabase::{
    AccessTokenProvider, StaticToken, SupabaseConfigError, SupabaseRemote, SupabaseRemoteBuilder,
    TokenError,
};
pub use workspaces::{
    CreatedInvite, InvalidRole, Invite, InviteOptions, InviteRef, InviteState, Joined, Member,
    MemberRole, WorkspaceAdmin, WorkspaceSummary,
};
