//! `supamerge watch`: keeps a replica synced live and prints each remote
//! change as it lands, until SIGINT or SIGTERM (then it stops the engine,
//! letting a running pass finish, and exits 0).
//!
//! It runs the sync engine with the remote's live updates (Supabase
//! Realtime through a project or the gateway; nudges pull at once) and its
//! interval polls as the fallback. Lines (`--json`: one object per line):
//! `status` when the live connection or a channel changes state,
//! `changed` per document a pull changed (its value, or `deleted`, and the
//! delay since its newest change was made), `conflict`, `sync_failed`, and
//! `stopped` at the end.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::remote::{Opened, RemoteArgs};
use super::sync::runtime;
use super::{CliError, OutputMode};
use crate::id::{DocId, WorkspaceId};
use crate::remote::{ChannelState, ConnectionState};
use crate::replica::{Origin, Replica};
use crate::sync::{LiveStatus, SyncEngine, SyncEvent};

/// Arguments of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Where to sync.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Also sync these workspaces (a fresh replica joining a workspace).
    #[arg(long = "workspace", value_name = "ID")]
    pub workspaces: Vec<WorkspaceId>,
    /// Poll every SECS while live updates do not flow (disconnected, a
    /// channel not joined, or --no-live).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub interval: u64,
    /// Poll every SECS while live updates flow (a fallback for lost nudges).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub live_interval: u64,
    /// Poll only: do not use the remote's live updates.
    #[arg(long)]
    pub no_live: bool,
}

/// Runs until interrupted.
///
/// # Errors
/// Opening the replica or the remote, the runtime, writing the output.
/// Sync failures are printed and retried, never fatal.
pub fn watch(
    data: &std::path::Path,
    args: WatchArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let replica = super::entity::open(data)?;
    let Opened { remote, hub, .. } = args.remote.open()?;
    let rt = runtime()?;
    rt.block_on(async {
        let engine = SyncEngine::builder(replica.clone(), remote)
            .with_workspaces(args.workspaces.clone())
            .with_interval(Some(Duration::from_secs(args.interval.max(1))))
            .with_live_interval(Some(Duration::from_secs(args.live_interval.max(1))))
            .with_live_updates(!args.no_live)
            .with_debounce(Duration::from_millis(20))
            .spawn();
        let mut events = engine.events();
        let mut status = engine.status();
        let mut shown: Option<Option<LiveStatus>> = None;
        let stop = interrupted();
        tokio::pin!(stop);
        let result = loop {
            let line = tokio::select! {
                _ = &mut stop => break Ok(()),
                e = events.recv() => match e {
                    Ok(SyncEvent::DocChanged { id, origin: Origin::Remote }) => {
                        Some(changed(&replica, id, mode))
                    }
                    Ok(SyncEvent::Conflict { id, conflicts }) => Some(match mode {
                        OutputMode::Json => json!({
                            "event": "conflict", "id": id.to_string(), "conflicts": conflicts,
                        })
                        .to_string(),
                        OutputMode::Human => format!(
                            "conflict in {id}: {} field(s) hold concurrent values (`supamerge conflicts {id}`)",
                            conflicts.len()
                        ),
                    }),
                    Ok(SyncEvent::Failed(e)) => Some(match mode {
                        OutputMode::Json => {
                            json!({"event": "sync_failed", "error": e}).to_string()
                        }
                        OutputMode::Human => format!("{e} (retrying)"),
                    }),
                    Ok(_) => None,
                    Err(RecvError::Lagged(n)) => Some(match mode {
                        OutputMode::Json => json!({"event": "lagged", "missed": n}).to_string(),
                        OutputMode::Human => format!("({n} events missed: output too slow)"),
                    }),
                    Err(RecvError::Closed) => break Ok(()),
                },
                r = status.changed() => {
                    if r.is_err() {
                        break Ok(());
                    }
                    let live = status.borrow_and_update().live.clone();
                    if shown.as_ref() == Some(&live) {
                        None
                    } else {
                        shown = Some(live.clone());
                        Some(live_line(live.as_ref(), mode))
                    }
                }
            };
            if let Some(line) = line {
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    break Err(CliError::Output(e));
                }
            }
        };
        engine.shutdown().await;
        result
    })?;
    if let Some(hub) = hub {
        hub.flush().map_err(crate::Error::from)?;
    }
    let last = match mode {
        OutputMode::Json => json!({"event": "stopped"}).to_string(),
        OutputMode::Human => "stopped".to_owned(),
    };
    writeln!(out, "{last}")
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The line for a document a pull changed.
fn changed(replica: &Replica, id: DocId, mode: OutputMode) -> String {
    let info = replica.info(&id).ok();
    let value = replica.get_json(&id).ok();
    // The delay since the newest change of the document was made (its
    // writer's clock against ours).
    let newest = replica
        .history(&id)
        .ok()
        .and_then(|h| h.iter().map(|c| c.timestamp).max());
    let lag_ms = newest.map(|t| (replica.now_ms() - t).max(0));
    let collection = info.as_ref().map(|i| i.collection.to_string());
    let deleted = info.as_ref().is_some_and(|i| i.deleted);
    match mode {
        OutputMode::Json => json!({
            "event": "changed",
            "id": id.to_string(),
            "workspace": info.as_ref().map(|i| i.workspace.to_string()),
            "collection": collection,
            "deleted": deleted,
            "value": value.unwrap_or(Value::Null),
            "lag_ms": lag_ms,
        })
        .to_string(),
        OutputMode::Human => {
            let what = if deleted {
                "deleted".to_owned()
            } else {
                value.map(|v| v.to_string()).unwrap_or_default()
            };
            let lag = lag_ms.map_or(String::new(), |l| format!(" ({l} ms after the edit)"));
            format!(
                "changed {}/{id} {what}{lag}",
                collection.unwrap_or_else(|| "?".into())
            )
        }
    }
}

/// The line for the live updates' state.
fn live_line(live: Option<&LiveStatus>, mode: OutputMode) -> String {
    match mode {
        OutputMode::Json => json!({"event": "status", "live": live}).to_string(),
        OutputMode::Human => match live {
            None => "live updates: none (polling)".to_owned(),
            Some(l) => {
                let conn = match &l.connection {
                    ConnectionState::Idle => "idle".to_owned(),
                    ConnectionState::Connecting { .. } => "connecting".to_owned(),
                    ConnectionState::Connected => "connected".to_owned(),
                    ConnectionState::Disconnected {
                        retry_in_ms,
                        reason,
                        ..
                    } => format!("disconnected ({reason}; retrying in {retry_in_ms} ms)"),
                    ConnectionState::Closed => "closed".to_owned(),
                };
                let joined = l
                    .channels
                    .values()
                    .filter(|c| **c == ChannelState::Joined)
                    .count();
                let mut s = format!(
                    "live updates: {conn}, {joined} of {} channel(s) joined",
                    l.channels.len()
                );
                for (ws, c) in &l.channels {
                    if let ChannelState::Refused { reason } = c {
                        s.push_str(&format!("; {ws} refused: {reason}"));
                    }
                }
                s
            }
        },
    }
}
