//! `live_latency` and `live_latency_50`: how long an edit takes to reach
//! other devices through the gateway + PostgreSQL with Realtime.
//!
//! Replica A edits one document ([`Replica::patch_json`], a commit); every
//! subscriber replica runs a [`SyncEngine`] whose poll interval is an hour,
//! so only the nudge (`realtime.send` in the push → the gateway's
//! websocket → the engine's subscription → a pull) brings the change. The
//! latency of one edit at one subscriber is from the commit on A to
//! `DocChanged { origin: Remote }` on that subscriber's engine, with the
//! edit's value. Edits are made one at a time (the next after every
//! subscriber has the last). A's engine pushes 1 ms after a commit (its
//! commit debounce; the default 250 ms would add up to that much).
//!
//! Each replica has its own `SupabaseRemote`, hence its own Realtime
//! websocket, as separate devices of one user would. A probe subscription on
//! the first subscriber's client records when each nudge arrives there, so
//! the latency splits into "commit → push → `realtime.send` → NOTIFY → the
//! gateway → the websocket" (`engine_nudge_*`) and the subscriber's
//! debounce, pull and apply (the rest).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::stats::Samples;
use super::workloads::eng;
use super::{
    data, BenchConfig, BenchError, BenchResult, Better, Measurement, Outcome, Target, Workload,
};
use crate::id::{DocId, WorkspaceId};
use crate::remote::{LiveUpdates, NudgeKind, Remote, Subscription, SupabaseRemote};
use crate::replica::{Origin, Replica};
use crate::sync::{SyncEngine, SyncEvent, SyncHandle};

/// How the subscribers learn of an edit.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// Realtime nudges; the poll interval is an hour.
    Live,
    /// No live updates: the engines poll every this often.
    Polling(Duration),
}

/// What a run needs of the stack: the gateway's URL and a user's token.
pub(super) struct LiveStack {
    pub(super) url: String,
    pub(super) token: String,
    pub(super) ws: WorkspaceId,
}

/// Longest wait for one edit at every subscriber (a guard against a hang).
const GUARD: Duration = Duration::from_secs(30);

fn remote_of(w: Workload, t: &LiveStack) -> BenchResult<SupabaseRemote> {
    SupabaseRemote::builder(&t.url, crate::gateway::dev::DEV_ANON_KEY)
        .with_access_token(t.token.clone())
        .build()
        .map_err(|e| BenchError::Child {
            workload: w.name(),
            reason: format!("cannot build the Supabase client: {e}"),
        })
}

/// Latencies of one run: per (edit, subscriber), per edit until the last
/// subscriber had it, and (live) per edit until the nudge reached the first
/// subscriber's websocket client (the rest is its pull and apply).
pub(super) struct Run {
    pub(super) each: Samples,
    pub(super) all: Samples,
    pub(super) nudge: Samples,
}

/// `edits` edits on A, `subscribers` replicas watching.
pub(super) fn measure(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    w: Workload,
    t: &LiveStack,
    subscribers: usize,
    mode: Mode,
    edits: usize,
) -> BenchResult<Run> {
    let dir = cfg.tempdir("live latency replicas")?;
    rt.block_on(async {
        let coll = data::collection()?;
        let a = Replica::open(dir.path().join("a")).map_err(eng(w))?;
        let id = a
            .create_json(t.ws, &coll, &json!({"n": -1}))
            .map_err(eng(w))?;
        let ea = SyncEngine::builder(a.clone(), std::sync::Arc::new(remote_of(w, t)?))
            .with_workspaces([t.ws])
            .with_debounce(Duration::from_millis(1))
            .with_interval(Some(Duration::from_secs(3600)))
            .with_live_interval(Some(Duration::from_secs(3600)))
            .spawn();
        ea.sync_now().await.map_err(|e| sync_err(w, &e))?;

        let (tx, mut arrivals) = mpsc::unbounded_channel::<(usize, i64, Instant)>();
        let (nudge_tx, mut nudges) = mpsc::unbounded_channel::<Instant>();
        let mut engines: Vec<SyncHandle> = Vec::new();
        let mut probe = None;
        for k in 0..subscribers {
            let r = Replica::open(dir.path().join(format!("b{k}"))).map_err(eng(w))?;
            let supabase = remote_of(w, t)?;
            if k == 0 {
                if let Mode::Live = mode {
                    // A second subscription on the first subscriber's own
                    // client: when its nudges arrive.
                    let sub = supabase
                        .realtime()
                        .subscribe(t.ws)
                        .map_err(|e| never(w, &format!("a probe subscription ({e})")))?;
                    probe = Some(tokio::spawn(report_nudges(sub, nudge_tx.clone())));
                }
            }
            let remote: std::sync::Arc<dyn Remote> = std::sync::Arc::new(supabase);
            let b = SyncEngine::builder(r.clone(), remote)
                .with_workspaces([t.ws])
                .with_debounce(Duration::from_millis(1));
            let b = match mode {
                Mode::Live => b
                    .with_interval(Some(Duration::from_secs(3600)))
                    .with_live_interval(Some(Duration::from_secs(3600))),
                Mode::Polling(every) => b.with_live_updates(false).with_interval(Some(every)),
            }
            .spawn();
            b.sync_now().await.map_err(|e| sync_err(w, &e))?;
            if let Mode::Live = mode {
                let mut st = b.status();
                tokio::time::timeout(
                    GUARD,
                    st.wait_for(|s| s.live.as_ref().is_some_and(|l| l.is_live())),
                )
                .await
                .map_err(|_| never(w, "a subscriber's channel never joined"))?
                .map_err(|_| never(w, "a subscriber's engine stopped"))?;
            }
            tokio::spawn(report_arrivals(k, r, id, b.events(), tx.clone()));
            engines.push(b);
        }

        let mut each = Samples::new();
        let mut all = Samples::new();
        let mut nudge = Samples::new();
        for i in 0..edits {
            let n = i64::try_from(i).unwrap_or(i64::MAX);
            while nudges.try_recv().is_ok() {}
            let start = Instant::now();
            a.patch_json(&id, &json!({ "n": n })).map_err(eng(w))?;
            let mut seen = vec![false; subscribers];
            let mut left = subscribers;
            while left > 0 {
                let (k, got, at) = tokio::time::timeout(GUARD, arrivals.recv())
                    .await
                    .map_err(|_| never(w, &format!("edit {i} did not reach every subscriber")))?
                    .ok_or_else(|| never(w, "the subscribers stopped"))?;
                if got == n && !seen[k] {
                    seen[k] = true;
                    left -= 1;
                    each.push(at - start);
                    if left == 0 {
                        all.push(at - start);
                    }
                }
            }
            if let Ok(at) = nudges.try_recv() {
                nudge.push(at.saturating_duration_since(start));
            }
        }
        if let Some(p) = probe {
            p.abort();
        }
        ea.shutdown().await;
        for b in &engines {
            b.shutdown().await;
        }
        Ok(Run { each, all, nudge })
    })
}

/// Forwards when each push's nudge arrives.
async fn report_nudges(mut sub: Subscription, tx: mpsc::UnboundedSender<Instant>) {
    while let Some(n) = sub.next().await {
        if matches!(n.kind, NudgeKind::Pushed { .. }) && tx.send(Instant::now()).is_err() {
            return;
        }
    }
}

/// Forwards (subscriber, value of `n`, when) for each remote change of `id`.
async fn report_arrivals(
    k: usize,
    replica: Replica,
    id: DocId,
    mut events: broadcast::Receiver<SyncEvent>,
    tx: mpsc::UnboundedSender<(usize, i64, Instant)>,
) {
    loop {
        match events.recv().await {
            Ok(SyncEvent::DocChanged {
                id: got,
                origin: Origin::Remote,
            }) if got == id => {
                let at = Instant::now();
                let n = replica
                    .get_json(&id)
                    .ok()
                    .and_then(|v| v["n"].as_i64())
                    .unwrap_or(i64::MIN);
                if tx.send((k, n, at)).is_err() {
                    return;
                }
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn never(w: Workload, what: &str) -> BenchError {
    BenchError::Mismatch {
        workload: w.name(),
        what: format!("{what} within {} s", GUARD.as_secs()),
    }
}

fn sync_err(w: Workload, e: &crate::sync::SyncError) -> BenchError {
    BenchError::Child {
        workload: w.name(),
        reason: format!("sync failed: {e}"),
    }
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// `live_latency`: one subscriber, Realtime against polling every 250 ms.
pub(super) fn one(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    t: &LiveStack,
) -> BenchResult<Outcome> {
    const W: Workload = Workload::LiveLatency;
    let edits = cfg.sizes.live_edits;
    let live = measure(rt, cfg, W, t, 1, Mode::Live, edits)?;
    let poll = Duration::from_millis(250);
    let polled = measure(rt, cfg, W, t, 1, Mode::Polling(poll), edits)?;
    Ok(Outcome::Ok(with_percentiles(
        Measurement::new(
            W,
            format!("commit on replica A to DocChanged {{ origin: Remote }} on replica B through the gateway + PostgreSQL with Realtime, p95 of {edits} edits made one at a time (B polls once an hour: the nudge brings it; A's commit debounce 1 ms)"),
            "ms",
            Better::Lower,
            ms(live.each.percentile(95.0)),
            "the same without live updates, B polling every 250 ms, p95",
            ms(polled.each.percentile(95.0)),
            Some(Target::EngineBelow {
                value: 50.0,
                rss_mb: None,
            }),
        ),
        &live.each,
        &polled.each,
    )
    .with_extra("engine_nudge_p50_ms", ms(live.nudge.percentile(50.0)))
    .with_extra("engine_nudge_p95_ms", ms(live.nudge.percentile(95.0)))))
}

/// `live_latency_50`: fifty subscribers against one.
pub(super) fn fifty(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    t: &LiveStack,
) -> BenchResult<Outcome> {
    const W: Workload = Workload::LiveLatency50;
    let edits = cfg.sizes.live_edits;
    let subscribers = cfg.sizes.live_subscribers;
    let many = measure(rt, cfg, W, t, subscribers, Mode::Live, edits)?;
    let one = measure(rt, cfg, W, t, 1, Mode::Live, edits)?;
    Ok(Outcome::Ok(
        with_percentiles(
            Measurement::new(
                W,
                format!("as live_latency with {subscribers} subscribed replicas (each its own websocket and engine), p95 over every (edit, replica) of {edits} edits"),
                "ms",
                Better::Lower,
                ms(many.each.percentile(95.0)),
                "the same with 1 subscribed replica, p95",
                ms(one.each.percentile(95.0)),
                Some(Target::EngineBelow {
                    value: 150.0,
                    rss_mb: None,
                }),
            ),
            &many.each,
            &one.each,
        )
        .with_extra("engine_nudge_p50_ms", ms(many.nudge.percentile(50.0)))
        .with_extra("engine_nudge_p95_ms", ms(many.nudge.percentile(95.0)))
        .with_extra("engine_all_p50_ms", ms(many.all.percentile(50.0)))
        .with_extra("engine_all_p95_ms", ms(many.all.percentile(95.0)))
        .with_extra("engine_samples", many.each.len() as f64),
    ))
}

fn with_percentiles(m: Measurement, engine: &Samples, baseline: &Samples) -> Measurement {
    m.with_extra("engine_p50_ms", ms(engine.percentile(50.0)))
        .with_extra("engine_p95_ms", ms(engine.percentile(95.0)))
        .with_extra("engine_p99_ms", ms(engine.percentile(99.0)))
        .with_extra("engine_max_ms", ms(engine.percentile(100.0)))
        .with_extra("baseline_p50_ms", ms(baseline.percentile(50.0)))
        .with_extra("baseline_p95_ms", ms(baseline.percentile(95.0)))
        .with_extra("baseline_p99_ms", ms(baseline.percentile(99.0)))
}
