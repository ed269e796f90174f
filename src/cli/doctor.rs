//! `doctor [DIR] [--repair]`: check a replica directory, optionally
//! quarantine what is damaged (see [`crate::doctor`]).

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{write_json, write_line, CliError, OutputMode};
use crate::doctor::{self, DoctorMode};
use crate::replica::Replica;

/// Arguments of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The replica directory (default: `--data`).
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Move damaged values to quarantine and re-attach orphaned outbox
    /// entries (never deletes anything; the outbox is never dropped).
    #[arg(long)]
    pub repair: bool,
}

/// Runs `doctor`. Exit code 0 when the directory is (now) healthy, 1 when
/// problems remain.
pub(super) fn run(
    data: &Path,
    a: DoctorArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let dir = a.dir.as_deref().unwrap_or(data);
    if !dir.join("db").exists() {
        return Err(CliError::NotAReplica {
            path: dir.to_path_buf(),
        });
    }
    // Documents are loaded one by one to check them; a small cache keeps
    // the memory bounded on large replicas.
    let replica = Replica::builder(dir)
        .with_cache_capacity(NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN))
        .open()?;
    let report = doctor::run(
        &replica,
        if a.repair {
            DoctorMode::Repair
        } else {
            DoctorMode::Check
        },
    )?;
    match mode {
        OutputMode::Json => write_json(out, &report)?,
        OutputMode::Human => {
            let c = &report.counts;
            write_line(
                out,
                format_args!(
                    "replica {}: {} documents, {} chunks, {} outbox entries, {} early arrivals, {} cursors, {} dead letters",
                    report.path.display(),
                    c.documents,
                    c.chunks,
                    c.outbox,
                    c.pending_remote,
                    c.cursors,
                    c.dead_letters
                ),
            )?;
            for r in &report.repaired_at_open {
                write_line(out, format_args!("repaired while opening: {r}"))?;
            }
            if report.problems.is_empty() {
                write_line(out, "no problems found")?;
            } else {
                write_line(out, format_args!("{} problems:", report.problems.len()))?;
                for p in &report.problems {
                    write_line(out, format_args!("  {p}"))?;
                }
            }
            for n in &report.notes {
                write_line(out, format_args!("note: {n}"))?;
            }
            if report.quarantined > 0 {
                write_line(
                    out,
                    format_args!("{} values are kept in quarantine", report.quarantined),
                )?;
            }
            if report.repaired {
                if report.healthy() {
                    write_line(out, "repaired: no problems remain")?;
                } else {
                    write_line(
                        out,
                        format_args!("{} problems remain:", report.remaining.len()),
                    )?;
                    for p in &report.remaining {
                        write_line(out, format_args!("  {p}"))?;
                    }
                }
            } else if !report.healthy() {
                write_line(out, "run `supamerge doctor --repair` to fix them")?;
            }
        }
    }
    if report.healthy() {
        Ok(())
    } else {
        Err(CliError::Unhealthy {
            count: report.remaining.len(),
        })
    }
}
