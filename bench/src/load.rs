//! The load generator: `concurrency` workers issue streaming turns against one target and
//! record time to first token, full-turn latency and errors in HDR histograms.
//!
//! A turn is one streaming HTTP request. Its SSE answer is parsed incrementally as bytes
//! arrive: TTFT is the time from sending the request to the arrival of the bytes holding the
//! first non-empty content token; the turn ends at `[DONE]` (OpenAI wire) or `text_done`
//! (the host's conversation events). A non-200 status, an error event, a transport error, a
//! timeout or a stream that ends without its final marker counts as an error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Barrier;

use crate::upstream::think_time;

/// Which protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST {base}/chat/completions`, OpenAI wire format, `stream: true`.
    ChatCompletions,
    /// The host's `POST /v1/conversation` with `event:` typed SSE events.
    Conversation,
}

/// Where and how a leg sends its turns.
#[derive(Debug, Clone)]
pub struct Target {
    /// Full URL of the streaming endpoint.
    pub url: String,
    /// Protocol spoken at `url`.
    pub protocol: Protocol,
    /// `model` for chat completions (a profile id when talking to the host), or the profile for
    /// the conversation endpoint.
    pub model: String,
    /// A system message to send with each chat-completions turn (the direct leg sends the same
    /// prompt the host would add, so both legs move the same bytes to the upstream).
    pub system_prompt: Option<Arc<str>>,
    /// `Authorization: Bearer` value to send, if any.
    pub api_key: Option<String>,
}

/// Workload of one leg.
#[derive(Debug, Clone)]
pub struct LegConfig {
    /// Human-readable leg name, used in session keys and messages.
    pub name: String,
    /// Number of concurrent workers.
    pub concurrency: usize,
    /// Measured turns to issue in total (the warm-up turns come on top).
    pub turns: u64,
    /// Stop issuing new turns after this long.
    pub max_duration: Duration,
    /// Upper bound for one turn, after which it counts as an error.
    pub turn_timeout: Duration,
    /// Unmeasured turns each worker runs first (see [`warmup_turns`]).
    pub warmup_turns: u64,
    /// Spread of the workers' first measured turns: worker `i` of `n` waits `i/n` of this
    /// before starting, so turns begin at a steady rate instead of all at once (zero: at once).
    pub stagger: Duration,
}

/// What one leg measured.
#[derive(Debug)]
pub struct LegResult {
    /// Turns that completed without error.
    pub completed: u64,
    /// Turns that failed.
    pub errors: u64,
    /// Failed warm-up turns (not part of `errors`).
    pub warmup_errors: u64,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Time to first token of completed turns, microseconds.
    pub ttft_us: Histogram<u64>,
    /// Time to first token minus the mock's own time to first token (its think time, carried
    /// by paced answers), microseconds; empty when the answers carry none.
    pub ttft_net_us: Histogram<u64>,
    /// Full-turn latency of completed turns, microseconds.
    pub total_us: Histogram<u64>,
    /// Error kinds and how often each happened.
    pub error_kinds: BTreeMap<String, u64>,
    /// Whether the leg stopped because `max_duration` ran out.
    pub hit_time_limit: bool,
}

impl LegResult {
    /// Completed turns per second over the measured part.
    pub fn turns_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }

    /// All turns issued in the measured part (completed and failed).
    pub fn issued(&self) -> u64 {
        self.completed + self.errors
    }
}

/// A fresh histogram for microsecond latencies up to 10 minutes.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Builds the pooled HTTP client a leg uses: no proxy, HTTP/1.1 keep-alive, one idle
/// connection kept per worker.
pub fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency.max(1))
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .context("building the load generator's HTTP client")
}

/// Outcome of one successful turn.
#[derive(Debug, Clone, Copy)]
pub struct TurnTiming {
    /// Time to the first content token.
    pub ttft: Duration,
    /// The upstream's own share of `ttft` (request received → first token sent), when the
    /// answer carried it.
    pub think: Option<Duration>,
    /// Time to the final marker.
    pub total: Duration,
}

/// Runs one turn: sends `message` and reads the streamed answer to its end.
pub async fn run_turn(
    client: &reqwest::Client,
    target: &Target,
    session_key: &str,
    message: &str,
    timeout: Duration,
) -> Result<TurnTiming, String> {
    match tokio::time::timeout(timeout, turn_inner(client, target, session_key, message)).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_owned()),
    }
}

async fn turn_inner(
    client: &reqwest::Client,
    target: &Target,
    session_key: &str,
    message: &str,
) -> Result<TurnTiming, String> {
    let body = match target.protocol {
        Protocol::ChatCompletions => {
            let mut messages = Vec::with_capacity(2);
            if let Some(system) = &target.system_prompt {
                messages.push(json!({"role": "system", "content": &**system}));
            }
            messages.push(json!({"role": "user", "content": message}));
            json!({
                "model": target.model,
                "stream": true,
                "messages": messages,
                "user": session_key,
            })
        }
        Protocol::Conversation => json!({
            "profile": target.model,
            "message": message,
            "session_key": session_key,
        }),
    };
    let body = serde_json::to_vec(&body).map_err(|e| format!("encoding request: {e}"))?;
    let mut request = client
        .post(&target.url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("x-session-key", session_key)
        .body(body);
    if let Some(key) = &target.api_key {
        request = request.bearer_auth(key);
    }
    let start = Instant::now();
    let response = request.send().await.map_err(|e| transport_kind(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let mut scanner = SseScanner::default();
    let mut first: Option<Instant> = None;
    let mut think: Option<Duration> = None;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading body: {}", transport_kind(&e)))?;
        let arrived = Instant::now();
        let mut outcome = Step::Continue;
        scanner.push(&chunk, |event, data| {
            if matches!(outcome, Step::Continue) {
                let step = match target.protocol {
                    Protocol::ChatCompletions => chat_event(data),
                    Protocol::Conversation => conversation_event(event, data),
                };
                match step {
                    Step::Token(upstream_think) => {
                        if first.is_none() {
                            first = Some(arrived);
                            think = upstream_think;
                        }
                    }
                    Step::Continue => {}
                    other => outcome = other,
                }
            }
        });
        match outcome {
            Step::Done => {
                let end = Instant::now();
                let Some(first) = first else {
                    return Err("answer without content".to_owned());
                };
                return Ok(TurnTiming {
                    ttft: first - start,
                    think,
                    total: end - start,
                });
            }
            Step::Error(kind) => return Err(kind),
            Step::Continue | Step::Token(_) => {}
        }
    }
    Err("stream ended without its final marker".to_owned())
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn transport_kind(err: &reqwest::Error) -> String {
    if err.is_connect() {
        "connect error".to_owned()
    } else if err.is_timeout() {
        "transport timeout".to_owned()
    } else if err.is_body() || err.is_decode() {
        "body error".to_owned()
    } else {
        "transport error".to_owned()
    }
}

/// What one SSE event means for the turn.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Continue,
    /// A non-empty content token, with the upstream think time it carries, if any.
    Token(Option<Duration>),
    Done,
    Error(String),
}

#[derive(Deserialize)]
struct ChatChunk {
    #[serde(default)]
    choices: Vec<ChatChoice>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChatChoice {
    #[serde(default)]
    delta: Option<ChatDelta>,
}

#[derive(Deserialize)]
struct ChatDelta {
    #[serde(default)]
    content: Option<String>,
}

fn chat_event(data: &str) -> Step {
    if data.trim() == "[DONE]" {
        return Step::Done;
    }
    match serde_json::from_str::<ChatChunk>(data) {
        Ok(ChatChunk {
            error: Some(error), ..
        }) => Step::Error(format!(
            "error in stream: {}",
            truncate(&error.to_string(), 80)
        )),
        Ok(chunk) => {
            let token = chunk.choices.iter().find_map(|c| {
                c.delta
                    .as_ref()
                    .and_then(|d| d.content.as_deref())
                    .filter(|t| !t.is_empty())
            });
            match token {
                Some(text) => Step::Token(think_time(text)),
                None => Step::Continue,
            }
        }
        Err(_) => Step::Error("malformed chunk".to_owned()),
    }
}

#[derive(Deserialize)]
struct ConversationEvent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn conversation_event(event: Option<&str>, data: &str) -> Step {
    let Ok(parsed) = serde_json::from_str::<ConversationEvent>(data) else {
        return Step::Error("malformed event".to_owned());
    };
    match event.or(parsed.kind.as_deref()) {
        Some("delta") if parsed.text.as_deref().is_some_and(|t| !t.is_empty()) => {
            Step::Token(parsed.text.as_deref().and_then(think_time))
        }
        Some("text_done") => Step::Done,
        Some("error") => {
            let detail = match &parsed.error {
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            Step::Error(format!("error event: {}", truncate(&detail, 80)))
        }
        _ => Step::Continue,
    }
}

/// An incremental SSE splitter: feed it byte chunks as they arrive, get `(event, data)` pairs.
/// Tolerates CRLF line ends, comment lines and `data:` with or without a space.
#[derive(Debug, Default)]
pub struct SseScanner {
    buf: Vec<u8>,
}

impl SseScanner {
    /// Appends `chunk` and calls `on_event(event_name, data)` for each event it completes.
    pub fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(Option<&str>, &str)) {
        // JSON never holds a raw CR, so dropping them turns CRLF into LF safely.
        self.buf
            .extend(chunk.iter().copied().filter(|&b| b != b'\r'));
        let mut start = 0;
        while let Some(pos) = find(&self.buf[start..], b"\n\n") {
            let block = &self.buf[start..start + pos];
            start += pos + 2;
            let Ok(block) = std::str::from_utf8(block) else {
                on_event(Some("error"), "{\"type\":\"error\"}");
                continue;
            };
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                } else if let Some(rest) = line.strip_prefix("event:") {
                    event = Some(rest.trim());
                }
            }
            if !data.is_empty() {
                on_event(event, &data);
            }
        }
        self.buf.drain(..start);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Runs one leg: `concurrency` workers share a turn counter until `turns` are issued or
/// `max_duration` passes.
pub async fn run_leg(target: &Target, config: &LegConfig) -> anyhow::Result<LegResult> {
    let concurrency = config.concurrency.max(1);
    let client = client(concurrency)?;
    let target = Arc::new(target.clone());
    let next = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let client = client.clone();
        let target = Arc::clone(&target);
        let next = Arc::clone(&next);
        let barrier = Arc::clone(&barrier);
        let config = config.clone();
        workers.push(tokio::spawn(async move {
            run_worker(worker, &client, &target, &config, &next, &barrier).await
        }));
    }
    // Every worker has finished its warm-up turns: the measured part starts now.
    barrier.wait().await;
    let started = Instant::now();
    let mut result = LegResult {
        completed: 0,
        errors: 0,
        warmup_errors: 0,
        elapsed: Duration::ZERO,
        ttft_us: new_histogram(),
        ttft_net_us: new_histogram(),
        total_us: new_histogram(),
        error_kinds: BTreeMap::new(),
        hit_time_limit: false,
    };
    for worker in workers {
        let stats = worker.await.context("a load worker panicked")?;
        result.completed += stats.completed;
        result.errors += stats.errors;
        result.warmup_errors += stats.warmup_errors;
        result.hit_time_limit |= stats.hit_time_limit;
        result
            .ttft_us
            .add(&stats.ttft_us)
            .context("merging TTFT histograms")?;
        result
            .ttft_net_us
            .add(&stats.ttft_net_us)
            .context("merging net TTFT histograms")?;
        result
            .total_us
            .add(&stats.total_us)
            .context("merging latency histograms")?;
        for (kind, n) in stats.error_kinds {
            *result.error_kinds.entry(kind).or_default() += n;
        }
    }
    result.elapsed = started.elapsed();
    Ok(result)
}

struct WorkerStats {
    completed: u64,
    errors: u64,
    warmup_errors: u64,
    hit_time_limit: bool,
    ttft_us: Histogram<u64>,
    ttft_net_us: Histogram<u64>,
    total_us: Histogram<u64>,
    error_kinds: BTreeMap<String, u64>,
}

async fn run_worker(
    worker: usize,
    client: &reqwest::Client,
    target: &Target,
    config: &LegConfig,
    next: &AtomicU64,
    barrier: &Barrier,
) -> WorkerStats {
    let session_key = format!("bench-{}-c{}-w{worker}", config.name, config.concurrency);
    let mut stats = WorkerStats {
        completed: 0,
        errors: 0,
        warmup_errors: 0,
        hit_time_limit: false,
        ttft_us: new_histogram(),
        ttft_net_us: new_histogram(),
        total_us: new_histogram(),
        error_kinds: BTreeMap::new(),
    };
    {
        for _ in 0..config.warmup_turns {
            let message = format!("Hello, this is worker {worker} warming up.");
            let warm = run_turn(client, target, &session_key, &message, config.turn_timeout).await;
            if warm.is_err() {
                stats.warmup_errors += 1;
            }
        }
    }
    barrier.wait().await;
    let deadline = Instant::now() + config.max_duration;
    let offset = stagger_offset(config.stagger, worker, config.concurrency);
    if !offset.is_zero() {
        tokio::time::sleep(offset).await;
    }
    loop {
        if Instant::now() >= deadline {
            stats.hit_time_limit = true;
            break;
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= config.turns {
            break;
        }
        let message = format!("What is the weather like today? Turn {n}, keep it short.");
        match run_turn(client, target, &session_key, &message, config.turn_timeout).await {
            Ok(timing) => {
                stats.completed += 1;
                stats.ttft_us.saturating_record(micros(timing.ttft));
                if let Some(think) = timing.think {
                    let net = timing.ttft.saturating_sub(think);
                    stats.ttft_net_us.saturating_record(micros(net));
                }
                stats.total_us.saturating_record(micros(timing.total));
            }
            Err(kind) => {
                stats.errors += 1;
                *stats.error_kinds.entry(kind).or_default() += 1;
            }
        }
    }
    stats
}

/// Unmeasured turns each worker runs first: at least one (it opens the worker's connection),
/// and about 50 per leg in all so that a single worker warms the code paths too.
pub fn warmup_turns(concurrency: usize) -> u64 {
    let concurrency = concurrency.max(1) as u64;
    50u64.div_ceil(concurrency).max(1)
}

/// How long worker `worker` of `concurrency` waits before its first measured turn: its share
/// of `stagger`, so that the workers' starts are spread evenly over it.
pub fn stagger_offset(stagger: Duration, worker: usize, concurrency: usize) -> Duration {
    let concurrency = concurrency.max(1);
    stagger.mul_f64(worker.min(concurrency) as f64 / concurrency as f64)
}

/// A duration in whole microseconds, at least 1 (the histogram's lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut scanner = SseScanner::default();
        let mut out = Vec::new();
        for chunk in chunks {
            scanner.push(chunk, |e, d| out.push((e.map(str::to_owned), d.to_owned())));
        }
        out
    }

    #[test]
    fn scanner_handles_split_crlf_and_comments() {
        let events = collect(&[
            b": keep-alive\r\n\r\ndata:{\"a\"",
            b":1}\r\n\r\nevent: delta\ndata: {\"text\":\"hi\"}\n",
            b"\ndata: [DONE]\n\n",
        ]);
        assert_eq!(
            events,
            vec![
                (None, "{\"a\":1}".to_owned()),
                (Some("delta".to_owned()), "{\"text\":\"hi\"}".to_owned()),
                (None, "[DONE]".to_owned()),
            ]
        );
    }

    #[test]
    fn stagger_spreads_workers_evenly_over_the_window() {
        let window = Duration::from_millis(400);
        assert_eq!(stagger_offset(window, 0, 4), Duration::ZERO);
        assert_eq!(stagger_offset(window, 1, 4), Duration::from_millis(100));
        assert_eq!(stagger_offset(window, 3, 4), Duration::from_millis(300));
        assert_eq!(stagger_offset(Duration::ZERO, 3, 4), Duration::ZERO);
        assert_eq!(stagger_offset(window, 0, 0), Duration::ZERO);
    }

    #[test]
    fn chat_events_classify() {
        assert_eq!(chat_event("[DONE]"), Step::Done);
        assert_eq!(
            chat_event(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#),
            Step::Continue
        );
        assert_eq!(
            chat_event(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#),
            Step::Token(None)
        );
        assert_eq!(
            chat_event(r#"{"choices":[{"delta":{"content":"~think=250us~Hi"}}]}"#),
            Step::Token(Some(Duration::from_micros(250)))
        );
        assert_eq!(chat_event(r#"{"choices":[]}"#), Step::Continue);
        assert!(matches!(
            chat_event(r#"{"error":{"message":"boom"}}"#),
            Step::Error(_)
        ));
    }

    #[test]
    fn conversation_events_classify() {
        assert_eq!(
            conversation_event(Some("handshake"), r#"{"type":"handshake","ms":3}"#),
            Step::Continue
        );
        assert_eq!(
            conversation_event(Some("delta"), r#"{"type":"delta","text":"Hi"}"#),
            Step::Token(None)
        );
        assert_eq!(
            conversation_event(None, r#"{"type":"text_done","response":"Hi"}"#),
            Step::Done
        );
        assert!(matches!(
            conversation_event(Some("error"), r#"{"type":"error","error":"x"}"#),
            Step::Error(_)
        ));
    }
}
