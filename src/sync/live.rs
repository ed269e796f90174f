//! The engine's live updates: one [`Subscription`] per workspace it syncs,
//! turned into triggers of the engine's loop (`docs/realtime.md` §4).
//!
//! A follower task per subscription moves its (already coalesced) nudges
//! into one mailbox of the engine and wakes it; a watcher wakes it when the
//! connection's state changes. The engine then asks [`EngineLive::take`]
//! whether the nudges call for a pull (a resync always does; a nudge whose
//! every seq this engine stored does not), and [`EngineLive::status`] for
//! the connection and channel states it publishes. A nudge is never needed
//! for correctness: the engine polls on its interval whenever
//! [`EngineLive::healthy`] is false, and on a long fallback interval
//! otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::own_pushes::Seen;
use crate::id::WorkspaceId;
use crate::remote::{ChannelState, ConnectionState, LiveUpdates, Nudge, NudgeKind, Subscription};

/// The live part of the engine's status: the realtime connection and each
/// synced workspace's channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveStatus {
    /// The connection of the live-updates client.
    pub connection: ConnectionState,
    /// Each subscribed workspace's channel.
    pub channels: BTreeMap<WorkspaceId, ChannelState>,
}

impl LiveStatus {
    /// Whether nudges can flow for every subscribed workspace: connected,
    /// and every channel joined (at least one).
    pub fn is_live(&self) -> bool {
        self.connection.is_connected()
            && !self.channels.is_empty()
            && self.channels.values().all(|c| *c == ChannelState::Joined)
    }
}

/// The mailbox the followers fill and the engine empties.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    nudges: Mutex<HashMap<WorkspaceId, Nudge>>,
    notify: Notify,
}

impl Wake {
    fn deliver(&self, nudge: Nudge) {
        {
            let mut n = self.nudges.lock().unwrap_or_else(|e| e.into_inner());
            match n.get_mut(&nudge.workspace) {
                Some(p) => p.merge(nudge),
                None => {
                    n.insert(nudge.workspace, nudge);
                }
            }
        }
        self.notify.notify_one();
    }

    /// Resolves when something arrived since the last call (a permit is
    /// kept when nobody waits, so nothing is missed).
    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// One subscribed workspace.
struct Follower {
    channel: watch::Receiver<ChannelState>,
    /// Owns the subscription: aborting it leaves the channel.
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the engine holds of its live updates.
pub(crate) struct EngineLive {
    live: Arc<dyn LiveUpdates>,
    seen: Arc<Seen>,
    wake: Arc<Wake>,
    followers: HashMap<WorkspaceId, Follower>,
    connection: watch::Receiver<ConnectionState>,
    watcher: JoinHandle<()>,
}

impl Drop for EngineLive {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl EngineLive {
    /// Starts watching `live`'s connection (on the current runtime).
    pub(crate) fn new(live: Arc<dyn LiveUpdates>, seen: Arc<Seen>) -> Self {
        let wake = Arc::new(Wake::default());
        let connection = live.state();
        let mut changes = live.state();
        let w = wake.clone();
        let watcher = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                w.notify.notify_one();
            }
        });
        Self {
            live,
            seen,
            wake,
            followers: HashMap::new(),
            connection,
            watcher,
        }
    }

    /// The mailbox to wait on.
    pub(crate) fn wake(&self) -> Arc<Wake> {
        self.wake.clone()
    }

    /// Subscribes to every workspace in `want` not yet followed (a pass
    /// pulled it, or the app named it), and drops the subscriptions of
    /// `gone` (the user is no longer a member).
    pub(crate) fn follow(&mut self, want: &[WorkspaceId], gone: &[WorkspaceId]) {
        for ws in gone {
            self.followers.remove(ws);
        }
        for ws in want.iter().chain(self.seen.pulled().iter()) {
            if gone.contains(ws) || self.followers.contains_key(ws) {
                continue;
            }
            match self.live.subscribe(*ws) {
                Ok(sub) => {
                    let channel = sub.channel();
                    let task = tokio::spawn(follow(sub, self.wake.clone()));
                    self.followers.insert(*ws, Follower { channel, task });
                }
                Err(e) => {
                    tracing::warn!(workspace = %ws, error = %e, "no live updates; polling");
                }
            }
        }
    }

    /// Empties the mailbox: whether a pull is wanted (a resync, or a push
    /// that is not all ours), and how many nudges were our own pushes'.
    pub(crate) fn take(&self) -> (bool, usize) {
        let nudges: Vec<Nudge> = self
            .wake
            .nudges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, n)| n)
            .collect();
        let mut pull = false;
        let mut own = 0;
        for n in nudges {
            match n.kind {
                NudgeKind::Resync => pull = true,
                NudgeKind::Pushed { from_seq, to_seq } => {
                    if self.seen.own_covers(n.workspace, from_seq, to_seq) {
                        own += 1;
                    } else {
                        pull = true;
                    }
                }
            }
        }
        (pull, own)
    }

    /// The connection and channel states now.
    pub(crate) fn status(&self) -> LiveStatus {
        LiveStatus {
            connection: self.connection.borrow().clone(),
            channels: self
                .followers
                .iter()
                .map(|(ws, f)| (*ws, f.channel.borrow().clone()))
                .collect(),
        }
    }
}

/// Moves a subscription's nudges into the engine's mailbox, and wakes the
/// engine when the channel's state changes.
async fn follow(mut sub: Subscription, wake: Arc<Wake>) {
    let mut channel = sub.channel();
    loop {
        tokio::select! {
            n = sub.next() => match n {
                Some(n) => wake.deliver(n),
                None => {
                    // The client shut down: the channel says Closed.
                    wake.notify.notify_one();
                    return;
                }
            },
            r = channel.changed() => {
                if r.is_err() {
                    return;
                }
                wake.notify.notify_one();
            }
        }
    }
}
