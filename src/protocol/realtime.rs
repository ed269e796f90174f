//! Supabase Realtime's wire protocol (Phoenix channels), the subset
//! supamerge speaks, and the nudge a push announces.
//!
//! Both ends use this codec: the Realtime client of
//! [`SupabaseRemote`](crate::SupabaseRemote) and the gateway's
//! `/realtime/v1/websocket`. The official client (`@supabase/supabase-js`)
//! is the oracle that keeps it honest (`tests/realtime_js.rs`).
//!
//! A message is `{join_ref, ref, topic, event, payload}`. Two serializers
//! (the `vsn` query parameter of the websocket URL):
//!
//! - **1.0.0**: text frames, each a JSON object
//!   `{"join_ref","ref","topic","event","payload"}`.
//! - **2.0.0** (what supabase-js sends by default): text frames are JSON
//!   arrays `[join_ref, ref, topic, event, payload]`; broadcasts travel in
//!   binary frames. A broadcast the server delivers is kind 4
//!   (`user_broadcast`): `4, topic_len, event_len, meta_len, encoding`,
//!   then the topic, the user event, the metadata JSON and the payload
//!   (encoding 1 = JSON). A broadcast a client sends is kind 3
//!   (`user_broadcast_push`): `3, join_ref_len, ref_len, topic_len,
//!   event_len, meta_len, encoding`, then those strings and the payload.
//!   Both decode to event `broadcast` with the payload
//!   `{"type":"broadcast","event","payload","meta"?}`, as realtime-js
//!   decodes them.
//!
//! What travels on a workspace's channel (`realtime:workspace:<uuid>`):
//! the database's broadcast of event [`NUDGE_EVENT`] with a [`NudgePayload`]
//! after each push that stored changes, and Realtime Presence
//! (`presence` pushes, `presence_state` / `presence_diff` events).
//! `docs/realtime.md` describes the whole exchange.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::id::{DocId, WorkspaceId};

/// The 1.0.0 serializer (JSON objects).
pub const VSN_1: &str = "1.0.0";
/// The 2.0.0 serializer (JSON arrays and binary broadcasts).
pub const VSN_2: &str = "2.0.0";

/// Phoenix's topic for heartbeats.
pub const PHOENIX_TOPIC: &str = "phoenix";
/// The prefix of every Realtime channel topic on the wire.
pub const TOPIC_PREFIX: &str = "realtime:";

/// Events of the protocol.
pub mod event {
    /// Client → server: join a channel.
    pub const JOIN: &str = "phx_join";
    /// Client → server: leave a channel.
    pub const LEAVE: &str = "phx_leave";
    /// Server → client: the answer to a push (`{"status","response"}`).
    pub const REPLY: &str = "phx_reply";
    /// Server → client: the channel crashed; the client rejoins.
    pub const ERROR: &str = "phx_error";
    /// Server → client: the channel was closed by the server.
    pub const CLOSE: &str = "phx_close";
    /// Client → server, topic `phoenix`: keep the socket alive.
    pub const HEARTBEAT: &str = "heartbeat";
    /// Client → server: a new access token for a joined channel.
    pub const ACCESS_TOKEN: &str = "access_token";
    /// A broadcast message.
    pub const BROADCAST: &str = "broadcast";
    /// Client → server: presence `track` / `untrack`.
    pub const PRESENCE: &str = "presence";
    /// Server → client: everybody present, after joining.
    pub const PRESENCE_STATE: &str = "presence_state";
    /// Server → client: who joined and who left.
    pub const PRESENCE_DIFF: &str = "presence_diff";
    /// Server → client: status of the channel (`{"extension","status","message","channel"}`).
    pub const SYSTEM: &str = "system";
}

/// The user event of the broadcast a push sends (`realtime.send(.., 'changes', ..)`).
pub const NUDGE_EVENT: &str = "changes";

/// The version of [`NudgePayload`] this build writes and reads.
pub const NUDGE_VERSION: u32 = 1;

/// The most document ids a nudge names (more: `docs_complete` is false).
pub const MAX_NUDGE_DOCS: usize = 50;

/// The channel (sub)topic of a workspace: `workspace:<uuid>`.
pub fn workspace_topic(workspace: &WorkspaceId) -> String {
    format!("workspace:{workspace}")
}

/// The workspace a channel (sub)topic names, if it is `workspace:<uuid>`.
pub fn topic_workspace(topic: &str) -> Option<WorkspaceId> {
    topic.strip_prefix("workspace:")?.parse().ok()
}

/// What a push announces on its workspace's channel: never change bytes,
/// only where the log grew (clients pull).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NudgePayload {
    /// [`NUDGE_VERSION`].
    pub v: u32,
    /// The workspace whose log grew.
    pub workspace: WorkspaceId,
    /// The first sequence number the push stored.
    pub from_seq: u64,
    /// The last sequence number the push stored (the newest position).
    pub to_seq: u64,
    /// The documents the push touched, at most [`MAX_NUDGE_DOCS`].
    #[serde(default)]
    pub docs: Vec<DocId>,
    /// Whether `docs` names every document the push touched.
    #[serde(default)]
    pub docs_complete: bool,
}

/// Errors decoding a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The text is not JSON of the serializer's shape.
    #[error("malformed {vsn} text frame: {reason}")]
    Text {
        /// The serializer version.
        vsn: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A binary frame that is not a known kind, or is truncated.
    #[error("malformed binary frame: {reason}")]
    Binary {
        /// What is wrong.
        reason: String,
    },
    /// A message that cannot be put in a binary frame (a field over 255 bytes).
    #[error("cannot encode {field} of {len} bytes in a binary frame (at most 255)")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
}

/// The serializer of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    /// `1.0.0`: JSON objects.
    V1,
    /// `2.0.0`: JSON arrays, binary broadcasts.
    V2,
}

impl Vsn {
    /// The serializer a `vsn` query value names (absent: 1.0.0, Realtime's
    /// default); `None` for an unknown one.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some(VSN_1) => Some(Vsn::V1),
            Some(VSN_2) => Some(Vsn::V2),
            Some(_) => None,
        }
    }

    /// The version string.
    pub fn as_str(&self) -> &'static str {
        match self {
            Vsn::V1 => VSN_1,
            Vsn::V2 => VSN_2,
        }
    }
}

/// A websocket frame's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// One Phoenix message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The ref of the join this message belongs to.
    pub join_ref: Option<String>,
    /// The ref a reply answers (or the push's own ref).
    pub msg_ref: Option<String>,
    /// The topic (`realtime:<subtopic>` or `phoenix`).
    pub topic: String,
    /// The event.
    pub event: String,
    /// The payload (an object).
    pub payload: Value,
}

impl Message {
    /// A message with no refs.
    pub fn new(topic: impl Into<String>, event: impl Into<String>, payload: Value) -> Self {
        Self {
            join_ref: None,
            msg_ref: None,
            topic: topic.into(),
            event: event.into(),
            payload,
        }
    }

    /// A `phx_reply` to `request` with `status` (`ok` / `error`) and `response`.
    pub fn reply(request: &Message, status: &str, response: Value) -> Self {
        Self {
            join_ref: request.join_ref.clone(),
            msg_ref: request.msg_ref.clone(),
            topic: request.topic.clone(),
            event: event::REPLY.into(),
            payload: json!({"status": status, "response": response}),
        }
    }

    /// A database broadcast as the server delivers it: event `broadcast`,
    /// payload `{"type":"broadcast","event","payload","meta":{"id"}}`.
    pub fn broadcast(
        topic: impl Into<String>,
        user_event: &str,
        payload: Value,
        id: Option<&str>,
    ) -> Self {
        let mut p = json!({"type": "broadcast", "event": user_event, "payload": payload});
        if let (Some(id), Some(obj)) = (id, p.as_object_mut()) {
            obj.insert("meta".into(), json!({"id": id}));
        }
        Self::new(topic, event::BROADCAST, p)
    }

    /// The `status` of a `phx_reply`.
    pub fn reply_status(&self) -> Option<&str> {
        self.payload.get("status").and_then(Value::as_str)
    }

    /// Encodes the message as a server sends it: with 2.0.0, a broadcast
    /// with a JSON payload goes out as a binary `user_broadcast` (kind 4).
    ///
    /// # Errors
    /// [`FrameError::FieldTooLong`] for a binary field over 255 bytes.
    pub fn encode_server(&self, vsn: Vsn) -> Result<Frame, FrameError> {
        match vsn {
            Vsn::V1 => Ok(Frame::Text(self.to_v1_text())),
            Vsn::V2 => match self.user_broadcast() {
                Some((user_event, payload, meta)) => {
                    let meta = match meta {
                        Some(m) => m.to_string(),
                        None => String::new(),
                    };
                    let payload = payload.to_string();
                    let mut out = Vec::with_capacity(
                        5 + self.topic.len() + user_event.len() + meta.len() + payload.len(),
                    );
                    out.push(KIND_USER_BROADCAST);
                    out.push(field_len("topic", &self.topic)?);
                    out.push(field_len("user event", user_event)?);
                    out.push(field_len("metadata", &meta)?);
                    out.push(ENCODING_JSON);
                    out.extend_from_slice(self.topic.as_bytes());
                    out.extend_from_slice(user_event.as_bytes());
                    out.extend_from_slice(meta.as_bytes());
                    out.extend_from_slice(payload.as_bytes());
                    Ok(Frame::Binary(out))
                }
                None => Ok(Frame::Text(self.to_v2_text())),
            },
        }
    }

    /// Encodes the message as a client sends it (text frames only: this
    /// client never pushes broadcasts).
    pub fn encode_client(&self, vsn: Vsn) -> Frame {
        match vsn {
            Vsn::V1 => Frame::Text(self.to_v1_text()),
            Vsn::V2 => Frame::Text(self.to_v2_text()),
        }
    }

    /// Decodes a frame of either direction.
    ///
    /// # Errors
    /// [`FrameError`] for a frame of another shape.
    pub fn decode(frame: &Frame, vsn: Vsn) -> Result<Self, FrameError> {
        match frame {
            Frame::Text(text) => decode_text(text, vsn),
            Frame::Binary(bytes) => decode_binary(bytes),
        }
    }

    fn user_broadcast(&self) -> Option<(&str, &Value, Option<&Value>)> {
        if self.event != event::BROADCAST {
            return None;
        }
        let obj = self.payload.as_object()?;
        if obj.get("type").and_then(Value::as_str) != Some("broadcast") {
            return None;
        }
        let user_event = obj.get("event")?.as_str()?;
        let payload = obj.get("payload")?;
        Some((user_event, payload, obj.get("meta")))
    }

    fn to_v1_text(&self) -> String {
        json!({
            "join_ref": self.join_ref,
            "ref": self.msg_ref,
            "topic": self.topic,
            "event": self.event,
            "payload": self.payload,
        })
        .to_string()
    }

    fn to_v2_text(&self) -> String {
        json!([
            self.join_ref,
            self.msg_ref,
            self.topic,
            self.event,
            self.payload
        ])
        .to_string()
    }
}

const KIND_USER_BROADCAST_PUSH: u8 = 3;
const KIND_USER_BROADCAST: u8 = 4;
const ENCODING_JSON: u8 = 1;

fn field_len(field: &'static str, s: &str) -> Result<u8, FrameError> {
    u8::try_from(s.len()).map_err(|_| FrameError::FieldTooLong {
        field,
        len: s.len(),
    })
}

/// A ref: a JSON string or null (numbers are accepted and turned into strings).
fn opt_ref(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("a ref must be a string or null, got {other}")),
    }
}

fn decode_text(text: &str, vsn: Vsn) -> Result<Message, FrameError> {
    let err = |reason: String| FrameError::Text {
        vsn: vsn.as_str(),
        reason,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let (join_ref, msg_ref, topic, event, payload) = match (vsn, value) {
        (Vsn::V2, Value::Array(items)) => {
            if items.len() != 5 {
                return Err(err(format!(
                    "expected [join_ref, ref, topic, event, payload], got {} elements",
                    items.len()
                )));
            }
            let mut it = items.into_iter();
            let join_ref = it.next();
            let msg_ref = it.next();
            let topic = it.next();
            let event = it.next();
            let payload = it.next();
            (join_ref, msg_ref, topic, event, payload)
        }
        (Vsn::V1, Value::Object(mut obj)) => (
            obj.remove("join_ref"),
            obj.remove("ref"),
            obj.remove("topic"),
            obj.remove("event"),
            obj.remove("payload"),
        ),
        (Vsn::V2, _) => return Err(err("expected a JSON array".into())),
        (Vsn::V1, _) => return Err(err("expected a JSON object".into())),
    };
    let join_ref = opt_ref(join_ref.as_ref()).map_err(err)?;
    let msg_ref = opt_ref(msg_ref.as_ref()).map_err(err)?;
    let topic = match topic {
        Some(Value::String(s)) => s,
        _ => return Err(err("the topic must be a string".into())),
    };
    let event = match event {
        Some(Value::String(s)) => s,
        _ => return Err(err("the event must be a string".into())),
    };
    let payload = match payload {
        Some(p @ Value::Object(_)) => p,
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(_) => return Err(err("the payload must be an object".into())),
    };
    Ok(Message {
        join_ref,
        msg_ref,
        topic,
        event,
        payload,
    })
}

/// Reads the binary frames of 2.0.0 that carry broadcasts.
fn decode_binary(bytes: &[u8]) -> Result<Message, FrameError> {
    let err = |reason: &str| FrameError::Binary {
        reason: reason.to_owned(),
    };
    let kind = *bytes.first().ok_or_else(|| err("empty frame"))?;
    let (header, lens): (usize, Vec<usize>) = match kind {
        KIND_USER_BROADCAST_PUSH => {
            let h = bytes.get(1..7).ok_or_else(|| err("truncated header"))?;
            (7, h[..5].iter().map(|b| usize::from(*b)).collect())
        }
        KIND_USER_BROADCAST => {
            let h = bytes.get(1..5).ok_or_else(|| err("truncated header"))?;
            (5, h[..3].iter().map(|b| usize::from(*b)).collect())
        }
        other => {
            return Err(FrameError::Binary {
                reason: format!("unsupported binary kind {other} (3 and 4 are broadcasts)"),
            })
        }
    };
    let encoding = bytes[header - 1];
    let mut at = header;
    let mut fields = Vec::with_capacity(lens.len());
    for len in &lens {
        let end = at + len;
        let raw = bytes.get(at..end).ok_or_else(|| err("truncated field"))?;
        let s = std::str::from_utf8(raw).map_err(|_| err("a field is not UTF-8"))?;
        fields.push(s.to_owned());
        at = end;
    }
    let body = &bytes[at..];
    if encoding != ENCODING_JSON {
        return Err(err(
            "binary broadcast payloads are not supported (only JSON, encoding 1)",
        ));
    }
    let payload: Value = serde_json::from_slice(body).map_err(|e| FrameError::Binary {
        reason: format!("the payload is not JSON: {e}"),
    })?;
    let (join_ref, msg_ref, topic, user_event, meta) = if kind == KIND_USER_BROADCAST_PUSH {
        let mut f = fields.into_iter();
        let join_ref = f.next().filter(|s| !s.is_empty());
        let msg_ref = f.next().filter(|s| !s.is_empty());
        let topic = f.next().unwrap_or_default();
        let ev = f.next().unwrap_or_default();
        let meta = f.next().unwrap_or_default();
        (join_ref, msg_ref, topic, ev, meta)
    } else {
        let mut f = fields.into_iter();
        let topic = f.next().unwrap_or_default();
        let ev = f.next().unwrap_or_default();
        let meta = f.next().unwrap_or_default();
        (None, None, topic, ev, meta)
    };
    let mut p = json!({"type": "broadcast", "event": user_event, "payload": payload});
    if !meta.is_empty() {
        let meta: Value = serde_json::from_str(&meta).map_err(|e| FrameError::Binary {
            reason: format!("the metadata is not JSON: {e}"),
        })?;
        if let Some(obj) = p.as_object_mut() {
            obj.insert("meta".into(), meta);
        }
    }
    Ok(Message {
        join_ref,
        msg_ref,
        topic,
        event: event::BROADCAST.into(),
        payload: p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_text_round_trip() {
        let m = Message {
            join_ref: Some("1".into()),
            msg_ref: Some("2".into()),
            topic: "realtime:workspace:x".into(),
            event: event::JOIN.into(),
            payload: json!({"config": {"private": true}}),
        };
        let f = m.encode_client(Vsn::V2);
        assert_eq!(
            f,
            Frame::Text(
                r#"["1","2","realtime:workspace:x","phx_join",{"config":{"private":true}}]"#.into()
            )
        );
        assert_eq!(Message::decode(&f, Vsn::V2).unwrap(), m);
        let f1 = m.encode_client(Vsn::V1);
        assert_eq!(Message::decode(&f1, Vsn::V1).unwrap(), m);
        // The wrong serializer is refused, not guessed.
        assert!(Message::decode(&f1, Vsn::V2).is_err());
        assert!(Message::decode(&f, Vsn::V1).is_err());
    }

    #[test]
    fn broadcasts_go_binary_in_v2_and_decode_like_realtime_js() {
        let m = Message::broadcast(
            "realtime:workspace:x",
            NUDGE_EVENT,
            json!({"to_seq": 3}),
            Some("id-1"),
        );
        let Frame::Binary(bytes) = m.encode_server(Vsn::V2).unwrap() else {
            panic!("binary expected")
        };
        assert_eq!(bytes[0], 4);
        assert_eq!(usize::from(bytes[1]), "realtime:workspace:x".len());
        assert_eq!(bytes[4], 1, "JSON encoding");
        let back = Message::decode(&Frame::Binary(bytes), Vsn::V2).unwrap();
        assert_eq!(back, m);
        // 1.0.0 carries the same payload in a JSON object.
        let Frame::Text(t) = m.encode_server(Vsn::V1).unwrap() else {
            panic!("text expected")
        };
        assert_eq!(Message::decode(&Frame::Text(t), Vsn::V1).unwrap(), m);
    }

    #[test]
    fn client_broadcast_push_kind_3() {
        // What realtime-js's serializer writes for channel.send({type:'broadcast', ...}).
        let (join_ref, r, topic, ev, payload) =
            ("1", "5", "realtime:room", "cursor", br#"{"x":1}"#);
        let mut b = vec![3, 1, 1, topic.len() as u8, ev.len() as u8, 0, 1];
        for s in [join_ref, r, topic, ev] {
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(payload);
        let m = Message::decode(&Frame::Binary(b), Vsn::V2).unwrap();
        assert_eq!(m.join_ref.as_deref(), Some("1"));
        assert_eq!(m.event, "broadcast");
        assert_eq!(m.payload["event"], "cursor");
        assert_eq!(m.payload["payload"]["x"], 1);
    }

    #[test]
    fn hostile_frames_are_errors() {
        for bad in [
            vec![],
            vec![9, 1, 2],
            vec![4, 200, 0, 0, 1, b'a'],
            vec![4, 1, 1, 0, 0, b'a', b'b', b'{', b'}'],
            vec![4, 1, 1, 0, 1, b'a', b'b', b'{'],
        ] {
            assert!(
                Message::decode(&Frame::Binary(bad.clone()), Vsn::V2).is_err(),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "[]",
            "[1,2,3,4,5]",
            r#"[null,null,"t","e",[]]"#,
            "{}",
            "nope",
        ] {
            assert!(
                Message::decode(&Frame::Text(bad.into()), Vsn::V2).is_err(),
                "{bad}"
            );
        }
        assert!(Message::decode(&Frame::Text(r#"{"topic":1}"#.into()), Vsn::V1).is_err());
        let long = Message::broadcast("t".repeat(300), "e", json!({}), None);
        assert!(matches!(
            long.encode_server(Vsn::V2),
            Err(FrameError::FieldTooLong { field: "topic", .. })
        ));
    }

    #[test]
    fn nudge_payload_and_topics() {
        let ws: WorkspaceId = "0190b1a2-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(topic_workspace(&workspace_topic(&ws)), Some(ws));
        assert_eq!(topic_workspace("workspace:nope"), None);
        assert_eq!(topic_workspace("room:1"), None);
        // What the SQL sends (realtime.send adds "id").
        let p: NudgePayload = serde_json::from_value(json!({
            "v": 1, "workspace": ws.to_string(), "from_seq": 4, "to_seq": 9,
            "docs": [], "docs_complete": false, "id": "x"
        }))
        .unwrap();
        assert_eq!((p.from_seq, p.to_seq), (4, 9));
    }
}
