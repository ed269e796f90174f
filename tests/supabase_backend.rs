//! The Supabase backend against a real PostgreSQL: the migration's SQL
//! (gap-free cursor, integrity checks, isolation), the local gateway over
//! HTTP (PostgREST errors, JWTs, keys, limits) and `SupabaseRemote` round
//! trips. Needs `SUPAMERGE_TEST_DATABASE_URL` (run `scripts/test.sh`).
#![cfg(feature = "gateway")]

#[path = "support/pg.rs"]
mod pg;

use automerge::ChangeHash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use pg::{envelopes, user_jwt, SupabaseFixture, TestDb, ANON_KEY, SERVICE_KEY};
use serde_json::{json, Value};
use supamerge::{
    AccessTokenProvider, Cursor, MemberRole, PullRequest, PushOutcome, PushRequest, Remote,
    RemoteError, SnapshotOutcome, SnapshotQuery, SnapshotUpload, SupabaseRemote, TokenError,
    WorkspaceId, WIRE_VERSION,
};
use uuid::Uuid;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Raw HTTP against the gateway, to check statuses and bodies exactly.
struct Http {
    client: reqwest::Client,
    base: String,
}

struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
}

impl Http {
    fn new(fx: &SupabaseFixture) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: fx.url(),
        }
    }

    async fn raw(
        &self,
        function: &str,
        apikey: Option<&str>,
        bearer: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = self
            .client
            .post(format!("{}/rest/v1/rpc/{function}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = apikey {
            req = req.header("apikey", k);
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("http");
        let status = resp.status().as_u16();
        let www_authenticate = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            www_authenticate,
            body,
        }
    }

    async fn as_user(&self, function: &str, user: Uuid, args: Value) -> Answer {
        let token = user_jwt(user);
        self.raw(
            function,
            Some(ANON_KEY),
            Some(&token),
            args.to_string().into_bytes(),
        )
        .await
    }
}

/// Runs `sql` inside an open transaction as `user` (role authenticated).
async fn begin_as(c: &tokio_postgres::Client, user: Uuid) {
    c.batch_execute("begin").await.expect("begin");
    c.execute(
        "select set_config('request.jwt.claims', $1, true), set_config('role', 'authenticated', true)",
        &[&json!({"sub": user, "role": "authenticated"}).to_string()],
    )
    .await
    .expect("set claims");
}

async fn sql_json(
    c: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Value {
    let row = c.query_one(sql, params).await.expect(sql);
    row.get::<_, tokio_postgres::types::Json<Value>>(0).0
}

fn items(envs: &[supamerge::ChangeEnvelope]) -> Value {
    serde_json::to_value(envs).expect("json")
}

// ---------------------------------------------------------------------------
// SQL level: the gap-free cursor
// ---------------------------------------------------------------------------

/// Two overlapping push transactions on one workspace: the first holds its
/// (uncommitted) seqs while the second tries to push and a pull runs. Every
/// change is pulled exactly once, in seq order, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_free_cursor_with_overlapping_push_transactions() {
    let db = TestDb::new().await;
    let user = Uuid::new_v4();
    let t1 = db.superuser().await;
    let t2 = db.superuser().await;
    let reader = db.superuser().await;

    begin_as(&t1, user).await;
    let created = sql_json(&t1, "select supamerge_create_workspace('gap')", &[]).await;
    let ws = created["workspace_id"]
        .as_str()
        .expect("a workspace id")
        .to_owned();
    t1.batch_execute("commit").await.expect("commit");

    let (_, first) = envelopes(3, 1);
    let (_, second) = envelopes(2, 2);

    // T1: pushes and keeps its transaction open.
    begin_as(&t1, user).await;
    let r1 = sql_json(
        &t1,
        "select supamerge_push($1::text::uuid, $2)",
        &[&ws, &tokio_postgres::types::Json(items(&first))],
    )
    .await;
    let seqs1: Vec<i64> = r1["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs1, vec![1, 2, 3]);

    // T2: pushes concurrently; it must wait for T1's lock on the workspace row.
    let t2_pid: i32 = t2
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let second_items = items(&second);
    let ws2 = ws.clone();
    let t2_task = tokio::spawn(async move {
        let ws = ws2;
        begin_as(&t2, user).await;
        let r = sql_json(
            &t2,
            "select supamerge_push($1::text::uuid, $2)",
            &[&ws, &tokio_postgres::types::Json(second_items)],
        )
        .await;
        (t2, r)
    });
    // Wait (without a deadline on correctness) until T2 is blocked on the lock.
    loop {
        let waiting: Option<String> = reader
            .query_one(
                "select wait_event_type::text from pg_stat_activity where pid = $1",
                &[&t2_pid],
            )
            .await
            .expect("activity")
            .get(0);
        if waiting.as_deref() == Some("Lock") {
            break;
        }
        assert!(
            !t2_task.is_finished(),
            "T2 finished while T1 held the workspace: pushes are not serialised"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A pull now sees nothing: T1 is not committed, T2 has no seq yet.
    begin_as(&reader, user).await;
    let p0 = sql_json(
        &reader,
        "select supamerge_pull($1::text::uuid, '', 100)",
        &[&ws],
    )
    .await;
    reader.batch_execute("commit").await.expect("commit");
    assert_eq!(p0["changes"], json!([]));
    assert_eq!(p0["next_cursor"], "");

    // T1 commits; T2 takes the next seqs but has not committed yet.
    t1.batch_execute("commit").await.expect("commit t1");
    let (t2, r2) = t2_task.await.expect("t2 task");
    let seqs2: Vec<i64> = r2["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs2, vec![4, 5]);

    begin_as(&reader, user).await;
    let p1 = sql_json(
        &reader,
        "select supamerge_pull($1::text::uuid, '', 100)",
        &[&ws],
    )
    .await;
    reader.batch_execute("commit").await.expect("commit");
    let got1: Vec<i64> = p1["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        got1,
        vec![1, 2, 3],
        "only T1's committed changes are visible"
    );
    assert_eq!(p1["next_cursor"], "3");
    assert_eq!(p1["has_more"], false);

    t2.batch_execute("commit").await.expect("commit t2");
    begin_as(&reader, user).await;
    let p2 = sql_json(
        &reader,
        "select supamerge_pull($1::text::uuid, $2, 100)",
        &[&ws, &"3"],
    )
    .await;
    let p3 = sql_json(
        &reader,
        "select supamerge_pull($1::text::uuid, $2, 100)",
        &[&ws, &p2["next_cursor"].as_str().expect("cursor")],
    )
    .await;
    reader.batch_execute("commit").await.expect("commit");
    let got2: Vec<i64> = p2["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(got2, vec![4, 5]);
    assert_eq!(p3["changes"], json!([]));
    assert_eq!(p3["next_cursor"], "5");

    // Every change pulled exactly once, and they are the ones pushed.
    let mut pulled: Vec<String> = p1["changes"]
        .as_array()
        .expect("a")
        .iter()
        .chain(p2["changes"].as_array().expect("b"))
        .map(|c| c["hash"].as_str().expect("hash").to_owned())
        .collect();
    let mut pushed: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|e| e.hash.to_string())
        .collect();
    pulled.sort();
    pushed.sort();
    assert_eq!(pulled, pushed);
}

// ---------------------------------------------------------------------------
// Security: isolation, tokens, keys
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_cannot_pull_push_or_learn_of_a_workspace() {
    let fx = SupabaseFixture::start().await;
    let http = Http::new(&fx);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(alice, &[]).await;
    let (doc, envs) = envelopes(2, 3);
    let r = http
        .as_user(
            "supamerge_push",
            alice,
            json!({"p_workspace": ws, "p_changes": items(&envs)}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let unknown = Uuid::new_v4();
    let calls = |w: Value| {
        vec![
            (
                "supamerge_pull",
                json!({"p_workspace": w, "p_cursor": "", "p_limit": 10}),
            ),
            (
                "supamerge_push",
                json!({"p_workspace": w, "p_changes": items(&envs)}),
            ),
            ("supamerge_get_snapshots", json!({"p_workspace": w})),
            (
                "supamerge_put_snapshot",
                json!({"p_workspace": w, "p_doc_id": doc, "p_collection": "tasks",
                "p_heads": [], "p_covers": "1", "p_bytes": b64(&envs[0].bytes)}),
            ),
            (
                "supamerge_add_member",
                json!({"p_workspace": w, "p_user": bob, "p_role": "owner"}),
            ),
            ("supamerge_leave_workspace", json!({"p_workspace": w})),
        ]
    };
    for ((f, foreign), (_, missing)) in calls(json!(ws)).into_iter().zip(calls(json!(unknown))) {
        let a = http.as_user(f, bob, foreign).await;
        let b = http.as_user(f, bob, missing).await;
        assert_eq!(a.status, 403, "{f}: {:?}", a.body);
        assert_eq!(a.body["code"], "42501", "{f}");
        assert_eq!(
            (a.status, &a.body),
            (b.status, &b.body),
            "{f}: a foreign workspace must look like a missing one"
        );
    }
    // Ids are the server's: naming one (taken or not) is not even a call
    // the API has, so it cannot tell one from the other.
    let taken = http
        .as_user(
            "supamerge_create_workspace",
            bob,
            json!({"p_workspace": ws, "p_name": "mine"}),
        )
        .await;
    let free = http
        .as_user(
            "supamerge_create_workspace",
            bob,
            json!({"p_workspace": unknown, "p_name": "mine"}),
        )
        .await;
    assert_eq!(
        (taken.status, &taken.body["code"]),
        (404, &json!("PGRST202"))
    );
    assert_eq!(
        taken.body["message"]
            .as_str()
            .map(|m| m.replace(&ws.to_string(), "")),
        free.body["message"]
            .as_str()
            .map(|m| m.replace(&unknown.to_string(), "")),
    );

    // RLS: bob reading the tables directly sees nothing; alice sees her rows.
    let su = fx.db.superuser().await;
    begin_as(&su, bob).await;
    for table in ["workspaces", "workspace_members", "changes", "snapshots"] {
        let n: i64 = su
            .query_one(&format!("select count(*) from public.{table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "bob sees rows of {table}");
    }
    // Direct writes are not granted at all (only the RPC functions write).
    let denied = su
        .execute("insert into public.changes (workspace_id, seq, doc_id, collection, change_hash, bytes) values ($1::text::uuid, 99, $1::text::uuid, 'x', '\\x00', '\\x00')", &[&ws.to_string()])
        .await
        .expect_err("insert must be denied");
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    su.batch_execute("rollback").await.expect("rollback");
    begin_as(&su, alice).await;
    let n: i64 = su
        .query_one("select count(*) from public.changes", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2);
    su.batch_execute("rollback").await.expect("rollback");
    assert_eq!(fx.db.change_count().await, 2, "bob's pushes stored nothing");

    // Members: a reader pulls but cannot write; leaving ends access.
    let alice_remote = fx.remote_for(alice);
    alice_remote
        .add_member(ws, bob, MemberRole::Reader)
        .await
        .expect("add reader");
    let pulled = http
        .as_user(
            "supamerge_pull",
            bob,
            json!({"p_workspace": ws, "p_cursor": "", "p_limit": 10}),
        )
        .await;
    assert_eq!(pulled.body["changes"].as_array().map(Vec::len), Some(2));
    let push = http
        .as_user(
            "supamerge_push",
            bob,
            json!({"p_workspace": ws, "p_changes": []}),
        )
        .await;
    assert_eq!(push.status, 403);
    let left = http
        .as_user("supamerge_leave_workspace", bob, json!({"p_workspace": ws}))
        .await;
    assert_eq!(left.status, 200, "{:?}", left.body);
    let after = http
        .as_user(
            "supamerge_pull",
            bob,
            json!({"p_workspace": ws, "p_cursor": "", "p_limit": 10}),
        )
        .await;
    assert_eq!(after.status, 403);
    // The last owner cannot demote themselves.
    let demote = http
        .as_user(
            "supamerge_add_member",
            alice,
            json!({"p_workspace": ws, "p_user": alice, "p_role": "reader"}),
        )
        .await;
    assert_eq!(demote.status, 400, "{:?}", demote.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_missing_and_expired_credentials_are_rejected() {
    let fx = SupabaseFixture::start().await;
    let http = Http::new(&fx);
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    let (_, envs) = envelopes(1, 4);
    let push_body = json!({"p_workspace": ws, "p_changes": items(&envs)})
        .to_string()
        .into_bytes();
    let pull_body = json!({"p_workspace": ws, "p_cursor": "", "p_limit": 10})
        .to_string()
        .into_bytes();

    let expired = pg::expired_user_jwt(alice, 120);
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": alice, "role": "authenticated", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the-secret"),
    )
    .expect("sign");
    let none_alg = {
        let enc = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            enc(json!({"alg": "none", "typ": "JWT"})),
            enc(json!({"sub": alice, "role": "authenticated"}))
        )
    };
    let good = user_jwt(alice);
    let cases: Vec<(&str, Option<&str>, Option<&str>, &str)> = vec![
        (
            "expired",
            Some(ANON_KEY),
            Some(expired.as_str()),
            "PGRST303",
        ),
        ("forged", Some(ANON_KEY), Some(forged.as_str()), "PGRST301"),
        (
            "alg none",
            Some(ANON_KEY),
            Some(none_alg.as_str()),
            "PGRST301",
        ),
        ("garbage", Some(ANON_KEY), Some("not.a.jwt"), "PGRST301"),
        ("no jwt (anon)", Some(ANON_KEY), None, "42501"),
        (
            "anon key as bearer",
            Some(ANON_KEY),
            Some(ANON_KEY),
            "42501",
        ),
        ("no apikey", None, Some(good.as_str()), "PGRST_NO_APIKEY"),
        (
            "wrong apikey",
            Some("nope"),
            Some(good.as_str()),
            "PGRST_INVALID_APIKEY",
        ),
    ];
    for (what, apikey, bearer, code) in cases {
        for (f, body) in [
            ("supamerge_push", &push_body),
            ("supamerge_pull", &pull_body),
        ] {
            let a = http.raw(f, apikey, bearer, body.clone()).await;
            assert_eq!(a.status, 401, "{what} {f}: {:?}", a.body);
            assert_eq!(a.body["code"], code, "{what} {f}: {:?}", a.body);
            let h = a.www_authenticate.unwrap_or_default();
            assert!(
                h.starts_with("Bearer"),
                "{what} {f}: WWW-Authenticate {h:?}"
            );
        }
    }
    let exp = http
        .raw(
            "supamerge_pull",
            Some(ANON_KEY),
            Some(&expired),
            pull_body.clone(),
        )
        .await;
    assert_eq!(exp.body["message"], "JWT expired");

    // The anon key alone can do nothing at all.
    for f in [
        "supamerge_create_workspace",
        "supamerge_add_member",
        "supamerge_leave_workspace",
        "supamerge_push",
        "supamerge_pull",
        "supamerge_put_snapshot",
        "supamerge_get_snapshots",
    ] {
        let args = match f {
            "supamerge_create_workspace" => json!({"p_name": "x"}),
            "supamerge_add_member" => {
                json!({"p_workspace": ws, "p_user": Uuid::new_v4(), "p_role": "owner"})
            }
            "supamerge_leave_workspace" | "supamerge_get_snapshots" => json!({"p_workspace": ws}),
            "supamerge_push" => json!({"p_workspace": ws, "p_changes": items(&envs)}),
            "supamerge_pull" => json!({"p_workspace": ws, "p_cursor": "", "p_limit": 1}),
            _ => {
                json!({"p_workspace": ws, "p_doc_id": envs[0].doc_id, "p_collection": "tasks", "p_heads": [], "p_covers": "", "p_bytes": ""})
            }
        };
        let a = http
            .raw(f, Some(ANON_KEY), None, args.to_string().into_bytes())
            .await;
        assert_eq!(a.status, 401, "{f}: {:?}", a.body);
        assert_eq!(a.body["code"], "42501", "{f}");
    }
    assert_eq!(fx.db.change_count().await, 0, "nothing was stored");
    let su = fx.db.superuser().await;
    let n: i64 = su
        .query_one("select count(*) from public.workspaces", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1, "anon created no workspace");

    // The service key works (and bypasses membership), as on Supabase.
    let svc = http
        .raw(
            "supamerge_pull",
            Some(SERVICE_KEY),
            Some(SERVICE_KEY),
            pull_body.clone(),
        )
        .await;
    assert_eq!(svc.status, 200, "{:?}", svc.body);
    // A token within the 30 s leeway is still accepted.
    let barely = pg::expired_user_jwt(alice, 5);
    let ok = http
        .raw("supamerge_pull", Some(ANON_KEY), Some(&barely), pull_body)
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
}

// ---------------------------------------------------------------------------
// Integrity: malformed payloads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_rejected_and_nothing_bad_is_stored() {
    let fx = SupabaseFixture::start().await;
    let http = Http::new(&fx);
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    let (doc, envs) = envelopes(3, 5);
    let good = &envs[0];
    let item = |hash: String, bytes: String| json!({"doc_id": doc, "collection": "tasks", "hash": hash, "bytes": bytes});
    let mut truncated = envs[1].bytes.clone();
    truncated.pop();
    let mut flipped = envs[1].bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    let mut not_change = envs[1].bytes.clone();
    not_change[8] = 0;

    // Item-level failures: those items rejected, the good one stored.
    let batch = json!([
        item(good.hash.to_string(), b64(&good.bytes)),
        item(envs[1].hash.to_string(), "%%%not base64%%%".into()),
        item(hex(&[7; 32]), b64(&envs[1].bytes)),
        item(envs[1].hash.to_string(), b64(&truncated)),
        item(envs[1].hash.to_string(), b64(&flipped)),
        item(envs[1].hash.to_string(), b64(&not_change)),
        item("abc".into(), b64(&envs[1].bytes)),
        json!({"doc_id": doc, "collection": "1nvalid name!", "hash": envs[1].hash.to_string(), "bytes": b64(&envs[1].bytes)}),
        item(envs[1].hash.to_string(), b64(b"hello, world")),
    ]);
    let a = http
        .as_user(
            "supamerge_push",
            alice,
            json!({"p_workspace": ws, "p_changes": batch}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let results = a.body["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 9);
    assert_eq!(results[0], json!({"status": "stored", "seq": 1}));
    let reasons: Vec<&str> = results[1..]
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "rejected", "{r}");
            r["reason"].as_str().expect("reason")
        })
        .collect();
    assert!(reasons[0].contains("base64"), "{reasons:?}");
    assert!(reasons[1].contains("hash mismatch"), "{reasons:?}");
    assert!(reasons[2].contains("truncated"), "{reasons:?}");
    assert!(reasons[3].contains("checksum"), "{reasons:?}");
    assert!(
        reasons[4].contains("not an uncompressed change"),
        "{reasons:?}"
    );
    assert!(reasons[5].contains("invalid hash"), "{reasons:?}");
    assert!(reasons[6].contains("collection"), "{reasons:?}");
    assert!(reasons[7].contains("not an Automerge chunk"), "{reasons:?}");
    assert_eq!(fx.db.change_count().await, 1);

    // Structural garbage: 400, nothing stored (even the valid item).
    let valid = item(envs[2].hash.to_string(), b64(&envs[2].bytes));
    let structural: Vec<(&str, Value, &str)> = vec![
        (
            "not an array",
            json!({"p_workspace": ws, "p_changes": {"a": 1}}),
            "22023",
        ),
        (
            "item not an object",
            json!({"p_workspace": ws, "p_changes": [valid.clone(), 5]}),
            "22023",
        ),
        (
            "missing key",
            json!({"p_workspace": ws, "p_changes": [valid.clone(), {"doc_id": doc, "collection": "tasks", "hash": envs[2].hash.to_string()}]}),
            "22023",
        ),
        (
            "wrong type",
            json!({"p_workspace": ws, "p_changes": [valid.clone(), {"doc_id": doc, "collection": "tasks", "hash": envs[2].hash.to_string(), "bytes": 12}]}),
            "22023",
        ),
        (
            "sql in doc_id",
            json!({"p_workspace": ws, "p_changes": [valid.clone(), {"doc_id": "'); drop table public.changes; --", "collection": "tasks", "hash": envs[2].hash.to_string(), "bytes": b64(&envs[2].bytes)}]}),
            "22P02",
        ),
        (
            "sql in workspace",
            json!({"p_workspace": "'; drop table public.changes; --", "p_changes": [valid.clone()]}),
            "22P02",
        ),
        (
            "workspace not a uuid",
            json!({"p_workspace": 42, "p_changes": [valid.clone()]}),
            "22P02",
        ),
        (
            "bad cursor",
            json!({"p_workspace": ws, "p_cursor": "1; drop table x", "p_limit": 10}),
            "22023",
        ),
    ];
    for (what, args, code) in structural {
        let f = if args.get("p_cursor").is_some() {
            "supamerge_pull"
        } else {
            "supamerge_push"
        };
        let a = http.as_user(f, alice, args).await;
        assert_eq!(a.status, 400, "{what}: {:?}", a.body);
        assert_eq!(a.body["code"], code, "{what}: {:?}", a.body);
        assert!(
            a.body.get("message").is_some()
                && a.body.get("details").is_some()
                && a.body.get("hint").is_some(),
            "{what}: PostgREST error shape"
        );
    }
    // Unknown workspace: the same 403 as a foreign one.
    let a = http
        .as_user(
            "supamerge_push",
            alice,
            json!({"p_workspace": Uuid::new_v4(), "p_changes": [valid.clone()]}),
        )
        .await;
    assert_eq!((a.status, a.body["code"].as_str()), (403, Some("42501")));

    // Oversized batches: 413, split and retry.
    let many: Vec<Value> = (0..1001).map(|_| valid.clone()).collect();
    let a = http
        .as_user(
            "supamerge_push",
            alice,
            json!({"p_workspace": ws, "p_changes": many}),
        )
        .await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (413, Some("PT413")),
        "{:?}",
        a.body
    );
    let big = item(envs[2].hash.to_string(), "A".repeat(1_400_000));
    let a = http
        .as_user(
            "supamerge_push",
            alice,
            json!({"p_workspace": ws, "p_changes": [big]}),
        )
        .await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (413, Some("PT413")),
        "{:?}",
        a.body
    );
    let huge = item(envs[2].hash.to_string(), "A".repeat(3 * 1024 * 1024));
    let a = http
        .as_user(
            "supamerge_push",
            alice,
            json!({"p_workspace": ws, "p_changes": [huge]}),
        )
        .await;
    assert_eq!(a.status, 413, "gateway body limit: {:?}", a.body);

    // Not JSON, unknown function, unknown argument: PostgREST's codes.
    let token = user_jwt(alice);
    let a = http
        .raw(
            "supamerge_push",
            Some(ANON_KEY),
            Some(&token),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!((a.status, a.body["code"].as_str()), (400, Some("PGRST102")));
    let a = http.as_user("supamerge_nope", alice, json!({})).await;
    assert_eq!((a.status, a.body["code"].as_str()), (404, Some("PGRST202")));
    let a = http
        .as_user(
            "supamerge_pull",
            alice,
            json!({"p_workspace": ws, "p_cursor": "", "p_limit": 1, "p_evil": 1}),
        )
        .await;
    assert_eq!((a.status, a.body["code"].as_str()), (404, Some("PGRST202")));
    // Private helpers are not reachable through the API.
    let a = http
        .as_user(
            "change_chunk_problem",
            alice,
            json!({"p_bytes": "", "p_claimed": ""}),
        )
        .await;
    assert_eq!(a.status, 404);

    assert_eq!(
        fx.db.change_count().await,
        1,
        "only the one valid change is stored"
    );
    let su = fx.db.superuser().await;
    let row = su
        .query_one("select change_hash, bytes from public.changes", &[])
        .await
        .expect("row");
    assert_eq!(row.get::<_, Vec<u8>>(0), good.hash.0.to_vec());
    assert_eq!(row.get::<_, Vec<u8>>(1), good.bytes);
}

// ---------------------------------------------------------------------------
// SupabaseRemote through the gateway
// ---------------------------------------------------------------------------

fn pull_req(ws: WorkspaceId, cursor: &Cursor, limit: u32, skip: bool) -> PullRequest {
    PullRequest {
        v: WIRE_VERSION,
        workspace: ws,
        cursor: cursor.clone(),
        limit,
        skip_snapshotted: skip,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_remote_round_trips() {
    let fx = SupabaseFixture::start().await;
    let alice = Uuid::new_v4();
    let remote = fx.remote_for(alice);
    let ws = remote.create_workspace("round trip").await.expect("create");
    // The server picks ids: another workspace gets another id; a retry with
    // the same idempotency key gets the same workspace.
    let key = Uuid::new_v4();
    let other = remote
        .create_workspace_with_key("round trip", key)
        .await
        .expect("create");
    assert_ne!(other, ws);
    assert_eq!(
        remote
            .create_workspace_with_key("round trip", key)
            .await
            .expect("retry"),
        other,
        "a retry with the same key is the same workspace"
    );
    // Another user's identical key is their own.
    let mallory = fx.remote_for(Uuid::new_v4());
    assert_ne!(
        mallory
            .create_workspace_with_key("round trip", key)
            .await
            .expect("create"),
        other
    );

    let (doc1, mut envs) = envelopes(3, 6);
    let (doc2, envs2) = envelopes(2, 7);
    envs.extend(envs2);
    let push = |changes| PushRequest {
        v: WIRE_VERSION,
        workspace: ws,
        changes,
    };
    let r = remote.push(push(envs.clone())).await.expect("push");
    assert_eq!(
        r.results,
        (1..=5)
            .map(|seq| PushOutcome::Stored { seq })
            .collect::<Vec<_>>()
    );
    let again = remote.push(push(envs.clone())).await.expect("re-push");
    assert!(again
        .results
        .iter()
        .all(|o| *o == PushOutcome::AlreadyPresent));
    assert_eq!(fx.db.change_count().await, 5);

    // Pages with has_more.
    let mut cursor = Cursor::start();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = remote
            .pull(pull_req(ws, &cursor, 2, false))
            .await
            .expect("pull");
        pages += 1;
        seen.extend(page.changes.iter().map(|c| (c.seq, c.change.clone())));
        cursor = page.next_cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(cursor, Cursor("5".into()));
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(seen.into_iter().map(|(_, c)| c).collect::<Vec<_>>(), envs);
    let empty = remote
        .pull(pull_req(ws, &cursor, 100, false))
        .await
        .expect("pull");
    assert!(empty.changes.is_empty() && !empty.has_more);
    assert_eq!(empty.next_cursor, cursor);

    // Snapshots: one per doc, replaced only by one covering more.
    let mut doc = automerge::Automerge::new();
    for e in &envs[..3] {
        doc.apply_changes([automerge::Change::from_bytes(e.bytes.clone()).expect("change")])
            .expect("apply");
    }
    let saved = doc.save();
    let heads: Vec<ChangeHash> = doc.get_heads();
    let upload = |covers: &str| SnapshotUpload {
        v: WIRE_VERSION,
        workspace: ws,
        doc_id: doc1,
        collection: envs[0].collection.clone(),
        heads: heads.clone(),
        covers: Cursor(covers.into()),
        bytes: saved.clone(),
    };
    assert_eq!(
        remote.put_snapshot(upload("3")).await.expect("put"),
        SnapshotOutcome::Stored
    );
    assert_eq!(
        remote.put_snapshot(upload("3")).await.expect("put"),
        SnapshotOutcome::Superseded
    );
    assert_eq!(
        remote.put_snapshot(upload("2")).await.expect("put"),
        SnapshotOutcome::Superseded
    );
    assert_eq!(
        remote.put_snapshot(upload("5")).await.expect("put"),
        SnapshotOutcome::Stored
    );
    let beyond = remote
        .put_snapshot(upload("6"))
        .await
        .expect_err("covers beyond the log");
    assert!(
        matches!(beyond, RemoteError::BadRequest { .. }),
        "{beyond:?}"
    );
    let page = remote
        .get_snapshots(SnapshotQuery {
            v: WIRE_VERSION,
            workspace: ws,
            after: None,
            limit: 10,
        })
        .await
        .expect("snapshots");
    assert!(!page.has_more);
    assert_eq!(page.snapshots.len(), 1);
    let s = &page.snapshots[0];
    assert_eq!(
        (s.doc_id, &s.covers, &s.heads, &s.bytes),
        (doc1, &Cursor("5".into()), &heads, &saved)
    );
    let after = remote
        .get_snapshots(SnapshotQuery {
            v: WIRE_VERSION,
            workspace: ws,
            after: Some(doc1),
            limit: 10,
        })
        .await
        .expect("snapshots");
    assert!(after.snapshots.is_empty());

    // Bootstrap pull: doc1's changes are covered by its snapshot.
    let boot = remote
        .pull(pull_req(ws, &Cursor::start(), 100, true))
        .await
        .expect("pull");
    assert!(
        boot.changes.iter().all(|c| c.change.doc_id == doc2),
        "{:?}",
        boot.changes
    );
    assert_eq!(boot.changes.len(), 2);
    assert_eq!(boot.next_cursor, Cursor("5".into()));
    // Everything skipped still moves the cursor to the end.
    let (_, more) = envelopes(1, 8);
    let more: Vec<_> = more
        .into_iter()
        .map(|mut e| {
            e.doc_id = doc1;
            e
        })
        .collect();
    remote.push(push(more)).await.expect("push");
    let tail = remote
        .pull(pull_req(ws, &Cursor("5".into()), 100, true))
        .await
        .expect("pull");
    assert_eq!(
        tail.changes.len(),
        1,
        "a change after the snapshot is not skipped"
    );
}

/// Hands out an expired token first, then a fresh one on refresh.
struct Refreshing {
    user: Uuid,
    refreshed: AtomicUsize,
    refresh_works: bool,
}

#[async_trait]
impl AccessTokenProvider for Refreshing {
    async fn access_token(&self) -> Result<Option<String>, TokenError> {
        Ok(Some(
            if self.refreshed.load(Ordering::SeqCst) > 0 && self.refresh_works {
                user_jwt(self.user)
            } else {
                pg::expired_user_jwt(self.user, 600)
            },
        ))
    }

    async fn refresh(&self, _expired: Option<&str>) -> Result<Option<String>, TokenError> {
        self.refreshed.fetch_add(1, Ordering::SeqCst);
        self.access_token().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_remote_classifies_errors() {
    let fx = SupabaseFixture::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(alice, &[]).await;
    let (_, envs) = envelopes(2, 9);
    let push = |changes| PushRequest {
        v: WIRE_VERSION,
        workspace: ws,
        changes,
    };

    // Not a member.
    let err = fx
        .remote_for(bob)
        .pull(pull_req(ws, &Cursor::start(), 10, false))
        .await
        .expect_err("forbidden");
    assert!(matches!(err, RemoteError::Forbidden { .. }), "{err:?}");
    assert!(!err.is_retryable());

    // Expired token: refreshed once, then the call succeeds.
    let provider = Arc::new(Refreshing {
        user: alice,
        refreshed: AtomicUsize::new(0),
        refresh_works: true,
    });
    let remote = SupabaseRemote::builder(fx.url(), ANON_KEY)
        .with_token_provider(provider.clone())
        .build()
        .expect("remote");
    remote
        .push(push(envs.clone()))
        .await
        .expect("push after refresh");
    assert_eq!(provider.refreshed.load(Ordering::SeqCst), 1);

    // A refresh that yields no valid token: Unauthenticated, not retried forever.
    let stale = Arc::new(Refreshing {
        user: alice,
        refreshed: AtomicUsize::new(0),
        refresh_works: false,
    });
    let remote = SupabaseRemote::builder(fx.url(), ANON_KEY)
        .with_token_provider(stale.clone())
        .build()
        .expect("remote");
    let err = remote
        .pull(pull_req(ws, &Cursor::start(), 10, false))
        .await
        .expect_err("expired");
    assert!(
        matches!(err, RemoteError::Unauthenticated { .. }),
        "{err:?}"
    );
    assert_eq!(stale.refreshed.load(Ordering::SeqCst), 1);

    // A forged token is not refreshed: straight to Unauthenticated.
    let forged = SupabaseRemote::builder(fx.url(), ANON_KEY)
        .with_access_token("eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYXV0aGVudGljYXRlZCJ9.c2lnbmF0dXJl")
        .build()
        .expect("remote");
    let err = forged
        .pull(pull_req(ws, &Cursor::start(), 10, false))
        .await
        .expect_err("forged");
    assert!(
        matches!(err, RemoteError::Unauthenticated { .. }),
        "{err:?}"
    );

    // Too large: refused locally above the client limit, 413 from the server
    // above its batch limits; both say "split".
    let alice_remote = fx.remote_for(alice);
    let small = SupabaseRemote::builder(fx.url(), ANON_KEY)
        .with_access_token(user_jwt(alice))
        .with_max_body_bytes(200)
        .build()
        .expect("remote");
    let err = small
        .push(push(envs.clone()))
        .await
        .expect_err("too large locally");
    assert!(matches!(err, RemoteError::TooLarge { .. }), "{err:?}");
    let many: Vec<_> = (0..1001).map(|_| envs[0].clone()).collect();
    let err = alice_remote.push(push(many)).await.expect_err("too many");
    assert!(matches!(err, RemoteError::TooLarge { .. }), "{err:?}");

    // Nobody listening: Unavailable (retryable, offline).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let offline = SupabaseRemote::builder(format!("http://{closed}"), ANON_KEY)
        .with_access_token(user_jwt(alice))
        .build()
        .expect("remote");
    let err = offline
        .pull(pull_req(ws, &Cursor::start(), 10, false))
        .await
        .expect_err("offline");
    assert!(err.is_offline() && err.is_retryable(), "{err:?}");
    assert_eq!(fx.db.change_count().await, 2);
}

/// Concurrent pushes from several writers through the gateway's pool: the
/// log has no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_get_a_dense_log() {
    let fx = SupabaseFixture::start().await;
    let owner = Uuid::new_v4();
    let writers: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let ws = fx.workspace(owner, &writers).await;
    let mut tasks = Vec::new();
    for (i, w) in writers.iter().enumerate() {
        let remote = fx.remote_for(*w);
        let seed = u8::try_from(20 + i).expect("seed");
        tasks.push(tokio::spawn(async move {
            let (_, envs) = envelopes(30, seed);
            for chunk in envs.chunks(5) {
                let r = remote
                    .push(PushRequest {
                        v: WIRE_VERSION,
                        workspace: ws,
                        changes: chunk.to_vec(),
                    })
                    .await
                    .expect("push");
                assert!(r
                    .results
                    .iter()
                    .all(|o| matches!(o, PushOutcome::Stored { .. })));
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let page = fx
        .remote_for(owner)
        .pull(pull_req(ws, &Cursor::start(), 1000, false))
        .await
        .expect("pull");
    let seqs: Vec<i64> = page.changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=120).collect::<Vec<_>>());
    assert_eq!(page.next_cursor, Cursor("120".into()));
}

/// A reader may pull but not write snapshots: its sync passes succeed, the
/// refused snapshot is counted as skipped (one refused request per pass,
/// then the pass stops offering snapshots), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_syncs_without_uploading_snapshots() {
    use supamerge::SyncConfig;
    use supamerge::{Collection, Replica};

    let fx = SupabaseFixture::start().await;
    let (owner, reader) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(owner, &[]).await;
    fx.remote_for(owner)
        .add_member(ws, reader, MemberRole::Reader)
        .await
        .expect("add the reader");
    let dir = tempfile::tempdir().expect("temp dir");
    let writer = Replica::open(dir.path().join("owner")).expect("owner replica");
    let notes = Collection::new("notes").expect("collection");
    let id = writer
        .create_json(ws, &notes, &json!({"n": 0}))
        .expect("create");
    for n in 1..30 {
        writer.patch_json(&id, &json!({"n": n})).expect("edit");
    }
    let quiet = SyncConfig {
        snapshot_threshold: 0,
        ..SyncConfig::default()
    };
    let owner_remote = fx.remote_for(owner);
    supamerge::sync_once(&writer, &owner_remote, &quiet, &[], &|_| {})
        .await
        .expect("owner pushes");

    let r = Replica::open(dir.path().join("reader")).expect("reader replica");
    let eager = SyncConfig {
        snapshot_threshold: 10,
        ..SyncConfig::default()
    };
    let reader_remote = fx.remote_for(reader);
    let first = supamerge::sync_once(&r, &reader_remote, &eager, &[ws], &|_| {})
        .await
        .expect("a reader's pass succeeds although its snapshot is refused");
    assert_eq!(first.pulled, 30, "{first:?}");
    assert_eq!(first.snapshots_uploaded, 0, "{first:?}");
    assert_eq!(first.snapshots_skipped, 1, "{first:?}");
    assert_eq!(r.get_json(&id).expect("read"), json!({"n": 29}));
    let again = supamerge::sync_once(&r, &reader_remote, &eager, &[ws], &|_| {})
        .await
        .expect("second pass");
    assert_eq!(
        again.snapshots_skipped, 1,
        "a reader is refused on every pass: {again:?}"
    );
    let stored: i64 = fx
        .db
        .superuser()
        .await
        .query_one("select count(*) from public.snapshots", &[])
        .await
        .expect("count snapshots")
        .get(0);
    assert_eq!(stored, 0);
}
