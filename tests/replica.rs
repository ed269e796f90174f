//! Integration tests of the local replica: entities, outbox, remote apply,
//! restart, compaction, typed errors.

use std::sync::Arc;

use autosurgeon::{Hydrate, Reconcile};
use serde_json::json;
use supamerge::test_util;
use supamerge::{
    Collection, CursorRecord, DocId, DownloadedSnapshot, EntityError, Error, ManualClock,
    RemoteChange, Replica, SnapshotDigest, SyncPort, WorkspaceId,
};

#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
struct Task {
    title: String,
    done: bool,
    priority: i64,
}

fn ws() -> WorkspaceId {
    WorkspaceId::from_random([7; 16])
}

fn tasks() -> Collection {
    Collection::new("tasks").unwrap()
}

fn open(dir: &std::path::Path, seed: u64, clock: &ManualClock) -> Replica {
    Replica::builder(dir)
        .with_seed(seed)
        .with_clock(Arc::new(clock.clone()))
        .open()
        .unwrap()
}

/// Moves every outbox entry of `from` into `to` as remote changes.
fn deliver(from: &Replica, to: &Replica) -> usize {
    let entries = from.peek(usize::MAX, usize::MAX).unwrap();
    let n = entries.len();
    let changes = entries
        .into_iter()
        .map(|e| RemoteChange {
            workspace: e.workspace,
            doc_id: e.doc_id,
            collection: e.collection,
            hash: Some(e.hash),
            bytes: e.bytes,
        })
        .collect();
    let report = to.apply_remote(changes, None).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    n
}

/// A realistic wall clock (ms): change times below 10^11 are seconds.
const T0: i64 = 1_790_000_000_000;

#[test]
fn typed_crud_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let id;
    {
        let r = open(dir.path(), 1, &clock);
        let t = Task {
            title: "write tests".into(),
            done: false,
            priority: 2,
        };
        id = r.create(ws(), &tasks(), &t).unwrap();
        assert_eq!(r.get::<Task>(&id).unwrap(), t);
        let h = r.update::<Task>(&id, |t| t.done = true).unwrap();
        assert!(h.is_some());
        // nothing changed -> no change
        assert!(r.update::<Task>(&id, |_| {}).unwrap().is_none());
        assert_eq!(r.list(&tasks()).unwrap(), vec![id]);
        assert_eq!(r.pending(), 2);
    }
    let r = open(dir.path(), 2, &clock);
    assert_eq!(
        r.get::<Task>(&id).unwrap(),
        Task {
            title: "write tests".into(),
            done: true,
            priority: 2
        }
    );
    assert_eq!(r.pending(), 2, "outbox survives restart");
    assert_eq!(r.history(&id).unwrap().len(), 2);
}

#[test]
fn json_entities_and_merge_patch() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 1, &ManualClock::new(5));
    let v = json!({"title": "a", "n": 3, "f": 1.5, "ok": true, "none": null,
                   "nested": {"x": [1, "two", {"y": false}]}});
    let id = r.create_json(ws(), &tasks(), &v).unwrap();
    assert_eq!(r.get_json(&id).unwrap(), v);
    r.patch_json(
        &id,
        &json!({"title": "b", "none": null, "nested": {"z": 1}}),
    )
    .unwrap();
    assert_eq!(
        r.get_json(&id).unwrap(),
        json!({"title": "b", "n": 3, "f": 1.5, "ok": true, "nested": {"x": [1, "two", {"y": false}], "z": 1}})
    );
    // a patch that changes nothing makes no change
    assert!(r.patch_json(&id, &json!({"title": "b"})).unwrap().is_none());
    // not an object
    assert!(matches!(
        r.create_json(ws(), &tasks(), &json!([1])),
        Err(Error::Entity(EntityError::NotAnObject { .. }))
    ));
    assert!(matches!(
        r.patch_json(&id, &json!("x")),
        Err(Error::Entity(EntityError::NotAnObject { .. }))
    ));
}

#[test]
fn delete_is_a_tombstone_hidden_from_reads_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 1, &ManualClock::new(5));
    let a = r.create_json(ws(), &tasks(), &json!({"t": 1})).unwrap();
    let b = r.create_json(ws(), &tasks(), &json!({"t": 2})).unwrap();
    r.delete(&a).unwrap();
    assert!(matches!(
        r.get_json(&a),
        Err(Error::Entity(EntityError::Deleted { .. }))
    ));
    assert_eq!(r.list(&tasks()).unwrap(), vec![b]);
    assert!(r.info(&a).unwrap().deleted);
    // the tombstone replicates
    let dir2 = tempfile::tempdir().unwrap();
    let r2 = open(dir2.path(), 2, &ManualClock::new(5));
    deliver(&r, &r2);
    assert_eq!(r2.list(&tasks()).unwrap(), vec![b]);
    assert!(matches!(
        r2.get_json(&a),
        Err(Error::Entity(EntityError::Deleted { .. }))
    ));
}

#[test]
fn typed_errors_for_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 1, &ManualClock::new(5));
    let missing = DocId::new_v7(1, [9; 10]);
    assert!(matches!(
        r.get_json(&missing),
        Err(Error::Entity(EntityError::NotFound { .. }))
    ));
    let id = r.create_json(ws(), &tasks(), &json!({"title": 5})).unwrap();
    // The error names the entity, the type and the field: first the
    // mistyped `title`, then (once it is a string) the missing `done`.
    match r.get::<Task>(&id) {
        Err(Error::Entity(e @ EntityError::Hydrate { .. })) => {
            let EntityError::Hydrate {
                field, ty, id: at, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((field.as_str(), *at), ("/title", id));
            assert!(ty.ends_with("Task"), "{ty}");
            let text = e.to_string();
            assert!(
                text.contains(&id.to_string()) && text.contains("\"/title\""),
                "{text}"
            );
        }
        other => panic!("expected a hydrate error, got {other:?}"),
    }
    let done_missing = r
        .create_json(ws(), &tasks(), &json!({"title": "t"}))
        .unwrap();
    match r.update::<Task>(&done_missing, |t| t.done = true) {
        Err(Error::Entity(e @ EntityError::Hydrate { .. })) => {
            let text = e.to_string();
            assert!(text.contains("the field \"/done\" is missing"), "{text}");
            assert!(text.contains(&done_missing.to_string()), "{text}");
        }
        other => panic!("expected a hydrate error, got {other:?}"),
    }
    assert!("bad name!".parse::<Collection>().is_err());
    // a failing raw transaction stores nothing
    let before = r.pending();
    let res = r.transact(&id, |tx, _data| {
        use automerge::transaction::Transactable;
        tx.put(automerge::ObjId::Root, "x", 1)?;
        tx.splice_text(&automerge::ObjId::Root, 0, 0, "not text")
            .map(|_| ())
    });
    assert!(res.is_err());
    assert_eq!(r.pending(), before);
    assert_eq!(r.get_json(&id).unwrap(), json!({"title": 5}));
}

#[test]
fn raw_transactions_text_and_counters_replicate() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ReadDoc, ScalarValue};
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = ManualClock::new(100);
    let a = open(d1.path(), 1, &clock);
    let b = open(d2.path(), 2, &clock);
    let id = a.create_json(ws(), &tasks(), &json!({})).unwrap();
    a.transact(&id, |tx, data| {
        let text = tx.put_object(data, "body", ObjType::Text)?;
        tx.splice_text(&text, 0, 0, "hello")?;
        tx.put(data, "likes", ScalarValue::counter(0))
    })
    .unwrap();
    deliver(&a, &b);
    a.ack(
        &a.peek(100, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.hash)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    // concurrent: both splice and increment
    for (r, pos, s) in [(&a, 0, ">> "), (&b, 5, " world")] {
        r.transact(&id, |tx, data| {
            let (_, text) = tx.get(data, "body")?.unwrap();
            tx.splice_text(&text, pos, 0, s)?;
            tx.increment(data, "likes", 1)
        })
        .unwrap();
    }
    deliver(&a, &b);
    deliver(&b, &a);
    let ja = a.get_json(&id).unwrap();
    assert_eq!(ja, b.get_json(&id).unwrap());
    assert_eq!(ja, json!({"body": ">> hello world", "likes": 2}));
    assert_eq!(a.heads(&id).unwrap(), b.heads(&id).unwrap());
    a.with_doc(&id, |d| {
        assert_eq!(d.get_heads().len(), 2, "two concurrent heads")
    })
    .unwrap();
}

#[test]
fn early_arrivals_wait_on_disk_across_restart() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = ManualClock::new(100);
    let a = open(d1.path(), 1, &clock);
    let id = a.create_json(ws(), &tasks(), &json!({"v": 0})).unwrap();
    for i in 1..=3 {
        a.patch_json(&id, &json!({"v": i})).unwrap();
    }
    let mut entries = a.peek(usize::MAX, usize::MAX).unwrap();
    assert_eq!(entries.len(), 4);
    let to_rc = |e: supamerge::OutboxEntry| RemoteChange {
        workspace: e.workspace,
        doc_id: e.doc_id,
        collection: e.collection,
        hash: None,
        bytes: e.bytes,
    };
    let first = to_rc(entries.remove(0));
    {
        let b = open(d2.path(), 2, &clock);
        // deliver everything but the first: all wait
        let rep = b
            .apply_remote(entries.into_iter().map(to_rc).collect(), None)
            .unwrap();
        assert_eq!((rep.applied, rep.pending), (0, 3));
        assert_eq!(b.pending_remote(), 3);
        assert!(matches!(
            b.get_json(&id),
            Err(Error::Entity(EntityError::NotFound { .. }))
        ));
        assert!(b.list(&tasks()).unwrap().is_empty());
    }
    // restart, then the missing dependency arrives
    let b = open(d2.path(), 3, &clock);
    let rep = b.apply_remote(vec![first], None).unwrap();
    assert_eq!(rep.applied, 4);
    assert_eq!(b.pending_remote(), 0);
    assert_eq!(b.get_json(&id).unwrap(), json!({"v": 3}));
    drop(b);
    let b = open(d2.path(), 4, &clock);
    assert_eq!(b.get_json(&id).unwrap(), json!({"v": 3}));
}

#[test]
fn corrupt_and_mismatched_changes_are_rejected_rest_applies() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = ManualClock::new(100);
    let a = open(d1.path(), 1, &clock);
    let b = open(d2.path(), 2, &clock);
    let id = a.create_json(ws(), &tasks(), &json!({"v": 1})).unwrap();
    let e = a.peek(1, usize::MAX).unwrap().remove(0);
    let mut garbage = e.bytes.clone();
    garbage.truncate(garbage.len() / 2);
    let good = RemoteChange {
        workspace: e.workspace,
        doc_id: e.doc_id,
        collection: e.collection.clone(),
        hash: Some(e.hash),
        bytes: e.bytes.clone(),
    };
    let corrupt = RemoteChange {
        bytes: garbage,
        hash: None,
        ..good.clone()
    };
    let mismatch = RemoteChange {
        hash: Some(automerge::ChangeHash([0; 32])),
        ..good.clone()
    };
    let rep = b.apply_remote(vec![corrupt, mismatch, good], None).unwrap();
    assert_eq!(rep.rejected.len(), 2);
    assert!(matches!(
        rep.rejected[0],
        supamerge::ChangeError::Corrupt { index: 0, .. }
    ));
    assert!(matches!(
        rep.rejected[1],
        supamerge::ChangeError::HashMismatch { index: 1, .. }
    ));
    assert_eq!(rep.applied, 1);
    assert_eq!(b.get_json(&id).unwrap(), json!({"v": 1}));
    // re-delivery is a no-op
    let rep = b
        .apply_remote(
            vec![RemoteChange {
                workspace: e.workspace,
                doc_id: e.doc_id,
                collection: e.collection,
                hash: None,
                bytes: e.bytes,
            }],
            None,
        )
        .unwrap();
    assert_eq!((rep.applied, rep.duplicates), (0, 1));
}

#[test]
fn cursor_is_persisted_with_the_batch() {
    let d = tempfile::tempdir().unwrap();
    let r = open(d.path(), 1, &ManualClock::new(1));
    let rec = CursorRecord {
        cursor: "42".into(),
        last_sync_ms: 7,
        bootstrapped: true,
    };
    r.apply_remote(Vec::new(), Some((ws(), rec.clone())))
        .unwrap();
    drop(r);
    let r = open(d.path(), 2, &ManualClock::new(1));
    assert_eq!(r.cursor(&ws()).unwrap(), Some(rec));
}

#[test]
fn hlc_orders_causally_later_writes_after_even_with_a_clock_behind() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Realistic clocks: a time below 10^11 would be read as seconds.
    let fast = ManualClock::new(T0 + 10_000_000);
    let slow = ManualClock::new(T0); // far behind
    let a = open(d1.path(), 1, &fast);
    let b = open(d2.path(), 2, &slow);
    let id = a.create_json(ws(), &tasks(), &json!({"v": "a"})).unwrap();
    deliver(&a, &b);
    b.patch_json(&id, &json!({"v": "b"})).unwrap();
    let hist = b.history(&id).unwrap();
    assert!(hist[1].timestamp > hist[0].timestamp, "{hist:?}");
    assert_eq!(hist[1].timestamp, T0 + 10_000_001);
}

#[test]
fn concurrent_scalar_writes_resolve_by_hlc_then_actor() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = ManualClock::new(T0);
    let cb = ManualClock::new(T0);
    let a = open(d1.path(), 1, &ca);
    let b = open(d2.path(), 2, &cb);
    let id = a
        .create_json(ws(), &tasks(), &json!({"v": "base"}))
        .unwrap();
    deliver(&a, &b);
    a.ack(
        &a.peek(10, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.hash)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    ca.set(T0 + 5_000);
    cb.set(T0 + 9_000); // b writes later by the clock
    a.patch_json(&id, &json!({"v": "from a"})).unwrap();
    b.patch_json(&id, &json!({"v": "from b"})).unwrap();
    deliver(&a, &b);
    deliver(&b, &a);
    assert_eq!(a.get_json(&id).unwrap()["v"], "from b");
    assert_eq!(b.get_json(&id).unwrap()["v"], "from b");
    let ca_ = a.conflicts(&id).unwrap();
    assert_eq!(ca_, b.conflicts(&id).unwrap());
    assert_eq!(ca_.len(), 1);
    assert_eq!(ca_[0].path, "/v");
    assert_eq!(ca_[0].candidates[ca_[0].winner].value, json!("from b"));
}

#[test]
fn compaction_folds_chunks_and_keeps_everything() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1);
    let id;
    {
        let r = open(d.path(), 1, &clock);
        id = r.create_json(ws(), &tasks(), &json!({"n": 0})).unwrap();
        for i in 1..=100 {
            r.patch_json(&id, &json!({"n": i})).unwrap();
        }
        let chunks = test_util::chunks(&r, &id).unwrap();
        assert!(
            chunks.len() < 20,
            "{} chunks: compaction did not run",
            chunks.len()
        );
        assert!(chunks
            .iter()
            .any(|(_, c)| c.kind == supamerge::test_util::store_format::ChunkKind::Snapshot));
        r.compact(&id).unwrap();
        assert_eq!(test_util::chunks(&r, &id).unwrap().len(), 1);
    }
    let r = open(d.path(), 2, &clock);
    assert_eq!(r.get_json(&id).unwrap(), json!({"n": 100}));
    assert_eq!(r.history(&id).unwrap().len(), 101);
}

#[test]
fn events_announce_local_and_remote_changes() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = ManualClock::new(1);
    let a = open(d1.path(), 1, &clock);
    let b = open(d2.path(), 2, &clock);
    let mut ea = a.subscribe();
    let mut eb = b.subscribe();
    let id = a.create_json(ws(), &tasks(), &json!({})).unwrap();
    deliver(&a, &b);
    assert_eq!(
        ea.try_recv().unwrap(),
        supamerge::ReplicaEvent::DocChanged {
            id,
            origin: supamerge::Origin::Local
        }
    );
    assert_eq!(
        eb.try_recv().unwrap(),
        supamerge::ReplicaEvent::DocChanged {
            id,
            origin: supamerge::Origin::Remote
        }
    );
}

/// `apply_snapshots` stores a new document's snapshot as its snapshot chunk
/// (no replay): the entity reads back, later changes apply on top, a second
/// delivery of the same snapshot is all duplicates, and all of it survives a
/// reopen.
#[test]
fn snapshot_of_a_new_document_loads_once_and_takes_later_changes() {
    let clock = ManualClock::new(1_000);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), 1, &clock);
    let id = a
        .create_json(ws(), &tasks(), &json!({"title": "t", "n": 0}))
        .unwrap();
    for i in 1..5 {
        a.patch_json(&id, &json!({ "n": i })).unwrap();
    }
    let (snapshot, _) = a.save(&id).unwrap();
    let _ = a.ack(
        &a.peek(usize::MAX, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.hash)
            .collect::<Vec<_>>(),
    );
    let b = open(db.path(), 2, &clock);
    let snap = |bytes: Vec<u8>| {
        let doc = automerge::Automerge::load(&bytes).unwrap();
        DownloadedSnapshot {
            workspace: ws(),
            collection: tasks(),
            doc_id: id,
            replaces: Some(SnapshotDigest::of_document(&doc)),
            bytes,
        }
    };
    let report = b.apply_snapshots(vec![snap(snapshot.clone())]).unwrap();
    assert_eq!(report.applied, 5);
    assert_eq!(report.changed, vec![id]);
    assert_eq!(b.get_json(&id).unwrap(), a.get_json(&id).unwrap());
    assert_eq!(b.list(&tasks()).unwrap(), vec![id]);

    let again = b.apply_snapshots(vec![snap(snapshot)]).unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 5));

    a.patch_json(&id, &json!({"n": 99})).unwrap();
    assert_eq!(deliver(&a, &b), 1);
    assert_eq!(b.get_json(&id).unwrap(), a.get_json(&id).unwrap());
    drop(b);
    let b = open(db.path(), 2, &clock);
    assert_eq!(b.get_json(&id).unwrap(), json!({"title": "t", "n": 99}));
    assert_eq!(b.heads(&id).unwrap(), a.heads(&id).unwrap());
}

/// A value whose reconciliation always fails.
struct Refuses;

impl Reconcile for Refuses {
    type Key<'a> = autosurgeon::reconcile::NoKey;

    fn reconcile<R: autosurgeon::Reconciler>(&self, _: R) -> Result<(), R::Error> {
        Err(autosurgeon::reconcile::StaleHeads {
            expected: Vec::new(),
            found: Vec::new(),
        }
        .into())
    }
}

/// Regression: `create` reported the nil id in its errors. The error names
/// the id the entity would have had, and nothing is stored.
#[test]
fn a_failed_create_names_its_document_and_stores_nothing() {
    let d = tempfile::tempdir().unwrap();
    let r = open(d.path(), 1, &ManualClock::new(1));
    let err = r.create(ws(), &tasks(), &Refuses).unwrap_err();
    let Error::Entity(EntityError::Reconcile { id, .. }) = err else {
        panic!("expected a reconcile error, got {err:?}");
    };
    assert!(!id.as_uuid().is_nil(), "the error names the nil id");
    // A v7 id from the replica's clock, like the ids of created entities.
    assert_eq!(id.as_uuid().get_version_num(), 7);
    assert_eq!(r.pending(), 0);
    assert!(r.list(&tasks()).unwrap().is_empty());
    assert!(matches!(
        r.get_json(&id),
        Err(Error::Entity(EntityError::NotFound { .. }))
    ));
    // The next create works and gets a different id.
    let ok = r
        .create(
            ws(),
            &tasks(),
            &Task {
                title: "t".into(),
                done: false,
                priority: 1,
            },
        )
        .unwrap();
    assert_ne!(ok, id);
}

/// Regression: two identical creations in the same millisecond on one
/// replica (same actor, same content, same time) made the same change
/// hash; the outbox indexes entries by hash, so acknowledging it removed
/// one entry and left the other queued forever. The local hybrid logical
/// clock is strictly increasing: every local change gets a later stamp.
#[test]
fn identical_creations_in_one_millisecond_get_distinct_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_790_000_000_000);
    let r = open(dir.path(), 11, &clock);
    let a = r
        .create_json(ws(), &tasks(), &json!({"title": "same"}))
        .unwrap();
    let b = r
        .create_json(ws(), &tasks(), &json!({"title": "same"}))
        .unwrap();
    let (ha, hb) = (r.heads(&a).unwrap(), r.heads(&b).unwrap());
    assert_ne!(ha, hb, "two documents' creations share a change hash");
    // Edits in the same millisecond too.
    let ea = r.patch_json(&a, &json!({"title": "x"})).unwrap();
    let eb = r.patch_json(&b, &json!({"title": "x"})).unwrap();
    assert_ne!(ea, eb);
    let entries = r.peek(usize::MAX, usize::MAX).unwrap();
    assert_eq!(entries.len(), 4);
    let hashes: Vec<_> = entries.iter().map(|e| e.hash).collect();
    assert_eq!(r.ack(&hashes).unwrap(), 4);
    assert_eq!(r.pending(), 0, "every acknowledged entry left the outbox");
    // Stamps stay strictly increasing while the clock stands still, and
    // never fall below the clock.
    let times: Vec<i64> = [a, b]
        .iter()
        .flat_map(|id| r.history(id).unwrap())
        .map(|h| h.timestamp)
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), times.len(), "stamps repeat: {times:?}");
    assert!(times.iter().all(|t| *t >= 1_790_000_000_000));
}

/// Issue 14: a pulled batch whose changes are all here already (a replica's
/// own changes coming back, a re-delivered page) still loads its documents
/// into the cache; the cache keeps to its byte budget for them too.
#[test]
fn duplicate_pulls_keep_the_cache_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ws = WorkspaceId::new();
    let notes = Collection::new("notes").unwrap();
    let from = Replica::open(dir.path().join("a")).unwrap();
    for k in 0..6 {
        from.create_json(ws, &notes, &json!({ "k": k })).unwrap();
    }
    let changes: Vec<RemoteChange> = from
        .peek(usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| RemoteChange {
            workspace: e.workspace,
            doc_id: e.doc_id,
            collection: e.collection,
            hash: Some(e.hash),
            bytes: e.bytes,
        })
        .collect();
    // A budget of one byte: one document at a time.
    let to = Replica::builder(dir.path().join("b"))
        .with_cache_bytes(1)
        .open()
        .unwrap();
    to.apply_remote(changes.clone(), None).unwrap();
    assert_eq!(to.cached_docs(), 1);
    let again = to.apply_remote(changes, None).unwrap();
    assert_eq!(again.applied, 0);
    assert_eq!(
        to.cached_docs(),
        1,
        "the budget holds for a batch of duplicates"
    );
}
