//! Workspaces, members and invitations on the real migration, through the
//! real gateway (in-process) and `SupabaseRemote`, plus raw SQL sessions
//! for the races: the rules a team expects (only owners manage members, a
//! workspace keeps an owner, a removed member is told so) and the security
//! of invitation codes (guessing, reuse, expiry, revocation, escalation).
//! Needs `SUPAMERGE_TEST_DATABASE_URL` (run `scripts/test.sh`).
#![cfg(feature = "gateway")]

#[path = "support/pg.rs"]
mod pg;

use std::collections::BTreeSet;
use std::time::Duration;

use pg::{user_jwt, SupabaseFixture, TestDb, ANON_KEY};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use supamerge::{
    InviteOptions, InviteRef, InviteState, MemberRole, Remote, RemoteError, SupabaseRemote,
    WorkspaceAdmin, WorkspaceId,
};
use uuid::Uuid;

fn pull_req(ws: WorkspaceId) -> supamerge::PullRequest {
    supamerge::PullRequest {
        v: supamerge::WIRE_VERSION,
        workspace: ws,
        cursor: supamerge::Cursor(String::new()),
        limit: 10,
        skip_snapshotted: false,
    }
}

/// Every member operation and its rules, as two users of one workspace see
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_roles_and_the_last_owner() {
    let fx = SupabaseFixture::start().await;
    let (alice, bob, carol, stranger) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let a = fx.remote_for(alice);
    let b = fx.remote_for(bob);
    let ws = WorkspaceAdmin::create_workspace(&a, "Team").await.unwrap();
    let mine = a.list_workspaces().await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].workspace_id, mine[0].name.as_str(), mine[0].role),
        (ws, "Team", MemberRole::Owner)
    );
    assert!(b.list_workspaces().await.unwrap().is_empty());

    WorkspaceAdmin::add_member(&a, ws, bob, MemberRole::Writer)
        .await
        .unwrap();
    WorkspaceAdmin::add_member(&a, ws, carol, MemberRole::Reader)
        .await
        .unwrap();
    let members = b.members(ws).await.unwrap();
    let roles: BTreeSet<(Uuid, MemberRole)> = members.iter().map(|m| (m.user_id, m.role)).collect();
    assert_eq!(
        roles,
        BTreeSet::from([
            (alice, MemberRole::Owner),
            (bob, MemberRole::Writer),
            (carol, MemberRole::Reader)
        ])
    );
    assert_eq!(
        b.list_workspaces().await.unwrap()[0].role,
        MemberRole::Writer
    );

    // Only owners manage members.
    for e in [
        WorkspaceAdmin::add_member(&b, ws, stranger, MemberRole::Reader)
            .await
            .unwrap_err(),
        b.set_role(ws, carol, MemberRole::Writer).await.unwrap_err(),
        b.remove_member(ws, carol).await.unwrap_err(),
    ] {
        assert!(matches!(e, RemoteError::Forbidden { .. }), "{e:?}");
    }
    // A stranger learns nothing: the same answer as for a made-up id.
    let s = fx.remote_for(stranger);
    let e1 = s.members(ws).await.unwrap_err();
    let e2 = s
        .members(WorkspaceId::from_uuid(Uuid::new_v4()))
        .await
        .unwrap_err();
    assert!(matches!(e1, RemoteError::Forbidden { .. }), "{e1:?}");
    assert_eq!(e1.to_string(), e2.to_string());

    // The last owner can neither be demoted, nor removed, nor leave.
    for e in [
        a.set_role(ws, alice, MemberRole::Writer).await.unwrap_err(),
        WorkspaceAdmin::add_member(&a, ws, alice, MemberRole::Reader)
            .await
            .unwrap_err(),
        a.remove_member(ws, alice).await.unwrap_err(),
        WorkspaceAdmin::leave_workspace(&a, ws).await.unwrap_err(),
    ] {
        assert!(matches!(e, RemoteError::LastOwner { .. }), "{e:?}");
    }
    // set_role is for members only.
    let e = a
        .set_role(ws, stranger, MemberRole::Reader)
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::BadRequest { .. }), "{e:?}");

    // Removed: no more pull or push, and the answer says why.
    b.pull(pull_req(ws)).await.expect("a member pulls");
    a.remove_member(ws, bob).await.unwrap();
    let e = b.pull(pull_req(ws)).await.unwrap_err();
    match &e {
        RemoteError::NotAMember { message } => {
            assert!(message.contains(&ws.to_string()), "{message}")
        }
        other => panic!("expected NotAMember, got {other:?}"),
    }
    assert!(!e.is_retryable());
    let (doc, envs) = pg::envelopes(1, 7);
    let _ = doc;
    let e = b
        .push(supamerge::PushRequest {
            v: supamerge::WIRE_VERSION,
            workspace: ws,
            changes: envs,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::NotAMember { .. }), "{e:?}");
    assert!(b.list_workspaces().await.unwrap().is_empty());
    // A stranger is still told nothing more than before.
    let e = s.pull(pull_req(ws)).await.unwrap_err();
    assert!(matches!(e, RemoteError::Forbidden { .. }), "{e:?}");

    // Leaving is the same for the replicas that stay behind.
    WorkspaceAdmin::leave_workspace(&fx.remote_for(carol), ws)
        .await
        .unwrap();
    let e = fx.remote_for(carol).pull(pull_req(ws)).await.unwrap_err();
    assert!(matches!(e, RemoteError::NotAMember { .. }), "{e:?}");

    // Removed by an owner: no way back with a code (not even one made
    // afterwards); who left may come back with one.
    let code = a
        .create_invite(ws, InviteOptions::new(MemberRole::Reader).with_max_uses(5))
        .await
        .unwrap()
        .code;
    let e = b.accept_invite(&code).await.unwrap_err();
    assert!(matches!(e, RemoteError::InvalidInvitation { .. }), "{e:?}");
    let back = fx.remote_for(carol).accept_invite(&code).await.unwrap();
    assert_eq!((back.role, back.joined), (MemberRole::Reader, true));
    fx.remote_for(carol)
        .pull(pull_req(ws))
        .await
        .expect("carol is back");

    // Added back by an owner: syncing again.
    WorkspaceAdmin::add_member(&a, ws, bob, MemberRole::Reader)
        .await
        .unwrap();
    b.pull(pull_req(ws)).await.expect("pulls again");
    // Another owner: now the first may step down.
    a.set_role(ws, bob, MemberRole::Owner).await.unwrap();
    a.set_role(ws, alice, MemberRole::Writer).await.unwrap();
    assert_eq!(
        a.list_workspaces().await.unwrap()[0].role,
        MemberRole::Writer
    );
}

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

/// Runs `first` as `a` in a transaction left open, then `second` as `b` on
/// another connection; waits (bounded) until the second finished or waits
/// for a lock, commits the first, and returns whether the second waited and
/// how it ended.
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
    t1.batch_execute(&first).await.expect("first call");
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

async fn owners(db: &TestDb, ws: WorkspaceId) -> Vec<String> {
    db.superuser()
        .await
        .query(
            "select user_id::text from public.workspace_members \
             where workspace_id = $1::text::uuid and role = 'owner' order by 1",
            &[&ws.to_string()],
        )
        .await
        .expect("owners")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Two owners remove each other at the same moment: the second waits for
/// the first, then is refused; one owner remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_removals_keep_an_owner() {
    let fx = SupabaseFixture::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx.workspace(a, &[]).await;
    WorkspaceAdmin::add_member(&fx.remote_for(a), ws, b, MemberRole::Owner)
        .await
        .unwrap();
    let (waited, second) = overlapping(
        &fx.db,
        (a, format!("select supamerge_remove_member('{ws}', '{b}')")),
        (b, format!("select supamerge_remove_member('{ws}', '{a}')")),
    )
    .await;
    assert_eq!(owners(&fx.db, ws).await, vec![a.to_string()]);
    assert!(waited, "the second removal did not wait for the first");
    let refused = second.expect_err("the second removal must be refused");
    assert!(refused.contains("no longer a member"), "{refused}");
}

/// The raw answer to a join: (HTTP status, body), to compare refusals byte
/// for byte.
async fn raw_join(url: &str, user: Uuid, code: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/rest/v1/rpc/supamerge_accept_invite"))
        .header("apikey", ANON_KEY)
        .bearer_auth(user_jwt(user))
        .json(&json!({"p_code": code}))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn random_code() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    format!(
        "smi_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Guessing, reuse past the limit, expiry, revocation and escalation all
/// get one answer, byte for byte, that names no workspace; codes are
/// stored hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_codes_all_get_the_same_answer() {
    let fx = SupabaseFixture::start().await;
    let url = fx.url();
    let (owner, writer, reader) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let o = fx.remote_for(owner);
    let ws = WorkspaceAdmin::create_workspace(&o, "Secret project")
        .await
        .unwrap();
    WorkspaceAdmin::add_member(&o, ws, writer, MemberRole::Writer)
        .await
        .unwrap();
    WorkspaceAdmin::add_member(&o, ws, reader, MemberRole::Reader)
        .await
        .unwrap();
    let mut refusals: BTreeSet<(u16, String)> = BTreeSet::new();
    let joiner = Uuid::new_v4();

    // Guessing: 300 random codes of the right shape, and odd inputs.
    let mut guesses: Vec<String> = (0..300).map(|_| random_code()).collect();
    guesses.extend(
        [
            "",
            "smi_",
            "' or 1=1 --",
            "SMI_AAAAAAAAAAAAAAAAAAAAAA",
            &"x".repeat(5000),
        ]
        .map(String::from),
    );
    for g in &guesses {
        refusals.insert(raw_join(&url, joiner, g).await);
    }
    assert_eq!(refusals.len(), 1, "{refusals:#?}");

    // A real code: two uses.
    let inv = o
        .create_invite(ws, InviteOptions::new(MemberRole::Writer).with_max_uses(2))
        .await
        .unwrap();
    assert!(
        inv.code.starts_with("smi_") && inv.code.len() == 26,
        "{}",
        inv.code
    );
    // Stored hashed: the table holds the SHA-256, never the code.
    let su = fx.db.superuser().await;
    let dump: String = su
        .query_one(
            "select string_agg(row_to_json(i)::text, ' ') from public.workspace_invites i",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains(&inv.code[4..]), "{dump}");
    let stored: Vec<u8> = su
        .query_one(
            "select code_sha256 from public.workspace_invites where id = $1::text::uuid",
            &[&inv.invite_id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, Sha256::digest(inv.code.as_bytes()).to_vec());

    // Reuse past the limit.
    let (j1, j2, j3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for j in [j1, j2] {
        let joined = fx.remote_for(j).accept_invite(&inv.code).await.unwrap();
        assert_eq!(
            (joined.workspace_id, joined.role, joined.joined),
            (ws, MemberRole::Writer, true)
        );
        assert_eq!(joined.name, "Secret project");
    }
    // A member joining again takes no use and changes nothing.
    let again = fx.remote_for(j1).accept_invite(&inv.code).await;
    assert!(
        matches!(again, Err(RemoteError::InvalidInvitation { .. })),
        "{again:?}"
    );
    refusals.insert(raw_join(&url, j3, &inv.code).await);
    assert_eq!(refusals.len(), 1, "used up: {refusals:#?}");
    let listed = o.list_invites(ws).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].uses, listed[0].state), (2, InviteState::UsedUp));
    assert!(!serde_json::to_string(&listed).unwrap().contains(&inv.code));

    // Expired (time moved by editing the row, as the server's clock would).
    let exp = o
        .create_invite(ws, InviteOptions::new(MemberRole::Reader))
        .await
        .unwrap();
    su.execute(
        "update public.workspace_invites set expires_at = now() - interval '1 second' \
         where id = $1::text::uuid",
        &[&exp.invite_id.to_string()],
    )
    .await
    .unwrap();
    refusals.insert(raw_join(&url, j3, &exp.code).await);
    assert_eq!(refusals.len(), 1, "expired: {refusals:#?}");

    // Revoked, by code and by id.
    let by_code = o
        .create_invite(ws, InviteOptions::new(MemberRole::Reader))
        .await
        .unwrap();
    let by_id = o
        .create_invite(ws, InviteOptions::new(MemberRole::Reader))
        .await
        .unwrap();
    o.revoke_invite(InviteRef::Code(by_code.code.clone()))
        .await
        .unwrap();
    o.revoke_invite(InviteRef::Id(by_id.invite_id))
        .await
        .unwrap();
    refusals.insert(raw_join(&url, j3, &by_code.code).await);
    refusals.insert(raw_join(&url, j3, &by_id.code).await);
    assert_eq!(refusals.len(), 1, "revoked: {refusals:#?}");
    let states: Vec<InviteState> = o
        .list_invites(ws)
        .await
        .unwrap()
        .iter()
        .map(|i| i.state)
        .collect();
    assert!(states.contains(&InviteState::Revoked) && states.contains(&InviteState::Expired));
    // Nobody else can revoke (or learn of) an invitation.
    let live = o
        .create_invite(ws, InviteOptions::new(MemberRole::Reader))
        .await
        .unwrap();
    let e = fx
        .remote_for(Uuid::new_v4())
        .revoke_invite(InviteRef::Id(live.invite_id))
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::InvalidInvitation { .. }), "{e:?}");
    let e = fx
        .remote_for(reader)
        .revoke_invite(InviteRef::Code(live.code.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::InvalidInvitation { .. }), "{e:?}");

    // Escalation: a reader invites nobody, a writer no owner.
    let r = fx.remote_for(reader);
    for role in [MemberRole::Reader, MemberRole::Writer, MemberRole::Owner] {
        let e = r
            .create_invite(ws, InviteOptions::new(role))
            .await
            .unwrap_err();
        assert!(matches!(e, RemoteError::Forbidden { .. }), "{role}: {e:?}");
    }
    let w = fx.remote_for(writer);
    let e = w
        .create_invite(ws, InviteOptions::new(MemberRole::Owner))
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::Forbidden { .. }), "{e:?}");
    let e = r.list_invites(ws).await.unwrap_err();
    assert!(matches!(e, RemoteError::Forbidden { .. }), "{e:?}");
    // A writer's invitation grants writer... until the writer is demoted:
    // a reader's invitation cannot grant writer.
    let wi = w
        .create_invite(ws, InviteOptions::new(MemberRole::Writer).with_max_uses(5))
        .await
        .unwrap();
    assert_eq!(
        w.list_invites(ws).await.unwrap().len(),
        1,
        "a writer sees its own"
    );
    let j4 = Uuid::new_v4();
    assert_eq!(
        fx.remote_for(j4)
            .accept_invite(&wi.code)
            .await
            .unwrap()
            .role,
        MemberRole::Writer
    );
    o.set_role(ws, writer, MemberRole::Reader).await.unwrap();
    refusals.insert(raw_join(&url, Uuid::new_v4(), &wi.code).await);
    assert_eq!(refusals.len(), 1, "escalation: {refusals:#?}");
    // The one answer: a 400 naming no workspace and no invitation.
    let (status, body) = refusals.iter().next().unwrap().clone();
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["hint"], "supamerge:invalid_invitation", "{body}");
    assert!(
        !body.contains(&ws.to_string()) && !body.contains("Secret"),
        "{body}"
    );
    let typed = fx
        .remote_for(Uuid::new_v4())
        .accept_invite(&random_code())
        .await;
    assert!(
        matches!(typed, Err(RemoteError::InvalidInvitation { .. })),
        "{typed:?}"
    );

    // Invitations need a user; anon gets nothing.
    let anon = SupabaseRemote::builder(url.clone(), ANON_KEY)
        .build()
        .unwrap();
    let e = anon.accept_invite(&live.code).await.unwrap_err();
    assert!(matches!(e, RemoteError::Unauthenticated { .. }), "{e:?}");
}

/// Two users join with the last use of a code at the same moment: the
/// second waits for the first (the workspace-row lock) and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_joins_race_for_the_last_use() {
    let fx = SupabaseFixture::start().await;
    let owner = Uuid::new_v4();
    let ws = fx.workspace(owner, &[]).await;
    let inv = fx
        .remote_for(owner)
        .create_invite(ws, InviteOptions::new(MemberRole::Writer))
        .await
        .unwrap();
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let call = format!("select supamerge_accept_invite('{}')", inv.code);
    let (waited, second) = overlapping(&fx.db, (x, call.clone()), (y, call)).await;
    assert!(waited, "the second join did not wait for the first");
    let refused = second.expect_err("one use, two joins");
    assert!(refused.contains("invalid invitation code"), "{refused}");
    let members: Vec<Uuid> = fx
        .remote_for(owner)
        .members(ws)
        .await
        .unwrap()
        .iter()
        .map(|m| m.user_id)
        .collect();
    assert!(members.contains(&x) && !members.contains(&y), "{members:?}");
    let listed = fx.remote_for(owner).list_invites(ws).await.unwrap();
    assert_eq!(listed[0].uses, 1);
}

/// The real engine of a removed member: the pass succeeds for the
/// workspaces it still belongs to; the one it was removed from is reported
/// (typed, in the report and the status), its unpushed changes move to the
/// dead letters with that reason and stay in the replica's documents; the
/// next pass does not fail either, and after being added back the member
/// syncs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_members_engine_reports_it_and_loses_nothing() {
    use std::sync::Arc;
    use supamerge::{Collection, Replica, SyncEngine, SyncState};
    let fx = SupabaseFixture::start().await;
    let (owner, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let gone = fx.workspace(owner, &[bob]).await;
    let kept = fx.workspace(owner, &[bob]).await;
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("bob")).unwrap();
    let notes = Collection::new("notes").unwrap();
    let remote: Arc<dyn Remote> = Arc::new(fx.remote_for(bob));
    // Passes only when asked (no nudges): the reports are compared.
    let engine = SyncEngine::builder(replica.clone(), remote)
        .with_interval(None)
        .with_live_updates(false)
        .with_sync_on_start(false)
        .with_debounce(Duration::from_secs(3600))
        .spawn();
    let doc = replica
        .create_json(gone, &notes, &serde_json::json!({"title": "shared"}))
        .unwrap();
    let first = engine.sync_now().await.expect("a member syncs");
    assert_eq!(first.pushed, 1);
    assert!(first.not_a_member.is_empty());

    fx.remote_for(owner).remove_member(gone, bob).await.unwrap();
    replica
        .patch_json(&doc, &serde_json::json!({"title": "written after removal"}))
        .unwrap();
    let other = replica
        .create_json(kept, &notes, &serde_json::json!({"title": "still shared"}))
        .unwrap();
    let report = engine.sync_now().await.expect("the pass itself succeeds");
    assert_eq!(report.not_a_member, vec![gone]);
    assert_eq!(report.pushed, 1, "the other workspace's change went out");
    assert_eq!(report.dead_lettered, 1);
    let dead = replica.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].entry.doc_id, doc);
    assert!(
        dead[0]
            .reason
            .contains(&format!("no longer a member of workspace {gone}")),
        "{}",
        dead[0].reason
    );
    assert_eq!(replica.pending(), 0);
    assert_eq!(
        replica.get_json(&doc).unwrap()["title"],
        "written after removal",
        "the edit stays in the replica"
    );
    let status = engine.status().borrow().clone();
    assert_eq!(status.state, SyncState::Idle);
    assert_eq!(status.not_a_member, vec![gone]);
    assert_eq!(status.dead_letters, 1);
    // The next pass is not an error either, and changes nothing.
    let again = engine.sync_now().await.expect("still no error");
    assert_eq!(again.not_a_member, vec![gone]);
    assert_eq!(replica.dead_letters().unwrap().len(), 1);
    // The owner sees the other workspace's change, not the refused one.
    let o = fx.remote_for(owner);
    let page = o.pull(pull_req(kept)).await.unwrap();
    assert_eq!(page.changes.len(), 1);
    assert_eq!(page.changes[0].change.doc_id, other);
    assert_eq!(o.pull(pull_req(gone)).await.unwrap().changes.len(), 1);
    // Added back: syncing again, nothing reported.
    WorkspaceAdmin::add_member(&o, gone, bob, MemberRole::Writer)
        .await
        .unwrap();
    let back = engine.sync_now().await.unwrap();
    assert!(back.not_a_member.is_empty());
    assert!(engine.status().borrow().not_a_member.is_empty());
    engine.shutdown().await;
}

/// A workspace holds at most 1000 usable invitations; revoking makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usable_invitations_are_bounded() {
    let fx = SupabaseFixture::start().await;
    let owner = Uuid::new_v4();
    let ws = fx.workspace(owner, &[]).await;
    let o = fx.remote_for(owner);
    let first = o
        .create_invite(ws, InviteOptions::new(MemberRole::Reader))
        .await
        .unwrap();
    fx.db
        .superuser()
        .await
        .execute(
            "insert into public.workspace_invites (workspace_id, code_sha256, role, expires_at, max_uses) \
             select $1::text::uuid, sha256(convert_to(g::text || $1, 'UTF8')), 'reader', \
                    now() + interval '1 day', 1 from generate_series(1, 999) g",
            &[&ws.to_string()],
        )
        .await
        .unwrap();
    let e = o
        .create_invite(ws, InviteOptions::new(MemberRole::Reader))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RemoteError::BadRequest { message, .. } if message.contains("1000 usable")),
        "{e:?}"
    );
    o.revoke_invite(InviteRef::Id(first.invite_id))
        .await
        .unwrap();
    o.create_invite(ws, InviteOptions::new(MemberRole::Reader))
        .await
        .expect("room again");
}
