//! `supamerge login` and `supamerge logout`: the connection profile (see
//! [`super::profile`]).

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::profile::{self, Profile};
use super::{write_json, write_line, CliError, OutputMode};
use crate::remote::{jwt_claims, AccessTokenProvider, AuthSession, RefreshingToken};

/// Arguments of `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The project URL (`https://PROJECT-REF.supabase.co`) or the local
    /// gateway's (`http://127.0.0.1:54321`).
    #[arg(long, env = "SUPABASE_URL", value_name = "URL")]
    pub supabase_url: String,
    /// The project's anon (publishable) key.
    #[arg(
        long,
        env = "SUPABASE_ANON_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub anon_key: String,
    /// A user's access token (JWT); used until it expires.
    #[arg(long, value_name = "JWT", conflicts_with = "refresh_token")]
    pub access_token: Option<String>,
    /// A Supabase Auth refresh token: the CLI refreshes the access token with
    /// it (and stores each rotated refresh token).
    #[arg(long, value_name = "TOKEN")]
    pub refresh_token: Option<String>,
}

/// Stores the connection (and checks a refresh token by using it).
///
/// # Errors
/// [`CliError::Profile`], [`CliError::Token`] when the refresh token is
/// refused, bad settings.
pub fn login(a: LoginArgs, mode: OutputMode, out: &mut dyn Write) -> Result<(), CliError> {
    // The same checks as every remote command makes.
    crate::remote::SupabaseRemote::builder(a.supabase_url.clone(), a.anon_key.clone()).build()?;
    let mut p = Profile {
        supabase_url: a.supabase_url.clone(),
        anon_key: a.anon_key.clone(),
        access_token: a.access_token.clone(),
        refresh_token: None,
        expires_at: a
            .access_token
            .as_deref()
            .and_then(crate::remote::jwt_expiry),
    };
    if let Some(rt) = &a.refresh_token {
        // Exchange it now: a refresh token that does not work is refused
        // here, not at the first sync. Refresh tokens rotate: keep the new one.
        let provider = RefreshingToken::new(
            &a.supabase_url,
            a.anon_key.clone(),
            AuthSession::from_refresh_token(rt.clone()),
        )
        .map_err(CliError::Token)?;
        let runtime = super::sync::runtime()?;
        let session = runtime.block_on(async {
            provider.access_token().await?;
            Ok::<_, crate::remote::TokenError>(provider.session().await)
        });
        let session = session.map_err(CliError::Token)?;
        p.access_token = session.access_token;
        p.refresh_token = Some(session.refresh_token);
        p.expires_at = session.expires_at;
    }
    let path = profile::save(&p)?;
    let user = p
        .access_token
        .as_deref()
        .and_then(jwt_claims)
        .and_then(|c| c.get("sub").and_then(|s| s.as_str()).map(str::to_owned));
    match mode {
        OutputMode::Json => write_json(
            out,
            &json!({
                "profile": path,
                "supabase_url": p.supabase_url,
                "user": user,
                "expires_at": p.expires_at,
                "refreshes": p.refresh_token.is_some(),
            }),
        ),
        OutputMode::Human => write_line(
            out,
            format!(
                "logged in to {}{}; profile saved to {}{}",
                p.supabase_url,
                user.map(|u| format!(" as user {u}")).unwrap_or_default(),
                path.display(),
                if p.refresh_token.is_some() {
                    " (the access token is refreshed automatically)"
                } else if p.access_token.is_some() {
                    " (run login again when the access token expires)"
                } else {
                    " (no token: requests carry the anon key only)"
                }
            ),
        ),
    }
}

/// Removes the profile.
///
/// # Errors
/// [`CliError::Profile`].
pub fn logout(mode: OutputMode, out: &mut dyn Write) -> Result<(), CliError> {
    let (removed, path) = profile::remove()?;
    match mode {
        OutputMode::Json => write_json(out, &json!({"removed": removed, "profile": path})),
        OutputMode::Human if removed => {
            write_line(out, format!("logged out: removed {}", path.display()))
        }
        OutputMode::Human => write_line(out, format!("not logged in (no {})", path.display())),
    }
}
