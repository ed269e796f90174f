//! `supamerge prune`: the operator's compaction of a change log — a
//! PostgreSQL database with the supamerge migrations (`supamerge_prune`) or
//! an embedded hub directory ([`crate::LocalHub::prune`]). See
//! docs/operations.md, "Compaction".

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{write_json, write_line, CliError, OutputMode};
use crate::id::WorkspaceId;

/// Arguments of `prune`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["database_url", "hub"])))]
pub struct PruneArgs {
    /// A PostgreSQL URL of the database, as its owner or a role that may
    /// execute `supamerge_prune` (never an API key: this is the database).
    #[arg(long, env = "SUPAMERGE_PRUNE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// An embedded hub directory instead (it keeps no push times: everything
    /// folded into snapshots is pruned, whatever --older-than says).
    #[arg(long, value_name = "DIR", conflicts_with = "older_than")]
    pub hub: Option<PathBuf>,
    /// The retention horizon: prune only changes pushed at least this long
    /// ago (`7d`, `12h`, `30m`, `0`, or a PostgreSQL interval such as
    /// `'2 weeks'`). Devices offline for longer re-bootstrap from snapshots.
    #[arg(long, value_name = "AGE", default_value = "7d")]
    pub older_than: String,
    /// Only this workspace (default: every workspace).
    #[arg(long, value_name = "UUID")]
    pub workspace: Option<WorkspaceId>,
}

/// A horizon as a PostgreSQL interval: `7d` → `7 days`; anything else is
/// passed through (PostgreSQL says what is wrong with it).
fn interval(age: &str) -> String {
    let age = age.trim();
    let unit = match age.chars().last() {
        Some('s') => "seconds",
        Some('m') => "minutes",
        Some('h') => "hours",
        Some('d') => "days",
        Some('w') => "weeks",
        _ => return age.to_owned(),
    };
    let digits = &age[..age.len() - 1];
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        format!("{digits} {unit}")
    } else {
        age.to_owned()
    }
}

/// Runs the compaction and prints what it did.
pub(super) fn run(a: PruneArgs, mode: OutputMode, out: &mut dyn Write) -> Result<(), CliError> {
    let answer: serde_json::Value = if let Some(dir) = &a.hub {
        // Opening creates a hub; pruning a mistyped path must not report
        // "pruned 0" over a fresh empty one. sled writes `conf` first.
        if !dir.join("conf").is_file() {
            return Err(CliError::Prune {
                reason: format!("no hub at {}", dir.display()),
            });
        }
        let hub = crate::LocalHub::open(dir).map_err(crate::Error::Remote)?;
        let r = hub
            .prune(a.workspace.as_ref())
            .map_err(crate::Error::Remote)?;
        let horizons: serde_json::Map<String, serde_json::Value> = r
            .horizons
            .iter()
            .map(|(w, h)| (w.to_string(), (*h).into()))
            .collect();
        serde_json::json!({
            "v": 1,
            "workspaces": r.horizons.len(),
            "pruned": r.pruned,
            "bytes": r.bytes,
            "horizons": horizons,
        })
    } else {
        let url = a.database_url.clone().unwrap_or_default();
        prune_database(&url, &interval(&a.older_than), a.workspace)?
    };
    match mode {
        OutputMode::Json => write_json(out, &answer),
        OutputMode::Human => write_line(
            out,
            format!(
                "pruned {} changes ({} bytes) in {} workspaces",
                answer["pruned"], answer["bytes"], answer["workspaces"]
            ),
        ),
    }
}

#[cfg(feature = "gateway")]
fn prune_database(
    url: &str,
    older_than: &str,
    ws: Option<WorkspaceId>,
) -> Result<serde_json::Value, CliError> {
    let failed = |e: tokio_postgres::Error| CliError::Prune {
        reason: e
            .as_db_error()
            .map(|d| format!("{} ({})", d.message(), d.code().code()))
            .unwrap_or_else(|| e.to_string()),
    };
    let rt = super::sync::runtime()?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(failed)?;
        tokio::spawn(conn);
        let row = client
            .query_one(
                "select public.supamerge_prune($1::text::interval, $2::text::uuid)::text",
                &[&older_than, &ws.map(|w| w.to_string())],
            )
            .await
            .map_err(failed)?;
        let text: String = row.get(0);
        serde_json::from_str(&text).map_err(|e| CliError::Prune {
            reason: format!("supamerge_prune answered something else than JSON: {e}"),
        })
    })
}

#[cfg(not(feature = "gateway"))]
fn prune_database(
    _url: &str,
    _older_than: &str,
    _ws: Option<WorkspaceId>,
) -> Result<serde_json::Value, CliError> {
    Err(CliError::Prune {
        reason: "this build has no PostgreSQL client (feature `gateway`); call \
                 `select public.supamerge_prune('7 days')` with psql instead"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::interval;

    #[test]
    fn horizons() {
        assert_eq!(interval("7d"), "7 days");
        assert_eq!(interval("12h"), "12 hours");
        assert_eq!(interval("0"), "0");
        assert_eq!(interval("2 weeks"), "2 weeks");
        assert_eq!(interval("d"), "d");
    }
}
