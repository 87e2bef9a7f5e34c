//! The web console at `/`: a playground to try turns, an overview of every gateway and a
//! session inspector. Its HTML, CSS and JS (`gateway-host/console/`) are compiled into the
//! binary: no build step, no CDN, works offline.
//!
//! These routes are public (merged after the auth layer): the files hold no secrets, and the
//! page sends the token its user enters on every API call, so it can do no more than the API
//! allows that token. Every answer carries a strict Content-Security-Policy.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// The page's Content-Security-Policy: its own scripts, styles and API only; no inline code,
/// no third-party origin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("../console/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file the page loads; `index.html` is served at `/`, the rest at `/console/<name>`.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("metrics.js", JS),
    asset!("playground.js", JS),
    asset!("overview.js", JS),
    asset!("sessions.js", JS),
    asset!("icon.svg", SVG),
];

/// The console's routes, to merge into the app outside the auth layer.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move { serve("index.html", &headers) }),
        )
        .route("/console/config.json", get(config))
        .route("/console/{name}", get(asset))
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// What the page needs before its first API call: whether to ask for a token. A 401 from any
/// API route says the same.
async fn config(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "auth_required": state.auth().is_enabled(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    with_page_headers(Json(body).into_response())
}

/// One asset with its content type, an ETag and `Cache-Control: no-cache` (revalidated on each
/// load, so a new binary's files are picked up at once); 304 when the browser's copy is current.
fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::NotFound {
            code: "not_found",
            message: "no such console file".into(),
        }
        .into_response();
    };
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    with_page_headers(response)
}

/// A quoted ETag per asset (a SHA-256 prefix of its bytes), computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body.as_bytes());
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// The security and caching headers every console answer carries.
fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &str); 6] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("permissions-policy"),
            "microphone=(self), camera=(), geolocation=()",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let page = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            let named = page.contains(&format!("/console/{}", asset.name))
                || ASSETS
                    .iter()
                    .any(|a| a.body.contains(&format!("./{}", asset.name)));
            assert!(named, "{} is served but nothing loads it", asset.name);
        }
        assert_eq!(etags().len(), ASSETS.len());
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let page = ASSETS[0].body;
        assert!(!page.contains("<script>") && !page.contains(" style="));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
