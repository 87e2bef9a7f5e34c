//! The command line: `serve`, `chat`, `check`, `demo`, one file each, and the start-up
//! [`report`] that `check` prints and `serve` logs.

mod chat;
mod check;
pub(crate) mod demo;
pub(crate) mod report;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway_core::{Env, Registry};

use crate::config::HostConfig;
use crate::state::AppState;

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
    state_of(HostConfig::load(cli_config)?).await
}

/// The host's state for `config`, with every linked gateway kind and the process environment.
async fn state_of(config: HostConfig) -> anyhow::Result<AppState> {
    let registry = Registry::from_inventory()?;
    Ok(AppState::connect(config, &registry, &Env::from_process()).await?)
}

/// Run a parsed command inside the tokio runtime.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { bind } => serve::serve(cli.config, bind).await,
        Command::Chat {
            profile,
            session,
            message,
        } => chat::chat(cli.config, profile, session, message).await,
        Command::Check => check::check(cli.config).await,
        Command::Demo => crate::cli::demo::run().await,
    }
}
