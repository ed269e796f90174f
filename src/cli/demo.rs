//! `demo`: the main job — three replicas edit offline and converge through the
//! embedded hub (see [`crate::demo`]).

use std::io::{IsTerminal, Write};

use clap::Args;

use super::{write_json, write_line, CliError, OutputMode};
use crate::demo::{self, DemoOptions};

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Extra small offline edits for the throughput part.
    #[arg(long, default_value_t = DemoOptions::default().burst)]
    pub burst: usize,
}

/// Runs the demo on a fresh tokio runtime.
pub(super) fn run(a: DemoArgs, mode: OutputMode, out: &mut dyn Write) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let bar = (mode == OutputMode::Human && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "syncing {bar:40} {pos}/{len} changes {per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let progress = bar.clone().map(|b| {
        std::sync::Arc::new(move |p: demo::DemoProgress| {
            b.set_length(p.total.max(p.done));
            b.set_position(p.done);
        }) as std::sync::Arc<dyn Fn(demo::DemoProgress) + Send + Sync>
    });
    let report = rt.block_on(demo::run(DemoOptions {
        burst: a.burst,
        progress,
    }))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match mode {
        OutputMode::Json => write_json(out, &report)?,
        OutputMode::Human => write!(out, "{}", demo::render(&report)).map_err(CliError::Output)?,
    }
    if report.converged {
        Ok(())
    } else {
        if mode == OutputMode::Human {
            write_line(out, "the replicas did NOT converge")?;
        }
        Err(CliError::DemoDiverged)
    }
}
