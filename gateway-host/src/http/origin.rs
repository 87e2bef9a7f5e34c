//! Cross-site requests. Browsers send `Origin` on every cross-origin request (and on
//! same-origin ones that change state); clients that are not browsers (curl, SDKs, servers)
//! send none and are not concerned. A request with an `Origin` is served when
//!
//! - the origin is listed in `cors.allowed_origins` (its answers then carry
//!   `Access-Control-Allow-Origin`, and its CORS preflights are answered), or
//! - it is the host's own origin: the `Origin`'s host and port equal the request's `Host`
//!   header (the scheme is not compared, so a TLS-terminating proxy that keeps `Host` works).
//!   This is how the console page served at `/` calls the API.
//!
//! Anything else, `Origin: null` included, is refused with 403 `origin_not_allowed` before
//! authentication and before the body is read. With JSON-only bodies (`extract.rs`), no page
//! can make a browser send a turn without a preflight this check refuses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::config::server::normalize_origin;
use crate::config::CorsConfig;

/// Methods a preflight may ask for.
const ALLOW_METHODS: &str = "GET, POST, DELETE";
/// Request headers a cross-origin caller may send.
const ALLOW_HEADERS: &str = "authorization, content-type, accept, x-session-key";
/// Response headers a cross-origin caller may read besides the simple ones.
const EXPOSE_HEADERS: &str = "retry-after";
/// Seconds a browser may cache a preflight's answer.
const MAX_AGE: &str = "600";
/// Longest `Origin` echoed in an error message.
const MAX_SHOWN: usize = 100;

/// The configured origins, in the form [`normalize_origin`] gives.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// The origins of `[cors]` (invalid ones were refused by the config's validation).
    pub fn from_config(config: &CorsConfig) -> Arc<Self> {
        let list = config
            .allowed_origins
            .iter()
            .filter_map(|o| normalize_origin(o))
            .collect();
        Arc::new(Self(list))
    }
}

/// How a request's `Origin` is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// No `Origin`, or the host's own.
    Own,
    /// Listed in `cors.allowed_origins`.
    Allowed,
    /// Any other.
    Refused,
}

fn judge(allowed: &AllowedOrigins, headers: &HeaderMap) -> Verdict {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Verdict::Own;
    };
    let Some(origin) = origin.to_str().ok().and_then(normalize_origin) else {
        return Verdict::Refused;
    };
    if allowed.0.contains(&origin) {
        return Verdict::Allowed;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match host {
        Some(host) if is_same_origin(&origin, host) => Verdict::Own,
        _ => Verdict::Refused,
    }
}

/// True when the normalized `origin` names the host the request was sent to (`Host`), the
/// scheme's default port implied on either side.
fn is_same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.trim().to_ascii_lowercase();
    authority == host.strip_suffix(default_port).unwrap_or(&host)
}

/// The middleware: refuse foreign origins, answer allowed origins' preflights, mark allowed
/// origins' answers.
pub async fn check(
    State(allowed): State<Arc<AllowedOrigins>>,
    request: Request,
    next: Next,
) -> Response {
    match judge(&allowed, request.headers()) {
        Verdict::Own => next.run(request).await,
        Verdict::Refused => refuse(request.headers()),
        Verdict::Allowed => {
            let origin = request.headers().get(header::ORIGIN).cloned();
            let preflight = request.method() == Method::OPTIONS
                && request
                    .headers()
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
            let mut response = if preflight {
                preflight_answer()
            } else {
                next.run(request).await
            };
            if let Some(origin) = origin {
                allow(response.headers_mut(), origin);
            }
            response
        }
    }
}

fn refuse(headers: &HeaderMap) -> Response {
    let shown = headers
        .get(header::ORIGIN)
        .map(|o| {
            String::from_utf8_lossy(o.as_bytes())
                .chars()
                .take(MAX_SHOWN)
                .collect()
        })
        .unwrap_or_default();
    tracing::debug!(origin = %shown, "request from a web origin that is not allowed");
    ApiError::OriginNotAllowed(shown).into_response()
}

fn preflight_answer() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    response
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(allowed: &[&str], origin: Option<&str>, host: Option<&str>) -> Verdict {
        let config = CorsConfig {
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
        };
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().expect("header"));
        }
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().expect("header"));
        }
        judge(&AllowedOrigins::from_config(&config), &headers)
    }

    #[test]
    fn origins_are_judged_against_the_list_and_the_host() {
        let local = Some("127.0.0.1:8787");
        assert_eq!(verdict(&[], None, local), Verdict::Own);
        assert_eq!(
            verdict(&[], Some("http://127.0.0.1:8787"), local),
            Verdict::Own
        );
        assert_eq!(
            verdict(&[], Some("https://gw.example"), Some("GW.example:443")),
            Verdict::Own
        );
        assert_eq!(
            verdict(&[], Some("http://evil.example"), local),
            Verdict::Refused
        );
        assert_eq!(
            verdict(&[], Some("http://127.0.0.1:9999"), local),
            Verdict::Refused
        );
        assert_eq!(verdict(&[], Some("null"), local), Verdict::Refused);
        assert_eq!(
            verdict(&[], Some("http://127.0.0.1:8787"), None),
            Verdict::Refused
        );
        let app = ["https://app.example"];
        assert_eq!(
            verdict(&app, Some("https://app.example"), local),
            Verdict::Allowed
        );
        assert_eq!(
            verdict(&app, Some("http://app.example"), local),
            Verdict::Refused
        );
    }
}
