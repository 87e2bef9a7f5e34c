//! A raw HTTP/1.1 connection, for what an HTTP client library will not do: send nothing,
//! dribble a request head, promise a body and never send it, sit idle on a kept-alive
//! connection, or send a malformed request. Every wait has the harness [`DEADLINE`].

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::DEADLINE;

/// One answer read off a [`RawConn`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lowercased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// A TCP connection to a host, written and read by hand.
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read but not yet consumed by [`RawConn::response`].
    buf: Vec<u8>,
}

impl RawConn {
    /// Connect to `url` (`http://127.0.0.1:port`).
    pub async fn connect(url: &str) -> Self {
        let addr = url.trim_start_matches("http://").trim_end_matches('/');
        let stream = TcpStream::connect(addr).await.expect("connect to the host");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Write `bytes`; an error means the host closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Read one answer (head and `Content-Length` body); fails after [`DEADLINE`] or when the
    /// host closes the connection first.
    pub async fn response(&mut self) -> RawResponse {
        tokio::time::timeout(DEADLINE, self.read_response())
            .await
            .expect("an answer within the deadline")
    }

    async fn read_response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill().await > 0, "closed before an answer head");
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            assert!(self.fill().await > 0, "closed inside an answer body");
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + length]).to_string();
        self.buf.drain(..head_end + length);
        RawResponse {
            status,
            headers,
            body,
        }
    }

    /// Read more bytes into the buffer; 0 when the host closed the connection (a reset counts
    /// as closed).
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Wait until the host closes the connection (fails after [`DEADLINE`]); returns what it
    /// sent before (including anything not yet read as an answer).
    pub async fn closed(&mut self) -> Vec<u8> {
        let wait = async { while self.fill().await > 0 {} };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("the host closes the connection within the deadline");
        std::mem::take(&mut self.buf)
    }
}

/// An HTTP/1.1 request for 127.0.0.1: `method path`, the `headers` given, and `body` with its
/// `Content-Length` (none without a body).
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}
