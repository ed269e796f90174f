//! The benchmark workloads behind `supamerge bench` and `benches/`.
//!
//! Layout: this file holds the configuration, the result types and the
//! driver ([`run_one`], [`run_all`]); [`data`] generates the change sets and reads the
//! editing trace; `workloads` holds the workloads that need no PostgreSQL;
//! `postgres` the ones that go through the gateway and PostgreSQL (feature
//! `gateway`); `samod_baseline` the automerge-repo baseline; [`chart`] renders
//! the SVG; [`stats`] holds percentiles and peak-RSS readings; [`runs`]
//! folds several runs into a median with its min–max and holds the load
//! average and instruction-count types.
//!
//! Every workload measures the engine and its baseline side by side in the
//! same process and run, and reports both with their ratio
//! (`engine / baseline`), so a noisy machine moves both figures together.
//! Nothing here asserts on time: the figures are reported, never judged,
//! except for comparing them with the targets in the report.

pub mod chart;
pub mod data;
#[cfg(feature = "gateway")]
mod live;
#[cfg(feature = "gateway")]
mod postgres;
pub mod runs;
mod samod_baseline;
#[cfg(feature = "gateway")]
mod server_load;
pub mod stats;
mod workloads;

pub use runs::{Instructions, LoadAvg, MinMax, Phase, Spread};
pub use workloads::{cold_probe, ProbeMode, ProbeResult};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::remote::RemoteError;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The engine reported an error.
    #[error("workload {workload}: {source}")]
    Engine {
        /// The workload.
        workload: &'static str,
        /// The engine's error.
        #[source]
        source: Box<crate::Error>,
    },
    /// A remote call failed.
    #[error("workload {workload}: remote call failed: {source}")]
    Remote {
        /// The workload.
        workload: &'static str,
        /// The remote's error.
        #[source]
        source: Box<RemoteError>,
    },
    /// Automerge refused an operation of a baseline or of the data generator.
    #[error("workload {workload}: automerge: {source}")]
    Automerge {
        /// The workload.
        workload: &'static str,
        /// Automerge's error.
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    /// Change bytes did not decode.
    #[error("workload {workload}: a change does not decode: {source}")]
    Decode {
        /// The workload.
        workload: &'static str,
        /// Automerge's error.
        #[source]
        source: Box<automerge::LoadChangeError>,
    },
    /// A file or directory could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The editing trace is not in the expected format.
    #[error("the editing trace {path} does not parse: {source}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A workload's result does not match its baseline's (a bug, not noise).
    #[error("workload {workload}: the engine's result differs from the baseline's: {what}")]
    Mismatch {
        /// The workload.
        workload: &'static str,
        /// What differed.
        what: String,
    },
    /// The samod baseline stopped or did not find a document.
    #[error("samod baseline: {reason}")]
    Samod {
        /// What went wrong.
        reason: &'static str,
    },
    /// A child process (the cold-start probe, an isolated workload) failed.
    #[error("child process for {workload} failed: {reason}")]
    Child {
        /// The workload.
        workload: &'static str,
        /// Its exit status and stderr, or why its output did not parse.
        reason: String,
    },
    /// PostgreSQL setup or a query failed.
    #[cfg(feature = "gateway")]
    #[error("PostgreSQL: {0}")]
    Dev(#[source] Box<crate::gateway::dev::DevError>),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

#[cfg(feature = "gateway")]
impl From<crate::gateway::dev::DevError> for BenchError {
    fn from(e: crate::gateway::dev::DevError) -> Self {
        BenchError::Dev(Box::new(e))
    }
}

/// A result of the benchmark module.
pub type BenchResult<T> = std::result::Result<T, BenchError>;

/// The workloads, by name (the `--only` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Many small map changes of one document, pulled from a LocalHub.
    MergeOneDoc,
    /// Many documents with a few changes each, pulled from a LocalHub.
    MergeManyDocs,
    /// The automerge-paper editing trace typed locally and synced into a second replica.
    EditingTrace,
    /// One small remote change per sync round into a large document.
    LiveTrickle,
    /// Local edits with their outbox entry, flushed per commit (the default).
    LocalCommitImmediate,
    /// Local edits with their outbox entry, flushed in the background.
    LocalCommitBuffered,
    /// Opening a replica holding many documents and reading one.
    ColdStart,
    /// A fresh replica syncing every document from a LocalHub (changes only).
    FreshDeviceLocalhub,
    /// The same, bootstrapping from snapshots.
    FreshDeviceLocalhubSnapshots,
    /// A fresh replica syncing every document through the gateway and PostgreSQL.
    FreshDevicePostgres,
    /// The same, bootstrapping from snapshots.
    FreshDevicePostgresSnapshots,
    /// Reading one entity locally versus fetching it through the gateway.
    LocalReadVsSupabase,
    /// An edit from one replica's commit to another's engine, through the
    /// gateway + PostgreSQL with Realtime (against polling).
    LiveLatency,
    /// The same with 50 subscribed replicas.
    LiveLatency50,
    /// K concurrent clients pushing and pulling through the gateway +
    /// PostgreSQL, against plain SQL over the same pool.
    ServerLoad,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 15] = [
        Workload::MergeOneDoc,
        Workload::MergeManyDocs,
        Workload::EditingTrace,
        Workload::LiveTrickle,
        Workload::LocalCommitImmediate,
        Workload::LocalCommitBuffered,
        Workload::ColdStart,
        Workload::FreshDeviceLocalhub,
        Workload::FreshDeviceLocalhubSnapshots,
        Workload::FreshDevicePostgres,
        Workload::FreshDevicePostgresSnapshots,
        Workload::LocalReadVsSupabase,
        Workload::LiveLatency,
        Workload::LiveLatency50,
        Workload::ServerLoad,
    ];

    /// The name used on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::MergeOneDoc => "merge_one_doc",
            Workload::MergeManyDocs => "merge_many_docs",
            Workload::EditingTrace => "editing_trace",
            Workload::LiveTrickle => "live_trickle",
            Workload::LocalCommitImmediate => "local_commit_immediate",
            Workload::LocalCommitBuffered => "local_commit_buffered",
            Workload::ColdStart => "cold_start",
            Workload::FreshDeviceLocalhub => "fresh_device_localhub",
            Workload::FreshDeviceLocalhubSnapshots => "fresh_device_localhub_snapshots",
            Workload::FreshDevicePostgres => "fresh_device_postgres",
            Workload::FreshDevicePostgresSnapshots => "fresh_device_postgres_snapshots",
            Workload::LocalReadVsSupabase => "local_read_vs_supabase",
            Workload::LiveLatency => "live_latency",
            Workload::LiveLatency50 => "live_latency_50",
            Workload::ServerLoad => "server_load",
        }
    }

    /// Parses a workload name.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Whether the workload honours [`BenchConfig::phase`] (runs its
    /// baseline and its engine separately), so that `--instructions` can
    /// count each side's instructions: the CPU-bound merges.
    pub fn has_phases(self) -> bool {
        matches!(
            self,
            Workload::MergeOneDoc
                | Workload::MergeManyDocs
                | Workload::FreshDeviceLocalhub
                | Workload::FreshDeviceLocalhubSnapshots
        )
    }

    /// Whether the workload needs PostgreSQL.
    pub fn needs_postgres(self) -> bool {
        matches!(
            self,
            Workload::FreshDevicePostgres
                | Workload::FreshDevicePostgresSnapshots
                | Workload::LocalReadVsSupabase
                | Workload::LiveLatency
                | Workload::LiveLatency50
                | Workload::ServerLoad
        )
    }
}

/// The gateway's default pool size (`gateway::DEFAULT_POOL_SIZE`, which
/// only exists with the `gateway` feature), the pool `server_load` uses
/// unless told otherwise.
const GATEWAY_POOL: usize = 16;

#[cfg(all(test, feature = "gateway"))]
#[test]
fn server_load_uses_the_gateway_default_pool() {
    assert_eq!(GATEWAY_POOL, crate::gateway::DEFAULT_POOL_SIZE);
}

/// Problem sizes of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// Changes of the one-document merge.
    pub one_doc_changes: usize,
    /// Documents of the many-document merge and of the fresh device.
    pub many_docs: usize,
    /// Changes per document there.
    pub changes_per_doc: usize,
    /// Editing-trace transactions to replay (`None`: the whole trace).
    pub trace_txns: Option<usize>,
    /// Operations of the live-trickle document.
    pub trickle_ops: usize,
    /// Sync rounds of the live trickle.
    pub trickle_rounds: usize,
    /// Local commits with flush per commit.
    pub commits_immediate: usize,
    /// Local commits with buffered durability.
    pub commits_buffered: usize,
    /// Documents in the cold-start replica.
    pub cold_docs: usize,
    /// Reads of the local-read workload.
    pub reads: usize,
    /// Edits of the live-latency workloads.
    pub live_edits: usize,
    /// Subscribed replicas of `live_latency_50`.
    pub live_subscribers: usize,
    /// The numbers of concurrent clients of `server_load` (K).
    pub load_clients: Vec<usize>,
    /// The gateway pool sizes `server_load` runs each K with (the ceiling
    /// uses the same size).
    pub load_pools: Vec<usize>,
    /// Timed rounds (one push of 100 and one pull of 1,000) of one
    /// `server_load` configuration, split among its clients...
    pub load_rounds: usize,
    /// ... but at least this many per client.
    pub load_min_rounds: usize,
    /// Changes each `server_load` workspace is seeded with (at least a page).
    pub load_seed: usize,
}

impl Sizes {
    /// The sizes of the issue (a full run).
    pub fn full() -> Self {
        Self {
            one_doc_changes: 100_000,
            many_docs: 10_000,
            changes_per_doc: 10,
            trace_txns: None,
            trickle_ops: 100_000,
            trickle_rounds: 300,
            commits_immediate: 1_000,
            commits_buffered: 20_000,
            cold_docs: 100_000,
            reads: 200,
            live_edits: 200,
            live_subscribers: 50,
            load_clients: vec![1, 10, 50],
            load_pools: vec![GATEWAY_POOL],
            load_rounds: 200,
            load_min_rounds: 10,
            load_seed: 2_000,
        }
    }

    /// The full sizes multiplied by `factor` (each at least 1; the
    /// editing trace is cut to the same share of its edits): `--scale`, for
    /// instruction counts under callgrind, which runs about 50x slower.
    pub fn scaled(factor: f64) -> Self {
        let f = |n: usize| ((n as f64 * factor).round() as usize).max(1);
        let full = Self::full();
        Self {
            one_doc_changes: f(full.one_doc_changes),
            many_docs: f(full.many_docs),
            changes_per_doc: full.changes_per_doc,
            trace_txns: (factor < 1.0).then(|| f(259_778)),
            trickle_ops: f(full.trickle_ops),
            trickle_rounds: f(full.trickle_rounds),
            commits_immediate: f(full.commits_immediate),
            commits_buffered: f(full.commits_buffered),
            cold_docs: f(full.cold_docs),
            reads: full.reads,
            live_edits: full.live_edits,
            live_subscribers: full.live_subscribers,
            load_clients: full.load_clients,
            load_pools: full.load_pools,
            load_rounds: full.load_rounds,
            load_min_rounds: full.load_min_rounds,
            load_seed: full.load_seed,
        }
    }

    /// Small sizes for a smoke test (`--quick`) and the criterion benches.
    pub fn quick() -> Self {
        Self {
            one_doc_changes: 500,
            many_docs: 50,
            changes_per_doc: 4,
            trace_txns: Some(500),
            trickle_ops: 1_000,
            trickle_rounds: 10,
            commits_immediate: 20,
            commits_buffered: 100,
            cold_docs: 200,
            reads: 20,
            live_edits: 20,
            live_subscribers: 50,
            load_clients: vec![1, 3],
            load_pools: vec![GATEWAY_POOL],
            load_rounds: 6,
            load_min_rounds: 3,
            load_seed: 1_100,
        }
    }
}

/// How the cold-start probe runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// In this process (tests, criterion): the RSS figure is this process's
    /// and therefore not reported.
    InProcess,
    /// In a child process of this executable
    /// (`<exe> bench --cold-probe <mode> --dir <dir> --doc <id>`), which
    /// reports its own time and peak RSS.
    Child(PathBuf),
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Problem sizes.
    pub sizes: Sizes,
    /// Which workloads (empty: all).
    pub only: Vec<Workload>,
    /// The automerge-paper trace (`None` or missing: that workload is skipped).
    pub trace: Option<PathBuf>,
    /// A PostgreSQL superuser URL (`None`: the PostgreSQL workloads are skipped).
    pub database_url: Option<String>,
    /// How to run the cold-start probe.
    pub probe: Probe,
    /// Where temporary replicas and hubs go (`None`: the system temp dir).
    pub scratch: Option<PathBuf>,
    /// Which part of a workload to run (instruction counts run each part in
    /// its own process; see [`Workload::has_phases`]).
    pub phase: Phase,
}

impl BenchConfig {
    /// A configuration with the given sizes, all workloads, no trace, no
    /// PostgreSQL, the probe in-process.
    pub fn new(sizes: Sizes) -> Self {
        Self {
            sizes,
            only: Vec::new(),
            trace: None,
            database_url: None,
            probe: Probe::InProcess,
            scratch: None,
            phase: Phase::All,
        }
    }

    /// The workloads selected, in report order.
    pub fn selected(&self) -> Vec<Workload> {
        Workload::ALL
            .into_iter()
            .filter(|w| self.only.is_empty() || self.only.contains(w))
            .collect()
    }

    pub(crate) fn tempdir(&self, what: &'static str) -> BenchResult<tempfile::TempDir> {
        let r = match &self.scratch {
            Some(dir) => tempfile::Builder::new()
                .prefix("supamerge-bench-")
                .tempdir_in(dir),
            None => tempfile::Builder::new()
                .prefix("supamerge-bench-")
                .tempdir(),
        };
        r.map_err(|source| BenchError::Io {
            what,
            path: self.scratch.clone().unwrap_or_else(std::env::temp_dir),
            source,
        })
    }
}

/// The default location of the editing trace: `../shared/data/` beside the
/// crate root (overridable with `--trace` or `SUPAMERGE_BENCH_TRACE`).
pub fn default_trace_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/automerge-paper.json.gz")
}

/// Whether a larger or a smaller figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Throughputs.
    Higher,
    /// Latencies and durations.
    Lower,
}

/// A target of the issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// `engine / baseline` must be at least this.
    RatioAtLeast(f64),
    /// The engine figure must be below this (in the workload's unit), and
    /// the peak RSS below `rss_mb` when given.
    EngineBelow {
        /// The bound on the engine figure.
        value: f64,
        /// The bound on the peak RSS in MB.
        rss_mb: Option<f64>,
    },
}

/// One workload's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The workload's name.
    pub name: String,
    /// What was measured, in words (with the size).
    pub description: String,
    /// The unit of `engine` and `baseline`.
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// The engine's figure.
    pub engine: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// The baseline's figure, measured in the same run.
    pub baseline: f64,
    /// `engine / baseline`.
    pub ratio: f64,
    /// Peak RSS in MB of the process that ran the engine side (`None` when it
    /// cannot be isolated, e.g. in-process in a test).
    pub peak_rss_mb: Option<f64>,
    /// What the peak RSS covers.
    pub rss_scope: String,
    /// The target, when there is one.
    pub target: Option<Target>,
    /// Whether the target is met (`None`: no target).
    pub target_met: Option<bool>,
    /// Secondary figures (percentiles, phases).
    pub extra: BTreeMap<String, f64>,
    /// The machine's 1-minute load average when the workload started and
    /// ended (`None` where unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_avg: Option<Box<LoadAvg>>,
    /// With several runs (`--runs N`): the spread over them; the figures
    /// above are then the median run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Box<Spread>>,
    /// Instruction counts of the engine and the baseline
    /// (`--instructions`, CPU-bound merges only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<Box<Instructions>>,
}

impl Measurement {
    /// A measurement; the ratio is computed and the target checked here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        w: Workload,
        description: String,
        unit: &str,
        better: Better,
        engine: f64,
        baseline_name: &str,
        baseline: f64,
        target: Option<Target>,
    ) -> Self {
        let ratio = if baseline > 0.0 {
            engine / baseline
        } else {
            0.0
        };
        let mut m = Self {
            name: w.name().to_owned(),
            description,
            unit: unit.to_owned(),
            better,
            engine,
            baseline_name: baseline_name.to_owned(),
            baseline,
            ratio,
            peak_rss_mb: None,
            rss_scope: String::new(),
            target,
            target_met: None,
            extra: BTreeMap::new(),
            load_avg: None,
            runs: None,
            instructions: None,
        };
        m.check_target();
        m
    }

    pub(crate) fn with_extra(mut self, key: &str, value: f64) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub(crate) fn check_target(&mut self) {
        self.target_met = self.target.as_ref().map(|t| match t {
            Target::RatioAtLeast(r) => self.ratio >= *r,
            Target::EngineBelow { value, rss_mb } => {
                self.engine < *value
                    && match (rss_mb, self.peak_rss_mb) {
                        (Some(bound), Some(rss)) => rss < *bound,
                        _ => true,
                    }
            }
        });
    }
}

/// The outcome of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Measured.
    Ok(Measurement),
    /// Not run, with the reason.
    Skipped {
        /// The workload's name.
        name: String,
        /// Why it did not run.
        reason: String,
    },
}

impl Outcome {
    /// The workload's name.
    pub fn name(&self) -> &str {
        match self {
            Outcome::Ok(m) => &m.name,
            Outcome::Skipped { name, .. } => name,
        }
    }

    pub(crate) fn skipped(w: Workload, reason: impl Into<String>) -> Self {
        Outcome::Skipped {
            name: w.name().to_owned(),
            reason: reason.into(),
        }
    }
}

/// Runs one workload in this process.
///
/// # Errors
/// A [`BenchError`] when setup or a measured step fails.
pub fn run_one(cfg: &BenchConfig, w: Workload) -> BenchResult<Outcome> {
    let load_start = runs::load_avg_1m();
    let mut outcome = run_workload(cfg, w)?;
    if let (Outcome::Ok(m), Some(start), Some(end)) =
        (&mut outcome, load_start, runs::load_avg_1m())
    {
        m.load_avg = Some(Box::new(LoadAvg { start, end }));
    }
    Ok(outcome)
}

fn run_workload(cfg: &BenchConfig, w: Workload) -> BenchResult<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    if w.needs_postgres() {
        return run_postgres(&rt, cfg, w);
    }
    let mut outcome = match w {
        Workload::MergeOneDoc => workloads::merge_one_doc(&rt, cfg)?,
        Workload::MergeManyDocs => workloads::merge_many_docs(&rt, cfg)?,
        Workload::EditingTrace => workloads::editing_trace(&rt, cfg)?,
        Workload::LiveTrickle => workloads::live_trickle(&rt, cfg)?,
        Workload::LocalCommitImmediate => {
            workloads::local_commit(cfg, crate::store::Durability::Immediate)?
        }
        Workload::LocalCommitBuffered => workloads::local_commit(
            cfg,
            crate::store::Durability::Buffered {
                flush_every_ms: 500,
            },
        )?,
        Workload::ColdStart => workloads::cold_start(cfg)?,
        Workload::FreshDeviceLocalhub => workloads::fresh_device_localhub(&rt, cfg, false)?,
        Workload::FreshDeviceLocalhubSnapshots => workloads::fresh_device_localhub(&rt, cfg, true)?,
        _ => Outcome::skipped(w, "unknown workload"),
    };
    if let Outcome::Ok(m) = &mut outcome {
        if m.peak_rss_mb.is_none() && cfg.probe != Probe::InProcess {
            m.peak_rss_mb = stats::peak_rss_mb();
            m.rss_scope = "the process running this workload (engine and baseline)".to_owned();
            m.check_target();
        }
    }
    Ok(outcome)
}

#[cfg(feature = "gateway")]
fn run_postgres(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    w: Workload,
) -> BenchResult<Outcome> {
    let Some(url) = cfg.database_url.clone() else {
        return Ok(Outcome::skipped(
            w,
            "no PostgreSQL: pass --database-url or set SUPAMERGE_BENCH_DATABASE_URL / DATABASE_URL",
        ));
    };
    let mut outcome = if w == Workload::ServerLoad {
        server_load::run(rt, cfg, &url)?
    } else {
        postgres::run(rt, cfg, w, &url)?
    };
    if let Outcome::Ok(m) = &mut outcome {
        if cfg.probe != Probe::InProcess {
            m.peak_rss_mb = stats::peak_rss_mb();
            m.rss_scope = "the process running this workload (engine, gateway and baseline; PostgreSQL not included)".to_owned();
        }
    }
    Ok(outcome)
}

#[cfg(not(feature = "gateway"))]
fn run_postgres(
    _rt: &tokio::runtime::Runtime,
    _cfg: &BenchConfig,
    w: Workload,
) -> BenchResult<Outcome> {
    Ok(Outcome::skipped(w, "built without the `gateway` feature"))
}

/// Runs every selected workload in this process, calling `progress` before
/// each one.
///
/// # Errors
/// The first failing workload.
pub fn run_all(cfg: &BenchConfig, progress: &dyn Fn(Workload)) -> BenchResult<Vec<Outcome>> {
    let mut out = Vec::new();
    for w in cfg.selected() {
        progress(w);
        out.push(run_one(cfg, w)?);
    }
    Ok(out)
}

/// Formats the outcomes as a plain-text table: with several runs the ratio
/// column shows the median run's ratio and the min–max over the runs; `load`
/// is the 1-minute load average at the start (the median over the runs);
/// `Ir` is `baseline / engine` instructions when counted (`--instructions`).
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = format!(
        "{:<32} {:>14} {:>14} {:>8} {:>15} {:>6} {:>6} {:>9} {:<7} {}\n",
        "workload",
        "engine",
        "baseline",
        "ratio",
        "min-max",
        "Ir",
        "load",
        "RSS MB",
        "target",
        "unit"
    );
    for o in outcomes {
        match o {
            Outcome::Ok(m) => {
                let rss = m
                    .peak_rss_mb
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "-".to_owned());
                let target = match m.target_met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "-",
                };
                let spread = m
                    .runs
                    .as_ref()
                    .map(|r| format!("{:.3}-{:.3}", r.ratio.min, r.ratio.max))
                    .unwrap_or_else(|| "-".to_owned());
                let load = m
                    .runs
                    .as_ref()
                    .and_then(|r| r.load_avg.map(|l| l.median))
                    .or(m.load_avg.as_ref().map(|l| l.start))
                    .map(|l| format!("{l:.2}"))
                    .unwrap_or_else(|| "-".to_owned());
                let ir = m
                    .instructions
                    .as_ref()
                    .map(|i| format!("{:.3}", i.throughput_equivalent))
                    .unwrap_or_else(|| "-".to_owned());
                s.push_str(&format!(
                    "{:<32} {:>14} {:>14} {:>8.3} {:>15} {:>6} {:>6} {:>9} {:<7} {} ({} better)\n",
                    m.name,
                    fmt_num(m.engine),
                    fmt_num(m.baseline),
                    m.ratio,
                    spread,
                    ir,
                    load,
                    rss,
                    target,
                    m.unit,
                    match m.better {
                        Better::Higher => "higher",
                        Better::Lower => "lower",
                    }
                ));
            }
            Outcome::Skipped { name, reason } => {
                s.push_str(&format!("{name:<32} skipped: {reason}\n"));
            }
        }
    }
    #[cfg(feature = "gateway")]
    for o in outcomes {
        if let Some(t) = match o {
            Outcome::Ok(m) => server_load::table(m),
            Outcome::Skipped { .. } => None,
        } {
            s.push_str(&t);
        }
    }
    s
}

/// A number with a sensible number of digits.
pub fn fmt_num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
