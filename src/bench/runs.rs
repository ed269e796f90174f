//! Figures that hold still: several runs of a workload folded into one row
//! (the median run, with the min–max of every figure), the machine's load
//! average next to each figure, and instruction counts
//! (`valgrind --tool=callgrind`) that do not depend on what else the
//! machine is doing.
//!
//! On a shared machine one run of a workload says little: the same ratio
//! moved between 0.63 and 0.87 within half an hour. `supamerge bench --runs N`
//! runs every selected workload N times (round robin, each run in a fresh
//! child process) and reports the **median run** — the run whose ratio is the
//! median (the lower middle one for an even N), so `ratio == engine /
//! baseline` still holds for the row — with a [`Spread`]: the min, median and
//! max of the engine figure, the baseline figure, the ratio, the peak RSS and
//! the load average over the runs. Targets are judged on the median run.

use serde::{Deserialize, Serialize};

use super::{Measurement, Outcome};

/// The least, median and largest value of one figure over the runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MinMax {
    /// The smallest value.
    pub min: f64,
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The largest value.
    pub max: f64,
}

impl MinMax {
    /// The min, median and max of `values` (`None` when empty).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<MinMax> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(MinMax {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// The 1-minute load average of the machine (`/proc/loadavg`) when a run
/// started and when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadAvg {
    /// When the workload started.
    pub start: f64,
    /// When it ended.
    pub end: f64,
}

/// The 1-minute load average now (`None` where `/proc/loadavg` does not exist).
pub fn load_avg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What several runs of one workload measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Runs that measured something.
    pub runs: usize,
    /// Runs that failed or were skipped (not in the figures).
    pub failed: usize,
    /// The engine figure over the runs.
    pub engine: MinMax,
    /// The baseline figure over the runs.
    pub baseline: MinMax,
    /// `engine / baseline` over the runs (each run's own ratio).
    pub ratio: MinMax,
    /// Peak RSS in MB over the runs, where measured.
    pub peak_rss_mb: Option<MinMax>,
    /// The 1-minute load average at the start of each run, where known.
    pub load_avg: Option<MinMax>,
}

/// Folds the outcomes of several runs of one workload into one: the median
/// run (by ratio) with the [`Spread`] of all of them. When no run measured
/// anything, the first outcome is returned as it is (a skip or a failure
/// says why).
pub fn fold(mut outcomes: Vec<Outcome>) -> Option<Outcome> {
    let all = outcomes.len();
    let mut ok: Vec<Measurement> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Ok(m) => Some(m.clone()),
            Outcome::Skipped { .. } => None,
        })
        .collect();
    if ok.is_empty() {
        return if outcomes.is_empty() {
            None
        } else {
            Some(outcomes.swap_remove(0))
        };
    }
    let spread = Spread {
        runs: ok.len(),
        failed: all - ok.len(),
        engine: MinMax::of(ok.iter().map(|m| m.engine))?,
        baseline: MinMax::of(ok.iter().map(|m| m.baseline))?,
        ratio: MinMax::of(ok.iter().map(|m| m.ratio))?,
        peak_rss_mb: MinMax::of(ok.iter().filter_map(|m| m.peak_rss_mb)),
        load_avg: MinMax::of(
            ok.iter()
                .filter_map(|m| m.load_avg.as_ref().map(|l| l.start)),
        ),
    };
    ok.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    let mut median = ok.swap_remove((ok.len() - 1) / 2);
    median.runs = Some(Box::new(spread));
    median.check_target();
    Some(Outcome::Ok(median))
}

/// Instruction counts of one workload (`valgrind --tool=callgrind`, the
/// whole process, every thread): three processes run the same setup, then
/// nothing, the baseline only, or the engine only; the setup's count is
/// subtracted from the other two.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Instructions {
    /// The process that only set the workload up.
    pub setup: u64,
    /// The engine's instructions (its process minus `setup`).
    pub engine: u64,
    /// The baseline's instructions (its process minus `setup`).
    pub baseline: u64,
    /// `baseline / engine`: comparable with a throughput ratio (1.0: the
    /// engine does as little work as the baseline; 0.5: twice as much).
    pub throughput_equivalent: f64,
}

impl Instructions {
    /// From the three processes' totals.
    pub fn from_totals(setup: u64, with_baseline: u64, with_engine: u64) -> Self {
        let engine = with_engine.saturating_sub(setup);
        let baseline = with_baseline.saturating_sub(setup);
        Self {
            setup,
            engine,
            baseline,
            throughput_equivalent: if engine > 0 {
                baseline as f64 / engine as f64
            } else {
                0.0
            },
        }
    }
}

/// Which part of a workload a process runs (`--phase`, for instruction
/// counts; only workloads with [`Workload::has_phases`](super::Workload::has_phases)
/// honour it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Setup, baseline and engine: a normal run.
    #[default]
    All,
    /// The setup only.
    Setup,
    /// The setup and the baseline.
    Baseline,
    /// The setup and the engine.
    Engine,
}

impl Phase {
    /// Whether the baseline runs.
    pub fn baseline(self) -> bool {
        matches!(self, Phase::All | Phase::Baseline)
    }

    /// Whether the engine runs.
    pub fn engine(self) -> bool {
        matches!(self, Phase::All | Phase::Engine)
    }

    /// Parses `setup`, `baseline`, `engine` or `all`.
    pub fn from_name(s: &str) -> Option<Phase> {
        match s {
            "all" => Some(Phase::All),
            "setup" => Some(Phase::Setup),
            "baseline" => Some(Phase::Baseline),
            "engine" => Some(Phase::Engine),
            _ => None,
        }
    }

    /// The name [`Phase::from_name`] parses.
    pub fn name(self) -> &'static str {
        match self {
            Phase::All => "all",
            Phase::Setup => "setup",
            Phase::Baseline => "baseline",
            Phase::Engine => "engine",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Better, Target, Workload};

    fn run(ratio: f64, load: f64) -> Outcome {
        let mut m = Measurement::new(
            Workload::MergeOneDoc,
            String::new(),
            "changes/s",
            Better::Higher,
            ratio * 100.0,
            "raw",
            100.0,
            Some(Target::RatioAtLeast(0.8)),
        );
        m.load_avg = Some(Box::new(LoadAvg {
            start: load,
            end: load,
        }));
        Outcome::Ok(m)
    }

    #[test]
    fn the_median_run_is_reported_with_the_spread() {
        let folded = fold(vec![
            run(0.9, 1.0),
            run(0.7, 3.0),
            Outcome::Skipped {
                name: "merge_one_doc".into(),
                reason: "FAILED".into(),
            },
            run(0.85, 2.0),
        ]);
        let Some(Outcome::Ok(m)) = folded else {
            panic!("expected a measurement, got {folded:?}");
        };
        assert!((m.ratio - 0.85).abs() < 1e-12);
        assert!((m.ratio - m.engine / m.baseline).abs() < 1e-12);
        assert_eq!(m.target_met, Some(true));
        let s = m.runs.expect("spread");
        assert_eq!((s.runs, s.failed), (3, 1));
        assert!((s.ratio.min - 0.7).abs() < 1e-12 && (s.ratio.max - 0.9).abs() < 1e-12);
        let load = s.load_avg.expect("load");
        assert_eq!((load.min, load.median, load.max), (1.0, 2.0, 3.0));
    }

    #[test]
    fn an_even_count_reports_the_lower_middle_run() {
        let Some(Outcome::Ok(m)) = fold(vec![run(0.6, 1.0), run(0.9, 1.0)]) else {
            panic!("expected a measurement");
        };
        assert!((m.ratio - 0.6).abs() < 1e-12);
        assert_eq!(m.target_met, Some(false));
        let s = m.runs.expect("spread");
        assert!((s.ratio.median - 0.75).abs() < 1e-12);
    }

    #[test]
    fn only_failures_fold_to_the_first() {
        let skipped = Outcome::Skipped {
            name: "merge_one_doc".into(),
            reason: "no trace".into(),
        };
        assert_eq!(fold(vec![skipped.clone()]), Some(skipped));
        assert_eq!(fold(Vec::new()), None);
    }

    #[test]
    fn instruction_counts_subtract_the_setup() {
        let i = Instructions::from_totals(100, 300, 500);
        assert_eq!((i.engine, i.baseline), (400, 200));
        assert!((i.throughput_equivalent - 0.5).abs() < 1e-12);
    }
}
