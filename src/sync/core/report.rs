//! What a sync pass did ([`SyncReport`]) and what it tells a progress bar
//! while it runs ([`SyncProgress`]).

use serde::Serialize;

use crate::id::WorkspaceId;

/// What a sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Local changes the remote stored now.
    pub pushed: usize,
    /// Local changes the remote already had (a retry after a lost response).
    pub already_present: usize,
    /// Local changes the remote rejected (moved to the dead letters).
    pub dead_lettered: usize,
    /// Push requests sent.
    pub push_batches: usize,
    /// Changes received in pulled pages.
    pub pulled: usize,
    /// Changes applied (including early arrivals that now fit).
    pub applied: usize,
    /// Pulled changes the replica already had.
    pub duplicates: usize,
    /// Remote changes still waiting for their dependencies.
    pub waiting: usize,
    /// Pulled changes that were corrupt (reported, skipped).
    pub remote_rejected: usize,
    /// Pages pulled.
    pub pages: usize,
    /// Snapshots uploaded.
    pub snapshots_uploaded: usize,
    /// Snapshots the server would not take (too large, refused for this
    /// document, or a read-only member): an optimisation skipped, not an
    /// error — the changes themselves are on the server.
    pub snapshots_skipped: usize,
    /// Snapshots downloaded and merged (bootstrap).
    pub snapshots_loaded: usize,
    /// Snapshots downloaded but not trusted (they did not hold exactly the
    /// changes they replace): their documents were pulled from the log.
    pub snapshots_untrusted: usize,
    /// Workspaces re-bootstrapped from snapshots because the remote pruned
    /// changes after this replica's cursor
    /// ([`RemoteError::CursorPruned`](crate::RemoteError::CursorPruned));
    /// the outbox was kept and pushed as usual.
    pub rebootstraps: usize,
    /// Workspaces this pass pulled: those the replica holds documents of,
    /// has synced or joined, plus those the caller named. 0 means there was
    /// nothing to pull (a fresh replica nobody told which workspace to join:
    /// [`SyncHandle::join`](crate::SyncHandle::join)).
    pub workspaces: usize,
    /// Wall time of the pass in ms.
    pub elapsed_ms: u64,
    /// Workspaces the remote said the user is no longer a member of
    /// ([`RemoteError::NotAMember`](crate::RemoteError::NotAMember)): their pull was skipped and their
    /// outbox entries moved to the dead letters with that reason; the rest
    /// of the pass went on. (Issue 16.)
    pub not_a_member: Vec<WorkspaceId>,
}

/// Progress of a pass, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncProgress {
    /// A push batch was confirmed.
    Pushed {
        /// Changes confirmed so far in this pass.
        done: usize,
        /// Outbox size when the pass started.
        total: usize,
    },
    /// A page was applied.
    Pulled {
        /// The workspace.
        workspace: WorkspaceId,
        /// Changes received so far in this pass.
        changes: usize,
        /// Pages so far.
        pages: usize,
    },
    /// A page of snapshots was loaded (bootstrap).
    Snapshots {
        /// The workspace.
        workspace: WorkspaceId,
        /// Snapshots loaded so far in this pass.
        loaded: usize,
    },
}
