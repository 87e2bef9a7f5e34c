//! The OpenAI-compatible facade: `POST /v1/chat/completions` with `model` naming a profile
//! (streamed or not), `GET /v1/models` and `GET /v1/models/{id}` listing profiles as models.
//! Turns go through the same pipeline as `/v1/conversation` ([`crate::turn`]) and requests
//! are read and checked as there; errors are the same [`ApiError`]s rendered in OpenAI's shape
//! ([`OpenAiError`]). The wire format is described in `docs/openai-api.md`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{BufMut, BytesMut};
use futures::future;
use futures::stream::{self, StreamExt};
use gateway_core::{ChatMessage, Event, Role, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{ApiError, OpenAiError};
use super::extract::{path_param, session_key, JsonBody};
use super::sse;
use crate::state::AppState;
use crate::turn::{self, TurnEvents, TurnOptions, TurnRequest};

/// Request header that switches on server-side memory under this session key.
pub const SESSION_KEY_HEADER: &str = "x-session-key";
/// `owned_by` of every model in `GET /v1/models`.
pub const OWNED_BY: &str = "gateway-host";

/// OpenAI's name for why an answer ended: the upstream's `length`, `content_filter` and
/// `tool_calls` pass through; anything else (`stop`, `eos`, none) is `stop`.
fn openai_finish_reason(upstream: Option<&str>) -> &'static str {
    match upstream {
        Some("length") => "length",
        Some("content_filter") => "content_filter",
        Some("tool_calls") => "tool_calls",
        _ => "stop",
    }
}

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

/// The body of `POST /v1/chat/completions`; fields not listed are accepted and ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<WireMessage>>,
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
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Value>,
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
        let messages = chat_messages(self.messages)?;
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

/// The conversation: present, not empty, every message valid.
fn chat_messages(wire: Option<Vec<WireMessage>>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(wire) = wire else {
        return Err(ApiError::invalid(
            Some("missing_required_parameter"),
            Some("messages"),
            "you must provide a messages parameter",
        ));
    };
    if wire.is_empty() {
        return Err(ApiError::invalid(
            Some("empty_array"),
            Some("messages"),
            "messages must hold at least one message",
        ));
    }
    wire.into_iter()
        .enumerate()
        .map(|(i, m)| m.into_chat(i))
        .collect()
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
/// (server-side memory) the last user message is the turn and history comes from the store.
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
    let Some(last_user) = messages.into_iter().rev().find(|m| m.role == Role::User) else {
        return Err(ApiError::invalid(
            Some("invalid_value"),
            Some("messages"),
            "with server-side memory (user or X-Session-Key) messages must hold a user message",
        ));
    };
    request.message = last_user.content.to_string();
    request.session_key = Some(key);
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

impl WireMessage {
    fn into_chat(self, i: usize) -> Result<ChatMessage, ApiError> {
        let param = format!("messages[{i}]");
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "function" => {
                return Err(ApiError::invalid(
                    Some("unsupported_value"),
                    Some(&format!("{param}.role")),
                    format!(
                        "{param}: role '{}' is not supported: this endpoint has no tool calling",
                        self.role
                    ),
                ))
            }
            other => {
                return Err(ApiError::invalid(
                    Some("invalid_value"),
                    Some(&format!("{param}.role")),
                    format!(
                        "{param}: unknown role '{other}' (expected system, developer, user or \
                         assistant)"
                    ),
                ))
            }
        };
        let has_tool_calls = match &self.tool_calls {
            None | Some(Value::Null) => false,
            Some(Value::Array(calls)) => !calls.is_empty(),
            Some(_) => true,
        };
        if has_tool_calls {
            return Err(ApiError::invalid(
                Some("unsupported_value"),
                Some(&format!("{param}.tool_calls")),
                format!("{param}: tool_calls are not supported: this endpoint has no tool calling"),
            ));
        }
        let content = match self.content {
            Some(Value::String(text)) => text,
            Some(Value::Array(parts)) => text_of_parts(&param, parts)?,
            None if role == Role::Assistant => String::new(),
            None => {
                return Err(ApiError::invalid(
                    Some("missing_required_parameter"),
                    Some(&format!("{param}.content")),
                    format!("{param}.content is required"),
                ))
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    Some("invalid_type"),
                    Some(&format!("{param}.content")),
                    format!("{param}.content must be a string or an array of text parts"),
                ))
            }
        };
        Ok(ChatMessage::new(role, content))
    }
}

/// The text of OpenAI's array-of-parts content: `text` parts joined by newlines; any other
/// part type is rejected.
fn text_of_parts(param: &str, parts: Vec<Value>) -> Result<String, ApiError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        let at = format!("{param}.content[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part.get("text").and_then(Value::as_str) {
                Some(text) => texts.push(text.to_string()),
                None => {
                    return Err(ApiError::invalid(
                        Some("invalid_type"),
                        Some(&format!("{at}.text")),
                        format!("{at}: a text part needs a string 'text'"),
                    ))
                }
            },
            Some(other) => {
                return Err(ApiError::invalid(
                    Some("unsupported_content_part"),
                    Some(&format!("{at}.type")),
                    format!(
                        "{at}: content part type '{other}' is not supported; only 'text' parts \
                         are accepted"
                    ),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    Some("invalid_type"),
                    Some(&format!("{at}.type")),
                    format!("{at}: a content part needs a string 'type'"),
                ))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// What every chunk or completion of one response repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    /// A content chunk's JSON up to the content string, rendered once per response: a
    /// content chunk is then this, the escaped text and a constant tail.
    delta_head: String,
}

/// The tail of a content chunk after the content string, without and with `usage: null`.
const DELTA_TAIL: [&str; 2] = [
    r#"},"logprobs":null,"finish_reason":null}]}"#,
    r#"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
];

impl Meta {
    fn new(model: String) -> Self {
        let random: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(24)
            .collect();
        let id = format!("chatcmpl-{random}");
        let created = unix_now();
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let delta_head = format!(
            r#"{{"id":{},"object":"chat.completion.chunk","created":{created},"model":{},"choices":[{{"index":0,"delta":{{"content":"#,
            json(&id),
            json(&model)
        );
        Self {
            id,
            created,
            model,
            delta_head,
        }
    }

    /// Appends the SSE frames of one turn event: a content chunk from the pre-rendered head,
    /// anything else through [`frames`](Self::frames).
    fn write_frames(&self, event: Event, include_usage: bool, out: &mut BytesMut) {
        match event {
            Event::Delta { text } if !text.is_empty() => {
                out.reserve(self.delta_head.len() + text.len() + 80);
                out.put_slice(b"data: ");
                out.put_slice(self.delta_head.as_bytes());
                // Writing into memory cannot fail.
                let _ = serde_json::to_writer(out.writer(), &text);
                out.put_slice(DELTA_TAIL[usize::from(include_usage)].as_bytes());
                out.put_slice(b"\n\n");
            }
            other => {
                for data in self.frames(other, include_usage) {
                    sse::frame(out, None, data.as_bytes());
                }
            }
        }
    }

    /// One `chat.completion.chunk` as JSON text. `usage`: absent without `include_usage`,
    /// else `null` or the usage object.
    fn chunk(&self, choice: Option<ChunkChoice<'_>>, usage: Option<Option<Usage>>) -> String {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: choice.into_iter().collect(),
            usage,
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    /// The `data:` payloads one turn event becomes.
    fn frames(&self, event: Event, include_usage: bool) -> Vec<String> {
        let usage_null = include_usage.then_some(None);
        match event {
            Event::Delta { text } if !text.is_empty() => {
                vec![self.chunk(
                    Some(ChunkChoice::delta(None, Some(&text), None)),
                    usage_null,
                )]
            }
            Event::TextDone {
                usage,
                finish_reason,
                ..
            } => {
                let finish = openai_finish_reason(finish_reason.as_deref());
                let mut frames = vec![self.chunk(
                    Some(ChunkChoice::delta(None, None, Some(finish))),
                    usage_null,
                )];
                if let (true, Some(usage)) = (include_usage, usage) {
                    frames.push(self.chunk(None, Some(Some(usage))));
                }
                frames.push("[DONE]".into());
                frames
            }
            Event::Error { error } => vec![OpenAiError(ApiError::Upstream(error)).body_text()],
            _ => Vec::new(),
        }
    }

    /// The `chat.completion` object of a non-streamed answer.
    fn completion(
        &self,
        content: &str,
        usage: Option<Usage>,
        finish_reason: &'static str,
    ) -> String {
        let completion = Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: [CompletionChoice {
                index: 0,
                message: CompletionMessage {
                    role: "assistant",
                    content,
                    refusal: None,
                },
                logprobs: None,
                finish_reason,
            }],
            usage,
        };
        serde_json::to_string(&completion).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

impl<'a> ChunkChoice<'a> {
    fn delta(
        role: Option<&'static str>,
        content: Option<&'a str>,
        finish_reason: Option<&'static str>,
    ) -> Self {
        Self {
            index: 0,
            delta: Delta { role, content },
            logprobs: None,
            finish_reason,
        }
    }
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
        Ok(stream_response(
            &state,
            turn.events,
            meta,
            plan.include_usage,
        ))
    } else {
        complete(turn.events, meta).await
    }
}

/// SSE: a role chunk at once, content chunks, a finish chunk, the usage chunk when asked for
/// and known, `[DONE]`; a failed turn ends with an `{"error": ...}` chunk and no `[DONE]`.
fn stream_response(
    state: &AppState,
    events: TurnEvents,
    meta: Meta,
    include_usage: bool,
) -> Response {
    // `None` stands for the role chunk, sent before the first event.
    let items = stream::once(future::ready(None)).chain(events.map(Some));
    let encode = move |item: Option<Event>, out: &mut BytesMut| match item {
        None => {
            let role = meta.chunk(
                Some(ChunkChoice::delta(Some("assistant"), Some(""), None)),
                include_usage.then_some(None),
            );
            sse::frame(out, None, role.as_bytes());
        }
        Some(event) => meta.write_frames(event, include_usage, out),
    };
    let keep_alive = Duration::from_secs(state.config().keepalive_secs);
    sse::response(items, encode, keep_alive)
}

/// Non-streamed: wait for the end of the turn and answer one `chat.completion` object.
async fn complete(mut events: TurnEvents, meta: Meta) -> Result<Response, OpenAiError> {
    while let Some(event) = events.next().await {
        match event {
            Event::TextDone {
                response,
                usage,
                finish_reason,
                ..
            } => {
                let finish = openai_finish_reason(finish_reason.as_deref());
                let body = meta.completion(&response, usage, finish);
                return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
            }
            Event::Error { error } => return Err(ApiError::Upstream(error).into()),
            _ => {}
        }
    }
    Err(ApiError::Upstream("the turn ended without an answer".into()).into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn error_of(body: Value) -> ApiError {
        let request: ChatRequest = serde_json::from_value(body).unwrap();
        let messages = request.messages.unwrap();
        messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.into_chat(i))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err()
    }

    #[test]
    fn text_parts_are_joined_and_other_parts_rejected() {
        let m: WireMessage = serde_json::from_value(json!({"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}))
        .unwrap();
        assert_eq!(&*m.into_chat(0).unwrap().content, "a\nb");
        let e = error_of(json!({"messages": [{"role": "user", "content": "x"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}));
        let e = OpenAiError(e);
        assert_eq!(e.parts().status, StatusCode::BAD_REQUEST);
        assert_eq!(e.parts().param, Some("messages[1].content[0].type"));
        assert!(
            e.to_string().contains("'image_url' is not supported"),
            "{e}"
        );
    }

    #[test]
    fn roles_map_and_tools_are_rejected() {
        let m: WireMessage =
            serde_json::from_value(json!({"role": "developer", "content": "d"})).unwrap();
        assert_eq!(m.into_chat(0).unwrap().role, Role::System);
        let code_and_param = |body| {
            let e = OpenAiError(error_of(body));
            (e.parts().code, e.parts().param.map(str::to_string))
        };
        let (_, param) = code_and_param(json!({"messages": [{"role": "tool", "content": "r"}]}));
        assert_eq!(param.as_deref(), Some("messages[0].role"));
        let (_, param) = code_and_param(json!({"messages": [{"role": "assistant",
            "content": null, "tool_calls": [{"id": "1"}]}]}));
        assert_eq!(param.as_deref(), Some("messages[0].tool_calls"));
        let (code, _) = code_and_param(json!({"messages": [{"role": "user"}]}));
        assert_eq!(code, "missing_required_parameter");
    }

    #[test]
    fn content_frames_equal_the_serialised_chunk() {
        let meta = Meta::new("m\"odel".into());
        for text in ["hi", "line\nbreak \"quoted\" é 🙂", "\u{1}"] {
            for include_usage in [false, true] {
                let mut out = BytesMut::new();
                meta.write_frames(Event::delta(text), include_usage, &mut out);
                let [frame] = &meta.frames(Event::delta(text), include_usage)[..] else {
                    panic!("one frame");
                };
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    format!("data: {frame}\n\n")
                );
            }
        }
    }

    #[test]
    fn chunk_ids_are_stable_per_response_and_random_across() {
        let a = Meta::new("p".into());
        let b = Meta::new("p".into());
        assert!(
            a.id.starts_with("chatcmpl-") && a.id.len() == 33,
            "{}",
            a.id
        );
        assert_ne!(a.id, b.id);
        let frames = a.frames(Event::delta("hi"), false);
        let chunk: Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(chunk["id"], a.id.as_str());
        assert!(chunk.get("usage").is_none());
    }
}
