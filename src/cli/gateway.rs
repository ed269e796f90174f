//! `supamerge gateway`: the local PostgREST-compatible RPC gateway, a
//! development stand-in for Supabase's API (see [`crate::gateway`]).

use super::CliError;
use crate::gateway::{self, GatewayArgs};

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
