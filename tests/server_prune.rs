//! Server-side compaction (issue 17, item 4) against a real PostgreSQL with
//! every migration loaded as a non-superuser owner (`supabase_postgres`, as
//! hosted Supabase's `postgres`), through the gateway where a client calls:
//!
//! - `supamerge_prune` prunes exactly the changes folded into their
//!   document's snapshot and older than the horizon, and records the horizon;
//! - a log pull behind the horizon answers PT410, which `SupabaseRemote`
//!   maps to [`RemoteError::CursorPruned`]; a bootstrap pull does not;
//! - pruned changes still deduplicate, still count in a later snapshot's
//!   digest and still hold their document's collection;
//! - only the service role and the owner may prune; a writer's snapshot in
//!   one workspace cannot prune another workspace's changes;
//! - a replica behind the horizon re-bootstraps and keeps its unpushed work.
//!
//! Needs `SUPAMERGE_TEST_DATABASE_URL` (run `scripts/test.sh`).
#![cfg(feature = "gateway")]

#[path = "support/pg.rs"]
mod pg;

use pg::{envelopes, SupabaseFixture, TestDb, ANON_KEY, SERVICE_KEY};
use serde_json::json;
use supamerge::{
    ChangeEnvelope, Collection, Cursor, PullRequest, PushOutcome, PushRequest, Remote, RemoteError,
    Replica, SnapshotDigest, SnapshotQuery, SnapshotUpload, SupabaseRemote, SyncConfig,
    WorkspaceId, SNAPSHOT_PAGE_VERSION, WIRE_VERSION,
};
use uuid::Uuid;

async fn push(remote: &SupabaseRemote, ws: WorkspaceId, e: &ChangeEnvelope) -> PushOutcome {
    let mut r = remote
        .push(PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes: vec![e.clone()],
        })
        .await
        .expect("push");
    r.results.remove(0)
}

fn pull(ws: WorkspaceId, cursor: &str, skip: bool) -> PullRequest {
    PullRequest {
        v: WIRE_VERSION,
        workspace: ws,
        cursor: Cursor(cursor.to_owned()),
        limit: 100,
        skip_snapshotted: skip,
    }
}

fn save_of(envs: &[ChangeEnvelope]) -> Vec<u8> {
    let mut d = automerge::Automerge::new();
    d.apply_changes(
        envs.iter()
            .map(|e| automerge::Change::from_bytes(e.bytes.clone()).expect("change")),
    )
    .expect("apply");
    d.save()
}

fn upload(ws: WorkspaceId, envs: &[ChangeEnvelope], covers: &str) -> SnapshotUpload {
    SnapshotUpload {
        v: WIRE_VERSION,
        workspace: ws,
        doc_id: envs[0].doc_id,
        collection: Collection::new("tasks").expect("collection"),
        heads: vec![],
        covers: Cursor(covers.to_owned()),
        bytes: save_of(envs),
    }
}

/// `supamerge_prune(p_older_than, p_workspace)` as the owner (pg_cron's way).
async fn prune(db: &TestDb, older_than: &str, ws: Option<WorkspaceId>) -> serde_json::Value {
    let row = db
        .owner()
        .await
        .query_one(
            "select public.supamerge_prune($1::text::interval, $2::text::uuid)::text",
            &[&older_than, &ws.map(|w| w.to_string())],
        )
        .await
        .expect("supamerge_prune");
    serde_json::from_str(row.get::<_, &str>(0)).expect("json")
}

/// The seqs left in a workspace's log.
async fn seqs(db: &TestDb, ws: WorkspaceId) -> Vec<i64> {
    db.superuser()
        .await
        .query(
            "select seq from public.changes where workspace_id = $1::text::uuid order by seq",
            &[&ws.to_string()],
        )
        .await
        .expect("seqs")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_takes_only_folded_changes_and_pulls_behind_the_horizon_are_told() {
    let fx = SupabaseFixture::start().await;
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    let remote = fx.remote_for(alice);
    let (_, a) = envelopes(6, 21);
    let (_, b) = envelopes(2, 22);
    // Log: a0 a1 b0 a2 b1 a3 (seqs 1..6).
    for e in [&a[0], &a[1], &b[0], &a[2], &b[1], &a[3]] {
        assert!(matches!(
            push(&remote, ws, e).await,
            PushOutcome::Stored { .. }
        ));
    }
    // A snapshot of a covering position 4 (a0 a1 a2); b has none.
    remote
        .put_snapshot(upload(ws, &a[..3], "4"))
        .await
        .expect("snapshot");

    // A horizon of a day keeps everything (all was pushed just now).
    let kept = prune(&fx.db, "1 day", None).await;
    assert_eq!(kept["pruned"], 0, "{kept}");
    assert_eq!(seqs(&fx.db, ws).await, vec![1, 2, 3, 4, 5, 6]);

    let done = prune(&fx.db, "0", Some(ws)).await;
    assert_eq!(done["pruned"], 3, "{done}");
    assert_eq!(done["horizons"][ws.to_string()], 4, "{done}");
    assert_eq!(
        seqs(&fx.db, ws).await,
        vec![3, 5, 6],
        "only a's folded changes went"
    );
    // Again: nothing more is folded.
    assert_eq!(prune(&fx.db, "0", Some(ws)).await["pruned"], 0);

    // A log pull behind the horizon is told, with the horizon.
    for cursor in ["", "1", "3"] {
        match remote.pull(pull(ws, cursor, false)).await {
            Err(RemoteError::CursorPruned { horizon, message }) => {
                assert_eq!(horizon, "4");
                assert!(message.contains("behind the horizon"), "{message}");
            }
            other => panic!("cursor {cursor:?}: {other:?}"),
        }
    }
    // At the horizon and after it, pulls go on.
    let page = remote.pull(pull(ws, "4", false)).await.expect("pull at 4");
    let got: Vec<_> = page.changes.iter().map(|c| c.change.hash).collect();
    assert_eq!(got, vec![b[1].hash, a[3].hash]);
    // A bootstrap pull from the start skips what the snapshot holds.
    let page = remote.pull(pull(ws, "", true)).await.expect("bootstrap");
    let got: Vec<_> = page.changes.iter().map(|c| c.change.hash).collect();
    assert_eq!(got, vec![b[0].hash, b[1].hash, a[3].hash]);
    assert_eq!(page.next_cursor.0, "6");

    // Pruned changes still deduplicate.
    assert_eq!(push(&remote, ws, &a[1]).await, PushOutcome::AlreadyPresent);
    // A later snapshot's digest counts the pruned changes.
    remote
        .put_snapshot(upload(ws, &a[..4], "6"))
        .await
        .expect("snapshot 2");
    let snaps = remote
        .get_snapshots(SnapshotQuery {
            v: SNAPSHOT_PAGE_VERSION,
            workspace: ws,
            after: None,
            limit: 10,
        })
        .await
        .expect("snapshots");
    assert_eq!(
        snaps.snapshots[0].replaces,
        Some(SnapshotDigest::of_hashes(a[..4].iter().map(|e| e.hash)))
    );
    // Every change of a pruned: its collection still holds.
    assert_eq!(prune(&fx.db, "0", Some(ws)).await["pruned"], 1);
    assert_eq!(seqs(&fx.db, ws).await, vec![3, 5]);
    let mut elsewhere = a[4].clone();
    elsewhere.collection = Collection::new("notes").expect("collection");
    match push(&remote, ws, &elsewhere).await {
        PushOutcome::Rejected { reason } => {
            assert!(
                reason.contains("stored under collection \"tasks\""),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        push(&remote, ws, &a[4]).await,
        PushOutcome::Stored { seq: 7 }
    ));
    // The end of a fully pruned log is the horizon: a bootstrap that skips
    // everything lands there, not before it (else it would be told again).
    let (_, c) = envelopes(1, 23);
    let ws2 = fx.workspace(alice, &[]).await;
    push(&remote, ws2, &c[0]).await;
    remote
        .put_snapshot(upload(ws2, &c, "1"))
        .await
        .expect("snapshot c");
    assert_eq!(prune(&fx.db, "0", Some(ws2)).await["pruned"], 1);
    let page = remote.pull(pull(ws2, "", true)).await.expect("bootstrap");
    assert!(page.changes.is_empty());
    assert_eq!(page.next_cursor.0, "1");
}

/// Only the service role and the owner may prune: not anon, not a user, not
/// even the workspace's owner; through the gateway as through SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_is_for_the_service_role_and_the_owner_only() {
    let fx = SupabaseFixture::start().await;
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/rpc/supamerge_prune", fx.url());
    let body = json!({"p_older_than": "0 seconds", "p_workspace": ws});
    let call = |token: Option<String>| {
        let mut req = http.post(&url).header("apikey", ANON_KEY).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // A user (the workspace's owner) and anon are refused.
    let as_user = call(Some(pg::user_jwt(alice))).await.expect("send");
    assert_eq!(as_user.status(), 403, "{:?}", as_user.text().await);
    let as_anon = call(None).await.expect("send");
    assert!(
        [401, 403].contains(&as_anon.status().as_u16()),
        "{:?}",
        as_anon.text().await
    );
    // The service role may.
    let as_service = call(Some(SERVICE_KEY.to_owned())).await.expect("send");
    assert_eq!(as_service.status(), 200, "{:?}", as_service.text().await);
    // In SQL: EXECUTE is not granted to anon or authenticated...
    let su = fx.db.superuser().await;
    for role in ["anon", "authenticated"] {
        let may: bool = su
            .query_one(
                "select has_function_privilege($1, 'public.supamerge_prune(interval, uuid)', 'execute')",
                &[&role],
            )
            .await
            .expect("privilege")
            .get(0);
        assert!(!may, "{role} may execute supamerge_prune");
    }
    // ...and a user's claims are refused even where it is (defence in
    // depth: an operator who grants it by mistake).
    fx.db
        .owner()
        .await
        .batch_execute(
            "grant execute on function public.supamerge_prune(interval, uuid) to authenticated",
        )
        .await
        .expect("grant");
    let c = fx.db.authenticator().await;
    c.batch_execute(&format!(
        "set role authenticated; select set_config('request.jwt.claims', '{}', false)",
        json!({"sub": alice, "role": "authenticated"})
    ))
    .await
    .expect("claims");
    let err = c
        .query_one("select public.supamerge_prune('0')", &[])
        .await
        .expect_err("a user's claims");
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(msg.contains("service role"), "{err:?}");
    // A fixed search_path, and SECURITY DEFINER like the RPC functions.
    let row = su
        .query_one(
            "select prosecdef, array_to_string(proconfig, ',') from pg_proc \
             where oid = 'public.supamerge_prune(interval, uuid)'::regprocedure",
            &[],
        )
        .await
        .expect("pg_proc");
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "search_path=pg_catalog, pg_temp");
    // A negative horizon is a clear error.
    let err = fx
        .db
        .owner()
        .await
        .query_one("select public.supamerge_prune('-1 day')", &[])
        .await
        .expect_err("negative");
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(msg.contains("at least 0"), "{err:?}");
}

/// A writer's snapshot in their own workspace names the victim's document
/// id and claims to cover the whole log: pruning everything folded leaves
/// the victim's changes alone (snapshots fold only their own workspace's
/// changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_one_workspace_cannot_prune_another() {
    let fx = SupabaseFixture::start().await;
    let (victim, attacker) = (Uuid::new_v4(), Uuid::new_v4());
    let victim_ws = fx.workspace(victim, &[]).await;
    let own_ws = fx.workspace(attacker, &[]).await;
    let v = fx.remote_for(victim);
    let a = fx.remote_for(attacker);
    let (_, envs) = envelopes(3, 31);
    for e in &envs {
        push(&v, victim_ws, e).await;
    }
    // The attacker stores the same document's changes in their own
    // workspace and a snapshot of it covering everything there.
    for e in &envs {
        push(&a, own_ws, e).await;
    }
    a.put_snapshot(upload(own_ws, &envs, "3"))
        .await
        .expect("snapshot in own workspace");
    // Into the victim's workspace they cannot write at all.
    let err = a
        .put_snapshot(upload(victim_ws, &envs, "3"))
        .await
        .expect_err("not a member");
    assert!(matches!(err, RemoteError::Forbidden { .. }), "{err:?}");
    let done = prune(&fx.db, "0", None).await;
    assert_eq!(done["pruned"], 3, "{done}");
    assert_eq!(seqs(&fx.db, own_ws).await, Vec::<i64>::new());
    assert_eq!(seqs(&fx.db, victim_ws).await, vec![1, 2, 3]);
    v.pull(pull(victim_ws, "", false))
        .await
        .expect("the victim's log pull is not behind any horizon");
}

/// The whole client: a replica synced, then offline with unpushed edits
/// while others write and the server prunes past its cursor. Its next sync
/// re-bootstraps from the snapshots, pushes its edits, and it ends with
/// everything; a fresh device too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_horizon_re_bootstraps_and_keeps_its_unpushed_work() {
    let fx = SupabaseFixture::start().await;
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let open = |name: &str| Replica::open(dir.path().join(name)).expect("replica");
    let cfg = SyncConfig {
        snapshot_threshold: 2,
        ..SyncConfig::default()
    };
    let remote = fx.remote_for(alice);
    let sync = |r: &Replica| {
        let (r, remote, cfg) = (r.clone(), &remote, &cfg);
        async move {
            supamerge::sync_once(&r, remote, cfg, &[ws], &|_| {})
                .await
                .expect("sync")
        }
    };
    let tasks = Collection::new("tasks").expect("collection");
    let (a, b) = (open("a"), open("b"));
    let doc = a
        .create_json(ws, &tasks, &json!({"title": "t", "n": 0}))
        .expect("create");
    sync(&a).await;
    sync(&b).await;
    // b goes offline with an edit of its own.
    b.patch_json(&doc, &json!({"offline": true}))
        .expect("b edits");
    // a writes on; its snapshots fold the changes; the server prunes.
    for n in 1..=5 {
        a.patch_json(&doc, &json!({"n": n})).expect("a edits");
        sync(&a).await;
    }
    let done = prune(&fx.db, "0", Some(ws)).await;
    assert!(done["pruned"].as_u64().unwrap_or(0) > 0, "{done}");
    assert_eq!(b.pending(), 1);
    let report = sync(&b).await;
    assert_eq!(report.rebootstraps, 1, "{report:?}");
    assert_eq!(b.pending(), 0, "the offline edit was pushed");
    sync(&a).await;
    let want = json!({"title": "t", "n": 5, "offline": true});
    for (name, r) in [("a", &a), ("b", &b)] {
        let got = r.get_json(&doc).expect("read");
        assert_eq!(got["n"], want["n"], "{name}: {got}");
        assert_eq!(got["offline"], want["offline"], "{name}: {got}");
    }
    // A fresh device gets everything from snapshots and the log.
    let c = open("c");
    sync(&c).await;
    assert_eq!(c.get_json(&doc).expect("read")["n"], 5);
    assert_eq!(c.heads(&doc).expect("heads"), a.heads(&doc).expect("heads"));
}
