//! Does writing through the replica stall the async runtime? (issue 14,
//! item 2.) A writer task commits at a fixed rate (default 200 edits/s,
//! over 101 entities, default durability: every commit waits for sled's
//! fsync) while a timer task on the same runtime sleeps until a deadline
//! every 2 ms and records how late it woke. Two ways of writing, side by
//! side in the same run:
//!
//! - `async`: `AsyncReplica::patch_json(..).await` (the work runs on tokio's
//!   blocking pool);
//! - `blocking`: `Replica::patch_json(..)` called directly in the task (what
//!   the README used to show).
//!
//! each on a current-thread runtime and on a multi-thread runtime with two
//! workers, beside `None` (the timer alone: the machine's noise floor). Reported per case: the timer's lateness p50 / p99 / max in ms,
//! and the edits actually committed per second.
//!
//! `cargo bench --bench runtime_lateness -- [--secs S] [--rate R] [--runs N]`
//! (default 10 s per case, 200 edits/s, 3 runs; the table gives the median
//! of the runs with min–max). Under `cargo test --all-targets` (no
//! `--bench` argument) it runs one short smoke round.

use std::time::{Duration, Instant};

use serde_json::json;
use supamerge::{AsyncReplica, Collection, DocId, Replica, WorkspaceId};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Writer {
    /// No writer: the machine's own timer noise (the baseline).
    None,
    Async,
    Blocking,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavor {
    CurrentThread,
    MultiThread2,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    p50: f64,
    p99: f64,
    max: f64,
    edits_per_s: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn one_case(writer: Writer, flavor: Flavor, secs: f64, rate: f64) -> Sample {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::MultiThread2 => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .expect("runtime");
    let replica = Replica::open(dir.path().join("r")).expect("replica");
    let ws = WorkspaceId::new();
    let notes = Collection::new("notes").expect("collection");
    let ids: Vec<DocId> = (0..101)
        .map(|k| {
            replica
                .create_json(ws, &notes, &json!({"k": k, "n": 0}))
                .expect("create")
        })
        .collect();
    let run_for = Duration::from_secs_f64(secs);
    rt.block_on(async move {
        let stop_at = Instant::now() + run_for;
        let timer = tokio::spawn(async move {
            let period = Duration::from_millis(2);
            let mut late = Vec::new();
            let mut deadline = tokio::time::Instant::now() + period;
            while Instant::now() < stop_at {
                tokio::time::sleep_until(deadline).await;
                let now = tokio::time::Instant::now();
                late.push((now - deadline).as_secs_f64() * 1000.0);
                deadline = now + period;
            }
            late
        });
        let asynchronous = AsyncReplica::from(replica.clone());
        let writer_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while Instant::now() < stop_at {
                tick.tick().await;
                let id = ids[(n as usize) % ids.len()];
                let patch = json!({ "n": n });
                match writer {
                    Writer::None => {}
                    Writer::Async => {
                        asynchronous.patch_json(id, patch).await.expect("edit");
                    }
                    Writer::Blocking => {
                        replica.patch_json(&id, &patch).expect("edit");
                    }
                }
                if writer != Writer::None {
                    n += 1;
                }
            }
            n
        });
        let mut late = timer.await.expect("timer");
        let edits = writer_task.await.expect("writer");
        late.sort_by(f64::total_cmp);
        Sample {
            p50: percentile(&late, 0.50),
            p99: percentile(&late, 0.99),
            max: late.last().copied().unwrap_or(f64::NAN),
            edits_per_s: edits as f64 / secs,
        }
    })
}

fn arg(args: &[String], name: &str) -> Option<f64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The 1, 5 and 15 minute load averages (Linux), to print beside figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let secs = arg(&args, "--secs").unwrap_or(if bench { 10.0 } else { 0.5 });
    let rate = arg(&args, "--rate").unwrap_or(200.0);
    let runs = arg(&args, "--runs").unwrap_or(if bench { 3.0 } else { 1.0 }) as usize;
    println!(
        "timer lateness while a writer commits {rate} edits/s ({secs} s per case, {runs} run(s); median [min–max] over runs); load average at start: {}",
        load_average()
    );
    println!(
        "{:<16} {:<9} {:>22} {:>22} {:>22} {:>12}",
        "runtime", "writer", "p50 ms", "p99 ms", "max ms", "edits/s"
    );
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread2] {
        for writer in [Writer::None, Writer::Async, Writer::Blocking] {
            let samples: Vec<Sample> = (0..runs.max(1))
                .map(|_| one_case(writer, flavor, secs, rate))
                .collect();
            let cell = |f: fn(&Sample) -> f64| {
                let (m, lo, hi) = median_min_max(samples.iter().map(f).collect());
                format!("{m:.2} [{lo:.2}–{hi:.2}]")
            };
            println!(
                "{:<16} {:<9} {:>22} {:>22} {:>22} {:>12}",
                format!("{flavor:?}"),
                format!("{writer:?}"),
                cell(|s| s.p50),
                cell(|s| s.p99),
                cell(|s| s.max),
                format!(
                    "{:.0}",
                    median_min_max(samples.iter().map(|s| s.edits_per_s).collect()).0
                ),
            );
        }
    }
    println!("load average at the end: {}", load_average());
}
