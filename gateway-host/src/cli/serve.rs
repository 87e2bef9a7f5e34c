//! `gateway-host serve`: the HTTP API until SIGTERM/SIGINT, then a graceful drain.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::report::Report;
use super::state_of;
use crate::config::HostConfig;

/// Serves until a shutdown signal; see [`crate::shutdown`] for the phases and
/// [`crate::http::server`] for the connections.
pub async fn serve(config: Option<PathBuf>, bind: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let mut config = HostConfig::load(config.as_deref())?;
    let addr = bind.unwrap_or(config.bind);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    // From here on `bind` is the address actually bound (port 0 resolved, `--bind` applied),
    // so the report, the warning and the listening line all name it.
    config.bind = listener.local_addr()?;
    let local = config.bind;
    let state = state_of(config).await?;
    Report::of(&state).log();
    if let Some(warning) = crate::http::auth::exposure_warning(local, state.auth()) {
        tracing::warn!("{warning}");
        eprintln!("WARNING: {warning}");
    }
    let signal = shutdown_signal();
    println!("gateway-host listening on http://{local}");
    std::io::stdout().flush()?;
    tracing::info!(%local, profiles = state.profiles().len(), "serving");
    let shutdown = state.shutdown().clone();
    tokio::spawn(async move {
        signal.await;
        shutdown.begin();
    });
    crate::http::server::serve(listener, state).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed now, before the listening line
/// is printed, so a signal sent right after it is never lost to the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}
