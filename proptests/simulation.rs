//! The deterministic simulation, seed by seed: each seed makes a network of
//! 2–5 replicas (real `Replica`s on real sled, skewed clocks) on one
//! `LocalHub`, a script of edits and sync rounds through the simulated
//! network — lost, duplicated, reordered and delayed messages, 503s,
//! partitions, clock jumps, processes that die at effect boundaries and
//! reopen — then every replica syncs until quiescent and DESIGN.md's
//! invariants are checked (`World::assert_converged`). Every sync is the
//! product's own core (`supamerge::test_util::sim`).
//!
//! A failing seed replays exactly: `SUPAMERGE_SIM_SEED=<seed> cargo test
//! --test simulation -- --nocapture`. More seeds: `SUPAMERGE_SIM_SEEDS=2000`.
//! `--nocapture` prints the simulated passes per second.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use supamerge::test_util::sim::SimStats;
use supamerge::{LocalHub, Remote, WorkspaceId};

/// Seeds CI runs (`SUPAMERGE_SIM_SEEDS` overrides).
const CI_SEEDS: u64 = 96;

/// Mostly edits and simulated network rounds with every fault.
fn sim_action(n: usize) -> BoxedStrategy<Action> {
    let all = (1u8 << n) - 1;
    prop_oneof![
        10 => edit(n),
        4 => (1u8..=all, any::<u64>(), prop_oneof![Just(Faults::Chaos), Just(Faults::Lossy)])
            .prop_map(|(mask, seed, faults)| Action::Net { mask, seed, faults }),
        1 => (0..n, 1usize..16, any::<bool>())
            .prop_map(|(r, effects, crash)| Action::Cut { r, effects, crash }),
        1 => (0..n).prop_map(|r| Action::Restart { r }),
        1 => (0..n, 1i64..3_600_000).prop_map(|(r, ms)| Action::ClockBack { r, ms }),
        1 => Just(Action::Prune),
    ]
    .boxed()
}

/// The scenario of a seed (the same on every run and machine).
fn scenario_of(seed: u64) -> Scenario {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    scenario(2..=5, 10..50, sim_action)
        .new_tree(&mut runner)
        .expect("a scenario")
        .current()
}

/// Runs the seed; returns what the simulation did and every replica's view
/// (for the replay check).
fn run(seed: u64) -> (SimStats, Vec<String>) {
    let s = scenario_of(seed);
    runtime().block_on(async {
        let hub = LocalHub::temporary().expect("hub");
        let remotes: Vec<Arc<dyn Remote>> = s
            .offsets
            .iter()
            .map(|_| Arc::new(hub.clone()) as Arc<dyn Remote>)
            .collect();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&seed.to_le_bytes());
        let mut world = World::new(WorkspaceId::from_random(id), remotes, &s.offsets)
            .with_pruner(Arc::new(hub.clone()));
        world.run(&s.actions).await;
        world.quiesce().await;
        world.assert_converged(&hub).await;
        let views = world
            .doc_ids()
            .iter()
            .map(|d| format!("{d}: {:?}", view(world.nodes[0].replica(), d)))
            .collect();
        (world.sim.clone(), views)
    })
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SUPAMERGE_SIM_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("SUPAMERGE_SIM_SEEDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(CI_SEEDS);
    (0..n).collect()
}

#[test]
fn simulated_networks_converge() {
    let started = Instant::now();
    let mut total = SimStats::default();
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| run(seed));
        let stats = match result {
            Ok((stats, _)) => stats,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!(
                    "seed {seed} failed: {msg}\nscenario: {:#?}\n\
                     replay: SUPAMERGE_SIM_SEED={seed} cargo test --test simulation -- --nocapture",
                    scenario_of(seed)
                );
            }
        };
        total.passes += stats.passes;
        total.passes_done += stats.passes_done;
        total.passes_failed += stats.passes_failed;
        total.crashes += stats.crashes;
        total.effects += stats.effects;
        total.requests += stats.requests;
        total.requests_lost += stats.requests_lost;
        total.responses_lost += stats.responses_lost;
        total.duplicated += stats.duplicated;
        total.partitioned += stats.partitioned;
        total.server_errors += stats.server_errors;
        total.rebootstraps += stats.rebootstraps;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds in {secs:.1} s: {} simulated sync passes ({:.0} per second; {} finished, \
         {} failed under faults, {} crashed), {} effects, {} requests ({} lost, {} responses \
         lost, {} duplicated, {} refused by partitions, {} answered 503), {} re-bootstraps \
         after pruning",
        seeds().len(),
        total.passes,
        total.passes as f64 / secs,
        total.passes_done,
        total.passes_failed,
        total.crashes,
        total.effects,
        total.requests,
        total.requests_lost,
        total.responses_lost,
        total.duplicated,
        total.partitioned,
        total.server_errors,
        total.rebootstraps,
    );
    // The faults happened (a simulation that injects nothing proves little).
    if seeds().len() >= 16 {
        assert!(total.crashes > 0 && total.requests_lost > 0 && total.duplicated > 0);
        assert!(total.passes_failed > 0 && total.partitioned > 0);
        assert!(
            total.rebootstraps > 0,
            "no replica re-bootstrapped after pruning"
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17] {
        let (a, va) = run(seed);
        let (b, vb) = run(seed);
        assert_eq!(a, b, "seed {seed}: the simulation did something else");
        assert_eq!(va, vb, "seed {seed}: the replicas ended elsewhere");
        assert!(a.passes > 0);
    }
}
