//! A chaos upstream: an OpenAI-compatible streaming server on 127.0.0.1, written on raw TCP so
//! it can misbehave below HTTP. From a fixed seed, each request either streams a correct answer
//! or gets one fault: the socket closed at once, a stall before the first or between tokens
//! (longer than the host's timeouts), garbage bytes instead of HTTP or inside the stream, a
//! cleanly ended but truncated stream, HTTP 429/500/503, or a close in the middle of a chunk.
//! Decisions are drawn in arrival order from a SplitMix64 sequence, so a seed fixes how many
//! faults of each kind a run injects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the chaos upstream does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// A correct streamed answer.
    None,
    /// Close the socket without answering.
    Refuse,
    /// Send the headers, then nothing (beyond the first-token timeout).
    StallBeforeFirstToken,
    /// Send one token, then nothing (beyond the idle timeout).
    StallBetweenTokens,
    /// Random bytes instead of an HTTP response.
    GarbageResponse,
    /// A token, then random bytes inside the event stream, then the end of the body.
    GarbageInStream,
    /// A few tokens, then a cleanly ended body without `finish_reason` or `[DONE]`.
    Truncated,
    /// HTTP 429 with `Retry-After` and a provider error JSON.
    Status429,
    /// HTTP 500 with a provider error JSON.
    Status500,
    /// HTTP 503 with a plain-text body.
    Status503,
    /// A few tokens, then the socket closed in the middle of a chunk.
    CloseMidStream,
}

impl Fault {
    /// Every fault kind (not `None`).
    pub const ALL: [Fault; 10] = [
        Fault::Refuse,
        Fault::StallBeforeFirstToken,
        Fault::StallBetweenTokens,
        Fault::GarbageResponse,
        Fault::GarbageInStream,
        Fault::Truncated,
        Fault::Status429,
        Fault::Status500,
        Fault::Status503,
        Fault::CloseMidStream,
    ];

    /// Short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Fault::None => "none (correct stream)",
            Fault::Refuse => "refuse (socket closed at once)",
            Fault::StallBeforeFirstToken => "stall before first token",
            Fault::StallBetweenTokens => "stall between tokens",
            Fault::GarbageResponse => "garbage instead of HTTP",
            Fault::GarbageInStream => "garbage inside the stream",
            Fault::Truncated => "truncated stream",
            Fault::Status429 => "HTTP 429",
            Fault::Status500 => "HTTP 500",
            Fault::Status503 => "HTTP 503",
            Fault::CloseMidStream => "close mid-stream",
        }
    }
}

/// SplitMix64: a tiny, well-distributed generator; enough for test decisions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Settings of a chaos upstream.
#[derive(Debug, Clone, Copy)]
pub struct ChaosConfig {
    /// Seed of the decision sequence.
    pub seed: u64,
    /// Faulty requests per thousand.
    pub faults_per_mille: u64,
    /// Longest stall; a stall also ends as soon as the host closes the connection.
    pub stall: Duration,
}

struct Shared {
    config: ChaosConfig,
    rng: Mutex<SplitMix64>,
    counts: Mutex<BTreeMap<Fault, u64>>,
    requests: AtomicU64,
    connections: AtomicUsize,
}

/// A running chaos upstream; stops accepting when dropped.
pub struct ChaosUpstream {
    /// Listening address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl ChaosUpstream {
    /// Start on 127.0.0.1:0.
    pub async fn start(config: ChaosConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            config,
            rng: Mutex::new(SplitMix64::new(config.seed)),
            counts: Mutex::new(BTreeMap::new()),
            requests: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
        });
        let (stop, mut stopped) = watch::channel(false);
        let accept_shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let socket = tokio::select! {
                    _ = stopped.changed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                };
                let shared = accept_shared.clone();
                let stopped = stopped.clone();
                shared.connections.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let _ = serve_connection(socket, &shared, stopped).await;
                    shared.connections.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
        Self { addr, shared, stop }
    }

    /// `http://addr/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests answered so far, by what was done to them.
    pub fn counts(&self) -> BTreeMap<Fault, u64> {
        self.shared.counts.lock().clone()
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Acquire)
    }

    /// Connections open now (server side).
    pub fn open_connections(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }

    /// Stop accepting and close idle connections.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for ChaosUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn draw(shared: &Shared) -> (Fault, u64) {
    let mut rng = shared.rng.lock();
    let fault = if rng.below(1000) < shared.config.faults_per_mille {
        Fault::ALL[rng.below(Fault::ALL.len() as u64) as usize]
    } else {
        Fault::None
    };
    let extra = rng.next_u64();
    *shared.counts.lock().entry(fault).or_insert(0) += 1;
    (fault, extra)
}

/// Read one request (headers and a Content-Length body). `None` when the peer closed.
async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut content_length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if first && line.trim().is_empty() {
            continue;
        }
        first = false;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

fn sse_chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-chaos", "object": "chat.completion.chunk", "created": 1,
        "model": "chaos", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {body}\n\n")
}

/// One HTTP/1.1 chunk of a chunked body.
fn http_chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                           cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

fn tokens(n: u64) -> Vec<String> {
    vec![
        "Chaos".into(),
        " answer".into(),
        format!(" {n}"),
        ".".into(),
    ]
}

fn garbage(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Wait until the peer closes the connection or `limit` passes.
async fn stall(reader: &mut BufReader<TcpStream>, limit: Duration) {
    let mut sink = [0u8; 256];
    let _ = tokio::time::timeout(limit, async {
        while let Ok(n) = reader.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn serve_connection(
    socket: TcpStream,
    shared: &Shared,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut reader = BufReader::new(socket);
    loop {
        let request = tokio::select! {
            _ = stopped.changed() => return Ok(()),
            request = read_request(&mut reader) => request?,
        };
        let Some(_body) = request else {
            return Ok(());
        };
        let n = shared.requests.fetch_add(1, Ordering::AcqRel);
        let (fault, extra) = draw(shared);
        let mut rng = SplitMix64::new(extra);
        let stall_limit = shared.config.stall;
        let words = tokens(n);
        let w = reader.get_mut();
        match fault {
            Fault::None => {
                w.write_all(STREAM_HEAD.as_bytes()).await?;
                let role = sse_chunk(json!({"role": "assistant", "content": ""}), None);
                w.write_all(&http_chunk(role.as_bytes())).await?;
                for word in &words {
                    let piece = sse_chunk(json!({"content": word}), None);
                    w.write_all(&http_chunk(piece.as_bytes())).await?;
                }
                let end = sse_chunk(json!({}), Some("stop")) + "data: [DONE]\n\n";
                w.write_all(&http_chunk(end.as_bytes())).await?;
                w.write_all(b"0\r\n\r\n").await?;
            }
            Fault::Refuse => return Ok(()),
            Fault::StallBeforeFirstToken => {
                w.write_all(STREAM_HEAD.as_bytes()).await?;
                stall(&mut reader, stall_limit).await;
                return Ok(());
            }
            Fault::StallBetweenTokens => {
                w.write_all(STREAM_HEAD.as_bytes()).await?;
                let piece = sse_chunk(json!({"content": words[0]}), None);
                w.write_all(&http_chunk(piece.as_bytes())).await?;
                stall(&mut reader, stall_limit).await;
                return Ok(());
            }
            Fault::GarbageResponse => {
                let len = 16 + rng.below(200) as usize;
                w.write_all(&garbage(&mut rng, len)).await?;
                return Ok(());
            }
            Fault::GarbageInStream => {
                w.write_all(STREAM_HEAD.as_bytes()).await?;
                let piece = sse_chunk(json!({"content": words[0]}), None);
                w.write_all(&http_chunk(piece.as_bytes())).await?;
                let mut junk = b"data: ".to_vec();
                let len = 1 + rng.below(300) as usize;
                junk.extend(garbage(&mut rng, len));
                junk.extend_from_slice(b"\n\n");
                w.write_all(&http_chunk(&junk)).await?;
                w.write_all(b"0\r\n\r\n").await?;
            }
            Fault::Truncated => {
                w.write_all(STREAM_HEAD.as_bytes()).await?;
                for word in &words[..2] {
                    let piece = sse_chunk(json!({"content": word}), None);
                    w.write_all(&http_chunk(piece.as_bytes())).await?;
                }
                w.write_all(b"0\r\n\r\n").await?;
            }
            Fault::Status429 | Fault::Status500 | Fault::Status503 => {
                let (status, extra_header, body) = match fault {
                    Fault::Status429 => (
                        "429 Too Many Requests",
                        "retry-after: 1\r\ncontent-type: application/json\r\n",
                        json!({"error": {"message": "Rate limit reached", "type": "rate_limit"}})
                            .to_string(),
                    ),
                    Fault::Status500 => (
                        "500 Internal Server Error",
                        "content-type: application/json\r\n",
                        json!({"error": {"message": "internal error", "type": "server_error"}})
                            .to_string(),
                    ),
                    _ => (
                        "503 Service Unavailable",
                        "content-type: text/plain\r\n",
                        "upstream overloaded".to_string(),
                    ),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{extra_header}content-length: {}\r\n\r\n",
                    body.len()
                );
                w.write_all(head.as_bytes()).await?;
                w.write_all(body.as_bytes()).await?;
            }
            Fault::CloseMidStream => {
                w.write_all(STREAM_HEAD.as_bytes()).await?;
                let piece = sse_chunk(json!({"content": words[0]}), None);
                w.write_all(&http_chunk(piece.as_bytes())).await?;
                let next = sse_chunk(json!({"content": words[1]}), None);
                let chunk = http_chunk(next.as_bytes());
                w.write_all(&chunk[..chunk.len() / 2]).await?;
                return Ok(());
            }
        }
        w.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }
}
