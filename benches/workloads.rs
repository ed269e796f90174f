//! Criterion benches over the same workload code as `supamerge bench`
//! (`supamerge::bench`), at the `--quick` sizes so that `cargo test --benches`
//! (one iteration each) stays fast. Each bench reports the whole workload,
//! engine and baseline together; the ratios are what `supamerge bench` prints.

use criterion::{criterion_group, criterion_main, Criterion};
use supamerge::bench::{run_one, BenchConfig, Sizes, Workload};

fn workloads(c: &mut Criterion) {
    let mut cfg = BenchConfig::new(Sizes::quick());
    cfg.trace = Some(supamerge::bench::default_trace_path());
    let mut group = c.benchmark_group("workloads");
    group.sample_size(10);
    for w in Workload::ALL.into_iter().filter(|w| !w.needs_postgres()) {
        group.bench_function(w.name(), |b| {
            b.iter(|| match run_one(&cfg, w) {
                Ok(o) => o,
                Err(e) => panic!("{}: {e}", w.name()),
            })
        });
    }
    group.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);
