//! The turn pipeline, and the way to run a turn from Rust ([`start`], [`start_with`]):
//! profile → instances (primary, then fallbacks), messages = system prompt + history + user
//! message (or the turn's other new messages, or system prompt + a client-supplied
//! conversation, see [`TurnOptions`]), the
//! gateway stream made well-formed, timing and the answering gateway filled in, memory stored
//! on success.
//!
//! Inside: `failover` (a profile's gateways tried in order before the first token), `limits`
//! (admission: stream limits and the shutdown's refusal), `upstream_limit` (concurrency per
//! gateway instance), `sentences` (sentence events for TTS), `voice` (a profile's voice
//! settings) and `tool_history` (a session's history with every tool call answered).

pub(crate) mod failover;
pub(crate) mod limits;
pub(crate) mod sentences;
pub(crate) mod tool_history;
pub(crate) mod tool_loop;
pub(crate) mod upstream_limit;
pub(crate) mod voice;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::collections::VecDeque;
use std::task::{ready, Context, Poll};

use futures::future::BoxFuture;
use futures::stream::Stream;
use gateway_core::{
    CancelWatch, CancellationToken, ChatMessage, Event, EventStream, Gateway, StoreError, Timing,
    ToolCall, Turn,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::profile::{is_valid_id, Profile};
use crate::metrics::InFlight;
use crate::sessions::{QueueMode, Ticket, TurnEntry};
use crate::shutdown::SHUTDOWN_MESSAGE;
use crate::state::AppState;
use crate::tools::ToolSet;
use crate::turn::limits::{Admission, Refusal};
use crate::turn::sentences::SentenceSplitter;
use crate::turn::voice::VoiceSettings;
use failover::{Candidate, Next, Note, Observer};

/// Longest accepted session key.
pub const MAX_SESSION_KEY_LEN: usize = 128;

/// The characters a session key may hold, as error messages name them.
pub const SESSION_KEY_CHARS: &str = "A-Z, a-z, 0-9, . _ : -";

/// True for session keys of 1–128 characters from `A-Za-z0-9._:-`.
pub fn is_valid_session_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_SESSION_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The body of `POST /v1/conversation`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TurnRequest {
    /// Profile id; the configured `default_profile` when absent.
    #[serde(default)]
    pub profile: Option<String>,
    /// The user's message.
    pub message: String,
    /// Session for memory; the profile's `sessionKey` when absent.
    #[serde(default)]
    pub session_key: Option<String>,
    /// Agent id passed through to the gateway.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// `"default"`/absent: file + profile prompt; `"none"`: no system message; else used as is.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Emit `sentence` events; the profile's `voice.sentence_events` when absent.
    #[serde(default)]
    pub sentences: Option<bool>,
}

/// Inputs of a turn beyond [`TurnRequest`], for front ends other than `/v1/conversation` (the
/// OpenAI-compatible facade). The default changes nothing.
#[derive(Debug, Clone, Default)]
pub struct TurnOptions {
    /// The client's whole conversation, sent after the system prompt in place of session
    /// history + `message` (which is then ignored); such a turn reads and stores no memory.
    pub conversation: Option<Vec<ChatMessage>>,
    /// With a session: the messages that follow its history in place of `message` as plain
    /// user text (a user message with content parts, the results of the calls the history
    /// ends with), stored with the answer. `message` then only names the user's words for
    /// the session's queue.
    pub input: Option<Vec<ChatMessage>>,
    /// Answer length in tokens; overrides the profile's `llm.parameters.max_tokens`.
    pub max_tokens: Option<u32>,
    /// Sampling temperature; overrides the profile's `llm.parameters.temperature`.
    pub temperature: Option<f32>,
    /// Request fields the host does not use itself, forwarded by the gateway ([`Turn::extra`]).
    pub extra: Map<String, Value>,
}

/// Why a turn could not start. Messages are fit for clients.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The request is invalid (empty message, bad profile id or session key, ...).
    #[error("{0}")]
    BadRequest(String),
    /// A malformed profile id (not `^[a-z0-9-]+$`, or longer than 64).
    #[error("invalid profile id (expected 1-64 of a-z, 0-9, -)")]
    BadProfileId(String),
    /// No profile with this id.
    #[error("unknown profile '{0}'")]
    UnknownProfile(String),
    /// The profile's gateway cannot serve (missing key, failed build).
    #[error("{message}")]
    GatewayUnavailable {
        /// Instance id.
        gateway: String,
        /// Why, naming the missing variable but never a value.
        message: String,
    },
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stream limit or the shutdown refused the turn.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl TurnError {
    /// Stable error code for clients and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            TurnError::BadRequest(_) | TurnError::BadProfileId(_) => "bad_request",
            TurnError::UnknownProfile(_) => "unknown_profile",
            TurnError::GatewayUnavailable { .. } => "gateway_unavailable",
            TurnError::Store(_) => "store_unavailable",
            TurnError::Refused(refusal) => refusal.code(),
        }
    }
}

/// The events of a started turn: well-formed, ending with exactly one `text_done` or `error`.
/// Dropping it cancels the upstream at once.
pub type TurnEvents = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// A turn that passed validation.
pub struct StartedTurn {
    /// The profile that answers.
    pub profile: Arc<Profile>,
    /// The gateway instance tried first (the `handshake` names the one that answered).
    pub gateway: String,
    /// The event stream.
    pub events: TurnEvents,
}

/// Validate a request and start its turn. `started` is when the request arrived.
pub async fn start(
    state: &AppState,
    request: TurnRequest,
    started: Instant,
) -> Result<StartedTurn, TurnError> {
    start_with(state, request, TurnOptions::default(), started).await
}

/// [`start`] with [`TurnOptions`]: a client-supplied conversation and sampling overrides.
pub async fn start_with(
    state: &AppState,
    request: TurnRequest,
    options: TurnOptions,
    started: Instant,
) -> Result<StartedTurn, TurnError> {
    let result = prepare(state, request, options, started).await;
    if let Err(e) = &result {
        state.metrics().error("", e.code());
    }
    result
}

async fn prepare(
    state: &AppState,
    request: TurnRequest,
    options: TurnOptions,
    started: Instant,
) -> Result<StartedTurn, TurnError> {
    let config = state.config();
    check_message(&request, &options, config.limits.max_message_chars)?;
    let profile = find_profile(state, request.profile.as_deref())?;
    let candidates = candidates_for(state, &profile)?;
    let session_key = session_key_of(request.session_key, &profile, &options)?;
    let admission = admit(state, session_key.as_deref()).await?;
    let voice = VoiceSettings::of(&profile);
    let history_limit = profile
        .max_history_messages
        .unwrap_or(config.memory.max_messages);
    let user: Arc<str> = request.message.into();
    let input = options
        .input
        .unwrap_or_else(|| vec![ChatMessage::user(user.clone())]);
    let cancel = CancellationToken::new();
    let entry = TurnEntry {
        user: user.clone(),
        history_limit,
        cancel: cancel.clone(),
    };
    let ticket = enter_queue(state, session_key.as_deref(), voice.queue_mode, entry).await?;
    // A turn that waited in its session's queue past the shutdown deadline does not start.
    if state.shutdown().is_aborted() {
        return Err(Refusal::ShuttingDown.into());
    }
    let system = system_prompt(state, &profile, request.system_prompt.as_deref()).await;
    let (messages, input) = match options.conversation {
        Some(conversation) => (compose(system, conversation, &[]), Vec::new()),
        None => {
            let history = history(state, session_key.as_deref(), history_limit).await?;
            if let Some(id) = tool_history::stray_result(&history, &input) {
                return Err(TurnError::BadRequest(format!(
                    "a tool result answers tool_call_id '{id}', which the conversation's last \
                     assistant message did not call"
                )));
            }
            let history = tool_history::answered_only(history, &input);
            (compose(system, history, &input), input)
        }
    };
    let turn = Turn {
        messages,
        model: profile.model.clone(),
        max_tokens: options.max_tokens.or(profile.max_tokens),
        temperature: options.temperature.or(profile.temperature),
        extra: options.extra.into(),
        session_key: session_key.clone(),
        agent_id: request.agent_id,
        cancel: cancel.clone(),
    };
    let sentences = request
        .sentences
        .unwrap_or(voice.sentence_events)
        .then(|| SentenceSplitter::new(voice.min_sentence_chars));
    let memory = Memory {
        session_key,
        input,
        history_limit,
        ticket,
    };
    let parts = StreamParts {
        started,
        cancel,
        sentences,
        admission,
    };
    let tools = host_tools(state, &profile, &turn).await;
    Ok(launch(state, profile, candidates, turn, tools, memory, parts).await)
}

/// The tools the host runs for this turn: its profile's (`features.tools` on, servers
/// named), unless the turn brings `tools` of its own, which are its client's to run.
async fn host_tools(state: &AppState, profile: &Profile, turn: &Turn) -> Option<ToolSet> {
    if !profile.tools_enabled || profile.tool_servers.is_empty() || turn.extra.contains_key("tools")
    {
        return None;
    }
    let tools = state.tools().toolset(&profile.tool_servers).await;
    (!tools.is_empty()).then_some(tools)
}

/// The message (or the client-supplied conversation, or input) is present and within the
/// limit.
fn check_message(
    request: &TurnRequest,
    options: &TurnOptions,
    max_chars: usize,
) -> Result<(), TurnError> {
    if let Some(conversation) = &options.conversation {
        check_conversation(conversation, max_chars)?;
    } else if let Some(input) = &options.input {
        check_input(input, max_chars)?;
    } else if request.message.trim().is_empty() {
        return Err(TurnError::BadRequest("message must not be empty".into()));
    }
    let chars = request.message.chars().count();
    if chars > max_chars {
        return Err(TurnError::BadRequest(format!(
            "message is {chars} characters long; the limit is {max_chars}"
        )));
    }
    Ok(())
}

/// The size of a message as `limits.max_message_chars` counts it: the characters of its text
/// (a string content, or its `text` parts) and of its tool calls' arguments. Other content
/// parts (`image_url`, `input_audio`, ...) are bounded by the body limit alone.
fn message_chars(message: &ChatMessage) -> usize {
    let arguments: usize = message
        .tool_calls()
        .iter()
        .map(|c| c.arguments.chars().count())
        .sum();
    message.content.chars().count() + arguments
}

/// A client-supplied conversation: at least one message, each within the message limit.
fn check_conversation(conversation: &[ChatMessage], max_chars: usize) -> Result<(), TurnError> {
    if conversation.is_empty() {
        return Err(TurnError::BadRequest(
            "the conversation must hold at least one message".into(),
        ));
    }
    for (i, m) in conversation.iter().enumerate() {
        let chars = message_chars(m);
        if chars > max_chars {
            return Err(TurnError::BadRequest(format!(
                "messages[{i}] is {chars} characters long; the limit is {max_chars}"
            )));
        }
    }
    Ok(())
}

/// The messages a turn adds to its session: at least one, each within the message limit.
fn check_input(input: &[ChatMessage], max_chars: usize) -> Result<(), TurnError> {
    if input.is_empty() {
        return Err(TurnError::BadRequest("the turn adds no message".into()));
    }
    for m in input {
        let chars = message_chars(m);
        if chars > max_chars {
            let role = format!("{:?}", m.role).to_lowercase();
            return Err(TurnError::BadRequest(format!(
                "the {role} message is {chars} characters long; the limit is {max_chars}"
            )));
        }
    }
    Ok(())
}

/// The profile a client names (the configured `default_profile` when it names none or an
/// empty one): a malformed id and an unknown one are different errors.
pub fn find_profile(state: &AppState, id: Option<&str>) -> Result<Arc<Profile>, TurnError> {
    let id = id
        .filter(|p| !p.is_empty())
        .unwrap_or(&state.config().default_profile);
    if !is_valid_id(id) {
        return Err(TurnError::BadProfileId(id.to_string()));
    }
    state
        .profiles()
        .get(id)
        .cloned()
        .ok_or_else(|| TurnError::UnknownProfile(id.to_string()))
}

/// A 400 unless `key` is a valid session key.
pub fn check_session_key(key: &str) -> Result<(), TurnError> {
    if is_valid_session_key(key) {
        return Ok(());
    }
    Err(TurnError::BadRequest(format!(
        "invalid session key (expected 1-{MAX_SESSION_KEY_LEN} of {SESSION_KEY_CHARS})"
    )))
}

/// The session whose memory the turn reads and extends: the request's, else the profile's;
/// none for a client-supplied conversation, which is complete.
fn session_key_of(
    requested: Option<String>,
    profile: &Profile,
    options: &TurnOptions,
) -> Result<Option<String>, TurnError> {
    let key = requested
        .filter(|k| !k.is_empty())
        .or_else(|| profile.session_key.clone())
        .filter(|_| options.conversation.is_none());
    if let Some(key) = &key {
        check_session_key(key)?;
    }
    Ok(key)
}

/// A place within the stream limits, unless the host is draining.
/// With replicas sharing Redis, the session's limit is also counted across them.
async fn admit(state: &AppState, session_key: Option<&str>) -> Result<Admission, TurnError> {
    if state.shutdown().is_draining() {
        return Err(Refusal::ShuttingDown.into());
    }
    let mut admission = state.limits().admit(session_key)?;
    let max = state.limits().sessions().max();
    if let (Some(key), Some(cluster), true) = (session_key, state.sessions().cluster(), max > 0) {
        let lease = cluster.admit_stream(key, max).await?;
        admission.hold(lease.ok_or(Refusal::SessionBusy(max))?);
    }
    Ok(admission)
}

/// Waits for this session's turns ahead (or steers over them) before its history is read.
async fn enter_queue(
    state: &AppState,
    session_key: Option<&str>,
    mode: QueueMode,
    entry: TurnEntry,
) -> Result<Option<Ticket>, TurnError> {
    let Some(key) = session_key else {
        return Ok(None);
    };
    let store = state.store().as_ref();
    Ok(Some(state.sessions().enter(store, key, mode, entry).await?))
}

/// The session's stored history (nothing without a session).
async fn history(
    state: &AppState,
    session_key: Option<&str>,
    limit: usize,
) -> Result<Vec<ChatMessage>, TurnError> {
    match session_key {
        Some(key) => Ok(state.store().history(key, limit).await?),
        None => Ok(Vec::new()),
    }
}

/// The turn's system prompt: `"default"`/absent is the prompt file plus the profile's
/// prompt, `"none"` or blank is none, anything else is used as is.
async fn system_prompt(
    state: &AppState,
    profile: &Profile,
    requested: Option<&str>,
) -> Option<Arc<str>> {
    match requested {
        None | Some("default") => {
            let own = profile.system_prompt.as_deref().unwrap_or("");
            state.prompts().system_prompt(&profile.id, own).await
        }
        Some("none") => None,
        Some(custom) if custom.trim().is_empty() => None,
        Some(custom) => Some(custom.into()),
    }
}

/// The messages sent: the system prompt, then `earlier`, then the turn's new messages.
fn compose(
    system: Option<Arc<str>>,
    earlier: Vec<ChatMessage>,
    new: &[ChatMessage],
) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(earlier.len() + new.len() + 1);
    messages.extend(system.map(ChatMessage::system));
    messages.extend(earlier);
    messages.extend_from_slice(new);
    messages
}

/// What a turn's memory needs: its session, the messages it adds, history cap and queue
/// ticket.
struct Memory {
    session_key: Option<String>,
    input: Vec<ChatMessage>,
    history_limit: usize,
    ticket: Option<Ticket>,
}

/// The rest a turn's stream holds: its start, cancellation, sentence splitter and admission.
struct StreamParts {
    started: Instant,
    cancel: CancellationToken,
    sentences: Option<SentenceSplitter>,
    admission: Admission,
}

/// Sends `turn` through failover, wraps the events in the turn's [`TurnStream`] and sets it off.
async fn launch(
    state: &AppState,
    profile: Arc<Profile>,
    candidates: Vec<Candidate>,
    turn: Turn,
    tools: Option<ToolSet>,
    memory: Memory,
    parts: StreamParts,
) -> StartedTurn {
    let gateway_id = candidates[0].gateway.id().to_string();
    state.metrics().request(&profile.id, &gateway_id);
    tracing::debug!(profile = %profile.id, gateway = %gateway_id, "turn started");
    let saw_error = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(OnceLock::new());
    let observe = observer(state, &profile.id, &gateway_id, &saw_error, &answered);
    let (upstream, exchange) = match tools {
        None => (failover::events(candidates, turn, observe), None),
        Some(tools) => {
            let exchange = tool_loop::Exchange::default();
            let tool_loop = tool_loop::ToolLoop {
                state: state.clone(),
                tools,
                max_rounds: state.tools().max_rounds(),
                candidates,
                observe,
                exchange: exchange.clone(),
            };
            (tool_loop::events(tool_loop, turn), Some(exchange))
        }
    };
    let tail = Tail {
        state: state.clone(),
        primary: gateway_id.clone(),
        answered,
        session_key: memory.session_key,
        input: memory.input,
        exchange,
        calls: Vec::new(),
        history_limit: memory.history_limit,
        started: parts.started,
        ttft: None,
        done: false,
        saw_error,
        cancel: parts.cancel,
        interrupt: memory
            .ticket
            .as_ref()
            .map(|t| CancelWatch::new(t.interrupted_token())),
        ticket: memory.ticket,
        sentences: parts.sentences,
        actions: Vec::new(),
        out: VecDeque::new(),
        answer_chars: 0,
        _in_flight: state.metrics().stream_open(),
        _admission: parts.admission,
    };
    let mut events = TurnStream {
        upstream: Some(upstream),
        aborted: CancelWatch::new(state.shutdown().abort_token()),
        storing: None,
        tail,
    };
    events.set_off().await;
    StartedTurn {
        profile,
        gateway: gateway_id,
        events: Box::pin(events),
    }
}

/// Metrics and logs of a turn's attempts; records which gateway answered in `answered` when it
/// is not the first one.
fn observer(
    state: &AppState,
    profile: &str,
    first: &str,
    saw_error: &Arc<AtomicBool>,
    answered: &Arc<OnceLock<String>>,
) -> Observer {
    let (state, profile, first) = (state.clone(), profile.to_string(), first.to_string());
    let (saw_error, answered) = (saw_error.clone(), answered.clone());
    Arc::new(move |note| match note {
        Note::Attempt {
            gateway,
            index,
            attempt,
        } => {
            if index > 0 && attempt == 1 {
                state.metrics().request(&profile, gateway);
            }
        }
        Note::Failed {
            gateway,
            error,
            next,
        } => {
            let cause = error.cause();
            state.metrics().error(gateway, &cause);
            match next {
                Next::Retry { after } => {
                    state.metrics().retry(gateway, &cause);
                    tracing::warn!(gateway, %cause, %error, retry_after_ms = after.as_millis() as u64,
                        "gateway failed before the first token; retrying it after Retry-After");
                }
                Next::Fallback { to } => {
                    state.metrics().fallback(gateway, to);
                    tracing::warn!(gateway, to, %cause, %error,
                        "gateway failed before the first token; falling back");
                }
                Next::Final => {
                    saw_error.store(true, Ordering::Relaxed);
                    tracing::info!(gateway, %cause, %error, "turn failed");
                }
            }
        }
        Note::Answering { gateway } => {
            if gateway != first {
                let _ = answered.set(gateway.to_string());
            }
        }
    })
}

/// The usable instances of a profile in order: its gateway, then its fallbacks, each once.
/// Unusable ones (failed to build, not configured) are skipped; when none is usable, the
/// first one's problem is the error.
fn candidates_for(state: &AppState, profile: &Profile) -> Result<Vec<Candidate>, TurnError> {
    let config = state.config();
    let ids = std::iter::once(&profile.gateway_id).chain(&profile.fallback_gateway_ids);
    let mut candidates: Vec<Candidate> = Vec::with_capacity(1 + profile.fallback_gateway_ids.len());
    let mut first_problem = None;
    for id in ids {
        if candidates.iter().any(|c| c.gateway.id() == id) {
            continue;
        }
        match gateway_for(state, id) {
            Ok(gateway) => candidates.push(Candidate {
                gateway,
                retry: config
                    .retry
                    .with(config.gateways.get(id).and_then(|g| g.retry.as_ref())),
            }),
            Err(problem) => {
                if !profile.fallback_gateway_ids.is_empty() {
                    tracing::warn!(profile = %profile.id, gateway = %id, %problem,
                        "skipping an unusable gateway of the profile");
                }
                first_problem.get_or_insert(problem);
            }
        }
    }
    match (candidates.first(), first_problem) {
        (None, Some(problem)) => Err(problem),
        (None, None) => Err(TurnError::GatewayUnavailable {
            gateway: profile.gateway_id.clone(),
            message: format!("profile '{}' has no gateway", profile.id),
        }),
        (Some(first), _) => {
            if first.gateway.id() != profile.gateway_id {
                state
                    .metrics()
                    .fallback(&profile.gateway_id, first.gateway.id());
            }
            Ok(candidates)
        }
    }
}

fn gateway_for(state: &AppState, id: &str) -> Result<Arc<dyn Gateway>, TurnError> {
    let Some(gateway) = state.instances().get(id) else {
        let message = match state.instances().failure(id) {
            Some(f) => format!("gateway '{id}' is not available: {}", f.reason),
            None => format!("gateway '{id}' is not available"),
        };
        return Err(TurnError::GatewayUnavailable {
            gateway: id.to_string(),
            message,
        });
    };
    gateway
        .is_configured()
        .map_err(|e| TurnError::GatewayUnavailable {
            gateway: id.to_string(),
            message: e.to_string(),
        })?;
    Ok(gateway.clone())
}

/// Per-turn bookkeeping; dropping it (client gone) cancels the upstream.
struct Tail {
    state: AppState,
    /// The gateway tried first.
    primary: String,
    /// The gateway that answered, when it is not `primary`.
    answered: Arc<OnceLock<String>>,
    session_key: Option<String>,
    /// The messages the turn adds to its session before the answer.
    input: Vec<ChatMessage>,
    /// A host tool turn's messages after `input` (assistant messages with their calls, tool
    /// results, the answer), written by its loop when it completes.
    exchange: Option<tool_loop::Exchange>,
    /// The answer's tool calls, stored with it.
    calls: Vec<ToolCall>,
    history_limit: usize,
    started: Instant,
    ttft: Option<Duration>,
    done: bool,
    saw_error: Arc<AtomicBool>,
    cancel: CancellationToken,
    /// The turn's place in its session's queue (turns with a session key).
    ticket: Option<Ticket>,
    /// Fires when the ticket's turn is cut.
    interrupt: Option<CancelWatch>,
    /// Splits the answer into `sentence` events when enabled.
    sentences: Option<SentenceSplitter>,
    /// Actions passed on, for an interrupted turn's `text_done`.
    actions: Vec<serde_json::Value>,
    /// Events ready to go to the client, oldest first.
    out: VecDeque<Event>,
    /// Characters of answer text and tool calls received so far (`limits.max_answer_chars`
    /// caps them).
    answer_chars: usize,
    _in_flight: InFlight,
    _admission: Admission,
}

impl Tail {
    /// The gateway answering this turn.
    fn gateway(&self) -> &str {
        self.answered.get().unwrap_or(&self.primary)
    }

    /// Queue the host's `handshake` before the answer's first event, with its time to first
    /// token; nothing once it was sent.
    fn handshake_once(&mut self) {
        if self.ttft.is_some() {
            return;
        }
        let ttft = self.started.elapsed();
        self.ttft = Some(ttft);
        self.state.metrics().ttft(self.gateway(), ttft);
        self.out.push_back(Event::Handshake {
            ms: ttft.as_millis() as u64,
            gateway: Some(self.gateway().to_string()),
        });
    }

    /// `event`, or the final `error` in its place when it takes the answer past
    /// `limits.max_answer_chars` (the caller then lets the upstream go).
    fn within_answer_cap(&mut self, event: Event) -> Event {
        let chars = match &event {
            Event::Delta { text } => text.chars().count(),
            Event::ToolCall { call } => call.name.chars().count() + call.arguments.chars().count(),
            Event::TextDone { response, .. } => {
                response.chars().count().saturating_sub(self.answer_chars)
            }
            _ => return event,
        };
        self.answer_chars += chars;
        let max = self.state.config().limits.max_answer_chars;
        if self.answer_chars <= max {
            return event;
        }
        self.saw_error.store(true, Ordering::Relaxed);
        self.state
            .metrics()
            .error(self.gateway(), "answer_too_long");
        tracing::warn!(gateway = %self.gateway(), max, "answer cut: longer than limits.max_answer_chars");
        Event::error(format!(
            "the answer is longer than {max} characters (limits.max_answer_chars): cut"
        ))
    }

    /// Take one event of the gateway (made well-formed) into `out`; a completed answer
    /// returns the write of its memory, to finish before [`Tail::stored`] passes it on.
    fn process(&mut self, event: Event) -> Option<Storing> {
        match event {
            Event::Handshake { .. } => self.handshake_once(),
            event @ (Event::Delta { .. } | Event::Sentence { .. }) => {
                self.handshake_once();
                self.emit(event);
            }
            Event::TextDone {
                response,
                actions,
                usage,
                finish_reason,
                interrupted,
                ..
            } => {
                if self.ticket.as_ref().is_some_and(|t| !t.claim()) {
                    self.push_interrupted_done();
                    return None;
                }
                self.done = true;
                let timing = self.timing();
                let store = self.remember(&response);
                let done = Event::TextDone {
                    response,
                    actions,
                    timing: Some(timing),
                    usage,
                    finish_reason,
                    interrupted,
                    memory_error: None,
                };
                return Some(Storing { store, done });
            }
            Event::Error { .. } => {
                if self.ticket.as_ref().is_some_and(Ticket::is_cut) {
                    self.push_interrupted_done();
                    return None;
                }
                if let Some(ticket) = &self.ticket {
                    ticket.release();
                }
                self.done = true;
                if !self.saw_error.load(Ordering::Relaxed) {
                    self.state.metrics().error(self.gateway(), "stream_error");
                }
                self.emit(event);
            }
            other => self.emit(other),
        }
        None
    }

    /// The memory of a completed answer is written: let the session's next turn run and pass
    /// the answer's `text_done` on.
    fn stored(&mut self, mut done: Event, outcome: Result<(), String>) {
        if let (Event::TextDone { memory_error, .. }, Err(e)) = (&mut done, outcome) {
            *memory_error = Some(e);
        }
        if let Some(ticket) = &self.ticket {
            ticket.release();
        }
        if let Event::TextDone { timing, .. } = &done {
            tracing::debug!(gateway = %self.gateway(),
                ttft_ms = ?timing.as_ref().and_then(|t| t.ttft_ms),
                total_ms = timing.as_ref().map(|t| t.total_ms), "turn done");
        }
        self.emit(done);
    }

    fn timing(&self) -> Timing {
        Timing {
            ttft_ms: self.ttft.map(|t| t.as_millis() as u64),
            total_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    /// Queue the final event of an interrupted turn: what was streamed so far. Its memory is
    /// written by whoever interrupted it.
    fn push_interrupted_done(&mut self) {
        self.done = true;
        let response = self
            .ticket
            .as_ref()
            .map(Ticket::streamed)
            .unwrap_or_default();
        tracing::debug!(gateway = %self.gateway(), streamed_chars = response.chars().count(),
            "turn interrupted");
        let done = Event::TextDone {
            response,
            actions: std::mem::take(&mut self.actions),
            timing: Some(self.timing()),
            usage: None,
            finish_reason: None,
            interrupted: true,
            memory_error: None,
        };
        self.out.push_back(done);
    }

    /// Queue `event` for the client, noting what is streamed (for interrupts) and adding
    /// `sentence` events when enabled. Text that arrives after the turn was cut is not sent:
    /// what was queued with it is replaced by the interrupted `text_done`.
    fn emit(&mut self, event: Event) {
        match &event {
            Event::Delta { text } => {
                if self.ticket.as_ref().is_some_and(|t| !t.record(text)) {
                    self.out.clear();
                    self.push_interrupted_done();
                    return;
                }
                let sentences = self.sentences.as_mut().map(|s| s.push(text));
                self.out.push_back(event);
                for text in sentences.into_iter().flatten() {
                    self.out.push_back(Event::Sentence { text });
                }
                return;
            }
            Event::Action { action } => {
                self.actions.push(action.clone());
                // Text spoken before a tool call is a sentence of its own: TTS says it while
                // the call runs.
                if let Some(rest) = self.sentences.as_mut().and_then(SentenceSplitter::finish) {
                    self.out.push_back(Event::Sentence { text: rest });
                }
            }
            Event::ToolCall { call } => self.calls.push(call.clone()),
            Event::TextDone {
                interrupted: false, ..
            } => {
                if let Some(rest) = self.sentences.as_mut().and_then(SentenceSplitter::finish) {
                    self.out.push_back(Event::Sentence { text: rest });
                }
            }
            _ => {}
        }
        self.out.push_back(event);
    }

    /// The write of the turn's new messages and answer (text and tool calls) to session
    /// memory (nothing to do without a session); a failure is told to the client in
    /// `text_done` and counted.
    fn remember(&mut self, response: &str) -> BoxFuture<'static, Result<(), String>> {
        let Some(key) = self.session_key.clone() else {
            return Box::pin(std::future::ready(Ok(())));
        };
        let mut messages = std::mem::take(&mut self.input);
        let calls = std::mem::take(&mut self.calls);
        if let Some(exchange) = self.exchange.as_ref().and_then(|e| e.get()) {
            messages.extend(exchange.iter().cloned());
        } else if !response.trim().is_empty() || !calls.is_empty() {
            messages.push(ChatMessage::assistant_with_tool_calls(response, calls));
        }
        let state = self.state.clone();
        let limit = self.history_limit;
        Box::pin(async move {
            let result = state.store().append(&key, messages, limit).await;
            result.map_err(|e| {
                state.metrics().memory_not_stored("turn");
                tracing::warn!(session = %key, error = %e, "session memory not updated with the turn");
                format!("session memory was not updated: {e}")
            })
        })
    }
}

/// A completed answer whose memory is being written.
struct Storing {
    store: BoxFuture<'static, Result<(), String>>,
    /// Its `text_done`, passed on once the memory is written.
    done: Event,
}

/// The events of a turn as one stream: the gateway's stream made well-formed (see
/// [`gateway_core::stream::settle`]), cut short by an interrupt of its session or by the
/// shutdown deadline, with the handshake, sentences and memory added by its [`Tail`]. One
/// hand-written poll per wake-up keeps the cost per streamed token low.
struct TurnStream {
    /// The gateway's events; `None` once its final event arrived or the turn was cut.
    upstream: Option<EventStream>,
    /// Fires when the shutdown's grace period is over.
    aborted: CancelWatch,
    /// The completed answer's memory write, when one is in progress.
    storing: Option<Storing>,
    tail: Tail,
}

impl TurnStream {
    /// Polls the turn once, so its upstream request is on its way, then yields, so the tasks
    /// that write that request run before the caller writes the answer's first bytes: each
    /// write to the client wakes it, and it may take the core before the request has left.
    /// An event that is ready at once stays first in the queue.
    async fn set_off(&mut self) {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(Some(event)) = Pin::new(&mut *self).poll_next(cx) {
                self.tail.out.push_front(event);
            }
            Poll::Ready(())
        })
        .await;
        tokio::task::yield_now().await;
    }
}

impl Stream for TurnStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.tail.out.pop_front() {
                return Poll::Ready(Some(event));
            }
            if let Some(storing) = &mut this.storing {
                let outcome = ready!(storing.store.as_mut().poll(cx));
                if let Some(Storing { done, .. }) = this.storing.take() {
                    this.tail.stored(done, outcome);
                }
                continue;
            }
            if this.tail.done {
                return Poll::Ready(None);
            }
            // Interrupted: the upstream stream is dropped at once (its cancel already fired).
            if let Some(interrupt) = &mut this.tail.interrupt {
                if interrupt.poll_cancelled(cx).is_ready() {
                    this.upstream = None;
                    this.tail.push_interrupted_done();
                    // The session's next turn need not wait for this stream's end.
                    this.tail.interrupt = None;
                    drop(this.tail.ticket.take());
                    continue;
                }
            }
            // The deadline before the next event: a turn that keeps streaming still ends on time.
            if this.aborted.poll_cancelled(cx).is_ready() {
                this.upstream = None;
                this.tail.saw_error.store(true, Ordering::Relaxed);
                this.tail
                    .state
                    .metrics()
                    .error(&this.tail.primary, "shutdown");
                this.storing = this.tail.process(Event::error(SHUTDOWN_MESSAGE));
                continue;
            }
            let Some(upstream) = &mut this.upstream else {
                // Unreachable: the upstream is only let go with the turn done or storing.
                this.tail.done = true;
                continue;
            };
            let event = gateway_core::stream::settle(ready!(upstream.as_mut().poll_next(cx)));
            let event = this.tail.within_answer_cap(event);
            if event.is_terminal() {
                this.upstream = None;
            }
            this.storing = this.tail.process(event);
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.cancel.cancel();
        if !self.done {
            self.state
                .metrics()
                .error(self.gateway(), "client_disconnected");
            tracing::debug!(gateway = %self.gateway(), "client went away; upstream cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use gateway_core::{async_trait, GatewayError, GatewayKind, InstanceConfig, Registry};

    use crate::config::instances::Instances;
    use crate::config::profile::ProfileSet;
    use crate::config::HostConfig;

    /// A gateway that breaks the protocol as the user's message asks.
    struct Unruly;

    #[async_trait]
    impl Gateway for Unruly {
        fn id(&self) -> &str {
            "unruly"
        }
        fn kind(&self) -> &str {
            "unruly"
        }
        fn is_configured(&self) -> Result<(), GatewayError> {
            Ok(())
        }
        async fn stream(&self, turn: Turn) -> Result<EventStream, GatewayError> {
            let asked = turn.messages.last().map(|m| m.content.to_string());
            if asked.as_deref() == Some("were you asked?") {
                ASKED.store(true, Ordering::SeqCst);
            }
            let items = match asked.as_deref() {
                Some("more after the end") => vec![
                    Ok(Event::delta("a")),
                    Ok(Event::text_done("a")),
                    Ok(Event::delta("b")),
                    Ok(Event::text_done("ab")),
                ],
                Some("error then more") => vec![
                    Ok(Event::delta("a")),
                    Err(GatewayError::Truncated),
                    Ok(Event::text_done("a")),
                ],
                _ => vec![Ok(Event::delta("a"))],
            };
            Ok(Box::pin(futures::stream::iter(items)))
        }
    }

    /// Set when `Unruly` is asked "were you asked?".
    static ASKED: AtomicBool = AtomicBool::new(false);

    static UNRULY: GatewayKind = GatewayKind {
        id: "unruly",
        description: "breaks the event protocol on purpose",
        build: |_: &InstanceConfig| Ok(Arc::new(Unruly)),
    };

    async fn answer(message: &str) -> Vec<Event> {
        started(message).await.events.collect().await
    }

    async fn started(message: &str) -> StartedTurn {
        let config = HostConfig {
            prompts_dir: "".into(),
            profiles_dir: "".into(),
            default_profile: "p".into(),
            ..HostConfig::default()
        };
        let registry = Registry::from_kinds([&UNRULY]).expect("one kind");
        let instances = Instances::build(&registry, &config, &gateway_core::Env::default());
        let profile = Profile::from_json(
            serde_json::json!({"id": "p", "adapter_config": {"gateway_id": "unruly"}}),
            "test",
        )
        .expect("a valid profile");
        let profiles = ProfileSet::from_profiles([profile], |g| instances.is_known(g));
        let store = AppState::store_for(&config);
        let state = AppState::new(config, instances, profiles, store);
        let request = TurnRequest {
            message: message.into(),
            ..TurnRequest::default()
        };
        start(&state, request, Instant::now())
            .await
            .expect("the turn starts")
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                Event::Handshake { .. } => "handshake",
                Event::Delta { .. } => "delta",
                Event::TextDone { .. } => "text_done",
                Event::Error { .. } => "error",
                _ => "other",
            })
            .collect()
    }

    #[tokio::test]
    async fn nothing_passes_after_the_final_event() {
        let events = answer("more after the end").await;
        assert_eq!(kinds(&events), ["handshake", "delta", "text_done"]);
        assert!(matches!(&events[2], Event::TextDone { response, .. } if response == "a"));
    }

    #[tokio::test]
    async fn a_gateway_error_is_the_final_event() {
        let events = answer("error then more").await;
        assert_eq!(kinds(&events), ["handshake", "delta", "error"]);
        assert!(matches!(&events[2], Event::Error { error } if error.contains("truncated")));
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_a_final_event_ends_with_an_error() {
        let events = answer("stop early").await;
        assert_eq!(kinds(&events), ["handshake", "delta", "error"]);
        assert!(
            matches!(&events[2], Event::Error { error } if error.contains("without a final event"))
        );
    }

    #[tokio::test]
    async fn a_started_turn_has_asked_its_gateway_before_its_events_are_read() {
        let turn = started("were you asked?").await;
        assert!(
            ASKED.load(Ordering::SeqCst),
            "the gateway was not asked yet"
        );
        let events: Vec<Event> = turn.events.collect().await;
        assert_eq!(kinds(&events), ["handshake", "delta", "error"]);
    }
}
