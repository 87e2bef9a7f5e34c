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
//! Embedding the router (tests do this with a mock upstream):
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use gateway_host::{app, AppState, HostConfig};
//! let config = HostConfig::load(None)?;
//! let registry = gateway_core::Registry::from_inventory()?;
//! let state = AppState::load(config, &registry, &gateway_core::Env::from_process());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, app(state)).await?;
//! # Ok(()) }
//! ```
//!
//! # For operators
//!
//! **Configuration precedence** (lowest first): built-in defaults < the TOML file
//! (`--config PATH`, else `$GATEWAY_CONFIG`, else `./gateway.toml` if present; a file named
//! explicitly must exist) < `.env` (loaded at start-up; it never overrides variables already set)
//! < environment variables `GATEWAY_<KEY>`, nested with `__`
//! (`GATEWAY_MEMORY__MAX_MESSAGES=8`). Keys: `bind` (127.0.0.1:8787), `profiles_dir`
//! (`profiles`), `prompts_dir` (`prompts`), `default_profile` (`default`),
//! `memory.{backend = "memory", max_messages = 20, max_sessions = 100000, idle_ttl_secs = 86400}`,
//! `timeouts.{connect_ms = 5000, first_token_ms = 30000, idle_ms = 30000}` (passed to every
//! gateway instance as `connect_timeout_ms`, `first_token_timeout_ms`, `idle_timeout_ms` unless
//! it sets its own; gateway kinds should accept these three keys), `keepalive_secs = 15`,
//! `limits.{max_body_bytes = 65536, max_message_chars = 16000}`,
//! `retry.{max_attempts = 2, max_retry_after_ms = 5000}` (per instance: `[gateways.<id>]
//! retry = {...}`). Operations (`docs/operations.md`): `memory.{backend = "redis", redis_url,
//! redis_key_prefix}` for replicas sharing memory, `auth.{tokens, tokens_file,
//! public_metrics}`, `limits.{max_streams = 2048, max_streams_per_session = 4,
//! max_upstream_concurrency = 0}` (per instance: `max_concurrency`), `shutdown_grace_secs = 10`.
//!
//! **Gateways.** Every linked kind has a built-in instance named after it, configured from
//! `<KIND>_*` variables (`OPENAI_COMPAT_API_KEY`, `OPENAI_COMPAT_BASE_URL`, `OPENAI_COMPAT_MODEL`,
//! ...) and optionally a `[gateways.<kind>]` table. More instances are declared as
//! `[gateways.groq] kind = "openai-compat"` plus the kind's settings (`base_url`, `api_key_env`,
//! `model`, `auth = "none"` for keyless local servers, ...). An instance with an unknown kind
//! or bad settings is reported and skipped; one without its key is listed as not configured and
//! answers 503.
//!
//! **Fallbacks.** A profile's `adapter_config.fallback_gateway_ids` are tried in order when its
//! gateway fails before the first token (connection error, timeout, 429, 5xx); a 429/503 with
//! a short enough `Retry-After` is first retried on the same instance. After the first token
//! there is no switch. The `handshake` event names the instance that answered. See
//! `turn/failover.rs` for the policy.
//!
//! **Profiles** are OpenVoiceUI JSON files in `profiles_dir` (every `*.json`, unknown fields
//! kept). Used: `id` (`^[a-z0-9-]+$`), `name`, `adapter`, `adapter_config.gateway_id` (default
//! `openai-compat`), `adapter_config.sessionKey`, `llm.model`, `llm.parameters.max_tokens`,
//! `llm.parameters.temperature`, `system_prompt`, `context.max_history_messages`,
//! `adapter_config.fallback_gateway_ids`, `llm.queue.mode` (`collect` default, `steer`,
//! `steer-backlog`), `llm.queue.block_streaming_chunk` and the host's own
//! `voice.sentence_events` (see `docs/voice.md`). A broken file (bad JSON, bad or duplicate id,
//! unknown gateway or fallback) is reported by name and skipped; an unknown queue mode is a
//! `check` problem and runs as `collect`.
//!
//! **System prompt** of a turn: `prompts_dir/voice-system-prompt.md` without its `#` lines,
//! then the profile's `system_prompt`. Edits are live on the next request.
//!
//! **`gateway-host check`** prints the effective config (secrets redacted), every gateway,
//! profile and the prompt file, and exits non-zero on a problem: bad config, broken profile,
//! failed instance (unknown kind, bad settings), or an unconfigured gateway that a profile uses
//! (unused: a warning); a declared instance no profile uses is a warning.
//!
//! **HTTP API**: `POST /v1/conversation` `{profile?, message, session_key?, agent_id?,
//! system_prompt?, sentences?}` → SSE (`event: <type>`, `data: <event json>`, `: keep-alive`
//! comments) or NDJSON with `Accept: application/x-ndjson`; `GET /v1/profiles`,
//! `GET /v1/profiles/{id}`, `GET /v1/gateways`, `GET /v1/sessions/{key}` (history and queue state),
//! `DELETE /v1/sessions/{key}` (204, or 404 if unknown), `POST /v1/sessions/{key}/interrupt`
//! (`{"heard"?}`; 409 `not_in_flight` when nothing runs), `GET /healthz`, `GET /metrics`, and
//! the web console at `GET /` ([`console`]; public files, the page sends the user's token).
//! Errors are `{"error": {"code", "message"}}` (400, 404, 409, 413, 422, 503).
//!
//! **OpenAI-compatible API** (`http/openai.rs`, `docs/openai-api.md`): `POST /v1/chat/completions`
//! with `model` = a profile id, streamed (`stream: true`, `chat.completion.chunk` SSE ending
//! in `data: [DONE]`) or not; `user` or an `X-Session-Key` header switches on server-side
//! memory. `GET /v1/models` and `GET /v1/models/{id}` list the profiles. Errors use OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` (unknown profile: 404 `model_not_found`).

mod cli;
mod config;
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
pub use config::{ConfigError, GatewayConfig, HostConfig};
pub use http::{app, ApiError};
pub use sessions::SessionView;
pub use state::{AppState, StartError};
pub use turn::{TurnError, TurnRequest};

/// The entry point for `gateway-host` and third-party binaries: loads `.env` (before any
/// thread starts), parses the command line, runs the subcommand.
pub fn run() -> ExitCode {
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("warning: cannot load .env: {e}");
        }
    }
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.command.default_log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
