//! [`RealtimeClient`]: live updates from Supabase Realtime (a project, or
//! the local gateway's `/realtime/v1/websocket`) over one websocket.
//!
//! It speaks the Phoenix protocol of [`crate::protocol::realtime`] with the
//! 2.0.0 serializer, as supabase-js does: it joins
//! `realtime:workspace:<uuid>` as a **private** channel with the user's
//! access token (Realtime Authorization decides with the RLS policies on
//! `realtime.messages`), turns the database's `changes` broadcasts into
//! [`Nudge`]s, and keeps Realtime Presence for each channel.
//!
//! Failure handling:
//! - **connection**: opened when the first subscription exists and closed
//!   when the last one is dropped; on failure (refused handshake, dropped
//!   socket, no heartbeat answer within one heartbeat interval) it
//!   reconnects after an exponential backoff with jitter (0.5 s doubling to
//!   30 s by default), asking the token provider for a fresh token, and
//!   rejoins every channel. [`LiveUpdates::state`] says where it stands.
//! - **channels**: a refused join or a channel the server closed (expired
//!   token, revoked membership) is [`ChannelState::Refused`] with Realtime's
//!   reason and is retried with backoff; a reason saying the token expired
//!   makes it refresh the token first. Each successful join delivers a
//!   [`NudgeKind::Resync`] nudge (what was pushed while the channel was down
//!   was not announced).
//! - **tokens**: checked at every heartbeat; a new token is sent to the
//!   joined channels as an `access_token` message, as supabase-js does.
//! - **presence**: the tracked state is published again after each rejoin.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::live::{
    apply_presence_diff, attach, presence_from_state, ChannelState, ConnectionState, LiveError,
    LiveUpdates, Nudge, NudgeKind, PresenceState, Subscription, SubscriptionBackend, Topic,
};
use super::supabase::{AccessTokenProvider, StaticToken, SupabaseConfigError};
use crate::id::WorkspaceId;
use crate::protocol::realtime::{
    event, topic_workspace, workspace_topic, Frame, Message, NudgePayload, Vsn, NUDGE_EVENT,
    NUDGE_VERSION, PHOENIX_TOPIC, TOPIC_PREFIX,
};

/// The default heartbeat interval (supabase-js: 25 s). A heartbeat not
/// answered by the next one drops the connection.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(25);
/// The default shortest reconnect delay.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The default longest reconnect delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The default time to open the websocket.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message accepted from the server (1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Builder of a [`RealtimeClient`].
pub struct RealtimeClientBuilder {
    base_url: String,
    anon_key: String,
    tokens: Arc<dyn AccessTokenProvider>,
    heartbeat: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    connect_timeout: Duration,
    presence_key: Option<String>,
}

impl std::fmt::Debug for RealtimeClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeClientBuilder")
            .field("base_url", &self.base_url)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl RealtimeClientBuilder {
    /// Uses this provider for access tokens (default: none, anon key only).
    pub fn with_token_provider(mut self, tokens: Arc<dyn AccessTokenProvider>) -> Self {
        self.tokens = tokens;
        self
    }

    /// Sends this fixed access token.
    pub fn with_access_token(self, token: impl Into<String>) -> Self {
        self.with_token_provider(Arc::new(StaticToken::new(token)))
    }

    /// The heartbeat interval (default 25 s); a heartbeat unanswered by the
    /// next one drops the connection.
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// The reconnect backoff: from `min`, doubling, up to `max`, each delay
    /// with jitter (between half and all of it).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min.max(Duration::from_millis(1));
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// Time to open the websocket (default 10 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The presence key of this client (default: a random UUID).
    pub fn with_presence_key(mut self, key: impl Into<String>) -> Self {
        self.presence_key = Some(key.into());
        self
    }

    /// Builds the client; it connects when the first subscription is made.
    ///
    /// # Errors
    /// [`SupabaseConfigError`] for a URL that is not http(s) or an empty key.
    pub fn build(self) -> Result<RealtimeClient, SupabaseConfigError> {
        let endpoint = websocket_url(&self.base_url, &self.anon_key)?;
        let shared = Arc::new(Shared {
            endpoint,
            tokens: self.tokens,
            heartbeat: self.heartbeat,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            connect_timeout: self.connect_timeout,
            presence_key: self
                .presence_key
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            topics: Mutex::new(HashMap::new()),
            state: watch::channel(ConnectionState::Idle).0,
            runner: Mutex::new(Runner::NotStarted),
        });
        Ok(RealtimeClient {
            handle: Arc::new(Handle { shared }),
        })
    }
}

/// The websocket URL of a project: `{base}/realtime/v1/websocket?apikey=…&vsn=2.0.0`
/// with `ws` for `http` and `wss` for `https`.
fn websocket_url(base: &str, anon_key: &str) -> Result<String, SupabaseConfigError> {
    let trimmed = base.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/rest/v1").unwrap_or(trimmed);
    let mut url = reqwest::Url::parse(trimmed).map_err(|e| SupabaseConfigError::InvalidUrl {
        url: base.to_owned(),
        reason: e.to_string(),
    })?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        _ => {
            return Err(SupabaseConfigError::InvalidUrl {
                url: base.to_owned(),
                reason: "expected an http:// or https:// URL".into(),
            })
        }
    };
    if anon_key.is_empty() {
        return Err(SupabaseConfigError::InvalidKey {
            reason: "the anon key is empty",
        });
    }
    url.set_scheme(scheme)
        .map_err(|()| SupabaseConfigError::InvalidUrl {
            url: base.to_owned(),
            reason: "cannot use a websocket scheme".into(),
        })?;
    let path = format!("{}/realtime/v1/websocket", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.query_pairs_mut()
        .clear()
        .append_pair("apikey", anon_key)
        .append_pair("vsn", Vsn::V2.as_str());
    Ok(url.to_string())
}

/// Live updates over Supabase Realtime. Cheap to clone; the connection runs
/// on a tokio task until the last clone is dropped or
/// [`RealtimeClient::shutdown`] is called.
#[derive(Clone)]
pub struct RealtimeClient {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for RealtimeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeClient")
            .field("presence_key", &self.handle.shared.presence_key)
            .finish_non_exhaustive()
    }
}

/// Stops the connection when the last client handle goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// What the connection task does next.
enum Command {
    /// The subscriptions or the presence of a workspace changed.
    Changed,
    /// Stop.
    Shutdown,
}

enum Runner {
    NotStarted,
    Running(mpsc::UnboundedSender<Command>),
    Stopped,
}

struct Shared {
    /// `ws(s)://…/realtime/v1/websocket?apikey=…&vsn=2.0.0`.
    endpoint: String,
    tokens: Arc<dyn AccessTokenProvider>,
    heartbeat: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    connect_timeout: Duration,
    presence_key: String,
    /// What the app wants: one entry per subscribed workspace.
    topics: Mutex<HashMap<WorkspaceId, Topic>>,
    state: watch::Sender<ConnectionState>,
    runner: Mutex<Runner>,
}

impl Shared {
    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, Topic>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn command(&self, c: Command) {
        let runner = self.runner.lock().unwrap_or_else(|e| e.into_inner());
        if let Runner::Running(tx) = &*runner {
            let _ = tx.send(c);
        }
    }

    fn stop(&self) {
        let mut runner = self.runner.lock().unwrap_or_else(|e| e.into_inner());
        if let Runner::Running(tx) = &*runner {
            let _ = tx.send(Command::Shutdown);
        }
        *runner = Runner::Stopped;
        drop(runner);
        for topic in self.topics().values() {
            topic.close();
        }
        self.state.send_replace(ConnectionState::Closed);
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .backoff_min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.backoff_max);
        // Jitter: between half and all of the delay.
        let f: f64 = 0.5 + rand::random::<f64>() * 0.5;
        base.mul_f64(f)
    }
}

impl SubscriptionBackend for Shared {
    fn set_presence(&self, workspace: WorkspaceId, meta: Option<Value>) {
        if let Some(topic) = self.topics().get_mut(&workspace) {
            topic.tracked = meta;
        }
        self.command(Command::Changed);
    }

    fn unsubscribe(&self, workspace: WorkspaceId, id: u64) {
        {
            let mut topics = self.topics();
            if let Some(topic) = topics.get_mut(&workspace) {
                topic.inboxes.remove(&id);
                if topic.inboxes.is_empty() {
                    topic.channel.send_replace(ChannelState::Closed);
                    topics.remove(&workspace);
                }
            }
        }
        self.command(Command::Changed);
    }
}

impl RealtimeClient {
    /// Starts building a client for the project at `base_url` (the same URL
    /// as [`SupabaseRemote`](crate::SupabaseRemote)'s) with its anon key.
    pub fn builder(
        base_url: impl Into<String>,
        anon_key: impl Into<String>,
    ) -> RealtimeClientBuilder {
        RealtimeClientBuilder {
            base_url: base_url.into(),
            anon_key: anon_key.into(),
            tokens: Arc::new(StaticToken::none()),
            heartbeat: DEFAULT_HEARTBEAT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            presence_key: None,
        }
    }

    /// This client's presence key.
    pub fn presence_key(&self) -> &str {
        &self.handle.shared.presence_key
    }

    /// Closes the connection and ends every subscription (their `next`
    /// returns `None`).
    pub fn shutdown(&self) {
        self.handle.shared.stop();
    }

    fn ensure_running(&self) -> Result<(), LiveError> {
        let shared = &self.handle.shared;
        let mut runner = shared.runner.lock().unwrap_or_else(|e| e.into_inner());
        match &*runner {
            Runner::Running(_) => Ok(()),
            Runner::Stopped => Err(LiveError::Closed),
            Runner::NotStarted => {
                let rt =
                    tokio::runtime::Handle::try_current().map_err(|e| LiveError::NoRuntime {
                        reason: e.to_string(),
                    })?;
                let (tx, rx) = mpsc::unbounded_channel();
                rt.spawn(run(Arc::downgrade(shared), rx));
                *runner = Runner::Running(tx);
                Ok(())
            }
        }
    }
}

impl LiveUpdates for RealtimeClient {
    fn subscribe(&self, workspace: WorkspaceId) -> Result<Subscription, LiveError> {
        self.ensure_running()?;
        let shared = &self.handle.shared;
        let sub = {
            let mut topics = shared.topics();
            let topic = topics
                .entry(workspace)
                .or_insert_with(|| Topic::new(ChannelState::Joining));
            let backend: Arc<dyn SubscriptionBackend> = shared.clone();
            let (sub, id, inbox) = attach(workspace, topic, backend);
            if *topic.channel.borrow() == ChannelState::Joined {
                // A second subscription of a joined channel starts with a
                // resync too: it has seen nothing yet.
                inbox.deliver(resync(workspace));
            }
            topic.inboxes.insert(id, inbox);
            sub
        };
        shared.command(Command::Changed);
        Ok(sub)
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.handle.shared.state.subscribe()
    }

    fn presence_key(&self) -> String {
        self.handle.shared.presence_key.clone()
    }
}

fn resync(workspace: WorkspaceId) -> Nudge {
    Nudge {
        workspace,
        kind: NudgeKind::Resync,
        docs: Vec::new(),
        docs_complete: false,
    }
}

/// A channel as the current connection knows it.
struct Joined {
    /// The ref of the pending or accepted join.
    join_ref: String,
    /// Whether the server accepted it.
    joined: bool,
    /// When to try joining again (after a refusal or a close).
    retry_at: Option<Instant>,
    /// Refusals in a row (backoff).
    refusals: u32,
    /// The token the channel was joined (or last refreshed) with.
    token: Option<String>,
    /// The presence the server holds for us on this channel.
    presence_sent: Option<Value>,
    /// The last error the server reported (system message).
    last_error: Option<String>,
}

/// Why a connection ended.
enum Ended {
    /// Reconnect (after a backoff).
    Lost(String),
    /// Nothing left to do: no subscriptions, or a shutdown.
    Done,
    /// The client is shutting down.
    Shutdown,
}

async fn run(shared: std::sync::Weak<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut attempt: u32 = 0;
    loop {
        let Some(s) = shared.upgrade() else { return };
        // Nothing subscribed: wait for a subscription.
        if s.topics().is_empty() {
            s.state.send_if_modified(|st| {
                let idle = matches!(st, ConnectionState::Closed | ConnectionState::Idle);
                if !idle {
                    *st = ConnectionState::Idle;
                }
                !idle
            });
            drop(s);
            match commands.recv().await {
                Some(Command::Changed) => continue,
                Some(Command::Shutdown) | None => return,
            }
        }
        s.state
            .send_replace(ConnectionState::Connecting { attempt });
        let ended = match connect(&s).await {
            Ok(socket) => {
                attempt = 0;
                s.state.send_replace(ConnectionState::Connected);
                let mut session = Session::new(&s, socket);
                session.run(&mut commands).await
            }
            Err(reason) => Ended::Lost(reason),
        };
        match ended {
            Ended::Shutdown => return,
            Ended::Done => continue,
            Ended::Lost(reason) => {
                let delay = s.backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::debug!(%reason, ?delay, "realtime connection lost; reconnecting");
                for topic in s.topics().values() {
                    topic.channel.send_if_modified(|c| {
                        let was = *c == ChannelState::Joining;
                        *c = ChannelState::Joining;
                        !was
                    });
                }
                s.state.send_replace(ConnectionState::Disconnected {
                    attempt,
                    retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    reason,
                });
                drop(s);
                let wake = tokio::time::sleep(delay);
                tokio::pin!(wake);
                loop {
                    tokio::select! {
                        () = &mut wake => break,
                        c = commands.recv() => match c {
                            Some(Command::Changed) => {}
                            Some(Command::Shutdown) | None => return,
                        },
                    }
                }
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &Shared) -> Result<Socket, String> {
    let config = WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE_BYTES),
        max_frame_size: Some(MAX_MESSAGE_BYTES),
        ..WebSocketConfig::default()
    };
    let attempt =
        tokio_tungstenite::connect_async_with_config(s.endpoint.as_str(), Some(config), true);
    match tokio::time::timeout(s.connect_timeout, attempt).await {
        Err(_) => Err(format!(
            "no websocket after {} ms",
            s.connect_timeout.as_millis()
        )),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(format!(
                "the server refused the websocket: {} {body}",
                resp.status()
            ))
        }
        Ok(Err(e)) => Err(format!("cannot open the websocket: {e}")),
        Ok(Ok((socket, _))) => Ok(socket),
    }
}

/// One connection: its channels and refs.
struct Session<'a> {
    s: &'a Shared,
    socket: Socket,
    next_ref: u64,
    channels: HashMap<WorkspaceId, Joined>,
    /// Refs of pushes awaiting a reply: joins and heartbeats.
    pending_heartbeat: Option<String>,
}

impl<'a> Session<'a> {
    fn new(s: &'a Shared, socket: Socket) -> Self {
        Self {
            s,
            socket,
            next_ref: 0,
            channels: HashMap::new(),
            pending_heartbeat: None,
        }
    }

    fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    async fn send(&mut self, msg: &Message) -> Result<(), String> {
        let frame = match msg.encode_client(Vsn::V2) {
            Frame::Text(t) => WsMessage::Text(t),
            Frame::Binary(b) => WsMessage::Binary(b),
        };
        self.socket
            .send(frame)
            .await
            .map_err(|e| format!("cannot send: {e}"))
    }

    async fn run(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Ended {
        match self.run_inner(commands).await {
            Ok(ended) => {
                let _ = self.socket.close(None).await;
                ended
            }
            Err(reason) => Ended::Lost(reason),
        }
    }

    async fn run_inner(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<Ended, String> {
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + self.s.heartbeat, self.s.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.reconcile().await?;
        loop {
            let retry_at = self.channels.values().filter_map(|c| c.retry_at).min();
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = self.socket.next() => match frame {
                    None => return Err("the server closed the connection".into()),
                    Some(Err(e)) => return Err(format!("connection failed: {e}")),
                    Some(Ok(WsMessage::Text(t))) => self.handle(&Frame::Text(t)).await?,
                    Some(Ok(WsMessage::Binary(b))) => self.handle(&Frame::Binary(b)).await?,
                    Some(Ok(WsMessage::Close(c))) => {
                        return Err(format!("the server closed the connection: {}",
                            c.map(|c| c.reason.into_owned()).unwrap_or_default()));
                    }
                    Some(Ok(_)) => {}
                },
                c = commands.recv() => match c {
                    Some(Command::Changed) => {
                        if self.s.topics().is_empty() {
                            return Ok(Ended::Done);
                        }
                        self.reconcile().await?;
                    }
                    Some(Command::Shutdown) | None => return Ok(Ended::Shutdown),
                },
                _ = heartbeat.tick() => {
                    if self.pending_heartbeat.is_some() {
                        return Err("heartbeat timeout: the server did not answer".into());
                    }
                    let r = self.make_ref();
                    self.pending_heartbeat = Some(r.clone());
                    let mut hb = Message::new(PHOENIX_TOPIC, event::HEARTBEAT, json!({}));
                    hb.msg_ref = Some(r);
                    self.send(&hb).await?;
                    self.refresh_tokens().await?;
                }
                () = retry => {
                    let now = Instant::now();
                    let due: Vec<WorkspaceId> = self.channels.iter()
                        .filter(|(_, c)| c.retry_at.is_some_and(|t| t <= now))
                        .map(|(w, _)| *w)
                        .collect();
                    for ws in due {
                        self.join(ws).await?;
                    }
                }
            }
        }
    }

    /// Joins what is subscribed, leaves what is not, sends presence changes.
    async fn reconcile(&mut self) -> Result<(), String> {
        let wanted: Vec<(WorkspaceId, Option<Value>)> = self
            .s
            .topics()
            .iter()
            .map(|(w, t)| (*w, t.tracked.clone()))
            .collect();
        let gone: Vec<WorkspaceId> = self
            .channels
            .keys()
            .filter(|w| !wanted.iter().any(|(x, _)| x == *w))
            .copied()
            .collect();
        for ws in gone {
            if let Some(c) = self.channels.remove(&ws) {
                let mut leave = Message::new(topic_of(&ws), event::LEAVE, json!({}));
                leave.join_ref = Some(c.join_ref.clone());
                leave.msg_ref = Some(self.make_ref());
                self.send(&leave).await?;
            }
        }
        for (ws, tracked) in wanted {
            match self.channels.get(&ws) {
                None => self.join(ws).await?,
                Some(c) if c.joined && c.presence_sent != tracked => {
                    self.send_presence(ws, tracked).await?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    async fn join(&mut self, ws: WorkspaceId) -> Result<(), String> {
        let token = match self.s.tokens.access_token().await {
            Ok(t) => t,
            Err(e) => {
                self.refused(ws, format!("no access token: {e}"), None);
                return Ok(());
            }
        };
        let join_ref = self.make_ref();
        let mut payload = json!({
            "config": {
                "broadcast": {"ack": false, "self": false},
                "presence": {"key": self.s.presence_key, "enabled": true},
                "postgres_changes": [],
                "private": true,
            },
        });
        if let (Some(t), Some(obj)) = (&token, payload.as_object_mut()) {
            obj.insert("access_token".into(), json!(t));
        }
        let mut msg = Message::new(topic_of(&ws), event::JOIN, payload);
        msg.join_ref = Some(join_ref.clone());
        msg.msg_ref = Some(join_ref.clone());
        let refusals = self.channels.get(&ws).map_or(0, |c| c.refusals);
        self.channels.insert(
            ws,
            Joined {
                join_ref,
                joined: false,
                retry_at: None,
                refusals,
                token,
                presence_sent: None,
                last_error: None,
            },
        );
        if let Some(t) = self.s.topics().get(&ws) {
            t.channel.send_replace(ChannelState::Joining);
        }
        self.send(&msg).await
    }

    /// A refused or closed channel: tell the subscriptions, retry later.
    fn refused(&mut self, ws: WorkspaceId, reason: String, join_ref: Option<String>) {
        let refusals = self.channels.get(&ws).map_or(0, |c| c.refusals) + 1;
        let delay = self.s.backoff(refusals.saturating_sub(1));
        let entry = self.channels.entry(ws).or_insert_with(|| Joined {
            join_ref: join_ref.unwrap_or_default(),
            joined: false,
            retry_at: None,
            refusals: 0,
            token: None,
            presence_sent: None,
            last_error: None,
        });
        entry.joined = false;
        entry.refusals = refusals;
        entry.retry_at = Some(Instant::now() + delay);
        if let Some(t) = self.s.topics().get(&ws) {
            t.channel.send_replace(ChannelState::Refused { reason });
            t.presence.send_replace(PresenceState::new());
        }
    }

    async fn send_presence(&mut self, ws: WorkspaceId, meta: Option<Value>) -> Result<(), String> {
        let Some(c) = self.channels.get_mut(&ws) else {
            return Ok(());
        };
        let payload = match &meta {
            Some(m) => json!({"type": "presence", "event": "track", "payload": m}),
            None => json!({"type": "presence", "event": "untrack"}),
        };
        c.presence_sent = meta;
        let join_ref = c.join_ref.clone();
        let mut msg = Message::new(topic_of(&ws), event::PRESENCE, payload);
        msg.join_ref = Some(join_ref);
        msg.msg_ref = Some(self.make_ref());
        self.send(&msg).await
    }

    /// Sends a changed token to every joined channel.
    async fn refresh_tokens(&mut self) -> Result<(), String> {
        let Ok(token) = self.s.tokens.access_token().await else {
            return Ok(());
        };
        let stale: Vec<(WorkspaceId, String)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.joined && c.token != token)
            .map(|(w, c)| (*w, c.join_ref.clone()))
            .collect();
        let Some(t) = token else { return Ok(()) };
        for (ws, join_ref) in stale {
            let mut msg = Message::new(
                topic_of(&ws),
                event::ACCESS_TOKEN,
                json!({"access_token": t}),
            );
            msg.join_ref = Some(join_ref);
            msg.msg_ref = Some(self.make_ref());
            self.send(&msg).await?;
            if let Some(c) = self.channels.get_mut(&ws) {
                c.token = Some(t.clone());
            }
        }
        Ok(())
    }

    async fn handle(&mut self, frame: &Frame) -> Result<(), String> {
        let msg = match Message::decode(frame, Vsn::V2) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a malformed realtime frame");
                return Ok(());
            }
        };
        if msg.topic == PHOENIX_TOPIC {
            if msg.event == event::REPLY
                && msg.msg_ref.is_some()
                && msg.msg_ref == self.pending_heartbeat
            {
                self.pending_heartbeat = None;
            }
            return Ok(());
        }
        let Some(ws) = msg
            .topic
            .strip_prefix(TOPIC_PREFIX)
            .and_then(topic_workspace)
        else {
            return Ok(());
        };
        let Some(c) = self.channels.get(&ws) else {
            return Ok(());
        };
        // Messages of an older join of the topic are stale.
        if msg.join_ref.is_some() && msg.join_ref.as_deref() != Some(c.join_ref.as_str()) {
            return Ok(());
        }
        match msg.event.as_str() {
            event::REPLY if msg.msg_ref.as_deref() == Some(c.join_ref.as_str()) => {
                self.join_reply(ws, &msg).await?;
            }
            event::BROADCAST => self.broadcast(ws, &msg),
            event::PRESENCE_STATE => {
                if let Some(t) = self.s.topics().get(&ws) {
                    t.presence.send_replace(presence_from_state(&msg.payload));
                }
            }
            event::PRESENCE_DIFF => {
                if let Some(t) = self.s.topics().get(&ws) {
                    t.presence
                        .send_modify(|p| apply_presence_diff(p, &msg.payload));
                }
            }
            event::SYSTEM if msg.payload.get("status").and_then(Value::as_str) == Some("error") => {
                let text = msg
                    .payload
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_owned();
                if let Some(c) = self.channels.get_mut(&ws) {
                    c.last_error = Some(text);
                }
            }
            event::CLOSE | event::ERROR => {
                let reason = self
                    .channels
                    .get(&ws)
                    .and_then(|c| c.last_error.clone())
                    .unwrap_or_else(|| format!("the server sent {}", msg.event));
                self.channel_lost(ws, reason).await;
            }
            _ => {}
        }
        Ok(())
    }

    async fn join_reply(&mut self, ws: WorkspaceId, msg: &Message) -> Result<(), String> {
        if msg.reply_status() == Some("ok") {
            let tracked = self.s.topics().get(&ws).and_then(|t| t.tracked.clone());
            if let Some(c) = self.channels.get_mut(&ws) {
                c.joined = true;
                c.refusals = 0;
                c.retry_at = None;
            }
            if let Some(t) = self.s.topics().get(&ws) {
                t.channel.send_replace(ChannelState::Joined);
                t.deliver(&resync(ws));
            }
            if tracked.is_some() {
                self.send_presence(ws, tracked).await?;
            }
            return Ok(());
        }
        let reason = msg
            .payload
            .get("response")
            .and_then(|r| r.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("the join was refused")
            .to_owned();
        self.channel_lost(ws, reason).await;
        Ok(())
    }

    /// A refused join or a channel the server closed: refresh an expired
    /// token, then retry after a backoff.
    async fn channel_lost(&mut self, ws: WorkspaceId, reason: String) {
        if reason.to_ascii_lowercase().contains("expired") {
            let old = self.channels.get(&ws).and_then(|c| c.token.clone());
            if let Err(e) = self.s.tokens.refresh(old.as_deref()).await {
                tracing::debug!(error = %e, "cannot refresh the realtime token");
            }
        }
        let join_ref = self.channels.get(&ws).map(|c| c.join_ref.clone());
        self.refused(ws, reason, join_ref);
    }

    fn broadcast(&self, ws: WorkspaceId, msg: &Message) {
        if msg.payload.get("event").and_then(Value::as_str) != Some(NUDGE_EVENT) {
            return;
        }
        let Some(body) = msg.payload.get("payload") else {
            return;
        };
        let nudge: NudgePayload = match serde_json::from_value(body.clone()) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a malformed nudge");
                return;
            }
        };
        if nudge.v != NUDGE_VERSION || nudge.workspace != ws || nudge.from_seq > nudge.to_seq {
            tracing::debug!(?nudge, "ignoring a nudge of another version or workspace");
            return;
        }
        let n = Nudge {
            workspace: ws,
            kind: NudgeKind::Pushed {
                from_seq: nudge.from_seq,
                to_seq: nudge.to_seq,
            },
            docs: nudge
                .docs
                .into_iter()
                .take(crate::protocol::realtime::MAX_NUDGE_DOCS)
                .collect(),
            docs_complete: nudge.docs_complete,
        };
        if let Some(t) = self.s.topics().get(&ws) {
            t.deliver(&n);
        }
    }
}

fn topic_of(ws: &WorkspaceId) -> String {
    format!("{TOPIC_PREFIX}{}", workspace_topic(ws))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:54321", "k").unwrap(),
            "ws://127.0.0.1:54321/realtime/v1/websocket?apikey=k&vsn=2.0.0"
        );
        assert_eq!(
            websocket_url("https://abc.supabase.co/rest/v1/", "a b").unwrap(),
            "wss://abc.supabase.co/realtime/v1/websocket?apikey=a+b&vsn=2.0.0"
        );
        assert!(websocket_url("ftp://x", "k").is_err());
        assert!(websocket_url("http://x", "").is_err());
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_max() {
        let c = RealtimeClient::builder("http://x", "k")
            .with_backoff(Duration::from_millis(100), Duration::from_secs(1))
            .build()
            .unwrap();
        for attempt in 0..20 {
            let d = c.handle.shared.backoff(attempt);
            let full = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(16))
                .min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn subscribing_outside_a_runtime_is_an_error() {
        let c = RealtimeClient::builder("http://x", "k").build().unwrap();
        let ws: WorkspaceId = "0190b1a2-0000-7000-8000-000000000001".parse().unwrap();
        assert!(matches!(c.subscribe(ws), Err(LiveError::NoRuntime { .. })));
    }
}
