//! Errors of gateways, the registry and session stores. Messages name the cause and never
//! carry an API key or an upstream header.

use std::error::Error;
use std::time::Duration;

/// `error` and then each of its sources in turn, outermost first.
pub fn causes<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// Why a turn failed. Each variant's message is fit to show to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// The instance lacks required configuration (e.g. its API key variable is unset).
    #[error("gateway '{gateway}' is not configured: {reason}")]
    NotConfigured {
        /// Instance id.
        gateway: String,
        /// What is missing, e.g. "OPENAI_COMPAT_API_KEY is not set".
        reason: String,
    },
    /// The instance's configuration is invalid.
    #[error("invalid configuration for gateway '{gateway}': {reason}")]
    InvalidConfig {
        /// Instance id.
        gateway: String,
        /// What is wrong.
        reason: String,
    },
    /// The upstream could not be reached (refused, reset, DNS failure).
    #[error("cannot connect to upstream {host}: {reason}")]
    Connect {
        /// Host and port tried (never the path or query).
        host: String,
        /// Cause, e.g. "connection refused" or "DNS lookup failed".
        reason: String,
    },
    /// TCP/TLS connection was not established in time.
    #[error("connect timeout after {} ms to upstream {host}", .after.as_millis())]
    ConnectTimeout {
        /// Host and port tried.
        host: String,
        /// The configured limit.
        after: Duration,
    },
    /// The upstream sent no first token in time.
    #[error("first token timeout: no answer from upstream within {} ms", .0.as_millis())]
    FirstTokenTimeout(Duration),
    /// The upstream stopped sending in the middle of a stream.
    #[error("idle timeout: upstream stream stalled for {} ms", .0.as_millis())]
    IdleTimeout(Duration),
    /// The upstream answered with an HTTP error status.
    #[error("upstream HTTP {status}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// The provider's error message (or a short plain-text body).
        message: String,
        /// Parsed `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// The upstream reported an error inside a 200 stream.
    #[error("upstream error: {0}")]
    Provider(String),
    /// The upstream sent something that is not the expected protocol.
    #[error("malformed upstream response: {0}")]
    Malformed(String),
    /// The stream ended before a finish reason or `[DONE]`.
    #[error("upstream stream truncated: connection closed before the answer finished")]
    Truncated,
    /// Every upstream slot of the instance (`max_concurrency`) stayed taken for the whole wait.
    #[error("gateway '{gateway}' is busy: all {limit} upstream slots stayed in use for {} ms", .waited.as_millis())]
    Busy {
        /// Instance id.
        gateway: String,
        /// The instance's concurrency limit.
        limit: usize,
        /// How long the turn waited for a slot.
        waited: Duration,
    },
    /// The turn was cancelled (client gone or interrupted).
    #[error("turn cancelled")]
    Cancelled,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl GatewayError {
    /// Short stable label for metrics (`connect`, `http_429`, `first_token_timeout`, ...).
    pub fn cause(&self) -> String {
        match self {
            GatewayError::NotConfigured { .. } => "not_configured".into(),
            GatewayError::InvalidConfig { .. } => "invalid_config".into(),
            GatewayError::Connect { .. } => "connect".into(),
            GatewayError::ConnectTimeout { .. } => "connect_timeout".into(),
            GatewayError::FirstTokenTimeout(_) => "first_token_timeout".into(),
            GatewayError::IdleTimeout(_) => "idle_timeout".into(),
            GatewayError::Http { status, .. } => format!("http_{status}"),
            GatewayError::Provider(_) => "provider".into(),
            GatewayError::Malformed(_) => "malformed".into(),
            GatewayError::Truncated => "truncated".into(),
            GatewayError::Busy { .. } => "busy".into(),
            GatewayError::Cancelled => "cancelled".into(),
            GatewayError::Other(_) => "other".into(),
        }
    }

    /// True when another attempt (or another gateway) may succeed: connection failures,
    /// timeouts before the first token, a busy instance, HTTP 408, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            GatewayError::Connect { .. }
            | GatewayError::ConnectTimeout { .. }
            | GatewayError::FirstTokenTimeout(_)
            | GatewayError::Busy { .. } => true,
            GatewayError::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The upstream's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Errors of the gateway kind registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two linked crates registered the same kind id.
    #[error("gateway kind '{0}' is registered twice")]
    DuplicateKind(String),
    /// A linked crate registered an id that is not `^[a-z0-9-]+$`.
    #[error("gateway kind id '{0}' is invalid: use lower-case letters, digits and '-' only")]
    InvalidKindId(String),
    /// No linked crate registered this kind id.
    #[error("unknown gateway kind '{kind}' (registered: {known})")]
    UnknownKind {
        /// The id asked for.
        kind: String,
        /// Comma-separated registered ids.
        known: String,
    },
}

/// Errors of a session store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backing service could not be used.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("session store data corrupt: {0}")]
    Corrupt(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_walk_the_chain_outermost_first() {
        let outer = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        let messages: Vec<String> = causes(&outer).map(|e| e.to_string()).collect();
        assert_eq!(messages, ["request failed", "refused"]);
        let kind = causes(&outer)
            .find_map(|e| e.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused));
    }
}
