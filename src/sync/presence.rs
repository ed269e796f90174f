//! [`Presence`]: who else is here, from a running engine
//! ([`SyncHandle::presence`](super::SyncHandle::presence)).
//!
//! Publish my state (a cursor, a name), watch everybody's, leave on drop.
//! It rides the engine's live-updates client on the workspace's channel
//! (Realtime Presence through Supabase or the gateway; shared in process
//! through a `LocalHub`). Presence is ephemeral: never persisted, gone when
//! the client leaves or its connection drops, published again after a
//! reconnect.

use serde_json::Value;
use tokio::sync::watch;

use crate::id::WorkspaceId;
use crate::remote::{LiveError, PresenceState, Subscription};

/// This replica's presence on a workspace. Dropping it withdraws the state
/// it published.
pub struct Presence {
    sub: Subscription,
    key: String,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("workspace", &self.sub.workspace())
            .field("key", &self.key)
            .finish()
    }
}

impl Presence {
    pub(crate) fn new(sub: Subscription, key: String) -> Self {
        Self { sub, key }
    }

    /// The workspace.
    pub fn workspace(&self) -> WorkspaceId {
        self.sub.workspace()
    }

    /// My presence key: my entries appear under it in [`Presence::watch`].
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Publishes my state (a JSON object), replacing the previous one.
    ///
    /// # Errors
    /// [`LiveError::Presence`] when `state` is not a JSON object.
    pub fn publish(&self, state: Value) -> Result<(), LiveError> {
        self.sub.track(state)
    }

    /// Withdraws my state (I stay subscribed to the others').
    pub fn clear(&self) {
        self.sub.untrack();
    }

    /// Everybody present, me included (under [`Presence::key`]), updated as
    /// they come, change their state and go.
    pub fn watch(&self) -> watch::Receiver<PresenceState> {
        self.sub.presence()
    }

    /// Everybody present but me, now.
    pub fn others(&self) -> PresenceState {
        let mut all = self.sub.presence().borrow().clone();
        all.remove(&self.key);
        all
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.sub.untrack();
    }
}
