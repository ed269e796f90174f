//! `supamerge sync` and `supamerge status`: a replica directory against a hub
//! or Supabase.

use clap::Args;
use serde_json::json;
use std::io::Write;

use super::remote::{Opened, RemoteArgs};
use super::{CliError, OutputMode};
use crate::id::WorkspaceId;
use crate::replica::SyncPort;
use crate::sync::session::{self, SyncConfig};

/// Arguments of `sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Where to sync.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Also pull these workspaces (a fresh replica joining a workspace).
    #[arg(long = "workspace", value_name = "ID")]
    pub workspaces: Vec<WorkspaceId>,
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Pushes the outbox and pulls every workspace once.
///
/// # Errors
/// Replica, hub or sync errors; [`CliError::NotAMember`] (after printing
/// the report) when the server refused workspaces the user was removed from.
pub fn sync(
    data: &std::path::Path,
    args: SyncArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let replica = &super::entity::open(data)?;
    let Opened { remote, hub, .. } = args.remote.open()?;
    let rt = runtime()?;
    let report = rt.block_on(async {
        session::sync_once(
            replica,
            remote.as_ref(),
            &SyncConfig::default(),
            &args.workspaces,
            &|_| {},
        )
        .await
    })?;
    if let Some(hub) = hub {
        hub.flush().map_err(crate::Error::from)?;
    }
    match mode {
        OutputMode::Json => writeln!(out, "{}", json!(report)),
        OutputMode::Human => writeln!(
            out,
            "pushed {} (already there {}, rejected {}), pulled {} in {} pages, applied {}, waiting {}, {} ms",
            report.pushed,
            report.already_present,
            report.dead_lettered,
            report.pulled,
            report.pages,
            report.applied,
            report.waiting,
            report.elapsed_ms
        ),
    }
    .map_err(CliError::Output)?;
    // The report is printed (the other workspaces synced); the refused ones
    // make the command fail with a clear, typed error.
    if report.not_a_member.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotAMember {
            workspaces: report.not_a_member,
        })
    }
}

/// Prints the outbox, cursors, dead letters and last sync of a replica.
///
/// # Errors
/// Storage errors.
pub fn status(
    data: &std::path::Path,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let replica = &super::entity::open(data)?;
    let cursors = replica.cursors()?;
    let dead = replica.dead_letters()?;
    let pending = replica.pending();
    let waiting = replica.pending_remote();
    match mode {
        OutputMode::Json => {
            let v = json!({
                "pending": pending,
                "waiting_for_dependencies": waiting,
                "documents": replica.doc_count(),
                "cursors": cursors.iter().map(|(ws, c)| json!({
                    "workspace": ws.to_string(), "cursor": c.cursor,
                    "last_sync_ms": c.last_sync_ms, "bootstrapped": c.bootstrapped,
                })).collect::<Vec<_>>(),
                "dead_letters": dead.iter().map(|d| json!({
                    "doc_id": d.entry.doc_id.to_string(),
                    "hash": d.entry.hash.to_string(),
                    "reason": d.reason, "at_ms": d.at_ms,
                })).collect::<Vec<_>>(),
            });
            writeln!(out, "{v}").map_err(CliError::Output)
        }
        OutputMode::Human => {
            let mut s = format!(
                "documents: {}\npending outbox: {pending}\nremote changes waiting for dependencies: {waiting}\n",
                replica.doc_count()
            );
            if cursors.is_empty() {
                s.push_str("never synced\n");
            }
            for (ws, c) in &cursors {
                s.push_str(&format!(
                    "workspace {ws}: cursor {:?}, last sync {}\n",
                    c.cursor,
                    if c.last_sync_ms > 0 {
                        format!("at {} ms since epoch", c.last_sync_ms)
                    } else {
                        "never".into()
                    }
                ));
            }
            s.push_str(&format!("dead letters: {}\n", dead.len()));
            for d in &dead {
                s.push_str(&format!(
                    "  {} {}: {}\n",
                    d.entry.doc_id, d.entry.hash, d.reason
                ));
            }
            out.write_all(s.as_bytes()).map_err(CliError::Output)
        }
    }
}
