//! Live updates of the embedded hub (`LocalHub::live`): a push nudges the
//! workspace's subscriptions and the nudge leads a pull to the change;
//! nudges coalesce; presence is shared and withdrawn on drop. Then the sync
//! engine on them: two engines see each other's edits without calling
//! sync, own nudges are skipped, lost nudges only delay until the poll,
//! presence through the engine. The
//! Supabase path (gateway + PostgreSQL + Realtime protocol) is in
//! `tests/realtime.rs`; the official client in `tests/realtime_js.rs`.

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

#[path = "support/live_util.rs"]
mod live_util;

use std::sync::Arc;
use std::time::Duration;

use live_util::{remote_change, within};
use serde_json::json;
use supamerge::test_util::{FaultyRemote, Op};
use supamerge::{
    ChannelState, ConnectionState, LiveUpdates, LocalHub, NudgeKind, Remote, Replica, SyncConfig,
    SyncEngine, SyncEvent, SyncHandle, SyncReport, WorkspaceId,
};
use support::sync_util::{pass, tasks};
use tokio::sync::broadcast;

fn workspace() -> WorkspaceId {
    WorkspaceId::from_random(rand::random())
}

#[tokio::test]
async fn a_push_nudges_and_the_nudge_leads_to_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LocalHub::open(dir.path().join("hub")).unwrap();
    let remote: Arc<dyn Remote> = Arc::new(hub.clone());
    let ws = workspace();
    let cfg = SyncConfig::default();
    let a = Replica::open(dir.path().join("a")).unwrap();
    let b = Replica::open(dir.path().join("b")).unwrap();

    let live = hub.live();
    let mut sub = live.subscribe(ws).unwrap();
    assert_eq!(*sub.channel().borrow(), ChannelState::Joined);
    // Every subscription starts with a resync: pull what came before it.
    assert_eq!(
        within("the first nudge", sub.next()).await.unwrap().kind,
        NudgeKind::Resync
    );
    assert!(sub.try_next().is_none());

    let id = a
        .create_json(ws, &tasks(), &json!({"title": "live", "done": false}))
        .unwrap();
    pass(&a, remote.as_ref(), &cfg, &[ws]).await.unwrap();
    let n = within("the push's nudge", sub.next()).await.unwrap();
    assert_eq!(n.workspace, ws);
    assert!(matches!(n.kind, NudgeKind::Pushed { from_seq: 1, to_seq } if to_seq >= 1));
    assert_eq!(n.docs, vec![id]);
    assert!(n.docs_complete);

    // The nudge carries no data: B learns the change by pulling.
    assert!(b.get_json(&id).is_err());
    pass(&b, remote.as_ref(), &cfg, &[ws]).await.unwrap();
    assert_eq!(b.get_json(&id).unwrap()["title"], "live");

    // A push that stores nothing new (everything already present) nudges nobody.
    pass(&a, remote.as_ref(), &cfg, &[ws]).await.unwrap();
    assert!(sub.try_next().is_none());

    // Other workspaces' pushes are not this subscription's business.
    let other = workspace();
    a.create_json(other, &tasks(), &json!({"title": "x"}))
        .unwrap();
    pass(&a, remote.as_ref(), &cfg, &[other]).await.unwrap();
    assert!(sub.try_next().is_none());
}

#[tokio::test]
async fn remotes_offer_their_live_updates() {
    let hub = LocalHub::temporary().unwrap();
    let remote: Arc<dyn Remote> = Arc::new(hub.clone());
    let faulty: Arc<dyn Remote> = Arc::new(supamerge::test_util::FaultyRemote::new(remote.clone()));
    let ws = workspace();
    let mut direct = remote
        .live_updates()
        .expect("the hub has live updates")
        .subscribe(ws)
        .unwrap();
    let mut wrapped = faulty
        .live_updates()
        .expect("a wrapper keeps them")
        .subscribe(ws)
        .unwrap();
    let _ = (direct.try_next(), wrapped.try_next());
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::open(dir.path().join("a")).unwrap();
    a.create_json(ws, &tasks(), &json!({"title": "t"})).unwrap();
    pass(&a, faulty.as_ref(), &SyncConfig::default(), &[ws])
        .await
        .unwrap();
    for sub in [&mut direct, &mut wrapped] {
        assert!(matches!(
            sub.try_next().map(|n| n.kind),
            Some(NudgeKind::Pushed { .. })
        ));
    }
}

#[tokio::test]
async fn nudges_coalesce_for_a_slow_reader() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LocalHub::open(dir.path().join("hub")).unwrap();
    let ws = workspace();
    let a = Replica::open(dir.path().join("a")).unwrap();
    let live = hub.live();
    let mut sub = live.subscribe(ws).unwrap();
    let _ = sub.try_next();
    let cfg = SyncConfig::default();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            a.create_json(ws, &tasks(), &json!({"title": format!("t{i}")}))
                .unwrap(),
        );
        pass(&a, &hub, &cfg, &[ws]).await.unwrap();
    }
    // Five pushes, one nudge covering all of them.
    let n = sub.try_next().expect("a nudge");
    assert!(matches!(n.kind, NudgeKind::Pushed { from_seq: 1, to_seq } if to_seq >= 5));
    let mut docs = n.docs.clone();
    docs.sort();
    ids.sort();
    assert_eq!(docs, ids);
    assert!(sub.try_next().is_none());
}

#[tokio::test]
async fn presence_is_shared_and_withdrawn_when_the_subscription_goes() {
    let hub = LocalHub::temporary().unwrap();
    let ws = workspace();
    let ann = hub.live_with_presence_key("ann");
    let bob = hub.live_with_presence_key("bob");
    let a = ann.subscribe(ws).unwrap();
    let b = bob.subscribe(ws).unwrap();
    let mut seen_by_bob = b.presence();

    a.track(json!({"cursor": 3})).unwrap();
    within(
        "ann's presence",
        seen_by_bob.wait_for(|p| {
            p.get("ann")
                .is_some_and(|e| e[0].meta == json!({"cursor": 3}))
        }),
    )
    .await
    .unwrap();
    a.track(json!({"cursor": 4})).unwrap();
    let now = seen_by_bob.borrow_and_update().clone();
    assert_eq!(now["ann"].len(), 1, "an update replaces: {now:?}");
    assert_eq!(now["ann"][0].meta, json!({"cursor": 4}));
    assert!(a.track(json!([1, 2])).is_err(), "presence is an object");

    a.untrack();
    assert!(!seen_by_bob.borrow_and_update().contains_key("ann"));
    a.track(json!({"cursor": 5})).unwrap();
    assert!(seen_by_bob.borrow_and_update().contains_key("ann"));
    drop(a);
    assert!(!seen_by_bob.borrow_and_update().contains_key("ann"));
}

// ----- the sync engine on the hub's live updates ---------------------------------

/// An engine on `remote` that only syncs when nudged (or asked): no poll
/// for an hour, commits pushed after 1 ms.
fn live_engine(replica: &Replica, remote: Arc<dyn Remote>, ws: WorkspaceId) -> SyncHandle {
    SyncEngine::builder(replica.clone(), remote)
        .with_workspaces([ws])
        .with_interval(Some(Duration::from_secs(3600)))
        .with_live_interval(Some(Duration::from_secs(3600)))
        .with_debounce(Duration::from_millis(1))
        .spawn()
}

/// The next pass's outcome on an engine's events.
async fn finished(events: &mut broadcast::Receiver<SyncEvent>) -> SyncReport {
    within("a pass", async {
        loop {
            match events.recv().await.expect("engine events") {
                SyncEvent::Finished(r) => return r,
                SyncEvent::Failed(e) => panic!("pass failed: {e}"),
                _ => {}
            }
        }
    })
    .await
}

#[tokio::test]
async fn two_engines_see_each_others_edits_without_calling_sync() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LocalHub::open(dir.path().join("hub")).unwrap();
    let ws = workspace();
    let a = Replica::open(dir.path().join("a")).unwrap();
    let b = Replica::open(dir.path().join("b")).unwrap();
    let ea = live_engine(&a, Arc::new(hub.clone()), ws);
    let eb = live_engine(&b, Arc::new(hub.clone()), ws);
    let (mut on_a, mut on_b) = (ea.events(), eb.events());

    let id = a
        .create_json(ws, &tasks(), &json!({"title": "from a"}))
        .unwrap();
    remote_change(&mut on_b, id).await;
    assert_eq!(b.get_json(&id).unwrap()["title"], "from a");
    b.patch_json(&id, &json!({"title": "b answers"})).unwrap();
    remote_change(&mut on_a, id).await;
    assert_eq!(a.get_json(&id).unwrap()["title"], "b answers");

    // The status says the live updates flow: the hub is always connected
    // and its channels always joined.
    let live = eb.status().borrow().live.clone().expect("live status");
    assert!(live.is_live(), "{live:?}");
    assert_eq!(live.connection, ConnectionState::Connected);
    assert_eq!(live.channels.get(&ws), Some(&ChannelState::Joined));
    let j = serde_json::to_value(&*eb.status().borrow()).unwrap();
    assert_eq!(j["live"]["connection"]["state"], "connected");
    assert_eq!(j["live"]["channels"][ws.to_string()]["state"], "joined");
    ea.shutdown().await;
    eb.shutdown().await;
}

/// Under paused time: the nudge of the engine's own push is skipped (no
/// pull follows it), another replica's push is pulled at once, and a
/// polling-only engine sees nothing until it polls.
#[tokio::test(start_paused = true)]
async fn own_nudges_are_skipped_and_foreign_ones_pull() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LocalHub::open(dir.path().join("hub")).unwrap();
    let ws = workspace();
    let a = Replica::open(dir.path().join("a")).unwrap();
    let counted = Arc::new(FaultyRemote::new(Arc::new(hub.clone())));
    let ea = SyncEngine::builder(a.clone(), counted.clone())
        .with_workspaces([ws])
        .with_interval(None)
        .with_live_interval(None)
        .with_sync_on_start(false)
        .with_debounce(Duration::from_millis(5))
        .spawn();
    let mut events = ea.events();
    // The subscription's first resync pulls once.
    finished(&mut events).await;
    assert_eq!(counted.calls(Op::Pull), 1);

    a.create_json(ws, &tasks(), &json!({"title": "mine"}))
        .unwrap();
    let r = finished(&mut events).await;
    assert_eq!(r.pushed, 1);
    assert_eq!(counted.calls(Op::Pull), 2);
    // Its push nudged the workspace; the nudge was all ours: no pull.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(counted.calls(Op::Pull), 2, "own nudge skipped");

    // Another replica pushes: the nudge leads a pull.
    let c = Replica::open(dir.path().join("c")).unwrap();
    let theirs = c
        .create_json(ws, &tasks(), &json!({"title": "theirs"}))
        .unwrap();
    pass(&c, &hub, &SyncConfig::default(), &[ws]).await.unwrap();
    let r = finished(&mut events).await;
    assert_eq!(r.applied, 1, "{r:?}");
    assert_eq!(counted.calls(Op::Pull), 3);
    assert_eq!(a.get_json(&theirs).unwrap()["title"], "theirs");

    // For contrast, with live updates off the same push waits for a poll.
    let p = Replica::open(dir.path().join("p")).unwrap();
    let ep = SyncEngine::builder(p.clone(), Arc::new(hub.clone()))
        .with_workspaces([ws])
        .with_interval(Some(Duration::from_secs(30)))
        .with_live_updates(false)
        .spawn();
    let mut on_p = ep.events();
    finished(&mut on_p).await;
    assert!(ep.status().borrow().live.is_none());
    assert!(matches!(
        ep.presence(ws),
        Err(supamerge::LiveError::NotOffered)
    ));
    let later = c
        .create_json(ws, &tasks(), &json!({"title": "later"}))
        .unwrap();
    pass(&c, &hub, &SyncConfig::default(), &[ws]).await.unwrap();
    let nudged_at = tokio::time::Instant::now();
    finished(&mut on_p).await;
    assert!(tokio::time::Instant::now() - nudged_at >= Duration::from_secs(20));
    assert_eq!(p.get_json(&later).unwrap()["title"], "later");
    ea.shutdown().await;
    ep.shutdown().await;
}

/// A nudge is never needed: with every nudge lost, the change arrives by
/// the engine's fallback poll (paused time: only the poll can bring it).
#[tokio::test(start_paused = true)]
async fn lost_nudges_only_delay_until_the_poll() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LocalHub::open(dir.path().join("hub")).unwrap();
    let ws = workspace();
    let b = Replica::open(dir.path().join("b")).unwrap();
    let lossy = Arc::new(FaultyRemote::new(Arc::new(hub.clone())));
    lossy.lose_nudges(true);
    let eb = SyncEngine::builder(b.clone(), lossy.clone())
        .with_workspaces([ws])
        .with_interval(Some(Duration::from_secs(1)))
        .with_live_interval(Some(Duration::from_secs(30)))
        .spawn();
    let mut events = eb.events();
    finished(&mut events).await;
    let a = Replica::open(dir.path().join("a")).unwrap();
    let id = a
        .create_json(ws, &tasks(), &json!({"title": "lost nudge"}))
        .unwrap();
    pass(&a, &hub, &SyncConfig::default(), &[ws]).await.unwrap();
    remote_change(&mut events, id).await;
    // Its nudge was lost: the poll brought it.
    assert!(lossy.nudges_lost() >= 1);
    assert_eq!(b.get_json(&id).unwrap()["title"], "lost nudge");
    eb.shutdown().await;
}

#[tokio::test]
async fn engines_share_presence_and_leave_on_drop() {
    let hub = LocalHub::temporary().unwrap();
    let ws = workspace();
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::open(dir.path().join("a")).unwrap();
    let b = Replica::open(dir.path().join("b")).unwrap();
    let ea = live_engine(&a, Arc::new(hub.clone()), ws);
    let eb = live_engine(&b, Arc::new(hub.clone()), ws);
    let pa = ea.presence(ws).unwrap();
    let pb = eb.presence(ws).unwrap();
    assert_ne!(pa.key(), pb.key());
    pa.publish(json!({"name": "ann", "cursor": 3})).unwrap();
    let mut seen_by_b = pb.watch();
    within(
        "ann's presence",
        seen_by_b.wait_for(|p| p.get(pa.key()).is_some_and(|e| e[0].meta["cursor"] == 3)),
    )
    .await
    .unwrap();
    assert!(pb.others().contains_key(pa.key()));
    assert!(!pa.others().contains_key(pa.key()), "others leaves me out");
    assert!(pa.publish(json!("not an object")).is_err());
    let key = pa.key().to_owned();
    drop(pa);
    within("ann leaving", seen_by_b.wait_for(|p| !p.contains_key(&key)))
        .await
        .unwrap();
    // The engine's own subscription stays: nudges still flow.
    let id = a
        .create_json(ws, &tasks(), &json!({"title": "still live"}))
        .unwrap();
    remote_change(&mut eb.events(), id).await;
    ea.shutdown().await;
    eb.shutdown().await;
}
