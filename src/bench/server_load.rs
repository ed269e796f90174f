//! `server_load`: K concurrent clients through the gateway + PostgreSQL
//! (issue 17 item 2), against a plain-SQL ceiling measured in the same run.
//!
//! For every K of [`Sizes::load_clients`](super::Sizes), every workspace
//! layout ([`Layout::Shared`]: all K clients in one workspace;
//! [`Layout::Separate`]: one workspace each) and every gateway pool size of
//! [`Sizes::load_pools`](super::Sizes), two phases run on the same database:
//!
//! - **gateway**: each client is its own user (a Supabase-Auth-shaped JWT)
//!   with its own [`SupabaseRemote`] (its own HTTP connection); it pushes a
//!   batch of 100 real Automerge change chunks (`supamerge_push`) and pulls a
//!   page of 1,000 (`supamerge_pull` from a cursor inside the seeded log), in
//!   rounds. The gateway runs in this process on a runtime of its own (two
//!   threads named `sm-gateway`), so its CPU time is told apart from the
//!   clients'.
//! - **ceiling** (the baseline): the same rows inserted and read with plain
//!   SQL over a pool of the same size (tokio-postgres, binary protocol): one
//!   statement per push that takes the same per-workspace counter row and
//!   inserts the 100 rows, one `select ... order by seq limit 1000` per pull.
//!   No HTTP, JSON, base64, hash check, RLS or role switch.
//!
//! Each workspace is first seeded with [`Sizes::load_seed`](super::Sizes)
//! changes by SQL (setup, not measured), so that every pull returns a full
//! page. Every client does one warm-up round, then the timed rounds. During
//! the timed part a sampler reads `pg_stat_activity` every 10 ms (what the
//! pool's backends wait for), and the CPU time of the gateway's threads, of
//! the rest of this process (the clients) and of the database's backends is
//! read from `/proc`. `track_functions = 'pl'` on the database gives the time
//! spent inside `supamerge_push` / `supamerge_pull` and their helpers
//! (`pg_stat_user_functions`, read after the gateway's connections closed).
//!
//! The workload checks what it measured: every pushed change is stored,
//! every page holds exactly the 1,000 changes after its cursor, and each
//! workspace's counter ends at seed + pushed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Barrier;
use uuid::Uuid;

use super::data;
use super::stats::Samples;
use super::{BenchConfig, BenchError, BenchResult, Better, Measurement, Outcome, Target, Workload};
use crate::gateway::dev::{self, DevDatabase, DevError};
use crate::id::WorkspaceId;
use crate::protocol::wire::{
    ChangeEnvelope, Cursor, PullRequest, PushOutcome, PushRequest, WIRE_VERSION,
};
use crate::remote::{MemberRole, Remote, SupabaseRemote};

const W: Workload = Workload::ServerLoad;
/// Changes per push.
pub(super) const PUSH: usize = 100;
/// Changes per pulled page.
pub(super) const PAGE: usize = 1_000;
/// How often the sampler reads `pg_stat_activity`.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// The application name of the ceiling's connections (the sampler's filter).
const CEILING_APP: &str = "supamerge-ceiling";
/// Thread name of the gateway's runtime.
const GATEWAY_THREADS: &str = "sm-gateway";

/// Where the K clients write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One workspace for all: every push takes the same counter row.
    Shared,
    /// One workspace per client.
    Separate,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Shared => "shared",
            Layout::Separate => "separate",
        }
    }
}

/// Which side of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Through the gateway's RPC.
    Gateway,
    /// Plain SQL over a pool.
    Ceiling,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::Gateway => "gw",
            Side::Ceiling => "sql",
        }
    }
}

fn pg_err(op: &'static str) -> impl Fn(tokio_postgres::Error) -> BenchError {
    move |source| BenchError::from(DevError::Postgres { op, source })
}

fn mismatch(what: String) -> BenchError {
    BenchError::Mismatch {
        workload: W.name(),
        what,
    }
}

fn child(reason: String) -> BenchError {
    BenchError::Child {
        workload: W.name(),
        reason,
    }
}

/// One client's timed samples.
#[derive(Default)]
struct ClientRun {
    push: Samples,
    pull: Samples,
}

/// What one side of one configuration measured.
struct SideRun {
    push: Samples,
    pull: Samples,
    wall: Duration,
    pushed: usize,
    pulled: usize,
    /// Mean number of the side's backends per wait bucket.
    waits: BTreeMap<&'static str, f64>,
    /// CPU used during the timed part, in cores.
    cpu: Cpu,
}

/// CPU use over an interval, in cores (CPU seconds per second).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    gateway: f64,
    clients: f64,
    postgres: f64,
    machine: f64,
}

/// Jiffies read from `/proc`.
#[derive(Debug, Clone, Default)]
struct Ticks {
    gateway: u64,
    clients: u64,
    /// Per PostgreSQL backend pid.
    postgres: BTreeMap<i32, u64>,
    /// Busy and total jiffies of the machine (all CPUs).
    machine_busy: u64,
    machine_total: u64,
}

/// `utime + stime` of a `/proc/.../stat` file.
fn stat_ticks(path: &std::path::Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn read_ticks(pg_pids: &[i32]) -> Ticks {
    let mut t = Ticks::default();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let Some(ticks) = stat_ticks(&e.path().join("stat")) else {
                continue;
            };
            if comm.trim_end().starts_with(GATEWAY_THREADS) {
                t.gateway += ticks;
            } else {
                t.clients += ticks;
            }
        }
    }
    for &pid in pg_pids {
        if let Some(ticks) = stat_ticks(std::path::Path::new(&format!("/proc/{pid}/stat"))) {
            t.postgres.insert(pid, ticks);
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = s.lines().next().filter(|l| l.starts_with("cpu ")) {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal (guest counted in user)
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            t.machine_total = total;
            t.machine_busy = total.saturating_sub(idle);
        }
    }
    t
}

fn cpu_between(a: &Ticks, b: &Ticks) -> Cpu {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    // Jiffies of one CPU during the interval.
    let per_cpu = (b.machine_total.saturating_sub(a.machine_total)) as f64 / cpus;
    if per_cpu <= 0.0 {
        return Cpu::default();
    }
    let pg: u64 = b
        .postgres
        .iter()
        .filter_map(|(pid, t)| a.postgres.get(pid).map(|s| t.saturating_sub(*s)))
        .sum();
    Cpu {
        gateway: b.gateway.saturating_sub(a.gateway) as f64 / per_cpu,
        clients: b.clients.saturating_sub(a.clients) as f64 / per_cpu,
        postgres: pg as f64 / per_cpu,
        machine: b.machine_busy.saturating_sub(a.machine_busy) as f64 / per_cpu,
    }
}

/// The bucket of one `pg_stat_activity` row.
fn bucket(state: Option<&str>, kind: Option<&str>, event: Option<&str>) -> &'static str {
    match state {
        Some("active") => match (kind, event) {
            (None, _) => "cpu",
            // A row lock (the counter row): the first waiter waits for the
            // holder's transaction, the others for the tuple.
            (Some("Lock"), Some("transactionid" | "tuple")) => "lock_row",
            // Growing the table's or an index's file.
            (Some("Lock"), Some("extend")) => "lock_extend",
            (Some("Lock"), _) => "lock_other",
            (Some("IO" | "LWLock"), Some(e)) if e.starts_with("WAL") => "wal",
            (Some("IO"), _) => "io",
            (Some("LWLock"), _) => "lwlock",
            _ => "other",
        },
        // Between two statements of one transaction: the backend waits for
        // the gateway's next round trip.
        Some("idle in transaction") => "client_turn",
        Some("idle") => "idle",
        _ => "other",
    }
}

const ACTIVITY_SQL: &str = "\
select state, wait_event_type, wait_event from pg_catalog.pg_stat_activity \
 where datname = current_database() and pid <> pg_backend_pid() \
   and backend_type = 'client backend' \
   and case when $1 \
            then usename = 'authenticator' and application_name <> 'supamerge-gateway-realtime-feed' \
            else application_name = $2 end";

/// Samples the side's backends until `stop` fires; returns the mean number
/// of backends per bucket.
async fn sample_waits(
    client: tokio_postgres::Client,
    side: Side,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> BenchResult<BTreeMap<&'static str, f64>> {
    let stmt = client
        .prepare(ACTIVITY_SQL)
        .await
        .map_err(pg_err("prepare the activity sampler"))?;
    let gateway = side == Side::Gateway;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut samples = 0u64;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let rows = client
            .query(&stmt, &[&gateway, &CEILING_APP])
            .await
            .map_err(pg_err("sample pg_stat_activity"))?;
        samples += 1;
        for r in rows {
            let state: Option<String> = r.try_get(0).map_err(pg_err("read a sample"))?;
            let kind: Option<String> = r.try_get(1).map_err(pg_err("read a sample"))?;
            let event: Option<String> = r.try_get(2).map_err(pg_err("read a sample"))?;
            *counts
                .entry(bucket(state.as_deref(), kind.as_deref(), event.as_deref()))
                .or_default() += 1;
        }
    }
    Ok(counts
        .into_iter()
        .map(|(k, n)| (k, n as f64 / samples.max(1) as f64))
        .collect())
}

/// The pids whose CPU time counts as PostgreSQL's: the backends of this
/// database (but the caller's own) and the WAL writer.
async fn postgres_pids(su: &tokio_postgres::Client) -> BenchResult<Vec<i32>> {
    let rows = su
        .query(
            "select pid from pg_catalog.pg_stat_activity \
              where (datname = current_database() and pid <> pg_backend_pid()) \
                 or backend_type = 'walwriter'",
            &[],
        )
        .await
        .map_err(pg_err("list the backends"))?;
    rows.iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(pg_err("read a pid"))
}

/// The rows every workspace is seeded with (real changes of a few
/// documents), as the arrays the seeding statement takes.
struct SeedRows {
    doc_ids: Vec<String>,
    hashes: Vec<Vec<u8>>,
    bytes: Vec<Vec<u8>>,
}

impl SeedRows {
    fn of(envs: &[ChangeEnvelope]) -> Self {
        Self {
            doc_ids: envs.iter().map(|e| e.doc_id.to_string()).collect(),
            hashes: envs.iter().map(|e| e.hash.0.to_vec()).collect(),
            bytes: envs.iter().map(|e| e.bytes.clone()).collect(),
        }
    }
}

const SEED_SQL: &str = "\
insert into public.changes (workspace_id, seq, doc_id, collection, change_hash, bytes) \
select ($1::text)::uuid, u.i, u.d::uuid, $2::text, u.h, u.b \
  from unnest($3::text[], $4::bytea[], $5::bytea[]) with ordinality as u(d, h, b, i)";

async fn seed(su: &tokio_postgres::Client, ws: Uuid, rows: &SeedRows) -> BenchResult<()> {
    let ws = ws.to_string();
    su.execute(
        SEED_SQL,
        &[&ws, &"bench", &rows.doc_ids, &rows.hashes, &rows.bytes],
    )
    .await
    .map_err(pg_err("seed a workspace"))?;
    su.execute(
        "update public.workspaces set next_seq = $2 where id = ($1::text)::uuid",
        &[&ws, &(rows.doc_ids.len() as i64 + 1)],
    )
    .await
    .map_err(pg_err("seed a workspace's counter"))?;
    Ok(())
}

/// The cursor of a client's `round`-th pull: somewhere in the seeded log
/// (deterministic, spread over the clients), so that the page is full.
fn cursor_of(client: usize, round: usize, seed: usize) -> i64 {
    let span = seed.saturating_sub(PAGE) + 1;
    ((client * 7_919 + round * 104_729) % span) as i64
}

fn check_page(seqs: impl ExactSizeIterator<Item = i64>, after: i64) -> BenchResult<()> {
    let n = seqs.len();
    if n != PAGE {
        return Err(mismatch(format!(
            "a page after {after} held {n} changes, not {PAGE}"
        )));
    }
    for (i, s) in seqs.enumerate() {
        if s != after + 1 + i as i64 {
            return Err(mismatch(format!(
                "a page after {after} holds seq {s} at position {i}"
            )));
        }
    }
    Ok(())
}

/// One configuration: K clients, a layout, a pool size.
#[derive(Debug, Clone, Copy)]
struct Config {
    clients: usize,
    layout: Layout,
    pool: usize,
    /// Timed rounds per client.
    rounds: usize,
}

impl Config {
    /// The prefix of its keys in `extra` (K zero-padded so the keys sort).
    fn key(&self) -> String {
        format!(
            "k{:03}_{}_pool{:02}",
            self.clients,
            self.layout.name(),
            self.pool
        )
    }

    fn workspaces(&self) -> usize {
        match self.layout {
            Layout::Shared => 1,
            Layout::Separate => self.clients,
        }
    }

    fn workspace_of(&self, client: usize) -> usize {
        match self.layout {
            Layout::Shared => 0,
            Layout::Separate => client,
        }
    }
}

/// Each client's batches: its own document, `rounds + 1` pushes of 100
/// changes (the first is the warm-up).
fn client_batches(
    cfg_index: usize,
    c: &Config,
    client: usize,
) -> BenchResult<Vec<Vec<ChangeEnvelope>>> {
    let coll = data::collection()?;
    let n = 1_000_000 * (cfg_index as u64 + 1) + client as u64;
    let g = data::entity_with_changes(n, (c.rounds + 1) * PUSH, &coll).map_err(|source| {
        BenchError::Automerge {
            workload: W.name(),
            source: Box::new(source),
        }
    })?;
    Ok(g.envelopes(&coll)
        .chunks(PUSH)
        .map(<[ChangeEnvelope]>::to_vec)
        .collect())
}

/// Everything shared by the configurations of one run.
struct Stack {
    db: DevDatabase,
    su: tokio_postgres::Client,
    seed: SeedRows,
    seed_len: usize,
}

pub(super) fn run(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    admin: &str,
) -> BenchResult<Outcome> {
    let sizes = &cfg.sizes;
    if sizes.load_seed < PAGE {
        return Err(child(format!(
            "the seeded log ({} changes) must hold a page of {PAGE}",
            sizes.load_seed
        )));
    }
    let coll = data::collection()?;
    let per_doc = 100;
    let seed_envs: Vec<ChangeEnvelope> = (0..sizes.load_seed.div_ceil(per_doc))
        .map(|d| {
            data::entity_with_changes(900_000 + d as u64, per_doc, &coll)
                .map(|g| g.envelopes(&coll))
                .map_err(|source| BenchError::Automerge {
                    workload: W.name(),
                    source: Box::new(source),
                })
        })
        .collect::<BenchResult<Vec<_>>>()?
        .into_iter()
        .flatten()
        .take(sizes.load_seed)
        .collect();
    let stack = rt.block_on(async {
        let db = DevDatabase::create(admin, "supamerge_load").await?;
        let su = dev::connect(&db.superuser_url()?).await?;
        // Time spent inside the PL/pgSQL functions (pg_stat_user_functions),
        // for connections opened from now on.
        su.batch_execute(&format!(
            "alter database \"{}\" set track_functions = 'pl'",
            db.name()
        ))
        .await
        .map_err(pg_err("enable track_functions"))?;
        Ok::<_, BenchError>(Stack {
            db,
            su,
            seed: SeedRows::of(&seed_envs),
            seed_len: seed_envs.len(),
        })
    })?;
    let result = run_configs(rt, cfg, &stack);
    rt.block_on(stack.db.drop_now())?;
    result
}

fn configs(cfg: &BenchConfig) -> Vec<Config> {
    let s = &cfg.sizes;
    let mut out = Vec::new();
    for &k in &s.load_clients {
        let k = k.max(1);
        let layouts: &[Layout] = if k == 1 {
            // One client: one workspace either way.
            &[Layout::Shared]
        } else {
            &[Layout::Shared, Layout::Separate]
        };
        for &layout in layouts {
            for &pool in &s.load_pools {
                out.push(Config {
                    clients: k,
                    layout,
                    pool: pool.max(1),
                    rounds: (s.load_rounds / k).max(s.load_min_rounds).max(1),
                });
            }
        }
    }
    out
}

/// The figures of every configuration, keyed for `extra`.
fn run_configs(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    stack: &Stack,
) -> BenchResult<Outcome> {
    let configs = configs(cfg);
    let mut extra = BTreeMap::new();
    let mut headline: Option<(usize, f64, f64)> = None;
    let target_k = cfg
        .sizes
        .load_clients
        .iter()
        .copied()
        .filter(|&k| k <= 10)
        .max()
        .unwrap_or(1);
    let first_pool = cfg.sizes.load_pools.first().copied().unwrap_or(16).max(1);
    for (i, c) in configs.iter().enumerate() {
        eprintln!(
            "server_load: K = {}, {} workspace{}, pool {}, {} rounds per client",
            c.clients,
            c.layout.name(),
            if c.workspaces() == 1 { "" } else { "s" },
            c.pool,
            c.rounds
        );
        let batches = (0..c.clients)
            .map(|client| client_batches(i, c, client))
            .collect::<BenchResult<Vec<_>>>()?;
        let sql = ceiling(rt, stack, c, &batches)?;
        let (gw, functions) = gateway(rt, stack, c, &batches)?;
        let key = c.key();
        for (side, r) in [(Side::Gateway, &gw), (Side::Ceiling, &sql)] {
            let p = format!("{key}_{}", side.key());
            for (what, s) in [("push", &r.push), ("pull", &r.pull)] {
                for q in [50.0, 95.0, 99.0] {
                    extra.insert(format!("{p}_{what}_p{q:.0}_ms"), s.percentile(q) / 1e3);
                }
                extra.insert(format!("{p}_{what}_mean_ms"), s.mean() / 1e3);
            }
            let secs = r.wall.as_secs_f64().max(1e-9);
            extra.insert(
                format!("{p}_changes_per_s"),
                (r.pushed + r.pulled) as f64 / secs,
            );
            extra.insert(format!("{p}_pushed_per_s"), r.pushed as f64 / secs);
            extra.insert(format!("{p}_pulled_per_s"), r.pulled as f64 / secs);
            for (b, v) in &r.waits {
                extra.insert(format!("{p}_wait_{b}"), *v);
            }
            extra.insert(format!("{p}_cpu_gateway"), r.cpu.gateway);
            extra.insert(format!("{p}_cpu_clients"), r.cpu.clients);
            extra.insert(format!("{p}_cpu_postgres"), r.cpu.postgres);
            extra.insert(format!("{p}_cpu_machine"), r.cpu.machine);
        }
        for (name, (calls, total_ms)) in functions {
            extra.insert(format!("{key}_fn_{name}_calls"), calls as f64);
            extra.insert(format!("{key}_fn_{name}_ms"), total_ms);
        }
        if c.clients == target_k && c.pool == first_pool {
            let p95 =
                |r: &SideRun| (r.push.percentile(95.0) / 1e3).max(r.pull.percentile(95.0) / 1e3);
            let (e, b) = (p95(&gw), p95(&sql));
            headline = Some(match headline {
                Some((k, e0, b0)) => (k, e0.max(e), b0.max(b)),
                None => (c.clients, e, b),
            });
        }
    }
    let (k, engine, baseline) = headline.unwrap_or((target_k, 0.0, 0.0));
    let mut m = Measurement::new(
        W,
        format!(
            "{k} concurrent clients (each its own user and HTTP connection) through the gateway + PostgreSQL, \
             pushing 100 changes and pulling pages of 1,000 in rounds, one shared workspace and one each: \
             the worse p95 of push-100 and pull-1000 over both layouts, gateway pool {first_pool}; \
             every K and layout in extra (K = {:?})",
            cfg.sizes.load_clients
        ),
        "ms",
        Better::Lower,
        engine,
        "the same rows inserted (one statement taking the workspace's counter row) and read \
         (select ... limit 1000) with plain SQL over a pool of the same size, same clients, p95",
        baseline,
        Some(Target::EngineBelow {
            value: 50.0,
            rss_mb: None,
        }),
    );
    m.extra = extra;
    m.extra.insert("headline_clients".to_owned(), k as f64);
    Ok(Outcome::Ok(m))
}

/// The plain-SQL ceiling of one configuration.
fn ceiling(
    rt: &tokio::runtime::Runtime,
    stack: &Stack,
    c: &Config,
    batches: &[Vec<Vec<ChangeEnvelope>>],
) -> BenchResult<SideRun> {
    rt.block_on(async {
        let workspaces: Vec<Uuid> = (0..c.workspaces()).map(|_| Uuid::new_v4()).collect();
        for ws in &workspaces {
            stack
                .su
                .execute(
                    "insert into public.workspaces (id, name) values (($1::text)::uuid, 'ceiling')",
                    &[&ws.to_string()],
                )
                .await
                .map_err(pg_err("create a ceiling workspace"))?;
            seed(&stack.su, *ws, &stack.seed).await?;
        }
        let mut pg_config: tokio_postgres::Config = stack
            .db
            .superuser_url()?
            .parse()
            .map_err(pg_err("parse the database URL"))?;
        pg_config.application_name(CEILING_APP);
        let manager = Manager::from_config(
            pg_config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(c.pool)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| child(format!("cannot build the ceiling's pool: {e}")))?;
        let go = Arc::new(Barrier::new(c.clients + 1));
        let warm = Arc::new(Barrier::new(c.clients + 1));
        let mut tasks = Vec::new();
        for (client, mine) in batches.iter().enumerate() {
            let ws = workspaces[c.workspace_of(client)].to_string();
            let rows: Vec<SeedRows> = mine.iter().map(|b| SeedRows::of(b)).collect();
            let (pool, go, warm, seed_len, rounds) = (
                pool.clone(),
                go.clone(),
                warm.clone(),
                stack.seed_len,
                c.rounds,
            );
            tasks.push(tokio::spawn(async move {
                let mut run = ClientRun::default();
                for (round, batch) in rows.iter().enumerate().take(rounds + 1) {
                    if round == 1 {
                        warm.wait().await;
                        go.wait().await;
                    }
                    let t = Instant::now();
                    ceiling_push(&pool, &ws, batch).await?;
                    if round > 0 {
                        run.push.push(t.elapsed());
                    }
                    let after = cursor_of(client, round, seed_len);
                    let t = Instant::now();
                    ceiling_pull(&pool, &ws, after).await?;
                    if round > 0 {
                        run.pull.push(t.elapsed());
                    }
                }
                Ok::<_, BenchError>(run)
            }));
        }
        let side = drive(stack, Side::Ceiling, warm, go, tasks).await?;
        check_counters(stack, &workspaces, c).await?;
        Ok(side)
    })
}

const CEILING_PUSH_SQL: &str = "\
with s as ( \
  update public.workspaces set next_seq = next_seq + $2 where id = ($1::text)::uuid \
  returning next_seq - $2 as first) \
insert into public.changes (workspace_id, seq, doc_id, collection, change_hash, bytes) \
select ($1::text)::uuid, s.first + u.i - 1, u.d::uuid, 'bench', u.h, u.b \
  from s, unnest($3::text[], $4::bytea[], $5::bytea[]) with ordinality as u(d, h, b, i) \
on conflict (workspace_id, doc_id, change_hash) do nothing";

const CEILING_PULL_SQL: &str = "\
select seq, doc_id::text, collection, change_hash, bytes from public.changes \
 where workspace_id = ($1::text)::uuid and seq > $2 order by seq limit 1000";

async fn ceiling_push(pool: &Pool, ws: &String, rows: &SeedRows) -> BenchResult<()> {
    let client = pool
        .get()
        .await
        .map_err(|e| child(format!("ceiling pool: {e}")))?;
    let stmt = client
        .prepare_cached(CEILING_PUSH_SQL)
        .await
        .map_err(pg_err("prepare the ceiling push"))?;
    let n = rows.doc_ids.len() as i64;
    let stored = client
        .execute(&stmt, &[ws, &n, &rows.doc_ids, &rows.hashes, &rows.bytes])
        .await
        .map_err(pg_err("run the ceiling push"))?;
    if stored != n as u64 {
        return Err(mismatch(format!(
            "the ceiling stored {stored} of {n} changes"
        )));
    }
    Ok(())
}

async fn ceiling_pull(pool: &Pool, ws: &String, after: i64) -> BenchResult<()> {
    let client = pool
        .get()
        .await
        .map_err(|e| child(format!("ceiling pool: {e}")))?;
    let stmt = client
        .prepare_cached(CEILING_PULL_SQL)
        .await
        .map_err(pg_err("prepare the ceiling pull"))?;
    let rows = client
        .query(&stmt, &[ws, &after])
        .await
        .map_err(pg_err("run the ceiling pull"))?;
    let mut seqs = Vec::with_capacity(rows.len());
    for r in &rows {
        seqs.push(r.try_get::<_, i64>(0).map_err(pg_err("read a row"))?);
        let bytes: &[u8] = r.try_get(4).map_err(pg_err("read a row"))?;
        std::hint::black_box(bytes);
    }
    check_page(seqs.into_iter(), after)
}

/// Waits for the warm-up, starts the sampler and the CPU clock, releases the
/// clients, and gathers their samples.
async fn drive(
    stack: &Stack,
    side: Side,
    warm: Arc<Barrier>,
    go: Arc<Barrier>,
    tasks: Vec<tokio::task::JoinHandle<BenchResult<ClientRun>>>,
) -> BenchResult<SideRun> {
    warm.wait().await;
    let pids = postgres_pids(&stack.su).await?;
    let sampler_client = dev::connect(&stack.db.superuser_url()?).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(sample_waits(sampler_client, side, stop_rx));
    let before = read_ticks(&pids);
    let t0 = Instant::now();
    go.wait().await;
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(
            t.await
                .map_err(|e| child(format!("a client task failed: {e}")))??,
        );
    }
    let wall = t0.elapsed();
    let after = read_ticks(&pids);
    let _ = stop_tx.send(());
    let waits = sampler
        .await
        .map_err(|e| child(format!("the sampler failed: {e}")))??;
    let mut push = Samples::new();
    let mut pull = Samples::new();
    for r in &runs {
        push.extend(&r.push);
        pull.extend(&r.pull);
    }
    Ok(SideRun {
        pushed: push.len() * PUSH,
        pulled: pull.len() * PAGE,
        push,
        pull,
        wall,
        waits,
        cpu: cpu_between(&before, &after),
    })
}

/// Each workspace's counter must stand at seed + everything pushed to it.
async fn check_counters(stack: &Stack, workspaces: &[Uuid], c: &Config) -> BenchResult<()> {
    let per_ws = match c.layout {
        Layout::Shared => c.clients,
        Layout::Separate => 1,
    } * (c.rounds + 1)
        * PUSH;
    for ws in workspaces {
        let row = stack
            .su
            .query_one(
                "select w.next_seq, (select count(*) from public.changes c where c.workspace_id = w.id) \
                   from public.workspaces w where w.id = ($1::text)::uuid",
                &[&ws.to_string()],
            )
            .await
            .map_err(pg_err("read a workspace's counter"))?;
        let next: i64 = row.try_get(0).map_err(pg_err("read the counter"))?;
        let count: i64 = row.try_get(1).map_err(pg_err("read the count"))?;
        let want = (stack.seed_len + per_ws) as i64;
        if next != want + 1 || count != want {
            return Err(mismatch(format!(
                "workspace {ws}: next_seq {next} and {count} rows, expected {} and {want}",
                want + 1
            )));
        }
    }
    Ok(())
}

/// Time spent in the PL/pgSQL functions (`pg_stat_user_functions`): calls
/// and total milliseconds per function name.
async fn function_stats(su: &tokio_postgres::Client) -> BenchResult<BTreeMap<String, (i64, f64)>> {
    let rows = su
        .query(
            "select funcname::text, calls, total_time from pg_catalog.pg_stat_user_functions",
            &[],
        )
        .await
        .map_err(pg_err("read pg_stat_user_functions"))?;
    let mut out = BTreeMap::new();
    for r in rows {
        let name: String = r.try_get(0).map_err(pg_err("read a function stat"))?;
        let calls: i64 = r.try_get(1).map_err(pg_err("read a function stat"))?;
        let ms: f64 = r.try_get(2).map_err(pg_err("read a function stat"))?;
        let e = out.entry(name).or_insert((0, 0.0));
        e.0 += calls;
        e.1 += ms;
    }
    Ok(out)
}

/// Waits until the gateway's backends are gone (their statistics are
/// written when they exit).
async fn wait_gateway_gone(su: &tokio_postgres::Client) -> BenchResult<()> {
    for _ in 0..200 {
        let row = su
            .query_one(
                "select count(*) from pg_catalog.pg_stat_activity \
                  where datname = current_database() and usename = 'authenticator'",
                &[],
            )
            .await
            .map_err(pg_err("count the gateway's backends"))?;
        let n: i64 = row.try_get(0).map_err(pg_err("read the count"))?;
        if n == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(child(
        "the gateway's connections did not close within 5 s".to_owned(),
    ))
}

type FunctionTimes = BTreeMap<String, (i64, f64)>;

/// The gateway side of one configuration, with the time spent in the SQL
/// functions during it.
fn gateway(
    rt: &tokio::runtime::Runtime,
    stack: &Stack,
    c: &Config,
    batches: &[Vec<Vec<ChangeEnvelope>>],
) -> BenchResult<(SideRun, FunctionTimes)> {
    let gw_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(GATEWAY_THREADS)
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let stats_before = rt.block_on(async {
        wait_gateway_gone(&stack.su).await?;
        function_stats(&stack.su).await
    })?;
    let config = crate::gateway::GatewayConfig::new(
        stack.db.authenticator_url()?,
        dev::DEV_JWT_SECRET,
        dev::DEV_ANON_KEY,
    )
    .with_listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    .with_pool_size(c.pool);
    let handle = gw_rt.block_on(async {
        crate::gateway::Gateway::bind(config)
            .await
            .map(crate::gateway::Gateway::spawn)
            .map_err(|e| BenchError::from(DevError::from(e)))
    })?;
    let url = handle.url();
    let result = rt.block_on(gateway_clients(stack, c, batches, &url));
    let stopped = gw_rt.block_on(handle.shutdown());
    gw_rt.shutdown_timeout(Duration::from_secs(5));
    let side = result?;
    stopped.map_err(|e| BenchError::from(DevError::from(e)))?;
    let stats_after = rt.block_on(async {
        wait_gateway_gone(&stack.su).await?;
        function_stats(&stack.su).await
    })?;
    let delta = stats_after
        .into_iter()
        .filter_map(|(name, (calls, ms))| {
            let (c0, ms0) = stats_before.get(&name).copied().unwrap_or((0, 0.0));
            (calls > c0).then(|| (name, (calls - c0, ms - ms0)))
        })
        .collect();
    Ok((side, delta))
}

fn remote_for(url: &str, user: Uuid) -> BenchResult<SupabaseRemote> {
    let token = dev::user_jwt(dev::DEV_JWT_SECRET, user, 24 * 3600)?;
    SupabaseRemote::builder(url, dev::DEV_ANON_KEY)
        .with_access_token(token)
        .build()
        .map_err(|e| child(format!("cannot build the Supabase client: {e}")))
}

async fn gateway_clients(
    stack: &Stack,
    c: &Config,
    batches: &[Vec<Vec<ChangeEnvelope>>],
    url: &str,
) -> BenchResult<SideRun> {
    let rem = |source| BenchError::Remote {
        workload: W.name(),
        source: Box::new(source),
    };
    let users: Vec<Uuid> = (0..c.clients).map(|_| Uuid::new_v4()).collect();
    let remotes = users
        .iter()
        .map(|u| remote_for(url, *u))
        .collect::<BenchResult<Vec<_>>>()?;
    // Workspaces through the product's API: created by their first client;
    // in the shared layout the others are added as writers.
    let mut workspaces: Vec<WorkspaceId> = Vec::new();
    for remote in remotes.iter().take(c.workspaces()) {
        workspaces.push(remote.create_workspace("load").await.map_err(rem)?);
    }
    if c.layout == Layout::Shared {
        for u in users.iter().skip(1) {
            remotes[0]
                .add_member(workspaces[0], *u, MemberRole::Writer)
                .await
                .map_err(rem)?;
        }
    }
    let uuids: Vec<Uuid> = workspaces.iter().map(|w| *w.as_uuid()).collect();
    for ws in &uuids {
        seed(&stack.su, *ws, &stack.seed).await?;
    }
    let go = Arc::new(Barrier::new(c.clients + 1));
    let warm = Arc::new(Barrier::new(c.clients + 1));
    let mut tasks = Vec::new();
    for (client, (remote, mine)) in remotes.into_iter().zip(batches).enumerate() {
        let ws = workspaces[c.workspace_of(client)];
        let mine = mine.clone();
        let (go, warm, seed_len, rounds) = (go.clone(), warm.clone(), stack.seed_len, c.rounds);
        tasks.push(tokio::spawn(async move {
            let mut run = ClientRun::default();
            for (round, batch) in mine.into_iter().enumerate().take(rounds + 1) {
                if round == 1 {
                    warm.wait().await;
                    go.wait().await;
                }
                let t = Instant::now();
                let resp = remote
                    .push(PushRequest {
                        v: WIRE_VERSION,
                        workspace: ws,
                        changes: batch,
                    })
                    .await
                    .map_err(rem)?;
                if round > 0 {
                    run.push.push(t.elapsed());
                }
                if let Some(o) = resp
                    .results
                    .iter()
                    .find(|o| !matches!(o, PushOutcome::Stored { .. }))
                {
                    return Err(mismatch(format!("a pushed change was not stored: {o:?}")));
                }
                let after = cursor_of(client, round, seed_len);
                let t = Instant::now();
                let page = remote
                    .pull(PullRequest {
                        v: WIRE_VERSION,
                        workspace: ws,
                        cursor: if after == 0 {
                            Cursor::start()
                        } else {
                            Cursor(after.to_string())
                        },
                        limit: PAGE as u32,
                        skip_snapshotted: false,
                    })
                    .await
                    .map_err(rem)?;
                if round > 0 {
                    run.pull.push(t.elapsed());
                }
                check_page(page.changes.iter().map(|p| p.seq), after)?;
            }
            Ok::<_, BenchError>(run)
        }));
    }
    let side = drive(stack, Side::Gateway, warm, go, tasks).await?;
    check_counters(stack, &uuids, c).await?;
    Ok(side)
}

/// The per-configuration table of a `server_load` measurement (from its
/// `extra`), for the command's output; `None` for other workloads.
pub fn table(m: &Measurement) -> Option<String> {
    if m.name != W.name() {
        return None;
    }
    let suffix = "_gw_push_p95_ms";
    let keys: Vec<&str> = m
        .extra
        .keys()
        .filter_map(|k| k.strip_suffix(suffix))
        .collect();
    let get = |k: String| m.extra.get(&k).copied().unwrap_or(0.0);
    let mut s = format!(
        "\nserver_load (ms; changes/s; CPU in cores; waits = mean backends per state)\n{:<26} {:>4} {:>24} {:>24} {:>10} {:>28} {}\n",
        "config",
        "side",
        "push-100 p50/p95/p99",
        "pull-1000 p50/p95/p99",
        "changes/s",
        "CPU gateway/clients/pg/all",
        "waits"
    );
    for k in keys {
        for side in ["gw", "sql"] {
            let p = format!("{k}_{side}");
            let waits: Vec<String> = m
                .extra
                .iter()
                .filter_map(|(key, v)| {
                    key.strip_prefix(&format!("{p}_wait_"))
                        .filter(|_| *v >= 0.05)
                        .map(|b| format!("{b} {v:.1}"))
                })
                .collect();
            s.push_str(&format!(
                "{:<26} {:>4} {:>24} {:>24} {:>10.0} {:>28} {}\n",
                k,
                side,
                format!(
                    "{:.1}/{:.1}/{:.1}",
                    get(format!("{p}_push_p50_ms")),
                    get(format!("{p}_push_p95_ms")),
                    get(format!("{p}_push_p99_ms"))
                ),
                format!(
                    "{:.1}/{:.1}/{:.1}",
                    get(format!("{p}_pull_p50_ms")),
                    get(format!("{p}_pull_p95_ms")),
                    get(format!("{p}_pull_p99_ms"))
                ),
                get(format!("{p}_changes_per_s")),
                format!(
                    "{:.2}/{:.2}/{:.2}/{:.2}",
                    get(format!("{p}_cpu_gateway")),
                    get(format!("{p}_cpu_clients")),
                    get(format!("{p}_cpu_postgres")),
                    get(format!("{p}_cpu_machine"))
                ),
                waits.join(", ")
            ));
        }
        let calls = |f: &str| get(format!("{k}_fn_{f}_calls"));
        let ms = |f: &str| get(format!("{k}_fn_{f}_ms"));
        let per = |f: &str| {
            let n = calls(f);
            if n > 0.0 {
                ms(f) / n
            } else {
                0.0
            }
        };
        s.push_str(&format!(
            "{:<26} inside SQL (mean ms per call): supamerge_push {:.2}, supamerge_pull {:.2}\n",
            "",
            per("supamerge_push"),
            per("supamerge_pull")
        ));
    }
    Some(s)
}
