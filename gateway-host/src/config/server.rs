//! `[server]` (how client connections are read and bounded) and `[cors]` (which other web
//! origins may call the API). What the host does with them: `http/server/` and
//! `http/origin.rs`; the operator's view: `docs/operations.md` ("Hostile networks").

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::ConfigError;

/// `[server]`: timeouts of client connections and the cap on open ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Time to send a whole request head, from the accept (or, on a kept-alive connection,
    /// from the request's first byte); the connection is closed beyond it.
    pub header_read_timeout_ms: u64,
    /// Time to send a request's whole body once its head arrived (408 `request_timeout`).
    pub body_read_timeout_ms: u64,
    /// Time a kept-alive connection may sit idle between requests before it is closed.
    pub idle_timeout_ms: u64,
    /// Most client connections open at once (lowered to what the open-file limit allows).
    pub max_connections: usize,
    /// Threads serving client connections, each the one worker of a tokio runtime of its own
    /// (a connection and its turns stay on one); 0, the default: one per CPU core.
    pub threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 1_024,
            threads: 0,
        }
    }
}

impl ServerConfig {
    /// The header-read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The body-read timeout.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// How many threads serve connections: `threads`, or one per CPU core.
    pub fn serving_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The idle keep-alive timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.header_read_timeout_ms == 0
            || self.body_read_timeout_ms == 0
            || self.idle_timeout_ms == 0
            || self.max_connections == 0
        {
            return Err(ConfigError::Invalid(
                "server.header_read_timeout_ms, body_read_timeout_ms, idle_timeout_ms and \
                 max_connections must be > 0"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// `[cors]`: web origins other than the host's own that may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CorsConfig {
    /// Origins (`https://app.example.com`, `http://localhost:3000`) allowed cross-origin
    /// requests; a list or one comma-separated string. Empty by default: only the host's own
    /// pages (same origin) and clients that send no `Origin` (curl, SDKs, servers).
    #[serde(deserialize_with = "list_or_commas")]
    pub allowed_origins: Vec<String>,
}

impl CorsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            if normalize_origin(origin).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "cors.allowed_origins: '{origin}' is not an origin \
                     (scheme://host[:port], http or https, no path)"
                )));
            }
        }
        Ok(())
    }
}

/// An origin in its comparable form: `scheme://host[:port]` lowercased, without a trailing
/// slash or the scheme's default port; `None` when `text` is not an http(s) origin.
pub fn normalize_origin(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = text.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let valid = !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' '])
        && !authority.starts_with(':');
    if !valid {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// A list of strings from a list or from one comma-separated string (environment variables).
fn list_or_commas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    let items = match Either::deserialize(d)? {
        Either::List(items) => items,
        Either::Text(text) => text.split(',').map(str::to_string).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_in_one_form() {
        let cases = [
            ("https://App.Example.com/", Some("https://app.example.com")),
            (
                "https://app.example.com:443",
                Some("https://app.example.com"),
            ),
            ("http://localhost:3000", Some("http://localhost:3000")),
            ("http://[::1]:80", Some("http://[::1]")),
            ("http://a.com/path", None),
            ("ftp://a.com", None),
            ("null", None),
            ("https://", None),
            ("*", None),
        ];
        for (text, expected) in cases {
            assert_eq!(normalize_origin(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn origins_come_from_a_list_or_commas() {
        let from = |v: serde_json::Value| {
            serde_json::from_value::<CorsConfig>(serde_json::json!({ "allowed_origins": v }))
                .map(|c| c.allowed_origins)
                .map_err(|e| e.to_string())
        };
        let both = vec!["http://a:1".to_string(), "https://b".to_string()];
        assert_eq!(
            from(serde_json::json!("http://a:1, https://b,")),
            Ok(both.clone())
        );
        assert_eq!(
            from(serde_json::json!(["http://a:1", "https://b"])),
            Ok(both)
        );
        assert!(CorsConfig {
            allowed_origins: vec!["https://b/x".into()]
        }
        .check()
        .is_err());
    }
}
