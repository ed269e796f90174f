//! The remote a command syncs with: an embedded hub directory or a Supabase
//! project (or the local gateway standing in for one).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::CliError;
use crate::remote::{LocalHub, Remote, SupabaseRemote};

/// Supabase connection settings (`--supabase-url`, `--anon-key`,
/// `--access-token`).
#[derive(Debug, Clone, Args)]
pub struct SupabaseArgs {
    /// A Supabase project URL (`https://PROJECT-REF.supabase.co`) or the local
    /// gateway's (`http://127.0.0.1:54321`) with the supamerge migration.
    #[arg(long, env = "SUPABASE_URL", value_name = "URL", requires = "anon_key")]
    pub supabase_url: Option<String>,
    /// The project's anon (publishable) key, sent as `apikey`.
    #[arg(
        long,
        env = "SUPABASE_ANON_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub anon_key: Option<String>,
    /// A user's access token (JWT from Supabase Auth), or a service-role key.
    #[arg(
        long,
        env = "SUPABASE_ACCESS_TOKEN",
        hide_env_values = true,
        value_name = "JWT"
    )]
    pub access_token: Option<String>,
}

impl SupabaseArgs {
    /// The remote these settings describe, or `None` without `--supabase-url`.
    ///
    /// # Errors
    /// [`CliError::Supabase`] for a bad URL or key.
    pub fn remote(&self) -> Result<Option<SupabaseRemote>, CliError> {
        let Some(url) = &self.supabase_url else {
            return Ok(None);
        };
        let mut b = SupabaseRemote::builder(url.clone(), self.anon_key.clone().unwrap_or_default());
        if let Some(t) = &self.access_token {
            b = b.with_access_token(t.clone());
        }
        Ok(Some(b.build()?))
    }
}

/// Where `sync` goes: `--hub DIR` or the Supabase settings.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// The embedded hub directory to sync with (created when missing).
    #[arg(
        long,
        value_name = "DIR",
        env = "SUPAMERGE_HUB",
        conflicts_with = "supabase_url",
        required_unless_present = "supabase_url"
    )]
    pub hub: Option<PathBuf>,
    /// Supabase instead of a hub.
    #[command(flatten)]
    pub supabase: SupabaseArgs,
}

/// An opened remote, and the hub behind it when it is one (to flush it).
pub struct Opened {
    /// The remote.
    pub remote: Arc<dyn Remote>,
    /// The embedded hub, when the remote is one.
    pub hub: Option<LocalHub>,
}

impl RemoteArgs {
    /// Opens the hub or builds the Supabase client.
    ///
    /// # Errors
    /// Hub storage errors; bad Supabase settings.
    pub fn open(&self) -> Result<Opened, CliError> {
        if let Some(remote) = self.supabase.remote()? {
            return Ok(Opened {
                remote: Arc::new(remote),
                hub: None,
            });
        }
        let Some(dir) = &self.hub else {
            return Err(CliError::MissingRemote);
        };
        let hub = LocalHub::open(dir).map_err(crate::Error::from)?;
        Ok(Opened {
            remote: Arc::new(hub.clone()),
            hub: Some(hub),
        })
    }
}
