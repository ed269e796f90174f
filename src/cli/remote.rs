//! The remote a command syncs with: an embedded hub directory or a Supabase
//! project (or the local gateway standing in for one), from flags,
//! environment variables or the profile `supamerge login` stored (in that
//! order; see [`super::profile`]).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::profile;
use super::CliError;
use crate::remote::{LocalHub, RefreshingToken, Remote, SupabaseRemote, WorkspaceAdmin};

/// Supabase connection settings (`--supabase-url`, `--anon-key`,
/// `--access-token`); what is not given comes from the profile.
#[derive(Debug, Clone, Args)]
pub struct SupabaseArgs {
    /// A Supabase project URL (`https://PROJECT-REF.supabase.co`) or the local
    /// gateway's (`http://127.0.0.1:54321`) with the supamerge migration.
    #[arg(long, env = "SUPABASE_URL", value_name = "URL")]
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

/// A Supabase remote and the URL it talks to.
pub struct Resolved {
    /// The client.
    pub remote: SupabaseRemote,
    /// The project URL.
    pub url: String,
}

/// Two spellings of one base URL (`/` and `/rest/v1` suffixes aside).
fn same_url(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        let t = u.trim().trim_end_matches('/');
        t.strip_suffix("/rest/v1").unwrap_or(t).to_owned()
    };
    norm(a) == norm(b)
}

impl SupabaseArgs {
    /// The remote these settings describe (flags, then environment, then the
    /// profile), or `None` when no URL is known. The profile's anon key and
    /// tokens are used only for the profile's own URL.
    ///
    /// # Errors
    /// [`CliError::Supabase`] for a bad URL or key, [`CliError::Profile`]
    /// for an unreadable profile, [`CliError::Token`].
    pub fn remote(&self) -> Result<Option<Resolved>, CliError> {
        let saved = profile::load()?;
        let url = match (&self.supabase_url, &saved) {
            (Some(u), _) => u.clone(),
            (None, Some(p)) => p.supabase_url.clone(),
            (None, None) => return Ok(None),
        };
        let own = saved.filter(|p| same_url(&p.supabase_url, &url));
        let anon = self
            .anon_key
            .clone()
            .or_else(|| own.as_ref().map(|p| p.anon_key.clone()))
            .unwrap_or_default();
        let mut b = SupabaseRemote::builder(url.clone(), anon.clone());
        if let Some(t) = &self.access_token {
            b = b.with_access_token(t.clone());
        } else if let Some(p) = &own {
            if let Some(session) = p.session() {
                let tokens = RefreshingToken::new(&url, anon, session)
                    .map_err(CliError::Token)?
                    .with_sink(profile::ProfileSink::new()?);
                b = b.with_token_provider(Arc::new(tokens));
            } else if let Some(t) = &p.access_token {
                b = b.with_access_token(t.clone());
            }
        }
        Ok(Some(Resolved {
            remote: b.build()?,
            url,
        }))
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
        conflicts_with = "supabase_url"
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
    /// The same backend's workspace management.
    pub admin: Arc<dyn WorkspaceAdmin>,
    /// The embedded hub, when the remote is one.
    pub hub: Option<LocalHub>,
}

impl RemoteArgs {
    /// Opens the hub or builds the Supabase client (flags, environment, then
    /// the profile).
    ///
    /// # Errors
    /// [`CliError::MissingRemote`] when neither is known; hub storage
    /// errors; bad Supabase settings.
    pub fn open(&self) -> Result<Opened, CliError> {
        if let Some(dir) = &self.hub {
            let hub = LocalHub::open(dir).map_err(crate::Error::from)?;
            return Ok(Opened {
                remote: Arc::new(hub.clone()),
                admin: Arc::new(hub.clone()),
                hub: Some(hub),
            });
        }
        match self.supabase.remote()? {
            Some(r) => {
                let remote = Arc::new(r.remote);
                Ok(Opened {
                    remote: remote.clone(),
                    admin: remote,
                    hub: None,
                })
            }
            None => Err(CliError::MissingRemote),
        }
    }
}
