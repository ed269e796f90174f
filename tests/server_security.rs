//! The server's SQL under attack (issue 11), against a real PostgreSQL with
//! the real migration loaded as a non-superuser owner (`supabase_postgres`,
//! as hosted Supabase's `postgres`):
//!
//! - a caller's `pg_temp` domains cannot run code inside the SECURITY DEFINER
//!   functions (nor inside `auth.uid()` / `auth.jwt()` called from one);
//! - the search-path lint passes on the migration and flags exactly the state
//!   the hijack exploits;
//! - membership changes of a workspace serialise: two owners demoting each
//!   other, or both leaving, at the same moment, leave an owner;
//! - workspace ids are the server's (idempotent retries, no oracle);
//! - snapshots are bounded and carry the digest of what they replace.
//!
//! Needs `SUPAMERGE_TEST_DATABASE_URL` (run `scripts/test.sh`).
#![cfg(feature = "gateway")]

#[path = "support/pg.rs"]
mod pg;
#[path = "support/sql_lint.rs"]
mod sql_lint;

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use pg::{envelopes, user_jwt, SupabaseFixture, TestDb, ANON_KEY};
use serde_json::{json, Value};
use supamerge::{
    Cursor, PushRequest, Remote, RemoteError, SnapshotDigest, SnapshotQuery, SnapshotUpload,
    SupabaseRemote, MAX_SNAPSHOT_BYTES, SNAPSHOT_PAGE_VERSION, WIRE_VERSION,
};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A connection that also reports the server's notices (they are sent at
/// once, not at commit, so a notice survives the rollback of a failed call).
async fn connect_with_notices(
    url: &str,
) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notice(n)) => {
                    let _ = tx.send(n.message().to_owned());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

/// The first column of the first row of a simple-protocol query (no
/// parameters: the attacker's session has replaced `uuid` and `text`).
async fn scalar(c: &tokio_postgres::Client, sql: &str) -> Result<Option<String>, String> {
    let msgs = c.simple_query(sql).await.map_err(|e| {
        e.as_db_error()
            .map(|d| format!("{}: {}", d.code().code(), d.message()))
            .unwrap_or_else(|| e.to_string())
    })?;
    Ok(msgs.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    }))
}

/// A session like PostgREST's for `user`: logged in as authenticator, role
/// authenticated, the user's claims set for the whole session.
async fn api_session(
    db: &TestDb,
    user: Uuid,
) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<String>) {
    let (c, notices) = connect_with_notices(&db.authenticator_url()).await;
    c.batch_execute(&format!(
        "set role authenticated; select set_config('request.jwt.claims', '{}', false)",
        json!({"sub": user, "role": "authenticated"})
    ))
    .await
    .expect("become the user");
    (c, notices)
}

/// Arms the issue 11 attack in an API session: `pg_temp` domains named like
/// the built-in types, whose CHECK calls the attacker's own function. Run as
/// anyone but `authenticated` (i.e. inside a definer function), it makes the
/// attacker an owner of `victim_ws` and says so in a notice.
async fn arm_hijack(c: &tokio_postgres::Client, attacker: Uuid, victim_ws: &str) {
    c.batch_execute(&format!(
        r#"
        create function pg_temp.evil(x pg_catalog.text) returns pg_catalog.bool
        language plpgsql as $evil$
        begin
          if current_user operator(pg_catalog.<>) 'authenticated' then
            raise warning 'hijack ran as %', current_user;
            insert into public.workspace_members (workspace_id, user_id, role)
            values ('{victim_ws}', '{attacker}', 'owner') on conflict do nothing;
          else
            raise warning 'hijack armed';
          end if;
          return true;
        end $evil$;
        "#
    ))
    .await
    .expect("create the attacker's function");
    for (name, base) in [
        ("uuid", "uuid"),
        ("text", "text"),
        ("jsonb", "jsonb"),
        ("json", "json"),
        ("bytea", "bytea"),
        ("bool", "bool"),
        ("int4", "int4"),
        ("int8", "int8"),
        ("timestamptz", "timestamptz"),
        ("name", "name"),
    ] {
        c.batch_execute(&format!(
            "create domain pg_temp.{name} as pg_catalog.{base} \
             check (pg_temp.evil(value::pg_catalog.text))"
        ))
        .await
        .unwrap_or_else(|e| panic!("create domain pg_temp.{name}: {e}"));
    }
    // The domains are live in the attacker's own statements.
    scalar(c, "select 'x'::text").await.expect("own cast");
}

/// What the notices say: `armed` when the attacker's check ran at all, and
/// every role it ran as other than the attacker's own.
fn hijack_evidence(notices: &mut mpsc::UnboundedReceiver<String>) -> (bool, Vec<String>) {
    let mut armed = false;
    let mut ran_as = Vec::new();
    while let Ok(n) = notices.try_recv() {
        if n == "hijack armed" {
            armed = true;
        } else if let Some(role) = n.strip_prefix("hijack ran as ") {
            ran_as.push(role.to_owned());
        }
    }
    (armed, ran_as)
}

/// Every RPC function, called by the attacker with their own workspace
/// (so the code paths past the access checks run) and with the victim's.
async fn call_everything(c: &tokio_postgres::Client, own_ws: &str, victim_ws: &str) -> Vec<String> {
    let (doc, envs) = envelopes(3, 9);
    let mut items: Vec<Value> = envs
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    items.push(json!({"doc_id": doc, "collection": "tasks", "hash": "00", "bytes": "AAAA"}));
    let changes = Value::Array(items).to_string();
    let mut saved = automerge::Automerge::new();
    saved
        .apply_changes(
            envs.iter()
                .map(|e| automerge::Change::from_bytes(e.bytes.clone()).expect("change")),
        )
        .expect("apply");
    let snapshot = b64(&saved.save());
    let (u2, u3, key) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let calls = vec![
        "select public.supamerge_create_workspace('hijack')".to_owned(),
        format!("select public.supamerge_create_workspace('hijack', '{key}')"),
        format!("select public.supamerge_create_workspace('hijack', '{key}')"),
        format!("select public.supamerge_add_member('{own_ws}', '{u2}', 'owner')"),
        format!("select public.supamerge_add_member('{own_ws}', '{u2}', 'reader')"),
        format!("select public.supamerge_push('{own_ws}', '{changes}')"),
        format!("select public.supamerge_push('{own_ws}', '{changes}')"),
        format!("select public.supamerge_pull('{own_ws}', '', 10, false)"),
        format!("select public.supamerge_pull('{own_ws}', '1', 10, true)"),
        format!(
            "select public.supamerge_put_snapshot('{own_ws}', '{doc}', 'tasks', '[]', '3', '{snapshot}')"
        ),
        format!("select public.supamerge_get_snapshots('{own_ws}', null, 10, 2)"),
        format!("select public.supamerge_get_snapshots('{own_ws}', null, 10, 1)"),
        // Issue 16's functions, every one of them.
        "select public.supamerge_list_workspaces()".to_owned(),
        format!("select public.supamerge_list_members('{own_ws}')"),
        format!("select public.supamerge_set_role('{own_ws}', '{u2}', 'writer')"),
        format!(
            "select public.supamerge_accept_invite(\
             public.supamerge_create_invite('{own_ws}', 'reader', 3600, 2) ->> 'code')"
        ),
        format!(
            "select public.supamerge_revoke_invite(null, \
             public.supamerge_create_invite('{own_ws}', 'writer', 3600, 1) ->> 'code')"
        ),
        format!("select public.supamerge_list_invites('{own_ws}')"),
        format!("select public.supamerge_add_member('{own_ws}', '{u3}', 'reader')"),
        format!("select public.supamerge_remove_member('{own_ws}', '{u3}')"),
        format!("select public.supamerge_leave_workspace('{own_ws}')"),
        format!("select public.supamerge_pull('{victim_ws}', '', 10, false)"),
        format!("select public.supamerge_push('{victim_ws}', '{changes}')"),
        format!("select public.supamerge_add_member('{victim_ws}', '{u2}', 'owner')"),
        "select public.security_probe()".to_owned(),
    ];
    let mut errors = Vec::new();
    for sql in calls {
        if let Err(e) = scalar(c, &sql).await {
            errors.push(format!("{}: {e}", &sql[..sql.len().min(60)]));
        }
    }
    errors
}

/// A SECURITY DEFINER function of the test database that calls the stand-in's
/// `auth.uid()` and `auth.jwt()` (as the RLS policies and any definer
/// function on Supabase may): the second path of issue 11.
async fn create_security_probe(db: &TestDb) {
    db.owner()
        .await
        .batch_execute(
            "create function public.security_probe() returns pg_catalog.text \
             language sql stable security definer set search_path = pg_catalog, pg_temp as \
             $$ select auth.uid()::text || auth.jwt()::text $$; \
             grant execute on function public.security_probe() to authenticated",
        )
        .await
        .expect("create the probe as the migration's owner");
}

/// A workspace written straight into the tables (as the superuser, so the
/// setup does not depend on the functions under test): `members` with their
/// roles. Returns its id.
async fn make_workspace(db: &TestDb, members: &[(Uuid, &str)]) -> String {
    let ws = Uuid::new_v4().to_string();
    let su = db.superuser().await;
    su.execute(
        "insert into public.workspaces (id, name) values ($1::text::uuid, 'ws')",
        &[&ws],
    )
    .await
    .expect("insert workspace");
    for (user, role) in members {
        su.execute(
            "insert into public.workspace_members (workspace_id, user_id, role) \
             values ($1::text::uuid, $2::text::uuid, $3)",
            &[&ws, &user.to_string(), role],
        )
        .await
        .expect("insert member");
    }
    ws
}

/// A victim's workspace and an attacker who owns a workspace of their own;
/// returns (attacker, own workspace, victim workspace).
async fn victim_and_attacker(db: &TestDb) -> (Uuid, String, String) {
    let (victim, attacker) = (Uuid::new_v4(), Uuid::new_v4());
    let victim_ws = make_workspace(db, &[(victim, "owner")]).await;
    let own_ws = make_workspace(db, &[(attacker, "owner")]).await;
    (attacker, own_ws, victim_ws)
}

async fn is_member(db: &TestDb, ws: &str, user: Uuid) -> bool {
    db.superuser()
        .await
        .query_opt(
            "select 1 from public.workspace_members where workspace_id = $1::text::uuid \
             and user_id = $2::text::uuid",
            &[&ws, &user.to_string()],
        )
        .await
        .expect("query members")
        .is_some()
}

// ---------------------------------------------------------------------------
// 1. pg_temp hijack and the lint
// ---------------------------------------------------------------------------

/// Issue 11, item 1: a session with EXECUTE and TEMP arms `pg_temp` domains
/// named like the built-in types and calls every RPC (and a definer function
/// calling `auth.uid()` / `auth.jwt()`): its check function never runs as
/// anyone but itself, and it gains nothing. (With the migration's functions
/// on `search_path = ''` it ran as the owner and made itself owner of the
/// victim's workspace.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_temp_domains_cannot_hijack_definer_functions() {
    let db = TestDb::new().await;
    create_security_probe(&db).await;
    let (attacker, own_ws, victim_ws) = victim_and_attacker(&db).await;
    let (c, mut notices) = api_session(&db, attacker).await;
    arm_hijack(&c, attacker, &victim_ws).await;
    let errors = call_everything(&c, &own_ws, &victim_ws).await;
    let (armed, ran_as) = hijack_evidence(&mut notices);
    assert!(armed, "the attacker's domains were not in effect");
    assert!(
        ran_as.is_empty(),
        "the attacker's check ran inside a definer function as {ran_as:?}"
    );
    assert!(
        !is_member(&db, &victim_ws, attacker).await,
        "the attacker became a member of the victim's workspace"
    );
    // The calls themselves worked (the attack did not just break them):
    // only the victim's workspace and the last owner's leave are refused.
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors.iter().all(|e| e.contains("access denied")
            || e.contains("only an owner")
            || e.contains("last owner")),
        "{errors:#?}"
    );
}

/// The lint (tests/support/sql_lint.rs) finds nothing on the migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_passes_the_pg_temp_lint() {
    let db = TestDb::new().await;
    let violations = sql_lint::lint_database(&db.superuser().await).await;
    assert!(
        violations.is_empty(),
        "search-path lint:\n{}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Put back what issue 11 found (a definer function and the stand-in's
/// `auth.uid()` on `search_path = ''`): the lint flags both — the setting
/// and the unqualified `uuid` that a caller's `pg_temp.uuid` replaces — and
/// the same attack then really runs as the migration's owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lint_flags_what_the_hijack_exploits() {
    let db = TestDb::new().await;
    let su = db.superuser().await;
    su.batch_execute(
        "alter function public.supamerge_push(uuid, jsonb) set search_path = ''; \
         create or replace function auth.uid() returns uuid language sql stable \
         set search_path = '' as $$ \
           select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''), \
             (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid $$",
    )
    .await
    .expect("restore what issue 11 found");
    let violations = sql_lint::lint_database(&su).await;
    let about = |f: &str, what: &str| {
        violations
            .iter()
            .any(|v| v.function == f && v.problem.contains(what))
    };
    assert!(
        about("public.supamerge_push", "SECURITY DEFINER with search_path"),
        "{violations:#?}"
    );
    assert!(
        about("public.supamerge_push", "DECLARE type `uuid`"),
        "{violations:#?}"
    );
    assert!(about("auth.uid", "search_path"), "{violations:#?}");
    assert!(about("auth.uid", "cast to `uuid`"), "{violations:#?}");
    assert_eq!(
        violations
            .iter()
            .map(|v| v.function.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["auth.uid", "public.supamerge_push"].into(),
        "nothing else is flagged: {violations:#?}"
    );

    // And that state is exploitable: the same attack escalates.
    let (attacker, own_ws, victim_ws) = victim_and_attacker(&db).await;
    let (c, mut notices) = api_session(&db, attacker).await;
    arm_hijack(&c, attacker, &victim_ws).await;
    let (_, envs) = envelopes(1, 4);
    let changes = serde_json::to_string(&envs).expect("json");
    scalar(
        &c,
        &format!("select public.supamerge_push('{own_ws}', '{changes}')"),
    )
    .await
    .expect("push");
    let (_, ran_as) = hijack_evidence(&mut notices);
    assert_eq!(
        ran_as.first().map(String::as_str),
        Some("supabase_postgres"),
        "{ran_as:?}"
    );
    assert!(is_member(&db, &victim_ws, attacker).await);
}

// ---------------------------------------------------------------------------
// 2. The owner invariant under concurrency
// ---------------------------------------------------------------------------

/// Starts a transaction as `user` (role authenticated, claims set locally).
async fn begin_as(c: &tokio_postgres::Client, user: Uuid) {
    c.batch_execute(&format!(
        "begin; set local role authenticated; \
         select set_config('request.jwt.claims', '{}', true)",
        json!({"sub": user, "role": "authenticated"})
    ))
    .await
    .expect("begin as user");
}

async fn owners(db: &TestDb, ws: &str) -> Vec<String> {
    db.superuser()
        .await
        .query(
            "select user_id::text from public.workspace_members \
             where workspace_id = $1::text::uuid and role = 'owner' order by 1",
            &[&ws],
        )
        .await
        .expect("owners")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Runs `first` as `a` in a transaction left open, then `second` as `b` in
/// another connection; waits (bounded) until the second is either finished
/// or waiting for a lock, commits the first, and returns whether the second
/// had to wait and how it ended.
async fn overlapping(
    db: &TestDb,
    (a, first): (Uuid, String),
    (b, second): (Uuid, String),
) -> (bool, Result<(), String>) {
    let t1 = db.authenticator().await;
    let t2 = db.authenticator().await;
    let t2_pid: i32 = t2
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    begin_as(&t1, a).await;
    t1.batch_execute(&first).await.expect("first change");
    let task = tokio::spawn(async move {
        begin_as(&t2, b).await;
        let r = t2.batch_execute(&second).await;
        let end = if r.is_ok() { "commit" } else { "rollback" };
        t2.batch_execute(end).await.expect("end second");
        r.map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        })
    });
    let watcher = db.superuser().await;
    let mut waited = false;
    for _ in 0..400 {
        if task.is_finished() {
            break;
        }
        let waiting: Option<String> = watcher
            .query_opt(
                "select wait_event_type::text from pg_stat_activity where pid = $1",
                &[&t2_pid],
            )
            .await
            .expect("pg_stat_activity")
            .and_then(|r| r.get(0));
        if waiting.as_deref() == Some("Lock") {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    t1.batch_execute("commit").await.expect("commit first");
    let second = task.await.expect("second task");
    (waited, second)
}

/// Two owners demote each other at the same moment: the second waits for
/// the first, then is refused (it is no longer an owner); one owner remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_demotions_keep_an_owner() {
    let db = TestDb::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = make_workspace(&db, &[(a, "owner"), (b, "owner")]).await;
    let (waited, second) = overlapping(
        &db,
        (
            a,
            format!("select supamerge_add_member('{ws}', '{b}', 'writer')"),
        ),
        (
            b,
            format!("select supamerge_add_member('{ws}', '{a}', 'writer')"),
        ),
    )
    .await;
    let left = owners(&db, &ws).await;
    assert_eq!(left, vec![a.to_string()], "owners after both demotions");
    assert!(waited, "the second demotion did not wait for the first");
    let refused = second.expect_err("the second demotion must be refused");
    assert!(refused.contains("only an owner"), "{refused}");
}

/// Two owners leave at the same moment while a writer remains: the second
/// waits, then is refused as the last owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_leaves_keep_an_owner() {
    let db = TestDb::new().await;
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let ws = make_workspace(&db, &[(a, "owner"), (b, "owner"), (c, "writer")]).await;
    let (waited, second) = overlapping(
        &db,
        (a, format!("select supamerge_leave_workspace('{ws}')")),
        (b, format!("select supamerge_leave_workspace('{ws}')")),
    )
    .await;
    assert_eq!(owners(&db, &ws).await, vec![b.to_string()]);
    assert!(waited, "the second leave did not wait for the first");
    let refused = second.expect_err("the last owner cannot leave");
    assert!(refused.contains("last owner"), "{refused}");
}

// ---------------------------------------------------------------------------
// 5. Workspace ids
// ---------------------------------------------------------------------------

/// The server picks workspace ids; a request key makes retries idempotent,
/// per creator (the service role's too); a name is still required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_ids_are_the_servers() {
    let db = TestDb::new().await;
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    let call = |user: Option<Uuid>, args: &'static str| {
        let db = &db;
        async move {
            let c = db.authenticator().await;
            let setup = match user {
                Some(u) => format!(
                    "set role authenticated; select set_config('request.jwt.claims', '{}', false)",
                    json!({"sub": u, "role": "authenticated"})
                ),
                None => "set role service_role; \
                         select set_config('request.jwt.claims', '{\"role\":\"service_role\"}', false)"
                    .to_owned(),
            };
            c.batch_execute(&setup).await.expect("role");
            match scalar(
                &c,
                &format!("select public.supamerge_create_workspace({args})"),
            )
            .await
            {
                Ok(v) => Ok(serde_json::from_str::<Value>(&v.expect("answer")).expect("json")),
                Err(e) => Err(e),
            }
        }
    };
    let key = "'ws', '7b8f5b2e-0c58-4d1c-9b9f-4a9b1f0c2d3e'";
    let a = call(Some(u1), "'ws'").await.expect("create");
    let b = call(Some(u1), "'ws'").await.expect("create");
    assert_ne!(a["workspace_id"], b["workspace_id"]);
    assert_eq!(a["created"], true);
    let k1 = call(Some(u1), key).await.expect("create");
    let k2 = call(Some(u1), key).await.expect("retry");
    assert_eq!(
        (k1["created"].clone(), k2["created"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(k1["workspace_id"], k2["workspace_id"]);
    let other = call(Some(u2), key).await.expect("another user's key");
    assert_ne!(other["workspace_id"], k1["workspace_id"]);
    assert_eq!(other["created"], true);
    let s1 = call(None, key).await.expect("service role");
    let s2 = call(None, key).await.expect("service role retry");
    assert_eq!(s1["workspace_id"], s2["workspace_id"]);
    assert_ne!(s1["workspace_id"], k1["workspace_id"]);
    let err = call(Some(u1), "'   '").await.expect_err("a blank name");
    assert!(err.contains("1 to 200 characters"), "{err}");
    // Only the owner (the caller) is a member of what they created.
    let ws = k1["workspace_id"].as_str().expect("id");
    assert!(is_member(&db, ws, u1).await && !is_member(&db, ws, u2).await);
}

// ---------------------------------------------------------------------------
// 4. Snapshots in SQL: bounded, and what they replace
// ---------------------------------------------------------------------------

/// A stored snapshot carries the digest of exactly the changes of its
/// document at or before its `covers` position (what a bootstrapping pull
/// skips); version 1 pages (older clients) come without it; more than
/// 1 MiB is refused with 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_bounded_and_carry_what_they_replace() {
    let fx = SupabaseFixture::start().await;
    let alice = Uuid::new_v4();
    let ws = fx.workspace(alice, &[]).await;
    // Above the client's default 1 MiB body limit: the server's bound is
    // what this test is about.
    let remote = SupabaseRemote::builder(fx.url(), ANON_KEY)
        .with_access_token(user_jwt(alice))
        .with_max_body_bytes(4 << 20)
        .build()
        .expect("remote");
    let (doc, envs) = envelopes(4, 11);
    let (_, others) = envelopes(2, 12);
    // Log: doc#0, doc#1, other#0, doc#2, other#1, doc#3.
    let order = [
        &envs[0], &envs[1], &others[0], &envs[2], &others[1], &envs[3],
    ];
    for e in order {
        remote
            .push(PushRequest {
                v: WIRE_VERSION,
                workspace: ws,
                changes: vec![(*e).clone()],
            })
            .await
            .expect("push");
    }
    let save_of = |n: usize| {
        let mut d = automerge::Automerge::new();
        d.apply_changes(
            envs[..n]
                .iter()
                .map(|e| automerge::Change::from_bytes(e.bytes.clone()).expect("change")),
        )
        .expect("apply");
        d.save()
    };
    let upload = |covers: &str, bytes: Vec<u8>| SnapshotUpload {
        v: WIRE_VERSION,
        workspace: ws,
        doc_id: doc,
        collection: supamerge::Collection::new("tasks").expect("collection"),
        heads: vec![],
        covers: Cursor(covers.to_owned()),
        bytes,
    };
    remote
        .put_snapshot(upload("4", save_of(3)))
        .await
        .expect("put snapshot");
    let page = remote
        .get_snapshots(SnapshotQuery {
            v: SNAPSHOT_PAGE_VERSION,
            workspace: ws,
            after: None,
            limit: 10,
        })
        .await
        .expect("page v2");
    assert_eq!(page.v, 2);
    let want = SnapshotDigest::of_hashes(envs[..3].iter().map(|e| e.hash));
    assert_eq!(page.snapshots[0].replaces, Some(want));
    let v1 = remote
        .get_snapshots(SnapshotQuery {
            v: 1,
            workspace: ws,
            after: None,
            limit: 10,
        })
        .await
        .expect("page v1");
    assert_eq!((v1.v, v1.snapshots[0].replaces), (1, None));

    // Size bound: 1 MiB passes the size check, one byte more is 413.
    let mut big = save_of(4);
    big.resize(MAX_SNAPSHOT_BYTES + 1, 0);
    let err = remote
        .put_snapshot(upload("6", big))
        .await
        .expect_err("over 1 MiB");
    assert!(matches!(err, RemoteError::TooLarge { .. }), "{err:?}");
    let su = fx.db.superuser().await;
    let stored: i64 = su
        .query_one(
            "select max(octet_length(bytes))::int8 from public.snapshots",
            &[],
        )
        .await
        .expect("size")
        .get(0);
    assert!(stored < 1_000_000, "the big snapshot was not stored");
    // The table refuses it too (a direct write by the owner).
    let direct = db_owner_insert_big_snapshot(&fx.db, &ws.to_string()).await;
    assert!(direct.contains("snapshots_bytes_check"), "{direct}");
}

async fn db_owner_insert_big_snapshot(db: &TestDb, ws: &str) -> String {
    db.owner()
        .await
        .execute(
            "insert into public.snapshots (workspace_id, doc_id, collection, heads, covers_seq, \
             replaces_count, replaces_sha256, bytes) \
             values ($1::text::uuid, gen_random_uuid(), 'tasks', '[]', 0, 0, sha256(''), \
                     decode(repeat('00', 1048577), 'hex'))",
            &[&ws],
        )
        .await
        .expect_err("the check constraint refuses it")
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}
