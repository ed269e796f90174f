//! Realtime through the gateway and PostgreSQL with the real migration:
//! a push announces itself (`realtime.send` in the push), the gateway
//! delivers it to the members' sockets and to nobody else, and the Rust
//! client (`RealtimeClient`) turns it into nudges, reconnects, rejoins and
//! resyncs. Every "Bad input" of issue 15 is here, spoken on a raw
//! websocket (the 1.0.0 serializer; the Rust client speaks 2.0.0 and
//! supabase-js in `tests/realtime_js.rs` is the oracle).
//! Needs PostgreSQL (`scripts/test.sh`); fails without it.
#![cfg(feature = "gateway")]

#[path = "support/pg.rs"]
mod pg;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use pg::{envelopes, expired_user_jwt, jwt, user_jwt, SupabaseFixture, TestDb, ANON_KEY};
use serde_json::{json, Value};
use supamerge::gateway::{Gateway, RealtimeSettings};
use supamerge::{
    AccessTokenProvider, ChannelState, ConnectionState, LiveUpdates, NudgeKind, PushRequest,
    RealtimeClient, Remote, Subscription, TokenError, WorkspaceId, WIRE_VERSION,
};
use tokio_tungstenite::tungstenite::Message as Ws;
use uuid::Uuid;

/// Fails the test after a generous guard instead of hanging (a guard, not a
/// timing assertion).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn topic(ws: &WorkspaceId) -> String {
    format!("realtime:workspace:{ws}")
}

/// Pushes `n` new changes of a new document as `user`.
async fn push(fx_url: &str, user: Uuid, ws: WorkspaceId, n: usize, seed: u8) {
    let remote = supamerge::SupabaseRemote::builder(fx_url, ANON_KEY)
        .with_access_token(user_jwt(user))
        .build()
        .unwrap();
    let (_, changes) = envelopes(n, seed);
    let r = remote
        .push(PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes,
        })
        .await
        .unwrap();
    assert_eq!(r.results.len(), n);
}

fn alice_remote(url: &str, user: Uuid) -> supamerge::SupabaseRemote {
    supamerge::SupabaseRemote::builder(url, ANON_KEY)
        .with_access_token(user_jwt(user))
        .build()
        .unwrap()
}

/// Pushes one new change as `user` straight into PostgreSQL (no gateway),
/// the way PostgREST would call the function.
async fn push_sql(db: &TestDb, user: Uuid, ws: WorkspaceId, seed: u8) {
    let mut c = db.superuser().await;
    let (_, changes) = envelopes(1, seed);
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
        &[&json!({"sub": user, "role": "authenticated"}).to_string()],
    )
    .await
    .unwrap();
    tx.execute(
        "select public.supamerge_push($1::text::uuid, $2::text::jsonb)",
        &[&ws.to_string(), &serde_json::to_string(&changes).unwrap()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// A raw websocket speaking the 1.0.0 serializer (JSON objects).
struct Raw {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Raw {
    async fn connect(base: &str, query: &str) -> Result<Raw, (u16, String)> {
        let url = format!(
            "{}/realtime/v1/websocket?{query}",
            base.replacen("http", "ws", 1)
        );
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => Ok(Raw { ws, next: 0 }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err((
                resp.status().as_u16(),
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
            )),
            Err(e) => panic!("websocket: {e}"),
        }
    }

    async fn open(base: &str) -> Raw {
        Raw::connect(base, &format!("apikey={ANON_KEY}&vsn=1.0.0"))
            .await
            .expect("websocket")
    }

    async fn send(
        &mut self,
        topic: &str,
        event: &str,
        payload: Value,
        join_ref: Option<&str>,
    ) -> String {
        self.next += 1;
        let r = self.next.to_string();
        let text = json!({"topic": topic, "event": event, "payload": payload, "ref": r, "join_ref": join_ref.unwrap_or(&r)});
        self.ws
            .send(Ws::Text(text.to_string()))
            .await
            .expect("send");
        r
    }

    /// The next message (None when the server closed the socket).
    async fn recv(&mut self) -> Option<Value> {
        loop {
            match within("a message", self.ws.next()).await {
                None | Some(Err(_)) | Some(Ok(Ws::Close(_))) => return None,
                Some(Ok(Ws::Text(t))) => return Some(serde_json::from_str(&t).expect("JSON")),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Messages until one satisfies `f` (which is returned).
    async fn until(&mut self, f: impl Fn(&Value) -> bool) -> Value {
        loop {
            let m = self.recv().await.expect("the socket stays open");
            if f(&m) {
                return m;
            }
        }
    }

    /// Joins `topic` privately; returns the reply's payload.
    async fn join(&mut self, topic: &str, token: Option<&str>) -> Value {
        let mut payload = json!({"config": {"broadcast": {"self": false}, "presence": {"key": "", "enabled": true}, "private": true}});
        if let Some(t) = token {
            payload["access_token"] = json!(t);
        }
        let r = self.send(topic, "phx_join", payload, None).await;
        let reply = self
            .until(|m| m["event"] == "phx_reply" && m["ref"] == json!(r))
            .await;
        reply["payload"].clone()
    }

    /// A heartbeat round trip; returns what arrived before its reply.
    async fn heartbeat(&mut self) -> Vec<Value> {
        let r = self.send("phoenix", "heartbeat", json!({}), None).await;
        let mut before = Vec::new();
        loop {
            let m = self.recv().await.expect("open");
            if m["topic"] == "phoenix" && m["ref"] == json!(r) {
                assert_eq!(m["payload"]["status"], "ok");
                return before;
            }
            before.push(m);
        }
    }
}

fn refused(reply: &Value) -> String {
    assert_eq!(reply["status"], "error", "{reply}");
    reply["response"]["reason"]
        .as_str()
        .expect("a reason")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_members_and_nobody_else() {
    let fx = SupabaseFixture::start().await;
    let (alice, bob, mallory) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(alice, &[bob]).await;
    let t = topic(&ws);

    let mut member = Raw::open(&fx.url()).await;
    let ok = member.join(&t, Some(&user_jwt(bob))).await;
    assert_eq!(ok["status"], "ok", "{ok}");
    let state = member.recv().await.unwrap();
    assert_eq!(state["event"], "presence_state");

    // Refused joins, each with Realtime's reason; their sockets stay open.
    let mut outsider = Raw::open(&fx.url()).await;
    assert_eq!(
        refused(&outsider.join(&t, Some(&user_jwt(mallory))).await),
        format!("Unauthorized: You do not have permissions to read from this Channel topic: workspace:{ws}")
    );
    let mut anon = Raw::open(&fx.url()).await;
    assert!(refused(&anon.join(&t, None).await).starts_with("Unauthorized: "));
    let mut expired = Raw::open(&fx.url()).await;
    let reason = refused(&expired.join(&t, Some(&expired_user_jwt(bob, 120))).await);
    assert!(
        reason.starts_with("InvalidJWTToken: Token has expired "),
        "{reason}"
    );
    let forged_token = {
        let claims = json!({"sub": bob, "role": "authenticated", "exp": now() + 600});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-gateway-secret-not-the-gateway"),
        )
        .unwrap()
    };
    let mut forged = Raw::open(&fx.url()).await;
    assert_eq!(
        refused(&forged.join(&t, Some(&forged_token)).await),
        "JwtSignatureError: Failed to validate JWT signature"
    );
    let mut garbage = Raw::open(&fx.url()).await;
    assert_eq!(
        refused(&garbage.join(&t, Some("not.a.jwt")).await),
        "MalformedJWT: The token provided is not a valid JWT"
    );
    let mut no_exp = Raw::open(&fx.url()).await;
    assert_eq!(
        refused(
            &no_exp
                .join(
                    &t,
                    Some(&jwt(&json!({"sub": bob, "role": "authenticated"})))
                )
                .await
        ),
        "InvalidJWTToken: Fields `role` and `exp` are required in JWT"
    );
    let mut public = Raw::open(&fx.url()).await;
    let r = public
        .send(
            &t,
            "phx_join",
            json!({"config": {"private": false}, "access_token": user_jwt(bob)}),
            None,
        )
        .await;
    let reply = public.until(|m| m["ref"] == json!(r)).await;
    assert_eq!(
        refused(&reply["payload"]),
        "PrivateOnly: This project only allows private channels"
    );

    push(&fx.url(), alice, ws, 3, 7).await;
    let b = member.until(|m| m["event"] == "broadcast").await;
    assert_eq!(b["topic"], t);
    let p = &b["payload"];
    assert_eq!(
        (p["type"].as_str(), p["event"].as_str()),
        (Some("broadcast"), Some("changes"))
    );
    let nudge = &p["payload"];
    assert_eq!(nudge["v"], 1);
    assert_eq!(nudge["workspace"], ws.to_string());
    assert_eq!(
        (nudge["from_seq"].as_u64(), nudge["to_seq"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(nudge["docs"].as_array().unwrap().len(), 1);
    assert_eq!(nudge["docs_complete"], true);
    assert!(p["meta"]["id"].is_string(), "{p}");
    assert!(nudge.get("bytes").is_none() && !b.to_string().contains("\"hash\""));

    // The member got it; the refused sockets got nothing (delivery to all
    // sockets of a topic happens at once, so it would be queued by now).
    for (name, s) in [
        ("outsider", &mut outsider),
        ("anon", &mut anon),
        ("expired", &mut expired),
        ("forged", &mut forged),
        ("garbage", &mut garbage),
        ("no exp", &mut no_exp),
        ("public", &mut public),
    ] {
        let got = s.heartbeat().await;
        assert!(got.is_empty(), "{name} received {got:?}");
    }
    // A push that stores nothing (already present) announces nothing.
    push(&fx.url(), alice, ws, 3, 7).await;
    push(&fx.url(), alice, ws, 1, 8).await;
    let next = member.until(|m| m["event"] == "broadcast").await;
    assert_eq!(next["payload"]["payload"]["from_seq"], 4, "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_heartbeats_and_api_keys() {
    let db = TestDb::new().await;
    let gateway = Gateway::bind(db.gateway_config().with_realtime(RealtimeSettings {
        max_sockets: 3,
        max_channels: 2,
        max_message_bytes: 2048,
        heartbeat_timeout: Duration::from_millis(1500),
        ..RealtimeSettings::default()
    }))
    .await
    .unwrap()
    .spawn();
    let url = gateway.url();
    let fx_owner = Uuid::new_v4();
    let remote = supamerge::SupabaseRemote::builder(&url, ANON_KEY)
        .with_access_token(user_jwt(fx_owner))
        .build()
        .unwrap();
    let mut wss = Vec::new();
    for _ in 0..3 {
        wss.push(remote.create_workspace("w").await.unwrap());
    }

    // API key and serializer are checked before the upgrade.
    assert_eq!(Raw::connect(&url, "vsn=1.0.0").await.err().unwrap().0, 401);
    let (status, body) = Raw::connect(&url, "apikey=wrong&vsn=1.0.0")
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body.contains("Invalid API key")),
        (401, true),
        "{body}"
    );
    assert_eq!(
        Raw::connect(&url, &format!("apikey={ANON_KEY}&vsn=9.9.9"))
            .await
            .err()
            .unwrap()
            .0,
        400
    );

    // Channels per socket.
    let mut s = Raw::open(&url).await;
    let token = user_jwt(fx_owner);
    assert_eq!(s.join(&topic(&wss[0]), Some(&token)).await["status"], "ok");
    assert_eq!(s.join(&topic(&wss[1]), Some(&token)).await["status"], "ok");
    assert_eq!(
        refused(&s.join(&topic(&wss[2]), Some(&token)).await),
        "ChannelRateLimitReached: Too many channels"
    );
    // Joining a topic again replaces the first join (phx_close for it).
    let again = s
        .send(
            &topic(&wss[0]),
            "phx_join",
            json!({"config": {"private": true}, "access_token": token}),
            None,
        )
        .await;
    let close = s.until(|m| m["event"] == "phx_close").await;
    assert_eq!(close["topic"], topic(&wss[0]));
    let reply = s.until(|m| m["ref"] == json!(again)).await;
    assert_eq!(reply["payload"]["status"], "ok");

    // A message over the size limit closes the socket.
    let mut big = Raw::open(&url).await;
    big.send(
        "phoenix",
        "heartbeat",
        json!({"pad": "x".repeat(4096)}),
        None,
    )
    .await;
    assert!(
        big.recv().await.is_none(),
        "an oversized message closes the socket"
    );

    // A client that never sends anything is dropped; one that heartbeats is not.
    let mut silent = Raw::open(&url).await;
    let mut alive = Raw::open(&url).await;
    assert!(alive.join(&topic(&wss[0]), Some(&token)).await["status"] == "ok");
    // Sockets past the cap are refused before the upgrade (s, silent, alive are open).
    let (status, body) = Raw::connect(&url, &format!("apikey={ANON_KEY}&vsn=1.0.0"))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 429, "{body}");
    let drop_silent = async { silent.recv().await };
    let keep_alive = async {
        for _ in 0..6 {
            alive.heartbeat().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (closed, ()) = tokio::join!(within("the silent socket's close", drop_silent), keep_alive);
    assert!(closed.is_none(), "the silent socket was closed");
    alive.heartbeat().await;
    drop((s, alive));
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_refreshes_are_checked_again() {
    let fx = SupabaseFixture::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(alice, &[bob]).await;
    let t = topic(&ws);
    let short = |user: Uuid, secs: u64| {
        jwt(
            &json!({"sub": user, "role": "authenticated", "aud": "authenticated", "exp": now() + secs}),
        )
    };

    // A token that expires while joined closes the channel, Realtime's way.
    let mut s = Raw::open(&fx.url()).await;
    assert_eq!(s.join(&t, Some(&short(bob, 2))).await["status"], "ok");
    let system = s.until(|m| m["event"] == "system").await;
    assert_eq!(system["payload"]["status"], "error");
    assert_eq!(system["payload"]["extension"], "system");
    assert_eq!(system["payload"]["channel"], format!("workspace:{ws}"));
    assert!(
        system["payload"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Token has expired "),
        "{system}"
    );
    let close = s.recv().await.unwrap();
    assert_eq!(
        (close["event"].as_str(), close["topic"].as_str()),
        (Some("phx_close"), Some(t.as_str()))
    );

    // A refreshed token is accepted and re-checked against the policies:
    // once bob is no longer a member, his next refresh closes the channel.
    let mut s = Raw::open(&fx.url()).await;
    let reply = s.join(&t, Some(&user_jwt(bob))).await;
    assert_eq!(reply["status"], "ok");
    let join_ref = s.next.to_string();
    s.send(
        &t,
        "access_token",
        json!({"access_token": short(bob, 600)}),
        Some(&join_ref),
    )
    .await;
    assert!(s
        .heartbeat()
        .await
        .iter()
        .all(|m| m["event"] != "phx_close"));
    fx.db
        .superuser()
        .await
        .execute(
            "delete from public.workspace_members where user_id = $1::text::uuid",
            &[&bob.to_string()],
        )
        .await
        .unwrap();
    s.send(
        &t,
        "access_token",
        json!({"access_token": short(bob, 900)}),
        Some(&join_ref),
    )
    .await;
    let system = s.until(|m| m["event"] == "system").await;
    assert_eq!(
        system["payload"]["message"],
        format!("You no longer have permission to read from this Channel topic: workspace:{ws}")
    );
    assert_eq!(s.recv().await.unwrap()["event"], "phx_close");

    // A forged refresh closes the channel too.
    let mut s = Raw::open(&fx.url()).await;
    assert_eq!(s.join(&t, Some(&user_jwt(alice))).await["status"], "ok");
    let join_ref = s.next.to_string();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": alice, "role": "authenticated", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-gateway-secret-not-the-gateway"),
    )
    .unwrap();
    s.send(
        &t,
        "access_token",
        json!({"access_token": forged}),
        Some(&join_ref),
    )
    .await;
    let system = s.until(|m| m["event"] == "system").await;
    assert_eq!(
        system["payload"]["message"],
        "Failed to validate JWT signature"
    );
    assert_eq!(s.recv().await.unwrap()["event"], "phx_close");
}

/// Tokens for one user that the test can replace (a session refresh).
struct Rotating {
    user: Uuid,
    valid_for: u64,
    refreshes: AtomicU64,
    current: std::sync::Mutex<String>,
}

impl Rotating {
    fn new(user: Uuid, valid_for: u64) -> Arc<Self> {
        let t = Self::mint(user, valid_for);
        Arc::new(Self {
            user,
            valid_for,
            refreshes: AtomicU64::new(0),
            current: std::sync::Mutex::new(t),
        })
    }

    fn mint(user: Uuid, valid_for: u64) -> String {
        jwt(
            &json!({"sub": user, "role": "authenticated", "exp": now() + valid_for, "jti": Uuid::new_v4()}),
        )
    }
}

#[async_trait]
impl AccessTokenProvider for Rotating {
    async fn access_token(&self) -> Result<Option<String>, TokenError> {
        Ok(Some(self.current.lock().unwrap().clone()))
    }

    async fn refresh(&self, _expired: Option<&str>) -> Result<Option<String>, TokenError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let t = Self::mint(self.user, self.valid_for);
        *self.current.lock().unwrap() = t.clone();
        Ok(Some(t))
    }
}

fn client(url: &str, tokens: Arc<dyn AccessTokenProvider>) -> RealtimeClient {
    RealtimeClient::builder(url, ANON_KEY)
        .with_token_provider(tokens)
        .with_heartbeat(Duration::from_millis(300))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .build()
        .unwrap()
}

async fn joined(sub: &Subscription) {
    let mut c = sub.channel();
    within("the join", c.wait_for(|s| *s == ChannelState::Joined))
        .await
        .unwrap();
}

/// The next nudge that is not a resync.
async fn pushed(sub: &mut Subscription) -> (u64, u64) {
    within("a push's nudge", async {
        loop {
            let n = sub.next().await.expect("a nudge");
            if let NudgeKind::Pushed { from_seq, to_seq } = n.kind {
                return (from_seq, to_seq);
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_nudges_rejoins_after_a_gateway_restart_and_resyncs() {
    let db = TestDb::new().await;
    let gateway = db.spawn_gateway().await;
    let url = gateway.url();
    let addr = gateway.local_addr();
    let alice = Uuid::new_v4();
    let ws = alice_remote(&url, alice)
        .create_workspace("w")
        .await
        .unwrap();

    let c = client(&url, Rotating::new(alice, 3600));
    let mut state = c.state();
    let mut sub = c.subscribe(ws).unwrap();
    joined(&sub).await;
    assert_eq!(
        within("resync", sub.next()).await.unwrap().kind,
        NudgeKind::Resync
    );
    push(&url, alice, ws, 2, 1).await;
    assert_eq!(pushed(&mut sub).await, (1, 2));

    // The gateway goes away: the connection drops, the state says so.
    gateway.shutdown().await.unwrap();
    within(
        "the disconnect",
        state.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await
    .unwrap();
    // While it is down, a change lands in the database (its nudge is lost:
    // nobody listens).
    push_sql(&db, alice, ws, 3).await;
    // A new gateway on the same address: the client reconnects, rejoins,
    // and resyncs (what was pushed meanwhile was never announced to it).
    let config = db.gateway_config().with_listen(addr);
    let gateway = Gateway::bind(config).await.unwrap().spawn();
    within(
        "the reconnect",
        state.wait_for(ConnectionState::is_connected),
    )
    .await
    .unwrap();
    joined(&sub).await;
    let n = within("the resync", sub.next()).await.unwrap();
    assert_eq!(n.kind, NudgeKind::Resync);
    // The resync leads a pull to the change made while the gateway was down.
    let page = alice_remote(&url, alice)
        .pull(supamerge::PullRequest {
            v: WIRE_VERSION,
            workspace: ws,
            cursor: supamerge::Cursor("2".into()),
            limit: 100,
            skip_snapshotted: false,
        })
        .await
        .unwrap();
    assert_eq!(
        page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![3]
    );
    push(&url, alice, ws, 1, 2).await;
    assert_eq!(pushed(&mut sub).await, (4, 4));
    c.shutdown();
    assert!(within("the end", sub.next()).await.is_none());
    gateway.shutdown().await.unwrap();
}

/// A TCP proxy in front of the gateway that can cut every connection, or
/// swallow what the server sends (a connection that stays open but
/// delivers nothing: lost nudges, lost heartbeat replies).
struct Proxy {
    addr: std::net::SocketAddr,
    blackhole: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blackhole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let bh = blackhole.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let bh = bh.clone();
                let mut cut_rx = cut_rx.clone();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let up = tokio::io::copy(&mut cr, &mut sw);
                    let down = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if !bh.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        () = down => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            blackhole,
            cut,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_and_swallowed_messages_end_in_a_resync() {
    let fx = SupabaseFixture::start().await;
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    let proxy = Proxy::start(fx.gateway.local_addr()).await;
    let tokens = Rotating::new(alice, 3600);
    let c = client(&proxy.url(), tokens);
    let mut state = c.state();
    let mut sub = c.subscribe(ws).unwrap();
    joined(&sub).await;
    assert_eq!(
        within("resync", sub.next()).await.unwrap().kind,
        NudgeKind::Resync
    );

    // 1. The connection is cut: the client reconnects, rejoins, resyncs.
    proxy.cut.send_modify(|g| *g += 1);
    within(
        "the disconnect",
        state.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await
    .unwrap();
    within(
        "the reconnect",
        state.wait_for(ConnectionState::is_connected),
    )
    .await
    .unwrap();
    joined(&sub).await;
    assert_eq!(
        within("resync", sub.next()).await.unwrap().kind,
        NudgeKind::Resync
    );

    // 2. The server's messages are swallowed while a push happens: its
    // nudge is lost, and so are the heartbeat replies, so the client gives
    // the connection up, reconnects and resyncs; nothing is missed for good.
    proxy.blackhole.store(true, Ordering::SeqCst);
    push(&fx.url(), alice, ws, 1, 3).await;
    within("the heartbeat timeout", state.wait_for(|s| matches!(s, ConnectionState::Disconnected { reason, .. } if reason.contains("heartbeat"))))
        .await
        .unwrap();
    proxy.blackhole.store(false, Ordering::SeqCst);
    within(
        "the reconnect",
        state.wait_for(ConnectionState::is_connected),
    )
    .await
    .unwrap();
    let n = within("the resync", sub.next()).await.unwrap();
    assert_eq!(
        n.kind,
        NudgeKind::Resync,
        "the lost nudge is replaced by a resync"
    );
    push(&fx.url(), alice, ws, 1, 4).await;
    assert_eq!(pushed(&mut sub).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refreshed_and_non_members_are_refused() {
    let fx = SupabaseFixture::start().await;
    let (alice, mallory) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(alice, &[]).await;

    // A session whose tokens live 2 s: the server closes the channel when
    // one expires; the client refreshes and rejoins.
    let tokens = Rotating::new(alice, 2);
    let c = client(&fx.url(), tokens.clone());
    let mut sub = c.subscribe(ws).unwrap();
    joined(&sub).await;
    let mut channel = sub.channel();
    within(
        "the expiry",
        channel.wait_for(
            |s| matches!(s, ChannelState::Refused { reason } if reason.contains("expired")),
        ),
    )
    .await
    .unwrap();
    within(
        "the rejoin",
        channel.wait_for(|s| *s == ChannelState::Joined),
    )
    .await
    .unwrap();
    assert!(tokens.refreshes.load(Ordering::SeqCst) >= 1);
    while sub.try_next().is_some() {}
    push(&fx.url(), alice, ws, 1, 5).await;
    // Its nudge, or (when the 2 s session expired again meanwhile) a resync
    // that absorbed it: either leads to a pull.
    let n = within("the push's nudge", sub.next()).await.unwrap();
    assert!(
        matches!(
            n.kind,
            NudgeKind::Pushed {
                from_seq: 1,
                to_seq: 1
            } | NudgeKind::Resync
        ),
        "{n:?}"
    );

    // A non-member's channel is refused with Realtime's reason, and stays so.
    let m = client(&fx.url(), Rotating::new(mallory, 3600));
    let mut msub = m.subscribe(ws).unwrap();
    let mut mchan = msub.channel();
    let refusal = within(
        "the refusal",
        mchan.wait_for(|s| matches!(s, ChannelState::Refused { .. })),
    )
    .await
    .unwrap()
    .clone();
    assert_eq!(
        refusal,
        ChannelState::Refused {
            reason: format!("Unauthorized: You do not have permissions to read from this Channel topic: workspace:{ws}")
        }
    );
    drop(sub);
    // A remote's own live updates (what the sync engine takes).
    let alice_remote: Arc<dyn Remote> = Arc::new(fx.remote_for(alice));
    let alice_long = alice_remote
        .live_updates()
        .expect("Supabase has live updates");
    let mut sub = alice_long.subscribe(ws).unwrap();
    joined(&sub).await;
    assert_eq!(
        within("resync", sub.next()).await.unwrap().kind,
        NudgeKind::Resync
    );
    push(&fx.url(), alice, ws, 1, 6).await;
    // This push stored seq 2. The first push's broadcast (seq 1) may reach
    // this subscription late, after its join, when the machine stalls; the
    // inbox then merges the two into one nudge covering 1..=2 (nudges are
    // coalesced hints). Either way the nudge must end at this push.
    let (from, to) = pushed(&mut sub).await;
    assert!(to == 2 && (1..=2).contains(&from), "({from}, {to})");
    assert!(msub.try_next().is_none(), "no nudge for a non-member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_between_two_clients_through_the_gateway() {
    let fx = SupabaseFixture::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(alice, &[bob]).await;
    let a = RealtimeClient::builder(fx.url(), ANON_KEY)
        .with_access_token(user_jwt(alice))
        .with_presence_key("alice")
        .build()
        .unwrap();
    let b = RealtimeClient::builder(fx.url(), ANON_KEY)
        .with_access_token(user_jwt(bob))
        .with_presence_key("bob")
        .build()
        .unwrap();
    let sa = a.subscribe(ws).unwrap();
    let sb = b.subscribe(ws).unwrap();
    joined(&sa).await;
    joined(&sb).await;
    let mut seen_by_bob = sb.presence();
    let mut seen_by_alice = sa.presence();
    sa.track(json!({"cursor": {"doc": "d1", "at": 3}, "name": "Alice"}))
        .unwrap();
    sb.track(json!({"name": "Bob"})).unwrap();
    within(
        "alice seen by bob",
        seen_by_bob.wait_for(|p| {
            p.get("alice")
                .is_some_and(|e| e[0].meta["cursor"]["at"] == 3)
        }),
    )
    .await
    .unwrap();
    within(
        "bob seen by alice",
        seen_by_alice.wait_for(|p| p.contains_key("bob")),
    )
    .await
    .unwrap();
    sa.track(json!({"cursor": {"doc": "d1", "at": 9}, "name": "Alice"}))
        .unwrap();
    let now_seen = within(
        "the update",
        seen_by_bob.wait_for(|p| {
            p.get("alice")
                .is_some_and(|e| e[0].meta["cursor"]["at"] == 9)
        }),
    )
    .await
    .unwrap()
    .clone();
    assert_eq!(
        now_seen["alice"].len(),
        1,
        "an update replaces: {now_seen:?}"
    );
    // Presence is never persisted: nothing of it is in the database.
    let stored: i64 = fx
        .db
        .superuser()
        .await
        .query_one(
            "select count(*) from realtime.messages where extension = 'presence'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    // Alice leaves: bob sees her go.
    drop(sa);
    within(
        "alice gone",
        seen_by_bob.wait_for(|p| !p.contains_key("alice")),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bounded_message_per_push_and_a_failing_send_never_fails_it() {
    let fx = SupabaseFixture::start().await;
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    let remote = alice_remote(&fx.url(), alice);
    // One push of 60 documents × 5 changes: one message, naming 50 documents.
    let mut changes = Vec::new();
    for seed in 0..60u8 {
        changes.extend(envelopes(5, seed).1);
    }
    let r = remote
        .push(PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes,
        })
        .await
        .unwrap();
    assert_eq!(r.results.len(), 300);
    let db = fx.db.superuser().await;
    let rows = db
        .query(
            "select topic, event, private, payload from realtime.messages where extension = 'broadcast'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one message for one push");
    let (topic_, event, private, payload): (String, String, bool, Value) = (
        rows[0].get(0),
        rows[0].get(1),
        rows[0].get(2),
        rows[0].get(3),
    );
    assert_eq!(
        (topic_, event.as_str(), private),
        (format!("workspace:{ws}"), "changes", true)
    );
    assert_eq!(
        (payload["from_seq"].as_u64(), payload["to_seq"].as_u64()),
        (Some(1), Some(300))
    );
    assert_eq!(payload["docs"].as_array().unwrap().len(), 50);
    assert_eq!(payload["docs_complete"], false);
    assert!(
        payload.to_string().len() < 4096,
        "small: {}",
        payload.to_string().len()
    );

    // realtime.send failing (here: raising) never fails the push.
    db.batch_execute(
        "create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true) \
         returns void language plpgsql as $$ begin raise exception 'realtime is down'; end $$",
    )
    .await
    .unwrap();
    push(&fx.url(), alice, ws, 2, 200).await;
    // Nor does a database without the realtime schema at all.
    db.batch_execute("alter schema realtime rename to realtime_gone")
        .await
        .unwrap();
    push(&fx.url(), alice, ws, 2, 201).await;
    assert_eq!(fx.db.change_count().await, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_feed_survives_losing_its_database_connection() {
    let fx = SupabaseFixture::start().await;
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    let mut s = Raw::open(&fx.url()).await;
    assert_eq!(
        s.join(&topic(&ws), Some(&user_jwt(alice))).await["status"],
        "ok"
    );
    push(&fx.url(), alice, ws, 1, 1).await;
    s.until(|m| m["event"] == "broadcast").await;

    // The database drops the gateway's LISTEN connection.
    let killed: i64 = fx
        .db
        .superuser()
        .await
        .query_one(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity \
              where datname = current_database() and application_name = 'supamerge-gateway-realtime-feed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the feed's connection was found");
    // Nudges sent while it reconnects are lost (clients resync or poll);
    // once it is back they flow again: push until one arrives.
    let arrived = within("a broadcast after the reconnect", async {
        for seed in 2..=u8::MAX {
            push(&fx.url(), alice, ws, 1, seed).await;
            let got = tokio::time::timeout(
                Duration::from_millis(500),
                s.until(|m| m["event"] == "broadcast"),
            )
            .await;
            if let Ok(m) = got {
                return m;
            }
        }
        panic!("no broadcast after 250 pushes");
    })
    .await;
    assert_eq!(arrived["payload"]["event"], "changes");
}
