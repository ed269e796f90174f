//! Property: the replica's store agrees with a plain in-memory model
//! (sled's own testing habit). Random local writes (create, JSON merge
//! patches, deletes), outbox acknowledgements and dead letters, cursor
//! writes, compactions and restarts (drop + reopen from the same directory);
//! after every step the replica and the model agree on every entity's JSON
//! (or its tombstone), the collection listing, the outbox (count and FIFO
//! order), the dead letters, and every cursor record.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use automerge::ChangeHash;
use common::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};
use supamerge::{
    CursorRecord, DocId, Durability, EntityError, Error, ManualClock, Replica, SyncPort,
    WorkspaceId,
};

const ENTITIES: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Create {
        slot: usize,
    },
    Patch {
        slot: usize,
        key: Key,
        value: Scalar,
    },
    Delete {
        slot: usize,
    },
    /// Acknowledges the `n` oldest outbox entries (plus one unknown hash).
    Ack {
        n: usize,
    },
    /// Moves the oldest outbox entry to the dead letters.
    DeadLetter,
    SetCursor {
        ws: usize,
        cursor: u16,
        bootstrapped: bool,
    },
    Compact {
        slot: usize,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..ENTITIES;
    prop_oneof![
        3 => slot.clone().prop_map(|slot| Op::Create { slot }),
        8 => (slot.clone(), key(), scalar()).prop_map(|(slot, key, value)| Op::Patch { slot, key, value }),
        1 => slot.clone().prop_map(|slot| Op::Delete { slot }),
        2 => (0usize..4).prop_map(|n| Op::Ack { n }),
        1 => Just(Op::DeadLetter),
        2 => (0usize..2, any::<u16>(), any::<bool>())
            .prop_map(|(ws, cursor, bootstrapped)| Op::SetCursor { ws, cursor, bootstrapped }),
        1 => slot.prop_map(|slot| Op::Compact { slot }),
        2 => Just(Op::Restart),
    ]
}

/// An entity's JSON object.
type Object = Map<String, Json>;

/// What the store must hold.
#[derive(Debug, Default)]
struct Model {
    /// Per slot: the id and the JSON (`None` once deleted).
    entities: [Option<(DocId, Option<Object>)>; ENTITIES],
    /// Outbox hashes, oldest first.
    outbox: Vec<ChangeHash>,
    dead: Vec<ChangeHash>,
    cursors: BTreeMap<WorkspaceId, CursorRecord>,
}

struct Subject {
    replica: Option<Replica>,
    clock: ManualClock,
    durability: Durability,
    opens: u64,
}

impl Subject {
    fn open(&mut self, path: &Path) {
        self.replica = None;
        self.opens += 1;
        self.replica = Some(
            Replica::builder(path)
                .with_clock(Arc::new(self.clock.clone()))
                .with_durability(self.durability)
                .with_seed(self.opens)
                .open()
                .expect("open"),
        );
    }

    fn r(&self) -> &Replica {
        self.replica.as_ref().expect("open")
    }
}

fn check(r: &Replica, m: &Model, wss: &[WorkspaceId]) {
    let mut live = Vec::new();
    for (id, data) in m.entities.iter().flatten() {
        match (data, r.get_json(id)) {
            (Some(want), Ok(got)) => {
                assert_eq!(got, Json::Object(want.clone()), "entity {id}");
                live.push(*id);
            }
            (None, Err(Error::Entity(EntityError::Deleted { .. }))) => {}
            (want, got) => panic!("entity {id}: model {want:?}, replica {got:?}"),
        }
        assert_eq!(r.info(id).expect("info").deleted, data.is_none());
    }
    live.sort();
    let mut listed = r.list(&collection()).expect("list");
    listed.sort();
    assert_eq!(listed, live, "list");
    assert_eq!(
        r.doc_count(),
        m.entities.iter().flatten().count(),
        "doc count"
    );
    assert_eq!(r.pending(), m.outbox.len(), "outbox length");
    let peeked: Vec<ChangeHash> = r
        .peek(usize::MAX, usize::MAX)
        .expect("peek")
        .iter()
        .map(|e| e.hash)
        .collect();
    assert_eq!(peeked, m.outbox, "outbox order");
    let dead: Vec<ChangeHash> = r
        .dead_letters()
        .expect("dead letters")
        .iter()
        .map(|d| d.entry.hash)
        .collect();
    assert_eq!(dead, m.dead, "dead letters");
    for ws in wss {
        assert_eq!(
            r.cursor(ws).expect("cursor"),
            m.cursors.get(ws).cloned(),
            "cursor of {ws}"
        );
    }
    assert_eq!(r.pending_remote(), 0);
}

fn run(ops: &[Op], durability: Durability) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("replica");
    let ws = new_workspace();
    let wss = [ws, new_workspace()];
    let mut s = Subject {
        replica: None,
        clock: ManualClock::new(1_790_000_000_000),
        durability,
        opens: 0,
    };
    s.open(&path);
    let mut m = Model::default();
    for op in ops {
        s.clock.advance(13);
        match op {
            Op::Create { slot } => {
                if m.entities[*slot].is_some() {
                    continue;
                }
                let data = json!({"title": format!("slot {slot}"), "prio": 0});
                let id = s.r().create_json(ws, &collection(), &data).expect("create");
                m.outbox.push(s.r().heads(&id).expect("heads")[0]);
                let Json::Object(map) = data else {
                    unreachable!()
                };
                m.entities[*slot] = Some((id, Some(map)));
            }
            Op::Patch { slot, key, value } => {
                let Some((id, data)) = &mut m.entities[*slot] else {
                    continue;
                };
                let patch = json!({ key.as_str(): value.json() });
                let res = s.r().patch_json(id, &patch);
                let Some(map) = data else {
                    assert!(
                        matches!(res, Err(Error::Entity(EntityError::Deleted { .. }))),
                        "patching a deleted entity: {res:?}"
                    );
                    continue;
                };
                let before = map.clone();
                match value.json() {
                    Json::Null => {
                        map.remove(key.as_str());
                    }
                    v => {
                        map.insert(key.as_str().into(), v);
                    }
                }
                let hash = res.expect("patch");
                assert_eq!(
                    hash.is_some(),
                    *map != before,
                    "a patch makes a change exactly when it changes the value"
                );
                m.outbox.extend(hash);
            }
            Op::Delete { slot } => {
                let Some((id, data)) = &mut m.entities[*slot] else {
                    continue;
                };
                let res = s.r().delete(id);
                if data.is_none() {
                    assert!(
                        matches!(res, Err(Error::Entity(EntityError::Deleted { .. }))),
                        "deleting twice: {res:?}"
                    );
                } else {
                    m.outbox.push(res.expect("delete"));
                    *data = None;
                }
            }
            Op::Ack { n } => {
                let n = (*n).min(m.outbox.len());
                let mut hashes: Vec<ChangeHash> = m.outbox.drain(..n).collect();
                hashes.push(ChangeHash([0xab; 32]));
                assert_eq!(s.r().ack(&hashes).expect("ack"), n, "acked entries");
            }
            Op::DeadLetter => {
                let Some(h) = m.outbox.first().copied() else {
                    continue;
                };
                assert!(s.r().dead_letter(&h, "rejected").expect("dead letter"));
                m.outbox.remove(0);
                m.dead.push(h);
            }
            Op::SetCursor {
                ws: w,
                cursor,
                bootstrapped,
            } => {
                let rec = CursorRecord {
                    cursor: cursor.to_string(),
                    last_sync_ms: s.clock_now(),
                    bootstrapped: *bootstrapped,
                };
                s.r().set_cursor(&wss[*w], &rec).expect("cursor");
                m.cursors.insert(wss[*w], rec);
            }
            Op::Compact { slot } => {
                if let Some((id, _)) = &m.entities[*slot] {
                    s.r().compact(id).expect("compact");
                }
            }
            Op::Restart => s.open(&path),
        }
        check(s.r(), &m, &wss);
    }
    // And once more from disk.
    s.open(&path);
    check(s.r(), &m, &wss);
}

impl Subject {
    fn clock_now(&self) -> i64 {
        use supamerge::Clock;
        self.clock.now_ms()
    }
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        3 => Just(Durability::Immediate),
        1 => Just(Durability::Buffered { flush_every_ms: 500 }),
    ]
}

proptest! {
    #![proptest_config(config(512, "proptest-regressions/store_model.txt"))]

    #[test]
    fn store_agrees_with_model(ops in prop::collection::vec(op(), 1..60), d in durability()) {
        run(&ops, d);
    }
}
