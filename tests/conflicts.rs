//! Conflicts: last-writer-wins by hybrid logical clock under skewed clocks,
//! the conflicts list, `resolve` / `keep_local` / `keep_remote`, typed errors,
//! and the `Conflict` event on pull. See `docs/conflicts.md`.

use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ScalarValue};
use serde_json::{json, Value as Json};
use supamerge::{
    Collection, DocId, EntityError, Error, ManualClock, RemoteChange, Replica, ReplicaEvent, Side,
    SkewedClock, SyncPort, WorkspaceId,
};

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

fn ws() -> WorkspaceId {
    WorkspaceId::from_random([7; 16])
}

fn tasks() -> Collection {
    Collection::new("tasks").unwrap()
}

struct Device {
    replica: Replica,
    _dir: tempfile::TempDir,
}

/// A replica whose clock is `base` shifted by `skew_ms`.
fn device(seed: u64, base: &ManualClock, skew_ms: i64) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::builder(dir.path())
        .with_seed(seed)
        .with_clock(Arc::new(SkewedClock::new(base.clone(), skew_ms)))
        .open()
        .unwrap();
    Device { replica, _dir: dir }
}

/// Delivers every outbox entry of `from` to `to` (the outbox stays: a
/// re-delivery is a duplicate, as a re-pull would be).
fn deliver(from: &Replica, to: &Replica) {
    let changes = from
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
    let report = to.apply_remote(changes, None).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
}

/// Every replica receives every other's changes.
fn sync_all(rs: &[&Replica]) {
    for a in rs {
        for b in rs {
            if !std::ptr::eq(*a, *b) {
                deliver(a, b);
            }
        }
    }
}

fn assert_same(rs: &[&Replica], id: &DocId) {
    let first = rs[0];
    for r in &rs[1..] {
        assert_eq!(first.heads(id).unwrap(), r.heads(id).unwrap());
        assert_eq!(first.get_json(id).unwrap(), r.get_json(id).unwrap());
        assert_eq!(first.conflicts(id).unwrap(), r.conflicts(id).unwrap());
    }
}

fn entity_err(r: Result<impl std::fmt::Debug, Error>) -> EntityError {
    match r {
        Err(Error::Entity(e)) => e,
        other => panic!("expected an entity error, got {other:?}"),
    }
}

/// Two devices, `b` one hour behind; `a` created `{"title": "draft", ...}`
/// at T0 and both have it.
fn pair(extra: Json) -> (ManualClock, Device, Device, DocId) {
    let base = ManualClock::new(T0);
    let a = device(1, &base, 0);
    let b = device(2, &base, -HOUR);
    let mut v = json!({"title": "draft"});
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    let id = a.replica.create_json(ws(), &tasks(), &v).unwrap();
    deliver(&a.replica, &b.replica);
    (base, a, b, id)
}

#[test]
fn skewed_clocks_pick_the_same_winner_everywhere_and_resolve_converges() {
    let (base, a, b, id) = pair(json!({}));
    let (a, b) = (&a.replica, &b.replica);
    // Both offline. A edits at T0+1s (its clock is right): ts T0+1000.
    base.set(T0 + 1_000);
    a.patch_json(&id, &json!({"title": "from A"})).unwrap();
    // B edits four seconds later in real time, but its clock shows an hour
    // earlier: its HLC timestamp is 1 + the creation's, T0+1.
    base.set(T0 + 5_000);
    b.patch_json(&id, &json!({"title": "from B"})).unwrap();
    assert_eq!(b.history(&id).unwrap()[1].timestamp, T0 + 1);
    sync_all(&[a, b]);

    // A's write has the larger timestamp: it wins on both.
    for r in [a, b] {
        assert_eq!(r.get_json(&id).unwrap()["title"], "from A");
    }
    let ca = a.conflicts(&id).unwrap();
    assert_eq!(ca, b.conflicts(&id).unwrap());
    assert_eq!(ca.len(), 1);
    assert_eq!(ca[0].path, "/title");
    let values: Vec<(&Json, i64)> = ca[0]
        .candidates
        .iter()
        .map(|c| (&c.value, c.timestamp))
        .collect();
    assert_eq!(
        values,
        [(&json!("from B"), T0 + 1), (&json!("from A"), T0 + 1_000)]
    );
    assert_eq!(ca[0].candidates[ca[0].winner].value, "from A");
    assert_eq!(ca[0].candidates[1].actor, a.actor().to_hex_string());

    // B picks a third value; it has seen both, so it replaces both.
    let hash = b.resolve(&id, "/title", &json!("merged")).unwrap();
    assert!(b.conflicts(&id).unwrap().is_empty());
    assert!(b
        .peek(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .any(|e| e.hash == hash));
    // Its timestamp is after both candidates although B's clock is behind.
    let last = b.history(&id).unwrap().pop().unwrap();
    assert_eq!(last.timestamp, T0 + 1_001);
    sync_all(&[a, b]);
    for r in [a, b] {
        assert!(r.conflicts(&id).unwrap().is_empty());
        assert_eq!(r.get_json(&id).unwrap()["title"], "merged");
    }
    assert_same(&[a, b], &id);
}

#[test]
fn a_write_that_has_seen_another_wins_even_with_a_clock_an_hour_behind() {
    let (base, a, b, id) = pair(json!({}));
    let (a, b) = (&a.replica, &b.replica);
    base.set(T0 + 60_000);
    a.patch_json(&id, &json!({"title": "A, a minute later"}))
        .unwrap();
    deliver(a, b);
    base.set(T0 + 61_000);
    // B saw A's write; its wall clock says T0 - 59 min.
    b.patch_json(&id, &json!({"title": "B, after seeing A"}))
        .unwrap();
    let hist = b.history(&id).unwrap();
    assert_eq!(hist[2].timestamp, T0 + 60_001, "{hist:?}");
    sync_all(&[a, b]);
    for r in [a, b] {
        assert_eq!(r.get_json(&id).unwrap()["title"], "B, after seeing A");
        assert!(
            r.conflicts(&id).unwrap().is_empty(),
            "causal, not a conflict"
        );
    }
}

/// A and B write `title` concurrently, and both have both writes.
fn conflicted() -> (ManualClock, Device, Device, DocId) {
    let (base, a, b, id) = pair(json!({}));
    base.set(T0 + 1_000);
    a.replica
        .patch_json(&id, &json!({"title": "from A"}))
        .unwrap();
    b.replica
        .patch_json(&id, &json!({"title": "from B"}))
        .unwrap();
    sync_all(&[&a.replica, &b.replica]);
    assert_eq!(a.replica.conflicts(&id).unwrap().len(), 1);
    (base, a, b, id)
}

#[test]
fn keep_local_and_keep_remote_pick_by_writer() {
    // Same wall clock, but B's HLC timestamp is the lower (its clock is an
    // hour behind): A's value wins, and keep_remote on A picks B's anyway.
    let (_, a, b, id) = conflicted();
    let (a, b) = (&a.replica, &b.replica);
    assert_eq!(a.get_json(&id).unwrap()["title"], "from A");
    a.keep_remote(&id, "/title").unwrap();
    assert_eq!(a.get_json(&id).unwrap()["title"], "from B");
    assert!(a.conflicts(&id).unwrap().is_empty());
    sync_all(&[a, b]);
    assert_eq!(b.get_json(&id).unwrap()["title"], "from B");
    assert_same(&[a, b], &id);

    let (_, a, b, id) = conflicted();
    let (a, b) = (&a.replica, &b.replica);
    b.keep_local(&id, "/title").unwrap();
    sync_all(&[a, b]);
    for r in [a, b] {
        assert_eq!(r.get_json(&id).unwrap()["title"], "from B");
        assert!(r.conflicts(&id).unwrap().is_empty());
    }
}

#[test]
fn keep_local_knows_this_directorys_earlier_actors_after_reopen() {
    let base = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let open = |seed| {
        Replica::builder(dir.path())
            .with_seed(seed)
            .with_clock(Arc::new(base.clone()))
            .open()
            .unwrap()
    };
    let b = device(2, &base, 0);
    let (id, first_actor) = {
        let a = open(1);
        let id = a.create_json(ws(), &tasks(), &json!({"n": 0})).unwrap();
        deliver(&a, &b.replica);
        base.set(T0 + 10);
        a.patch_json(&id, &json!({"n": 1})).unwrap();
        b.replica.patch_json(&id, &json!({"n": 2})).unwrap();
        deliver(&b.replica, &a);
        (id, a.actor().clone())
    };
    let a = open(99);
    assert_ne!(*a.actor(), first_actor, "a fresh actor per open");
    a.keep_local(&id, "/n").unwrap();
    assert_eq!(a.get_json(&id).unwrap()["n"], 1);
}

#[test]
fn no_local_or_remote_candidate_is_a_typed_error() {
    // B and C conflict; A only watches.
    let base = ManualClock::new(T0);
    let (a, b, c) = (
        device(1, &base, 0),
        device(2, &base, 0),
        device(3, &base, 0),
    );
    let (a, b, c) = (&a.replica, &b.replica, &c.replica);
    let id = a.create_json(ws(), &tasks(), &json!({"v": 0})).unwrap();
    sync_all(&[a, b, c]);
    base.set(T0 + 5);
    b.patch_json(&id, &json!({"v": "b"})).unwrap();
    c.patch_json(&id, &json!({"v": "c"})).unwrap();
    sync_all(&[a, b, c]);
    let pending = a.pending();
    assert!(matches!(
        entity_err(a.keep_local(&id, "/v")),
        EntityError::NoCandidate {
            side: Side::Local,
            ..
        }
    ));
    assert_eq!(a.pending(), pending, "nothing committed");
    // keep_remote on A: the LWW winner among B and C.
    let winner = a.conflicts(&id).unwrap()[0].clone();
    a.keep_remote(&id, "/v").unwrap();
    assert_eq!(
        a.get_json(&id).unwrap()["v"],
        winner.candidates[winner.winner].value
    );

    // Three candidates, A's the overall winner: keep_remote on A takes the
    // LWW winner among the other two (C's, written later than B's).
    base.set(T0 + 1_000);
    b.patch_json(&id, &json!({"v": "b2"})).unwrap();
    base.set(T0 + 2_000);
    c.patch_json(&id, &json!({"v": "c2"})).unwrap();
    base.set(T0 + 3_000);
    a.patch_json(&id, &json!({"v": "a2"})).unwrap();
    sync_all(&[a, b, c]);
    // b2 and c2 did not see A's resolution (a2 replaced it): three candidates.
    assert_eq!(a.conflicts(&id).unwrap()[0].candidates.len(), 3);
    assert_eq!(a.get_json(&id).unwrap()["v"], "a2");
    a.keep_remote(&id, "/v").unwrap();
    assert_eq!(a.get_json(&id).unwrap()["v"], "c2");
    b.keep_local(&id, "/v").unwrap();
    assert_eq!(b.get_json(&id).unwrap()["v"], "b2");
}

#[test]
fn nested_maps_and_list_elements() {
    let (base, a, b, id) = pair(json!({"address": {"city": "Lyon"}, "tags": ["x", "y", "z"]}));
    let (a, b) = (&a.replica, &b.replica);
    base.set(T0 + 100);
    for (r, city, tag) in [(a, "Paris", "from A"), (b, "Rome", "from B")] {
        r.patch_json(&id, &json!({"address": {"city": city}}))
            .unwrap();
        r.transact(&id, |tx, data| {
            let (_, tags) = tx.get(data, "tags")?.unwrap();
            tx.put(&tags, 1, tag)
        })
        .unwrap();
    }
    sync_all(&[a, b]);
    let paths: Vec<String> = a
        .conflicts(&id)
        .unwrap()
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(paths, ["/address/city", "/tags/1"]);
    assert_same(&[a, b], &id);

    b.resolve(&id, "/tags/1", &json!({"both": ["from A", "from B"]}))
        .unwrap();
    a.keep_local(&id, "/address/city").unwrap();
    sync_all(&[a, b]);
    for r in [a, b] {
        assert!(r.conflicts(&id).unwrap().is_empty());
        assert_eq!(
            r.get_json(&id).unwrap(),
            json!({"title": "draft", "address": {"city": "Paris"},
                   "tags": ["x", {"both": ["from A", "from B"]}, "z"]})
        );
    }
    assert_same(&[a, b], &id);
}

#[test]
fn resolving_to_an_existing_value_is_still_a_new_write() {
    // Automerge turns a put of its own winner's value into a deletion of the
    // other values, keeping the old write. resolve must make a new write
    // (fresh timestamp, in this change), whichever candidate it repeats.
    for value in ["from A", "from B"] {
        let (_, a, b, id) = conflicted();
        let (a, b) = (&a.replica, &b.replica);
        let hash = a.resolve(&id, "/title", &json!(value)).unwrap();
        let writer = |r: &Replica| {
            r.with_doc(&id, |d| {
                let clock = supamerge::raw::EffectiveClock::new();
                let view = supamerge::raw::LwwView::new(d, &clock);
                let data = supamerge::raw::data_obj(view).unwrap();
                let all = d.get_all(&data, "title").unwrap();
                assert_eq!(all.len(), 1);
                view.stamp_of(&all[0].1).unwrap()
            })
            .unwrap()
        };
        let (stamp, change) = writer(a);
        assert_eq!(change, hash, "the surviving value is the resolution's own");
        assert_eq!(stamp.timestamp, T0 + 1_001);
        sync_all(&[a, b]);
        assert_eq!(writer(b).1, hash);
        assert_eq!(b.get_json(&id).unwrap()["title"], value);
    }
}

#[test]
fn text_and_counter_candidates_keep_their_type() {
    let (base, a, b, id) = pair(json!({}));
    let (a, b) = (&a.replica, &b.replica);
    base.set(T0 + 100);
    for (r, s, n) in [(a, "text A", 1), (b, "text B", 2)] {
        r.transact(&id, |tx, data| {
            let t = tx.put_object(data, "body", ObjType::Text)?;
            tx.splice_text(&t, 0, 0, s)?;
            tx.put(data, "likes", ScalarValue::counter(n))
        })
        .unwrap();
    }
    sync_all(&[a, b]);
    assert_eq!(a.conflicts(&id).unwrap().len(), 2);
    a.keep_remote(&id, "/body").unwrap();
    a.resolve(&id, "/likes", &json!(10)).unwrap();
    sync_all(&[a, b]);
    for r in [a, b] {
        assert_eq!(r.get_json(&id).unwrap()["body"], "text B");
        assert!(r.conflicts(&id).unwrap().is_empty());
        // still collaborative text and a counter
        r.transact(&id, |tx, data| {
            let (v, t) = tx.get(data, "body")?.unwrap();
            assert!(matches!(v, automerge::Value::Object(ObjType::Text)));
            tx.splice_text(&t, 0, 0, ">")?;
            tx.increment(data, "likes", 1)
        })
        .unwrap();
    }
    sync_all(&[a, b]);
    for r in [a, b] {
        assert_eq!(
            r.get_json(&id).unwrap(),
            json!({"title": "draft", "body": ">>text B", "likes": 12})
        );
    }
}

#[test]
fn bad_paths_and_unconflicted_fields_are_typed_errors() {
    let (_, a, _b, id) = pair(json!({"tags": ["x"], "m": {"k": 1}}));
    let a = &a.replica;
    let pending = a.pending();
    for path in ["", "title", "/a~2"] {
        assert!(
            matches!(
                entity_err(a.resolve(&id, path, &json!(1))),
                EntityError::InvalidPath { .. }
            ),
            "{path:?}"
        );
    }
    for path in [
        "/nope", "/tags/1", "/tags/x", "/tags/01", "/tags/-", "/title/x", "/m/k/z", "/m/nope",
    ] {
        assert!(
            matches!(
                entity_err(a.resolve(&id, path, &json!(1))),
                EntityError::NoSuchPath { .. }
            ),
            "{path:?}"
        );
    }
    for path in ["/title", "/tags/0", "/m/k", "/m"] {
        assert!(
            matches!(
                entity_err(a.resolve(&id, path, &json!(1))),
                EntityError::NotConflicted { .. }
            ),
            "{path:?}"
        );
        assert!(matches!(
            entity_err(a.keep_local(&id, path)),
            EntityError::NotConflicted { .. }
        ));
    }
    assert!(matches!(
        entity_err(a.resolve(&DocId::new_v7(1, [1; 10]), "/title", &json!(1))),
        EntityError::NotFound { .. }
    ));
    assert_eq!(a.pending(), pending, "nothing committed");
}

#[test]
fn conflict_event_fires_when_a_pull_introduces_or_changes_a_conflict() {
    let base = ManualClock::new(T0);
    let (a, b, c) = (
        device(1, &base, 0),
        device(2, &base, 0),
        device(3, &base, 0),
    );
    let (a, b, c) = (&a.replica, &b.replica, &c.replica);
    let id = a
        .create_json(ws(), &tasks(), &json!({"v": 0, "w": 0}))
        .unwrap();
    let mut events = b.subscribe();
    let conflict_events = |rx: &mut tokio::sync::broadcast::Receiver<ReplicaEvent>| {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let ReplicaEvent::Conflict { id, conflicts } = e {
                out.push((id, conflicts));
            }
        }
        out
    };
    sync_all(&[a, b, c]);
    assert!(conflict_events(&mut events).is_empty(), "no conflict yet");

    base.set(T0 + 10);
    a.patch_json(&id, &json!({"v": "a"})).unwrap();
    b.patch_json(&id, &json!({"v": "b"})).unwrap();
    deliver(a, b);
    let got = conflict_events(&mut events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, id);
    assert_eq!(got[0].1, b.conflicts(&id).unwrap());
    assert_eq!(got[0].1[0].path, "/v");

    // An unrelated remote edit leaves the conflict as it was: no event.
    a.patch_json(&id, &json!({"w": 1})).unwrap();
    deliver(a, b);
    assert!(conflict_events(&mut events).is_empty());
    assert_eq!(b.get_json(&id).unwrap()["w"], 1);

    // A third concurrent value changes the conflict: an event again.
    c.patch_json(&id, &json!({"v": "c"})).unwrap();
    deliver(c, b);
    let got = conflict_events(&mut events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1[0].candidates.len(), 3);

    // Local writes (the resolution) never raise it.
    b.keep_local(&id, "/v").unwrap();
    assert!(conflict_events(&mut events).is_empty());
}

#[test]
fn edit_concurrent_with_delete_stays_deleted_and_keeps_the_edit() {
    let (base, a, b, id) = pair(json!({}));
    let (a, b) = (&a.replica, &b.replica);
    base.set(T0 + 100);
    a.patch_json(&id, &json!({"title": "edited"})).unwrap();
    b.delete(&id).unwrap();
    sync_all(&[a, b]);
    for r in [a, b] {
        assert!(matches!(
            entity_err(r.get_json(&id)),
            EntityError::Deleted { .. }
        ));
        assert!(r.info(&id).unwrap().deleted);
        assert!(r.list(&tasks()).unwrap().is_empty());
        // the edit is in the document, hidden behind the tombstone
        let title = r
            .with_doc(&id, |d| {
                let clock = supamerge::raw::EffectiveClock::new();
                supamerge::raw::data_json(supamerge::raw::LwwView::new(d, &clock))["title"].clone()
            })
            .unwrap();
        assert_eq!(title, "edited");
        assert!(r.conflicts(&id).unwrap().is_empty(), "different fields");
    }
    assert_eq!(a.heads(&id).unwrap(), b.heads(&id).unwrap());
}

#[test]
fn concurrent_list_inserts_are_both_kept_in_the_same_order() {
    let (base, a, b, id) = pair(json!({"tags": ["x"]}));
    let (a, b) = (&a.replica, &b.replica);
    base.set(T0 + 100);
    for (r, tag) in [(a, "from A"), (b, "from B")] {
        r.transact(&id, |tx, data| {
            let (_, tags) = tx.get(data, "tags")?.unwrap();
            tx.insert(&tags, 1, tag)
        })
        .unwrap();
    }
    sync_all(&[a, b]);
    let tags = a.get_json(&id).unwrap()["tags"].clone();
    // Both inserts have the same Lamport counter; RGA puts the one with the
    // larger operation id (here: the larger actor) next to the reference
    // element. Clocks play no part.
    let (first, second) = if a.actor() > b.actor() {
        ("from A", "from B")
    } else {
        ("from B", "from A")
    };
    assert_eq!(tags, json!(["x", first, second]));
    assert_eq!(b.get_json(&id).unwrap()["tags"], tags);
    assert!(a.conflicts(&id).unwrap().is_empty());
}

#[test]
fn a_field_removed_on_one_replica_and_written_on_another_keeps_the_write() {
    let (base, a, b, id) = pair(json!({"note": "old"}));
    let (a, b) = (&a.replica, &b.replica);
    base.set(T0 + 100);
    a.patch_json(&id, &json!({"note": null})).unwrap();
    b.patch_json(&id, &json!({"note": "new"})).unwrap();
    sync_all(&[a, b]);
    for r in [a, b] {
        assert_eq!(r.get_json(&id).unwrap()["note"], "new");
        assert!(r.conflicts(&id).unwrap().is_empty());
    }
}
