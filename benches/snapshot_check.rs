//! What trusting a downloaded snapshot costs (issue 11, item 4): loading a
//! `save()` (what a fresh device does anyway) against loading it and
//! computing the digest of its changes three ways — the change metadata
//! (`get_changes_meta`, what `SnapshotDigest::of_document` uses), a walk from the
//! heads through `get_change_meta_by_hash`, and the changes themselves
//! (`get_changes`). Documents of 10 changes (the fresh-device workloads'
//! shape) and of 1,000.
//!
//! `cargo bench --bench snapshot_check` for the times. For instruction
//! counts, run one variant alone under callgrind:
//! `SNAPSHOT_CHECK_ONLY=<variant>/<changes> valgrind --tool=callgrind
//! target/release/deps/snapshot_check-*` (2,000 repetitions for 10 changes,
//! 20 for 1,000; the variant `setup` runs none, to subtract; see
//! docs/benchmarks.md).

use std::collections::HashSet;

use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash};
use criterion::{black_box, Criterion};
use supamerge::SnapshotDigest;

/// A saved document of `n` changes by two actors.
fn saved(n: usize) -> Vec<u8> {
    let mut doc = Automerge::new();
    for i in 0..n {
        doc.set_actor(automerge::ActorId::from(vec![(i % 2) as u8 + 1; 16]));
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "n", i as i64).expect("put");
        tx.put(automerge::ROOT, format!("k{}", i % 7), "value")
            .expect("put");
        tx.commit();
    }
    doc.save()
}

fn walk_from_heads(doc: &Automerge) -> SnapshotDigest {
    let mut seen: HashSet<ChangeHash> = HashSet::new();
    let mut stack = doc.get_heads();
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        if let Some(meta) = doc.get_change_meta_by_hash(&h) {
            stack.extend(meta.deps.iter().copied());
        }
    }
    SnapshotDigest::of_hashes(seen)
}

fn via_changes(doc: &Automerge) -> SnapshotDigest {
    SnapshotDigest::of_hashes(doc.get_changes(&[]).iter().map(|c| c.hash()))
}

const VARIANTS: [&str; 4] = ["load", "load+meta", "load+walk", "load+changes"];

fn run(variant: &str, bytes: &[u8]) -> Option<SnapshotDigest> {
    let doc = Automerge::load(bytes).expect("load");
    match variant {
        "load" => {
            black_box(&doc);
            None
        }
        "load+meta" => Some(SnapshotDigest::of_document(&doc)),
        "load+walk" => Some(walk_from_heads(&doc)),
        _ => Some(via_changes(&doc)),
    }
}

fn benches(c: &mut Criterion) {
    for n in [10usize, 1000] {
        let bytes = saved(n);
        // The three digests agree.
        let d = run("load+meta", &bytes);
        assert_eq!(d, run("load+walk", &bytes));
        assert_eq!(d, run("load+changes", &bytes));
        let mut group = c.benchmark_group(format!("snapshot_check/{n}_changes"));
        group.sample_size(if n > 100 { 20 } else { 50 });
        for v in VARIANTS {
            group.bench_function(v, |b| b.iter(|| run(v, black_box(&bytes))));
        }
        group.finish();
    }
}

fn main() {
    // One variant alone, many times, for callgrind's instruction counts.
    if let Ok(only) = std::env::var("SNAPSHOT_CHECK_ONLY") {
        let (variant, n) = only.split_once('/').expect("variant/changes");
        let n: usize = n.parse().expect("a number of changes");
        let bytes = saved(n);
        let reps = if n > 100 { 20 } else { 2000 };
        if variant == "setup" {
            // Process start and the document alone: subtracted from the others.
            black_box(&bytes);
            return;
        }
        for _ in 0..reps {
            black_box(run(variant, &bytes));
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
