//! The command line: `serve`, `chat`, `check`, `demo`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use gateway_core::{Env, Event, Registry};

use crate::config::HostConfig;
use crate::report::Report;
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

fn load_state(cli_config: Option<&std::path::Path>) -> anyhow::Result<AppState> {
    let config = HostConfig::load(cli_config)?;
    let registry = Registry::from_inventory()?;
    Ok(AppState::load(config, &registry, &Env::from_process()))
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
        Command::Demo => crate::demo::run().await,
    }
}

async fn serve(config: Option<PathBuf>, bind: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let state = load_state(config.as_deref())?;
    Report::of(&state).log();
    let addr = bind.unwrap_or(state.config().bind);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
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
    axum::serve(listener, crate::api::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

async fn chat(
    config: Option<PathBuf>,
    profile: Option<String>,
    session: Option<String>,
    message: String,
) -> anyhow::Result<ExitCode> {
    let state = load_state(config.as_deref())?;
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
    let state = AppState::load(config, &registry, &Env::from_process());
    let report = Report::of(&state);
    print!("{}", report.render());
    Ok(if report.has_problems() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
