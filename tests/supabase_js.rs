//! A second client, not written in Rust: the official `@supabase/supabase-js`
//! calls `supamerge_push` / `supamerge_pull` through the local gateway
//! (tests/js/pull.mjs). Needs PostgreSQL (`scripts/test.sh`) and node + npm;
//! it fails, never skips, when either is missing.
#![cfg(feature = "gateway")]

#[path = "support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::Command;

use pg::{envelopes, user_jwt, SupabaseFixture, ANON_KEY};
use serde_json::{json, Value};
use uuid::Uuid;

fn tool(name: &str) -> String {
    match Command::new(name).arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => panic!(
            "`{name}` is required by the JavaScript compatibility test (node 18+ and npm); \
             install Node.js (e.g. `apt-get install -y nodejs npm`)"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_rpc_works_against_the_gateway() {
    let node = tool("node");
    tool("npm");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules/@supabase/supabase-js").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }

    let fx = SupabaseFixture::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(alice, &[]).await;
    let foreign = fx.workspace(bob, &[]).await;
    let (_, envs) = envelopes(3, 42);
    let input = json!({
        "url": fx.url(),
        "anonKey": ANON_KEY,
        "token": user_jwt(alice),
        "workspace": ws,
        "foreign": foreign,
        "changes": envs,
    });
    let url = fx.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("pull.mjs")
            .current_dir(&dir)
            .env("SUPAMERGE_JS_INPUT", input.to_string())
            .output()
            .expect("run node")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node {node} failed against {url}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("the script prints JSON");

    assert_eq!(v["push"]["status"], 200, "{v}");
    let results = v["push"]["data"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], json!({"status": "stored", "seq": 1}));

    assert_eq!(v["pull"]["status"], 200, "{v}");
    assert_eq!(v["pull"]["error"], Value::Null);
    let changes = v["pull"]["data"]["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 3);
    for (c, e) in changes.iter().zip(&envs) {
        assert_eq!(c["hash"], e.hash.to_string());
        assert_eq!(c["doc_id"], e.doc_id.to_string());
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            c["bytes"].as_str().expect("bytes"),
        )
        .expect("base64");
        assert_eq!(bytes, e.bytes);
    }
    assert_eq!(v["pull"]["data"]["next_cursor"], "3");
    assert_eq!(v["pull"]["data"]["has_more"], false);

    // supabase-js surfaces PostgREST's error JSON unchanged.
    assert_eq!(v["foreign"]["status"], 403, "{v}");
    assert_eq!(v["foreign"]["error"]["code"], "42501");
    assert_eq!(
        v["foreign"]["error"]["message"],
        "workspace not found or access denied"
    );
    assert_eq!(v["anon"]["status"], 401, "{v}");
    assert_eq!(v["anon"]["data"], Value::Null);
    assert_eq!(fx.db.change_count().await, 3);
}
