//! Optional client authentication: `Authorization: Bearer <token>` checked in constant time
//! against the configured tokens. `/healthz` is always open; `/metrics` too when
//! `auth.public_metrics` is set. Tokens are never logged or shown.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::AuthConfig;
use crate::state::AppState;

/// Why the authentication settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `auth.tokens_file` could not be read.
    #[error("cannot read auth.tokens_file {path}: {reason}")]
    TokensFile {
        /// The file named in the config.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// `auth.tokens_file` holds only blank lines and comments: naming a file asks for
    /// authentication, so an empty one must not turn it off.
    #[error("auth.tokens_file {0} holds no token (only blank lines and comments)")]
    NoTokens(String),
    /// A token holds characters a header cannot carry (spaces, control characters).
    #[error("auth token #{0} contains whitespace or non-printable characters")]
    BadToken(usize),
}

/// The accepted bearer tokens. With none, authentication is off.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Vec<[u8; 32]>,
    public_metrics: bool,
    broken: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("public_metrics", &self.public_metrics)
            .field("broken", &self.broken)
            .finish()
    }
}

impl Auth {
    /// Tokens from `auth.tokens` plus every line of `auth.tokens_file` (blank lines and lines
    /// starting with `#` skipped).
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthError> {
        let mut tokens: Vec<String> = config.tokens.0.clone();
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| AuthError::TokensFile {
                path: path.display().to_string(),
                reason: e.kind().to_string(),
            })?;
            let before = tokens.len();
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
            if tokens.len() == before {
                return Err(AuthError::NoTokens(path.display().to_string()));
            }
        }
        for (i, token) in tokens.iter().enumerate() {
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(AuthError::BadToken(i + 1));
            }
        }
        Ok(Self {
            tokens: tokens.iter().map(|t| digest(t.as_bytes())).collect(),
            public_metrics: config.public_metrics,
            broken: None,
        })
    }

    /// Settings that failed to load: fail closed, every protected request is refused.
    pub fn deny_all(error: &AuthError) -> Self {
        Self {
            broken: Some(error.to_string()),
            ..Self::default()
        }
    }

    /// Why the settings could not be loaded, when they could not.
    pub fn problem(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// True when requests must carry a token (tokens are configured, or their settings are
    /// broken and nothing is accepted).
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.broken.is_some()
    }

    /// Number of accepted tokens.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// True when `presented` equals one of the tokens. Only SHA-256 digests are kept and
    /// compared, every one in constant time, so the timing tells neither which bytes matched
    /// nor how long a configured token is.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        let mut ok = Choice::from(0);
        for token in &self.tokens {
            ok |= token.ct_eq(&presented);
        }
        bool::from(ok)
    }

    fn is_open_path(&self, path: &str) -> bool {
        path == "/healthz" || (self.public_metrics && path == "/metrics")
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The warning for a host that listens beyond loopback without authentication, if any.
pub fn exposure_warning(bind: SocketAddr, auth: &Auth) -> Option<String> {
    (!bind.ip().is_loopback() && !auth.is_enabled()).then(|| {
        format!(
            "listening on {bind} (not loopback) WITHOUT client authentication: anyone who can \
             reach this port can spend the gateways' API keys; set auth.tokens \
             (GATEWAY_AUTH__TOKENS) or auth.tokens_file"
        )
    })
}

/// The bearer token of a request, if it sent one.
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// The 401 answer: the host's error shape (`code`, `message`) plus OpenAI's (`type`, `param`),
/// so both kinds of clients read it, and the `WWW-Authenticate: Bearer` challenge.
fn unauthorized(message: &str) -> Response {
    let body = serde_json::json!({"error": {
        "message": message, "type": "authentication_error", "param": null, "code": "unauthorized",
    }});
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"gateway-host\"")],
        axum::Json(body),
    )
        .into_response()
}

/// Middleware: 401 `unauthorized` (with `WWW-Authenticate: Bearer`) unless the request
/// carries an accepted token, the path is open, or authentication is off.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let auth = state.auth();
    if !auth.is_enabled() || auth.is_open_path(request.uri().path()) {
        return next.run(request).await;
    }
    match bearer(&request) {
        Some(token) if auth.accepts(token) => next.run(request).await,
        presented => {
            let message = if presented.is_some() {
                "invalid bearer token"
            } else {
                "missing bearer token: send Authorization: Bearer <token>"
            };
            state.metrics().error("", "unauthorized");
            unauthorized(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tokens;

    #[test]
    fn accepts_only_configured_tokens_and_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# ops\n\nfile-token-1\n  file-token-2  \n").unwrap();
        let auth = Auth::from_config(&AuthConfig {
            tokens: Tokens(vec!["env-token".into()]),
            tokens_file: Some(file),
            public_metrics: false,
        })
        .unwrap();
        assert_eq!(auth.token_count(), 3);
        for ok in ["env-token", "file-token-1", "file-token-2"] {
            assert!(auth.accepts(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "env-toke", "env-token2", "# ops", "FILE-TOKEN-1"] {
            assert!(!auth.accepts(bad.as_bytes()), "{bad}");
        }
        assert!(!format!("{auth:?}").contains("env-token"));
        assert!(!Auth::default().is_enabled());
        let denied = Auth::deny_all(&AuthError::BadToken(1));
        assert!(denied.is_enabled() && !denied.accepts(b""));
    }

    #[test]
    fn missing_file_and_bad_tokens_are_errors() {
        let missing = AuthConfig {
            tokens_file: Some("/nonexistent/tokens".into()),
            ..AuthConfig::default()
        };
        let err = Auth::from_config(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/tokens"), "{err}");
        let spaced = AuthConfig {
            tokens: Tokens(vec!["ok".into(), "has space".into()]),
            ..AuthConfig::default()
        };
        let err = Auth::from_config(&spaced).unwrap_err().to_string();
        assert!(err.contains("#2") && !err.contains("has space"), "{err}");
    }

    #[test]
    fn a_tokens_file_or_entry_without_a_token_is_an_error_not_auth_off() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["", "\n  \n", "# only a comment\n"] {
            let file = dir.path().join("tokens");
            std::fs::write(&file, text).unwrap();
            let config = AuthConfig {
                tokens: Tokens(vec!["env-token".into()]),
                tokens_file: Some(file.clone()),
                ..AuthConfig::default()
            };
            let err = Auth::from_config(&config).unwrap_err().to_string();
            assert!(
                err.contains("holds no token") && err.contains("tokens"),
                "{err}"
            );
        }
        for list in [r#"[""]"#, r#"["ok", "  "]"#] {
            let err = serde_json::from_str::<Tokens>(list)
                .unwrap_err()
                .to_string();
            assert!(err.contains("must not be empty"), "{list}: {err}");
        }
        let unset: Tokens = serde_json::from_str("\"\"").unwrap();
        assert!(
            unset.0.is_empty(),
            "an empty variable still means no tokens"
        );
    }

    #[test]
    fn warns_only_for_open_non_loopback_binds() {
        let open = Auth::default();
        let closed = Auth::from_config(&AuthConfig {
            tokens: Tokens(vec!["t".into()]),
            ..AuthConfig::default()
        })
        .unwrap();
        let public: SocketAddr = "0.0.0.0:8787".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8787".parse().unwrap();
        assert!(exposure_warning(public, &open).is_some());
        assert!(exposure_warning(public, &closed).is_none());
        assert!(exposure_warning(local, &open).is_none());
        assert!(exposure_warning("[::1]:1".parse().unwrap(), &open).is_none());
    }
}
