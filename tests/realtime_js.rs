//! The official client is the oracle of the gateway's Realtime:
//! `@supabase/supabase-js` (pinned in tests/js/package-lock.json) subscribes
//! to a workspace's private channel through the gateway
//! (tests/js/realtime.mjs), a push made from Rust reaches it as a broadcast,
//! a non-member's join, an expired and a forged token are refused with Realtime's
//! error shape, and presence works between two supabase-js clients and a
//! Rust `RealtimeClient`. Needs PostgreSQL (`scripts/test.sh`) and node +
//! npm; fails, never skips, when either is missing.
#![cfg(feature = "gateway")]

#[path = "support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use pg::{envelopes, expired_user_jwt, user_jwt, SupabaseFixture, ANON_KEY};
use serde_json::{json, Value};
use supamerge::{LiveUpdates, PushRequest, RealtimeClient, Remote, WIRE_VERSION};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

fn tool(name: &str) {
    match std::process::Command::new(name).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "`{name}` is required by the supabase-js Realtime test (node 18+ and npm); \
             install Node.js (e.g. `apt-get install -y nodejs npm`)"
        ),
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = within("a line from node", lines.next_line())
        .await
        .expect("read node's output")
        .expect("node ended early");
    serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_receives_pushes_and_presence_through_the_gateway() {
    tool("node");
    tool("npm");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules/@supabase/supabase-js").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }

    let fx = SupabaseFixture::start().await;
    let (alice, bob, mallory) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(alice, &[bob]).await;
    let input = json!({
        "url": fx.url(),
        "anonKey": ANON_KEY,
        "workspace": ws,
        "member": user_jwt(alice),
        "other": user_jwt(bob),
        "outsider": user_jwt(mallory),
        "expired": expired_user_jwt(bob, 120),
        "forged": jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": bob, "role": "authenticated", "exp": 4_000_000_000u64}),
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-gateway-secret-not-the-gateway"),
        )
        .unwrap(),
    });
    let mut node = tokio::process::Command::new("node")
        .arg("realtime.mjs")
        .current_dir(&dir)
        .env("SUPAMERGE_JS_INPUT", input.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();

    let ready = next_line(&mut lines).await;
    assert_eq!(ready["member"]["status"], "SUBSCRIBED", "{ready}");
    let outsider = &ready["refusals"]["outsider"];
    assert_eq!(outsider["status"], "CHANNEL_ERROR", "{ready}");
    assert_eq!(
        outsider["error"],
        format!("Unauthorized: You do not have permissions to read from this Channel topic: workspace:{ws}")
    );
    let expired = &ready["refusals"]["expired"];
    assert_eq!(expired["status"], "CHANNEL_ERROR", "{ready}");
    assert!(
        expired["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("InvalidJWTToken: Token has expired ")),
        "{ready}"
    );
    let forged = &ready["refusals"]["forged"];
    assert_eq!(forged["status"], "CHANNEL_ERROR", "{ready}");
    assert_eq!(
        forged["error"],
        "JwtSignatureError: Failed to validate JWT signature"
    );
    assert_eq!(ready["presence"][0]["status"], "SUBSCRIBED");
    assert_eq!(ready["presence"][1]["status"], "SUBSCRIBED");

    // A Rust client joins the presence, and sees the two JS clients.
    let rust = RealtimeClient::builder(fx.url(), ANON_KEY)
        .with_access_token(user_jwt(bob))
        .with_presence_key("rust")
        .build()
        .unwrap();
    let sub = rust.subscribe(ws).unwrap();
    sub.track(json!({"name": "Rust"})).unwrap();
    let mut seen = sub.presence();
    within(
        "the JS clients' presence",
        seen.wait_for(|p| p.contains_key("js-ann") && p.contains_key("js-bob")),
    )
    .await
    .unwrap();
    assert_eq!(seen.borrow()["js-bob"][0].meta, json!({"name": "Bob (js)"}));

    // A push made from Rust reaches supabase-js as a broadcast.
    let (doc, changes) = envelopes(2, 9);
    fx.remote_for(alice)
        .push(PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes,
        })
        .await
        .unwrap();
    let done = next_line(&mut lines).await;
    let b = &done["broadcast"];
    assert_eq!(b["type"], "broadcast", "{done}");
    assert_eq!(b["event"], "changes");
    assert_eq!(b["payload"]["workspace"], ws.to_string());
    assert_eq!(
        (
            b["payload"]["from_seq"].as_u64(),
            b["payload"]["to_seq"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(b["payload"]["docs"], json!([doc.to_string()]));
    assert!(b["meta"]["id"].is_string(), "{done}");
    // Ann (JS) sees Bob (JS) and the Rust client, with their states.
    let p = &done["presence"];
    assert_eq!(p["js-bob"][0]["name"], "Bob (js)", "{done}");
    assert_eq!(p["rust"][0]["name"], "Rust", "{done}");
    let status = within("node's exit", node.wait()).await.expect("node");
    assert!(status.success());
}
