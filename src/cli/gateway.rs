//! `supamerge gateway`: the local PostgREST-compatible RPC gateway, a
//! development stand-in for Supabase's API (see [`crate::gateway`]).

use std::io::Write;

use clap::Args;

use super::{write_json, write_line, CliError, OutputMode};
use crate::gateway::{self, GatewayArgs};

/// Arguments of `dev-token`.
#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// The gateway's HS256 secret (`gateway --jwt-secret`).
    #[arg(long, env = "SUPAMERGE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// The user id (`sub`); a new random one when absent.
    #[arg(long, value_name = "UUID")]
    pub user: Option<uuid::Uuid>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub expires_in: u64,
    /// Also issue a refresh token for the gateway's stand-in of Supabase
    /// Auth's token endpoint (single use, rotated on every refresh); the
    /// human output is then the refresh token alone, for `supamerge login
    /// --refresh-token`.
    #[arg(long)]
    pub refresh: bool,
}

/// Prints a development access token for the local gateway.
pub(super) fn dev_token(
    a: DevTokenArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if a.jwt_secret.len() < 32 {
        return Err(CliError::Gateway(gateway::GatewayError::Config {
            setting: "jwt_secret",
            reason: "must be at least 32 characters".into(),
        }));
    }
    let user = a.user.unwrap_or_else(uuid::Uuid::new_v4);
    let now = gateway::auth::now_unix();
    let token =
        gateway::auth::dev_access_token(&a.jwt_secret, user, a.expires_in, now).map_err(|e| {
            CliError::Gateway(gateway::GatewayError::Config {
                setting: "jwt_secret",
                reason: e.to_string(),
            })
        })?;
    let refresh = if a.refresh {
        Some(
            gateway::token_endpoint::dev_refresh_token(&a.jwt_secret, user, now).map_err(|e| {
                CliError::Gateway(gateway::GatewayError::Config {
                    setting: "jwt_secret",
                    reason: e.to_string(),
                })
            })?,
        )
    } else {
        None
    };
    match mode {
        OutputMode::Json => {
            let mut v = serde_json::json!({
                "access_token": token,
                "user": user,
                "expires_at": now.saturating_add(a.expires_in),
            });
            if let Some(r) = &refresh {
                v["refresh_token"] = serde_json::json!(r);
            }
            write_json(out, &v)
        }
        OutputMode::Human => write_line(out, refresh.unwrap_or(token)),
    }
}

/// Serves until Ctrl-C (or SIGTERM), then finishes the requests in flight.
pub(super) fn run(args: GatewayArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    rt.block_on(async {
        let g = gateway::Gateway::bind(args.into_config()).await?;
        // Scripts wait for this line (the port may have been 0).
        eprintln!(
            "supamerge gateway (development stand-in for Supabase) listening on {}",
            g.url()
        );
        g.serve(shutdown_signal()).await
    })?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        // Without a signal handler the gateway runs until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("gateway shutting down");
}
