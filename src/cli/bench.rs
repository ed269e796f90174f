//! `bench`: runs the benchmark workloads ([`crate::bench`]), prints a table,
//! writes JSON and an SVG chart.
//!
//! By default every workload runs in a child process of this executable
//! (`supamerge bench --worker NAME ...`), so each one starts from a clean heap
//! and reports its own peak RSS; the cold-start workload starts a further
//! child per probe (`--cold-probe`). `--in-process` runs everything here.
//!
//! `--runs N` runs every selected workload N times (round robin) and reports
//! the median run with the min–max over the runs ([`crate::bench::runs`]);
//! `--instructions` also counts the instructions of the engine and of the
//! baseline of the CPU-bound merges under `valgrind --tool=callgrind`
//! (three further child processes per workload: setup only, setup +
//! baseline, setup + engine).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{write_line, CliError, OutputMode};
use crate::bench::{
    self, chart, cold_probe, runs, BenchConfig, BenchError, Instructions, Outcome, Phase, Probe,
    ProbeMode, Sizes, Workload,
};
use crate::id::DocId;

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// With the global `--json`: the file to write the JSON results to
    /// (`-` or absent: stdout, and the table goes to stderr).
    #[arg(value_name = "JSON_FILE")]
    pub json_file: Option<PathBuf>,
    /// Small sizes: a smoke test, seconds instead of minutes.
    #[arg(long)]
    pub quick: bool,
    /// The full sizes times this factor (e.g. 0.1: 10,000 changes of one
    /// document, 1,000 documents), for instruction counts in minutes
    /// rather than hours.
    #[arg(long, value_name = "FACTOR", conflicts_with = "quick")]
    pub scale: Option<f64>,
    /// Run only these workloads (names as in the table; repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub only: Vec<String>,
    /// PostgreSQL superuser URL for the gateway workloads (a throwaway
    /// database is created and dropped); also SUPAMERGE_BENCH_DATABASE_URL or
    /// DATABASE_URL. Without it those workloads are skipped.
    #[arg(long, env = "SUPAMERGE_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Scaling curves: run the selected workloads (merge_one_doc,
    /// merge_many_docs, fresh_device_*) at each of these `--scale` factors
    /// and report the cost per change at each size; `--chart` then draws
    /// the curves (e.g. `--scales 0.1,1,10`: 10k / 100k / 1M changes of one
    /// document, 1k / 10k / 100k documents).
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "FACTORS",
          conflicts_with_all = ["quick", "scale", "instructions"])]
    pub scales: Vec<f64>,
    /// `server_load`: the numbers of concurrent clients (default 1,10,50).
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "K")]
    pub clients: Vec<usize>,
    /// `server_load`: the gateway pool sizes to run each K with (default
    /// 16, the gateway's default); the SQL ceiling uses the same size.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "N")]
    pub pool_sizes: Vec<usize>,
    /// Write an SVG chart of the ratios here (e.g. docs/benchmarks.svg).
    #[arg(long, value_name = "SVG")]
    pub chart: Option<PathBuf>,
    /// The automerge-paper editing trace (default: ../shared/data/automerge-paper.json.gz
    /// beside the crate).
    #[arg(long, env = "SUPAMERGE_BENCH_TRACE")]
    pub trace: Option<PathBuf>,
    /// Where temporary replicas and hubs go (default: the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Run every workload in this process (no per-workload RSS figures).
    #[arg(long)]
    pub in_process: bool,
    /// Run every selected workload this many times (round robin) and report
    /// the median run with the min–max over the runs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub runs: usize,
    /// Also count the instructions of the engine and of the baseline of the
    /// CPU-bound merges (merge_*, fresh_device_localhub*) under
    /// `valgrind --tool=callgrind` (valgrind must be installed; about 50x
    /// slower than a normal run).
    #[arg(long)]
    pub instructions: bool,
    /// Internal: run only a part of the workload (setup, baseline, engine).
    #[arg(long, hide = true)]
    pub phase: Option<String>,
    /// Internal: run one workload and print its outcome as JSON.
    #[arg(long, hide = true)]
    pub worker: Option<String>,
    /// Internal: the cold-start probe (`engine` or `baseline`).
    #[arg(long, hide = true)]
    pub cold_probe: Option<String>,
    /// Internal: the cold-start probe's replica directory or saved document.
    #[arg(long, hide = true)]
    pub probe_path: Option<PathBuf>,
    /// Internal: the cold-start probe's document.
    #[arg(long, hide = true)]
    pub probe_doc: Option<String>,
}

/// Prints a run's results: with `--json FILE` the JSON to FILE and the table
/// to stdout; with `--json` alone the JSON to stdout and the table to
/// stderr; without `--json` the table (a FILE then is a usage error).
fn emit(
    doc: &serde_json::Value,
    table: &str,
    a: &BenchArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| CliError::Output(e.into()))?;
    match (mode, a.json_file.as_deref()) {
        (OutputMode::Json, Some(p)) if p.as_os_str() != "-" => {
            std::fs::write(p, text + "\n").map_err(CliError::Output)?;
            write!(out, "{table}").map_err(CliError::Output)?;
        }
        (OutputMode::Json, _) => {
            eprint!("{table}");
            write_line(out, text)?;
        }
        (OutputMode::Human, Some(p)) => {
            return Err(usage(format!(
                "{} given without --json (write `--json {}`)",
                p.display(),
                p.display()
            )))
        }
        (OutputMode::Human, None) => write!(out, "{table}").map_err(CliError::Output)?,
    }
    Ok(())
}

fn usage(reason: String) -> CliError {
    BenchError::Child {
        workload: "bench",
        reason,
    }
    .into()
}

fn config(a: &BenchArgs) -> Result<BenchConfig, CliError> {
    let mut cfg = BenchConfig::new(match (a.quick, a.scale) {
        (true, _) => Sizes::quick(),
        (false, Some(f)) if f > 0.0 && f.is_finite() => Sizes::scaled(f),
        (false, Some(f)) => return Err(usage(format!("--scale {f}: a positive factor"))),
        (false, None) => Sizes::full(),
    });
    for name in &a.only {
        let w = Workload::from_name(name).ok_or_else(|| {
            usage(format!(
                "unknown workload {name}; one of: {}",
                Workload::ALL.map(Workload::name).join(", ")
            ))
        })?;
        cfg.only.push(w);
    }
    if a.clients.contains(&0) || a.pool_sizes.contains(&0) {
        return Err(usage(
            "--clients and --pool-sizes take positive numbers".to_owned(),
        ));
    }
    if !a.clients.is_empty() {
        cfg.sizes.load_clients = a.clients.clone();
    }
    if !a.pool_sizes.is_empty() {
        cfg.sizes.load_pools = a.pool_sizes.clone();
    }
    cfg.trace = Some(a.trace.clone().unwrap_or_else(bench::default_trace_path));
    cfg.database_url = a
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|u| !u.is_empty());
    cfg.scratch = a.scratch.clone();
    if let Some(p) = &a.phase {
        cfg.phase = Phase::from_name(p).ok_or_else(|| {
            usage(format!(
                "unknown phase {p}; one of: all, setup, baseline, engine"
            ))
        })?;
    }
    if a.runs == 0 {
        return Err(usage("--runs must be at least 1".to_owned()));
    }
    if !a.in_process {
        let exe = std::env::current_exe().map_err(CliError::Output)?;
        cfg.probe = Probe::Child(exe);
    }
    Ok(cfg)
}

/// Runs `bench`.
pub(super) fn run(a: BenchArgs, mode: OutputMode, out: &mut dyn Write) -> Result<(), CliError> {
    if let Some(m) = &a.cold_probe {
        return probe(&a, m, out);
    }
    let cfg = config(&a)?;
    if !a.scales.is_empty() && a.worker.is_none() {
        return scaling(&a, &cfg, mode, out);
    }
    if let Some(name) = &a.worker {
        let w =
            Workload::from_name(name).ok_or_else(|| usage(format!("unknown workload {name}")))?;
        let outcome = bench::run_one(&cfg, w)?;
        return super::write_json(out, &outcome);
    }
    let selected = cfg.selected();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(selected.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("bench {bar:30} {pos}/{len} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let runs = a.runs;
    if let Some(b) = &bar {
        b.set_length((selected.len() * runs) as u64);
    }
    let mut per_workload: Vec<Vec<Outcome>> = vec![Vec::new(); selected.len()];
    // Round robin: a burst of load on the machine touches every workload a
    // little rather than all runs of one.
    for run in 0..runs {
        for (i, w) in selected.iter().copied().enumerate() {
            if let Some(b) = &bar {
                b.set_message(if runs > 1 {
                    format!("{} (run {}/{runs})", w.name(), run + 1)
                } else {
                    w.name().to_owned()
                });
            }
            let outcome = match &cfg.probe {
                Probe::InProcess => bench::run_one(&cfg, w),
                Probe::Child(exe) => run_worker(exe, &a, w),
            };
            per_workload[i].push(outcome.unwrap_or_else(|e| Outcome::Skipped {
                name: w.name().to_owned(),
                reason: format!("FAILED: {e}"),
            }));
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
    }
    let mut outcomes: Vec<Outcome> = per_workload
        .into_iter()
        .filter_map(|v| {
            if runs > 1 {
                runs::fold(v)
            } else {
                v.into_iter().next()
            }
        })
        .collect();
    if a.instructions {
        for o in &mut outcomes {
            let Outcome::Ok(m) = o else { continue };
            let Some(w) = Workload::from_name(&m.name).filter(|w| w.has_phases()) else {
                continue;
            };
            if let Some(b) = &bar {
                b.set_message(format!("{} (callgrind)", w.name()));
            }
            m.instructions = Some(Box::new(count_instructions(&a, w)?));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(path) = &a.chart {
        let svg = chart::render(
            &outcomes,
            if a.quick {
                "supamerge benchmarks (--quick sizes)"
            } else {
                "supamerge benchmarks"
            },
        );
        std::fs::write(path, svg).map_err(CliError::Output)?;
    }
    let table = bench::table(&outcomes);
    let doc = json!({
        "version": 1,
        "quick": a.quick,
        "scale": a.scale,
        "runs": runs,
        "machine": machine(),
        "workloads": outcomes,
    });
    emit(&doc, &table, &a, mode, out)
}

fn worker_command(exe: &std::path::Path, a: &BenchArgs, w: Workload) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "--worker", w.name()]);
    if a.quick {
        cmd.arg("--quick");
    }
    if let Some(f) = a.scale {
        cmd.arg("--scale").arg(f.to_string());
    }
    if let Some(t) = &a.trace {
        cmd.arg("--trace").arg(t);
    }
    if let Some(u) = &a.database_url {
        cmd.args(["--database-url", u]);
    }
    if let Some(s) = &a.scratch {
        cmd.arg("--scratch").arg(s);
    }
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    if !a.clients.is_empty() {
        cmd.arg("--clients").arg(list(&a.clients));
    }
    if !a.pool_sizes.is_empty() {
        cmd.arg("--pool-sizes").arg(list(&a.pool_sizes));
    }
    cmd
}

fn run_worker(exe: &std::path::Path, a: &BenchArgs, w: Workload) -> Result<Outcome, BenchError> {
    run_command(worker_command(exe, a, w), exe, w)
}

fn run_command(
    mut cmd: std::process::Command,
    exe: &std::path::Path,
    w: Workload,
) -> Result<Outcome, BenchError> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| BenchError::Io {
            what: "cannot start a benchmark worker",
            path: exe.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(BenchError::Child {
            workload: w.name(),
            reason: format!("worker exited with {}", out.status),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Child {
        workload: w.name(),
        reason: format!(
            "unreadable worker output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ),
    })
}

/// Counts the instructions of `w`'s setup, baseline and engine: three
/// workers under `valgrind --tool=callgrind`, each reporting its total
/// (every thread of the process).
fn count_instructions(a: &BenchArgs, w: Workload) -> Result<Instructions, BenchError> {
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        what: "cannot find this executable",
        path: std::path::PathBuf::from("supamerge"),
        source,
    })?;
    let mut totals = [0u64; 3];
    for (i, phase) in [Phase::Setup, Phase::Baseline, Phase::Engine]
        .into_iter()
        .enumerate()
    {
        let worker = worker_command(&exe, a, w);
        let mut cmd = std::process::Command::new("valgrind");
        cmd.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(worker.get_program())
            .args(worker.get_args())
            .args(["--phase", phase.name()]);
        let out = cmd.output().map_err(|source| BenchError::Io {
            what: "cannot start valgrind (is it installed?)",
            path: std::path::PathBuf::from("valgrind"),
            source,
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(BenchError::Child {
                workload: w.name(),
                reason: format!(
                    "callgrind ({}) exited with {}: {stderr}",
                    phase.name(),
                    out.status
                ),
            });
        }
        totals[i] = collected(&stderr).ok_or_else(|| BenchError::Child {
            workload: w.name(),
            reason: format!("no \"Collected :\" line in callgrind's output: {stderr}"),
        })?;
    }
    Ok(Instructions::from_totals(totals[0], totals[1], totals[2]))
}

/// The instruction total callgrind prints at exit (`==PID== Collected : N`).
fn collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let rest = l.split("Collected :").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn probe(a: &BenchArgs, m: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let mode = match m {
        "engine" => ProbeMode::Engine,
        "baseline" => ProbeMode::Baseline,
        other => return Err(usage(format!("unknown probe {other}"))),
    };
    let path = a
        .probe_path
        .clone()
        .ok_or_else(|| usage("--probe-path is required".to_owned()))?;
    let doc: DocId = a
        .probe_doc
        .as_deref()
        .ok_or_else(|| usage("--probe-doc is required".to_owned()))?
        .parse()?;
    let mut r = cold_probe(mode, &path, doc)?;
    r.peak_rss_mb = bench::stats::peak_rss_mb();
    super::write_json(out, &r)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|s| s.trim_start_matches([' ', '\t', ':']).to_owned())
    });
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// The changes a scaling workload moves at `sizes`, and how many changes one
/// unit of its figure is (`docs/s` counts documents).
fn scaling_size(w: Workload, sizes: &Sizes) -> Option<(u64, f64)> {
    let docs = (sizes.many_docs * sizes.changes_per_doc) as u64;
    match w {
        Workload::MergeOneDoc => Some((sizes.one_doc_changes as u64, 1.0)),
        Workload::MergeManyDocs => Some((docs, 1.0)),
        Workload::FreshDeviceLocalhub
        | Workload::FreshDeviceLocalhubSnapshots
        | Workload::FreshDevicePostgres
        | Workload::FreshDevicePostgresSnapshots => Some((docs, sizes.changes_per_doc as f64)),
        _ => None,
    }
}

/// `--scales`: the selected workloads at each factor, each in its own
/// worker; the cost per change of the engine and of the baseline at each
/// size, as a table, JSON and (with `--chart`) curves.
fn scaling(
    a: &BenchArgs,
    cfg: &BenchConfig,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let selected = cfg.selected();
    if let Some(w) = selected
        .iter()
        .find(|w| scaling_size(**w, &cfg.sizes).is_none())
    {
        return Err(usage(format!(
            "--scales: {} has no cost per change; use --only with merge_one_doc, merge_many_docs or fresh_device_*",
            w.name()
        )));
    }
    if let Some(f) = a.scales.iter().find(|f| !(**f > 0.0 && f.is_finite())) {
        return Err(usage(format!("--scales {f}: positive factors")));
    }
    let exe = std::env::current_exe().map_err(CliError::Output)?;
    let mut points = Vec::new();
    let mut groups = Vec::new();
    let mut table = format!(
        "{:<32} {:>6} {:>10} {:>12} {:>12} {:>8} {:>9} {:>6}\n",
        "workload", "scale", "changes", "engine us/ch", "base us/ch", "ratio", "RSS MB", "load"
    );
    for &f in &a.scales {
        let sizes = Sizes::scaled(f);
        let mut outcomes = Vec::new();
        for w in &selected {
            eprintln!("bench --scales: {} at scale {f}", w.name());
            let mut cmd = worker_command(&exe, a, *w);
            cmd.arg("--scale").arg(f.to_string());
            let o = run_command(cmd, &exe, *w).unwrap_or_else(|e| Outcome::Skipped {
                name: w.name().to_owned(),
                reason: format!("FAILED: {e}"),
            });
            match (&o, scaling_size(*w, &sizes)) {
                (Outcome::Ok(m), Some((changes, per_unit)))
                    if m.engine > 0.0 && m.baseline > 0.0 =>
                {
                    let p = chart::ScalePoint {
                        workload: m.name.clone(),
                        changes,
                        engine_us: 1e6 / (m.engine * per_unit),
                        baseline_us: 1e6 / (m.baseline * per_unit),
                    };
                    table.push_str(&format!(
                        "{:<32} {:>6} {:>10} {:>12.3} {:>12.3} {:>8.3} {:>9} {:>6}\n",
                        p.workload,
                        f,
                        changes,
                        p.engine_us,
                        p.baseline_us,
                        m.ratio,
                        m.peak_rss_mb.map(|r| format!("{r:.0}")).unwrap_or_default(),
                        m.load_avg
                            .as_ref()
                            .map(|l| format!("{:.2}", l.start))
                            .unwrap_or_default(),
                    ));
                    points.push(p);
                }
                _ => table.push_str(&format!("{:<32} {:>6} not measured: {o:?}\n", w.name(), f)),
            }
            outcomes.push(o);
        }
        groups.push(json!({"scale": f, "workloads": outcomes}));
    }
    if let Some(path) = &a.chart {
        let svg = chart::render_scaling(&points, "supamerge: cost per change against size");
        std::fs::write(path, svg).map_err(CliError::Output)?;
    }
    let doc = json!({
        "version": 1,
        "scales": groups,
        "machine": machine(),
        "points": points.iter().map(|p| json!({
            "workload": p.workload,
            "changes": p.changes,
            "engine_us_per_change": p.engine_us,
            "baseline_us_per_change": p.baseline_us,
        })).collect::<Vec<_>>(),
    });
    emit(&doc, &table, a, mode, out)
}
