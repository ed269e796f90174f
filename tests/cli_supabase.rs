//! The binary against the Supabase path, all real processes: `supamerge
//! gateway` serving a fresh PostgreSQL database (stand-in + migration), then
//! `supamerge demo` and `supamerge sync` through it with a user's JWT, as an
//! app developer would run the stack locally (docs/supabase.md). Needs
//! `SUPAMERGE_TEST_DATABASE_URL` (run `scripts/test.sh`).
#![cfg(feature = "gateway")]

#[path = "support/gateway_process.rs"]
mod gateway_process;
#[path = "support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::Output;

use gateway_process::{bin, GatewayProcess};
use pg::{user_jwt, TestDb, ANON_KEY, JWT_SECRET};
use serde_json::Value;
use uuid::Uuid;

fn ok(out: Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn remote_args(url: &str, token: &str) -> Vec<String> {
    [
        "--supabase-url",
        url,
        "--anon-key",
        ANON_KEY,
        "--access-token",
        token,
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_and_sync_run_against_the_gateway() {
    let db = TestDb::new().await;
    let gw = GatewayProcess::start(&db);
    let user = Uuid::new_v4();
    // A token from `supamerge dev-token`, as a developer of the stack gets one.
    let minted = ok(
        bin()
            .args(["--json", "dev-token", "--jwt-secret", JWT_SECRET])
            .args(["--user", &user.to_string()])
            .output()
            .expect("dev-token"),
        "dev-token",
    );
    assert_eq!(minted["user"], user.to_string(), "{minted}");
    let token = minted["access_token"]
        .as_str()
        .expect("a token")
        .to_string();

    // The demo: three devices of one user, in a workspace it creates.
    let report = ok(
        bin()
            .args(["--json", "demo", "--burst", "200"])
            .args(remote_args(&gw.url, &token))
            .output()
            .expect("run demo"),
        "demo against Supabase",
    );
    assert_eq!(report["converged"], true, "{report}");
    assert!(
        report["backend"]
            .as_str()
            .is_some_and(|b| b.contains(&gw.url)),
        "{report}"
    );
    assert!(
        report["changes_synced"].as_u64().unwrap_or(0) >= 200,
        "{report}"
    );
    let stored = db.change_count().await;
    assert!(
        stored >= 200,
        "the demo's changes are in PostgreSQL: {stored}"
    );

    // A workspace the server does not know is refused.
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let stray = dir.path().join("stray");
    let made_up = Uuid::new_v4().to_string();
    ok(
        bin()
            .args(["--json", "--data"])
            .arg(&stray)
            .args(["create", &made_up, "notes", r#"{"title":"nowhere"}"#])
            .output()
            .expect("create"),
        "create in a made-up workspace",
    );
    let refused = sync(&stray, &gw.url, &token, &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));

    // Two replica directories of the same user, in a workspace the server
    // created (its id is the server's): create on one, sync both.
    let ws = create_workspace(&gw.url, &token).await;
    let service = ok(
        bin()
            .args(["--json", "--data"])
            .arg(&a)
            .args(["create", &ws, "notes", r#"{"title":"from the CLI"}"#])
            .output()
            .expect("create"),
        "create",
    );
    let id = service["id"].as_str().expect("an id").to_string();
    ok(sync(&a, &gw.url, &token, &[]), "sync a");
    let pulled = ok(sync(&b, &gw.url, &token, &["--workspace", &ws]), "sync b");
    assert_eq!(pulled["pulled"], 1, "{pulled}");
    let got = ok(
        bin()
            .args(["--json", "--data"])
            .arg(&b)
            .args(["get", &id])
            .output()
            .expect("get"),
        "get on b",
    );
    assert_eq!(got["data"]["title"], "from the CLI", "{got}");

    // Another user's token cannot pull the workspace (row-level security).
    let other = tempfile::tempdir().expect("temp dir");
    let stranger = sync(
        other.path(),
        &gw.url,
        &user_jwt(Uuid::new_v4()),
        &["--workspace", &ws],
    );
    assert_eq!(stranger.status.code(), Some(1), "{}", stderr(&stranger));
    assert!(
        stderr(&stranger).contains("access denied"),
        "{}",
        stderr(&stranger)
    );

    // Neither a hub nor Supabase: a usage error.
    let none = bin()
        .args(["--data"])
        .arg(&a)
        .arg("sync")
        .output()
        .expect("sync without a remote");
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
}

fn sync(data: &Path, url: &str, token: &str, extra: &[&str]) -> Output {
    bin()
        .args(["--json", "--data"])
        .arg(data)
        .arg("sync")
        .args(remote_args(url, token))
        .args(extra)
        .output()
        .expect("run sync")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Creates a workspace on the server; returns the id it picked.
async fn create_workspace(url: &str, token: &str) -> String {
    let remote = supamerge::SupabaseRemote::builder(url, ANON_KEY)
        .with_access_token(token)
        .build()
        .expect("remote");
    remote
        .create_workspace("cli")
        .await
        .expect("create workspace")
        .to_string()
}
