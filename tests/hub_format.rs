//! LocalHub's record formats (`docs/storage.md`, "LocalHub"): a new hub
//! directory is written in format 2 (lean change records), a format-1
//! directory (written before) still opens, serves every change it holds
//! and keeps taking pushes in its own format, and a directory of an unknown
//! format is refused with a typed error and left untouched.

use std::path::Path;

use serde_json::json;
use supamerge::{
    sync_once, Collection, DocId, LocalHub, PullRequest, Remote, RemoteError, Replica, StoreError,
    SyncConfig, WorkspaceId, WIRE_VERSION,
};

fn open_hub(path: &Path) -> LocalHub {
    // sled releases a dropped handle's file lock a moment later.
    for _ in 0..200 {
        match LocalHub::open(path) {
            Ok(h) => return h,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(25)),
        }
    }
    LocalHub::open(path).expect("open hub")
}

/// Every change of `ws` on the hub, pulled page by page: (doc, collection,
/// hash) in log order.
async fn pull_all(hub: &LocalHub, ws: WorkspaceId) -> Vec<(DocId, String, String)> {
    let mut out = Vec::new();
    let mut cursor = supamerge::Cursor::default();
    loop {
        let page = hub
            .pull(PullRequest {
                v: WIRE_VERSION,
                workspace: ws,
                cursor: cursor.clone(),
                limit: 7,
                skip_snapshotted: false,
            })
            .await
            .unwrap();
        for c in &page.changes {
            // The hash handed out is the hash of the bytes handed out.
            assert_eq!(
                supamerge::automerge::Change::from_bytes(c.change.bytes.clone())
                    .unwrap()
                    .hash(),
                c.change.hash
            );
            out.push((
                c.change.doc_id,
                c.change.collection.to_string(),
                c.change.hash.to_string(),
            ));
        }
        cursor = page.next_cursor;
        if !page.has_more {
            return out;
        }
    }
}

/// A replica with two collections' worth of edits, pushed to `hub`.
async fn push_some(dir: &Path, hub: &LocalHub, ws: WorkspaceId, edits: usize) -> Replica {
    let r = Replica::open(dir).unwrap();
    let notes = Collection::new("notes").unwrap();
    let tasks = Collection::new("tasks").unwrap();
    let a = r.create_json(ws, &notes, &json!({"t": "a"})).unwrap();
    let b = r.create_json(ws, &tasks, &json!({"t": "b"})).unwrap();
    for i in 0..edits {
        r.patch_json(if i % 2 == 0 { &a } else { &b }, &json!({ "i": i }))
            .unwrap();
    }
    sync_once(&r, hub, &SyncConfig::default(), &[ws], &|_| {})
        .await
        .unwrap();
    assert_eq!(r.pending(), 0);
    r
}

/// The directory with raw sled (retrying while a dropped handle still
/// holds sled's lock).
fn raw(dir: &Path) -> sled::Db {
    for _ in 0..200 {
        if let Ok(db) = sled::open(dir) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    sled::open(dir).unwrap()
}

fn value_format_bytes(hub_dir: &Path) -> Vec<u8> {
    let db = raw(hub_dir);
    let changes = db.open_tree("changes").unwrap();
    changes.iter().map(|kv| kv.unwrap().1[0]).collect()
}

#[tokio::test]
async fn a_new_hub_writes_format_2_and_serves_what_format_1_served() {
    let dir = tempfile::tempdir().unwrap();
    let ws = WorkspaceId::new();
    // The same edits through a format-1 hub and a format-2 hub.
    let v1 = supamerge::test_util::open_hub_v1(dir.path().join("hub1")).unwrap();
    let v2 = LocalHub::open(dir.path().join("hub2")).unwrap();
    let r = push_some(&dir.path().join("r"), &v1, ws, 30).await;
    // (The replica's outbox is empty now: the same changes, pushed whole.)
    assert_eq!(push_again(&v2, ws, &r).await, 32);
    let from_v1 = pull_all(&v1, ws).await;
    let from_v2 = pull_all(&v2, ws).await;
    assert_eq!(from_v1.len(), 32);
    let sorted = |mut v: Vec<(DocId, String, String)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(from_v1.clone()), sorted(from_v2.clone()));
    assert!(from_v2.iter().any(|c| c.1 == "notes") && from_v2.iter().any(|c| c.1 == "tasks"));
    // Pushing the same again stores nothing new in either.
    for hub in [&v1, &v2] {
        let again = push_again(hub, ws, &r).await;
        assert_eq!(again, 0, "already present");
    }
    drop((v1, v2, r));
    assert!(value_format_bytes(&dir.path().join("hub1"))
        .iter()
        .all(|b| *b == 1));
    assert!(value_format_bytes(&dir.path().join("hub2"))
        .iter()
        .all(|b| *b == 2));
    // Format 2 is smaller for the same log.
    let live = |d: &str| -> u64 {
        supamerge::test_util::tree_bytes(&dir.path().join(d))
            .unwrap()
            .iter()
            .map(|t| t.2)
            .sum()
    };
    let (l1, l2) = (live("hub1"), live("hub2"));
    assert!(l2 + 32 * 30 < l1, "format 2 {l2} bytes, format 1 {l1}");
}

/// Pushes every change of `r` again (as a client that lost the answer
/// would); returns how many the hub stored.
async fn push_again(hub: &LocalHub, ws: WorkspaceId, r: &Replica) -> usize {
    let mut changes = Vec::new();
    for id in r.documents(&ws).unwrap() {
        let coll = r.info(&id).unwrap().collection;
        r.with_doc(&id, |d| {
            for c in d.get_changes(&[]) {
                changes.push(supamerge::ChangeEnvelope {
                    doc_id: id,
                    collection: coll.clone(),
                    hash: c.hash(),
                    bytes: c.raw_bytes().to_vec(),
                });
            }
        })
        .unwrap();
    }
    let answer = hub
        .push(supamerge::PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes,
        })
        .await
        .unwrap();
    answer
        .results
        .iter()
        .filter(|o| matches!(o, supamerge::PushOutcome::Stored { .. }))
        .count()
}

#[tokio::test]
async fn a_format_1_directory_opens_and_keeps_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let ws = WorkspaceId::new();
    let v1 = supamerge::test_util::open_hub_v1(&hub_dir).unwrap();
    let r = push_some(&dir.path().join("r"), &v1, ws, 10).await;
    let before = pull_all(&v1, ws).await;
    drop(v1);
    // Opened like any hub now: everything is there, with its collections.
    let hub = open_hub(&hub_dir);
    assert_eq!(pull_all(&hub, ws).await, before);
    // A new replica bootstraps from it.
    let fresh = Replica::open(dir.path().join("fresh")).unwrap();
    sync_once(&fresh, &hub, &SyncConfig::default(), &[ws], &|_| {})
        .await
        .unwrap();
    for id in r.documents(&ws).unwrap() {
        assert_eq!(fresh.get_json(&id).unwrap(), r.get_json(&id).unwrap());
    }
    // More pushes: stored in format 1, and the collection rule still holds
    // (a document is held under the collection of its first change).
    let notes = Collection::new("notes").unwrap();
    let c = r.create_json(ws, &notes, &json!({"t": "c"})).unwrap();
    sync_once(&r, &hub, &SyncConfig::default(), &[ws], &|_| {})
        .await
        .unwrap();
    let after = pull_all(&hub, ws).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after.last().unwrap().0, c);
    assert_eq!(after.last().unwrap().1, "notes");
    let mut wrong = Vec::new();
    r.with_doc(&c, |d| {
        let ch = d.get_changes(&[])[0].clone();
        wrong.push(supamerge::ChangeEnvelope {
            doc_id: c,
            collection: Collection::new("tasks").unwrap(),
            hash: ch.hash(),
            bytes: ch.raw_bytes().to_vec(),
        })
    })
    .unwrap();
    let answer = hub
        .push(supamerge::PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes: wrong,
        })
        .await
        .unwrap();
    assert!(
        !matches!(answer.results[0], supamerge::PushOutcome::Stored { .. }),
        "{:?}",
        answer.results
    );
    drop((hub, r, fresh));
    assert!(value_format_bytes(&hub_dir).iter().all(|b| *b == 1));
    // A format-2 directory is not reopened as format 1.
    let v2_dir = dir.path().join("hub2");
    drop(LocalHub::open(&v2_dir).unwrap());
    let e = loop {
        match supamerge::test_util::open_hub_v1(&v2_dir) {
            Err(RemoteError::Storage(StoreError::Locked { .. })) => {
                std::thread::sleep(std::time::Duration::from_millis(25))
            }
            other => break other.unwrap_err(),
        }
    };
    assert!(
        matches!(
            e,
            RemoteError::Storage(StoreError::UnsupportedHubFormat { found: 2, .. })
        ),
        "{e}"
    );
}

#[test]
fn a_directory_of_a_newer_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(LocalHub::open(dir.path()).unwrap());
    {
        let db = raw(dir.path());
        db.open_tree("meta")
            .unwrap()
            .insert("format", &[9u8])
            .unwrap();
        db.flush().unwrap();
    }
    let e = loop {
        match LocalHub::open(dir.path()) {
            Err(RemoteError::Storage(StoreError::Locked { .. })) => {
                std::thread::sleep(std::time::Duration::from_millis(25))
            }
            other => break other.unwrap_err(),
        }
    };
    assert!(
        matches!(
            e,
            RemoteError::Storage(StoreError::UnsupportedHubFormat {
                found: 9,
                newest: 2
            })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade supamerge"), "{e}");
    let db = raw(dir.path());
    assert_eq!(
        db.open_tree("meta")
            .unwrap()
            .get("format")
            .unwrap()
            .as_deref(),
        Some(&[9u8][..])
    );
}
