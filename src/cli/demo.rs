//! `demo`: the main job — three replicas edit offline and converge through the
//! embedded hub (see [`crate::demo`]).

use std::io::Write;

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
    let report = rt.block_on(demo::run(DemoOptions {
        burst: a.burst,
        ..DemoOptions::default()
    }))?;
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
