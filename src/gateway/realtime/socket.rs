//! One Realtime websocket: what it joined, with which token and rights,
//! and the loop that answers it.
//!
//! - `heartbeat` on topic `phoenix` is answered `ok`; any message keeps the
//!   socket alive, and a socket silent for the heartbeat timeout is closed.
//! - `phx_join` of `realtime:<topic>`: private channels only; the token is
//!   checked and Realtime Authorization runs as its user
//!   ([`super::authorize`]); refusals answer `{"status":"error",
//!   "response":{"reason":…}}` with Realtime's reasons. A second join of a
//!   topic closes the first (`phx_close`), as Phoenix does. At most
//!   `max_channels` per socket.
//! - `access_token`: a new token for a joined channel is checked, and the
//!   policies again; a bad token or lost rights close the channel with a
//!   `system` error message and `phx_close`, as Realtime does. The same
//!   happens when a channel's token expires, and when the periodic check of
//!   the policies finds the rights gone.
//! - `presence` `track` / `untrack`: checked against the `insert` policies
//!   once per join; states over `max_presence_bytes` close the channel.
//! - `phx_leave`: answered `ok`, then `phx_close`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::authorize::{self, expired_message, Grant, ReadPolicies};
use super::{Member, RealtimeHub, SOCKET_QUEUE};
use crate::gateway::auth::now_unix;
use crate::protocol::realtime::{event, Frame, Message, Vsn, PHOENIX_TOPIC, TOPIC_PREFIX};

/// A joined channel of this socket.
struct Channel {
    /// The topic without `realtime:`.
    sub: String,
    join_ref: String,
    grant: Grant,
    token: String,
    presence_key: String,
    /// Whether presence writes are allowed (asked once, on the first track).
    presence_write: Option<bool>,
    rights: ReadPolicies,
    /// When to check the token and the policies again.
    next_check: Instant,
}

struct Socket {
    id: u64,
    hub: Arc<RealtimeHub>,
    apikey: String,
    /// This socket's queue, handed to the hub for broadcasts.
    tx: mpsc::Sender<Message>,
    /// Wire topic → channel.
    channels: HashMap<String, Channel>,
    /// Messages to write after the current event.
    out: Vec<Message>,
}

/// Serves one upgraded websocket until it closes, goes silent, or the
/// gateway stops.
pub(super) async fn serve(ws: WebSocket, hub: Arc<RealtimeHub>, vsn: Vsn, apikey: String) {
    let id = hub.next_id();
    let (tx, mut rx) = mpsc::channel::<Message>(SOCKET_QUEUE);
    let (mut sink, mut stream) = ws.split();
    let mut stop = hub.stopped();
    let timeout = hub.settings.heartbeat_timeout;
    let mut s = Socket {
        id,
        hub,
        apikey,
        tx,
        channels: HashMap::new(),
        out: Vec::new(),
    };
    let mut silent_until = Instant::now() + timeout;
    loop {
        let next_check = s.channels.values().map(|c| c.next_check).min();
        let check = async {
            match next_check {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let close = tokio::select! {
            frame = stream.next() => match frame {
                None | Some(Err(_)) => true,
                Some(Ok(m)) => {
                    silent_until = Instant::now() + timeout;
                    match m {
                        WsMessage::Text(t) => !s.handle(&Frame::Text(t), vsn).await,
                        WsMessage::Binary(b) => !s.handle(&Frame::Binary(b), vsn).await,
                        WsMessage::Close(_) => true,
                        WsMessage::Ping(_) | WsMessage::Pong(_) => false,
                    }
                }
            },
            Some(m) = rx.recv() => {
                s.out.push(m);
                false
            }
            () = tokio::time::sleep_until(silent_until) => {
                tracing::debug!(socket = id, "no heartbeat: closing the socket");
                true
            }
            () = check => {
                s.recheck().await;
                false
            }
            _ = stop.changed() => true,
        };
        for m in s.out.drain(..) {
            let frame = match m.encode_server(vsn) {
                Ok(Frame::Text(t)) => WsMessage::Text(t),
                Ok(Frame::Binary(b)) => WsMessage::Binary(b),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot encode a realtime message");
                    continue;
                }
            };
            if sink.send(frame).await.is_err() {
                break;
            }
        }
        if close {
            let _ = sink.send(WsMessage::Close(None)).await;
            break;
        }
    }
    for topic in s.channels.keys() {
        s.hub.remove_member(topic, id);
    }
}

impl Socket {
    fn reply(&mut self, request: &Message, status: &str, response: Value) {
        self.out.push(Message::reply(request, status, response));
    }

    fn refuse_join(&mut self, request: &Message, reason: &str) {
        tracing::debug!(topic = %request.topic, %reason, "realtime join refused");
        self.reply(request, "error", json!({"reason": reason}));
    }

    /// Closes a channel the way Realtime's `shutdown_response` does: a
    /// `system` error message, then `phx_close`.
    fn shutdown(&mut self, topic: &str, message: &str) {
        let Some(c) = self.channels.remove(topic) else {
            return;
        };
        self.hub.remove_member(topic, self.id);
        let mut system = Message::new(
            topic,
            event::SYSTEM,
            json!({"extension": "system", "status": "error", "message": message, "channel": c.sub}),
        );
        system.join_ref = Some(c.join_ref.clone());
        self.out.push(system);
        let mut close = Message::new(topic, event::CLOSE, json!({}));
        close.join_ref = Some(c.join_ref.clone());
        close.msg_ref = Some(c.join_ref);
        self.out.push(close);
    }

    /// Handles one frame; false closes the socket (a frame that is not the
    /// protocol).
    async fn handle(&mut self, frame: &Frame, vsn: Vsn) -> bool {
        let msg = match Message::decode(frame, vsn) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "malformed realtime frame: closing the socket");
                return false;
            }
        };
        if msg.topic == PHOENIX_TOPIC {
            if msg.event == event::HEARTBEAT {
                self.reply(&msg, "ok", json!({}));
            }
            return true;
        }
        match msg.event.as_str() {
            event::JOIN => self.join(&msg).await,
            _ if !self.is_current(&msg) => {
                self.reply(&msg, "error", json!({"reason": "unmatched topic"}));
            }
            event::LEAVE => {
                self.reply(&msg, "ok", json!({}));
                if let Some(c) = self.channels.remove(&msg.topic) {
                    self.hub.remove_member(&msg.topic, self.id);
                    let mut close = Message::new(&msg.topic, event::CLOSE, json!({}));
                    close.join_ref = Some(c.join_ref.clone());
                    close.msg_ref = Some(c.join_ref);
                    self.out.push(close);
                }
            }
            event::ACCESS_TOKEN => self.access_token(&msg).await,
            event::PRESENCE => self.presence(&msg).await,
            // Clients' broadcasts are not served (docs/realtime.md).
            _ => {}
        }
        true
    }

    /// Whether a message belongs to a channel this socket joined (and to
    /// its current join).
    fn is_current(&self, msg: &Message) -> bool {
        match self.channels.get(&msg.topic) {
            Some(c) => msg.join_ref.as_deref().is_none_or(|r| r == c.join_ref),
            None => false,
        }
    }

    async fn join(&mut self, msg: &Message) {
        let Some(sub) = msg.topic.strip_prefix(TOPIC_PREFIX).map(str::to_owned) else {
            self.reply(msg, "error", json!({"reason": "unmatched topic"}));
            return;
        };
        if sub.is_empty() {
            return self.refuse_join(msg, "TopicNameRequired: You must provide a topic name");
        }
        let Some(join_ref) = msg.join_ref.clone().or_else(|| msg.msg_ref.clone()) else {
            return self.refuse_join(msg, "InvalidJoinPayload: a join needs a ref");
        };
        let config = msg.payload.get("config");
        let flag = |v: Option<&Value>| {
            matches!(v, Some(Value::Bool(true))) || v.and_then(Value::as_str) == Some("true")
        };
        if !flag(config.and_then(|c| c.get("private"))) {
            return self.refuse_join(
                msg,
                "PrivateOnly: This project only allows private channels",
            );
        }
        // A second join of a topic replaces the first (Phoenix closes it).
        if let Some(old) = self.channels.remove(&msg.topic) {
            self.hub.remove_member(&msg.topic, self.id);
            let mut close = Message::new(&msg.topic, event::CLOSE, json!({}));
            close.join_ref = Some(old.join_ref.clone());
            close.msg_ref = Some(old.join_ref);
            self.out.push(close);
        }
        if self.channels.len() >= self.hub.settings.max_channels {
            return self.refuse_join(msg, "ChannelRateLimitReached: Too many channels");
        }
        let token = msg
            .payload
            .get("access_token")
            .or_else(|| msg.payload.get("user_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.starts_with("sb_"))
            .unwrap_or(&self.apikey)
            .to_owned();
        let now = now_unix();
        let grant = match authorize::check_token(&token, &self.hub.config, now) {
            Ok(g) => g,
            Err(reason) => return self.refuse_join(msg, &reason),
        };
        let rights = match authorize::read_policies(&self.hub.pool, &grant.caller, &sub).await {
            Ok(r) => r,
            Err(reason) => return self.refuse_join(msg, &reason),
        };
        if !rights.broadcast && !rights.presence {
            return self.refuse_join(
                msg,
                &format!("Unauthorized: You do not have permissions to read from this Channel topic: {sub}"),
            );
        }
        let presence = config.and_then(|c| c.get("presence"));
        let presence_enabled = flag(presence.and_then(|p| p.get("enabled")));
        let presence_key = presence
            .and_then(|p| p.get("key"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        self.hub.add_member(
            &msg.topic,
            self.id,
            Member {
                tx: self.tx.clone(),
                broadcast_read: rights.broadcast,
                presence_read: rights.presence,
            },
        );
        let next_check = self.next_check(&grant, now);
        self.channels.insert(
            msg.topic.clone(),
            Channel {
                sub,
                join_ref: join_ref.clone(),
                grant,
                token,
                presence_key,
                presence_write: None,
                rights,
                next_check,
            },
        );
        self.reply(msg, "ok", json!({"postgres_changes": []}));
        if presence_enabled && rights.presence {
            let mut state = Message::new(
                &msg.topic,
                event::PRESENCE_STATE,
                self.hub.presence_state(&msg.topic),
            );
            state.join_ref = Some(join_ref);
            self.out.push(state);
        }
    }

    fn next_check(&self, grant: &Grant, now: u64) -> Instant {
        let every = self.hub.settings.recheck_every;
        let until_exp = grant
            .exp
            .map(|e| std::time::Duration::from_secs(e.saturating_sub(now)));
        Instant::now() + until_exp.map_or(every, |d| d.min(every))
    }

    /// Re-checks the channels whose time has come: an expired token or
    /// lost rights close the channel.
    async fn recheck(&mut self) {
        let now_i = Instant::now();
        let due: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| c.next_check <= now_i)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in due {
            let now = now_unix();
            let Some(c) = self.channels.get(&topic) else {
                continue;
            };
            if let Some(exp) = c.grant.exp.filter(|e| *e <= now) {
                self.shutdown(&topic, &expired_message(exp, now));
                continue;
            }
            let (caller, sub) = (c.grant.caller.clone(), c.sub.clone());
            self.apply_rights(&topic, &caller, &sub, now).await;
        }
    }

    /// Asks the policies again; closes the channel when a right was lost.
    /// Returns whether the channel is still open.
    async fn apply_rights(
        &mut self,
        topic: &str,
        caller: &crate::gateway::auth::Caller,
        sub: &str,
        now: u64,
    ) -> bool {
        match authorize::read_policies(&self.hub.pool, caller, sub).await {
            Ok(r) => {
                let Some(c) = self.channels.get(topic) else {
                    return false;
                };
                let lost =
                    (c.rights.broadcast && !r.broadcast) || (c.rights.presence && !r.presence);
                if lost {
                    self.shutdown(
                        topic,
                        &format!(
                            "You no longer have permission to read from this Channel topic: {sub}"
                        ),
                    );
                    return false;
                }
                self.hub.set_rights(topic, self.id, r.broadcast, r.presence);
                let grant = c.grant.clone();
                let next = self.next_check(&grant, now);
                if let Some(c) = self.channels.get_mut(topic) {
                    c.rights = r;
                    c.next_check = next;
                }
                true
            }
            Err(reason) => {
                // The database is unreachable: try again later, keep the channel.
                tracing::debug!(%reason, "cannot re-check a realtime channel");
                let every = self.hub.settings.recheck_every;
                if let Some(c) = self.channels.get_mut(topic) {
                    c.next_check = Instant::now() + every;
                }
                true
            }
        }
    }

    async fn access_token(&mut self, msg: &Message) {
        let Some(token) = msg.payload.get("access_token").and_then(Value::as_str) else {
            return;
        };
        let Some(c) = self.channels.get(&msg.topic) else {
            return;
        };
        if token.starts_with("sb_") || token == c.token {
            return;
        }
        let now = now_unix();
        let grant = match authorize::check_token(token, &self.hub.config, now) {
            Ok(g) => g,
            Err(reason) => {
                // Realtime closes with the message alone (no code prefix).
                let text = reason
                    .split_once(": ")
                    .map_or(reason.as_str(), |(_, m)| m)
                    .to_owned();
                return self.shutdown(&msg.topic, &text);
            }
        };
        let sub = c.sub.clone();
        let topic = msg.topic.clone();
        if let Some(c) = self.channels.get_mut(&topic) {
            c.token = token.to_owned();
            c.grant = grant.clone();
            c.presence_write = None;
        }
        self.apply_rights(&topic, &grant.caller, &sub, now).await;
    }

    async fn presence(&mut self, msg: &Message) {
        let kind = msg
            .payload
            .get("event")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        match kind.as_deref() {
            Some("track") => {}
            Some("untrack") => {
                self.hub.untrack(&msg.topic, self.id);
                return self.reply(msg, "ok", json!({}));
            }
            _ => return self.reply(msg, "error", json!({})),
        }
        let meta: Map<String, Value> = match msg.payload.get("payload") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return self.reply(
                    msg,
                    "error",
                    json!({"reason": "Presence track payload must be a map"}),
                )
            }
        };
        if Value::Object(meta.clone()).to_string().len() > self.hub.settings.max_presence_bytes {
            return self.shutdown(&msg.topic, "Track message size exceeded");
        }
        let Some(c) = self.channels.get(&msg.topic) else {
            return;
        };
        let allowed = match c.presence_write {
            Some(w) => w,
            None => {
                let (caller, sub) = (c.grant.caller.clone(), c.sub.clone());
                match authorize::can_write_presence(&self.hub.pool, &caller, &sub).await {
                    Ok(w) => {
                        if let Some(c) = self.channels.get_mut(&msg.topic) {
                            c.presence_write = Some(w);
                        }
                        w
                    }
                    Err(reason) => {
                        tracing::debug!(%reason, "cannot check presence rights");
                        false
                    }
                }
            }
        };
        if !allowed {
            return self.reply(msg, "error", json!({}));
        }
        let key = self
            .channels
            .get(&msg.topic)
            .map(|c| c.presence_key.clone())
            .unwrap_or_default();
        self.hub.track(&msg.topic, self.id, &key, meta);
        self.reply(msg, "ok", json!({}));
    }
}
