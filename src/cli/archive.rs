//! `supamerge export WS DIR` and `supamerge import DIR [--workspace WS]`
//! (see [`crate::archive`] for the format and what importing into another
//! workspace means).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{write_json, write_line, CliError, OutputMode};
use crate::archive;
use crate::id::WorkspaceId;

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The workspace to export (every entity this replica holds of it).
    pub workspace: WorkspaceId,
    /// The directory to write (created; must be new or empty).
    pub dir: PathBuf,
}

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A directory written by `export`.
    pub dir: PathBuf,
    /// Import into this workspace instead of the exported one: a copy with
    /// new document ids and whole histories.
    #[arg(long, value_name = "WS")]
    pub workspace: Option<WorkspaceId>,
}

/// Writes a workspace's entities into a directory.
///
/// # Errors
/// [`CliError::Archive`], replica errors.
pub fn export(
    data: &Path,
    a: ExportArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let replica = super::entity::open(data)?;
    let r = archive::export_workspace(&replica, a.workspace, &a.dir)?;
    match mode {
        OutputMode::Json => write_json(out, &r),
        OutputMode::Human => write_line(
            out,
            format!(
                "exported {} entities of workspace {} ({} deleted, {} bytes of history) to {}{}",
                r.entities,
                r.workspace,
                r.deleted,
                r.bytes,
                a.dir.display(),
                if r.incomplete > 0 {
                    format!(
                        "; {} documents left out: only changes still waiting for their dependencies",
                        r.incomplete
                    )
                } else {
                    String::new()
                }
            ),
        ),
    }
}

/// Imports a directory written by `export`.
///
/// # Errors
/// [`CliError::Archive`], replica errors.
pub fn import(
    data: &Path,
    a: ImportArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let replica = super::entity::open(data)?;
    let r = archive::import_dir(&replica, &a.dir, a.workspace)?;
    replica.flush()?;
    match mode {
        OutputMode::Json => write_json(out, &r),
        OutputMode::Human => write_line(
            out,
            format!(
                "imported {} documents into workspace {} ({} new here, {} new changes in the outbox)",
                r.documents, r.workspace, r.created, r.new_changes
            ),
        ),
    }
}
