//! The service hyper calls for each request of one connection: the host's router, with the
//! request's body bounded in time ([`TimedBody`]), the connection kept busy until the answer
//! is sent ([`Guarded`]), and `Connection: close` on answers after which the connection should
//! not be reused (the host is draining, or the request's body never arrived).

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{header, HeaderValue, Request, Response, Version};
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::Service as _;

use super::conn::{Conn, InFlight};
use crate::http::error::ApiError;
use crate::shutdown::Shutdown;

/// What every request of a connection is served with.
#[derive(Clone)]
pub(crate) struct ConnService {
    /// The host's routes.
    pub router: Router,
    /// The connection the requests arrive on.
    pub conn: Arc<Conn>,
    /// The host's shutdown phases.
    pub shutdown: Shutdown,
    /// `server.body_read_timeout_ms`.
    pub body_timeout: Duration,
    /// The connection cap, for the refusal of an overflow connection.
    pub max_connections: usize,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.conn.request_started();
        let http1 = request.version() <= Version::HTTP_11;
        if self.conn.overflow && request.uri().path() != "/healthz" {
            let refused = over_capacity(self.max_connections).into_response();
            let answer = finish(refused, in_flight, http1, true);
            return Box::pin(std::future::ready(Ok(answer)));
        }
        let timed_out = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + self.body_timeout;
        let request = request.map(|body| {
            Body::new(TimedBody {
                inner: body,
                deadline,
                limit: self.body_timeout,
                sleep: None,
                timed_out: timed_out.clone(),
            })
        });
        let mut router = self.router.clone();
        let shutdown = self.shutdown.clone();
        Box::pin(async move {
            let response = router.call(request).await.unwrap_or_else(|e| match e {});
            let close = shutdown.is_draining() || timed_out.load(Ordering::Relaxed);
            Ok(finish(response, in_flight, http1, close))
        })
    }
}

/// The answer to a request on a connection admitted beyond the cap (only `/healthz` is
/// served there).
fn over_capacity(max: usize) -> ApiError {
    ApiError::Unavailable {
        code: "overloaded",
        message: format!("the host is at its limit of {max} open connections; retry shortly"),
    }
}

/// `response` holding the connection busy until its body is sent, saying `Connection: close`
/// when `close` on HTTP/1 (hyper then closes the connection after it; HTTP/2 has no such
/// header).
fn finish(
    response: Response<Body>,
    in_flight: InFlight,
    http1: bool,
    close: bool,
) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if close && http1 {
        let value = HeaderValue::from_static("close");
        parts.headers.insert(header::CONNECTION, value);
    }
    let body = Body::new(Guarded {
        inner: body,
        _in_flight: in_flight,
    });
    Response::from_parts(parts, body)
}

/// A response body that keeps its connection busy until it is dropped.
struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that must arrive whole before its deadline (`server.body_read_timeout_ms`
/// after the head). Its error is [`BodyTimeout`].
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Armed on the first wait, so bodies that are already there cost no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

/// The request body did not arrive within `server.body_read_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimeout(pub Duration);

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.timed_out.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
