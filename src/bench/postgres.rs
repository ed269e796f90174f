//! The workloads that go through the gateway and PostgreSQL: a throwaway
//! database with the stand-in and the migration, a gateway in-process on
//! `127.0.0.1:0`, a user JWT, one workspace.

use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{Automerge, Change, ReadDoc};

use super::stats::Samples;
use super::workloads::{am, eng, fresh_measurement, fresh_sync, rem, seed_remote, sync_once};
use super::{data, BenchConfig, BenchError, BenchResult, Better, Measurement, Outcome, Workload};
use crate::gateway::dev::{self, DevDatabase};
use crate::id::WorkspaceId;
use crate::protocol::wire::{Cursor, PullRequest, WIRE_VERSION};
use crate::remote::{Remote, SupabaseRemote};
use crate::replica::Replica;

struct Stack {
    db: DevDatabase,
    gateway: crate::gateway::GatewayHandle,
    remote: SupabaseRemote,
    /// The bench user's access token.
    token: String,
    /// The workspace the server created for the bench user.
    ws: WorkspaceId,
}

fn start(rt: &tokio::runtime::Runtime, w: Workload, admin: &str) -> BenchResult<Stack> {
    rt.block_on(async {
        let db = DevDatabase::create(admin, "supamerge_bench").await?;
        let gateway = db.spawn_gateway().await?;
        let token = dev::user_jwt(dev::DEV_JWT_SECRET, uuid::Uuid::new_v4(), 24 * 3600)?;
        let remote = SupabaseRemote::builder(gateway.url(), dev::DEV_ANON_KEY)
            .with_access_token(token.clone())
            .build()
            .map_err(|e| BenchError::Child {
                workload: w.name(),
                reason: format!("cannot build the Supabase client: {e}"),
            })?;
        let ws = remote.create_workspace("bench").await.map_err(rem(w))?;
        Ok(Stack {
            db,
            gateway,
            remote,
            token,
            ws,
        })
    })
}

fn stop(rt: &tokio::runtime::Runtime, stack: Stack) -> BenchResult<()> {
    rt.block_on(async {
        // A gateway that fails to shut down cleanly still lets the drop go on.
        let _ = stack.gateway.shutdown().await;
        stack.db.drop_now().await
    })?;
    Ok(())
}

pub(super) fn run(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    w: Workload,
    admin: &str,
) -> BenchResult<Outcome> {
    let stack = start(rt, w, admin)?;
    let result = match w {
        Workload::FreshDevicePostgres => fresh_device(rt, cfg, w, &stack.remote, stack.ws, false),
        Workload::FreshDevicePostgresSnapshots => {
            fresh_device(rt, cfg, w, &stack.remote, stack.ws, true)
        }
        Workload::LiveLatency | Workload::LiveLatency50 => {
            let t = super::live::LiveStack {
                url: stack.gateway.url(),
                token: stack.token.clone(),
                ws: stack.ws,
            };
            if w == Workload::LiveLatency {
                super::live::one(rt, cfg, &t)
            } else {
                super::live::fifty(rt, cfg, &t)
            }
        }
        Workload::PruneEditingTrace => prune_editing_trace(rt, cfg, &stack),
        _ => local_read(rt, cfg, &stack.remote, stack.ws),
    };
    stop(rt, stack)?;
    result
}

fn fresh_device(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    w: Workload,
    remote: &SupabaseRemote,
    ws: WorkspaceId,
    snapshots: bool,
) -> BenchResult<Outcome> {
    let gens = seed_remote(rt, cfg, w, remote, ws, snapshots)?;
    let (engine, report) = fresh_sync(rt, cfg, w, remote, ws, snapshots, gens.len())?;
    fresh_measurement(
        rt,
        w,
        &gens,
        engine,
        &report,
        "the gateway + PostgreSQL",
        snapshots,
    )
}

fn local_read(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    remote: &SupabaseRemote,
    ws: WorkspaceId,
) -> BenchResult<Outcome> {
    const W: Workload = Workload::LocalReadVsSupabase;
    let coll = data::collection()?;
    let g = data::entity_with_changes(42, 10, &coll).map_err(am(W))?;
    rt.block_on(data::push_all(remote, ws, g.envelopes(&coll)))
        .map_err(rem(W))?;
    let dir = cfg.tempdir("replica directory")?;
    let replica = Replica::open(dir.path()).map_err(eng(W))?;
    sync_once(
        rt,
        W,
        &replica,
        remote,
        &super::workloads::changes_only(),
        ws,
    )?;
    let expected = replica.get_json(&g.id).map_err(eng(W))?;

    let mut local = Samples::new();
    for _ in 0..cfg.sizes.reads {
        let t = Instant::now();
        let v = replica.get_json(&g.id).map_err(eng(W))?;
        local.push(t.elapsed());
        std::hint::black_box(v);
    }
    let mut fetched = Samples::new();
    for _ in 0..cfg.sizes.reads {
        let t = Instant::now();
        let page = rt
            .block_on(remote.pull(PullRequest {
                v: WIRE_VERSION,
                workspace: ws,
                cursor: Cursor(String::new()),
                limit: 1_000,
                skip_snapshotted: false,
            }))
            .map_err(rem(W))?;
        let changes = page
            .changes
            .into_iter()
            .filter(|c| c.change.doc_id == g.id)
            .map(|c| Change::from_bytes(c.change.bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| BenchError::Decode {
                workload: W.name(),
                source: Box::new(source),
            })?;
        let mut doc = Automerge::new();
        doc.apply_changes(changes).map_err(am(W))?;
        let v = crate::entity::data_json(crate::conflict::LwwView::new(
            &doc,
            &crate::conflict::EffectiveClock::new(),
        ));
        fetched.push(t.elapsed());
        if v != expected {
            return Err(BenchError::Mismatch {
                workload: W.name(),
                what: "the fetched entity differs from the local one".to_owned(),
            });
        }
    }
    Ok(Outcome::Ok(
        Measurement::new(
            W,
            format!("read one entity (10 changes) as JSON from the replica, p50 of {} reads (document cached after the first read)", cfg.sizes.reads),
            "us",
            Better::Lower,
            local.percentile(50.0),
            "fetch the entity's changes through the gateway + PostgreSQL (supamerge_pull RPC) and materialise it, p50",
            fetched.percentile(50.0),
            None,
        )
        .with_extra("engine_p99_us", local.percentile(99.0))
        .with_extra("baseline_p99_us", fetched.percentile(99.0)),
    ))
}

/// Fresh devices per side of [`prune_editing_trace`] (median, min–max).
const PRUNE_FRESH_RUNS: usize = 3;

/// The server's bytes (changes, snapshots and pruned hashes, with their
/// indexes and TOAST, after `VACUUM FULL` so that deleted rows do not
/// count) and the changes it holds (in the log plus pruned).
async fn server_bytes(db: &tokio_postgres::Client) -> Result<(f64, f64), tokio_postgres::Error> {
    // One statement per call: VACUUM cannot run in the implicit transaction
    // of a multi-statement query.
    for table in [
        "public.changes",
        "public.snapshots",
        "supamerge_private.pruned_changes",
    ] {
        db.batch_execute(&format!("vacuum full {table}")).await?;
    }
    let row = db
        .query_one(
            "select (pg_total_relation_size('public.changes') \
                     + pg_total_relation_size('public.snapshots') \
                     + pg_total_relation_size('supamerge_private.pruned_changes'))::float8, \
                    ((select count(*) from public.changes) \
                     + (select coalesce(sum(octet_length(hashes) / 32), 0) \
                          from supamerge_private.pruned_changes))::float8",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The editing trace typed on one replica and pushed through the gateway,
/// a snapshot of it uploaded; then, in the same run: server bytes per
/// change and a fresh device's sync (bootstrapping from the snapshot)
/// before and after `supamerge_prune('0')`.
fn prune_editing_trace(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    stack: &Stack,
) -> BenchResult<Outcome> {
    const W: Workload = Workload::PruneEditingTrace;
    let Some(path) = cfg.trace.clone().filter(|p| p.exists()) else {
        return Ok(Outcome::skipped(
            W,
            "the automerge-paper trace is absent; pass --trace PATH",
        ));
    };
    let pg = |e: tokio_postgres::Error| BenchError::Child {
        workload: W.name(),
        reason: format!(
            "PostgreSQL: {}",
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        ),
    };
    let trace = data::load_trace(&path)?;
    let patches: Vec<data::Patch> = match cfg.sizes.trace_txns {
        Some(k) => trace.patches.iter().take(k).cloned().collect(),
        None => trace.patches.clone(),
    };
    let n = patches.len();
    let coll = data::collection()?;
    let ws = stack.ws;
    let dir = cfg.tempdir("replica directory")?;
    let writer = Replica::builder(dir.path())
        .with_durability(crate::store::Durability::Buffered {
            flush_every_ms: 500,
        })
        .open()
        .map_err(eng(W))?;
    let id = writer
        .create_json(ws, &coll, &serde_json::json!({}))
        .map_err(eng(W))?;
    let (text, _) = writer
        .transact(&id, |tx, data| {
            tx.put_object(data, "text", automerge::ObjType::Text)
        })
        .map_err(eng(W))?;
    for (pos, del, ins) in &patches {
        writer
            .transact(&id, |tx, _| tx.splice_text(&text, *pos, *del as isize, ins))
            .map_err(eng(W))?;
    }
    writer.flush().map_err(eng(W))?;
    // Push everything, then (the same pass, after its pull) upload the
    // document's snapshot covering the whole log.
    let seed_cfg = crate::sync::SyncConfig {
        snapshot_threshold: 1,
        bootstrap_from_snapshots: false,
        ..crate::sync::SyncConfig::default()
    };
    let seeded = sync_once(rt, W, &writer, &stack.remote, &seed_cfg, ws)?;
    if seeded.snapshots_uploaded != 1 {
        return Err(BenchError::Mismatch {
            workload: W.name(),
            what: format!(
                "the writer uploaded {} snapshots, expected 1 ({} skipped)",
                seeded.snapshots_uploaded, seeded.snapshots_skipped
            ),
        });
    }
    let want = writer
        .with_doc(&id, |d| d.text(&text))
        .map_err(eng(W))?
        .map_err(am(W))?;
    let su = rt.block_on(dev::connect(&stack.db.superuser_url()?))?;
    let fresh = |label: &str| -> BenchResult<(Samples, usize)> {
        let mut times = Samples::new();
        let mut pulled = 0;
        for _ in 0..PRUNE_FRESH_RUNS {
            let d = cfg.tempdir("fresh replica directory")?;
            let r = Replica::open(d.path()).map_err(eng(W))?;
            let sync_cfg = crate::sync::SyncConfig {
                snapshot_threshold: 0,
                ..crate::sync::SyncConfig::default()
            };
            let t = Instant::now();
            let report = sync_once(rt, W, &r, &stack.remote, &sync_cfg, ws)?;
            times.push(t.elapsed());
            pulled = report.pulled;
            let got = r
                .with_doc(&id, |d| d.text(&text))
                .map_err(eng(W))?
                .map_err(am(W))?;
            if got != want {
                return Err(BenchError::Mismatch {
                    workload: W.name(),
                    what: format!("a fresh device {label} pruning holds another text"),
                });
            }
        }
        Ok((times, pulled))
    };
    let (bytes_before, changes) = rt.block_on(server_bytes(&su)).map_err(pg)?;
    let (fresh_before, pulled_before) = fresh("before")?;
    let t = Instant::now();
    let pruned: i64 = rt
        .block_on(su.query_one(
            "select (public.supamerge_prune('0') ->> 'pruned')::int8",
            &[],
        ))
        .map_err(pg)?
        .get(0);
    let prune_s = t.elapsed().as_secs_f64();
    let (bytes_after, changes_after) = rt.block_on(server_bytes(&su)).map_err(pg)?;
    let (fresh_after, pulled_after) = fresh("after")?;
    if changes_after != changes {
        return Err(BenchError::Mismatch {
            workload: W.name(),
            what: format!("{changes} changes before pruning, {changes_after} after"),
        });
    }
    let per = |b: f64| if changes > 0.0 { b / changes } else { 0.0 };
    let ms = |s: &Samples, q: f64| s.percentile(q) / 1000.0;
    Ok(Outcome::Ok(
        Measurement::new(
            W,
            format!(
                "server bytes per change (changes + snapshots + pruned hashes, indexes and TOAST, \
                 after VACUUM FULL) once the automerge-paper trace ({n} edits) is pushed through \
                 the gateway and snapshotted, after supamerge_prune('0')"
            ),
            "bytes/change",
            Better::Lower,
            per(bytes_after),
            "the same before pruning",
            per(bytes_before),
            None,
        )
        .with_extra("changes", changes)
        .with_extra("pruned", pruned as f64)
        .with_extra("prune_s", prune_s)
        .with_extra("bytes_before", bytes_before)
        .with_extra("bytes_after", bytes_after)
        .with_extra("fresh_before_ms_median", ms(&fresh_before, 50.0))
        .with_extra("fresh_before_ms_min", ms(&fresh_before, 0.0))
        .with_extra("fresh_before_ms_max", ms(&fresh_before, 100.0))
        .with_extra("fresh_after_ms_median", ms(&fresh_after, 50.0))
        .with_extra("fresh_after_ms_min", ms(&fresh_after, 0.0))
        .with_extra("fresh_after_ms_max", ms(&fresh_after, 100.0))
        .with_extra("fresh_before_changes_pulled", pulled_before as f64)
        .with_extra("fresh_after_changes_pulled", pulled_after as f64),
    ))
}
