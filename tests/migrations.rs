//! Deterministic schema migrations (DESIGN.md §4, `src/migrate.rs`):
//! replicas that migrate independently make the identical change, the hub
//! stores it once, chains build on the previous migration, a migration loses
//! to a concurrent user edit, failures are typed and change nothing.

use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ScalarValue, Value};
use serde_json::json;
use supamerge::{
    migration_actor, migration_actor_v1, Collection, DocId, Error, LocalHub, ManualClock,
    Migration, MigrationError, Origin, Replica, ReplicaEvent, SkewedClock, SyncConfig, SyncPort,
    SyncReport, WorkspaceId,
};

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

fn ws() -> WorkspaceId {
    WorkspaceId::from_random([9; 16])
}

fn tasks() -> Collection {
    Collection::new("tasks").unwrap()
}

/// v1: a default priority, and every task starts "open".
fn v1() -> Migration {
    Migration::new(tasks(), 1, |tx, data| {
        if tx.get(data, "priority")?.is_none() {
            tx.put(data, "priority", 0)?;
        }
        tx.put(data, "status", "open")
    })
}

/// v2: the single `tag` string becomes a `tags` list.
fn v2() -> Migration {
    Migration::new(tasks(), 2, |tx, data| {
        let tag = match tx.get(data, "tag")? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(t) => Some(t.to_string()),
                _ => None,
            },
            _ => None,
        };
        let tags = tx.put_object(data, "tags", ObjType::List)?;
        if let Some(t) = tag {
            tx.insert(&tags, 0, t)?;
            tx.delete(data, "tag")?;
        }
        Ok(())
    })
}

struct Node {
    replica: Replica,
    _dir: tempfile::TempDir,
}

fn node(seed: u64, clock: &ManualClock, skew: i64, migrations: Vec<Migration>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Replica::builder(dir.path())
        .with_seed(seed)
        .with_clock(Arc::new(SkewedClock::new(clock.clone(), skew)));
    for m in migrations {
        b = b.with_migration(m);
    }
    Node {
        replica: b.open().unwrap(),
        _dir: dir,
    }
}

fn no_progress(_: supamerge::SyncProgress) {}

async fn sync(r: &Replica, hub: &LocalHub) -> SyncReport {
    supamerge::sync_once(r, hub, &SyncConfig::default(), &[ws()], &no_progress)
        .await
        .unwrap()
}

/// How many times the hub stores each change hash of the workspace.
fn stored_counts(hub: &LocalHub) -> std::collections::BTreeMap<automerge::ChangeHash, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (_, h) in hub.stored_hashes(&ws()).unwrap() {
        *m.entry(h).or_insert(0) += 1;
    }
    m
}

fn last_outbox_hash(r: &Replica) -> automerge::ChangeHash {
    r.peek(usize::MAX, usize::MAX).unwrap().last().unwrap().hash
}

/// A creates a task at T0; both A and B have it.
async fn shared_task(hub: &LocalHub, a: &Replica, b: &Replica, value: serde_json::Value) -> DocId {
    let id = a.create_json(ws(), &tasks(), &value).unwrap();
    sync(a, hub).await;
    sync(b, hub).await;
    assert_eq!(b.get_json(&id).unwrap(), value);
    id
}

#[tokio::test]
async fn independent_migrations_make_one_identical_change_stored_once() {
    let hub = LocalHub::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let (a, b) = (
        node(1, &clock, 0, vec![v1()]),
        node(2, &clock, -HOUR, vec![v1()]),
    );
    let (a, b) = (&a.replica, &b.replica);
    let id = shared_task(&hub, a, b, json!({"title": "t"})).await;
    assert_eq!(a.info(&id).unwrap().schema, 0);

    // Offline, independently, on different clocks.
    clock.set(T0 + 10_000);
    assert_eq!(a.migrate(&id).unwrap(), 1);
    clock.set(T0 + 99_000);
    assert_eq!(b.migrate(&id).unwrap(), 1);
    let (ha, hb) = (last_outbox_hash(a), last_outbox_hash(b));
    assert_eq!(ha, hb, "the identical change on both replicas");
    assert_eq!(a.heads(&id).unwrap(), b.heads(&id).unwrap());
    let mig = a.history(&id).unwrap().pop().unwrap();
    assert_eq!(mig.actor, migration_actor(&tasks(), 1).to_hex_string());
    // Its time is the creation's effective timestamp plus one, on every
    // replica (not a wall clock).
    assert_eq!((mig.seq, mig.timestamp), (1, T0 + 1));

    let ra = sync(a, &hub).await;
    let rb = sync(b, &hub).await;
    sync(a, &hub).await;
    assert_eq!(ra.pushed, 1);
    assert_eq!((rb.pushed, rb.already_present), (0, 1));
    let counts = stored_counts(&hub);
    assert_eq!(counts.get(&ha), Some(&1), "stored once");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(counts.len(), 2, "creation + migration");
    for r in [a, b] {
        assert_eq!(r.pending(), 0);
        assert!(r.conflicts(&id).unwrap().is_empty());
        assert_eq!(
            r.get_json(&id).unwrap(),
            json!({"title": "t", "priority": 0, "status": "open"})
        );
        assert_eq!(r.info(&id).unwrap().schema, 1);
    }
    assert_eq!(a.heads(&id).unwrap(), b.heads(&id).unwrap());
}

#[tokio::test]
async fn a_replica_that_pulled_the_migration_commits_nothing() {
    let hub = LocalHub::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let (a, b) = (
        node(1, &clock, 0, vec![v1()]),
        node(2, &clock, 0, vec![v1()]),
    );
    let (a, b) = (&a.replica, &b.replica);
    let id = shared_task(&hub, a, b, json!({"title": "t", "priority": 3})).await;
    a.migrate(&id).unwrap();
    sync(a, &hub).await;
    sync(b, &hub).await;
    let heads = b.heads(&id).unwrap();
    let mut events = b.subscribe();
    assert_eq!(b.migrate(&id).unwrap(), 1);
    assert_eq!(b.migrate_collection(&tasks()).unwrap(), 0);
    assert_eq!(b.pending(), 0, "nothing committed");
    assert_eq!(b.heads(&id).unwrap(), heads);
    assert!(events.try_recv().is_err(), "no event");
    // the existing priority was kept (the function saw it at creation)
    assert_eq!(b.get_json(&id).unwrap()["priority"], 3);
    // idempotent on A too
    assert_eq!(a.migrate_collection(&tasks()).unwrap(), 0);
}

#[tokio::test]
async fn migrations_chain_each_built_on_the_previous_one() {
    let hub = LocalHub::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let a = node(1, &clock, 0, vec![v2(), v1()]);
    let b = node(2, &clock, 0, vec![v1()]);
    let c = node(3, &clock, 0, vec![v1(), v2()]);
    let (a, b, c) = (&a.replica, &b.replica, &c.replica);
    let id = shared_task(&hub, a, b, json!({"title": "t", "tag": "x"})).await;
    sync(c, &hub).await;

    // B knows only v1; A gets B's v1 and adds v2; C does both itself.
    let mut events = b.subscribe();
    assert_eq!(b.migrate_collection(&tasks()).unwrap(), 1);
    assert_eq!(
        events.try_recv().unwrap(),
        ReplicaEvent::DocChanged {
            id,
            origin: Origin::Local
        }
    );
    sync(b, &hub).await;
    sync(a, &hub).await;
    assert_eq!(a.info(&id).unwrap().schema, 1);
    let before = a.pending();
    assert_eq!(a.migrate(&id).unwrap(), 2);
    assert_eq!(a.pending(), before + 1, "only v2 is made");
    assert_eq!(c.migrate(&id).unwrap(), 2);
    assert_eq!(c.pending(), 2, "v1 and v2");
    assert_eq!(a.heads(&id).unwrap(), c.heads(&id).unwrap());

    let hist = c.history(&id).unwrap();
    let v1c = hist
        .iter()
        .find(|h| h.actor == migration_actor(&tasks(), 1).to_hex_string())
        .unwrap();
    let v2c = hist
        .iter()
        .find(|h| h.actor == migration_actor(&tasks(), 2).to_hex_string())
        .unwrap();
    assert_eq!(v2c.deps, std::slice::from_ref(&v1c.hash), "v2 builds on v1");
    assert_eq!(
        v1c.deps,
        std::slice::from_ref(&hist[0].hash),
        "v1 builds on creation"
    );

    for r in [a, c, b, a] {
        sync(r, &hub).await;
    }
    assert!(stored_counts(&hub).values().all(|&n| n == 1));
    assert_eq!(stored_counts(&hub).len(), 3);
    for r in [a, b, c] {
        assert_eq!(
            r.get_json(&id).unwrap(),
            json!({"title": "t", "tags": ["x"], "priority": 0, "status": "open"})
        );
        assert_eq!(r.info(&id).unwrap().schema, 2);
        assert!(r.conflicts(&id).unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_migration_loses_to_a_concurrent_user_edit_of_the_same_field() {
    let hub = LocalHub::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let (a, b) = (
        node(1, &clock, 0, vec![v1()]),
        node(2, &clock, -HOUR, vec![v1()]),
    );
    let (a, b) = (&a.replica, &b.replica);
    let id = shared_task(&hub, a, b, json!({"title": "t", "status": "new"})).await;
    // B (clock an hour behind) sets the status, then migrates; A migrates
    // without having seen B's edit.
    b.patch_json(&id, &json!({"status": "done"})).unwrap();
    b.migrate(&id).unwrap();
    a.migrate(&id).unwrap();
    for r in [a, b, a] {
        sync(r, &hub).await;
    }
    for r in [a, b] {
        assert_eq!(r.get_json(&id).unwrap()["status"], "done");
        let c = r.conflicts(&id).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "/status");
        assert_eq!(c[0].candidates[0].value, "open");
        assert_eq!(
            c[0].candidates[0].timestamp,
            T0 + 1,
            "1 ms after the creation"
        );
        assert_eq!(c[0].candidates[0].time, T0 + 1);
        assert_eq!(c[0].candidates[c[0].winner].value, "done");
    }
    assert_eq!(a.heads(&id).unwrap(), b.heads(&id).unwrap());
    // A write after the migration (it has seen it) replaces it outright.
    a.patch_json(&id, &json!({"priority": 5})).unwrap();
    assert_eq!(a.get_json(&id).unwrap()["priority"], 5);
    let pr = a.history(&id).unwrap().pop().unwrap();
    assert!(
        pr.timestamp > T0,
        "HLC not pulled down by the migration: {pr:?}"
    );
}

#[tokio::test]
async fn local_commits_after_a_migration_keep_the_hybrid_logical_clock() {
    let hub = LocalHub::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let (a, b) = (
        node(1, &clock, 0, vec![v1()]),
        node(2, &clock, -HOUR, vec![v1()]),
    );
    let (a, b) = (&a.replica, &b.replica);
    let id = shared_task(&hub, a, b, json!({"title": "t"})).await;
    // B's only head is now the migration change (effective T0 + 1); its
    // wall clock is an hour behind the creation. Its next edit must still be
    // later than the migration it has seen.
    b.migrate(&id).unwrap();
    b.patch_json(&id, &json!({"title": "u"})).unwrap();
    let last = b.history(&id).unwrap().pop().unwrap();
    assert_eq!(last.timestamp, T0 + 2);
}

#[test]
fn a_failing_migration_is_a_typed_error_and_changes_nothing() {
    let clock = ManualClock::new(T0);
    let failing = |v| {
        Migration::new(tasks(), v, |tx, data| {
            tx.put(data, "half", "done")?;
            // `data` is a map, not text: Automerge refuses.
            tx.splice_text(data, 0, 0, "x")
        })
    };
    let n = node(1, &clock, 0, vec![failing(1)]);
    let r = &n.replica;
    let id = r
        .create_json(ws(), &tasks(), &json!({"title": "t"}))
        .unwrap();
    let (heads, pending) = (r.heads(&id).unwrap(), r.pending());
    let err = r.migrate(&id).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Migration(MigrationError::Failed { version: 1, .. })
        ),
        "{err:?}"
    );
    assert_eq!(r.heads(&id).unwrap(), heads);
    assert_eq!(r.pending(), pending);
    assert_eq!(r.get_json(&id).unwrap(), json!({"title": "t"}));
    assert_eq!(r.info(&id).unwrap().schema, 0);

    // v1 fine, v2 failing: v1 stays committed, nothing of v2.
    let n = node(2, &clock, 0, vec![v1(), failing(2)]);
    let r = &n.replica;
    let id = r
        .create_json(ws(), &tasks(), &json!({"title": "t"}))
        .unwrap();
    let mut events = r.subscribe();
    assert!(matches!(
        r.migrate_collection(&tasks()),
        Err(Error::Migration(MigrationError::Failed { version: 2, .. }))
    ));
    assert_eq!(r.info(&id).unwrap().schema, 1);
    assert_eq!(r.pending(), 2);
    assert!(r.get_json(&id).unwrap().get("half").is_none());
    assert_eq!(
        events.try_recv().unwrap(),
        ReplicaEvent::DocChanged {
            id,
            origin: Origin::Local
        },
        "v1 was committed: subscribers hear of it"
    );
}

#[test]
fn misnumbered_migrations_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let open = |ms: Vec<Migration>| {
        let mut b = Replica::builder(dir.path());
        for m in ms {
            b = b.with_migration(m);
        }
        b.open().map(|_| ())
    };
    assert!(matches!(
        open(vec![v1(), Migration::new(tasks(), 3, |_, _| Ok(()))]),
        Err(Error::Migration(MigrationError::Gap {
            missing: 2,
            found: 3,
            ..
        }))
    ));
    assert!(matches!(
        open(vec![v1(), v1()]),
        Err(Error::Migration(MigrationError::Duplicate {
            version: 1,
            ..
        }))
    ));
    assert!(matches!(
        open(vec![v2()]),
        Err(Error::Migration(MigrationError::Gap { missing: 1, .. }))
    ));
    // other collections are independent; no migrations: version stays 0
    let notes = Collection::new("notes").unwrap();
    let n = node(
        1,
        &ManualClock::new(T0),
        0,
        vec![Migration::new(notes.clone(), 1, |_, _| Ok(())), v1()],
    );
    let id = n
        .replica
        .create_json(ws(), &Collection::new("other").unwrap(), &json!({}))
        .unwrap();
    assert_eq!(n.replica.migrate(&id).unwrap(), 0);
    assert_eq!(n.replica.pending(), 1);
}

#[test]
fn cli_info_shows_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let r = Replica::builder(dir.path())
            .with_migration(v1())
            .open()
            .unwrap();
        let id = r.create_json(ws(), &tasks(), &json!({})).unwrap();
        r.migrate(&id).unwrap();
        id
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .arg("--data")
        .arg(dir.path())
        .args(["--json", "info", &id.to_string()])
        .env_remove("SUPAMERGE_DATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["schema"], 1);
}

/// The first recipe's migration change (before effective timestamps): actor
/// `migration_actor_v1`, time 0, `_meta.schema` an unsigned integer — built
/// here by hand the way that version built it.
fn recipe_1_change(r: &Replica, id: &DocId) -> automerge::Change {
    r.with_doc(id, |doc| {
        let creation = doc.get_changes(&[])[0].hash();
        let mut fork = doc.fork_at(&[creation]).unwrap();
        fork.set_actor(migration_actor_v1(&tasks(), 1));
        let data = match fork.get(automerge::ROOT, "data").unwrap() {
            Some((_, d)) => d,
            None => panic!("no data"),
        };
        let meta = match fork.get(automerge::ROOT, "_meta").unwrap() {
            Some((_, m)) => m,
            None => panic!("no meta"),
        };
        let mut tx = fork.transaction();
        tx.put(&data, "priority", 0).unwrap();
        tx.put(&data, "status", "open").unwrap();
        tx.put(&meta, "schema", 1u64).unwrap();
        let (h, _) = tx.commit_with(automerge::transaction::CommitOptions::default().with_time(0));
        fork.get_change_by_hash(&h.unwrap()).unwrap()
    })
    .unwrap()
}

#[tokio::test]
async fn documents_migrated_by_the_first_recipe_are_not_migrated_again() {
    let hub = LocalHub::temporary().unwrap();
    let clock = ManualClock::new(T0);
    let a = node(1, &clock, 0, vec![v1(), v2()]);
    let b = node(2, &clock, 0, vec![v1()]);
    let (a, b) = (&a.replica, &b.replica);
    let id = shared_task(&hub, a, b, json!({"title": "t", "tag": "x"})).await;
    let old = recipe_1_change(a, &id);
    let old_hash = old.hash();
    let report = a
        .apply_remote(
            vec![supamerge::RemoteChange {
                workspace: ws(),
                doc_id: id,
                collection: tasks(),
                hash: None,
                bytes: old.raw_bytes().to_vec(),
            }],
            None,
        )
        .unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(
        a.info(&id).unwrap().schema,
        1,
        "an unsigned schema reads too"
    );

    // B knows only v1: nothing to do. A adds v2 on top of the old v1.
    b.apply_remote(
        vec![supamerge::RemoteChange {
            workspace: ws(),
            doc_id: id,
            collection: tasks(),
            hash: None,
            bytes: old.raw_bytes().to_vec(),
        }],
        None,
    )
    .unwrap();
    let before = b.pending();
    assert_eq!(b.migrate(&id).unwrap(), 1);
    assert_eq!(b.pending(), before, "v1 is there already: nothing made");
    let before = a.pending();
    assert_eq!(a.migrate(&id).unwrap(), 2);
    assert_eq!(a.pending(), before + 1, "only v2 is made");
    let v2c = a
        .history(&id)
        .unwrap()
        .into_iter()
        .find(|h| h.actor == migration_actor(&tasks(), 2).to_hex_string())
        .unwrap();
    assert_eq!(v2c.deps, vec![old_hash], "v2 builds on the old v1");
    assert_eq!(v2c.timestamp, T0 + 2, "old v1 counts as T0 + 1 (time 0)");
    assert_eq!(
        a.get_json(&id).unwrap(),
        json!({"title": "t", "tags": ["x"], "priority": 0, "status": "open"})
    );
    assert!(a.conflicts(&id).unwrap().is_empty());
}
