//! [`HubLive`]: the live updates of a [`LocalHub`](crate::LocalHub), in
//! process. Every push that stores changes nudges the workspace's
//! subscriptions (of every client of the hub) after it is durable;
//! presence is shared by the hub's clients. The hub has no users: every
//! client may subscribe to every workspace, and the channel is always
//! joined.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::watch;

use super::live::{
    ChannelState, ConnectionState, Inbox, LiveError, LiveUpdates, Nudge, NudgeKind, PresenceEntry,
    PresenceState, Subscription, SubscriptionBackend, Topic,
};
use crate::id::{DocId, WorkspaceId};
use crate::protocol::realtime::MAX_NUDGE_DOCS;

/// One workspace's channel in the hub.
#[derive(Debug)]
struct HubTopic {
    /// Every subscription (of every client) and the client it belongs to.
    subscribers: HashMap<u64, (u64, Arc<Inbox>)>,
    /// Shared by all: the channel state (always joined) and who is present.
    shared: Topic,
    /// Presence by client: (its key, its entry).
    present: HashMap<u64, (String, PresenceEntry)>,
}

impl HubTopic {
    fn publish_presence(&self) {
        let mut state = PresenceState::new();
        for (key, entry) in self.present.values() {
            state.entry(key.clone()).or_default().push(entry.clone());
        }
        self.shared.presence.send_replace(state);
    }
}

/// The hub's side: the channels of all its clients.
#[derive(Debug, Default)]
pub(crate) struct LocalLive {
    topics: Mutex<HashMap<WorkspaceId, HubTopic>>,
    /// Presence refs and client ids.
    counter: AtomicU64,
}

impl LocalLive {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, HubTopic>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Nudges the workspace's subscriptions: a push stored `from..=to`,
    /// touching `docs` (in order, duplicates allowed).
    pub(crate) fn announce(&self, workspace: WorkspaceId, from: u64, to: u64, docs: &[DocId]) {
        let topics = self.lock();
        let Some(topic) = topics.get(&workspace) else {
            return;
        };
        let mut named: Vec<DocId> = Vec::new();
        let mut complete = true;
        for d in docs {
            if named.contains(d) {
                continue;
            }
            if named.len() >= MAX_NUDGE_DOCS {
                complete = false;
                break;
            }
            named.push(*d);
        }
        let nudge = Nudge {
            workspace,
            kind: NudgeKind::Pushed {
                from_seq: from,
                to_seq: to,
            },
            docs: named,
            docs_complete: complete,
        };
        for (_, inbox) in topic.subscribers.values() {
            inbox.deliver(nudge.clone());
        }
    }
}

/// One client of a hub's live updates (from [`LocalHub::live`](crate::LocalHub::live)):
/// its own presence key, shared channels.
#[derive(Clone)]
pub struct HubLive {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    hub: Arc<LocalLive>,
    id: u64,
    key: String,
    state: watch::Sender<ConnectionState>,
}

impl std::fmt::Debug for HubLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubLive")
            .field("presence_key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl HubLive {
    pub(crate) fn new(hub: Arc<LocalLive>, key: Option<String>) -> Self {
        let id = hub.next();
        let key = key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        Self {
            inner: Arc::new(ClientInner {
                hub,
                id,
                key,
                state: watch::channel(ConnectionState::Connected).0,
            }),
        }
    }

    /// This client's presence key.
    pub fn presence_key(&self) -> &str {
        &self.inner.key
    }
}

impl SubscriptionBackend for ClientInner {
    fn set_presence(&self, workspace: WorkspaceId, meta: Option<Value>) {
        let mut topics = self.hub.lock();
        let Some(topic) = topics.get_mut(&workspace) else {
            return;
        };
        match meta {
            Some(meta) => {
                let presence_ref = self.hub.next().to_string();
                topic.present.insert(
                    self.id,
                    (self.key.clone(), PresenceEntry { presence_ref, meta }),
                );
            }
            None => {
                topic.present.remove(&self.id);
            }
        }
        topic.publish_presence();
    }

    fn unsubscribe(&self, workspace: WorkspaceId, id: u64) {
        let mut topics = self.hub.lock();
        let Some(topic) = topics.get_mut(&workspace) else {
            return;
        };
        topic.subscribers.remove(&id);
        if !topic.subscribers.values().any(|(c, _)| *c == self.id)
            && topic.present.remove(&self.id).is_some()
        {
            topic.publish_presence();
        }
        if topic.subscribers.is_empty() {
            topics.remove(&workspace);
        }
    }
}

impl LiveUpdates for HubLive {
    fn subscribe(&self, workspace: WorkspaceId) -> Result<Subscription, LiveError> {
        let mut topics = self.inner.hub.lock();
        let topic = topics.entry(workspace).or_insert_with(|| HubTopic {
            subscribers: HashMap::new(),
            shared: Topic::new(ChannelState::Joined),
            present: HashMap::new(),
        });
        let backend: Arc<dyn SubscriptionBackend> = self.inner.clone();
        let (sub, id, inbox) = super::live::attach(workspace, &topic.shared, backend);
        // Like a (re)join on a server: whatever was pushed before now, pull it.
        inbox.deliver(Nudge {
            workspace,
            kind: NudgeKind::Resync,
            docs: Vec::new(),
            docs_complete: false,
        });
        topic.subscribers.insert(id, (self.inner.id, inbox));
        Ok(sub)
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    fn presence_key(&self) -> String {
        self.inner.key.clone()
    }
}
