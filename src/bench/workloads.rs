//! The workloads that need no PostgreSQL: merges from a LocalHub, the editing
//! trace, the live trickle, local commits, cold start and the fresh device
//! on a LocalHub.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, Change, ObjType, ReadDoc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::data::{self, GenDoc};
use super::stats::{self, rate, Samples};
use super::{
    samod_baseline, BenchConfig, BenchError, BenchResult, Better, Measurement, Outcome, Phase,
    Probe, Target, Workload,
};
use crate::id::{DocId, WorkspaceId};
use crate::remote::{LocalHub, Remote, RemoteError};
use crate::replica::{RemoteChange, Replica, SyncPort};
use crate::store::Durability;
use crate::sync::session;
use crate::sync::SyncConfig;

pub(super) fn eng(w: Workload) -> impl Fn(crate::Error) -> BenchError {
    move |e| BenchError::Engine {
        workload: w.name(),
        source: Box::new(e),
    }
}

pub(super) fn am(w: Workload) -> impl Fn(automerge::AutomergeError) -> BenchError {
    move |source| BenchError::Automerge {
        workload: w.name(),
        source: Box::new(source),
    }
}

pub(super) fn rem(w: Workload) -> impl Fn(RemoteError) -> BenchError {
    move |source| BenchError::Remote {
        workload: w.name(),
        source: Box::new(source),
    }
}

fn dec(w: Workload) -> impl Fn(automerge::LoadChangeError) -> BenchError {
    move |source| BenchError::Decode {
        workload: w.name(),
        source: Box::new(source),
    }
}

/// Sync settings that move changes only: no snapshot uploads, no bootstrap
/// from snapshots.
pub(super) fn changes_only() -> SyncConfig {
    SyncConfig {
        snapshot_threshold: 0,
        bootstrap_from_snapshots: false,
        ..SyncConfig::default()
    }
}

/// One sync pass of `replica` against `remote` (push, pull, snapshots as
/// `cfg` says).
pub(super) fn sync_once(
    rt: &tokio::runtime::Runtime,
    w: Workload,
    replica: &Replica,
    remote: &dyn Remote,
    cfg: &SyncConfig,
    ws: WorkspaceId,
) -> BenchResult<session::SyncReport> {
    rt.block_on(session::sync_once(replica, remote, cfg, &[ws], &|_| {}))
        .map_err(eng(w))
}

/// Pulls everything of `ws` into `replica` (the measured part of the merges).
fn pull_all(
    rt: &tokio::runtime::Runtime,
    w: Workload,
    replica: &Replica,
    remote: &dyn Remote,
    ws: WorkspaceId,
) -> BenchResult<session::SyncReport> {
    rt.block_on(session::pull(replica, remote, &changes_only(), ws, &|_| {}))
        .map_err(eng(w))
}

/// An empty replica (default options) pulls everything of `ws`; returns it
/// with the time taken, the report and its directory (kept alive by the caller).
fn timed_pull(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    w: Workload,
    remote: &dyn Remote,
    ws: WorkspaceId,
) -> BenchResult<(Replica, Duration, session::SyncReport, tempfile::TempDir)> {
    let dir = cfg.tempdir("replica directory")?;
    let replica = Replica::open(dir.path()).map_err(eng(w))?;
    let t = Instant::now();
    let report = pull_all(rt, w, &replica, remote, ws)?;
    Ok((replica, t.elapsed(), report, dir))
}

/// Decodes change bytes and applies them to a new document in one call.
fn raw_merge(w: Workload, bytes: Vec<Vec<u8>>) -> BenchResult<Automerge> {
    let changes = bytes
        .into_iter()
        .map(Change::from_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(dec(w))?;
    let mut doc = Automerge::new();
    doc.apply_changes(changes).map_err(am(w))?;
    Ok(doc)
}

fn hub(w: Workload) -> BenchResult<LocalHub> {
    LocalHub::temporary().map_err(rem(w))
}

fn check(w: Workload, ok: bool, what: impl FnOnce() -> String) -> BenchResult<()> {
    if ok {
        Ok(())
    } else {
        Err(BenchError::Mismatch {
            workload: w.name(),
            what: what(),
        })
    }
}

pub(super) fn merge_one_doc(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
) -> BenchResult<Outcome> {
    const W: Workload = Workload::MergeOneDoc;
    let n = cfg.sizes.one_doc_changes;
    let coll = data::collection()?;
    let ws = data::workspace();
    let g = data::entity_with_changes(1, n, &coll).map_err(am(W))?;
    let hub = hub(W)?;
    rt.block_on(data::push_all(&hub, ws, g.envelopes(&coll)))
        .map_err(rem(W))?;
    let bytes = g.change_bytes();
    if cfg.phase == Phase::Setup {
        return Ok(phase_only(W, cfg.phase));
    }

    let mut base_paged = Duration::ZERO;
    let mut base = Duration::ZERO;
    if cfg.phase.baseline() {
        if cfg.phase == Phase::All {
            // The engine applies what a pull page holds (at most
            // MAX_PULL_LIMIT changes) per call; the same paging on raw
            // Automerge shows how much of the gap is Automerge's per-call
            // cost on a growing document.
            let t = Instant::now();
            let mut paged = Automerge::new();
            for page in bytes.chunks(crate::protocol::wire::MAX_PULL_LIMIT as usize) {
                let changes = page
                    .iter()
                    .map(|b| Change::from_bytes(b.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(dec(W))?;
                paged.apply_changes(changes).map_err(am(W))?;
            }
            base_paged = t.elapsed();
            drop(paged);
        }

        let t = Instant::now();
        let raw = raw_merge(W, bytes)?;
        base = t.elapsed();
        check(W, raw.get_heads() == g.doc.get_heads(), || {
            "raw automerge's heads differ from the generator's".to_owned()
        })?;
    } else {
        drop(bytes);
    }
    if !cfg.phase.engine() {
        return Ok(phase_only(W, cfg.phase));
    }
    // The check below needs the heads only: the generator's document is
    // not kept through the engine's run.
    let (id, want) = (g.id, g.doc.get_heads());
    drop(g);

    let (replica, engine, report, _dir, rss) = timed_pull_rss(rt, cfg, W, &hub, ws)?;

    let heads = replica.heads(&id).map_err(eng(W))?;
    check(W, heads == want && report.applied == n, || {
        format!(
            "{} of {n} changes applied, heads differ: {}",
            report.applied,
            heads != want
        )
    })?;
    if cfg.phase != Phase::All {
        return Ok(phase_only(W, cfg.phase));
    }
    Ok(Outcome::Ok(rss.annotate(
        merge_measurement(
            W,
            format!("{n} small map changes of one document pulled from a LocalHub, applied and persisted (default durability: flush per page)"),
            (n, engine, base),
            "automerge: Change::from_bytes of every change + one apply_changes",
            0.9,
        )
        .with_extra("baseline_paged_s", base_paged.as_secs_f64())
        .with_extra("baseline_paged_changes_per_s", rate(n, base_paged))
        .with_extra("pages", report.pages as f64),
    )))
}

/// What a run of one part of a workload reports (`--phase`, for
/// instruction counts): nothing measured.
fn phase_only(w: Workload, phase: Phase) -> Outcome {
    Outcome::skipped(w, format!("only the {} phase ran (--phase)", phase.name()))
}

pub(super) fn merge_many_docs(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
) -> BenchResult<Outcome> {
    const W: Workload = Workload::MergeManyDocs;
    let (docs, per) = (cfg.sizes.many_docs, cfg.sizes.changes_per_doc);
    let n = docs * per;
    let coll = data::collection()?;
    let ws = data::workspace();
    let gens = generate_docs(W, docs, per)?;
    let hub = hub(W)?;
    let envs = gens.iter().flat_map(|g| g.envelopes(&coll)).collect();
    rt.block_on(data::push_all(&hub, ws, envs))
        .map_err(rem(W))?;
    let per_doc: Vec<Vec<Vec<u8>>> = gens.iter().map(GenDoc::change_bytes).collect();
    if cfg.phase == Phase::Setup {
        return Ok(phase_only(W, cfg.phase));
    }

    let mut base = Duration::ZERO;
    if cfg.phase.baseline() {
        let t = Instant::now();
        let mut raws = Vec::with_capacity(docs);
        for bytes in per_doc {
            raws.push(raw_merge(W, bytes)?);
        }
        base = t.elapsed();
        if let (Some(g), Some(raw)) = (gens.last(), raws.last()) {
            check(W, raw.get_heads() == g.doc.get_heads(), || {
                "raw automerge's heads of the last document differ".to_owned()
            })?;
        }
    } else {
        drop(per_doc);
    }
    if !cfg.phase.engine() {
        return Ok(phase_only(W, cfg.phase));
    }
    // The checks below need the first and last documents' heads only: the
    // generator's 10,000 documents are not kept through the engine's run.
    let expected: Vec<(DocId, Vec<automerge::ChangeHash>)> = [gens.first(), gens.last()]
        .into_iter()
        .flatten()
        .map(|g| (g.id, g.doc.get_heads()))
        .collect();
    drop(gens);

    let (replica, engine, report, _dir, rss) = timed_pull_rss(rt, cfg, W, &hub, ws)?;

    check(
        W,
        report.applied == n && replica.doc_count() == docs,
        || {
            format!(
                "{} of {n} changes applied, {} documents",
                report.applied,
                replica.doc_count()
            )
        },
    )?;
    for (id, want) in &expected {
        let heads = replica.heads(id).map_err(eng(W))?;
        check(W, &heads == want, || format!("heads of document {id}"))?;
    }
    if cfg.phase != Phase::All {
        return Ok(phase_only(W, cfg.phase));
    }
    Ok(Outcome::Ok(rss.annotate(merge_measurement(
        W,
        format!("{docs} documents x {per} changes pulled from a LocalHub, applied and persisted"),
        (n, engine, base),
        "automerge: per document, Change::from_bytes + one apply_changes",
        0.7,
    ))))
}

/// The memory of a workload's engine phase, read around it: the process's
/// peak before it, its RSS when it started and the peak during it
/// (`VmHWM` reset at its start, see [`stats::reset_peak_rss`]).
struct EngineRss {
    process_peak_before: Option<f64>,
    start: Option<f64>,
    /// `None` when the peak could not be reset.
    peak: Option<f64>,
}

impl EngineRss {
    /// Starts measuring: call right before the engine phase.
    fn start() -> Self {
        let process_peak_before = stats::peak_rss_mb();
        let start = stats::rss_mb();
        let reset = stats::reset_peak_rss();
        Self {
            process_peak_before,
            start,
            peak: reset.then_some(0.0),
        }
    }

    /// Ends measuring: call right after the engine phase.
    fn end(&mut self) {
        if self.peak.is_some() {
            self.peak = stats::peak_rss_mb();
        }
    }

    /// The row's peak RSS stays the whole process's (the larger of the
    /// peaks before and during the engine phase); the engine phase's own
    /// figures go in `extra`.
    fn annotate(&self, mut m: Measurement) -> Measurement {
        let whole = match (self.process_peak_before, stats::peak_rss_mb()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if whole.is_some() {
            m.peak_rss_mb = whole;
            m.rss_scope = "the process running this workload (generator, hub, baseline and engine); extra engine_peak_rss_mb: the engine's pull alone".to_owned();
        }
        if let (Some(start), Some(peak)) = (self.start, self.peak) {
            m = m
                .with_extra("engine_start_rss_mb", start)
                .with_extra("engine_peak_rss_mb", peak);
        }
        m
    }
}

/// [`timed_pull`], with the memory of the pull ([`EngineRss`]).
#[allow(clippy::type_complexity)]
fn timed_pull_rss(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    w: Workload,
    remote: &dyn Remote,
    ws: WorkspaceId,
) -> BenchResult<(
    Replica,
    Duration,
    session::SyncReport,
    tempfile::TempDir,
    EngineRss,
)> {
    let mut rss = EngineRss::start();
    let (replica, d, report, dir) = timed_pull(rt, cfg, w, remote, ws)?;
    rss.end();
    Ok((replica, d, report, dir, rss))
}

/// A merge throughput: `n` changes in `engine` and `base` time, with the
/// issue's ratio target.
fn merge_measurement(
    w: Workload,
    description: String,
    (n, engine, base): (usize, Duration, Duration),
    baseline_name: &str,
    target: f64,
) -> Measurement {
    Measurement::new(
        w,
        description,
        "changes/s",
        Better::Higher,
        rate(n, engine),
        baseline_name,
        rate(n, base),
        Some(Target::RatioAtLeast(target)),
    )
    .with_extra("engine_s", engine.as_secs_f64())
    .with_extra("baseline_s", base.as_secs_f64())
}

fn generate_docs(w: Workload, docs: usize, per: usize) -> BenchResult<Vec<GenDoc>> {
    let coll = data::collection()?;
    (0..docs as u64)
        .map(|i| data::entity_with_changes(1_000 + i, per, &coll).map_err(am(w)))
        .collect()
}

pub(super) fn editing_trace(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
) -> BenchResult<Outcome> {
    const W: Workload = Workload::EditingTrace;
    let Some(path) = cfg.trace.clone().filter(|p| p.exists()) else {
        return Ok(Outcome::skipped(
            W,
            format!(
                "the automerge-paper trace is absent ({}); pass --trace PATH",
                cfg.trace
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no path".to_owned())
            ),
        ));
    };
    let trace = data::load_trace(&path)?;
    let whole = cfg.sizes.trace_txns.is_none();
    let patches: Vec<data::Patch> = match cfg.sizes.trace_txns {
        Some(k) => trace.patches.iter().take(k).cloned().collect(),
        None => trace.patches.clone(),
    };
    let n = patches.len();
    let coll = data::collection()?;
    let ws = data::workspace();

    // Baseline: type into one in-memory document, merge into a second.
    let t = Instant::now();
    let mut a = Automerge::new();
    let text = a
        .transact::<_, _, automerge::AutomergeError>(|tx| {
            let data = tx.put_object(automerge::ROOT, "data", ObjType::Map)?;
            tx.put_object(&data, "text", ObjType::Text)
        })
        .map_err(|f| am(W)(f.error))?
        .result;
    for (pos, del, ins) in &patches {
        let mut tx = a.transaction();
        tx.splice_text(&text, *pos, *del as isize, ins)
            .map_err(am(W))?;
        tx.commit();
    }
    let typed_raw = t.elapsed();
    let mut b = Automerge::new();
    b.apply_changes(a.get_changes(&[])).map_err(am(W))?;
    let base = t.elapsed();
    let raw_text = b.text(&text).map_err(am(W))?;
    if whole {
        check(W, raw_text == trace.end_content, || {
            "raw automerge text differs from endContent".to_owned()
        })?;
    }

    // Engine: local edits on one replica, synced through a LocalHub into another.
    let hub = hub(W)?;
    let (da, db) = (
        cfg.tempdir("replica directory")?,
        cfg.tempdir("replica directory")?,
    );
    let buffered = Durability::Buffered {
        flush_every_ms: 500,
    };
    let ra = Replica::builder(da.path())
        .with_durability(buffered)
        .open()
        .map_err(eng(W))?;
    let rb = Replica::open(db.path()).map_err(eng(W))?;
    let t = Instant::now();
    let id = ra.create_json(ws, &coll, &json!({})).map_err(eng(W))?;
    let (text, _) = ra
        .transact(&id, |tx, data| tx.put_object(data, "text", ObjType::Text))
        .map_err(eng(W))?;
    for (pos, del, ins) in &patches {
        ra.transact(&id, |tx, _| tx.splice_text(&text, *pos, *del as isize, ins))
            .map_err(eng(W))?;
    }
    ra.flush().map_err(eng(W))?;
    let typed = t.elapsed();
    sync_once(rt, W, &ra, &hub, &changes_only(), ws)?;
    let pushed = t.elapsed();
    sync_once(rt, W, &rb, &hub, &changes_only(), ws)?;
    let engine = t.elapsed();
    let got = rb
        .with_doc(&id, |d| d.text(&text))
        .map_err(eng(W))?
        .map_err(am(W))?;
    check(W, got == raw_text, || {
        "the second replica's text differs from raw automerge's".to_owned()
    })?;

    Ok(Outcome::Ok(
        Measurement::new(
            W,
            format!("automerge-paper trace ({n} edits) typed as local edits on one replica (buffered durability), pushed to a LocalHub and pulled into a second replica (default durability)"),
            "edits/s",
            Better::Higher,
            rate(n, engine),
            "automerge in memory: one transaction per edit, then apply_changes into a second document",
            rate(n, base),
            None,
        )
        .with_extra("engine_type_s", typed.as_secs_f64())
        .with_extra("engine_push_s", (pushed - typed).as_secs_f64())
        .with_extra("engine_pull_s", (engine - pushed).as_secs_f64())
        .with_extra("baseline_type_s", typed_raw.as_secs_f64())
        .with_extra("baseline_merge_s", (base - typed_raw).as_secs_f64()),
    ))
}

pub(super) fn live_trickle(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
) -> BenchResult<Outcome> {
    const W: Workload = Workload::LiveTrickle;
    let (ops, rounds) = (cfg.sizes.trickle_ops, cfg.sizes.trickle_rounds);
    let coll = data::collection()?;
    let ws = data::workspace();
    let (mut g, data_obj) = data::large_text_entity(7, ops, &coll).map_err(am(W))?;
    let hub = hub(W)?;
    rt.block_on(data::push_all(&hub, ws, g.envelopes(&coll)))
        .map_err(rem(W))?;
    let dir = cfg.tempdir("replica directory")?;
    let replica = Replica::open(dir.path()).map_err(eng(W))?;
    sync_once(rt, W, &replica, &hub, &SyncConfig::default(), ws)?;
    let mut raw = g.doc.clone();

    let (mut eng_s, mut base_s) = (Samples::new(), Samples::new());
    for i in 0..rounds {
        data::small_edit(&mut g.doc, &data_obj, 1_000_000 + i).map_err(am(W))?;
        let change = g.doc.get_last_local_change().ok_or(BenchError::Mismatch {
            workload: W.name(),
            what: "no local change".to_owned(),
        })?;
        let env = crate::protocol::wire::ChangeEnvelope {
            doc_id: g.id,
            collection: coll.clone(),
            hash: change.hash(),
            bytes: change.raw_bytes().to_vec(),
        };
        rt.block_on(data::push_all(&hub, ws, vec![env]))
            .map_err(rem(W))?;

        let t = Instant::now();
        raw.apply_changes([change]).map_err(am(W))?;
        base_s.push(t.elapsed());

        let t = Instant::now();
        let r = sync_once(rt, W, &replica, &hub, &SyncConfig::default(), ws)?;
        eng_s.push(t.elapsed());
        check(W, r.applied == 1, || {
            format!("round {i} applied {} changes", r.applied)
        })?;
    }
    let heads = replica.heads(&g.id).map_err(eng(W))?;
    check(W, heads == raw.get_heads(), || {
        "heads differ after the trickle".to_owned()
    })?;
    Ok(Outcome::Ok(
        Measurement::new(
            W,
            format!("a document with {ops} ops receiving one small remote change per sync round ({rounds} rounds, LocalHub, default durability and sync settings): p50 latency of a round"),
            "us",
            Better::Lower,
            eng_s.percentile(50.0),
            "automerge: apply_changes of the one change to the same document in memory (p50)",
            base_s.percentile(50.0),
            None,
        )
        .with_extra("engine_p99_us", eng_s.percentile(99.0))
        .with_extra("engine_mean_us", eng_s.mean())
        .with_extra("baseline_p99_us", base_s.percentile(99.0)),
    ))
}

pub(super) fn local_commit(cfg: &BenchConfig, durability: Durability) -> BenchResult<Outcome> {
    let (w, n, mode) = match durability {
        Durability::Immediate => (
            Workload::LocalCommitImmediate,
            cfg.sizes.commits_immediate,
            "Durability::Immediate (the default: flush per commit)",
        ),
        Durability::Buffered { .. } => (
            Workload::LocalCommitBuffered,
            cfg.sizes.commits_buffered,
            "Durability::Buffered (background flush every 500 ms)",
        ),
    };
    let coll = data::collection()?;
    let ws = data::workspace();

    let (_, mut raw, data_obj) = data::new_entity(3, &coll).map_err(am(w))?;
    let mut base_s = Samples::new();
    let t = Instant::now();
    for i in 0..n {
        let s = Instant::now();
        let mut tx = raw.transaction();
        tx.put(&data_obj, "n", i as i64).map_err(am(w))?;
        tx.commit_with(CommitOptions::default().with_time(i as i64));
        base_s.push(s.elapsed());
    }
    let base = t.elapsed();

    let dir = cfg.tempdir("replica directory")?;
    let replica = Replica::builder(dir.path())
        .with_durability(durability)
        .open()
        .map_err(eng(w))?;
    let id = replica
        .create_json(ws, &coll, &json!({"n": -1}))
        .map_err(eng(w))?;
    let mut eng_s = Samples::new();
    let t = Instant::now();
    for i in 0..n {
        let s = Instant::now();
        replica
            .transact(&id, |tx, data| tx.put(data, "n", i as i64))
            .map_err(eng(w))?;
        eng_s.push(s.elapsed());
    }
    let engine = t.elapsed();
    check(w, replica.pending() == n + 1, || {
        format!("{} outbox entries for {} commits", replica.pending(), n + 1)
    })?;
    Ok(Outcome::Ok(
        Measurement::new(
            w,
            format!("{n} local edits of one entity, each committed with its outbox entry in one sled transaction; {mode}"),
            "edits/s",
            Better::Higher,
            rate(n, engine),
            "automerge: transaction + put + commit on an in-memory document",
            rate(n, base),
            None,
        )
        .with_extra("engine_p50_us", eng_s.percentile(50.0))
        .with_extra("engine_p99_us", eng_s.percentile(99.0))
        .with_extra("baseline_p50_us", base_s.percentile(50.0))
        .with_extra("baseline_p99_us", base_s.percentile(99.0)),
    ))
}

/// Which side of the cold start a probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeMode {
    /// Open the replica and read one entity as JSON.
    Engine,
    /// Read one document's `save()` bytes from a file and load it.
    Baseline,
}

/// What one cold-start probe measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Time from nothing loaded to the entity's JSON, in ms.
    pub ms: f64,
    /// Peak RSS of the probing process in MB (`None` in-process).
    pub peak_rss_mb: Option<f64>,
}

/// Measures one cold-start probe in this process: `path` is the replica
/// directory ([`ProbeMode::Engine`]) or the saved document
/// ([`ProbeMode::Baseline`]).
///
/// # Errors
/// Opening or reading fails.
pub fn cold_probe(mode: ProbeMode, path: &Path, doc: DocId) -> BenchResult<ProbeResult> {
    const W: Workload = Workload::ColdStart;
    let t = Instant::now();
    let value = match mode {
        ProbeMode::Engine => {
            let replica = Replica::open(path).map_err(eng(W))?;
            replica.get_json(&doc).map_err(eng(W))?
        }
        ProbeMode::Baseline => {
            let bytes = std::fs::read(path).map_err(|source| BenchError::Io {
                what: "cannot read the saved document",
                path: path.to_path_buf(),
                source,
            })?;
            let d = Automerge::load(&bytes).map_err(am(W))?;
            crate::entity::data_json(crate::conflict::LwwView::new(
                &d,
                &crate::conflict::EffectiveClock::new(),
            ))
        }
    };
    let ms = t.elapsed().as_secs_f64() * 1e3;
    check(W, value.get("title").is_some(), || {
        format!("the read entity has no title: {value}")
    })?;
    Ok(ProbeResult {
        ms,
        peak_rss_mb: None,
    })
}

fn run_probe(
    cfg: &BenchConfig,
    mode: ProbeMode,
    path: &Path,
    doc: DocId,
) -> BenchResult<ProbeResult> {
    const W: Workload = Workload::ColdStart;
    match &cfg.probe {
        Probe::InProcess => cold_probe(mode, path, doc),
        Probe::Child(exe) => {
            let mode_arg = match mode {
                ProbeMode::Engine => "engine",
                ProbeMode::Baseline => "baseline",
            };
            let out = std::process::Command::new(exe)
                .args(["bench", "--cold-probe", mode_arg, "--probe-path"])
                .arg(path)
                .args(["--probe-doc", &doc.to_string()])
                .output()
                .map_err(|source| BenchError::Io {
                    what: "cannot start the cold-start probe",
                    path: exe.clone(),
                    source,
                })?;
            if !out.status.success() {
                return Err(BenchError::Child {
                    workload: W.name(),
                    reason: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
                });
            }
            serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Child {
                workload: W.name(),
                reason: format!(
                    "unreadable probe output ({e}): {}",
                    String::from_utf8_lossy(&out.stdout)
                ),
            })
        }
    }
}

pub(super) fn cold_start(cfg: &BenchConfig) -> BenchResult<Outcome> {
    const W: Workload = Workload::ColdStart;
    let n = cfg.sizes.cold_docs;
    let coll = data::collection()?;
    let ws = data::workspace();
    let dir = cfg.tempdir("replica directory")?;
    let target = data::doc_id(10_000 + n as u64 / 2);
    let saved: PathBuf = dir.path().join("one-document.automerge");
    {
        let replica = Replica::builder(dir.path().join("replica"))
            .with_durability(Durability::Buffered {
                flush_every_ms: 1_000,
            })
            .open()
            .map_err(eng(W))?;
        let mut batch = Vec::new();
        for i in 0..n as u64 {
            let g = data::entity_with_changes(10_000 + i, 1, &coll).map_err(am(W))?;
            if g.id == target {
                std::fs::write(&saved, g.doc.save()).map_err(|source| BenchError::Io {
                    what: "cannot write",
                    path: saved.clone(),
                    source,
                })?;
            }
            batch.extend(
                g.envelopes(&coll)
                    .into_iter()
                    .map(|e| RemoteChange::from_envelope(ws, e)),
            );
            if batch.len() >= 1_000 {
                replica
                    .apply_remote(std::mem::take(&mut batch), None)
                    .map_err(eng(W))?;
            }
        }
        replica.apply_remote(batch, None).map_err(eng(W))?;
        replica.flush().map_err(eng(W))?;
    }
    // sled's background threads release the directory a moment after the
    // last handle drops; do not let the probe's open wait for that.
    std::thread::sleep(Duration::from_millis(1_500));
    let base = run_probe(cfg, ProbeMode::Baseline, &saved, target)?;
    let engine = run_probe(cfg, ProbeMode::Engine, &dir.path().join("replica"), target)?;
    let mut m = Measurement::new(
        W,
        format!("open a replica holding {n} documents and read one entity as JSON, in a fresh process (OS page cache warm)"),
        "ms",
        Better::Lower,
        engine.ms,
        "automerge: read the one document's save() from a file and load it, in a fresh process",
        base.ms,
        Some(Target::EngineBelow { value: 200.0, rss_mb: Some(100.0) }),
    );
    m.peak_rss_mb = engine.peak_rss_mb;
    m.rss_scope = "the probe process that opened the replica and read one entity".to_owned();
    if let Some(r) = base.peak_rss_mb {
        m.extra.insert("baseline_peak_rss_mb".to_owned(), r);
    }
    m.check_target();
    Ok(Outcome::Ok(m))
}

/// Generates the fresh-device documents and fills a hub (optionally with
/// snapshots uploaded by a seeding replica).
pub(super) fn seed_remote(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    w: Workload,
    remote: &dyn Remote,
    ws: WorkspaceId,
    snapshots: bool,
) -> BenchResult<Vec<GenDoc>> {
    let coll = data::collection()?;
    let gens = generate_docs(w, cfg.sizes.many_docs, cfg.sizes.changes_per_doc)?;
    let envs = gens.iter().flat_map(|g| g.envelopes(&coll)).collect();
    rt.block_on(data::push_all(remote, ws, envs))
        .map_err(rem(w))?;
    if snapshots {
        let dir = cfg.tempdir("seed replica directory")?;
        let seed = Replica::builder(dir.path())
            .with_durability(Durability::Buffered {
                flush_every_ms: 500,
            })
            .open()
            .map_err(eng(w))?;
        let seed_cfg = SyncConfig {
            snapshot_threshold: 1,
            bootstrap_from_snapshots: false,
            ..SyncConfig::default()
        };
        sync_once(rt, w, &seed, remote, &seed_cfg, ws)?;
    }
    Ok(gens)
}

/// The measured part of a fresh device: an empty replica syncs everything.
pub(super) fn fresh_sync(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    w: Workload,
    remote: &dyn Remote,
    ws: WorkspaceId,
    snapshots: bool,
    expect_docs: usize,
) -> BenchResult<(Duration, session::SyncReport)> {
    let dir = cfg.tempdir("replica directory")?;
    let replica = Replica::open(dir.path()).map_err(eng(w))?;
    let sync_cfg = SyncConfig {
        snapshot_threshold: 0,
        bootstrap_from_snapshots: snapshots,
        ..SyncConfig::default()
    };
    let t = Instant::now();
    let report = sync_once(rt, w, &replica, remote, &sync_cfg, ws)?;
    let d = t.elapsed();
    check(w, replica.doc_count() == expect_docs, || {
        format!(
            "{} documents after the sync, expected {expect_docs}",
            replica.doc_count()
        )
    })?;
    Ok((d, report))
}

/// The fresh-device measurement with both baselines.
pub(super) fn fresh_measurement(
    rt: &tokio::runtime::Runtime,
    w: Workload,
    gens: &[GenDoc],
    engine: Duration,
    report: &session::SyncReport,
    via: &str,
    snapshots: bool,
) -> BenchResult<Outcome> {
    let docs = gens.len();
    let per = gens.first().map_or(0, |g| g.changes.len());
    // samod 0.16's hub does work proportional to the number of documents on
    // every event, so syncing N documents costs O(N^2): 10,000 documents take
    // minutes. It is measured on the first SAMOD_MAX_DOCS documents; the
    // baseline of the ratio is the raw sync protocol on all of them (what
    // samod runs per document underneath).
    let samod_n = docs.min(SAMOD_MAX_DOCS);
    let samod = samod_baseline::sync_with_samod(rt, &gens[..samod_n])?;
    let raw = samod_baseline::sync_with_protocol(gens)?;
    let mode = if snapshots {
        "bootstrapping from snapshots"
    } else {
        "from changes only"
    };
    Ok(Outcome::Ok(
        Measurement::new(
            w,
            format!("{docs} documents x {per} changes synced to an empty replica through {via}, {mode}"),
            "docs/s",
            Better::Higher,
            rate(docs, engine),
            "automerge sync protocol (generate/receive_sync_message, encoded), per document, two in-memory documents",
            rate(docs, raw),
            None,
        )
        .with_extra("engine_s", engine.as_secs_f64())
        .with_extra("raw_sync_protocol_s", raw.as_secs_f64())
        .with_extra("samod_docs", samod_n as f64)
        .with_extra("samod_s", samod.as_secs_f64())
        .with_extra("samod_docs_per_s", rate(samod_n, samod))
        .with_extra("snapshots_loaded", report.snapshots_loaded as f64)
        .with_extra("changes_pulled", report.pulled as f64),
    ))
}

/// The most documents the samod baseline syncs (see [`fresh_measurement`]).
pub(super) const SAMOD_MAX_DOCS: usize = 1_000;

pub(super) fn fresh_device_localhub(
    rt: &tokio::runtime::Runtime,
    cfg: &BenchConfig,
    snapshots: bool,
) -> BenchResult<Outcome> {
    let w = if snapshots {
        Workload::FreshDeviceLocalhubSnapshots
    } else {
        Workload::FreshDeviceLocalhub
    };
    let ws = data::workspace();
    let hub = hub(w)?;
    let gens = seed_remote(rt, cfg, w, &hub, ws, snapshots)?;
    match cfg.phase {
        Phase::All | Phase::Setup => {}
        // The ratio's baseline (samod is not part of it).
        Phase::Baseline => {
            samod_baseline::sync_with_protocol(&gens)?;
        }
        Phase::Engine => {
            fresh_sync(rt, cfg, w, &hub, ws, snapshots, gens.len())?;
        }
    }
    if cfg.phase != Phase::All {
        return Ok(phase_only(w, cfg.phase));
    }
    let (engine, report) = fresh_sync(rt, cfg, w, &hub, ws, snapshots, gens.len())?;
    fresh_measurement(rt, w, &gens, engine, &report, "a LocalHub", snapshots)
}
