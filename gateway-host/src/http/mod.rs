//! The HTTP layer (axum): the router and the host's own routes (conversation streaming,
//! profiles, gateways, health, metrics), the session API ([`sessions`]), the OpenAI-compatible
//! facade ([`openai`]), client authentication ([`auth`]), cross-site request rules
//! ([`origin`]), SSE writing ([`sse`]), request reading ([`extract`]), the one error type with
//! its two renderings ([`error`]), and the connection handling that serves it all ([`server`]).

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod extract;
pub(crate) mod openai;
pub(crate) mod origin;
pub(crate) mod server;
pub(crate) mod sessions;
pub(crate) mod sse;

pub use error::ApiError;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use gateway_core::Event;
use serde_json::json;

use crate::state::AppState;
use crate::turn::{self, TurnRequest};
use extract::{path_param, session_key, BodyLimit, JsonBody};

/// Content type of newline-delimited JSON event streams.
pub const NDJSON: &str = "application/x-ndjson";
/// Time allowed for each gateway's `health()` in `GET /v1/gateways`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The host's router.
pub fn app(state: AppState) -> Router {
    let limit = state.config().limits.max_body_bytes;
    Router::new()
        .route("/v1/conversation", post(conversation))
        .route("/v1/profiles", get(list_profiles))
        .route("/v1/profiles/{id}", get(get_profile))
        .route("/v1/gateways", get(list_gateways))
        .route(
            "/v1/sessions/{key}",
            delete(delete_session).get(crate::http::sessions::get_session),
        )
        .route(
            "/v1/sessions/{key}/interrupt",
            post(crate::http::sessions::interrupt),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::http::openai::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::Extension(BodyLimit(limit)))
        // Outermost: a request without a valid token is refused before its body is read.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::auth::require,
        ))
        // After the auth layer: the console's files are public (they hold no secrets).
        .merge(crate::console::routes())
        // Outermost of all: foreign web origins are refused, allowed ones' preflights answered.
        .layer(axum::middleware::from_fn_with_state(
            crate::http::origin::AllowedOrigins::from_config(&state.config().cors),
            crate::http::origin::check,
        ))
        .with_state(state)
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON))
}

async fn conversation(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<TurnRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let turn = turn::start(&state, request, started).await?;
    if wants_ndjson(&headers) {
        let body = turn.events.map(|event| {
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            Ok::<_, Infallible>(Bytes::from(line))
        });
        return Ok((
            [
                (header::CONTENT_TYPE, NDJSON),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            axum::body::Body::from_stream(body),
        )
            .into_response());
    }
    // One SSE frame per event: `event: <type>` and `data: <event json>`.
    let encode = |event: Event, out: &mut BytesMut| {
        crate::http::sse::json_frame(out, Some(event.kind()), &event);
    };
    let keep_alive = Duration::from_secs(state.config().keepalive_secs);
    Ok(crate::http::sse::response(turn.events, encode, keep_alive))
}

async fn list_profiles(State(state): State<AppState>) -> Json<serde_json::Value> {
    let profiles: Vec<_> = state
        .profiles()
        .iter()
        .map(|p| {
            json!({
                "id": p.id, "name": p.name, "gateway_id": p.gateway_id,
                "model": p.model, "file": p.file,
            })
        })
        .collect();
    Json(json!({ "profiles": profiles }))
}

async fn get_profile(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = path_param(id)?;
    let profile = turn::find_profile(&state, Some(&id))?;
    Ok(Json((*profile.raw).clone()))
}

/// Descriptions of every instance for `GET /v1/gateways` (health probed concurrently).
pub async fn gateways_json(state: &AppState) -> serde_json::Value {
    let probes = state.instances().iter().map(|g| async move {
        let configured = g.is_configured();
        let health = match &configured {
            Ok(()) => tokio::time::timeout(HEALTH_TIMEOUT, g.health())
                .await
                .unwrap_or_else(|_| gateway_core::Health::down("health probe timed out")),
            Err(e) => gateway_core::Health::down(e.to_string()),
        };
        json!({
            "id": g.id(),
            "kind": g.kind(),
            "configured": configured.is_ok(),
            "reason": configured.err().map(|e| e.to_string()),
            "healthy": health.healthy,
            "latency_ms": health.latency_ms,
            "capabilities": g.capabilities(),
            "default_model": g.default_model(),
        })
    });
    let mut list = futures::future::join_all(probes).await;
    list.extend(state.instances().failures().map(|(id, f)| {
        json!({
            "id": id, "kind": f.kind, "configured": false, "reason": f.reason,
            "healthy": false, "latency_ms": null, "capabilities": [], "default_model": null,
        })
    }));
    json!({ "gateways": list })
}

async fn list_gateways(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(gateways_json(&state).await)
}

/// `DELETE /v1/sessions/{key}`: 204 when the session existed, 404 when it did not.
async fn delete_session(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let key = session_key(path_param(key)?, "key")?;
    if state.store().clear(&key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            code: "unknown_session",
            message: "no such session".into(),
        })
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "not_found",
        message: "no such route".into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
