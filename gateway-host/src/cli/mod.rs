//! The command line: `serve`, `chat`, `check`, `demo`.

pub(crate) mod demo;
pub(crate) mod report;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use gateway_core::{Env, Event, Registry};

use crate::cli::report::{Level, Report};
use crate::config::{HostConfig, MemoryBackend};
use crate::state::AppState;
use crate::turn::{self, TurnRequest};

/// gateway-host: routes voice-assistant turns by profile to LLM gateways, streaming events.
#[derive(Debug, Parser)]
#[command(name = "gateway-host", version, about)]
pub struct Cli {
    /// Config file (default: $GATEWAY_CONFIG, else ./gateway.toml when present).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Listen address, overriding `bind` (use 127.0.0.1:0 for any free port).
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
    },
    /// Run one turn in-process and stream the answer to the terminal.
    Chat {
        /// Profile id (default: `default_profile`).
        #[arg(long)]
        profile: Option<String>,
        /// Session key for memory (default: the profile's sessionKey).
        #[arg(long)]
        session: Option<String>,
        /// The message.
        message: String,
    },
    /// Validate config, gateways, profiles and the prompt file; non-zero exit on problems.
    Check,
    /// A self-contained demo: scripted local upstream, real host, three turns. No key needed.
    Demo,
}

impl Command {
    /// Default log filter when `RUST_LOG` is unset.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve { .. } => "info",
            _ => "warn",
        }
    }
}

async fn load_state(cli_config: Option<&std::path::Path>) -> anyhow::Result<AppState> {
    let config = HostConfig::load(cli_config)?;
    let registry = Registry::from_inventory()?;
    Ok(AppState::connect(config, &registry, &Env::from_process()).await?)
}

/// Run a parsed command inside the tokio runtime.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { bind } => serve(cli.config, bind).await,
        Command::Chat {
            profile,
            session,
            message,
        } => chat(cli.config, profile, session, message).await,
        Command::Check => check(cli.config).await,
        Command::Demo => crate::cli::demo::run().await,
    }
}

async fn serve(config: Option<PathBuf>, bind: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
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

async fn chat(
    config: Option<PathBuf>,
    profile: Option<String>,
    session: Option<String>,
    message: String,
) -> anyhow::Result<ExitCode> {
    let state = load_state(config.as_deref()).await?;
    let request = TurnRequest {
        profile,
        message,
        session_key: session,
        ..TurnRequest::default()
    };
    let mut turn = turn::start(&state, request, Instant::now()).await?;
    let mut stdout = std::io::stdout();
    while let Some(event) = turn.events.next().await {
        match event {
            Event::Delta { text } => {
                print!("{text}");
                stdout.flush()?;
            }
            Event::TextDone { timing, .. } => {
                println!();
                if let Some(t) = timing {
                    match t.ttft_ms {
                        Some(ttft) => {
                            eprintln!("time to first token: {ttft} ms (total {} ms)", t.total_ms)
                        }
                        None => eprintln!("no tokens (total {} ms)", t.total_ms),
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            Event::Error { error } => {
                println!();
                eprintln!("error: {error}");
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
    Ok(ExitCode::FAILURE)
}

async fn check(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match HostConfig::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            println!("config: PROBLEM {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("config (secrets redacted):");
    println!("{}", serde_json::to_string_pretty(&config.redacted())?);
    let registry = Registry::from_inventory()?;
    println!(
        "gateway kinds: {}",
        registry.ids().collect::<Vec<_>>().join(", ")
    );
    let memory = config.memory.clone();
    let state = AppState::load(config, &registry, &Env::from_process());
    let mut report = Report::of(&state);
    crate::tools::check::report(&state, &mut report).await;
    if memory.backend == MemoryBackend::Redis {
        match crate::sessions::store::open(&memory).await {
            Ok(_) => report.push("memory", Level::Ok, "redis", "reachable".into()),
            Err(e) => report.push("memory", Level::Problem, "redis", e.to_string()),
        }
    }
    print!("{}", report.render());
    Ok(if report.has_problems() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
