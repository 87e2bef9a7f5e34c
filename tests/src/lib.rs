//! End-to-end test harness of the gateway host: a scriptable OpenAI-compatible mock upstream
//! on 127.0.0.1 and a real host (`gateway_host::app`) served on 127.0.0.1 in front of it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use figment::providers::Serialized;
use figment::Figment;
use futures::{Stream, StreamExt};
use gateway_core::{Env, Registry};
use gateway_host::SessionView;
use gateway_host::{AppState, HostConfig};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch, Notify};

/// Longest a test waits for an expected event before failing (a deadline, not a delay).
pub const DEADLINE: Duration = Duration::from_secs(5);

pub mod chaos;
pub mod echo;
pub mod nginx;
pub mod process;
pub mod raw;
pub mod tools;

/// The fake API key the harness configures; tests assert it never leaks.
pub const TEST_KEY: &str = "sk-test-SECRET-9f8e7d6c";

/// How the mock answers one request.
pub enum Reply {
    /// Stream these tokens, then `finish_reason: stop` and `[DONE]`.
    Tokens(Vec<String>),
    /// Stream `first`, then wait for `release`; report on `closed` when the host drops the
    /// connection before release.
    Hold {
        /// Tokens sent at once.
        first: Vec<String>,
        /// Notified to finish the answer.
        release: Arc<Notify>,
        /// Fires when the response body is dropped unfinished (client closed).
        closed: oneshot::Sender<()>,
    },
    /// Answer with this HTTP status and body.
    Status(u16, String),
    /// Answer with this HTTP status, extra headers (e.g. `Retry-After`) and JSON body.
    StatusWith(u16, Vec<(String, String)>, String),
    /// Stream these tokens, then end the body without `finish_reason` or `[DONE]` (cut off).
    Cut(Vec<String>),
    /// Answer 200 `text/event-stream` with this body exactly as given.
    Sse(String),
}

impl Reply {
    /// `Reply::Tokens` from string slices.
    pub fn tokens(tokens: &[&str]) -> Self {
        Reply::Tokens(tokens.iter().map(|t| t.to_string()).collect())
    }

    /// An HTTP error with the provider's JSON error body and a `Retry-After: <seconds>` header.
    pub fn retry_after(status: u16, seconds: u64) -> Self {
        Reply::StatusWith(
            status,
            vec![("retry-after".into(), seconds.to_string())],
            json!({"error": {"message": "Rate limit reached, retry later", "type": "rate_limit"}})
                .to_string(),
        )
    }

    /// A reply whose body stays open without sending a token until the host hangs up (a
    /// provider that never starts answering); `closed` fires when the host drops it.
    pub fn silent(closed: oneshot::Sender<()>) -> Self {
        Reply::Hold {
            first: Vec::new(),
            release: Arc::new(Notify::new()),
            closed,
        }
    }
}

struct MockState {
    requests: Mutex<Vec<Value>>,
    times: Mutex<Vec<std::time::Instant>>,
    headers: Mutex<Vec<axum::http::HeaderMap>>,
    script: Mutex<VecDeque<Reply>>,
    /// Number of requests received, for waiting without polling.
    received: watch::Sender<usize>,
}

impl Default for MockState {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            times: Mutex::default(),
            headers: Mutex::default(),
            script: Mutex::default(),
            received: watch::Sender::new(0),
        }
    }
}

/// A scripted OpenAI-compatible upstream that records every request body.
#[derive(Clone)]
pub struct MockUpstream {
    /// Listening address.
    pub addr: SocketAddr,
    state: Arc<MockState>,
}

/// One `data: {chat.completion.chunk}` SSE frame as the mock sends it.
pub fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
        "model": "mock-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {body}\n\n")
}

fn token_chunks(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .map(|t| chunk(json!({"content": t}), None))
        .collect()
}

fn end_chunks() -> Vec<String> {
    vec![chunk(json!({}), Some("stop")), "data: [DONE]\n\n".into()]
}

/// Sends on drop unless disarmed.
struct ClosedGuard(Option<oneshot::Sender<()>>);

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

fn sse(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

async fn completions(
    State(state): State<Arc<MockState>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.times.lock().push(std::time::Instant::now());
    state.requests.lock().push(body);
    state.headers.lock().push(headers);
    state.received.send_modify(|n| *n += 1);
    let reply = state
        .script
        .lock()
        .pop_front()
        .unwrap_or_else(|| Reply::tokens(&["Hello", " there", "."]));
    match reply {
        Reply::Tokens(tokens) => {
            let mut pieces = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
            pieces.extend(token_chunks(&tokens));
            pieces.extend(end_chunks());
            sse(Body::from(pieces.concat()))
        }
        Reply::Hold {
            first,
            release,
            closed,
        } => {
            let first = token_chunks(&first).concat();
            let guard = ClosedGuard(Some(closed));
            let body = futures::stream::unfold((0u8, guard), move |(step, mut guard)| {
                let release = release.clone();
                let first = first.clone();
                async move {
                    let piece = match step {
                        0 => first,
                        1 => {
                            release.notified().await;
                            guard.0 = None; // finished normally: not a client close
                            end_chunks().concat()
                        }
                        _ => return None,
                    };
                    Some((Ok::<_, std::convert::Infallible>(piece), (step + 1, guard)))
                }
            });
            sse(Body::from_stream(body))
        }
        Reply::Sse(body) => sse(Body::from(body)),
        Reply::Status(status, body) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Reply::StatusWith(status, headers, body) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (
                    header::HeaderName::from_bytes(name.as_bytes()),
                    header::HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Reply::Cut(tokens) => {
            let mut pieces = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
            pieces.extend(token_chunks(&tokens));
            sse(Body::from(pieces.concat()))
        }
    }
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "mock-model", "object": "model"}]}))
}

impl MockUpstream {
    /// Start on 127.0.0.1:0.
    pub async fn start() -> Self {
        let state = Arc::new(MockState::default());
        let router = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models))
            .with_state(state.clone());
        let addr = serve(router).await;
        Self { addr, state }
    }

    /// `http://addr/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queue the reply to the next unscripted request.
    pub fn push(&self, reply: Reply) {
        self.state.script.lock().push_back(reply);
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().clone()
    }

    /// The last request body.
    pub fn last_request(&self) -> Value {
        self.requests()
            .last()
            .cloned()
            .expect("the mock received no request")
    }

    /// Wait until the mock has received `n` requests (fails after [`DEADLINE`]).
    pub async fn wait_for_requests(&self, n: usize) {
        let mut rx = self.state.received.subscribe();
        tokio::time::timeout(DEADLINE, rx.wait_for(|count| *count >= n))
            .await
            .unwrap_or_else(|_| panic!("the mock did not receive {n} request(s) in time"))
            .expect("mock state alive");
    }

    /// Headers of every request received so far.
    pub fn request_headers(&self) -> Vec<axum::http::HeaderMap> {
        self.state.headers.lock().clone()
    }

    /// The `Authorization` header of every request (`None` where absent).
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.request_headers()
            .iter()
            .map(|h| {
                h.get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .collect()
    }

    /// When each request arrived, in order.
    pub fn request_times(&self) -> Vec<std::time::Instant> {
        self.state.times.lock().clone()
    }

    /// Queue a held answer ([`Reply::Hold`]): `first` is sent at once, the rest waits for the
    /// returned `Notify`; the receiver fires if the host closes the upstream connection before
    /// that (see [`upstream_closed`]).
    pub fn hold(&self, first: &[&str]) -> (Arc<Notify>, oneshot::Receiver<()>) {
        let (closed_tx, closed_rx) = oneshot::channel();
        let release = Arc::new(Notify::new());
        self.push(Reply::Hold {
            first: first.iter().map(|t| t.to_string()).collect(),
            release: release.clone(),
            closed: closed_tx,
        });
        (release, closed_rx)
    }
}

/// Wait (at most [`DEADLINE`]) for the `closed` signal of a held answer
/// ([`MockUpstream::hold`]): the host dropped the upstream connection.
pub async fn upstream_closed(closed: oneshot::Receiver<()>) {
    tokio::time::timeout(DEADLINE, closed)
        .await
        .expect("the upstream connection was closed promptly")
        .expect("closed signal");
}

/// A `http://127.0.0.1:port/v1` base URL where nothing listens (connections are refused).
pub async fn refused_base_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}/v1")
}

/// A profile JSON like [`profile`] answered by `gateway`, then by `fallbacks` in order.
pub fn profile_on(id: &str, gateway: &str, fallbacks: &[&str]) -> Value {
    let mut value = profile(id);
    value["adapter_config"]["gateway_id"] = json!(gateway);
    value["adapter_config"]["fallback_gateway_ids"] = json!(fallbacks);
    value
}

/// Serve a router on 127.0.0.1:0 in the background; returns the address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Serve a host's state on 127.0.0.1:0 in the background with the host's own connection
/// handling ([`gateway_host::serve`]: timeouts, connection cap); returns the address.
pub async fn serve_host(state: AppState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(gateway_host::serve(listener, state));
    addr
}

/// A profile JSON in OpenVoiceUI format using the built-in `openai-compat` instance.
pub fn profile(id: &str) -> Value {
    json!({
        "id": id, "name": format!("Profile {id}"), "adapter": "clawdbot",
        "adapter_config": {"gateway_id": "openai-compat", "sessionKey": null, "agentId": null},
        "llm": {"model": null, "parameters": {"max_tokens": null, "temperature": null}},
        "system_prompt": format!("You are profile {id}."),
        "context": {"max_history_messages": null},
        "voice": {"tts_provider": "groq"}
    })
}

/// What a test host is made of.
pub struct HostSpec {
    /// Profile files: (file name, contents).
    pub profiles: Vec<(String, String)>,
    /// Contents of `voice-system-prompt.md`, or none.
    pub prompt: Option<String>,
    /// Config overrides (merged over the harness defaults).
    pub config: Value,
    /// Whether `OPENAI_COMPAT_API_KEY` is set.
    pub with_key: bool,
    /// More environment variables for the gateways (e.g. a named instance's `api_key_env`).
    pub env: Vec<(String, String)>,
}

impl Default for HostSpec {
    fn default() -> Self {
        Self {
            profiles: vec![("default.json".into(), profile("default").to_string())],
            prompt: Some("# comment\nYou speak briefly.\n".into()),
            config: json!({}),
            with_key: true,
            env: Vec::new(),
        }
    }
}

impl HostSpec {
    /// Set an environment variable for the gateways.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Add a profile file `<id>.json`.
    pub fn with_profile(mut self, value: Value) -> Self {
        let id = value["id"].as_str().unwrap_or("x").to_string();
        self.profiles
            .push((format!("{id}.json"), value.to_string()));
        self
    }

    /// Write the spec's files into `dir` ([`write_dirs`]) and build the host's config: the
    /// defaults with those folders, then the spec's `config` merged over them.
    pub fn host_config(&self, dir: &Path) -> HostConfig {
        let (profiles, prompts) = write_dirs(dir, self);
        HostConfig::from_provider(
            Figment::from(Serialized::defaults(HostConfig {
                profiles_dir: profiles,
                prompts_dir: prompts,
                ..HostConfig::default()
            }))
            .merge(Serialized::defaults(self.config.clone())),
        )
        .expect("valid test config")
    }
}

/// A running host in front of a mock upstream.
pub struct TestHost {
    /// `http://127.0.0.1:port`.
    pub url: String,
    /// The host's state (store, metrics, ...).
    pub state: AppState,
    /// The mock upstream.
    pub upstream: MockUpstream,
    /// Temp dir holding `profiles/` and `prompts/`.
    pub dir: tempfile::TempDir,
    /// A client without proxy.
    pub client: reqwest::Client,
}

/// Write the profile and prompt files of a spec into `dir`; returns (profiles, prompts) dirs.
pub fn write_dirs(dir: &Path, spec: &HostSpec) -> (PathBuf, PathBuf) {
    let profiles = dir.join("profiles");
    let prompts = dir.join("prompts");
    std::fs::create_dir_all(&profiles).expect("mkdir");
    std::fs::create_dir_all(&prompts).expect("mkdir");
    for (name, text) in &spec.profiles {
        std::fs::write(profiles.join(name), text).expect("write profile");
    }
    if let Some(prompt) = &spec.prompt {
        std::fs::write(prompts.join("voice-system-prompt.md"), prompt).expect("write prompt");
    }
    (profiles, prompts)
}

/// Write `profile` to `<dir>/profiles/<id>.json` (the folder must exist).
pub fn write_profile(dir: &Path, profile: &Value) {
    let id = profile["id"].as_str().expect("the profile has a string id");
    std::fs::write(
        dir.join("profiles").join(format!("{id}.json")),
        profile.to_string(),
    )
    .expect("write profile");
}

/// The harness's environment: openai-compat at `upstream`, with or without a key.
pub fn env_for(upstream: &MockUpstream, with_key: bool) -> Env {
    env_with(upstream, with_key, &[])
}

/// [`env_for`] plus `extra` variables.
pub fn env_with(upstream: &MockUpstream, with_key: bool, extra: &[(String, String)]) -> Env {
    env_at(upstream.base_url(), with_key, extra)
}

/// The harness's environment for any upstream: openai-compat at `base_url`, with or without
/// the test key, plus `extra` variables.
pub fn env_at(base_url: String, with_key: bool, extra: &[(String, String)]) -> Env {
    let mut pairs = vec![("OPENAI_COMPAT_BASE_URL".to_string(), base_url)];
    if with_key {
        pairs.push(("OPENAI_COMPAT_API_KEY".into(), TEST_KEY.into()));
    }
    pairs.extend(extra.iter().cloned());
    Env::from_pairs(pairs)
}

impl TestHost {
    /// The default spec.
    pub async fn start() -> Self {
        Self::with(HostSpec::default()).await
    }

    /// The default spec with these config overrides.
    pub async fn with_config(config: Value) -> Self {
        Self::with(HostSpec {
            config,
            ..HostSpec::default()
        })
        .await
    }

    /// Build the state from a temp dir of files and serve `app(state)` on 127.0.0.1:0.
    pub async fn with(spec: HostSpec) -> Self {
        let upstream = MockUpstream::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = spec.host_config(dir.path());
        let registry = Registry::from_inventory().expect("registry");
        let env = env_with(&upstream, spec.with_key, &spec.env);
        let state = AppState::connect(config, &registry, &env)
            .await
            .expect("host state (session store reachable, auth settings usable)");
        let addr = serve_host(state.clone()).await;
        Self {
            url: format!("http://{addr}"),
            state,
            upstream,
            dir,
            client: client(),
        }
    }

    /// Path of the prompt file.
    pub fn prompt_path(&self) -> PathBuf {
        self.dir.path().join("prompts/voice-system-prompt.md")
    }

    /// A POST to `path` on this host, ready for a body.
    fn post_to(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url))
    }

    /// A POST of `body` to /v1/conversation, ready to send.
    fn conversation(&self, body: &Value) -> reqwest::RequestBuilder {
        self.post_to("/v1/conversation").json(body)
    }

    /// POST /v1/conversation and read the whole SSE answer.
    pub async fn sse(&self, body: Value) -> Answer {
        let response = self.conversation(&body).send().await.expect("request");
        Answer::read(response).await
    }

    /// POST /v1/conversation with `Accept: application/x-ndjson`.
    pub async fn ndjson(&self, body: Value) -> Answer {
        let response = self
            .conversation(&body)
            .header("accept", "application/x-ndjson")
            .send()
            .await
            .expect("request");
        Answer::read(response).await
    }

    /// POST /v1/conversation and return as soon as the response headers arrive, to read the
    /// events one by one.
    pub async fn open(&self, body: Value) -> EventReader {
        let response = self.conversation(&body).send().await.expect("request");
        assert_eq!(response.status(), 200, "conversation status");
        EventReader::new(response)
    }

    /// POST /v1/conversation in a background task; the handle yields the whole answer.
    pub fn spawn_sse(&self, body: Value) -> tokio::task::JoinHandle<Answer> {
        let request = self.conversation(&body);
        tokio::spawn(async move { Answer::read(request.send().await.expect("request")).await })
    }

    /// POST a JSON body to a path and return as soon as the response headers arrive, to read
    /// the body as raw text.
    pub async fn post_stream(&self, path: &str, body: Value) -> TextStream {
        let response = self
            .post_to(path)
            .json(&body)
            .send()
            .await
            .expect("request");
        TextStream::new(response)
    }

    /// POST a JSON body (or nothing) to a path, returning status and JSON.
    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.post_to(path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        status_and_json(request.send().await.expect("request")).await
    }

    /// Wait until the host's view of session `key` satisfies `cond` (fails after
    /// [`DEADLINE`]); woken by the registry's change counter, no polling.
    pub async fn wait_session(&self, key: &str, cond: impl Fn(&SessionView) -> bool) {
        let sessions = self.state.sessions().clone();
        let mut changes = sessions.subscribe();
        let wait = async {
            while !cond(&sessions.view(key)) {
                changes.changed().await.expect("registry alive");
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("session {key} did not reach the expected state"));
    }

    /// Wait until no session has a turn running or waiting (fails after [`DEADLINE`]).
    pub async fn wait_no_sessions(&self) {
        let sessions = self.state.sessions().clone();
        let mut changes = sessions.subscribe();
        let wait = async {
            while !sessions.is_empty() {
                changes.changed().await.expect("registry alive");
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("{} session(s) still registered", sessions.len()));
    }

    /// GET a path, returning status and JSON (or `Value::String` of the text).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let request = self.client.get(format!("{}{path}", self.url));
        status_and_json(request.send().await.expect("request")).await
    }
}

/// A response's status and JSON body (or `Value::String` of the text).
async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A client that never uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A response to `POST /v1/conversation`.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// The raw body.
    pub body: String,
    /// Parsed events (SSE `data:` or NDJSON lines), or empty for JSON errors.
    pub events: Vec<Value>,
    /// SSE `event:` names, in order (empty for NDJSON).
    pub names: Vec<String>,
}

impl Answer {
    /// Read a whole response.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response.text().await.expect("body");
        let mut events = Vec::new();
        let mut names = Vec::new();
        if content_type.starts_with("text/event-stream") {
            for frame in body.split("\n\n").filter(|f| !f.trim().is_empty()) {
                for line in frame.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        names.push(name.to_string());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        events.push(serde_json::from_str(data).expect("event JSON"));
                    }
                }
            }
        } else if content_type.starts_with("application/x-ndjson") {
            for line in body.lines().filter(|l| !l.is_empty()) {
                events.push(serde_json::from_str(line).expect("event JSON line"));
            }
        }
        Self {
            status,
            content_type,
            body,
            events,
            names,
        }
    }

    /// The JSON error body `{"error": {"code", "message"}}`.
    pub fn error(&self) -> Value {
        let v: Value = serde_json::from_str(&self.body).expect("JSON error body");
        v["error"].clone()
    }

    /// The event types in order.
    pub fn types(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// The final event.
    pub fn last(&self) -> &Value {
        self.events.last().expect("no events")
    }

    /// The concatenated delta texts.
    pub fn text(&self) -> String {
        delta_text(&self.events)
    }
}

/// The concatenated `text` of the `delta` events.
fn delta_text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "delta")
        .filter_map(|e| e["text"].as_str())
        .collect()
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Reads an SSE conversation answer event by event, as it streams.
pub struct EventReader {
    body: ByteStream,
    buf: String,
    /// Every event read so far.
    pub events: Vec<Value>,
}

impl EventReader {
    /// A reader of a `text/event-stream` response.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buf: String::new(),
            events: Vec::new(),
        }
    }

    /// The next event, or `None` at the end of the stream (fails after [`DEADLINE`]).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
                if let Some(data) = data {
                    let event: Value = serde_json::from_str(data).expect("event JSON");
                    self.events.push(event.clone());
                    return Some(event);
                }
                continue; // a comment (keep-alive)
            }
            let chunk = tokio::time::timeout(DEADLINE, self.body.next())
                .await
                .expect("the stream stalled")?;
            self.buf
                .push_str(&String::from_utf8_lossy(&chunk.expect("body chunk")));
        }
    }

    /// Read until the deltas so far contain `text`.
    pub async fn until_text(&mut self, text: &str) {
        while !self.text().contains(text) {
            self.next()
                .await
                .unwrap_or_else(|| panic!("stream ended before {text:?}: {:?}", self.events));
        }
    }

    /// Read to the end; returns every event of the stream.
    pub async fn rest(&mut self) -> Vec<Value> {
        while self.next().await.is_some() {}
        self.events.clone()
    }

    /// The concatenated delta texts read so far.
    pub fn text(&self) -> String {
        delta_text(&self.events)
    }
}

/// A streamed response body read as raw text, piece by piece as it arrives.
pub struct TextStream {
    /// HTTP status.
    pub status: u16,
    body: ByteStream,
    /// Everything read so far.
    pub seen: String,
}

impl TextStream {
    /// A reader of a streamed response.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            body: Box::pin(response.bytes_stream()),
            seen: String::new(),
        }
    }

    /// Read until the text so far contains `needle`; fails if the stream ends or breaks first.
    pub async fn until(&mut self, needle: &str) {
        while !self.seen.contains(needle) {
            let piece = self
                .body
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream ended before {needle:?}: {}", self.seen))
                .unwrap_or_else(|e| panic!("the stream broke before {needle:?}: {e}"));
            self.seen.push_str(&String::from_utf8_lossy(&piece));
        }
    }

    /// Read to the end; returns the text this call read (also added to [`TextStream::seen`]).
    /// Fails if the stream breaks instead of ending cleanly.
    pub async fn rest(&mut self) -> String {
        let mut text = String::new();
        while let Some(piece) = self.body.next().await {
            match piece {
                Ok(piece) => text.push_str(&String::from_utf8_lossy(&piece)),
                Err(e) => panic!("the stream broke instead of ending cleanly: {e}; got {text}"),
            }
        }
        self.seen.push_str(&text);
        text
    }
}

/// The non-system messages of an upstream request body as (role, content) pairs; fails on a
/// message whose role or content is not a string.
pub fn chat_of(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            let text = |key: &str| {
                m[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("message {key} is not a string: {m}"))
                    .to_string()
            };
            (text("role"), text("content"))
        })
        .collect()
}

/// (role, content) pairs from string slices, to compare with [`chat_of`].
pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect()
}

/// The shared data folder beside the repository (`../shared/`, or `$GATEWAY_SHARED_DIR`),
/// which may not exist: tests add what it holds to their own copies.
fn shared_dir() -> PathBuf {
    match std::env::var_os("GATEWAY_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    }
}

/// OpenVoiceUI's real data (its default profile and voice prompt, MIT): the repository's copy
/// in `tests/fixtures/openvoiceui/`, then the shared data folder's `openvoiceui/` when it exists
/// beside the repository (`../shared/`, or `$GATEWAY_SHARED_DIR`), so tests check both.
pub fn openvoiceui_dirs() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![manifest.join("fixtures/openvoiceui")];
    dirs.extend(Some(shared_dir().join("openvoiceui")).filter(|dir| dir.is_dir()));
    dirs
}

/// The tool-call conformance pairs (`NAME.sse` + `NAME.json`): the repository's copy in
/// `gateway-openai-compat/tests/conformance-tools/`, then the shared data folder's
/// `conformance-tools/` when it exists.
pub fn tool_fixture_dirs() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![manifest.join("../gateway-openai-compat/tests/conformance-tools")];
    dirs.extend(Some(shared_dir().join("conformance-tools")).filter(|dir| dir.is_dir()));
    dirs
}

/// Wait until `cond` holds, polling, for at most 5 s.
pub async fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
