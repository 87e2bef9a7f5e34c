//! A fast mock OpenAI-compatible upstream, served in-process on `127.0.0.1:0`.
//!
//! Every `POST` (whatever the path and the model) is answered with the same precomputed
//! `text/event-stream` body: a role chunk, `tokens` content chunks, a finish chunk and
//! `data: [DONE]`. With no token delay the whole body goes out as one write, so the mock costs
//! as little as possible and the numbers measure the client and the proxy, not the mock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::sync::oneshot;

/// What the mock answers with.
#[derive(Debug, Clone)]
pub struct AnswerSpec {
    /// Number of content chunks (tokens) per answer.
    pub tokens: usize,
    /// Text of one token; the answer is this text repeated `tokens` times.
    pub token_text: String,
    /// Pause between two content chunks; zero sends the whole body at once.
    pub token_delay: Duration,
}

impl AnswerSpec {
    /// The full answer text a client should reassemble.
    pub fn answer(&self) -> String {
        self.token_text.repeat(self.tokens)
    }
}

/// Counters the mock keeps, readable while it runs.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Request body bytes received, summed.
    pub body_bytes: AtomicU64,
    /// Largest request body seen, in bytes (shows how much history a proxy forwards).
    pub max_body_bytes: AtomicU64,
}

/// Starts the first content token of a paced answer: the mock's own time to first token,
/// request received → first token sent, as `~think=<µs>us~`, so that a client can subtract
/// the upstream's share (and its timer jitter) from the time to first token it measured.
pub const THINK_PREFIX: &str = "~think=";

/// The mock's time to first token carried by a first token's text, if it has one.
pub fn think_time(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix(THINK_PREFIX)?;
    let (micros, _) = rest.split_once("us~")?;
    micros.parse().ok().map(Duration::from_micros)
}

struct Shared {
    /// The whole SSE body, for the no-delay case.
    whole: Bytes,
    /// The body split into its SSE events, for the delayed case.
    pieces: Vec<Bytes>,
    /// Text of one token (the first token of a paced answer gets the think-time prefix).
    token_text: String,
    delay: Duration,
    stats: Arc<UpstreamStats>,
}

/// A running mock upstream. Dropping it shuts the server down.
pub struct MockUpstream {
    addr: SocketAddr,
    stats: Arc<UpstreamStats>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and starts serving `spec`.
    pub async fn start(spec: &AnswerSpec) -> anyhow::Result<Self> {
        let pieces = sse_pieces(spec);
        let whole: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let stats = Arc::new(UpstreamStats::default());
        let shared = Arc::new(Shared {
            whole: Bytes::from(whole),
            pieces,
            token_text: spec.token_text.clone(),
            delay: spec.token_delay,
            stats: Arc::clone(&stats),
        });
        let app = Router::new()
            .route("/v1/models", get(models))
            .route("/models", get(models))
            .fallback(chat_completions)
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the mock upstream on 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("reading the mock upstream's address")?;
        // Small SSE writes must leave at once (Nagle would hold them for the peer's ACK).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(err) = served {
                eprintln!("mock upstream stopped: {err}");
            }
        });
        Ok(Self {
            addr,
            stats,
            shutdown: Some(tx),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The mock's counters.
    pub fn stats(&self) -> &Arc<UpstreamStats> {
        &self.stats
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// One `chat.completion.chunk` SSE frame with this `delta` object and finish reason.
fn frame(delta: &str, finish: &str) -> Bytes {
    const HEAD: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":"#;
    Bytes::from(format!(
        "data: {HEAD}{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
    ))
}

/// The frame of one content token.
fn content_frame(text: &str) -> Bytes {
    let token = serde_json::to_string(text).unwrap_or_else(|_| "\"x\"".to_owned());
    frame(&format!(r#"{{"content":{token}}}"#), "null")
}

/// The SSE events of one answer, each a complete `data: ...\n\n` frame.
fn sse_pieces(spec: &AnswerSpec) -> Vec<Bytes> {
    let mut pieces = Vec::with_capacity(spec.tokens + 3);
    pieces.push(frame(r#"{"role":"assistant","content":""}"#, "null"));
    for _ in 0..spec.tokens {
        pieces.push(content_frame(&spec.token_text));
    }
    pieces.push(frame("{}", "\"stop\""));
    pieces.push(Bytes::from_static(b"data: [DONE]\n\n"));
    pieces
}

async fn models() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"object":"list","data":[{"id":"bench-model","object":"model","created":1700000000,"owned_by":"bench"}]}"#,
    )
}

async fn chat_completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let received = std::time::Instant::now();
    let len = body.len() as u64;
    let stats = &shared.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.body_bytes.fetch_add(len, Ordering::Relaxed);
    stats.max_body_bytes.fetch_max(len, Ordering::Relaxed);
    let body = if shared.delay.is_zero() {
        Body::from(shared.whole.clone())
    } else {
        let pieces = shared.pieces.clone();
        let delay = shared.delay;
        let shared = Arc::clone(&shared);
        let stream = futures::stream::unfold(
            (pieces.into_iter().enumerate(), shared),
            move |(mut it, shared)| async move {
                let (i, mut piece) = it.next()?;
                // The role chunk goes out at once; each later chunk after the token delay.
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                if i == 1 {
                    let think = received.elapsed().as_micros();
                    let text = format!("{THINK_PREFIX}{think}us~{}", shared.token_text);
                    piece = content_frame(&text);
                }
                Some((Ok::<_, std::convert::Infallible>(piece), (it, shared)))
            },
        );
        Body::from_stream(stream)
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_time_round_trips_through_the_first_token() {
        let text = format!("{THINK_PREFIX}20154us~word ");
        assert_eq!(think_time(&text), Some(Duration::from_micros(20154)));
        assert_eq!(think_time("word "), None);
        assert_eq!(think_time("~think=x~word"), None);
    }

    #[test]
    fn body_has_tokens_finish_and_done() {
        let spec = AnswerSpec {
            tokens: 3,
            token_text: "ab ".into(),
            token_delay: Duration::ZERO,
        };
        let pieces = sse_pieces(&spec);
        assert_eq!(pieces.len(), 6);
        let text: String = pieces
            .iter()
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect();
        assert_eq!(text.matches(r#""content":"ab ""#).count(), 3);
        assert!(text.contains(r#""finish_reason":"stop""#));
        assert!(text.ends_with("data: [DONE]\n\n"));
        for piece in &pieces[..5] {
            let s = std::str::from_utf8(piece).unwrap();
            let json = s.trim_start_matches("data: ").trim_end();
            let _: serde_json::Value = serde_json::from_str(json).unwrap();
        }
    }
}
