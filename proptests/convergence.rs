//! Property: replicas that edit the same entities concurrently — with
//! partial pushes, single pages, lost requests and responses, duplicated and
//! delayed calls, restarts and skewed or backwards clocks — converge once
//! every replica syncs to quiescence (DESIGN.md §2, invariants 1, 2, 4, 5).
//!
//! Run with more cases: `PROPTEST_CASES=1000 cargo test --test convergence`.

mod common;

use std::sync::Arc;

use common::*;
use supamerge::{LocalHub, Remote};

fn run(s: &Scenario) {
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
        world.assert_converged(&hub).await;
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
}
