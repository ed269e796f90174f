//! The reference JavaScript client (`clients/js`) against real processes: a
//! `supamerge gateway` process on a fresh PostgreSQL database with the real
//! migration, two users, and `node --test` running the client's tests
//! (`clients/js/test/*.test.mjs`), which drive a JS writer through
//! supabase-js and a Rust replica through the `supamerge` CLI and compare
//! their views round by round (docs/interop.md).
//!
//! Needs PostgreSQL (`scripts/test.sh`), node 20+ and npm; it fails, never
//! skips, when one is missing. `npm ci` runs first when `node_modules` is
//! absent (`scripts/test.sh` runs it from the lockfile anyway).
#![cfg(feature = "gateway")]

#[path = "support/gateway_process.rs"]
mod gateway_process;
#[path = "support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::Command;

use gateway_process::GatewayProcess;
use pg::{user_jwt, TestDb, ANON_KEY};
use uuid::Uuid;

fn tool(name: &str) {
    match Command::new(name).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "`{name}` is required by the JavaScript client tests (node 20+ and npm); \
             install Node.js (e.g. `apt-get install -y nodejs npm`)"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_and_a_rust_replica_agree_through_the_gateway() {
    tool("node");
    tool("npm");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    if !dir.join("node_modules/@automerge/automerge").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let db = TestDb::new().await;
    let gateway = GatewayProcess::start(&db);
    let (js_user, rust_user) = (Uuid::new_v4(), Uuid::new_v4());
    let url = gateway.url.clone();
    let bin = env!("CARGO_BIN_EXE_supamerge");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["--test", "--test-reporter=spec"])
            .current_dir(&dir)
            .env("SUPAMERGE_URL", &url)
            .env("SUPAMERGE_ANON_KEY", ANON_KEY)
            .env("SUPAMERGE_JS_TOKEN", user_jwt(js_user))
            .env("SUPAMERGE_RUST_TOKEN", user_jwt(rust_user))
            .env("SUPAMERGE_RUST_USER", rust_user.to_string())
            .env("SUPAMERGE_BIN", bin)
            .output()
            .expect("run node --test")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test failed against {}:\n{stdout}\n{stderr}",
        gateway.url
    );
    // Both files ran, and nothing was skipped.
    for needle in [
        "a JS writer and a Rust replica",
        "every push mistake",
        "go to the larger actor",
    ] {
        assert!(
            stdout.contains(needle),
            "missing test {needle:?}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("skipped 0") && stdout.contains("fail 0"),
        "{stdout}"
    );
    drop(gateway);
}
