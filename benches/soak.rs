//! The soak (issue 14, items 4 and 5): a writing replica commits a fixed
//! number of edits at a fixed rate over 101 entities; its sync engine pushes
//! them to an embedded hub (real sled), and a second replica's engine pulls
//! them. Every few seconds it prints the process's RSS (all three live in
//! this process), the documents in each replica's cache and each
//! directory's size; at the end, each directory's size against the total
//! `save()` size of the documents (the same documents on all three).
//!
//! `cargo bench --bench soak -- [--edits N] [--rate R] [--every S] [--budget MIB]`
//! (default 36,000 edits at 200 edits/s: three minutes; a sample every 10 s;
//! `--budget` sets both replicas' document-cache budget). Under
//! `cargo test --all-targets` (no `--bench`) it runs a small smoke round.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use supamerge::{
    AsyncReplica, Collection, DocId, LocalHub, Remote, Replica, SyncEngine, WorkspaceId,
};

fn arg(args: &[String], name: &str) -> Option<f64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// The resident set of this process, in MiB (Linux; NaN elsewhere).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&p),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn open(path: &Path, budget: Option<usize>) -> Replica {
    let mut b = Replica::builder(path);
    if let Some(bytes) = budget {
        b = b.with_cache_bytes(bytes);
    }
    b.open().expect("open replica")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let edits = arg(&args, "--edits").unwrap_or(if bench { 36_000.0 } else { 600.0 }) as u64;
    let rate = arg(&args, "--rate").unwrap_or(if bench { 200.0 } else { 2_000.0 });
    let every = arg(&args, "--every").unwrap_or(if bench { 10.0 } else { 0.2 });
    let budget = arg(&args, "--budget").map(|m| (m * 1024.0 * 1024.0) as usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(soak(edits, rate, every, budget));
}

async fn soak(edits: u64, rate: f64, every: f64, budget: Option<usize>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (hub_dir, w_dir, p_dir) = (
        dir.path().join("hub"),
        dir.path().join("writer"),
        dir.path().join("puller"),
    );
    let hub = LocalHub::open(&hub_dir).expect("hub");
    let remote: Arc<dyn Remote> = Arc::new(hub.clone());
    let writer = AsyncReplica::from(open(&w_dir, budget));
    let puller = open(&p_dir, budget);
    let ws = WorkspaceId::new();
    let notes = Collection::new("notes").expect("collection");
    // The puller polls every second (standing in for live updates).
    let w_sync = SyncEngine::builder(writer.replica().clone(), remote.clone()).spawn();
    let p_sync = SyncEngine::builder(puller.clone(), remote.clone())
        .with_interval(Some(Duration::from_secs(1)))
        .spawn();
    p_sync.join(ws).await.expect("join");

    let mut ids: Vec<DocId> = Vec::new();
    for k in 0..101 {
        let id = writer
            .create_json(ws, &notes, json!({"k": k, "n": 0, "text": "x"}))
            .await
            .expect("create");
        ids.push(id);
    }
    println!(
        "soak: {edits} edits at {rate}/s over {} entities; budget {}",
        ids.len(),
        budget.map_or("default".to_string(), |b| format!(
            "{:.0} MiB",
            mib(b as u64)
        ))
    );
    println!(
        "{:>7} {:>8} {:>9} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12}",
        "t (s)",
        "edits",
        "RSS MiB",
        "writer MiB",
        "puller MiB",
        "hub MiB",
        "w cached",
        "p cached",
        "cache est MiB"
    );
    let started = Instant::now();
    let sample = |n: u64| {
        println!(
            "{:>7.0} {:>8} {:>9.1} {:>12.1} {:>12.1} {:>12.1} {:>10} {:>10} {:>12.1}",
            started.elapsed().as_secs_f64(),
            n,
            rss_mib(),
            mib(dir_bytes(&w_dir)),
            mib(dir_bytes(&p_dir)),
            mib(dir_bytes(&hub_dir)),
            writer.replica().cached_docs(),
            puller.cached_docs(),
            mib((writer.replica().cached_bytes() + puller.cached_bytes()) as u64),
        );
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_sample = Instant::now();
    for n in 0..edits {
        tick.tick().await;
        let id = ids[(n as usize) % ids.len()];
        // A counter-like field and a short line of text, as a todo or
        // note app would write.
        writer
            .patch_json(id, json!({ "n": n, "text": format!("edit {n}") }))
            .await
            .expect("edit");
        if Instant::now() >= next_sample {
            sample(n);
            next_sample += Duration::from_secs_f64(every);
        }
    }
    w_sync.sync_now().await.expect("writer's last push");
    p_sync.sync_now().await.expect("puller's last pull");
    sample(edits);

    // The documents' saved size, and whether the puller has them all.
    let mut saved = 0u64;
    let mut differ = 0;
    for id in &ids {
        let id = *id;
        let (bytes, heads) = writer.run(move |r| r.save(&id)).await.expect("save");
        saved += bytes.len() as u64;
        if puller.heads(&id).expect("puller heads") != heads {
            differ += 1;
        }
    }
    assert_eq!(differ, 0, "the puller has every change");
    w_sync.shutdown().await;
    p_sync.shutdown().await;
    writer.flush().await.expect("flush");
    puller.flush().expect("flush");
    let (w, p, h) = (dir_bytes(&w_dir), dir_bytes(&p_dir), dir_bytes(&hub_dir));
    println!(
        "saved {:.2} MiB; disk / saved: writer {:.1}x, puller {:.1}x, hub {:.1}x; hub bytes per change {:.0}; RSS {:.1} MiB",
        mib(saved),
        w as f64 / saved as f64,
        p as f64 / saved as f64,
        h as f64 / saved as f64,
        h as f64 / (edits + 101) as f64,
        rss_mib()
    );
}
