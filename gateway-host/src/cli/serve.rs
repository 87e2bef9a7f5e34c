//! `gateway-host serve`: the HTTP API until SIGTERM/SIGINT, then a graceful drain.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;

use super::load_state;
use super::report::Report;
use crate::state::AppState;

/// Serves until a shutdown signal; see [`crate::shutdown`] for the phases.
pub async fn serve(config: Option<PathBuf>, bind: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let state = load_state(config.as_deref()).await?;
    Report::of(&state).log();
    let addr = bind.unwrap_or(state.config().bind);
    if let Some(warning) = crate::http::auth::exposure_warning(addr, state.auth()) {
        tracing::warn!("{warning}");
        eprintln!("WARNING: {warning}");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let signal = shutdown_signal();
    println!("gateway-host listening on http://{local}");
    std::io::stdout().flush()?;
    tracing::info!(%local, profiles = state.profiles().len(), "serving");
    // Each SSE chunk is a small write: without TCP_NODELAY, Nagle's algorithm holds the
    // second one until the client's delayed ACK (~40 ms on Linux), right at the first token.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let shutdown = state.shutdown().clone();
    let grace = Duration::from_secs(state.config().shutdown_grace_secs);
    let server = {
        let shutdown = shutdown.clone();
        // `into_make_service` prepares the router once; serving the `Router` itself would
        // rebuild its route table for every connection.
        let app = crate::http::app(state.clone()).into_make_service();
        axum::serve(listener, app).with_graceful_shutdown(async move {
            signal.await;
            shutdown.begin();
        })
    };
    let deadline = drain(state, grace);
    tokio::select! {
        served = server => served?,
        () = deadline => tracing::warn!("connections still open after the grace period; exiting"),
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// After draining begins: wait up to `grace` for in-flight turns, end the rest with an
/// `error` event, then give the final events a moment to reach the clients. Resolving means
/// the server loop should stop waiting for connections.
async fn drain(state: AppState, grace: Duration) {
    let shutdown = state.shutdown();
    shutdown.draining().await;
    let open = state.limits().open();
    tracing::info!(
        in_flight = open,
        grace_secs = grace.as_secs(),
        "draining: new turns refused"
    );
    let finished = async {
        while state.limits().open() > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    };
    if tokio::time::timeout(grace, finished).await.is_err() {
        tracing::warn!(
            in_flight = state.limits().open(),
            "grace period over: ending the remaining turns"
        );
        shutdown.abort();
    }
    tokio::time::sleep(FLUSH_AFTER_ABORT).await;
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

/// How often the drain checks whether in-flight turns are done.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Time for the last events to be written after the grace period.
const FLUSH_AFTER_ABORT: Duration = Duration::from_secs(2);
