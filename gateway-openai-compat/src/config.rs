//! Configuration of an `openai-compat` instance: the settings table, environment defaults
//! and the API key, which never shows in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use gateway_core::{GatewayError, InstanceConfig, Timeouts};
use serde::Deserialize;

/// Base URL used when none is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Model used when none is configured.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Answer length used when none is configured.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// Default TCP/TLS connect limit.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Timeouts::DEFAULT.connect;
/// Default limit from the request to the first content token.
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Timeouts::DEFAULT.first_token;
/// Default limit on silence between two reads of a running stream.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Timeouts::DEFAULT.idle;
/// The variable named when the built-in instance has no key.
pub const DEFAULT_KEY_VAR: &str = "OPENAI_COMPAT_API_KEY";

/// How an instance authenticates to its upstream (`auth` setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// `Authorization: Bearer <key>`; the instance is not configured without a key.
    #[default]
    Bearer,
    /// No key and no `Authorization` header (a local Ollama or vLLM).
    None,
}

impl FromStr for Auth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bearer" => Ok(Auth::Bearer),
            "none" => Ok(Auth::None),
            other => Err(format!("unknown auth '{other}' (expected bearer or none)")),
        }
    }
}

/// An API key. `Debug` and `Display` print `***`; read it with [`ApiKey::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything one instance needs, resolved. Build it by hand (starting from `Default`) or
/// from a host configuration section with [`OpenAiCompatConfig::from_instance`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiCompatConfig {
    /// API root, e.g. `https://api.groq.com/openai/v1` (a trailing `/` is ignored).
    pub base_url: String,
    /// How requests authenticate; with [`Auth::None`] no key is needed or sent.
    pub auth: Auth,
    /// The key; `None` leaves a [`Auth::Bearer`] instance unconfigured.
    pub api_key: Option<ApiKey>,
    /// Where the key should come from, named in the "not configured" reason.
    pub api_key_source: String,
    /// Model when the turn names none.
    pub model: String,
    /// Answer length when the turn sets none.
    pub max_tokens: u32,
    /// Sampling temperature when the turn sets none; `None` leaves it to the upstream.
    pub temperature: Option<f32>,
    /// Limit on establishing the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Limit from the request to the first content token (covers waiting for headers).
    pub first_token_timeout: Duration,
    /// Limit on silence between two reads once text flows.
    pub idle_timeout: Duration,
    /// Extra request headers (e.g. OpenRouter's `HTTP-Referer`, `X-Title`).
    pub headers: BTreeMap<String, String>,
}

impl Default for OpenAiCompatConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            auth: Auth::Bearer,
            api_key: None,
            api_key_source: DEFAULT_KEY_VAR.into(),
            model: DEFAULT_MODEL.into(),
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            first_token_timeout: DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            headers: BTreeMap::new(),
        }
    }
}

/// The settings table of an instance (`[gateways.NAME]` minus the host's keys: `kind`,
/// `retry`, `max_concurrency` and the timeouts, which arrive typed in
/// [`InstanceConfig::timeouts`]). Unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// API root.
    pub base_url: Option<String>,
    /// `bearer` (default) or `none` for servers that need no key.
    pub auth: Option<Auth>,
    /// Literal key (discouraged: prefer `api_key_env`).
    pub api_key: Option<String>,
    /// Name of the environment variable holding the key.
    pub api_key_env: Option<String>,
    /// Default model.
    pub model: Option<String>,
    /// Default answer length.
    pub max_tokens: Option<u32>,
    /// Default temperature.
    pub temperature: Option<f32>,
    /// Extra request headers.
    pub headers: Option<BTreeMap<String, String>>,
}

impl Settings {
    /// Deserialise an instance's table; the error names the offending key.
    pub fn from_instance(instance: &InstanceConfig) -> Result<Self, GatewayError> {
        instance.settings_as::<Settings>().map_err(|error| {
            let (GatewayError::InvalidConfig { gateway, reason }, Some(table)) =
                (&error, instance.settings.as_object())
            else {
                return error;
            };
            for (key, value) in table {
                let mut one = serde_json::Map::new();
                one.insert(key.clone(), value.clone());
                if serde_json::from_value::<Settings>(one.into()).is_err() {
                    return GatewayError::InvalidConfig {
                        gateway: gateway.clone(),
                        reason: format!("settings key '{key}': {reason}"),
                    };
                }
            }
            error
        })
    }
}

impl OpenAiCompatConfig {
    /// Resolve an instance's configuration: environment variables `<prefix>NAME` (when the
    /// instance has a prefix) beat the settings table, which beats the defaults; the timeouts
    /// are the instance's resolved [`Timeouts`]. The key comes from `api_key_env`, else
    /// `<prefix>API_KEY`, else the literal `api_key`; a missing key is not an error here (the
    /// instance reports it from `is_configured`). With `auth = "none"` (or `<prefix>AUTH=none`)
    /// no key is read and naming one is an error.
    pub fn from_instance(instance: &InstanceConfig) -> Result<Self, GatewayError> {
        let settings = Settings::from_instance(instance)?;
        Self::resolve(instance, settings).map_err(|reason| GatewayError::InvalidConfig {
            gateway: instance.id.clone(),
            reason,
        })
    }

    /// [`from_instance`](Self::from_instance) after the table parsed: each value from its
    /// sources, then the key, then the checks.
    fn resolve(instance: &InstanceConfig, settings: Settings) -> Result<Self, String> {
        let sources = Sources(instance);
        let auth = sources.value("AUTH", settings.auth)?.unwrap_or_default();
        let (api_key, api_key_source) = match auth {
            Auth::None => no_key(&settings)?,
            Auth::Bearer => bearer_key(instance, &settings),
        };
        let Timeouts {
            connect,
            first_token,
            idle,
        } = instance.timeouts;
        let config = Self {
            base_url: base_url(instance, settings.base_url)?,
            auth,
            api_key,
            api_key_source,
            model: sources
                .value("MODEL", settings.model)?
                .unwrap_or_else(|| DEFAULT_MODEL.into()),
            max_tokens: sources
                .value("MAX_TOKENS", settings.max_tokens)?
                .unwrap_or(DEFAULT_MAX_TOKENS),
            temperature: sources.value("TEMPERATURE", settings.temperature)?,
            connect_timeout: connect,
            first_token_timeout: first_token,
            idle_timeout: idle,
            headers: settings.headers.unwrap_or_default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Check values that would make every request fail; the reason names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("model must not be empty".into());
        }
        if self.max_tokens == 0 {
            return Err("max_tokens must be at least 1".into());
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(format!("temperature must be a number >= 0, got {t}"));
            }
        }
        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout),
            ("first_token_timeout_ms", self.first_token_timeout),
            ("idle_timeout_ms", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Where an instance's values come from: its environment defaults, then its table.
struct Sources<'a>(&'a InstanceConfig);

impl Sources<'_> {
    /// `<prefix>NAME` parsed (the error names the variable) when set, else the table's value.
    fn value<T: FromStr>(&self, name: &str, from_table: Option<T>) -> Result<Option<T>, String>
    where
        T::Err: fmt::Display,
    {
        match self.0.env_default(name) {
            Some((var, value)) => parse(&var, value).map(Some),
            None => Ok(from_table),
        }
    }
}

/// The API root: `<prefix>BASE_URL` beats `base_url`, which beats the default; the error
/// names the one it came from.
fn base_url(instance: &InstanceConfig, from_table: Option<String>) -> Result<String, String> {
    let (url, source) = match instance.env_default("BASE_URL") {
        Some((var, value)) => (value.trim().to_string(), var),
        None => (
            from_table.unwrap_or_else(|| DEFAULT_BASE_URL.into()),
            "base_url".to_string(),
        ),
    };
    parse_base_url(&url, &source)?;
    Ok(url)
}

/// `auth = "none"`: no key, and naming one in the table is a mistake worth an error.
fn no_key(settings: &Settings) -> Result<(Option<ApiKey>, String), String> {
    if settings.api_key_env.is_some() || settings.api_key.is_some() {
        return Err("auth = \"none\" sends no key: remove api_key_env and api_key".into());
    }
    Ok((None, "auth = \"none\"".into()))
}

/// The bearer key (from `api_key_env`, else `<prefix>API_KEY`, else the literal `api_key`)
/// and the variable that should hold it, named when it is missing.
fn bearer_key(instance: &InstanceConfig, settings: &Settings) -> (Option<ApiKey>, String) {
    let prefix_var = instance
        .env_prefix
        .as_ref()
        .map(|prefix| format!("{prefix}API_KEY"));
    let from_named = settings
        .api_key_env
        .as_deref()
        .and_then(|var| instance.env.get(var));
    let from_prefix = prefix_var.as_deref().and_then(|var| instance.env.get(var));
    let literal = settings.api_key.as_deref().filter(|k| !k.trim().is_empty());
    if literal.is_some() && from_named.is_none() && from_prefix.is_none() {
        tracing::warn!(
            gateway = %instance.id,
            "the API key is written in the settings table; prefer api_key_env"
        );
    }
    let key = from_named
        .or(from_prefix)
        .or(literal)
        .map(|k| ApiKey::new(k.trim()));
    let source = settings
        .api_key_env
        .clone()
        .or(prefix_var)
        .unwrap_or_else(|| "api_key_env".into());
    (key, source)
}

/// Parse and check a base URL (`http` or `https`, with a host), without its trailing `/`;
/// the error names `source` (the settings key or variable it came from).
pub(crate) fn parse_base_url(base: &str, source: &str) -> Result<reqwest::Url, String> {
    let trimmed = base.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| format!("{source}: '{trimmed}' is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{source}: '{trimmed}' must start with http:// or https://"
        ));
    }
    if url.host_str().map_or(true, str::is_empty) {
        return Err(format!("{source}: '{trimmed}' has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        // Not quoted whole: a query may hold a key (`?key=...`).
        let shown = trimmed.split(['?', '#']).next().unwrap_or_default();
        return Err(format!(
            "{source}: '{shown}' must not have a query or fragment (the part after ? or # is not shown)"
        ));
    }
    Ok(url)
}

/// Parse a variable's value; the error names the variable, not a secret.
fn parse<T: FromStr>(var: &str, value: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| format!("{var}: cannot parse '{}': {e}", value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::Env;
    use serde_json::json;

    fn instance(
        settings: serde_json::Value,
        prefix: Option<&str>,
        env: &[(&str, &str)],
    ) -> InstanceConfig {
        InstanceConfig {
            id: "test".into(),
            settings,
            env_prefix: prefix.map(str::to_string),
            env: Env::from_pairs(env.iter().copied()),
            ..InstanceConfig::default()
        }
    }

    #[test]
    fn defaults_and_env_beats_settings() {
        let config = OpenAiCompatConfig::from_instance(&instance(
            serde_json::Value::Null,
            Some("OPENAI_COMPAT_"),
            &[],
        ))
        .unwrap();
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.model, DEFAULT_MODEL);
        assert_eq!(config.max_tokens, 1024);
        assert_eq!(config.api_key, None);
        assert_eq!(config.api_key_source, "OPENAI_COMPAT_API_KEY");

        let config = OpenAiCompatConfig::from_instance(&instance(
            json!({"model": "file-model", "max_tokens": 10, "base_url": "http://file/v1",
                   "temperature": 0.5, "headers": {"X-Title": "t"}}),
            Some("OPENAI_COMPAT_"),
            &[
                ("OPENAI_COMPAT_MODEL", " env-model "),
                ("OPENAI_COMPAT_MAX_TOKENS", "20"),
                ("OPENAI_COMPAT_API_KEY", "k1"),
            ],
        ))
        .unwrap();
        assert_eq!(config.model, "env-model");
        assert_eq!(config.max_tokens, 20);
        assert_eq!(config.base_url, "http://file/v1");
        assert_eq!(config.temperature, Some(0.5));
        assert_eq!(config.api_key, Some(ApiKey::new("k1")));
        assert_eq!(config.headers.get("X-Title").map(String::as_str), Some("t"));
    }

    #[test]
    fn key_resolution_order() {
        let settings = json!({"api_key_env": "GROQ_KEY", "api_key": "literal"});
        let key = |env: &[(&str, &str)], prefix| {
            OpenAiCompatConfig::from_instance(&instance(settings.clone(), prefix, env))
                .unwrap()
                .api_key
                .map(|k| k.expose().to_string())
        };
        assert_eq!(
            key(&[("GROQ_KEY", "named"), ("P_API_KEY", "pre")], Some("P_")).as_deref(),
            Some("named")
        );
        assert_eq!(
            key(&[("P_API_KEY", "pre")], Some("P_")).as_deref(),
            Some("pre")
        );
        assert_eq!(key(&[], Some("P_")).as_deref(), Some("literal"));
        let config = OpenAiCompatConfig::from_instance(&instance(
            json!({"api_key_env": "GROQ_KEY"}),
            None,
            &[],
        ))
        .unwrap();
        assert_eq!(config.api_key, None);
        assert_eq!(config.api_key_source, "GROQ_KEY");
    }

    #[test]
    fn errors_name_the_key_or_variable() {
        let err = OpenAiCompatConfig::from_instance(&instance(json!({"modle": "x"}), None, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("modle") && err.contains("test"), "{err}");
        let err = OpenAiCompatConfig::from_instance(&instance(
            json!({}),
            Some("OPENAI_COMPAT_"),
            &[("OPENAI_COMPAT_MAX_TOKENS", "lots")],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("OPENAI_COMPAT_MAX_TOKENS"), "{err}");
        let err =
            OpenAiCompatConfig::from_instance(&instance(json!({"max_tokens": "ten"}), None, &[]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("max_tokens"), "{err}");
        let err = OpenAiCompatConfig::from_instance(&instance(
            json!({"base_url": "http://ok/v1"}),
            Some("OPENAI_COMPAT_"),
            &[("OPENAI_COMPAT_BASE_URL", "not a url")],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("OPENAI_COMPAT_BASE_URL"), "{err}");
        let err =
            OpenAiCompatConfig::from_instance(&instance(json!({"base_url": "ftp://x"}), None, &[]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("base_url"), "{err}");
    }

    #[test]
    fn named_instance_reads_every_key_and_its_typed_timeouts() {
        let mut named = instance(
            json!({"base_url": "https://openrouter.ai/api/v1", "api_key_env": "OR_KEY",
                   "model": "m", "max_tokens": 64, "temperature": 0.2,
                   "headers": {"HTTP-Referer": "https://example.org", "X-Title": "Voice"}}),
            None,
            &[
                ("OR_KEY", "k"),
                ("OPENAI_COMPAT_MODEL", "ignored: no prefix"),
            ],
        );
        named.timeouts = Timeouts {
            connect: Duration::from_millis(11),
            first_token: Duration::from_millis(22),
            idle: Duration::from_millis(33),
        };
        let config = OpenAiCompatConfig::from_instance(&named).unwrap();
        assert_eq!(config.base_url, "https://openrouter.ai/api/v1");
        assert_eq!(config.auth, Auth::Bearer);
        assert_eq!(config.api_key, Some(ApiKey::new("k")));
        assert_eq!(config.model, "m");
        assert_eq!(config.max_tokens, 64);
        assert_eq!(config.temperature, Some(0.2));
        assert_eq!(config.connect_timeout, Duration::from_millis(11));
        assert_eq!(config.first_token_timeout, Duration::from_millis(22));
        assert_eq!(config.idle_timeout, Duration::from_millis(33));
        assert_eq!(config.headers.len(), 2);
        assert_eq!(config.headers["HTTP-Referer"], "https://example.org");
    }

    #[test]
    fn timeouts_arrive_typed_not_in_the_table() {
        let config = OpenAiCompatConfig::from_instance(&instance(json!({}), None, &[])).unwrap();
        assert_eq!(
            (
                config.connect_timeout,
                config.first_token_timeout,
                config.idle_timeout
            ),
            (
                DEFAULT_CONNECT_TIMEOUT,
                DEFAULT_FIRST_TOKEN_TIMEOUT,
                DEFAULT_IDLE_TIMEOUT
            )
        );
        let err =
            OpenAiCompatConfig::from_instance(&instance(json!({"idle_timeout_ms": 7}), None, &[]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("idle_timeout_ms"), "{err}");
        let mut zero = instance(json!({}), None, &[]);
        zero.timeouts.idle = Duration::ZERO;
        let err = OpenAiCompatConfig::from_instance(&zero)
            .unwrap_err()
            .to_string();
        assert!(err.contains("idle_timeout_ms must be at least 1"), "{err}");
    }

    #[test]
    fn auth_none_needs_no_key_and_rejects_one() {
        let config = OpenAiCompatConfig::from_instance(&instance(
            json!({"base_url": "http://127.0.0.1:11434/v1", "auth": "none"}),
            None,
            &[],
        ))
        .unwrap();
        assert_eq!(config.auth, Auth::None);
        assert_eq!(config.api_key, None);
        // The built-in instance: OPENAI_COMPAT_AUTH=none beats the table, a stray key is ignored.
        let config = OpenAiCompatConfig::from_instance(&instance(
            json!({}),
            Some("OPENAI_COMPAT_"),
            &[
                ("OPENAI_COMPAT_AUTH", "none"),
                ("OPENAI_COMPAT_API_KEY", "k"),
            ],
        ))
        .unwrap();
        assert_eq!((config.auth, config.api_key), (Auth::None, None));
        let err = OpenAiCompatConfig::from_instance(&instance(
            json!({"auth": "none", "api_key_env": "K"}),
            None,
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth") && err.contains("api_key_env"), "{err}");
        let err = OpenAiCompatConfig::from_instance(&instance(json!({"auth": "basic"}), None, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth"), "{err}");
        let err = OpenAiCompatConfig::from_instance(&instance(
            json!({}),
            Some("P_"),
            &[("P_AUTH", "maybe")],
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("P_AUTH"), "{err}");
    }

    #[test]
    fn key_is_hidden() {
        let config = OpenAiCompatConfig {
            api_key: Some(ApiKey::new("sk-secret")),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("sk-secret"));
        assert_eq!(ApiKey::new("sk-secret").to_string(), "***");
    }

    #[test]
    fn a_base_url_with_a_query_is_refused_without_quoting_it() {
        let err = parse_base_url("https://api.example.com/v1?key=QuerySecret999", "base_url")
            .unwrap_err();
        assert!(
            err.contains("'https://api.example.com/v1' must not have a query"),
            "{err}"
        );
        assert!(!err.contains("QuerySecret999"), "{err}");
    }
}
