//! Property: a write that has seen another write wins over it, whatever the
//! clocks and whoever wrote it (DESIGN.md §3, docs/interop.md). A chain of
//! writers, each syncing the previous writer's value before overwriting it,
//! races one concurrent writer that has seen none of the chain. A writer is a
//! supamerge replica (its HLC, in ms) or a foreign Automerge client — the
//! `automerge` crate used directly, pushing and pulling through the hub like
//! the JavaScript client — that stamps unix seconds (JavaScript's default),
//! raw milliseconds, or no time at all (0, the Rust crate's default). Every
//! writer's clock may be off by up to an hour (often far behind). Real time
//! advances 10 s per write. After every replica synced:
//! - every change's effective timestamp is larger than its dependencies';
//!   supamerge's own changes carry their effective timestamp as their time;
//! - a rival that lost to the chain's first write (asked of the product: its
//!   last-writer-wins view of a document holding only the creation, that
//!   write and the rival) loses to the chain's last write;
//! - the visible value is the chain's last write unless the rival's
//!   (effective timestamp, actor) is larger;
//! - when no clock is ahead of real time and the rival, its clock right,
//!   writes last and stamps a real time — milliseconds or seconds — it wins;
//! - every replica agrees (views, conflicts, stored exactly once).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjType, ReadDoc, Value, ROOT};
use common::*;
use proptest::prelude::*;
use serde_json::json;
use supamerge::raw::{data_json, EffectiveClock, LwwView};
use supamerge::{
    ChangeEnvelope, Cursor, DocId, LocalHub, PullRequest, PushOutcome, PushRequest, Remote,
    WorkspaceId, WIRE_VERSION,
};

const HOUR: i64 = 3_600_000;
const BASE: i64 = 1_790_000_000_000;
/// Real time between two writes.
const STEP: i64 = 10_000;

/// How a writer stamps its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// A supamerge replica: its hybrid logical clock, in ms.
    Replica,
    /// A foreign client stamping unix seconds (Automerge's JavaScript default).
    Seconds,
    /// A foreign client stamping its clock in ms, as is.
    Millis,
    /// A foreign client stamping no time (0).
    Zero,
}

#[derive(Debug, Clone, Copy)]
struct Writer {
    stamp: Stamp,
    /// The writer's clock minus real time (ms).
    offset: i64,
}

#[derive(Debug, Clone)]
struct Race {
    /// The chain's writers, in order.
    chain: Vec<Writer>,
    /// The concurrent writer (`None`: no concurrent writer).
    rival: Option<Writer>,
    /// Whether the rival writes before the chain starts.
    rival_first: bool,
}

fn writer() -> impl Strategy<Value = Writer> {
    let stamp = prop_oneof![
        4 => Just(Stamp::Replica),
        2 => Just(Stamp::Seconds),
        1 => Just(Stamp::Millis),
        1 => Just(Stamp::Zero),
    ];
    let offset = prop_oneof![-HOUR..=HOUR, (-HOUR..-HOUR / 2), (-5i64..5), Just(0i64),];
    (stamp, offset).prop_map(|(stamp, offset)| Writer { stamp, offset })
}

fn race() -> impl Strategy<Value = Race> {
    (
        prop::collection::vec(writer(), 1..5),
        prop::option::weighted(0.8, writer()),
        any::<bool>(),
    )
        .prop_map(|(chain, rival, rival_first)| Race {
            chain,
            rival,
            rival_first,
        })
}

/// A client that is not supamerge: the automerge crate, syncing through the
/// hub's push and pull as the JavaScript client does.
struct Foreign {
    doc: Automerge,
}

impl Foreign {
    fn new(actor: u8) -> Self {
        let mut doc = Automerge::new();
        doc.set_actor(ActorId::from(&[actor; 16][..]));
        Self { doc }
    }

    /// Applies everything the hub holds for `id`.
    async fn pull(&mut self, hub: &LocalHub, ws: WorkspaceId, id: DocId) {
        let mut cursor = Cursor(String::new());
        loop {
            let page = hub
                .pull(PullRequest {
                    v: WIRE_VERSION,
                    workspace: ws,
                    cursor: cursor.clone(),
                    limit: 1000,
                    skip_snapshotted: false,
                })
                .await
                .expect("foreign pull");
            let changes: Vec<Change> = page
                .changes
                .into_iter()
                .filter(|c| c.change.doc_id == id)
                .map(|c| Change::from_bytes(c.change.bytes).expect("a change"))
                .collect();
            self.doc.apply_changes(changes).expect("apply");
            cursor = page.next_cursor;
            if !page.has_more {
                return;
            }
        }
    }

    /// Writes `data.x = value` with `time` (not pushed yet).
    fn write(&mut self, value: &str, time: i64) -> Change {
        let data = match self.doc.get(ROOT, "data").expect("read") {
            Some((Value::Object(ObjType::Map), data)) => data,
            other => panic!("the foreign writer has no data map: {other:?}"),
        };
        let mut tx = self.doc.transaction();
        tx.put(&data, "x", value).expect("put");
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(time));
        self.doc
            .get_change_by_hash(&hash.expect("a change"))
            .expect("change")
    }
}

async fn push(hub: &LocalHub, ws: WorkspaceId, id: DocId, change: &Change) {
    let res = hub
        .push(PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes: vec![ChangeEnvelope {
                doc_id: id,
                collection: collection(),
                hash: change.hash(),
                bytes: change.raw_bytes().to_vec(),
            }],
        })
        .await
        .expect("foreign push");
    assert!(
        matches!(res.results[0], PushOutcome::Stored { .. }),
        "{res:?}"
    );
}

/// The time a foreign writer stamps at real time `real`.
fn foreign_time(w: Writer, real: i64) -> i64 {
    let clock = real + w.offset;
    match w.stamp {
        Stamp::Seconds => clock.div_euclid(1000),
        Stamp::Millis => clock,
        Stamp::Zero => 0,
        Stamp::Replica => unreachable!("replicas stamp themselves"),
    }
}

/// Every change's effective timestamp is larger than its dependencies';
/// supamerge's own changes (not `foreign` actors) stamp it as their time.
fn assert_effective_order(world: &World, id: &DocId, foreign: &HashSet<String>) {
    for (i, n) in world.nodes.iter().enumerate() {
        let hist = n.replica().history(id).expect("history");
        let eff: BTreeMap<ChangeHash, i64> = hist.iter().map(|h| (h.hash, h.effective)).collect();
        for h in &hist {
            for d in &h.deps {
                assert!(
                    h.effective > eff[d],
                    "replica {i}: change {} (effective {}) is not after its dependency {d} (effective {})",
                    h.hash,
                    h.effective,
                    eff[d]
                );
            }
            if !foreign.contains(&h.actor) {
                assert_eq!(
                    h.effective, h.timestamp,
                    "replica {i}: supamerge's change {} stamps its effective timestamp",
                    h.hash
                );
            }
        }
    }
}

/// (effective timestamp, actor) of a change, as the product reports it.
fn stamp_of(world: &World, id: &DocId, h: ChangeHash) -> (i64, ActorId) {
    let hist = world.nodes[0].replica().history(id).expect("history");
    let e = hist.iter().find(|e| e.hash == h).expect("change present");
    let actor = world.nodes[0]
        .replica()
        .with_doc(id, |d| {
            d.get_change_by_hash(&h).expect("change").actor_id().clone()
        })
        .expect("doc");
    (e.effective, actor)
}

/// What the product shows for `x` in a document holding only `hashes`
/// (its last-writer-wins view, `raw::data_json`).
fn x_with_only(world: &World, id: &DocId, hashes: &[ChangeHash]) -> serde_json::Value {
    let changes: Vec<Change> = world.nodes[0]
        .replica()
        .with_doc(id, |d| {
            hashes
                .iter()
                .map(|h| d.get_change_by_hash(h).expect("change"))
                .collect()
        })
        .expect("doc");
    let mut doc = Automerge::new();
    doc.apply_changes(changes).expect("apply");
    assert!(doc.get_missing_deps(&[]).is_empty(), "a complete history");
    let clock = EffectiveClock::new();
    data_json(LwwView::new(&doc, &clock))["x"].clone()
}

fn run(race: &Race) {
    runtime().block_on(async {
        let hub = LocalHub::temporary().expect("hub");
        let n = 2 + race.chain.len();
        let remotes: Vec<Arc<dyn Remote>> = (0..n)
            .map(|_| Arc::new(hub.clone()) as Arc<dyn Remote>)
            .collect();
        let mut world = World::new(new_workspace(), remotes, &[]);
        let ws = world.ws;
        let rival_node = n - 1;
        for node in &world.nodes {
            node.clock.set(BASE);
        }
        let creator = world.nodes[0].replica().clone();
        let id = creator
            .create_json(ws, &collection(), &json!({"x": "init"}))
            .expect("create");
        let creation = creator.heads(&id).expect("heads")[0];
        world
            .committed
            .insert((id, creation));
        world.quiesce().await;

        let mut foreign_actors = HashSet::new();
        // A foreign rival has seen the creation only.
        let mut rival_foreign = None;
        if let Some(w) = race.rival.filter(|w| w.stamp != Stamp::Replica) {
            let mut f = Foreign::new(0xf0);
            f.pull(&hub, ws, id).await;
            foreign_actors.insert(f.doc.get_actor().to_hex_string());
            rival_foreign = Some((f, w));
        }
        let mut rival_hash = None;
        let mut rival_change = None;
        let mut rival_write = |world: &mut World, real: i64| -> ChangeHash {
            match rival_foreign.as_mut() {
                Some((f, w)) => {
                    let c = f.write("rival", foreign_time(*w, real));
                    let h = c.hash();
                    rival_change = Some(c);
                    h
                }
                None => {
                    let w = race.rival.expect("a rival");
                    let node = &world.nodes[rival_node];
                    node.clock.set(real + w.offset);
                    node.replica()
                        .patch_json(&id, &json!({ "x": "rival" }))
                        .expect("write")
                        .expect("a change")
                }
            }
        };
        if let (Some(_), true) = (race.rival, race.rival_first) {
            rival_hash = Some(rival_write(&mut world, BASE + STEP / 2));
        }
        let mut chain_hashes = Vec::new();
        for (i, w) in race.chain.iter().enumerate() {
            let real = BASE + (i as i64 + 1) * STEP;
            let node = 1 + i;
            let value = format!("w{i}");
            // See the previous writer's value, overwrite it, publish.
            let h = if w.stamp == Stamp::Replica {
                let cfg = world.cfg.clone();
                let r = world.nodes[node].replica().clone();
                let remote = world.nodes[node].base.clone();
                supamerge::sync_once(&r, remote.as_ref(), &cfg, &[ws], &|_| {})
                    .await
                    .expect("pull");
                world.nodes[node].clock.set(real + w.offset);
                let h = r
                    .patch_json(&id, &json!({ "x": value }))
                    .expect("write")
                    .expect("a change");
                supamerge::sync_once(&r, remote.as_ref(), &cfg, &[ws], &|_| {})
                    .await
                    .expect("push");
                h
            } else {
                let mut f = Foreign::new(0xa0 + i as u8);
                foreign_actors.insert(f.doc.get_actor().to_hex_string());
                f.pull(&hub, ws, id).await;
                let c = f.write(&value, foreign_time(*w, real));
                push(&hub, ws, id, &c).await;
                c.hash()
            };
            world.committed.insert((id, h));
            chain_hashes.push(h);
        }
        if let (Some(_), false) = (race.rival, race.rival_first) {
            let real = BASE + (race.chain.len() as i64 + 1) * STEP;
            rival_hash = Some(rival_write(&mut world, real));
        }
        if let Some(c) = &rival_change {
            push(&hub, ws, id, c).await;
        }
        if let Some(h) = rival_hash {
            world.committed.insert((id, h));
        }
        world.quiesce().await;
        world.assert_converged(&hub).await;
        assert_effective_order(&world, &id, &foreign_actors);

        let last = chain_hashes.len() - 1;
        let x = world.nodes[0].replica().get_json(&id).expect("read")["x"].clone();
        let last_stamp = stamp_of(&world, &id, chain_hashes[last]);
        match rival_hash {
            None => assert_eq!(x, json!(format!("w{last}")), "the chain's last write wins"),
            Some(rh) => {
                if x_with_only(&world, &id, &[creation, chain_hashes[0], rh]) == json!("w0") {
                    assert_eq!(
                        x,
                        json!(format!("w{last}")),
                        "the rival lost to the chain's first write, so it must lose to the write that saw it"
                    );
                }
                let rival_stamp = stamp_of(&world, &id, rh);
                let expected = if last_stamp > rival_stamp {
                    format!("w{last}")
                } else {
                    "rival".into()
                };
                assert_eq!(x, json!(expected), "LWW by (effective timestamp, actor)");
                let rival = race.rival.expect("a rival");
                let clocks_right = race.chain.iter().all(|w| w.offset <= 0);
                if !race.rival_first
                    && rival.offset == 0
                    && rival.stamp != Stamp::Zero
                    && clocks_right
                {
                    assert_eq!(
                        x,
                        json!("rival"),
                        "no clock is ahead and the rival wrote last in real time with a right clock"
                    );
                }
            }
        }
    });
}

proptest! {
    #![proptest_config(config(256, "proptest-regressions/causality.txt"))]

    #[test]
    fn a_write_that_has_seen_another_wins_over_it(r in race()) {
        run(&r);
    }
}
