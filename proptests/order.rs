//! Property: delivery order does not matter (DESIGN.md §2, invariants 4
//! and 5). Several replicas edit concurrently (syncing now and then, so the
//! changes form a real causal graph); then the whole set of changes is
//! delivered to fresh replicas with `apply_remote` in random permutations and
//! random groupings, with duplicates, and sometimes a restart between two
//! batches (early arrivals must survive it). Every fresh replica ends with the
//! same heads, JSON, winners and conflict lists as the replicas that made the
//! changes, and nothing left waiting for dependencies.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use supamerge::{
    Cursor, LocalHub, PullRequest, Remote, RemoteChange, Replica, SyncPort, WorkspaceId,
    MAX_PULL_LIMIT, WIRE_VERSION,
};

/// How one fresh replica receives the changes.
#[derive(Debug, Clone)]
struct Delivery {
    /// Seeds the permutation, the duplicates and the batch cuts.
    seed: u64,
    /// Largest batch handed to one `apply_remote` call.
    max_batch: usize,
    /// Per mille of changes delivered a second time.
    dup_per_mille: u32,
    /// Per mille of batches followed by a restart.
    restart_per_mille: u32,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (any::<u64>(), 1usize..6, 0u32..400, 0u32..300).prop_map(
        |(seed, max_batch, dup_per_mille, restart_per_mille)| Delivery {
            seed,
            max_batch,
            dup_per_mille,
            restart_per_mille,
        },
    )
}

/// Every change of `ws` on the hub, in log order.
async fn all_changes(hub: &LocalHub, ws: WorkspaceId) -> Vec<RemoteChange> {
    let mut out = Vec::new();
    let mut cursor = Cursor(String::new());
    loop {
        let page = hub
            .pull(PullRequest {
                v: WIRE_VERSION,
                workspace: ws,
                cursor: cursor.clone(),
                limit: MAX_PULL_LIMIT,
                skip_snapshotted: false,
            })
            .await
            .expect("pull");
        out.extend(
            page.changes
                .into_iter()
                .map(|c| RemoteChange::from_envelope(ws, c.change)),
        );
        cursor = page.next_cursor;
        if !page.has_more {
            return out;
        }
    }
}

fn deliver(changes: &[RemoteChange], d: &Delivery, dir: &std::path::Path) -> Replica {
    let mut rng = rand::rngs::StdRng::seed_from_u64(d.seed);
    let mut items: Vec<RemoteChange> = changes.to_vec();
    for c in changes {
        if rng.gen_range(0..1000) < d.dup_per_mille {
            items.push(c.clone());
        }
    }
    items.shuffle(&mut rng);
    let open = || {
        Replica::builder(dir)
            .with_seed(d.seed)
            .open()
            .expect("open")
    };
    let mut replica = open();
    while !items.is_empty() {
        let n = rng.gen_range(1..=d.max_batch).min(items.len());
        let batch: Vec<RemoteChange> = items.drain(..n).collect();
        let report = replica.apply_remote(batch, None).expect("apply");
        assert!(
            report.rejected.is_empty(),
            "rejected: {:?}",
            report.rejected
        );
        if rng.gen_range(0..1000) < d.restart_per_mille {
            drop(replica);
            replica = open();
        }
    }
    replica
}

fn run(s: &Scenario, deliveries: &[Delivery]) {
    runtime().block_on(async {
        let hub = LocalHub::temporary().expect("hub");
        let remotes: Vec<Arc<dyn Remote>> = s
            .offsets
            .iter()
            .map(|_| Arc::new(hub.clone()) as Arc<dyn Remote>)
            .collect();
        let mut world = World::new(new_workspace(), remotes, &s.offsets);
        world.run(&s.actions).await;
        world.quiesce().await;
        let changes = all_changes(&hub, world.ws).await;
        let ids: BTreeSet<_> = world.doc_ids();
        let dir = tempfile::tempdir().expect("temp dir");
        let fresh: Vec<Replica> = deliveries
            .iter()
            .enumerate()
            .map(|(i, d)| deliver(&changes, d, &dir.path().join(format!("fresh-{i}"))))
            .collect();
        for (i, r) in fresh.iter().enumerate() {
            assert_eq!(
                r.pending_remote(),
                0,
                "fresh replica {i}: early arrivals left"
            );
            assert_eq!(
                r.pending(),
                0,
                "fresh replica {i}: applying queued an upload"
            );
        }
        let mut all: Vec<&Replica> = vec![world.nodes[0].replica()];
        all.extend(fresh.iter());
        assert_same_views(&all, &ids);
    });
}

#[test]
fn delivery_order_and_grouping_do_not_matter() {
    check(
        config(256, "proptest-regressions/order.txt"),
        (
            scenario(2..=4, 1..30, edit_or_sync),
            prop::collection::vec(delivery(), 1..4),
        ),
        |(s, d): &(Scenario, Vec<Delivery>)| run(s, d),
        |(s, d), fails| {
            // One delivery at a time is enough to fail?
            let d = (0..d.len())
                .map(|i| vec![d[i].clone()])
                .find(|one| fails(&(s.clone(), one.clone())))
                .unwrap_or(d);
            let s = minimize_scenario(s, &|s: &Scenario| fails(&(s.clone(), d.clone())));
            (s, d)
        },
    );
}
