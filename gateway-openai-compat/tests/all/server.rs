//! A tiny HTTP/1.1 upstream for tests: it records each request and hands the socket to a
//! handler that writes raw bytes, so tests control splits, stalls and closes exactly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gateway_core::{Event, EventStream, Gateway, GatewayError, Turn};
use gateway_openai_compat::{ApiKey, OpenAiCompat, OpenAiCompatConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A key distinctive enough to search every error for.
pub const SECRET: &str = "sk-test-SECRET-d0-n0t-leak-7f3a9c";

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub requests: mpsc::UnboundedReceiver<Recorded>,
    pub connections: Arc<AtomicUsize>,
}

impl Server {
    pub fn base_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Start a server on 127.0.0.1:0; `handler` gets each request and its socket.
pub async fn serve<F, Fut>(handler: F) -> Server
where
    F: Fn(Recorded, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, requests) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = socket.set_nodelay(true);
            let tx = tx.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Some(request) = read_request(&mut socket).await else {
                    return;
                };
                let _ = tx.send(request.clone());
                handler(request, socket).await;
            });
        }
    });
    Server {
        addr,
        requests,
        connections,
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Write a response head for a chunked body.
pub async fn head_chunked(
    socket: &mut TcpStream,
    status: u16,
    content_type: &str,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n",
        reason(status)
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await?;
    socket.flush().await
}

/// Write one body chunk (chunked framing) and flush.
pub async fn chunk(socket: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
    frame.extend_from_slice(bytes);
    frame.extend_from_slice(b"\r\n");
    socket.write_all(&frame).await?;
    socket.flush().await
}

/// End a chunked body.
pub async fn end(socket: &mut TcpStream) -> std::io::Result<()> {
    socket.write_all(b"0\r\n\r\n").await?;
    socket.flush().await
}

/// A whole response with a Content-Length body.
pub async fn respond(
    socket: &mut TcpStream,
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body).await?;
    socket.flush().await
}

/// Read until the peer closes (read returns 0 or fails).
pub async fn wait_closed(socket: &mut TcpStream) {
    let mut tmp = [0u8; 1024];
    loop {
        match socket.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// An SSE data line holding one content delta.
pub fn delta_line(text: &str) -> String {
    format!(
        "data: {}\n\n",
        serde_json::json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

pub const FINISH: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

/// A configuration aimed at `base_url` with the test key and short-but-safe limits.
pub fn config(base_url: String) -> OpenAiCompatConfig {
    OpenAiCompatConfig {
        base_url,
        api_key: Some(ApiKey::new(SECRET)),
        model: "test-model".into(),
        first_token_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

pub fn gateway(config: OpenAiCompatConfig) -> OpenAiCompat {
    OpenAiCompat::new("test", config).expect("gateway builds")
}

/// Everything one turn produced.
#[derive(Debug)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub error: Option<GatewayError>,
    /// Items seen after the first terminal item (must be 0).
    pub after_terminal: usize,
    /// Number of terminal items (text_done or Err).
    pub terminals: usize,
}

impl Outcome {
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Delta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn done(&self) -> Option<&Event> {
        self.events
            .iter()
            .find(|e| matches!(e, Event::TextDone { .. }))
    }

    pub fn response(&self) -> Option<&str> {
        match self.done()? {
            Event::TextDone { response, .. } => Some(response),
            _ => None,
        }
    }
}

/// Drain a stream to its end (bounded by a generous limit so a hang fails instead of
/// blocking the suite).
pub async fn drain(mut stream: EventStream) -> Outcome {
    let mut outcome = Outcome {
        events: Vec::new(),
        error: None,
        after_terminal: 0,
        terminals: 0,
    };
    let all = async {
        while let Some(item) = stream.next().await {
            if outcome.terminals > 0 {
                outcome.after_terminal += 1;
            }
            match item {
                Ok(event) => {
                    if event.is_terminal() {
                        outcome.terminals += 1;
                    }
                    outcome.events.push(event);
                }
                Err(error) => {
                    outcome.terminals += 1;
                    outcome.error.get_or_insert(error);
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .is_err()
    {
        panic!("stream did not end within 30 s");
    }
    outcome
}

/// Run a turn: an error from `stream()` counts as the single terminal item.
pub async fn run(gateway: &dyn Gateway, turn: Turn) -> Outcome {
    match gateway.stream(turn).await {
        Ok(stream) => drain(stream).await,
        Err(error) => Outcome {
            events: Vec::new(),
            error: Some(error),
            after_terminal: 0,
            terminals: 1,
        },
    }
}

pub fn hello() -> Turn {
    Turn::new(vec![gateway_core::ChatMessage::user("Hello")])
}

/// Panics when the key shows in an error's Display or Debug output.
pub fn assert_no_secret(error: &GatewayError) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(SECRET), "the API key leaked: {shown}");
}
