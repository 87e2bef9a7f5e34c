//! Host configuration: built-in defaults < `gateway.toml` < `.env` < `GATEWAY_*` environment.
//!
//! The settings types are public, so embedders can build a [`HostConfig`] in code. Beside them
//! (crate-private, their main types re-exported at the crate root): `profile.rs` (profiles),
//! `prompt.rs` (the voice prompt file) and `instances.rs` (gateway instances from the kind
//! registry and the `[gateways.*]` tables).

pub(crate) mod instances;
pub(crate) mod profile;
pub(crate) mod prompt;
pub(crate) mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};

pub use server::{CorsConfig, ServerConfig};

/// Default config file, read when present.
pub const DEFAULT_CONFIG_FILE: &str = "gateway.toml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "GATEWAY_CONFIG";
/// Prefix of environment overrides (`GATEWAY_BIND`, `GATEWAY_MEMORY__MAX_MESSAGES`, ...).
pub const ENV_PREFIX: &str = "GATEWAY_";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be merged or deserialised.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A config file was named explicitly but does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Invalid(e.to_string())
    }
}

/// The whole host configuration. Unknown top-level keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    /// Address `serve` listens on (loopback by default).
    pub bind: SocketAddr,
    /// Directory of profile `*.json` files.
    pub profiles_dir: PathBuf,
    /// Directory holding `voice-system-prompt.md`.
    pub prompts_dir: PathBuf,
    /// Profile used when a request names none.
    pub default_profile: String,
    /// Session memory.
    pub memory: MemoryConfig,
    /// Host-wide upstream timeouts, passed to every instance unless it sets its own.
    pub timeouts: TimeoutConfig,
    /// Seconds of upstream silence before an SSE `: keep-alive` comment is sent.
    pub keepalive_secs: u64,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Retries of a failing gateway before the first token (see `docs/backends.md`).
    pub retry: RetryConfig,
    /// Client authentication (bearer tokens).
    pub auth: AuthConfig,
    /// Seconds in-flight turns may run on after SIGTERM/SIGINT before they are ended.
    pub shutdown_grace_secs: u64,
    /// Client connections: read timeouts and the cap on open ones.
    pub server: ServerConfig,
    /// Other web origins allowed to call the API from a browser.
    pub cors: CorsConfig,
    /// Gateway instances by id: settings of a built-in kind instance (`[gateways.openai-compat]`)
    /// or named instances (`[gateways.groq] kind = "openai-compat"`).
    pub gateways: BTreeMap<String, GatewayConfig>,
    /// MCP tool servers and the tool loop's bounds (see `docs/tools.md`).
    pub tools: crate::tools::config::ToolsConfig,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8787)),
            profiles_dir: "profiles".into(),
            prompts_dir: "prompts".into(),
            default_profile: "default".into(),
            memory: MemoryConfig::default(),
            timeouts: TimeoutConfig::default(),
            keepalive_secs: 15,
            limits: LimitsConfig::default(),
            retry: RetryConfig::default(),
            auth: AuthConfig::default(),
            shutdown_grace_secs: 10,
            server: ServerConfig::default(),
            cors: CorsConfig::default(),
            gateways: BTreeMap::new(),
            tools: Default::default(),
        }
    }
}

/// Default prefix of the Redis keys of session histories.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "gateway:session:";

/// Session memory settings. `Debug` shows the Redis URL without its password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// Store backend: `memory` (per process) or `redis` (shared by replicas).
    pub backend: MemoryBackend,
    /// `redis://[:password@]host:port/db` (or `rediss://` for TLS) for the `redis` backend;
    /// its password is never shown.
    pub redis_url: String,
    /// PEM file of the CA that signed the Redis server's certificate (`rediss://`); the
    /// system's roots when empty.
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key the store writes.
    pub redis_key_prefix: String,
    /// How long a turn's memory write is retried before `text_done` says it was not stored.
    pub write_timeout_ms: u64,
    /// Lease of a replica on a session's in-flight turn (`redis`): renewed while the turn
    /// runs, so a replica that dies leaves the session free after at most this long.
    pub lease_ms: u64,
    /// Messages sent and kept per session unless a profile sets `context.max_history_messages`.
    pub max_messages: usize,
    /// Most sessions held in memory.
    pub max_sessions: u64,
    /// Seconds after which an untouched session is forgotten.
    pub idle_ttl_secs: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            backend: MemoryBackend::Memory,
            redis_url: String::new(),
            redis_ca_file: None,
            redis_key_prefix: DEFAULT_REDIS_KEY_PREFIX.into(),
            write_timeout_ms: 2000,
            lease_ms: 5000,
            max_messages: gateway_core::DEFAULT_HISTORY,
            max_sessions: 100_000,
            idle_ttl_secs: 86_400,
        }
    }
}

impl std::fmt::Debug for MemoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryConfig")
            .field("backend", &self.backend)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_ca_file", &self.redis_ca_file)
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("lease_ms", &self.lease_ms)
            .field("max_messages", &self.max_messages)
            .field("max_sessions", &self.max_sessions)
            .field("idle_ttl_secs", &self.idle_ttl_secs)
            .finish()
    }
}

/// Where session memory lives (`memory.backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryBackend {
    /// In this process: lost on restart, not shared between replicas.
    #[default]
    Memory,
    /// A Redis server (`memory.redis_url`) shared by every replica pointing at it.
    Redis,
}

impl MemoryBackend {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryBackend::Memory => "memory",
            MemoryBackend::Redis => "redis",
        }
    }
}

/// Host-wide upstream timeouts in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeoutConfig {
    /// TCP/TLS connect limit (`connect_timeout_ms`).
    pub connect_ms: u64,
    /// Limit until the first token (`first_token_timeout_ms`).
    pub first_token_ms: u64,
    /// Limit of silence inside a stream (`idle_timeout_ms`).
    pub idle_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            first_token_ms: 30_000,
            idle_ms: 30_000,
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Largest accepted request body (413 beyond).
    pub max_body_bytes: usize,
    /// Longest accepted user message in characters (400 beyond).
    pub max_message_chars: usize,
    /// Most turns streaming at once in this process (503 `overloaded` beyond).
    pub max_streams: usize,
    /// Most turns streaming at once on one session key in this process (429 `session_busy`
    /// beyond); 0 = no limit.
    pub max_streams_per_session: usize,
    /// Default upstream concurrency of every gateway instance (an instance's own
    /// `max_concurrency` wins); 0 = no limit. Excess turns wait up to the first-token timeout.
    pub max_upstream_concurrency: usize,
    /// Longest answer one turn may stream, in characters; a longer one is cut and ends with
    /// an `error` event (nothing of it is stored).
    pub max_answer_chars: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 65_536,
            max_message_chars: 16_000,
            max_streams: 2_048,
            max_streams_per_session: 4,
            max_upstream_concurrency: 0,
            max_answer_chars: 200_000,
        }
    }
}

/// Most attempts per instance accepted in `retry.max_attempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;

/// `[retry]`: how often one instance is tried before the first token, and how long a
/// `Retry-After` the host honours. Failing over to a profile's fallbacks is separate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Attempts per instance, the first included (1 = never retry the same instance).
    pub max_attempts: u32,
    /// Longest `Retry-After` (429/503) waited for; a longer one moves the turn on at once.
    pub max_retry_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 2,
            max_retry_after_ms: 5_000,
        }
    }
}

impl RetryConfig {
    /// This policy with an instance's overrides applied.
    pub fn with(self, over: Option<&RetryOverride>) -> Self {
        let Some(over) = over else { return self };
        Self {
            max_attempts: over.max_attempts.unwrap_or(self.max_attempts),
            max_retry_after_ms: over.max_retry_after_ms.unwrap_or(self.max_retry_after_ms),
        }
    }

    fn check(&self, at: &str) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(ConfigError::Invalid(format!(
                "{at}.max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}, got {}",
                self.max_attempts
            )));
        }
        Ok(())
    }
}

/// `[gateways.<id>.retry]`: per-instance overrides of `[retry]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    /// Overrides `retry.max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Overrides `retry.max_retry_after_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_after_ms: Option<u64>,
}

/// Client authentication. With no tokens (the default) the API is open, which is only
/// sensible on loopback: `serve` and `check` warn when a non-loopback bind has no tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Accepted bearer tokens (`GATEWAY_AUTH__TOKENS=tok1,tok2` works too).
    pub tokens: Tokens,
    /// File of accepted tokens, one per line (blank lines and `#` comments skipped).
    pub tokens_file: Option<PathBuf>,
    /// Serve `GET /metrics` without a token even when authentication is on.
    pub public_metrics: bool,
}

/// A list of bearer tokens: `Debug` never prints them; deserialises from a list or from one
/// comma-separated string.
#[derive(Clone, PartialEq, Eq, Default, Serialize)]
pub struct Tokens(pub Vec<String>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Tokens {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Clone, Copy)]
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of tokens or a comma-separated string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(vec![v.to_string()])
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(vec![v.to_string()])
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<serde_json::Value>()? {
                    let text = match item {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        _ => return Err(serde::de::Error::custom("a token must be a string")),
                    };
                    if text.trim().is_empty() {
                        // An empty entry would otherwise vanish and leave authentication off.
                        return Err(serde::de::Error::custom("a token must not be empty"));
                    }
                    out.extend(self.visit_str::<A::Error>(&text)?);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Visitor).map(Tokens)
    }
}

/// One `[gateways.<id>]` table: the kind plus the kind's own settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// Kind id; may be omitted when the table's id is itself a kind id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Retry overrides for this instance (kept by the host, not passed to the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOverride>,
    /// Most upstream requests of this instance at once (kept by the host, not passed to the
    /// kind); `limits.max_upstream_concurrency` when absent, 0 = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Everything else, handed to the kind's `build` as its settings object.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl HostConfig {
    /// The standard figment: defaults < TOML file < `GATEWAY_*` environment (`__` nests).
    pub fn figment(file: &Path) -> Figment {
        Figment::from(Serialized::defaults(HostConfig::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]))
    }

    /// Load from the standard sources. `explicit` (`--config`) beats `GATEWAY_CONFIG`, which
    /// beats `gateway.toml`; an explicitly named file must exist, the default one is optional.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let named = explicit.map(Path::to_path_buf).or(from_env);
        let file = match named {
            Some(path) if !path.is_file() => return Err(ConfigError::MissingFile(path)),
            Some(path) => path,
            None => PathBuf::from(DEFAULT_CONFIG_FILE),
        };
        Self::from_provider(Self::figment(&file))
    }

    /// Extract and validate a config from any figment provider (tests inject values this way).
    pub fn from_provider(provider: impl Provider) -> Result<Self, ConfigError> {
        let config: HostConfig = Figment::from(provider).extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Check values that deserialise but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.memory.backend == MemoryBackend::Redis {
            let url = self.memory.redis_url.trim();
            if url.is_empty() {
                return bad("memory.backend 'redis' needs memory.redis_url".into());
            }
            if !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return bad(format!(
                    "memory.redis_url must start with redis:// or rediss:// (got '{}')",
                    redact_url(url)
                ));
            }
        }
        if self.memory.write_timeout_ms < 100 || self.memory.lease_ms < 300 {
            return bad("memory.write_timeout_ms must be >= 100 and memory.lease_ms >= 300".into());
        }
        if self.memory.max_messages == 0 || self.memory.max_sessions == 0 {
            return bad("memory.max_messages and memory.max_sessions must be > 0".into());
        }
        if self.limits.max_body_bytes == 0
            || self.limits.max_message_chars == 0
            || self.limits.max_streams == 0
            || self.limits.max_answer_chars == 0
        {
            return bad(
                "limits.max_body_bytes, max_message_chars, max_streams and max_answer_chars \
                 must be > 0"
                    .into(),
            );
        }
        self.server.check()?;
        self.cors.check()?;
        if self.keepalive_secs == 0 {
            return bad("keepalive_secs must be > 0".into());
        }
        if !crate::config::profile::is_valid_id(&self.default_profile) {
            return bad(format!(
                "default_profile '{}' is not a valid profile id (a-z, 0-9, -)",
                self.default_profile
            ));
        }
        self.retry.check("retry")?;
        self.tools.check().map_err(ConfigError::Invalid)?;
        for (id, gateway) in &self.gateways {
            if !crate::config::profile::is_valid_id(id) {
                return bad(format!("gateway id '{id}' is not valid (a-z, 0-9, -)"));
            }
            self.retry
                .with(gateway.retry.as_ref())
                .check(&format!("gateways.{id}.retry"))?;
        }
        Ok(())
    }

    /// The config as JSON with every secret-looking key's value replaced by `"***"`.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        redact(&mut value);
        crate::tools::config::ToolsConfig::redact(&mut value);
        if let Some(tokens) = value.pointer_mut("/auth/tokens") {
            *tokens = format!("*** ({} token(s))", self.auth.tokens.0.len()).into();
        }
        value
    }
}

/// True for keys whose values must never be shown. `token` counts only at the end of a key
/// (`access_token`), so `max_tokens` and `first_token_timeout_ms` stay visible.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.ends_with("token")
        || ["key", "secret", "password", "authorization"]
            .iter()
            .any(|s| key.contains(s))
}

/// Tables whose every value may be a credential (`X-Custom-Auth`, a child's `API_TOKEN`):
/// all of their values are hidden, whatever the names.
const SECRET_TABLES: [&str; 2] = ["headers", "env"];

/// Replace, recursively, the values of secret-looking keys and of `headers` and `env` tables
/// by `"***"`, and the password of every URL string by `***`.
pub fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) {
                    *v = serde_json::Value::String("***".into());
                } else if let (true, serde_json::Value::Object(table)) =
                    (SECRET_TABLES.contains(&k.as_str()), &mut *v)
                {
                    table
                        .values_mut()
                        .for_each(|v| *v = serde_json::Value::String("***".into()));
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        serde_json::Value::String(text) if text.contains("://") => *text = redact_url(text),
        _ => {}
    }
}

/// `url` with its password (the userinfo part after `:`) replaced by `***`; any other text is
/// returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = redact_query(tail);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return format!("{scheme}://{authority}{tail}");
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => userinfo.to_string(),
    };
    format!("{scheme}://{user}@{host}{tail}")
}

/// The path, query and fragment of a URL with the values of secret-looking query
/// parameters (`?key=`, `?access_token=`, `?password=`) replaced by `***`.
fn redact_query(tail: &str) -> String {
    let Some((path, rest)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((query, fragment)) => (query, format!("#{fragment}")),
        None => (rest, String::new()),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_key(name) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}{fragment}", pairs.join("&"))
}

// figment's `Jail` closures return its large error type; not ours to shrink.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn precedence_defaults_file_env() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "gateway.toml",
                r#"
                bind = "127.0.0.1:9000"
                keepalive_secs = 5
                [memory]
                max_messages = 6
                [gateways.groq]
                kind = "openai-compat"
                base_url = "http://x/v1"
                api_key_env = "GROQ_API_KEY"
                max_tokens = 100
                "#,
            )?;
            jail.set_env("GATEWAY_KEEPALIVE_SECS", "7");
            jail.set_env("GATEWAY_MEMORY__MAX_SESSIONS", "9");
            jail.set_env("GATEWAY_CONFIG", "gateway.toml");
            let c = HostConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.bind.port(), 9000);
            assert_eq!(c.keepalive_secs, 7);
            assert_eq!(c.memory.max_messages, 6);
            assert_eq!(c.memory.max_sessions, 9);
            assert_eq!(c.timeouts.connect_ms, 5000);
            let groq = &c.gateways["groq"];
            assert_eq!(groq.kind.as_deref(), Some("openai-compat"));
            assert_eq!(groq.settings["max_tokens"], 100);
            assert!(!groq.settings.contains_key("kind"));
            Ok(())
        });
    }

    #[test]
    fn explicit_missing_file_and_bad_backend_are_errors() {
        Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_CONFIG", "nope.toml");
            assert!(matches!(
                HostConfig::load(None),
                Err(ConfigError::MissingFile(_))
            ));
            jail.clear_env();
            assert!(HostConfig::load(None).is_ok());
            jail.set_env("GATEWAY_MEMORY__BACKEND", "etcd");
            let err = HostConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("etcd"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn retry_policy_and_instance_overrides() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "gateway.toml",
                r#"
                [retry]
                max_attempts = 3
                [gateways.groq]
                kind = "openai-compat"
                api_key_env = "GROQ_API_KEY"
                retry = { max_retry_after_ms = 800 }
                "#,
            )?;
            let c = HostConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.retry.max_retry_after_ms, 5000);
            let groq = &c.gateways["groq"];
            assert!(
                !groq.settings.contains_key("retry"),
                "not passed to the kind"
            );
            let policy = c.retry.with(groq.retry.as_ref());
            assert_eq!((policy.max_attempts, policy.max_retry_after_ms), (3, 800));
            jail.set_env("GATEWAY_RETRY__MAX_ATTEMPTS", "0");
            let err = HostConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("retry.max_attempts"), "{err}");
            jail.set_env("GATEWAY_RETRY__MAX_ATTEMPTS", "2");
            jail.create_file(
                "gateway.toml",
                "[gateways.groq]\nkind = \"openai-compat\"\nretry = { max_atempts = 2 }\n",
            )?;
            let err = HostConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("max_atempts"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn rediss_urls_a_ca_file_and_the_write_and_lease_bounds() {
        Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_MEMORY__BACKEND", "redis");
            jail.set_env(
                "GATEWAY_MEMORY__REDIS_URL",
                "rediss://:pw@redis.internal:6380/0",
            );
            jail.set_env("GATEWAY_MEMORY__REDIS_CA_FILE", "/etc/gateway/ca.pem");
            let c = HostConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.memory.redis_ca_file.as_deref(),
                Some(Path::new("/etc/gateway/ca.pem"))
            );
            assert_eq!((c.memory.write_timeout_ms, c.memory.lease_ms), (2000, 5000));
            jail.set_env("GATEWAY_MEMORY__LEASE_MS", "100");
            let err = HostConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("lease_ms"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn redis_backend_needs_a_url_and_auth_tokens_parse_from_env() {
        Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_MEMORY__BACKEND", "redis");
            let err = HostConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("redis_url"), "{err}");
            jail.set_env("GATEWAY_MEMORY__REDIS_URL", "http://x");
            let err = HostConfig::load(None).unwrap_err().to_string();
            assert!(err.contains("redis://"), "{err}");
            jail.set_env(
                "GATEWAY_MEMORY__REDIS_URL",
                "redis://:pw-SECRET@10.0.0.5:6379/2",
            );
            jail.set_env("GATEWAY_AUTH__TOKENS", "tok-one, tok-two,,12345");
            let c = HostConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.memory.redis_key_prefix, DEFAULT_REDIS_KEY_PREFIX);
            assert_eq!(c.auth.tokens.0, ["tok-one", "tok-two", "12345"]);
            let shown = c.redacted().to_string();
            assert!(
                !shown.contains("pw-SECRET") && !shown.contains("tok-one"),
                "{shown}"
            );
            assert!(shown.contains("redis://:***@10.0.0.5:6379/2"), "{shown}");
            let debug = format!("{c:?}");
            assert!(
                !debug.contains("tok-one") && !debug.contains("pw-SECRET"),
                "{debug}"
            );
            jail.set_env("GATEWAY_AUTH__TOKENS", "[\"a\", \"b,c\"]");
            let c = HostConfig::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.auth.tokens.0, ["a", "b", "c"]);
            Ok(())
        });
    }

    /// Inputs kept from fuzzing (`tests/fuzz-regressions/host_config/`): never a panic, and
    /// an accepted config validates and redacts.
    #[test]
    fn fuzz_regressions() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/host_config");
        let mut replayed = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let figment = Figment::from(Serialized::defaults(HostConfig::default()))
                .merge(Toml::string(text));
            if let Ok(config) = HostConfig::from_provider(figment) {
                assert!(config.validate().is_ok());
                assert!(!config.redacted().to_string().contains("redis://:p@"));
            }
            replayed += 1;
        }
        assert!(replayed > 0);
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:p@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("redis://u@h/x@y"), "redis://u@h/x@y");
        assert_eq!(redact_url("plain text"), "plain text");
        assert_eq!(
            redact_url("https://h/v1?key=QuerySecret999&x=1#f"),
            "https://h/v1?key=***&x=1#f"
        );
        assert_eq!(
            redact_url("redis://:p@h/0?password=X&db=2"),
            "redis://:***@h/0?password=***&db=2"
        );
        assert_eq!(
            redact_url("http://h/v1?max_tokens=5"),
            "http://h/v1?max_tokens=5"
        );
    }

    #[test]
    fn redacts_secret_keys() {
        let mut c = HostConfig::default();
        let mut settings = serde_json::Map::new();
        settings.insert("api_key".into(), "sk-secret".into());
        settings.insert("model".into(), "m".into());
        settings.insert(
            "headers".into(),
            serde_json::json!({"Authorization": "Bearer x", "X-Custom-Auth": "HdrSecret777"}),
        );
        c.gateways.insert(
            "x".into(),
            GatewayConfig {
                kind: Some("k".into()),
                settings,
                ..GatewayConfig::default()
            },
        );
        c.gateways
            .get_mut("x")
            .unwrap()
            .settings
            .insert("access_token".into(), "tok-1".into());
        c.gateways
            .get_mut("x")
            .unwrap()
            .settings
            .insert("max_tokens".into(), 77.into());
        let text = c.redacted().to_string();
        assert!(!text.contains("sk-secret") && !text.contains("Bearer"));
        assert!(
            !text.contains("HdrSecret777") && text.contains(r#""X-Custom-Auth":"***""#),
            "a header's value is hidden whatever its name: {text}"
        );
        assert!(!text.contains("tok-1"), "{text}");
        assert!(text.contains("\"max_tokens\":77") && text.contains("\"first_token_ms\":30000"));
        assert!(text.contains("\"model\":\"m\""));
    }
}
