//! The HTTP API (axum): conversation streaming, profiles, gateways, sessions, health, metrics.

pub(crate) mod auth;
pub(crate) mod openai;
pub(crate) mod sessions;
pub(crate) mod sse;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use gateway_core::Event;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::state::AppState;
use crate::turn::{self, is_valid_session_key, TurnError, TurnRequest};

/// Content type of newline-delimited JSON event streams.
pub const NDJSON: &str = "application/x-ndjson";
/// Time allowed for each gateway's `health()` in `GET /v1/gateways`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// An API error, answered as `{"error": {"code", "message"}}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON or an invalid value.
    #[error("{message}")]
    BadRequest {
        /// Stable code (`invalid_json`, `bad_request`).
        code: &'static str,
        /// Details.
        message: String,
    },
    /// 422: well-formed JSON of the wrong shape.
    #[error("{0}")]
    Unprocessable(String),
    /// 413: body over `limits.max_body_bytes`.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 404.
    #[error("{message}")]
    NotFound {
        /// Stable code (`unknown_profile`, `unknown_session`, `not_found`).
        code: &'static str,
        /// Details.
        message: String,
    },
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the request does not fit the current state (e.g. nothing to interrupt).
    #[error("{message}")]
    Conflict {
        /// Stable code (`not_in_flight`).
        code: &'static str,
        /// Details.
        message: String,
    },
    /// 503: the gateway or the store cannot serve.
    #[error("{message}")]
    Unavailable {
        /// Stable code (`gateway_unavailable`, `store_unavailable`).
        code: &'static str,
        /// Details, never a secret.
        message: String,
    },
    /// 503 `overloaded`/`shutting_down` or 429 `session_busy`, with `Retry-After`.
    #[error("{message}")]
    Refused {
        /// 503 or 429.
        status: StatusCode,
        /// Stable code.
        code: &'static str,
        /// Details.
        message: String,
        /// Seconds sent in `Retry-After`.
        retry_after_secs: u64,
    },
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Refused { status, code, .. } => (*status, code),
        }
    }

    /// A 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "bad_request",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = json!({"error": {"code": code, "message": self.to_string()}});
        let mut response = (status, Json(body)).into_response();
        if let ApiError::Refused {
            retry_after_secs, ..
        } = &self
        {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, (*retry_after_secs).into());
        }
        response
    }
}

impl From<TurnError> for ApiError {
    fn from(e: TurnError) -> Self {
        let message = e.to_string();
        match e {
            TurnError::BadRequest(_) => ApiError::bad_request(message),
            TurnError::UnknownProfile(_) => ApiError::NotFound {
                code: "unknown_profile",
                message,
            },
            TurnError::GatewayUnavailable { .. } | TurnError::Store(_) => ApiError::Unavailable {
                code: e.code(),
                message,
            },
            TurnError::Refused(ref refusal) => ApiError::Refused {
                status: refusal.status(),
                code: e.code(),
                message,
                retry_after_secs: refusal.retry_after_secs(),
            },
        }
    }
}

impl From<gateway_core::StoreError> for ApiError {
    fn from(e: gateway_core::StoreError) -> Self {
        ApiError::Unavailable {
            code: "store_unavailable",
            message: e.to_string(),
        }
    }
}

/// A JSON body extractor whose rejections are [`ApiError`]s (never axum's plain text). It does
/// not insist on a `Content-Type` header.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty (or all-whitespace) body is `None`.
#[derive(Debug, Clone)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        decode_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map(|l| l.0)
        .unwrap_or_default();
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::bad_request(r.body_text())
        }
    })
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ApiError::Unprocessable(e.to_string())
        } else {
            ApiError::BadRequest {
                code: "invalid_json",
                message: format!("invalid JSON body: {e}"),
            }
        }
    })
}

/// The configured body limit, put in request extensions for error messages.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

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
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !crate::config::profile::is_valid_id(&id) {
        return Err(ApiError::bad_request(
            "invalid profile id (expected 1-64 of a-z, 0-9, -)",
        ));
    }
    let profile = state
        .profiles()
        .get(&id)
        .ok_or_else(|| ApiError::NotFound {
            code: "unknown_profile",
            message: format!("unknown profile '{id}'"),
        })?;
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
    let Path(key) = key.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !is_valid_session_key(&key) {
        return Err(ApiError::bad_request("invalid session key"));
    }
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
