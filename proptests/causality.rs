//! Property: a write that has seen another write wins over it, whatever the
//! clocks (DESIGN.md §3). A chain of writers, each syncing the previous
//! writer's value before overwriting it, with clocks up to an hour off in
//! either direction (often far behind), races one concurrent writer that has
//! seen none of the chain. After every replica synced:
//! - every change carries a larger timestamp than each of its dependencies
//!   (the hybrid logical clock);
//! - the visible value is the chain's last write unless the concurrent write
//!   carries the larger (timestamp, actor) stamp, computed from the wall
//!   clocks the way the HLC must — and in particular a concurrent write that
//!   lost to the chain's first write loses to its last;
//! - every replica agrees (views, conflicts, stored exactly once).

mod common;

use std::sync::Arc;

use automerge::{ActorId, ChangeHash, ReadDoc};
use common::*;
use proptest::prelude::*;
use serde_json::json;
use supamerge::{LocalHub, Remote};

const HOUR: i64 = 3_600_000;
const BASE: i64 = 1_790_000_000_000;

#[derive(Debug, Clone)]
struct Race {
    /// Wall clocks of the chain's writers, relative to the creator's.
    chain: Vec<i64>,
    /// The concurrent writer's wall clock (`None`: no concurrent writer).
    rival: Option<i64>,
    /// Whether the rival writes before the chain starts.
    rival_first: bool,
}

fn race() -> impl Strategy<Value = Race> {
    (
        prop::collection::vec(
            prop_oneof![-HOUR..=HOUR, (-HOUR..-HOUR / 2), (-5i64..5)],
            1..5,
        ),
        prop::option::weighted(0.8, -HOUR..=HOUR),
        any::<bool>(),
    )
        .prop_map(|(chain, rival, rival_first)| Race {
            chain,
            rival,
            rival_first,
        })
}

/// Every change's timestamp is larger than its dependencies'.
fn assert_hlc(world: &World, id: &supamerge::DocId) {
    for (i, n) in world.nodes.iter().enumerate() {
        n.replica()
            .with_doc(id, |d| {
                for c in d.get_changes(&[]) {
                    for dep in c.deps() {
                        let dep_ts = d
                            .get_change_by_hash(dep)
                            .map(|x| x.timestamp())
                            .expect("dependency present");
                        assert!(
                            c.timestamp() > dep_ts,
                            "replica {i}: change {} (ts {}) is not after its dependency {dep} (ts {dep_ts})",
                            c.hash(),
                            c.timestamp()
                        );
                    }
                }
            })
            .expect("doc");
    }
}

fn stamp_of(world: &World, id: &supamerge::DocId, h: ChangeHash) -> (i64, ActorId) {
    world.nodes[0]
        .replica()
        .with_doc(id, |d| {
            let c = d.get_change_by_hash(&h).expect("change present");
            (c.timestamp(), c.actor_id().clone())
        })
        .expect("doc")
}

fn run(race: &Race) {
    runtime().block_on(async {
        let hub = LocalHub::temporary().expect("hub");
        let n = 2 + race.chain.len();
        let remotes: Vec<Arc<dyn Remote>> = (0..n)
            .map(|_| Arc::new(hub.clone()) as Arc<dyn Remote>)
            .collect();
        let mut world = World::new(new_workspace(), remotes, &[]);
        let rival_node = n - 1;
        for node in &world.nodes {
            node.clock.set(BASE);
        }
        let creator = world.nodes[0].replica().clone();
        let id = creator
            .create_json(world.ws, &collection(), &json!({"x": "init"}))
            .expect("create");
        world.committed.insert((
            id,
            creator.heads(&id).expect("heads")[0],
        ));
        world.quiesce().await;

        let write = |world: &mut World, node: usize, clock: i64, value: String| {
            world.nodes[node].clock.set(BASE + clock);
            let h = world.nodes[node]
                .replica()
                .patch_json(&id, &json!({ "x": value }))
                .expect("write")
                .expect("a change");
            world.committed.insert((id, h));
            h
        };
        let mut rival_hash = None;
        if let (Some(c), true) = (race.rival, race.rival_first) {
            rival_hash = Some(write(&mut world, rival_node, c, "rival".into()));
        }
        let mut chain_hashes = Vec::new();
        for (i, c) in race.chain.iter().enumerate() {
            let node = 1 + i;
            let cfg = world.cfg.clone();
            let ws = world.ws;
            let r = world.nodes[node].replica().clone();
            let remote = world.nodes[node].base.clone();
            // See the previous writer's value, overwrite it, publish.
            supamerge::sync_once(&r, remote.as_ref(), &cfg, &[ws], &|_| {})
                .await
                .expect("pull");
            chain_hashes.push(write(&mut world, node, *c, format!("w{i}")));
            supamerge::sync_once(&r, remote.as_ref(), &cfg, &[ws], &|_| {})
                .await
                .expect("push");
        }
        if let (Some(c), false) = (race.rival, race.rival_first) {
            rival_hash = Some(write(&mut world, rival_node, c, "rival".into()));
        }
        world.quiesce().await;
        world.assert_converged(&hub).await;

        // The oracle: HLC timestamps computed from the wall clocks.
        let mut t = BASE;
        for c in &race.chain {
            t = (BASE + c).max(t + 1);
        }
        let last = chain_hashes.len() - 1;
        let x = world.nodes[0].replica().get_json(&id).expect("read")["x"].clone();
        let last_stamp = stamp_of(&world, &id, chain_hashes[last]);
        match rival_hash {
            None => assert_eq!(x, json!(format!("w{last}")), "the chain's last write wins"),
            Some(rh) => {
                let rival_stamp = stamp_of(&world, &id, rh);
                let first_stamp = stamp_of(&world, &id, chain_hashes[0]);
                if rival_stamp < first_stamp {
                    assert_eq!(
                        x,
                        json!(format!("w{last}")),
                        "the rival lost to the chain's first write, so it must lose to the write that saw it"
                    );
                }
                let expected = if last_stamp > rival_stamp {
                    format!("w{last}")
                } else {
                    "rival".into()
                };
                assert_eq!(x, json!(expected), "LWW by (HLC timestamp, actor)");
            }
        }
        // The clock behind the visible outcome.
        assert_hlc(&world, &id);
        assert_eq!(last_stamp.0, t, "the last chain write's HLC timestamp");
    });
}

proptest! {
    #![proptest_config(config(256, "proptest-regressions/causality.txt"))]

    #[test]
    fn a_write_that_has_seen_another_wins_over_it(r in race()) {
        run(&r);
    }
}
