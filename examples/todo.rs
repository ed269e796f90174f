//! A live todo list on two replicas (Alice's and Bob's devices) syncing
//! through the embedded hub: typed entities (autosurgeon derives), one sync
//! engine per replica, its events, a conflict and its resolution.
//!
//! ```sh
//! cargo run --example todo
//! ```
//!
//! Everything lives in a temporary directory; `examples/todo_supabase.rs` is
//! the same app against a Supabase project (or the local gateway). Every
//! replica call goes through [`AsyncReplica`], so no sled or Automerge work
//! runs on the runtime's worker threads.

use std::sync::Arc;
use std::time::Duration;

use autosurgeon::{Hydrate, Reconcile};
use serde_json::json;
use supamerge::{
    AsyncReplica, Collection, DocId, LocalHub, Origin, Remote, SyncEngine, SyncEvent, SyncHandle,
    WorkspaceId,
};

/// One todo: an Automerge document, read and written as this struct.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
struct Todo {
    title: String,
    done: bool,
}

/// Waits (at most 30 s) for an event of `events` that `want` accepts.
async fn wait_for<T>(
    events: &mut tokio::sync::broadcast::Receiver<SyncEvent>,
    mut want: impl FnMut(&SyncEvent) -> Option<T>,
) -> Result<T, Box<dyn std::error::Error>> {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = want(&e) {
                        return Ok(t);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await?
}

/// The event a replica's engine announces when `id` arrived from the remote.
fn arrived(id: DocId) -> impl FnMut(&SyncEvent) -> Option<()> {
    move |e| match e {
        SyncEvent::DocChanged {
            id: got,
            origin: Origin::Remote,
        } if *got == id => Some(()),
        _ => None,
    }
}

/// Prints every event of an engine, prefixed with its replica's name.
fn log_events(name: &'static str, sync: &SyncHandle) {
    let mut events = sync.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            match e {
                SyncEvent::Finished(r) => println!(
                    "[{name}] sync pass: pushed {}, pulled {}",
                    r.pushed, r.pulled
                ),
                SyncEvent::DocChanged { id, origin } => {
                    println!("[{name}] {id} changed ({origin:?})")
                }
                SyncEvent::Conflict { id, conflicts } => {
                    println!("[{name}] {id} has {} conflicted field(s)", conflicts.len())
                }
                SyncEvent::Warning(w) => println!("[{name}] warning: {w}"),
                SyncEvent::Failed(e) => println!("[{name}] sync failed: {e}"),
                _ => {}
            }
        }
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let hub_dir = dir.path().join("hub");
    let hub = tokio::task::spawn_blocking(move || LocalHub::open(hub_dir)).await??;
    let hub: Arc<dyn Remote> = Arc::new(hub);

    let alice = AsyncReplica::open(dir.path().join("alice")).await?;
    let bob = AsyncReplica::open(dir.path().join("bob")).await?;
    let team = WorkspaceId::new();
    let todos = Collection::new("todos")?;

    // One engine per replica. It pushes local edits (debounced), pulls every
    // workspace its replica holds or joined, and announces what happens.
    let alice_sync = SyncEngine::builder(alice.replica().clone(), hub.clone()).spawn();
    let bob_sync = SyncEngine::builder(bob.replica().clone(), hub.clone()).spawn();
    log_events("alice", &alice_sync);
    log_events("bob", &bob_sync);
    // Bob's replica is fresh: it syncs the team's workspace once told to.
    bob_sync.join(team).await?;
    let mut bob_events = bob_sync.events();
    let mut alice_events = alice_sync.events();

    // 1. Alice adds a todo; Bob's replica receives it.
    let milk = alice
        .create(
            team,
            &todos,
            Todo {
                title: "buy milk".into(),
                done: false,
            },
        )
        .await?;
    println!("alice created {milk}");
    alice_sync.sync_now().await?; // (the engine would push it within 250 ms anyway)
    bob_sync.sync_now().await?; // (with live updates or the 30 s interval, without asking)
    wait_for(&mut bob_events, arrived(milk)).await?;
    println!("bob sees: {:?}", bob.get::<Todo>(milk).await?);

    // 2. Both rename it before seeing the other's edit: a conflict. Every
    //    replica picks the same winner (last writer by hybrid logical
    //    clock) and keeps both values readable.
    alice
        .update(milk, |t: &mut Todo| t.title = "buy oat milk".into())
        .await?;
    alice_sync.sync_now().await?;
    bob.update(milk, |t: &mut Todo| t.title = "buy milk and eggs".into())
        .await?;
    bob_sync.sync_now().await?; // pushes Bob's edit, pulls Alice's
    let conflicts = wait_for(&mut bob_events, |e| match e {
        SyncEvent::Conflict { id, conflicts } if *id == milk => Some(conflicts.clone()),
        _ => None,
    })
    .await?;
    for c in &conflicts {
        let values: Vec<String> = c.candidates.iter().map(|v| v.value.to_string()).collect();
        println!(
            "conflict on {milk} at {}: {} (winner {})",
            c.path,
            values.join(" vs "),
            c.candidates[c.winner].value
        );
    }

    // 3. Bob resolves it with a value of his choosing; Alice receives it.
    let resolution = bob
        .resolve(milk, "/title", json!("buy oat milk and eggs"))
        .await?;
    println!("bob resolved /title with change {resolution}");
    bob_sync.sync_now().await?;
    alice_sync.sync_now().await?;
    wait_for(&mut alice_events, arrived(milk)).await?;

    // 4. Alice ticks it off; Bob receives it.
    alice.update(milk, |t: &mut Todo| t.done = true).await?;
    alice_sync.sync_now().await?;
    bob_sync.sync_now().await?;
    wait_for(&mut bob_events, arrived(milk)).await?;

    let a: Todo = alice.get(milk).await?;
    let b: Todo = bob.get(milk).await?;
    let left = bob.conflicts(milk).await?.len() + alice.conflicts(milk).await?.len();
    if a != b || left != 0 {
        return Err(format!("the replicas differ: {a:?} / {b:?}, {left} conflicts left").into());
    }
    println!("both replicas agree: {a:?}");
    alice_sync.shutdown().await;
    bob_sync.shutdown().await;
    Ok(())
}
