//! Live updates of the embedded hub (`LocalHub::live`): a push nudges the
//! workspace's subscriptions and the nudge leads a pull to the change;
//! nudges coalesce; presence is shared and withdrawn on drop. The
//! Supabase path (gateway + PostgreSQL + Realtime protocol) is in
//! `tests/realtime.rs`; the official client in `tests/realtime_js.rs`.

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use supamerge::{
    ChannelState, LiveUpdates, LocalHub, NudgeKind, Remote, Replica, SyncConfig, WorkspaceId,
};
use support::sync_util::{pass, tasks};

/// Waits for a future, failing the test after a generous guard instead of
/// hanging (a guard against a hang, not a timing assertion).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

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
