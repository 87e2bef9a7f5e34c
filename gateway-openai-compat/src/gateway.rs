//! The [`OpenAiCompat`] gateway: pooled HTTP clients (one per thread, `clients.rs`), `POST
//! {base_url}/chat/completions` with `stream: true`, answers turned into events.

use std::collections::VecDeque;
use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, Stream};
use gateway_core::error::causes;
use gateway_core::{
    CancelWatch, CancellationToken, Event, EventStream, Gateway, GatewayError, Health,
    InstanceConfig, Secrets, Turn, Usage,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Response, Url};

use crate::body::{ChatRequest, EscapedPrompts, StreamOptions};
use crate::clients::{ClientSettings, Clients};
use crate::completion::{error_body_message, parse_completion_body, Completion, CompletionDecoder};
use crate::config::{parse_base_url, ApiKey, Auth, OpenAiCompatConfig};
use crate::KIND_ID;

/// Most bytes read from an error body or a non-streamed JSON answer.
const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Limit of the health probe.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A gateway instance speaking the OpenAI Chat Completions streaming protocol.
pub struct OpenAiCompat {
    id: String,
    config: OpenAiCompatConfig,
    clients: Clients,
    chat_url: Url,
    models_url: Url,
    host: String,
    headers: HeaderMap,
    not_configured: Option<GatewayError>,
    /// The key and every configured header value: masked in every error.
    secrets: Arc<Secrets>,
    /// Long system prompts, JSON-escaped once.
    prompts: EscapedPrompts,
}

impl fmt::Debug for OpenAiCompat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompat")
            .field("id", &self.id)
            .field("chat_url", &self.chat_url.as_str())
            .field("model", &self.config.model)
            .field("configured", &self.not_configured.is_none())
            .finish_non_exhaustive()
    }
}

/// Build an instance from a host configuration section (the kind's registered factory).
pub fn build(instance: &InstanceConfig) -> Result<Arc<dyn Gateway>, GatewayError> {
    let config = OpenAiCompatConfig::from_instance(instance)?;
    Ok(Arc::new(OpenAiCompat::new(instance.id.clone(), config)?))
}

/// Why an HTTP client could not be built (at start-up, or later on a new thread).
fn client_error(e: &reqwest::Error) -> String {
    format!("cannot build the HTTP client: {e}")
}

impl OpenAiCompat {
    /// An instance with the given id and configuration. Fails on an invalid base URL, header
    /// or value; a missing key is reported by `is_configured` and every `stream` call instead.
    pub fn new(id: impl Into<String>, config: OpenAiCompatConfig) -> Result<Self, GatewayError> {
        let id = id.into();
        let invalid = |reason: String| GatewayError::InvalidConfig {
            gateway: id.clone(),
            reason,
        };
        config.validate().map_err(invalid)?;
        let base = parse_base_url(&config.base_url, "base_url").map_err(invalid)?;
        let join = |path: &str| {
            Url::parse(&format!("{}/{path}", base.as_str().trim_end_matches('/')))
                .map_err(|e| invalid(format!("base_url: cannot append /{path}: {e}")))
        };
        let chat_url = join("chat/completions")?;
        let models_url = join("models")?;
        let host = host_of(&base);

        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("headers: '{name}' is not a valid header name")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("headers: the value of '{name}' is not valid")))?;
            headers.insert(name, value);
        }
        if let (Auth::Bearer, Some(key)) = (config.auth, &config.api_key) {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    invalid("the API key contains characters not allowed in a header".into())
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }

        let secrets = Arc::new(Secrets::new(
            config
                .api_key
                .iter()
                .map(ApiKey::expose)
                .chain(config.headers.values().map(String::as_str)),
        ));
        let clients = Clients::new(ClientSettings {
            connect_timeout: config.connect_timeout,
            no_proxy: is_loopback(&base),
        })
        .map_err(|e| invalid(client_error(&e)))?;

        let not_configured = (config.auth == Auth::Bearer && config.api_key.is_none()).then(|| {
            GatewayError::NotConfigured {
                gateway: id.clone(),
                reason: format!("{} is not set", config.api_key_source),
            }
        });
        Ok(Self {
            id,
            config,
            clients,
            chat_url,
            models_url,
            host,
            headers,
            not_configured,
            secrets,
            prompts: EscapedPrompts::default(),
        })
    }

    /// The calling thread's HTTP client.
    fn client(&self) -> Result<&reqwest::Client, GatewayError> {
        self.clients
            .current()
            .map_err(|e| GatewayError::Other(client_error(&e)))
    }

    /// The resolved configuration (its key prints as `***`).
    pub fn config(&self) -> &OpenAiCompatConfig {
        &self.config
    }

    /// The endpoint turns are posted to: `{base_url}/chat/completions`.
    pub fn chat_url(&self) -> &str {
        self.chat_url.as_str()
    }

    /// Remove the key and header values from a message the upstream may have echoed them in.
    fn redact(&self, error: GatewayError) -> GatewayError {
        redact(error, &self.secrets)
    }

    /// Map a failure to send the request (before any response header) to its cause.
    fn send_error(&self, error: &reqwest::Error) -> GatewayError {
        let host = self.host.clone();
        if error.is_timeout() {
            return GatewayError::ConnectTimeout {
                host,
                after: self.config.connect_timeout,
            };
        }
        let chain = chain_text(error);
        let io_kind = io_kind(error);
        let reason = if chain.contains("dns error") || chain.contains("lookup address") {
            format!("DNS lookup failed ({})", last_cause(error))
        } else {
            match io_kind {
                Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".into(),
                Some(std::io::ErrorKind::ConnectionReset) => "connection reset".into(),
                Some(std::io::ErrorKind::ConnectionAborted) => "connection aborted".into(),
                _ if error.is_connect() => last_cause(error),
                _ => format!("request failed: {}", last_cause(error)),
            }
        };
        GatewayError::Connect { host, reason }
    }

    /// The HTTP error of a non-2xx response, with the provider's message.
    async fn http_error(
        &self,
        response: Response,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> GatewayError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_body(response, deadline, self.config.first_token_timeout, cancel)
            .await
            .unwrap_or_default();
        let message = error_body_message(&body).unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no error message")
                .to_string()
        });
        GatewayError::Http {
            status: status.as_u16(),
            message,
            retry_after,
        }
    }

    async fn start(&self, turn: Turn) -> Result<EventStream, GatewayError> {
        let started = Instant::now();
        let first_deadline = started + self.config.first_token_timeout;
        let model = turn.model.as_deref().unwrap_or(&self.config.model);
        let request = ChatRequest {
            model,
            messages: self.prompts.wire(&turn.messages),
            stream: true,
            max_tokens: turn.max_tokens.unwrap_or(self.config.max_tokens),
            temperature: turn.temperature.or(self.config.temperature),
            stream_options: StreamOptions {
                include_usage: true,
            },
            extra: &turn.extra,
        };
        let body = request
            .to_body()
            .map_err(|e| GatewayError::Other(format!("cannot encode the request: {e}")))?;
        tracing::debug!(
            gateway = %self.id,
            model,
            messages = turn.messages.len(),
            bytes = body.len(),
            "openai-compat request start"
        );
        let send = self
            .client()?
            .post(self.chat_url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, "text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send();
        let response = tokio::select! {
            biased;
            () = turn.cancel.cancelled() => return Err(GatewayError::Cancelled),
            sent = tokio::time::timeout_at(first_deadline.into(), send) => match sent {
                Err(_) => return Err(GatewayError::FirstTokenTimeout(self.config.first_token_timeout)),
                Ok(Err(e)) => return Err(self.send_error(&e)),
                Ok(Ok(response)) => response,
            },
        };

        let status = response.status();
        if !status.is_success() {
            return Err(self
                .http_error(response, first_deadline, &turn.cancel)
                .await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let mut reader = Reader {
            gateway: self.id.clone(),
            response: None,
            decoder: CompletionDecoder::new(),
            pending: VecDeque::new(),
            cancelled: CancelWatch::new(turn.cancel.clone()),
            timer: Box::pin(tokio::time::sleep_until(first_deadline.into())),
            started,
            first_token_timeout: self.config.first_token_timeout,
            idle_timeout: self.config.idle_timeout,
            ttft: None,
            answering: false,
            last_read: started,
            ended: false,
            secrets: self.secrets.clone(),
        };
        if content_type.is_empty() || content_type.starts_with("text/event-stream") {
            reader.response = Some(response);
        } else if content_type.starts_with("application/json") {
            let body = read_body(
                response,
                first_deadline,
                self.config.first_token_timeout,
                &turn.cancel,
            )
            .await?;
            let completion = parse_completion_body(&body)?;
            let text = completion.text.clone();
            reader.on_deltas((!text.is_empty()).then_some(text));
            reader.complete(completion);
        } else {
            let shown: String = content_type.chars().take(60).collect();
            return Err(GatewayError::Malformed(format!(
                "unexpected content type '{shown}' (expected text/event-stream)"
            )));
        }
        Ok(Box::pin(reader))
    }
}

#[async_trait]
impl Gateway for OpenAiCompat {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        KIND_ID
    }

    fn capabilities(&self) -> Vec<&'static str> {
        vec!["streaming", "sessions", "reset"]
    }

    fn is_configured(&self) -> Result<(), GatewayError> {
        match &self.not_configured {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.config.model)
    }

    async fn health(&self) -> Health {
        if let Some(error) = &self.not_configured {
            return Health::down(error.to_string());
        }
        let started = Instant::now();
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => return Health::down(e.to_string()),
        };
        let probe = client
            .get(self.models_url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, "application/json")
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await;
        match probe {
            Ok(response) if response.status().is_success() => {
                Health::up(Some(started.elapsed().as_millis() as u64))
            }
            Ok(response) => Health::down(format!(
                "GET /models answered HTTP {}",
                response.status().as_u16()
            )),
            Err(e) if e.is_timeout() && !e.is_connect() => Health::down(format!(
                "GET /models: no answer within {} ms",
                HEALTH_TIMEOUT.as_millis()
            )),
            Err(e) => Health::down(self.redact(self.send_error(&e)).to_string()),
        }
    }

    async fn stream(&self, turn: Turn) -> Result<EventStream, GatewayError> {
        if let Some(error) = &self.not_configured {
            return Err(error.clone());
        }
        let started = Instant::now();
        match self.start(turn).await {
            Ok(stream) => Ok(stream),
            Err(error) => {
                let error = self.redact(error);
                log_failure(&self.id, &error, started.elapsed());
                Err(error)
            }
        }
    }
}

/// Reads a streamed answer and yields its events; dropping it drops the HTTP response,
/// which closes the upstream connection.
struct Reader {
    gateway: String,
    response: Option<Response>,
    decoder: CompletionDecoder,
    pending: VecDeque<Result<Event, GatewayError>>,
    /// Fires when the turn is cancelled; cheap to poll at every read.
    cancelled: CancelWatch,
    /// The first-token deadline, then the idle deadline. Reads do not move it: when it fires
    /// early (a read came since it was set) it is set again from `last_read`, so a token costs
    /// no timer update.
    timer: Pin<Box<tokio::time::Sleep>>,
    started: Instant,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    ttft: Option<Duration>,
    /// True once the answer started (its first text or tool call): the timer then watches
    /// the gaps between reads.
    answering: bool,
    /// When the last chunk arrived.
    last_read: Instant,
    ended: bool,
    secrets: Arc<Secrets>,
}

impl Stream for Reader {
    type Item = Result<Event, GatewayError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.pending.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let Some(response) = this.response.as_mut() else {
                this.ended = true;
                return Poll::Ready(None);
            };
            if this.cancelled.poll_cancelled(cx).is_ready() {
                this.fail(GatewayError::Cancelled);
                continue;
            }
            // A chunk that is ready wins over a deadline that passed meanwhile. (Dropping a
            // pending `chunk()` loses nothing: it only polls the body.)
            let read = match std::pin::pin!(response.chunk()).poll(cx) {
                Poll::Ready(read) => Some(read),
                Poll::Pending => None,
            };
            if let Some(read) = read {
                this.last_read = Instant::now();
                this.on_read(read);
                continue;
            }
            ready!(this.timer.as_mut().poll(cx));
            if this.decoder.is_finished() {
                this.finish_answer();
                continue;
            }
            if !this.answering {
                this.fail(GatewayError::FirstTokenTimeout(this.first_token_timeout));
                continue;
            }
            let idle_deadline = this.last_read + this.idle_timeout;
            if Instant::now() < idle_deadline {
                this.timer.as_mut().reset(idle_deadline.into());
            } else {
                this.fail(GatewayError::IdleTimeout(this.idle_timeout));
            }
        }
    }
}

impl Reader {
    /// Take one read of the body: decode it, or end the stream on its end or failure.
    fn on_read(&mut self, read: reqwest::Result<Option<Bytes>>) {
        match read {
            Ok(Some(bytes)) => match self.decoder.push(&bytes) {
                Ok(deltas) => {
                    self.on_deltas(deltas);
                    if !self.answering && self.decoder.has_tool_calls() {
                        self.start_answer();
                    }
                    if let Some(error) = self.decoder.take_error() {
                        self.fail(error);
                    } else if self.decoder.is_done() {
                        self.finish_answer();
                    }
                }
                Err(error) => self.fail(error),
            },
            Ok(None) => match self.decoder.finish_with_deltas() {
                Ok((deltas, completion)) => {
                    self.on_deltas(deltas);
                    match self.decoder.take_error() {
                        Some(error) => self.fail(error),
                        None => self.complete(completion),
                    }
                }
                Err(error) => self.fail(error),
            },
            Err(error) => {
                if self.decoder.is_finished() {
                    self.finish_answer();
                } else {
                    tracing::debug!(gateway = %self.gateway, cause = %last_cause(&error), "upstream body failed");
                    self.fail(GatewayError::Truncated);
                }
            }
        }
    }

    /// The answer started: from now on the timer watches the gap between reads.
    fn start_answer(&mut self) {
        self.answering = true;
        let idle_deadline = Instant::now() + self.idle_timeout;
        self.timer.as_mut().reset(idle_deadline.into());
    }

    /// Queue deltas, preceded by the handshake before the first one (tool calls are not
    /// spoken: the handshake times the first word).
    fn on_deltas(&mut self, deltas: impl IntoIterator<Item = String>) {
        for text in deltas {
            if self.ttft.is_none() {
                let ttft = self.started.elapsed();
                self.ttft = Some(ttft);
                if !self.answering {
                    self.start_answer();
                }
                self.pending.push_back(Ok(Event::Handshake {
                    ms: ttft.as_millis() as u64,
                    gateway: None,
                }));
            }
            self.pending.push_back(Ok(Event::Delta { text }));
        }
    }

    /// The decoder saw the end of the answer: complete it, or fail when a tool call cannot be.
    fn finish_answer(&mut self) {
        match self.decoder.completion() {
            Ok(completion) => self.complete(completion),
            Err(error) => self.fail(error),
        }
    }

    /// Queue the answer's tool calls and the final `text_done`, and release the connection.
    fn complete(&mut self, completion: Completion) {
        if let Some(mut response) = self.response.take() {
            // Read an already-received end of body so the connection can go back to the pool.
            for _ in 0..4 {
                match response.chunk().now_or_never() {
                    Some(Ok(Some(_))) => continue,
                    _ => break,
                }
            }
        }
        tracing::debug!(
            gateway = %self.gateway,
            chars = completion.text.len(),
            ttft_ms = self.ttft.map(|t| t.as_millis() as u64),
            total_ms = self.started.elapsed().as_millis() as u64,
            finish_reason = completion.finish_reason.as_deref(),
            tool_calls = completion.tool_calls.len(),
            "openai-compat stream finished"
        );
        self.pending.extend(
            completion
                .tool_calls
                .into_iter()
                .map(|call| Ok(Event::tool_call(call))),
        );
        let usage: Option<Usage> = completion.usage;
        self.pending.push_back(Ok(Event::TextDone {
            response: completion.text,
            actions: Vec::new(),
            timing: None,
            usage,
            finish_reason: completion.finish_reason,
            interrupted: false,
            memory_error: None,
        }));
        self.ended = true;
    }

    /// Queue the final error and drop the connection.
    fn fail(&mut self, error: GatewayError) {
        self.response = None;
        let error = redact(error, &self.secrets);
        log_failure(&self.gateway, &error, self.started.elapsed());
        self.pending.push_back(Err(error));
        self.ended = true;
    }
}

fn log_failure(gateway: &str, error: &GatewayError, elapsed: Duration) {
    if matches!(error, GatewayError::Cancelled) {
        tracing::debug!(
            gateway,
            elapsed_ms = elapsed.as_millis() as u64,
            "openai-compat turn cancelled"
        );
    } else {
        tracing::warn!(gateway, cause = %error.cause(), error = %error, elapsed_ms = elapsed.as_millis() as u64, "openai-compat upstream error");
    }
}

/// Read a whole (bounded) body before `deadline`, unless the turn is cancelled.
async fn read_body(
    mut response: Response,
    deadline: Instant,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Vec<u8>, GatewayError> {
    let mut body = Vec::new();
    loop {
        let chunk = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(GatewayError::Cancelled),
            chunk = tokio::time::timeout_at(deadline.into(), response.chunk()) => chunk,
        };
        match chunk {
            Err(_) => return Err(GatewayError::FirstTokenTimeout(timeout)),
            Ok(Ok(Some(bytes))) => {
                let room = BODY_LIMIT.saturating_sub(body.len());
                body.extend_from_slice(&bytes[..bytes.len().min(room)]);
                if room <= bytes.len() {
                    return Ok(body);
                }
            }
            Ok(Ok(None)) => return Ok(body),
            Ok(Err(_)) if !body.is_empty() => return Ok(body),
            Ok(Err(_)) => return Err(GatewayError::Truncated),
        }
    }
}

/// `Retry-After` in seconds (integer or decimal); HTTP dates are ignored.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// Replace every secret (the key, header values) in the error's text with `***`.
fn redact(error: GatewayError, secrets: &Secrets) -> GatewayError {
    if secrets.is_empty() {
        return error;
    }
    let clean = |s: String| secrets.scrub_owned(s);
    match error {
        GatewayError::Http {
            status,
            message,
            retry_after,
        } => GatewayError::Http {
            status,
            message: clean(message),
            retry_after,
        },
        GatewayError::Provider(m) => GatewayError::Provider(clean(m)),
        GatewayError::Malformed(m) => GatewayError::Malformed(clean(m)),
        GatewayError::Other(m) => GatewayError::Other(clean(m)),
        GatewayError::Connect { host, reason } => GatewayError::Connect {
            host,
            reason: clean(reason),
        },
        other => other,
    }
}

/// `host:port` of a URL, for error messages (never the path or query).
fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// True for `localhost`, `*.localhost` and loopback IP addresses.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn chain_text(error: &reqwest::Error) -> String {
    let sources = error.source().into_iter().flat_map(causes);
    sources
        .map(|cause| format!("{}\n", cause.to_string().to_ascii_lowercase()))
        .collect()
}

fn io_kind(error: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut sources = error.source().into_iter().flat_map(causes);
    sources.find_map(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
    })
}

/// The innermost cause's message (no URL: reqwest puts the URL in its own outer message).
fn last_cause(error: &reqwest::Error) -> String {
    match error.source().into_iter().flat_map(causes).last() {
        Some(cause) => cause.to_string(),
        None => "unknown cause".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_loopback() {
        let gw = OpenAiCompat::new(
            "x",
            OpenAiCompatConfig {
                base_url: "http://127.0.0.1:9/v1/".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(gw.chat_url(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(gw.models_url.as_str(), "http://127.0.0.1:9/v1/models");
        for (url, loopback) in [
            ("http://127.0.0.1:1/v1", true),
            ("http://[::1]:1/v1", true),
            ("http://localhost/v1", true),
            ("https://api.openai.com/v1", false),
            ("http://10.0.0.1/v1", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(url).unwrap()), loopback, "{url}");
        }
    }

    #[test]
    fn retry_after_and_redaction() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let secrets = Secrets::new(["sk-123", "HdrSecret777"]);
        let error = redact(
            GatewayError::Http {
                status: 401,
                message: "bad key sk-123, header HdrSecret777".into(),
                retry_after: None,
            },
            &secrets,
        );
        assert_eq!(
            error.to_string(),
            "upstream HTTP 401: bad key ***, header ***"
        );
    }
}
