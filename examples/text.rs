//! Collaborative text editing: a note whose body is an Automerge text
//! object, edited concurrently on two replicas. Text merges character by
//! character (no conflict, nothing lost), unlike a plain string field, which
//! is one last-writer-wins value.
//!
//! ```sh
//! cargo run --example text
//! ```

use std::sync::Arc;

use supamerge::automerge::transaction::Transactable;
use supamerge::automerge::{ObjType, ReadDoc};
use supamerge::{AsyncReplica, Collection, DocId, LocalHub, Remote, SyncEngine, WorkspaceId};

/// Splices `insert` into the note's body at character `pos`, deleting `del`
/// characters first (what an editor sends for each keystroke or paste).
async fn splice(
    replica: &AsyncReplica,
    id: DocId,
    pos: usize,
    del: isize,
    insert: &str,
) -> supamerge::Result<()> {
    let insert = insert.to_owned();
    replica
        .run(move |r| {
            r.transact(&id, |tx, data| {
                let (_, body) = tx.get(data, "body")?.ok_or(
                    supamerge::automerge::AutomergeError::InvalidObjId("body".into()),
                )?;
                tx.splice_text(&body, pos, del, &insert)
            })
        })
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let hub_dir = dir.path().join("hub");
    let hub = tokio::task::spawn_blocking(move || LocalHub::open(hub_dir)).await??;
    let hub: Arc<dyn Remote> = Arc::new(hub);
    let alice = AsyncReplica::open(dir.path().join("alice")).await?;
    let bob = AsyncReplica::open(dir.path().join("bob")).await?;
    let ws = WorkspaceId::new();
    let notes = Collection::new("notes")?;

    let alice_sync = SyncEngine::builder(alice.replica().clone(), hub.clone()).spawn();
    let bob_sync = SyncEngine::builder(bob.replica().clone(), hub.clone()).spawn();
    bob_sync.join(ws).await?;

    // A note with a title (a plain string) and a body (a text object).
    let id = alice
        .create_json(ws, &notes, serde_json::json!({ "title": "Shopping" }))
        .await?;
    alice
        .run(move |r| {
            r.transact(&id, |tx, data| {
                let body = tx.put_object(data, "body", ObjType::Text)?;
                tx.splice_text(&body, 0, 0, "milk bread")
            })
        })
        .await?;
    alice_sync.sync_now().await?;
    bob_sync.sync_now().await?;
    println!("bob reads: {}", bob.get_json(id).await?);

    // Offline, both edit the body at the same time.
    splice(&alice, id, 4, 0, ", eggs").await?; // "milk, eggs bread"
    splice(&bob, id, 10, 0, ", butter").await?; // "milk bread, butter"
    println!(
        "alice, before syncing: {}",
        alice.get_json(id).await?["body"]
    );
    println!("bob, before syncing:   {}", bob.get_json(id).await?["body"]);

    // Back online: both edits survive, in both replicas.
    alice_sync.sync_now().await?;
    bob_sync.sync_now().await?;
    alice_sync.sync_now().await?;
    let a = alice.get_json(id).await?;
    let b = bob.get_json(id).await?;
    if a != b {
        return Err(format!("the replicas differ: {a} / {b}").into());
    }
    println!("merged: {}", a["body"]);

    // The raw document, for an editor binding (cursors, marks): the same
    // Automerge types the crate re-exports.
    let chars = alice
        .run(move |r| {
            r.with_doc(&id, |doc| {
                let data = doc.get(supamerge::automerge::ROOT, "data").ok()??.1;
                let body = doc.get(&data, "body").ok()??.1;
                Some(doc.length(&body))
            })
        })
        .await?;
    println!("body length: {} characters", chars.unwrap_or(0));
    alice_sync.shutdown().await;
    bob_sync.shutdown().await;
    Ok(())
}
