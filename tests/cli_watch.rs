//! `supamerge watch` as a real process against `supamerge gateway` (a real
//! process too) on a fresh PostgreSQL database: it prints its live status,
//! then each remote change as it lands (`--json`, one object per line),
//! without any `sync` being run on its replica; SIGTERM and SIGINT stop it
//! cleanly (exit 0, a last `stopped` line). Needs PostgreSQL
//! (`scripts/test.sh`); fails without it.
#![cfg(feature = "gateway")]

#[path = "support/gateway_process.rs"]
mod gateway_process;
#[path = "support/pg.rs"]
mod pg;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gateway_process::{bin, GatewayProcess};
use pg::{user_jwt, TestDb, ANON_KEY};
use serde_json::{json, Value};
use supamerge::{Collection, Replica, SupabaseRemote, SyncConfig, WorkspaceId};
use uuid::Uuid;

/// A running `supamerge watch --json` and the lines it printed.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(url: &str, token: &str, data: &std::path::Path, ws: WorkspaceId) -> Watch {
        let mut child = bin()
            .args(["--json", "--data"])
            .arg(data)
            .args(["watch", "--supabase-url", url, "--anon-key", ANON_KEY])
            .args(["--access-token", token, "--workspace", &ws.to_string()])
            .args(["--interval", "3600", "--live-interval", "3600"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start supamerge watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watch { child, lines }
    }

    /// The next printed object for which `f` holds (the others are skipped);
    /// a generous guard against a hang, not a timing assertion.
    fn until(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("gave up waiting for {what}"));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {line:?}: {e}"));
            if f(&v) {
                return v;
            }
        }
    }

    fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        self.child.wait().expect("wait")
    }
}

fn live(v: &Value) -> bool {
    v["event"] == "status"
        && v["live"]["connection"]["state"] == "connected"
        && v["live"]["channels"]
            .as_object()
            .is_some_and(|c| !c.is_empty() && c.values().all(|s| s["state"] == "joined"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_remote_changes_as_they_land_and_stops_on_signals() {
    let db = TestDb::new().await;
    let gw = GatewayProcess::start(&db);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let remote = |user: Uuid| {
        SupabaseRemote::builder(&gw.url, ANON_KEY)
            .with_access_token(user_jwt(user))
            .build()
            .unwrap()
    };
    let ws = remote(alice).create_workspace("watched").await.unwrap();
    remote(alice)
        .add_member(ws, bob, supamerge::MemberRole::Writer)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Bob watches; Alice edits on her own replica and syncs it.
    let mut w = Watch::start(&gw.url, &user_jwt(bob), &dir.path().join("bob"), ws);
    w.until("the live status", live);
    let a = Replica::open(dir.path().join("alice")).unwrap();
    let alice_remote = remote(alice);
    let tasks = Collection::new("tasks").unwrap();
    let id = a
        .create_json(ws, &tasks, &json!({"title": "watch me"}))
        .unwrap();
    supamerge::sync_once(&a, &alice_remote, &SyncConfig::default(), &[ws], &|_| {})
        .await
        .unwrap();
    let seen = w.until("the change", |v| {
        v["event"] == "changed" && v["id"] == id.to_string()
    });
    assert_eq!(seen["value"]["title"], "watch me", "{seen}");
    assert_eq!(seen["collection"], "tasks");
    assert_eq!(seen["workspace"], ws.to_string());
    assert_eq!(seen["deleted"], false);
    assert!(seen["lag_ms"].as_i64().is_some_and(|l| l >= 0), "{seen}");

    // An edit and a delete land too.
    a.patch_json(&id, &json!({"title": "edited"})).unwrap();
    supamerge::sync_once(&a, &alice_remote, &SyncConfig::default(), &[ws], &|_| {})
        .await
        .unwrap();
    w.until("the edit", |v| {
        v["event"] == "changed" && v["value"]["title"] == "edited"
    });
    a.delete(&id).unwrap();
    supamerge::sync_once(&a, &alice_remote, &SyncConfig::default(), &[ws], &|_| {})
        .await
        .unwrap();
    w.until("the delete", |v| {
        v["event"] == "changed" && v["deleted"] == true
    });

    // SIGTERM: a clean exit, the last line says so.
    let status = w.signal("-TERM");
    assert!(status.success(), "{status:?}");
    w.until("the last line", |v| v["event"] == "stopped");
    // What it pulled is in Bob's replica (closed cleanly: it opens again).
    let b = Replica::open(dir.path().join("bob")).unwrap();
    assert!(b.info(&id).unwrap().deleted);
    drop(b);

    // SIGINT (Ctrl-C) too.
    let mut w = Watch::start(&gw.url, &user_jwt(bob), &dir.path().join("bob"), ws);
    w.until("the live status", live);
    let status = w.signal("-INT");
    assert!(status.success(), "{status:?}");
    w.until("the last line", |v| v["event"] == "stopped");
}
