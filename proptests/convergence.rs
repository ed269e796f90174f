//! Property: replicas that edit the same entities concurrently — with
//! partial pushes, single pages, lost requests and responses, duplicated and
//! delayed calls, restarts and skewed or backwards clocks — converge once
//! every replica syncs to quiescence (DESIGN.md §2, invariants 1, 2, 4, 5).
//!
//! Run with more cases: `PROPTEST_CASES=1000 cargo test --test convergence`.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use supamerge::{LocalHub, Remote};

/// Over all cases: changes pruned, and re-bootstraps of replicas whose
/// cursor was behind the hub's horizon (the pruning step did something).
static PRUNED: AtomicUsize = AtomicUsize::new(0);
static REBOOTSTRAPS: AtomicU64 = AtomicU64::new(0);

fn run(s: &Scenario) {
    runtime().block_on(async {
        let hub = LocalHub::temporary().expect("hub");
        let remotes: Vec<Arc<dyn Remote>> = s
            .offsets
            .iter()
            .map(|_| Arc::new(hub.clone()) as Arc<dyn Remote>)
            .collect();
        // Action::Prune: the hub prunes everything folded into snapshots at
        // random moments; no client may miss a change (issue 17).
        let mut world =
            World::new(new_workspace(), remotes, &s.offsets).with_pruner(Arc::new(hub.clone()));
        world.run(&s.actions).await;
        world.quiesce().await;
        world.assert_converged(&hub).await;
        PRUNED.fetch_add(world.pruned, Ordering::Relaxed);
        REBOOTSTRAPS.fetch_add(world.sim.rebootstraps, Ordering::Relaxed);
    });
}

#[test]
fn replicas_converge() {
    check(
        config(384, "proptest-regressions/convergence.txt"),
        scenario(2..=5, 1..60, any_action),
        run,
        minimize_scenario,
    );
    // The pruning step happened and sent replicas back to the snapshots.
    if cases(384) >= 64 {
        let (pruned, rebootstraps) = (
            PRUNED.load(Ordering::Relaxed),
            REBOOTSTRAPS.load(Ordering::Relaxed),
        );
        println!("pruned {pruned} changes; {rebootstraps} re-bootstraps");
        assert!(pruned > 0, "no case pruned anything");
        assert!(rebootstraps > 0, "no case re-bootstrapped a replica");
    }
}
