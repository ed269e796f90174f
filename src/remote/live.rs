//! Live updates: the nudges a remote sends when a workspace's log grows,
//! and presence (who is here, and their ephemeral state) on the same
//! channel.
//!
//! [`LiveUpdates`] is what a remote offers; two implement it:
//! [`LocalHub::live`](crate::LocalHub::live) (in process) and
//! `RealtimeClient` (feature `supabase`: a Supabase Realtime websocket to a
//! project or to the local gateway, from
//! `SupabaseRemote::realtime`).
//!
//! A [`Subscription`] to a workspace yields [`Nudge`]s. Nudges are hints,
//! never data and never needed for correctness: the receiver pulls. They
//! are **coalesced** in the subscription (a slow reader finds one nudge
//! covering everything since its last read, never a queue), and a
//! [`NudgeKind::Resync`] nudge follows every (re)join of the channel, since
//! nudges sent while the channel was down are lost. Presence is a
//! [`watch`] of everybody present ([`PresenceState`]); [`Subscription::track`]
//! publishes this client's state, [`Subscription::untrack`] withdraws it,
//! and dropping the last subscription of a workspace leaves the channel.
//!
//! The sync engine subscribes to the workspaces it syncs and pulls on a
//! nudge (`crate::sync`, `docs/realtime.md` §4).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::id::{DocId, WorkspaceId};
use crate::protocol::realtime::MAX_NUDGE_DOCS;

/// Errors of the live-updates API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// The client needs a tokio runtime to run its connection, and there is none.
    #[error("live updates need a tokio runtime: {reason}")]
    NoRuntime {
        /// tokio's message.
        reason: String,
    },
    /// The client was shut down.
    #[error("the live-updates client was shut down")]
    Closed,
    /// The remote offers no live updates (or the engine was told to poll
    /// only): presence needs Supabase Realtime (or the gateway) or a
    /// `LocalHub`.
    #[error("this remote offers no live updates (presence needs Realtime or a LocalHub)")]
    NotOffered,
    /// A presence state that cannot be published.
    #[error("invalid presence state for workspace {workspace}: {reason}")]
    Presence {
        /// The workspace.
        workspace: WorkspaceId,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a nudge was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NudgeKind {
    /// Pushes stored the changes `from_seq..=to_seq` (coalesced nudges
    /// cover every range they merged).
    Pushed {
        /// The first sequence number stored.
        from_seq: u64,
        /// The last sequence number stored: the newest position.
        to_seq: u64,
    },
    /// The channel (re)joined: nudges may have been missed; pull.
    Resync,
}

/// A hint that a workspace's log grew: pull it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nudge {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// What happened.
    pub kind: NudgeKind,
    /// Documents touched (at most 50; see `docs_complete`).
    pub docs: Vec<DocId>,
    /// Whether `docs` names every document touched.
    pub docs_complete: bool,
}

impl Nudge {
    /// Folds a later nudge of the same workspace into this one: the seq
    /// ranges merge, documents are united (up to 50), a resync wins.
    pub fn merge(&mut self, later: Nudge) {
        self.kind = match (self.kind, later.kind) {
            (NudgeKind::Resync, _) | (_, NudgeKind::Resync) => NudgeKind::Resync,
            (
                NudgeKind::Pushed {
                    from_seq: a,
                    to_seq: b,
                },
                NudgeKind::Pushed {
                    from_seq: c,
                    to_seq: d,
                },
            ) => NudgeKind::Pushed {
                from_seq: a.min(c),
                to_seq: b.max(d),
            },
        };
        let mut complete = self.docs_complete && later.docs_complete;
        for d in later.docs {
            if self.docs.contains(&d) {
                continue;
            }
            if self.docs.len() >= MAX_NUDGE_DOCS {
                complete = false;
                break;
            }
            self.docs.push(d);
        }
        self.docs_complete = complete;
    }
}

/// The connection of a live-updates client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectionState {
    /// No subscription: nothing to connect for.
    Idle,
    /// Opening the connection (`attempt` 0 is the first try).
    Connecting {
        /// Failed attempts before this one.
        attempt: u32,
    },
    /// Connected; channels join (see [`Subscription::channel`]).
    Connected,
    /// The connection failed or dropped; the next attempt is scheduled.
    Disconnected {
        /// Failed attempts so far.
        attempt: u32,
        /// The delay before the next attempt, in milliseconds.
        retry_in_ms: u64,
        /// What happened.
        reason: String,
    },
    /// The client was shut down.
    Closed,
}

impl ConnectionState {
    /// Whether messages can flow now.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected)
    }
}

/// A workspace's channel, as one client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChannelState {
    /// Waiting for the connection or for the join's answer.
    Joining,
    /// Joined: nudges and presence flow.
    Joined,
    /// The server refused the join (not a member, bad or expired token...)
    /// or closed the channel; the client tries again later with a fresh token.
    Refused {
        /// The server's reason, as Realtime words it.
        reason: String,
    },
    /// Left (the last subscription was dropped) or the client shut down.
    Closed,
}

/// One client's presence on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The server's reference of this presence (changes with every update).
    pub presence_ref: String,
    /// The state the client published with [`Subscription::track`].
    pub meta: Value,
}

/// Everybody present on a channel: presence key → their entries (a key
/// has several when one user is present from several connections).
pub type PresenceState = BTreeMap<String, Vec<PresenceEntry>>;

/// The coalescing mailbox of one subscription.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct InboxState {
    pending: Option<Nudge>,
    closed: bool,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a nudge (merged into the pending one).
    pub(crate) fn deliver(&self, nudge: Nudge) {
        {
            let mut s = self.lock();
            if s.closed {
                return;
            }
            match &mut s.pending {
                Some(p) => p.merge(nudge),
                None => s.pending = Some(nudge),
            }
        }
        self.notify.notify_one();
    }

    /// No more nudges will come.
    #[cfg_attr(not(feature = "supabase"), allow(dead_code))] // used by the websocket client
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    fn take(&self) -> Result<Option<Nudge>, ()> {
        let mut s = self.lock();
        match s.pending.take() {
            Some(n) => Ok(Some(n)),
            None if s.closed => Err(()),
            None => Ok(None),
        }
    }
}

/// What a [`Subscription`] asks of the client that made it.
pub(crate) trait SubscriptionBackend: Send + Sync {
    /// Publishes (`Some`) or withdraws (`None`) this client's presence.
    fn set_presence(&self, workspace: WorkspaceId, meta: Option<Value>);
    /// The subscription `id` was dropped.
    fn unsubscribe(&self, workspace: WorkspaceId, id: u64);
}

/// A subscription to a workspace's live updates. Dropping it leaves the
/// channel (when it was the client's last subscription of the workspace).
pub struct Subscription {
    workspace: WorkspaceId,
    id: u64,
    inbox: Arc<Inbox>,
    channel: watch::Receiver<ChannelState>,
    presence: watch::Receiver<PresenceState>,
    backend: Arc<dyn SubscriptionBackend>,
    /// A test fault: drops `Pushed` nudges while it is on.
    loss: Option<Arc<NudgeLoss>>,
}

/// A fault for tests (`FaultyRemote::lose_nudges`): while on, the
/// subscriptions it is attached to drop every nudge that is not a resync,
/// as a network or a full queue would.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "test-util"), allow(dead_code))] // used by FaultyRemote
pub(crate) struct NudgeLoss {
    on: AtomicBool,
    lost: AtomicU64,
}

#[cfg_attr(not(feature = "test-util"), allow(dead_code))] // used by FaultyRemote
impl NudgeLoss {
    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }

    /// Whether `nudge` is lost (and counts it).
    fn swallows(&self, nudge: &Nudge) -> bool {
        let lose = self.on.load(Ordering::SeqCst) && nudge.kind != NudgeKind::Resync;
        if lose {
            self.lost.fetch_add(1, Ordering::SeqCst);
        }
        lose
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("workspace", &self.workspace)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The workspace.
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// Waits for the next nudge: everything since the last call, merged
    /// into one. `None` once the client is shut down.
    pub async fn next(&mut self) -> Option<Nudge> {
        loop {
            // Registered before looking, so a delivery in between is not lost.
            let notified = self.inbox.notify.notified();
            match self.inbox.take() {
                Ok(Some(n)) if self.lost(&n) => continue,
                Ok(Some(n)) => return Some(n),
                Err(()) => return None,
                Ok(None) => notified.await,
            }
        }
    }

    /// The pending nudge, if any, without waiting.
    pub fn try_next(&mut self) -> Option<Nudge> {
        self.inbox.take().ok().flatten().filter(|n| !self.lost(n))
    }

    fn lost(&self, nudge: &Nudge) -> bool {
        self.loss.as_ref().is_some_and(|l| l.swallows(nudge))
    }

    /// Attaches a nudge-loss fault (tests).
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))] // used by FaultyRemote
    pub(crate) fn with_loss(mut self, loss: Arc<NudgeLoss>) -> Self {
        self.loss = Some(loss);
        self
    }

    /// The channel's state (joined, refused, ...).
    pub fn channel(&self) -> watch::Receiver<ChannelState> {
        self.channel.clone()
    }

    /// Everybody present on the channel (updated as they come and go).
    pub fn presence(&self) -> watch::Receiver<PresenceState> {
        self.presence.clone()
    }

    /// Publishes this client's presence state (a JSON object: a cursor, a
    /// name...). It replaces the previous one, is re-published after a
    /// reconnect, and is never persisted.
    ///
    /// # Errors
    /// [`LiveError::Presence`] when `meta` is not a JSON object.
    pub fn track(&self, meta: Value) -> Result<(), LiveError> {
        if !meta.is_object() {
            return Err(LiveError::Presence {
                workspace: self.workspace,
                reason: "the presence state must be a JSON object".into(),
            });
        }
        self.backend.set_presence(self.workspace, Some(meta));
        Ok(())
    }

    /// Withdraws this client's presence.
    pub fn untrack(&self) {
        self.backend.set_presence(self.workspace, None);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.backend.unsubscribe(self.workspace, self.id);
    }
}

/// A source of live updates: [`LocalHub::live`](crate::LocalHub::live), or
/// Supabase Realtime (`SupabaseRemote::realtime`).
pub trait LiveUpdates: Send + Sync {
    /// Subscribes to a workspace: the channel joins in the background
    /// ([`Subscription::channel`] says when). Several subscriptions of one
    /// workspace share the channel.
    ///
    /// # Errors
    /// [`LiveError::NoRuntime`] outside a tokio runtime (the websocket
    /// client runs on it), [`LiveError::Closed`] after a shutdown.
    fn subscribe(&self, workspace: WorkspaceId) -> Result<Subscription, LiveError>;

    /// The connection's state.
    fn state(&self) -> watch::Receiver<ConnectionState>;

    /// This client's presence key (the key its [`Subscription::track`]
    /// state appears under in [`Subscription::presence`]).
    fn presence_key(&self) -> String;
}

/// A workspace's channel inside a client: its subscriptions and what they
/// share.
#[derive(Debug)]
#[cfg_attr(not(feature = "supabase"), allow(dead_code))] // used by the websocket client
pub(crate) struct Topic {
    /// Each subscription's inbox.
    pub(crate) inboxes: HashMap<u64, Arc<Inbox>>,
    /// The channel's state for every subscription.
    pub(crate) channel: watch::Sender<ChannelState>,
    /// Everybody present, for every subscription.
    pub(crate) presence: watch::Sender<PresenceState>,
    /// What this client publishes as its presence (re-published after a rejoin).
    pub(crate) tracked: Option<Value>,
}

impl Topic {
    pub(crate) fn new(initial: ChannelState) -> Self {
        Self {
            inboxes: HashMap::new(),
            channel: watch::channel(initial).0,
            presence: watch::channel(PresenceState::new()).0,
            tracked: None,
        }
    }

    /// Gives a nudge to every subscription.
    #[cfg_attr(not(feature = "supabase"), allow(dead_code))] // used by the websocket client
    pub(crate) fn deliver(&self, nudge: &Nudge) {
        for inbox in self.inboxes.values() {
            inbox.deliver(nudge.clone());
        }
    }

    /// Ends every subscription's stream.
    #[cfg_attr(not(feature = "supabase"), allow(dead_code))] // used by the websocket client
    pub(crate) fn close(&self) {
        for inbox in self.inboxes.values() {
            inbox.close();
        }
        self.channel.send_replace(ChannelState::Closed);
    }
}

/// Subscription ids, unique in the process.
static NEXT_SUBSCRIPTION: AtomicU64 = AtomicU64::new(1);

/// Builds a subscription handle on `topic`'s watches; the caller keeps
/// the returned inbox (under the returned id) to deliver nudges to it.
pub(crate) fn attach(
    workspace: WorkspaceId,
    topic: &Topic,
    backend: Arc<dyn SubscriptionBackend>,
) -> (Subscription, u64, Arc<Inbox>) {
    let id = NEXT_SUBSCRIPTION.fetch_add(1, Ordering::Relaxed);
    let inbox = Arc::new(Inbox::default());
    let sub = Subscription {
        workspace,
        id,
        inbox: inbox.clone(),
        channel: topic.channel.subscribe(),
        presence: topic.presence.subscribe(),
        backend,
        loss: None,
    };
    (sub, id, inbox)
}

/// The entries of a Phoenix presence map (`{key: {"metas": [...]}}`):
/// `phx_ref` becomes `presence_ref`; `phx_ref_prev` is dropped.
#[cfg_attr(not(feature = "supabase"), allow(dead_code))] // used by the websocket client
fn entries_of(value: &Value) -> PresenceState {
    let mut out = PresenceState::new();
    let Some(map) = value.as_object() else {
        return out;
    };
    for (key, p) in map {
        let metas = p.get("metas").and_then(Value::as_array);
        let entries: Vec<PresenceEntry> = metas
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let mut m = m.as_object()?.clone();
                let presence_ref = match m.remove("phx_ref") {
                    Some(Value::String(s)) => s,
                    _ => return None,
                };
                m.remove("phx_ref_prev");
                Some(PresenceEntry {
                    presence_ref,
                    meta: Value::Object(m),
                })
            })
            .collect();
        if !entries.is_empty() {
            out.insert(key.clone(), entries);
        }
    }
    out
}

/// The state a `presence_state` event carries.
#[cfg_attr(not(feature = "supabase"), allow(dead_code))] // used by the websocket client
pub(crate) fn presence_from_state(payload: &Value) -> PresenceState {
    entries_of(payload)
}

/// Applies a `presence_diff` (`{"joins": {...}, "leaves": {...}}`) the way
/// Phoenix's `Presence.syncDiff` does: a join replaces the key's entries of
/// the same refs, a leave removes the entries of its refs.
#[cfg_attr(not(feature = "supabase"), allow(dead_code))] // used by the websocket client
pub(crate) fn apply_presence_diff(state: &mut PresenceState, diff: &Value) {
    let joins = entries_of(diff.get("joins").unwrap_or(&Value::Null));
    let leaves = entries_of(diff.get("leaves").unwrap_or(&Value::Null));
    for (key, joined) in joins {
        let current = state.entry(key).or_default();
        current.retain(|e| !joined.iter().any(|j| j.presence_ref == e.presence_ref));
        current.extend(joined);
    }
    for (key, left) in leaves {
        if let Some(current) = state.get_mut(&key) {
            current.retain(|e| !left.iter().any(|l| l.presence_ref == e.presence_ref));
            if current.is_empty() {
                state.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ws() -> WorkspaceId {
        "0190b1a2-0000-7000-8000-000000000001".parse().unwrap()
    }

    fn doc(n: u8) -> DocId {
        DocId::from_slice(&[n; 16]).unwrap()
    }

    #[test]
    fn nudges_merge_ranges_docs_and_resync() {
        let pushed = |a, b, docs: Vec<DocId>| Nudge {
            workspace: ws(),
            kind: NudgeKind::Pushed {
                from_seq: a,
                to_seq: b,
            },
            docs,
            docs_complete: true,
        };
        let mut n = pushed(5, 7, vec![doc(1)]);
        n.merge(pushed(8, 9, vec![doc(1), doc(2)]));
        assert_eq!(
            n.kind,
            NudgeKind::Pushed {
                from_seq: 5,
                to_seq: 9
            }
        );
        assert_eq!(n.docs, vec![doc(1), doc(2)]);
        assert!(n.docs_complete);
        let many: Vec<DocId> = (0..60).map(doc).collect();
        n.merge(pushed(10, 10, many));
        assert_eq!(n.docs.len(), MAX_NUDGE_DOCS);
        assert!(!n.docs_complete);
        n.merge(Nudge {
            workspace: ws(),
            kind: NudgeKind::Resync,
            docs: vec![],
            docs_complete: false,
        });
        assert_eq!(n.kind, NudgeKind::Resync);
    }

    #[tokio::test]
    async fn an_inbox_coalesces_and_ends() {
        let inbox = Arc::new(Inbox::default());
        for i in 1..=100 {
            inbox.deliver(Nudge {
                workspace: ws(),
                kind: NudgeKind::Pushed {
                    from_seq: i,
                    to_seq: i,
                },
                docs: vec![],
                docs_complete: true,
            });
        }
        assert_eq!(
            inbox.take().unwrap().unwrap().kind,
            NudgeKind::Pushed {
                from_seq: 1,
                to_seq: 100
            }
        );
        assert_eq!(inbox.take(), Ok(None));
        inbox.close();
        assert_eq!(inbox.take(), Err(()));
    }

    #[test]
    fn presence_diffs_like_phoenix() {
        let mut s = presence_from_state(&json!({
            "a": {"metas": [{"phx_ref": "1", "name": "ann"}]},
        }));
        apply_presence_diff(
            &mut s,
            &json!({"joins": {"b": {"metas": [{"phx_ref": "2", "name": "bob"}]},
                              "a": {"metas": [{"phx_ref": "3", "phx_ref_prev": "1", "name": "ann2"}]}},
                    "leaves": {"a": {"metas": [{"phx_ref": "1", "name": "ann"}]}}}),
        );
        assert_eq!(s["a"].len(), 1);
        assert_eq!(s["a"][0].meta, json!({"name": "ann2"}));
        assert_eq!(s["b"][0].presence_ref, "2");
        apply_presence_diff(
            &mut s,
            &json!({"joins": {}, "leaves": {"b": {"metas": [{"phx_ref": "2"}]}}}),
        );
        assert!(!s.contains_key("b"));
        // Garbage is ignored, never a panic.
        apply_presence_diff(&mut s, &json!({"joins": 7, "leaves": {"a": {"metas": 3}}}));
        assert_eq!(s.len(), 1);
    }
}
