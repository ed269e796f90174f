//! The workloads that go through the gateway and PostgreSQL: a throwaway
//! database with the stand-in and the migration, a gateway in-process on
//! `127.0.0.1:0`, a user JWT, one workspace.

use std::time::Instant;

use automerge::{Automerge, Change};

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
