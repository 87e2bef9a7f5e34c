//! Configuration of an `openai-compat` instance: the settings table, environment defaults
//! and the API key, which never shows in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use gateway_core::{GatewayError, InstanceConfig};
use serde::Deserialize;

/// Base URL used when none is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Model used when none is configured.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Answer length used when none is configured.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// Default TCP/TLS connect limit.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Default limit from the request to the first content token.
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default limit on silence between two reads of a running stream.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_millis(30_000);
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

/// The settings table of an instance (`[gateways.NAME]` minus `kind`). Unknown keys are
/// rejected.
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
    /// Connect limit in ms.
    pub connect_timeout_ms: Option<u64>,
    /// First-token limit in ms.
    pub first_token_timeout_ms: Option<u64>,
    /// Idle limit in ms.
    pub idle_timeout_ms: Option<u64>,
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
    /// instance has a prefix) beat the settings table, which beats the defaults. The key comes
    /// from `api_key_env`, else `<prefix>API_KEY`, else the literal `api_key`; a missing key
    /// is not an error here (the instance reports it from `is_configured`). With `auth = "none"`
    /// (or `<prefix>AUTH=none`) no key is read and naming one is an error.
    pub fn from_instance(instance: &InstanceConfig) -> Result<Self, GatewayError> {
        let settings = Settings::from_instance(instance)?;
        let invalid = |reason: String| GatewayError::InvalidConfig {
            gateway: instance.id.clone(),
            reason,
        };
        let mut config = Self::default();

        let env_str = |name: &str| instance.env_default(name);
        let number = |name: &str, from_settings: Option<u64>| -> Result<Option<u64>, _> {
            match env_str(name) {
                Some((var, value)) => parse::<u64>(&var, value).map(Some).map_err(invalid),
                None => Ok(from_settings),
            }
        };

        let mut base_url_source = "base_url".to_string();
        if let Some(base_url) = settings.base_url {
            config.base_url = base_url;
        }
        if let Some((var, value)) = env_str("BASE_URL") {
            config.base_url = value.trim().to_string();
            base_url_source = var;
        }
        parse_base_url(&config.base_url, &base_url_source).map_err(invalid)?;
        if let Some(model) = settings.model {
            config.model = model;
        }
        if let Some((_, value)) = env_str("MODEL") {
            config.model = value.trim().to_string();
        }
        match env_str("MAX_TOKENS") {
            Some((var, value)) => config.max_tokens = parse(&var, value).map_err(invalid)?,
            None => {
                if let Some(max_tokens) = settings.max_tokens {
                    config.max_tokens = max_tokens;
                }
            }
        }
        config.temperature = match env_str("TEMPERATURE") {
            Some((var, value)) => Some(parse(&var, value).map_err(invalid)?),
            None => settings.temperature,
        };
        if let Some(ms) = number("CONNECT_TIMEOUT_MS", settings.connect_timeout_ms)? {
            config.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number("FIRST_TOKEN_TIMEOUT_MS", settings.first_token_timeout_ms)? {
            config.first_token_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number("IDLE_TIMEOUT_MS", settings.idle_timeout_ms)? {
            config.idle_timeout = Duration::from_millis(ms);
        }
        config.headers = settings.headers.unwrap_or_default();
        config.auth = match env_str("AUTH") {
            Some((var, value)) => parse(&var, value).map_err(invalid)?,
            None => settings.auth.unwrap_or_default(),
        };
        if config.auth == Auth::None {
            if settings.api_key_env.is_some() || settings.api_key.is_some() {
                return Err(invalid(
                    "auth = \"none\" sends no key: remove api_key_env and api_key".into(),
                ));
            }
            config.api_key = None;
            config.api_key_source = "auth = \"none\"".into();
            config.validate().map_err(invalid)?;
            return Ok(config);
        }

        let prefix_var = instance
            .env_prefix
            .as_ref()
            .map(|prefix| format!("{prefix}API_KEY"));
        let from_named = settings
            .api_key_env
            .as_deref()
            .and_then(|var| instance.env.get(var));
        let from_prefix = prefix_var.as_deref().and_then(|var| instance.env.get(var));
        if settings.api_key.is_some() && from_named.is_none() && from_prefix.is_none() {
            tracing::warn!(
                gateway = %instance.id,
                "the API key is written in the settings table; prefer api_key_env"
            );
        }
        config.api_key = from_named
            .or(from_prefix)
            .map(str::to_string)
            .or(settings.api_key.filter(|k| !k.trim().is_empty()))
            .map(|k| ApiKey::new(k.trim()));
        config.api_key_source = match (settings.api_key_env, prefix_var) {
            (Some(var), _) => var,
            (None, Some(var)) => var,
            (None, None) => "api_key_env".into(),
        };

        config.validate().map_err(invalid)?;
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
        return Err(format!(
            "{source}: '{trimmed}' must not have a query or fragment"
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
                   "idle_timeout_ms": 7, "temperature": 0.5, "headers": {"X-Title": "t"}}),
            Some("OPENAI_COMPAT_"),
            &[
                ("OPENAI_COMPAT_MODEL", "env-model"),
                ("OPENAI_COMPAT_MAX_TOKENS", "20"),
                ("OPENAI_COMPAT_API_KEY", "k1"),
                ("OPENAI_COMPAT_FIRST_TOKEN_TIMEOUT_MS", "99"),
            ],
        ))
        .unwrap();
        assert_eq!(config.model, "env-model");
        assert_eq!(config.max_tokens, 20);
        assert_eq!(config.base_url, "http://file/v1");
        assert_eq!(config.idle_timeout, Duration::from_millis(7));
        assert_eq!(config.first_token_timeout, Duration::from_millis(99));
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
    fn named_instance_reads_every_key() {
        let config = OpenAiCompatConfig::from_instance(&instance(
            json!({"base_url": "https://openrouter.ai/api/v1", "api_key_env": "OR_KEY",
                   "model": "m", "max_tokens": 64, "temperature": 0.2,
                   "connect_timeout_ms": 11, "first_token_timeout_ms": 22, "idle_timeout_ms": 33,
                   "headers": {"HTTP-Referer": "https://example.org", "X-Title": "Voice"}}),
            None,
            &[
                ("OR_KEY", "k"),
                ("OPENAI_COMPAT_MODEL", "ignored: no prefix"),
            ],
        ))
        .unwrap();
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
}
