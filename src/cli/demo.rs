//! `demo`: the main job — three replicas edit offline and converge through the
//! embedded hub (see [`crate::demo`]).

use std::io::{IsTerminal, Write};

use clap::Args;

use super::remote::SupabaseArgs;
use super::{write_json, write_line, CliError, OutputMode};
use crate::demo::{self, DemoBackend, DemoOptions};

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Extra small offline edits for the throughput part.
    #[arg(long, default_value_t = DemoOptions::default().burst)]
    pub burst: usize,
    /// Run against Supabase instead of the embedded hub: the three replicas
    /// are devices of the token's user, in a new workspace.
    #[command(flatten)]
    pub supabase: SupabaseArgs,
    /// Use the embedded hub even when `supamerge login` stored a connection.
    #[arg(long, conflicts_with = "supabase_url")]
    pub local: bool,
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
    let resolved = if a.local { None } else { a.supabase.remote()? };
    let backend = match resolved {
        Some(super::remote::Resolved { remote, url }) => {
            let workspace = rt
                .block_on(remote.create_workspace("supamerge demo"))
                .map_err(crate::Error::from)?;
            Some(DemoBackend {
                remote: std::sync::Arc::new(remote),
                workspace,
                name: format!("Supabase at {url} (workspace {workspace})"),
            })
        }
        None => None,
    };
    let report = rt.block_on(demo::run(DemoOptions {
        burst: a.burst,
        progress,
        backend,
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
