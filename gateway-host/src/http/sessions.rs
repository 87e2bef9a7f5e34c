//! `GET /v1/sessions/{key}` (stored history and queue state, for debugging) and
//! `POST /v1/sessions/{key}/interrupt` (barge-in: end the running turn at what was heard).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{path_param, session_key, OptionalJsonBody};
use super::ApiError;
use crate::sessions::cluster::RequestError;
use crate::state::AppState;

/// Most messages `GET /v1/sessions/{key}` shows (the store keeps at most a profile's cap).
pub const VIEW_LIMIT: usize = 1000;

/// The optional body of `POST /v1/sessions/{key}/interrupt`.
#[derive(Debug, Default, Deserialize)]
pub struct InterruptRequest {
    /// The part of the answer the user actually heard; what was streamed when absent.
    #[serde(default)]
    pub heard: Option<String>,
}

/// The `{key}` of the path, checked.
fn key_of(key: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    session_key(path_param(key)?, "key")
}

/// `GET /v1/sessions/{key}`: `{key, backend, messages: [{role, content}], in_flight, queued,
/// streamed_chars}`. An unknown session is an empty one (200).
pub async fn get_session(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let key = key_of(key)?;
    let messages = state.store().history(&key, VIEW_LIMIT).await?;
    let view = state
        .sessions()
        .view_everywhere(&key)
        .await
        .map_err(unreachable_replica)?;
    Ok(Json(json!({
        "key": key,
        "backend": state.store().backend(),
        "messages": messages,
        "in_flight": view.in_flight,
        "queued": view.queued,
        "streamed_chars": view.streamed_chars,
    })))
}

/// `POST /v1/sessions/{key}/interrupt` with optional `{"heard": "..."}`: cuts the running
/// turn, stores what is kept, and answers `{interrupted, key, streamed_chars, heard_is_prefix,
/// stored, kept_user_message}`; 409 `not_in_flight` when no turn of the session is running.
pub async fn interrupt(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
    OptionalJsonBody(body): OptionalJsonBody<InterruptRequest>,
) -> Result<Json<Value>, ApiError> {
    let key = key_of(key)?;
    let heard = body.unwrap_or_default().heard;
    let limit = state.config().limits.max_message_chars;
    if let Some(chars) = heard.as_deref().map(|h| h.chars().count()) {
        if chars > limit {
            return Err(ApiError::bad_request(format!(
                "heard is {chars} characters long; the limit is {limit}"
            )));
        }
    }
    let sessions = state.sessions();
    let cut = sessions
        .interrupt_everywhere(state.store().as_ref(), &key, heard.as_deref())
        .await
        .map_err(unreachable_replica)?
        .ok_or_else(|| ApiError::Conflict {
            code: "not_in_flight",
            message: format!("no turn of session '{key}' is in flight"),
        })?;
    tracing::debug!(session = %key, streamed_chars = cut.streamed_chars, "turn interrupted by the API");
    if let Some(message) = cut.store_error {
        return Err(ApiError::Unavailable {
            code: "store_unavailable",
            message,
        });
    }
    Ok(Json(json!({
        "interrupted": true,
        "key": key,
        "streamed_chars": cut.streamed_chars,
        "heard_is_prefix": cut.heard_is_prefix,
        "stored": cut.kept.assistant,
        "kept_user_message": cut.kept.user,
    })))
}

/// Another replica (or Redis) could not be asked: 503.
fn unreachable_replica(error: RequestError) -> ApiError {
    let code = match error {
        RequestError::Store(_) => "store_unavailable",
        RequestError::NoAnswer(_) => "replica_unavailable",
    };
    ApiError::Unavailable {
        code,
        message: error.to_string(),
    }
}
