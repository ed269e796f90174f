//! The sync engine on Supabase Realtime, through the gateway and PostgreSQL
//! with the real migration: two engines see each other's edits without
//! calling sync (their poll interval is an hour: the nudge did it); lost
//! nudges only delay a change until the fallback poll; after a gateway
//! restart the engines reconnect, resync and keep converging; presence
//! between two replicas. Needs PostgreSQL (`scripts/test.sh`); fails
//! without it.
#![cfg(feature = "gateway")]

#[path = "support/pg.rs"]
mod pg;

#[path = "support/live_util.rs"]
mod live_util;

use std::sync::Arc;
use std::time::Duration;

use live_util::{remote_change, within};
use pg::{SupabaseFixture, TestDb};
use serde_json::json;
use supamerge::gateway::Gateway;
use supamerge::test_util::FaultyRemote;
use supamerge::{
    Backoff, ChannelState, Collection, ConnectionState, Remote, Replica, SyncEngine, SyncHandle,
    SyncStatus, WorkspaceId,
};
use uuid::Uuid;

fn tasks() -> Collection {
    Collection::new("tasks").unwrap()
}

/// An engine that polls once an hour: what arrives sooner came by a nudge.
fn engine(replica: &Replica, remote: Arc<dyn Remote>, ws: WorkspaceId) -> SyncHandle {
    SyncEngine::builder(replica.clone(), remote)
        .with_workspaces([ws])
        .with_interval(Some(Duration::from_secs(3600)))
        .with_live_interval(Some(Duration::from_secs(3600)))
        .with_debounce(Duration::from_millis(1))
        .with_backoff(Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .spawn()
}

async fn status_where(h: &SyncHandle, what: &str, f: impl Fn(&SyncStatus) -> bool) {
    let mut st = h.status();
    within(what, st.wait_for(|s| f(s))).await.unwrap();
}

fn live(s: &SyncStatus) -> bool {
    s.live.as_ref().is_some_and(|l| l.is_live())
}

struct Pair {
    a: Replica,
    b: Replica,
    ws: WorkspaceId,
    _dir: tempfile::TempDir,
}

async fn pair(fx_url: &SupabaseFixture) -> (Pair, Uuid, Uuid) {
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let ws = fx_url.workspace(alice, &[bob]).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::open(dir.path().join("a")).unwrap();
    let b = Replica::open(dir.path().join("b")).unwrap();
    (
        Pair {
            a,
            b,
            ws,
            _dir: dir,
        },
        alice,
        bob,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_see_each_others_edits_without_calling_sync() {
    let fx = SupabaseFixture::start().await;
    let (p, alice, bob) = pair(&fx).await;
    let ea = engine(&p.a, Arc::new(fx.remote_for(alice)), p.ws);
    let eb = engine(&p.b, Arc::new(fx.remote_for(bob)), p.ws);
    let (mut on_a, mut on_b) = (ea.events(), eb.events());
    status_where(&ea, "a's channel joined", live).await;
    status_where(&eb, "b's channel joined", live).await;
    let st = eb.status().borrow().clone();
    let l = st.live.expect("live status");
    assert_eq!(l.connection, ConnectionState::Connected);
    assert_eq!(l.channels.get(&p.ws), Some(&ChannelState::Joined));

    let id =
        p.a.create_json(p.ws, &tasks(), &json!({"title": "from alice"}))
            .unwrap();
    remote_change(&mut on_b, id).await;
    assert_eq!(p.b.get_json(&id).unwrap()["title"], "from alice");
    for i in 0..5 {
        p.b.patch_json(&id, &json!({"n": i})).unwrap();
        remote_change(&mut on_a, id).await;
    }
    within("alice to see bob's last edit", async {
        while p.a.get_json(&id).unwrap()["n"] != 4 {
            remote_change(&mut on_a, id).await;
        }
    })
    .await;
    ea.shutdown().await;
    eb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_nudges_only_delay_until_the_poll() {
    let fx = SupabaseFixture::start().await;
    let (p, alice, bob) = pair(&fx).await;
    let lossy = Arc::new(FaultyRemote::new(Arc::new(fx.remote_for(bob))));
    lossy.lose_nudges(true);
    let eb = SyncEngine::builder(p.b.clone(), lossy.clone())
        .with_workspaces([p.ws])
        .with_interval(Some(Duration::from_millis(200)))
        .with_live_interval(Some(Duration::from_millis(500)))
        .spawn();
    let mut on_b = eb.events();
    status_where(&eb, "b's channel joined", live).await;
    let ea = engine(&p.a, Arc::new(fx.remote_for(alice)), p.ws);
    let id =
        p.a.create_json(p.ws, &tasks(), &json!({"title": "nudge lost"}))
            .unwrap();
    remote_change(&mut on_b, id).await;
    // b's 200 ms poll may pull the change before the push's broadcast
    // reaches b (seen under load): wait for the nudge to be lost too.
    within("the nudge to be lost", async {
        while lossy.nudges_lost() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(p.b.get_json(&id).unwrap()["title"], "nudge lost");
    ea.shutdown().await;
    eb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_gateway_restart_engines_resync_and_keep_converging() {
    let db = TestDb::new().await;
    let gateway = db.spawn_gateway().await;
    let addr = gateway.local_addr();
    let fx_remote = |user: Uuid| -> Arc<dyn Remote> {
        Arc::new(
            supamerge::SupabaseRemote::builder(format!("http://{addr}"), pg::ANON_KEY)
                .with_access_token(pg::user_jwt(user))
                .build()
                .unwrap(),
        )
    };
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let owner = supamerge::SupabaseRemote::builder(format!("http://{addr}"), pg::ANON_KEY)
        .with_access_token(pg::user_jwt(alice))
        .build()
        .unwrap();
    let ws = owner.create_workspace("w").await.unwrap();
    owner
        .add_member(ws, bob, supamerge::MemberRole::Writer)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::open(dir.path().join("a")).unwrap();
    let b = Replica::open(dir.path().join("b")).unwrap();
    let ea = engine(&a, fx_remote(alice), ws);
    let eb = engine(&b, fx_remote(bob), ws);
    let (mut on_a, mut on_b) = (ea.events(), eb.events());
    status_where(&ea, "a live", live).await;
    status_where(&eb, "b live", live).await;
    let id = a
        .create_json(ws, &tasks(), &json!({"title": "before"}))
        .unwrap();
    remote_change(&mut on_b, id).await;

    gateway.shutdown().await.unwrap();
    status_where(&eb, "b sees the connection drop", |s| {
        s.live
            .as_ref()
            .is_some_and(|l| matches!(l.connection, ConnectionState::Disconnected { .. }))
    })
    .await;
    // Written while the gateway is down: a's push fails and backs off.
    a.patch_json(&id, &json!({"title": "while down"})).unwrap();
    let gateway = Gateway::bind(db.gateway_config().with_listen(addr))
        .await
        .unwrap()
        .spawn();
    within("b to get the edit made while down", async {
        while b.get_json(&id).unwrap()["title"] != "while down" {
            remote_change(&mut on_b, id).await;
        }
    })
    .await;
    status_where(&eb, "b live again", live).await;
    status_where(&ea, "a live again", live).await;
    // And on it goes, both ways, by nudges.
    b.patch_json(&id, &json!({"title": "after"})).unwrap();
    within("a to get b's edit", async {
        while a.get_json(&id).unwrap()["title"] != "after" {
            remote_change(&mut on_a, id).await;
        }
    })
    .await;
    ea.shutdown().await;
    eb.shutdown().await;
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_between_two_replicas_through_the_gateway() {
    let fx = SupabaseFixture::start().await;
    let (p, alice, bob) = pair(&fx).await;
    let ea = engine(&p.a, Arc::new(fx.remote_for(alice)), p.ws);
    let eb = engine(&p.b, Arc::new(fx.remote_for(bob)), p.ws);
    let pa = ea.presence(p.ws).unwrap();
    let pb = eb.presence(p.ws).unwrap();
    pa.publish(json!({"name": "alice", "cursor": {"doc": "d", "at": 42}}))
        .unwrap();
    pb.publish(json!({"name": "bob"})).unwrap();
    let mut seen_by_b = pb.watch();
    within(
        "alice's presence at bob",
        seen_by_b.wait_for(|s| {
            s.get(pa.key())
                .is_some_and(|e| e.iter().any(|e| e.meta["cursor"]["at"] == 42))
        }),
    )
    .await
    .unwrap();
    let mut seen_by_a = pa.watch();
    within(
        "bob's presence at alice",
        seen_by_a.wait_for(|s| s.get(pb.key()).is_some_and(|e| e[0].meta["name"] == "bob")),
    )
    .await
    .unwrap();
    assert!(pa.others().contains_key(pb.key()));
    assert!(!pa.others().contains_key(pa.key()));
    // Leaving: dropping alice's presence withdraws it at bob's.
    let key = pa.key().to_owned();
    drop(pa);
    within(
        "alice leaving",
        seen_by_b.wait_for(|s| !s.contains_key(&key)),
    )
    .await
    .unwrap();
    // Presence is never stored.
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
    ea.shutdown().await;
    eb.shutdown().await;
}
