//! `/realtime/v1/websocket`: the subset of Supabase Realtime supamerge
//! uses, over the same PostgreSQL (`docs/realtime.md`).
//!
//! Layout:
//! - this module: [`RealtimeSettings`], the [`RealtimeHub`] (which socket
//!   joined which topic, with what rights; presence), the upgrade handler;
//! - `authorize`: tokens and Realtime Authorization (RLS on
//!   `realtime.messages`, checked as the user);
//! - `socket`: one websocket: heartbeats, joins, leaves, `access_token`,
//!   presence, token expiry;
//! - `feed`: database broadcasts (`realtime.send` in the stand-in raises a
//!   NOTIFY) delivered to the joined sockets that may read them.
//!
//! Only private channels are served (like a project with public access
//! off); messages flow from the database and presence, not from clients'
//! broadcasts.

mod authorize;
mod feed;
mod socket;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch, Semaphore};

use super::config::GatewayConfig;
use crate::protocol::realtime::{event, Message, Vsn};

pub(crate) use feed::listen;

/// The default cap on open websockets.
pub const DEFAULT_MAX_SOCKETS: usize = 256;
/// The default cap on channels one socket joins (Realtime's
/// `max_channels_per_client` default).
pub const DEFAULT_MAX_CHANNELS: usize = 100;
/// The default largest websocket message a client may send.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The default largest presence state (its JSON).
pub const DEFAULT_MAX_PRESENCE_BYTES: usize = 8 * 1024;
/// The default time a socket may stay silent (Phoenix's websocket timeout):
/// clients send a heartbeat every 25–30 s.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default interval at which a joined channel's token and policies are
/// checked again (Realtime checks the token every 5 minutes).
pub const DEFAULT_RECHECK_EVERY: Duration = Duration::from_secs(300);
/// Messages waiting to be written to one socket; past it, broadcasts to
/// that socket are dropped (nudges are hints; the client pulls anyway).
pub const SOCKET_QUEUE: usize = 256;

/// The limits of the Realtime endpoint.
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// Open websockets at most (past it: HTTP 429 before the upgrade).
    pub max_sockets: usize,
    /// Channels one socket may join (past it: `ChannelRateLimitReached`).
    pub max_channels: usize,
    /// Largest message a client may send (past it the socket is closed).
    pub max_message_bytes: usize,
    /// Largest presence state (past it the channel is closed).
    pub max_presence_bytes: usize,
    /// A socket silent this long is closed.
    pub heartbeat_timeout: Duration,
    /// How often a joined channel's token and policies are checked again.
    pub recheck_every: Duration,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        Self {
            max_sockets: DEFAULT_MAX_SOCKETS,
            max_channels: DEFAULT_MAX_CHANNELS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_presence_bytes: DEFAULT_MAX_PRESENCE_BYTES,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            recheck_every: DEFAULT_RECHECK_EVERY,
        }
    }
}

/// A socket's place on a topic.
struct Member {
    /// The socket's outgoing queue.
    tx: mpsc::Sender<Message>,
    /// Whether database broadcasts reach it.
    broadcast_read: bool,
    /// Whether presence reaches it.
    presence_read: bool,
}

/// One presence on a topic.
#[derive(Clone)]
struct Present {
    socket: u64,
    phx_ref: String,
    meta: Map<String, Value>,
}

#[derive(Default)]
struct TopicState {
    members: HashMap<u64, Member>,
    /// Presence key → presences.
    presence: BTreeMap<String, Vec<Present>>,
}

/// Who is where: shared by the sockets and the database feed.
pub(crate) struct RealtimeHub {
    pub(crate) settings: RealtimeSettings,
    pub(crate) config: GatewayConfig,
    pub(crate) pool: Pool,
    sockets: Arc<Semaphore>,
    topics: Mutex<HashMap<String, TopicState>>,
    next: AtomicU64,
    /// Set when the gateway stops: every socket closes.
    stop: watch::Sender<bool>,
}

impl RealtimeHub {
    pub(crate) fn new(config: GatewayConfig, pool: Pool) -> Arc<Self> {
        let settings = config.realtime.clone();
        Arc::new(Self {
            sockets: Arc::new(Semaphore::new(settings.max_sockets)),
            settings,
            config,
            pool,
            topics: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            stop: watch::channel(false).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TopicState>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Closes every socket and stops the feed.
    pub(crate) fn close(&self) {
        self.stop.send_replace(true);
    }

    pub(crate) fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Registers a joined socket on `topic` (a wire topic, `realtime:…`).
    fn add_member(&self, topic: &str, socket: u64, member: Member) {
        self.lock()
            .entry(topic.to_owned())
            .or_default()
            .members
            .insert(socket, member);
    }

    /// Removes a socket from `topic`, withdrawing its presence.
    fn remove_member(&self, topic: &str, socket: u64) {
        let mut topics = self.lock();
        let Some(t) = topics.get_mut(topic) else {
            return;
        };
        t.members.remove(&socket);
        let leaves = take_presence(t, socket);
        if !leaves.is_empty() {
            broadcast_presence(topic, t, &Map::new(), &leaves);
        }
        if t.members.is_empty() {
            topics.remove(topic);
        }
    }

    /// Updates what a member may read (after an `access_token`).
    fn set_rights(&self, topic: &str, socket: u64, broadcast: bool, presence: bool) {
        if let Some(m) = self
            .lock()
            .get_mut(topic)
            .and_then(|t| t.members.get_mut(&socket))
        {
            m.broadcast_read = broadcast;
            m.presence_read = presence;
        }
    }

    /// The presence state of a topic, as `presence_state` carries it.
    fn presence_state(&self, topic: &str) -> Value {
        let topics = self.lock();
        let mut out = Map::new();
        if let Some(t) = topics.get(topic) {
            for (key, list) in &t.presence {
                out.insert(
                    key.clone(),
                    json!({"metas": list.iter().map(meta_json).collect::<Vec<_>>()}),
                );
            }
        }
        Value::Object(out)
    }

    /// Publishes (or replaces) a socket's presence under `key`, telling
    /// every member that may read presence.
    fn track(&self, topic: &str, socket: u64, key: &str, meta: Map<String, Value>) {
        let phx_ref = self.next_id().to_string();
        let mut topics = self.lock();
        let Some(t) = topics.get_mut(topic) else {
            return;
        };
        let list = t.presence.entry(key.to_owned()).or_default();
        let old = list
            .iter()
            .position(|p| p.socket == socket)
            .map(|i| list.remove(i));
        let mut joined = meta.clone();
        if let Some(o) = &old {
            joined.insert("phx_ref_prev".into(), json!(o.phx_ref));
        }
        list.push(Present {
            socket,
            phx_ref: phx_ref.clone(),
            meta,
        });
        let mut joins = Map::new();
        let mut jm = joined;
        jm.insert("phx_ref".into(), json!(phx_ref));
        joins.insert(key.to_owned(), json!({"metas": [Value::Object(jm)]}));
        let mut leaves = Map::new();
        if let Some(o) = old {
            leaves.insert(key.to_owned(), json!({"metas": [meta_json(&o)]}));
        }
        broadcast_presence(topic, t, &joins, &leaves);
    }

    /// Withdraws a socket's presence on a topic.
    fn untrack(&self, topic: &str, socket: u64) {
        let mut topics = self.lock();
        if let Some(t) = topics.get_mut(topic) {
            let leaves = take_presence(t, socket);
            if !leaves.is_empty() {
                broadcast_presence(topic, t, &Map::new(), &leaves);
            }
        }
    }

    /// Delivers a database broadcast to the members of `topic` that may
    /// read broadcasts. Returns how many got it.
    pub(crate) fn deliver(&self, topic: &str, message: &Message) -> usize {
        let topics = self.lock();
        let Some(t) = topics.get(topic) else {
            return 0;
        };
        let mut n = 0;
        for m in t.members.values().filter(|m| m.broadcast_read) {
            if m.tx.try_send(message.clone()).is_ok() {
                n += 1;
            } else {
                tracing::debug!(%topic, "a socket's queue is full: broadcast dropped for it");
            }
        }
        n
    }
}

fn meta_json(p: &Present) -> Value {
    let mut m = p.meta.clone();
    m.insert("phx_ref".into(), json!(p.phx_ref));
    Value::Object(m)
}

/// Removes a socket's presences; returns them as `leaves`.
fn take_presence(t: &mut TopicState, socket: u64) -> Map<String, Value> {
    let mut leaves = Map::new();
    t.presence.retain(|key, list| {
        let (gone, kept): (Vec<Present>, Vec<Present>) =
            list.drain(..).partition(|p| p.socket == socket);
        if !gone.is_empty() {
            leaves.insert(
                key.clone(),
                json!({"metas": gone.iter().map(meta_json).collect::<Vec<_>>()}),
            );
        }
        *list = kept;
        !list.is_empty()
    });
    leaves
}

fn broadcast_presence(
    topic: &str,
    t: &TopicState,
    joins: &Map<String, Value>,
    leaves: &Map<String, Value>,
) {
    let msg = Message::new(
        topic,
        event::PRESENCE_DIFF,
        json!({"joins": joins, "leaves": leaves}),
    );
    for m in t.members.values().filter(|m| m.presence_read) {
        let _ = m.tx.try_send(msg.clone());
    }
}

/// Realtime's error body for a refused upgrade.
fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// `GET /realtime/v1/websocket?apikey=…&vsn=…`: checks the key, the
/// serializer and the socket cap, then upgrades.
pub(crate) async fn websocket(
    State(hub): State<Arc<RealtimeHub>>,
    Query(params): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(apikey) = params.get("apikey") else {
        return refuse(StatusCode::UNAUTHORIZED, "API key is missing");
    };
    if !authorize::is_api_key(apikey, &hub.config) {
        return refuse(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    let Some(vsn) = Vsn::parse(params.get("vsn").map(String::as_str)) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported vsn: this server speaks 1.0.0 and 2.0.0",
        );
    };
    let Ok(permit) = hub.sockets.clone().try_acquire_owned() else {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "Too many connected users");
    };
    let apikey = apikey.clone();
    let max = hub.settings.max_message_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |ws| async move {
            socket::serve(ws, hub, vsn, apikey).await;
            drop(permit);
        })
}
