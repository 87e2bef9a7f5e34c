//! The OpenAI-compatible facade: `POST /v1/chat/completions` with `model` naming a profile
//! (streamed or not), `GET /v1/models` and `GET /v1/models/{id}` listing profiles as models.
//! Turns go through the same pipeline as `/v1/conversation` ([`crate::turn`]) and requests
//! are read and checked as there; errors are the same [`ApiError`]s rendered in OpenAI's shape
//! ([`OpenAiError`]). The wire format is described in `docs/openai-api.md`.

mod answer;
mod messages;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use gateway_core::{ChatMessage, Role};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, OpenAiError};
use super::extract::{path_param, session_key, JsonBody};
use crate::state::AppState;
use crate::turn::{self, TurnOptions, TurnRequest};
use answer::Meta;

/// Request header that switches on server-side memory under this session key.
pub const SESSION_KEY_HEADER: &str = "x-session-key";
/// `owned_by` of every model in `GET /v1/models`.
pub const OWNED_BY: &str = "gateway-host";

/// The facade's routes, merged into [`crate::app`].
pub fn routes() -> Router<AppState> {
    let created = unix_now();
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route(
            "/v1/models",
            get(move |State(state): State<AppState>| async move { list_models(&state, created) }),
        )
        .route(
            "/v1/models/{id}",
            get(
                move |State(state): State<AppState>, id: Result<Path<String>, PathRejection>| async move {
                    get_model(&state, id, created)
                },
            ),
        )
}

/// The body of `POST /v1/chat/completions`: the fields the host uses itself, and `extra`,
/// every other field (`tools`, `tool_choice`, `response_format`, `stop`, `seed`, vendor keys,
/// ...), which goes to the upstream unchanged.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    /// Checked and read by [`messages`].
    #[serde(default)]
    messages: Option<Vec<Value>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    user: Option<String>,
    /// Extension: `/v1/conversation`'s `system_prompt` (`"default"`, `"none"` or a text).
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// A validated request, ready for the turn pipeline.
struct Plan {
    profile: String,
    request: TurnRequest,
    options: TurnOptions,
    stream: bool,
    include_usage: bool,
}

impl ChatRequest {
    /// Checks the request, parameter by parameter in OpenAI's order, and turns it into a
    /// turn of the profile named by `model`.
    fn plan(self, state: &AppState, headers: &HeaderMap) -> Result<Plan, ApiError> {
        let profile = model_profile(state, self.model.as_deref())?;
        let messages = messages::read_all(self.messages)?;
        check_n(self.n)?;
        let max_tokens = max_tokens(self.max_completion_tokens, self.max_tokens)?;
        check_temperature(self.temperature)?;
        let request = TurnRequest {
            profile: Some(profile.clone()),
            system_prompt: self.system_prompt,
            // The wire format has no place for sentence events.
            sentences: Some(false),
            ..TurnRequest::default()
        };
        let options = TurnOptions {
            conversation: None,
            max_tokens,
            temperature: self.temperature,
            extra: self.extra,
            ..TurnOptions::default()
        };
        let memory = memory_key(headers, self.user)?;
        let (request, options) = with_memory(request, options, messages, memory)?;
        Ok(Plan {
            profile,
            request,
            options,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

/// The id of the profile `model` names; a missing `model` is a 400, an unknown one a 404.
fn model_profile(state: &AppState, model: Option<&str>) -> Result<String, ApiError> {
    match model {
        Some(m) if !m.trim().is_empty() => Ok(turn::find_profile(state, Some(m))?.id.clone()),
        _ => Err(ApiError::invalid(
            Some("missing_required_parameter"),
            Some("model"),
            "you must provide a model parameter: the id of a profile (GET /v1/models)",
        )),
    }
}

/// Only one choice is offered.
fn check_n(n: Option<u32>) -> Result<(), ApiError> {
    match n.filter(|&n| n != 1) {
        Some(n) => Err(ApiError::invalid(
            Some("invalid_value"),
            Some("n"),
            format!("n = {n} is not supported: this endpoint returns one choice"),
        )),
        None => Ok(()),
    }
}

/// The answer length: `max_completion_tokens`, else the older `max_tokens`; at least 1.
fn max_tokens(completion: Option<u32>, legacy: Option<u32>) -> Result<Option<u32>, ApiError> {
    let (max_tokens, param) = match (completion, legacy) {
        (Some(v), _) => (Some(v), "max_completion_tokens"),
        (None, v) => (v, "max_tokens"),
    };
    if max_tokens == Some(0) {
        return Err(ApiError::invalid(
            Some("invalid_value"),
            Some(param),
            format!("{param} must be at least 1"),
        ));
    }
    Ok(max_tokens)
}

/// OpenAI's temperature range, 0 to 2.
fn check_temperature(temperature: Option<f32>) -> Result<(), ApiError> {
    match temperature {
        Some(t) if !(0.0..=2.0).contains(&t) => Err(ApiError::invalid(
            Some("invalid_value"),
            Some("temperature"),
            format!("temperature must be between 0 and 2, got {t}"),
        )),
        _ => Ok(()),
    }
}

/// Without a session key the client's whole conversation is the turn. With one
/// (server-side memory) the turn is what the client adds to the session's history (its new
/// question, or the results of the calls the history ends with; see [`messages::new_input`]).
fn with_memory(
    mut request: TurnRequest,
    options: TurnOptions,
    messages: Vec<ChatMessage>,
    key: Option<String>,
) -> Result<(TurnRequest, TurnOptions), ApiError> {
    let Some(key) = key else {
        let options = TurnOptions {
            conversation: Some(messages),
            ..options
        };
        return Ok((request, options));
    };
    let input = messages::new_input(messages)?;
    request.message = input
        .iter()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.to_string())
        .unwrap_or_default();
    request.session_key = Some(key);
    let options = TurnOptions {
        input: Some(input),
        ..options
    };
    Ok((request, options))
}

/// The session key for server-side memory: the `X-Session-Key` header, else `user`.
fn memory_key(headers: &HeaderMap, user: Option<String>) -> Result<Option<String>, ApiError> {
    let header = match headers.get(SESSION_KEY_HEADER).map(|v| v.to_str()) {
        Some(Ok(v)) => Some(v.trim()).filter(|v| !v.is_empty()),
        Some(Err(_)) => {
            return Err(ApiError::invalid(
                Some("invalid_value"),
                Some("X-Session-Key"),
                "the X-Session-Key header must be plain ASCII",
            ))
        }
        None => None,
    };
    let (key, param) = match header {
        Some(key) => (key.to_string(), "X-Session-Key"),
        None => (user.unwrap_or_default(), "user"),
    };
    if key.is_empty() {
        return Ok(None);
    }
    session_key(key, param).map(Some)
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<ChatRequest>, ApiError>,
) -> Result<Response, OpenAiError> {
    let started = Instant::now();
    let JsonBody(request) = body?;
    let plan = request.plan(&state, &headers)?;
    let turn = turn::start_with(&state, plan.request, plan.options, started).await?;
    let meta = Meta::new(plan.profile);
    if plan.stream {
        let keep_alive = Duration::from_secs(state.config().keepalive_secs);
        Ok(answer::stream(
            turn.events,
            meta,
            plan.include_usage,
            keep_alive,
        ))
    } else {
        answer::complete(turn.events, meta).await
    }
}

fn model_json(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": OWNED_BY})
}

fn list_models(state: &AppState, created: u64) -> Json<Value> {
    let data: Vec<Value> = state
        .profiles()
        .iter()
        .map(|p| model_json(&p.id, created))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

fn get_model(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
    created: u64,
) -> Result<Json<Value>, OpenAiError> {
    let id = path_param(id)?;
    let profile = turn::find_profile(state, Some(&id))?;
    Ok(Json(model_json(&profile.id, created)))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
