//! One client connection's life. A connection is always in one phase:
//!
//! - **head**: waiting for a request head, from the accept (or, after a response, from the
//!   next request's first byte); it must be complete within `server.header_read_timeout_ms`,
//!   however slowly it dribbles in;
//! - **busy**: at least one request is being answered; no connection deadline applies, so long
//!   answers and SSE keep-alives are never cut (the request body has its own deadline, see
//!   `service.rs`);
//! - **idle**: kept alive between requests, closed after `server.idle_timeout_ms`.
//!
//! A connection in the head or idle phase holds no request, so it can be closed at any time
//! without losing anything: that is what the timeouts, the connection cap (shedding the
//! longest-idle one) and the shutdown do.
//!
//! [`Watched`] is the socket as hyper sees it: it notes the first byte of a request and turns
//! hyper's bare automatic error answers (400, 414, 431 for malformed requests) into the host's
//! JSON errors.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::http::error::ApiError;

/// What a connection is doing (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Answering at least one request.
    Busy,
    /// Kept alive between requests.
    Idle,
}

/// Why a connection is closed before its client closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Its phase's deadline passed (`Head` or `Idle`).
    Timeout(Phase),
    /// The connection cap needed its place.
    Shed,
    /// The host is stopping: finish the request in flight, then close.
    Shutdown,
}

/// The timeouts of the connection phases.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Head phase.
    pub head: Duration,
    /// Idle phase.
    pub idle: Duration,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// When the phase began (for `Head`: the accept or the request's first byte).
    since: Instant,
    in_flight: usize,
    /// Requests that reached the router, ever.
    routed: u64,
}

/// One open client connection, shared by its task, its socket, its requests and the table of
/// connections.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Key in the table of connections.
    pub id: u64,
    /// Admitted beyond the cap: only `/healthz` is answered (see `table.rs`).
    pub overflow: bool,
    state: Mutex<State>,
    /// Set once by [`Conn::close`]: 0 none, else a [`Close`] code.
    close: AtomicU8,
    changed: Notify,
}

const SHED: u8 = 1;
const SHUTDOWN: u8 = 2;

impl Conn {
    /// A connection just accepted: waiting for its first request head.
    pub fn new(id: u64, overflow: bool) -> Self {
        Self {
            id,
            overflow,
            state: Mutex::new(State {
                phase: Phase::Head,
                since: Instant::now(),
                in_flight: 0,
                routed: 0,
            }),
            close: AtomicU8::new(0),
            changed: Notify::new(),
        }
    }

    /// A request reached the router: the connection is busy until the returned guard (held by
    /// the response body) is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock();
        state.in_flight += 1;
        state.routed += 1;
        state.phase = Phase::Busy;
        InFlight(self.clone())
    }

    /// Since when the connection holds no request, if it holds none: the candidates for
    /// shedding, oldest first.
    pub fn unused_since(&self) -> Option<Instant> {
        let state = self.state.lock();
        (state.phase != Phase::Busy).then_some(state.since)
    }

    /// Requests that reached the router so far.
    fn routed(&self) -> u64 {
        self.state.lock().routed
    }

    /// Bytes arrived: on an idle connection they start the next request's head.
    fn bytes_read(&self) {
        let mut state = self.state.lock();
        if state.phase == Phase::Idle {
            state.phase = Phase::Head;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    fn request_ended(&self) {
        let mut state = self.state.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.phase = Phase::Idle;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Ask the connection's task to close it: at once when it holds no request (`Shed`),
    /// after the request in flight (`Shutdown`). The first reason given wins.
    pub fn close(&self, why: Close) {
        let code = match why {
            Close::Shed => SHED,
            Close::Shutdown => SHUTDOWN,
            Close::Timeout(_) => return,
        };
        if self
            .close
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn close_reason(&self) -> Option<Close> {
        match self.close.load(Ordering::Acquire) {
            SHED => Some(Close::Shed),
            SHUTDOWN => Some(Close::Shutdown),
            _ => None,
        }
    }

    /// When the current phase ends the connection, if it can.
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Phase, Instant)> {
        let state = self.state.lock();
        let limit = match state.phase {
            Phase::Head => timeouts.head,
            Phase::Idle => timeouts.idle,
            Phase::Busy => return None,
        };
        Some((state.phase, state.since + limit))
    }

    /// Resolves when the connection must be closed: its phase's deadline passed, or
    /// [`Conn::close`] was called. A `Timeout` or `Shed` is only returned while the connection
    /// holds no request.
    pub async fn closed(&self, timeouts: &Timeouts) -> Close {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = self.deadline(timeouts);
            // A shed connection that just took a request closes once it is answered.
            match self.close_reason() {
                Some(Close::Shed) if deadline.is_none() => {}
                Some(why) => return why,
                None => {}
            }
            match deadline {
                Some((phase, at)) if at <= Instant::now() => return Close::Timeout(phase),
                Some((_, at)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A request being answered on a [`Conn`]; dropping it (response sent, or abandoned) may
/// make the connection idle.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The socket of a [`Conn`] as hyper reads and writes it.
pub(crate) struct Watched {
    io: TcpStream,
    conn: Arc<Conn>,
    /// Final (non-1xx) HTTP/1 answer heads written so far. One more head than requests
    /// routed is an answer hyper made itself: a malformed request's.
    heads: u64,
    /// A JSON error answer being written in place of hyper's bare one: the bytes, how many
    /// are written, and the length of hyper's answer to report once they all are.
    rewrite: Option<(Bytes, usize, usize)>,
}

impl Watched {
    /// Watch `io` for `conn`.
    pub fn new(io: TcpStream, conn: Arc<Conn>) -> Self {
        Self {
            io,
            conn,
            heads: 0,
            rewrite: None,
        }
    }

    /// Start replacing `buf` when it is hyper's automatic answer to a malformed request.
    fn intercept(&mut self, buf: &[u8]) {
        if self.rewrite.is_some() {
            return;
        }
        let Some(status) = final_status(buf) else {
            return;
        };
        if self.heads < self.conn.routed() {
            self.heads += 1;
        } else if let Some(answer) = automatic_error(status) {
            self.rewrite = Some((answer, 0, buf.len()));
        }
    }

    /// Write the replacement answer on; `Ready(Ok(n))` reports hyper's `n` bytes as written.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((answer, written, replaces)) = &mut self.rewrite {
            if *written == answer.len() {
                let replaces = *replaces;
                self.rewrite = None;
                return Poll::Ready(Ok(replaces));
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(0))
    }
}

/// The status code of `buf` when it starts an HTTP/1 answer head that is not a 1xx one.
fn final_status(buf: &[u8]) -> Option<&[u8]> {
    let status = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?
        .get(..3)?;
    (status[0] != b'1').then_some(status)
}

/// The host's JSON answer replacing hyper's bare automatic one of this status (400, 414, 431
/// for a malformed request), if it is one.
fn automatic_error(status: &[u8]) -> Option<Bytes> {
    let error = match status {
        b"400" => ApiError::MalformedRequest,
        b"414" => ApiError::UriTooLong,
        b"431" => ApiError::HeadersTooLarge(super::MAX_HEAD_BYTES),
        _ => return None,
    };
    let (status, body): (StatusCode, String) = error.host_json();
    let text = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    );
    Some(Bytes::from(text))
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.conn.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.intercept(buf);
        if this.rewrite.is_some() {
            return this.poll_rewrite(cx);
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper's automatic answers are a lone head: the first non-empty slice.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.intercept(first);
        }
        if this.rewrite.is_some() {
            return this.poll_rewrite(cx);
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_heads_become_json_answers() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n";
        let answer = final_status(head)
            .and_then(automatic_error)
            .expect("a 431 is replaced");
        let text = String::from_utf8(answer.to_vec()).expect("text");
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let body = text.split("\r\n\r\n").nth(1).expect("a body");
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["error"]["code"], "headers_too_large");
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(automatic_error(b"200").is_none());
        assert!(final_status(b"HTTP/1.1 100 Continue\r\n\r\n").is_none());
        assert!(
            final_status(b"\0\0\x12\x04").is_none(),
            "an HTTP/2 frame passes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn phases_set_the_deadline() {
        let timeouts = Timeouts {
            head: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        };
        let conn = Arc::new(Conn::new(1, false));
        assert_eq!(conn.closed(&timeouts).await, Close::Timeout(Phase::Head));
        let request = conn.request_started();
        assert!(conn.unused_since().is_none());
        let busy = tokio::time::timeout(Duration::from_secs(3600), conn.closed(&timeouts));
        assert!(busy.await.is_err(), "a busy connection has no deadline");
        drop(request);
        assert_eq!(conn.closed(&timeouts).await, Close::Timeout(Phase::Idle));
        conn.close(Close::Shed);
        assert_eq!(conn.closed(&timeouts).await, Close::Shed);
    }
}
