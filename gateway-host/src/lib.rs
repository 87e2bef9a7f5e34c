//! The voice gateway host: routes voice-assistant turns by **profile** to a **gateway** and
//! streams the answer back as events (OpenVoiceUI's protocol) fast enough for TTS.
//!
//! ```no_run
//! // A binary with an extra gateway kind: link the kind's crate, then hand over to the host.
//! // use my_gateway as _; // linked for its inventory registration
//! fn main() -> std::process::ExitCode {
//!     gateway_host::run()
//! }
//! ```
//!
//! Embedding the host (tests do this with a mock upstream): [`serve`] runs the router
//! ([`app`]) with the host's connection handling (timeouts, connection cap) until the state's
//! shutdown has drained.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use gateway_host::{serve, AppState, HostConfig};
//! let config = HostConfig::load(None)?;
//! let registry = gateway_core::Registry::from_inventory()?;
//! let state = AppState::load(config, &registry, &gateway_core::Env::from_process());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve(listener, state).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! A request crosses the rooms from top to bottom:
//!
//! - `http/`: the router ([`app`]) with the host's own routes, the session API
//!   (`sessions.rs`), the OpenAI-compatible facade (`openai.rs`; the client's messages in
//!   `openai/messages.rs`, chunks and completions in `openai/answer.rs`), bearer-token
//!   authentication (`auth.rs`), cross-site request rules (`origin.rs`), SSE writing
//!   (`sse.rs`), request reading (`extract.rs`) and the one error type, [`ApiError`], rendered
//!   as the host's JSON error or as OpenAI's (`error.rs`). Below the router, `http/server/`
//!   serves connections ([`serve`]): header-read, body-read and idle timeouts, the connection
//!   cap, JSON answers to malformed requests, and the connection side of the shutdown.
//! - [`turn`]: the pipeline from a request to a well-formed event stream ([`turn::start`]):
//!   failover across a profile's gateways, admission (stream limits, shutdown), upstream
//!   concurrency per instance, sentence events, a profile's voice settings, a session
//!   history made valid for tool calls (`tool_history.rs`) and the tool loop (`tool_loop.rs`:
//!   the rounds of a turn whose profile offers MCP tools).
//! - `tools/`: the MCP tool servers of `[tools]` (stdio started lazily and again after a
//!   crash, or streamable HTTP), the tools a profile offers, running calls, and what `check`
//!   says about them.
//! - `sessions/`: turns of one session one at a time (queue modes, interrupts), the session
//!   stores (in memory or Redis, `store.rs`), per-session stream slots (`slots.rs`) and, with
//!   Redis, the replicas' shared leases and requests (`cluster.rs`).
//! - [`config`]: the settings ([`HostConfig`]), profiles ([`ProfileSet`]), the voice prompt
//!   file (`prompt.rs`) and the gateway instances built from the kind registry ([`Instances`]).
//! - `cli/`: `serve`, `chat`, `check` and `demo`, and the start-up [`Report`].
//! - `console.rs` and `../console/`: the web console served at `/` (public files; the page
//!   sends the user's token on every API call).
//! - `state.rs`: [`AppState`], what every handler shares; `metrics.rs`: the Prometheus
//!   metrics; `shutdown.rs`: the phases of a graceful shutdown.
//!
//! # For operators
//!
//! Configuration precedence (lowest first): built-in defaults < the TOML file < `.env` <
//! `GATEWAY_*` environment variables. Profiles are OpenVoiceUI JSON files in `profiles_dir`;
//! the system prompt is `prompts_dir/voice-system-prompt.md` plus the profile's own. The API is
//! `POST /v1/conversation` (SSE or NDJSON events) and the OpenAI-compatible
//! `POST /v1/chat/completions`. The settings, profile fields, routes and errors are described
//! in `README.md`; operations (Redis, authentication, limits, shutdown) in
//! `docs/operations.md`, gateways and fallbacks in `docs/backends.md`, the OpenAI facade in
//! `docs/openai-api.md`, voice features in `docs/voice.md`, MCP tools in `docs/tools.md`.

mod cli;
pub mod config;
mod console;
mod http;
mod metrics;
mod sessions;
mod shutdown;
mod state;
mod tools;
pub mod turn;

use std::process::ExitCode;

use clap::Parser;

pub use cli::report::{Level, Report};
pub use config::instances::Instances;
pub use config::profile::{is_valid_id, Profile, ProfileSet};
pub use config::{ConfigError, HostConfig};
pub use http::server::serve;
pub use http::{app, ApiError};
pub use sessions::SessionView;
pub use state::{AppState, StartError};
pub use turn::{TurnError, TurnRequest};

/// Log to stderr at the levels of `RUST_LOG` (`target=level` directives, e.g.
/// `info,gateway_host=debug`), else at `default`; an unreadable `RUST_LOG` is reported and
/// `default` used.
fn init_logs(default: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let from_env = std::env::var("RUST_LOG").ok().and_then(|directives| {
        directives
            .parse::<Targets>()
            .map_err(|e| {
                eprintln!(
                    "warning: RUST_LOG: {e} (expected target=level directives); using {default}"
                )
            })
            .ok()
    });
    let filter: Targets = from_env.unwrap_or_else(|| default.parse().unwrap_or_default());
    let filter = quiet_mcp_client(filter);
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(logs)
        .with(filter)
        .init();
}

/// `filter` with the MCP client library's own log lines off, unless a directive names it:
/// they quote tool servers' responses verbatim, which may echo a configured header. The host
/// logs every tool-server failure itself, with the server's secrets masked.
fn quiet_mcp_client(
    filter: tracing_subscriber::filter::Targets,
) -> tracing_subscriber::filter::Targets {
    const MCP_CLIENT: &str = "rmcp";
    if filter
        .iter()
        .any(|(target, _)| target.starts_with(MCP_CLIENT))
    {
        return filter;
    }
    filter.with_target(MCP_CLIENT, tracing::level_filters::LevelFilter::OFF)
}

/// The entry point for `gateway-host` and third-party binaries: loads `.env` (before any
/// thread starts), parses the command line, runs the subcommand.
pub fn run() -> ExitCode {
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("warning: cannot load .env: {e}");
        }
    }
    let cli = cli::Cli::parse();
    init_logs(cli.command.default_log_filter());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
