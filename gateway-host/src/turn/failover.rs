//! Surviving a failing provider: a turn tries its profile's gateways in order (the primary,
//! then `adapter_config.fallback_gateway_ids`) until one starts answering.
//!
//! The policy, applied before the first token only:
//!
//! - A gateway has *started answering* once it yields a `delta`, `sentence`, `action` or
//!   `text_done`. From then on it is final: a later failure ends the turn with one `error`,
//!   because the client has already heard part of the answer.
//! - Before that, a failure that [`GatewayError::is_transient`] (connection refused or reset,
//!   connect or first-token timeout, HTTP 408, 429, 5xx) may be retried or failed over:
//!   - HTTP 429 or 503 with a `Retry-After` of at most `max_retry_after_ms` is retried on the
//!     same instance after waiting that long, up to `max_attempts` attempts on that instance;
//!   - anything else (no `Retry-After`, one beyond the cap, attempts used up, other transient
//!     causes) moves the turn at once to the next gateway; after the last one the error is
//!     final. There is no blind backoff: a voice turn is bound by latency, and an overloaded
//!     provider that names no delay is better replaced than hammered.
//! - A failure that is not transient (401, 400, a malformed answer) is final: another backend
//!   would not fix the request.
//! - Cancelling the turn (client gone) ends a retry wait at once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{Stream, StreamExt};
use gateway_core::{Event, EventStream, Gateway, GatewayError, Turn};

use crate::config::RetryConfig;

/// One gateway a turn may be sent to, with its retry policy.
#[derive(Clone)]
pub struct Candidate {
    /// The instance.
    pub gateway: Arc<dyn Gateway>,
    /// Retries on this instance before moving on.
    pub retry: RetryConfig,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("gateway", &self.gateway.id())
            .field("retry", &self.retry)
            .finish()
    }
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<'a> {
    /// The same instance is tried again after this wait (its `Retry-After`).
    Retry {
        /// The wait.
        after: Duration,
    },
    /// The turn moves to this instance.
    Fallback {
        /// The next instance's id.
        to: &'a str,
    },
    /// The error ends the turn.
    Final,
}

/// Progress of a turn across its candidates, reported to an [`Observer`].
#[derive(Debug, Clone, Copy)]
pub enum Note<'a> {
    /// An attempt starts: `index` in the candidate list, `attempt` on this instance (from 1).
    Attempt {
        /// Instance id.
        gateway: &'a str,
        /// Position in the candidate list (0 = primary).
        index: usize,
        /// Attempt number on this instance, from 1.
        attempt: u32,
    },
    /// An attempt failed (before the first token, or after it with `next` = `Final`).
    Failed {
        /// Instance id.
        gateway: &'a str,
        /// Why.
        error: &'a GatewayError,
        /// What happens next.
        next: Next<'a>,
    },
    /// This instance started answering; the turn stays with it.
    Answering {
        /// Instance id.
        gateway: &'a str,
    },
}

/// Receives every [`Note`] of a turn (metrics and logs).
pub type Observer = Arc<dyn Fn(Note<'_>) + Send + Sync>;

/// The events of a turn over `candidates` (tried in order, at least one): those of the first
/// gateway that starts answering, without the gateways' own `handshake` events (the host
/// makes its own). Ends with the answer's final event or one `Err`.
pub fn events(candidates: Vec<Candidate>, turn: Turn, observe: Observer) -> EventStream {
    let opening = {
        let observe = observe.clone();
        Box::pin(async move { open(&candidates, turn, &observe).await })
    };
    Box::pin(Failover {
        phase: Phase::Opening(opening),
        observe,
    })
}

/// The stream of [`events`]: opening (trying candidates), then the answering gateway's events
/// passed through as they are.
struct Failover {
    phase: Phase,
    observe: Observer,
}

type Opened = Result<(String, Option<Event>, EventStream), GatewayError>;

enum Phase {
    Opening(BoxFuture<'static, Opened>),
    Answering {
        gateway: String,
        first: Option<Event>,
        rest: EventStream,
    },
    /// No candidate answered: this error, then the end.
    Failed(Option<GatewayError>),
}

impl Stream for Failover {
    type Item = Result<Event, GatewayError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Opening(opening) => {
                    this.phase = match ready!(opening.as_mut().poll(cx)) {
                        Ok((gateway, first, rest)) => Phase::Answering {
                            gateway,
                            first,
                            rest,
                        },
                        Err(error) => Phase::Failed(Some(error)),
                    };
                }
                Phase::Answering { first, .. } if first.is_some() => {
                    return Poll::Ready(first.take().map(Ok));
                }
                Phase::Answering { gateway, rest, .. } => {
                    let item = ready!(rest.as_mut().poll_next(cx));
                    if let Some(Err(error)) = &item {
                        (this.observe)(Note::Failed {
                            gateway,
                            error,
                            next: Next::Final,
                        });
                    }
                    return Poll::Ready(item);
                }
                Phase::Failed(error) => return Poll::Ready(error.take().map(Err)),
            }
        }
    }
}

/// The wait before retrying the same instance, if the policy allows one.
pub fn retry_wait(error: &GatewayError, policy: &RetryConfig) -> Option<Duration> {
    let GatewayError::Http {
        status: 429 | 503,
        retry_after: Some(after),
        ..
    } = error
    else {
        return None;
    };
    (*after <= Duration::from_millis(policy.max_retry_after_ms)).then_some(*after)
}

/// Try the candidates until one starts answering: its id, its first event (none when its
/// stream ended at once) and the rest of its stream.
async fn open(
    candidates: &[Candidate],
    turn: Turn,
    observe: &Observer,
) -> Result<(String, Option<Event>, EventStream), GatewayError> {
    let cancel = turn.cancel.clone();
    let mut final_error = GatewayError::Other("the profile has no usable gateway".into());
    for (index, candidate) in candidates.iter().enumerate() {
        let id = candidate.gateway.id();
        let next_id = candidates.get(index + 1).map(|c| c.gateway.id());
        let mut attempt = 1;
        loop {
            observe(Note::Attempt {
                gateway: id,
                index,
                attempt,
            });
            let error = match first_event(candidate.gateway.as_ref(), turn.clone()).await {
                Ok((first, rest)) => {
                    observe(Note::Answering { gateway: id });
                    return Ok((id.to_string(), first, rest));
                }
                Err(error) => error,
            };
            let wait = retry_wait(&error, &candidate.retry)
                .filter(|_| attempt < candidate.retry.max_attempts);
            let next = match (error.is_transient(), wait, next_id) {
                (false, _, _) => Next::Final,
                (true, Some(after), _) => Next::Retry { after },
                (true, None, Some(to)) => Next::Fallback { to },
                (true, None, None) => Next::Final,
            };
            observe(Note::Failed {
                gateway: id,
                error: &error,
                next,
            });
            match next {
                Next::Final => return Err(error),
                Next::Fallback { .. } => {
                    final_error = error;
                    break;
                }
                Next::Retry { after } => {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return Err(GatewayError::Cancelled),
                        () = tokio::time::sleep(after) => {}
                    }
                    attempt += 1;
                }
            }
        }
    }
    Err(final_error)
}

/// Start one attempt and read it up to its first event that is not a `handshake`.
async fn first_event(
    gateway: &dyn Gateway,
    turn: Turn,
) -> Result<(Option<Event>, EventStream), GatewayError> {
    let cancel = turn.cancel.clone();
    let mut events = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(GatewayError::Cancelled),
        started = gateway.stream(turn) => started?,
    };
    loop {
        let item = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(GatewayError::Cancelled),
            item = events.next() => item,
        };
        match item {
            Some(Ok(Event::Handshake { .. })) => continue,
            Some(Ok(event)) => return Ok((Some(event), events)),
            Some(Err(error)) => return Err(error),
            None => return Ok((None, events)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU32, Ordering};

    use gateway_core::{async_trait, ChatMessage};
    use parking_lot::Mutex;
    use tokio::sync::Notify;
    use tokio::time::Instant;

    type Script = Result<Vec<Result<Event, GatewayError>>, GatewayError>;

    /// A gateway answering each call with the next scripted outcome.
    struct Fake {
        id: &'static str,
        script: Mutex<VecDeque<Script>>,
        calls: AtomicU32,
        called: Notify,
    }

    impl Fake {
        fn new(id: &'static str, script: Vec<Script>) -> Arc<Self> {
            Arc::new(Self {
                id,
                script: Mutex::new(script.into()),
                calls: AtomicU32::new(0),
                called: Notify::new(),
            })
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Gateway for Fake {
        fn id(&self) -> &str {
            self.id
        }
        fn kind(&self) -> &str {
            "fake"
        }
        fn is_configured(&self) -> Result<(), GatewayError> {
            Ok(())
        }
        async fn stream(&self, _turn: Turn) -> Result<EventStream, GatewayError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.called.notify_one();
            let next = self.script.lock().pop_front();
            let items = next.unwrap_or_else(|| Err(GatewayError::Other("script ended".into())))?;
            Ok(Box::pin(futures::stream::iter(items)))
        }
    }

    fn answer(text: &str) -> Script {
        Ok(vec![
            Ok(Event::Handshake {
                ms: 1,
                gateway: None,
            }),
            Ok(Event::delta(text)),
            Ok(Event::text_done(text)),
        ])
    }

    fn http(status: u16, retry_after: Option<Duration>) -> GatewayError {
        GatewayError::Http {
            status,
            message: "busy".into(),
            retry_after,
        }
    }

    fn candidates(gateways: &[&Arc<Fake>], retry: RetryConfig) -> Vec<Candidate> {
        gateways
            .iter()
            .map(|g| Candidate {
                gateway: (*g).clone() as Arc<dyn Gateway>,
                retry,
            })
            .collect()
    }

    /// Runs a turn; returns the items and the notes as text.
    async fn run(
        candidates: Vec<Candidate>,
        turn: Turn,
    ) -> (Vec<Result<Event, GatewayError>>, Vec<String>) {
        let notes = Arc::new(Mutex::new(Vec::new()));
        let sink = notes.clone();
        let observe: Observer = Arc::new(move |note| {
            let line = match note {
                Note::Attempt {
                    gateway, attempt, ..
                } => format!("attempt {gateway} {attempt}"),
                Note::Failed {
                    gateway,
                    error,
                    next,
                } => format!("failed {gateway} {} {next:?}", error.cause()),
                Note::Answering { gateway } => format!("answering {gateway}"),
            };
            sink.lock().push(line);
        });
        let items = events(candidates, turn, observe).collect().await;
        let notes = notes.lock().clone();
        (items, notes)
    }

    fn turn() -> Turn {
        Turn::new(vec![ChatMessage::user("hi")])
    }

    #[tokio::test]
    async fn falls_back_on_a_transient_failure_and_drops_gateway_handshakes() {
        let a = Fake::new("a", vec![Err(http(503, None))]);
        let b = Fake::new("b", vec![answer("from b")]);
        let (items, notes) = run(candidates(&[&a, &b], RetryConfig::default()), turn()).await;
        assert_eq!(
            items,
            vec![Ok(Event::delta("from b")), Ok(Event::text_done("from b"))]
        );
        assert_eq!(
            notes,
            [
                "attempt a 1",
                "failed a http_503 Fallback { to: \"b\" }",
                "attempt b 1",
                "answering b"
            ]
        );
        // An error inside the stream before the first token counts the same.
        let a = Fake::new(
            "a",
            vec![Ok(vec![
                Ok(Event::Handshake {
                    ms: 1,
                    gateway: None,
                }),
                Err(GatewayError::FirstTokenTimeout(Duration::from_millis(5))),
            ])],
        );
        let b = Fake::new("b", vec![answer("ok")]);
        let (items, _) = run(candidates(&[&a, &b], RetryConfig::default()), turn()).await;
        assert_eq!(items.last(), Some(&Ok(Event::text_done("ok"))));
    }

    #[tokio::test]
    async fn never_switches_after_the_first_token() {
        let a = Fake::new(
            "a",
            vec![Ok(vec![Ok(Event::delta("Hel")), Err(http(503, None))])],
        );
        let b = Fake::new("b", vec![answer("from b")]);
        let (items, notes) = run(candidates(&[&a, &b], RetryConfig::default()), turn()).await;
        assert_eq!(items, vec![Ok(Event::delta("Hel")), Err(http(503, None))]);
        assert_eq!(b.calls(), 0);
        assert_eq!(notes.last().unwrap(), "failed a http_503 Final");
    }

    #[tokio::test]
    async fn a_non_transient_failure_is_final() {
        let a = Fake::new("a", vec![Err(http(401, None))]);
        let b = Fake::new("b", vec![answer("from b")]);
        let (items, _) = run(candidates(&[&a, &b], RetryConfig::default()), turn()).await;
        assert_eq!(items, vec![Err(http(401, None))]);
        assert_eq!(b.calls(), 0);
        // The last candidate's transient error is final too.
        let a = Fake::new("a", vec![Err(http(502, None))]);
        let (items, _) = run(candidates(&[&a], RetryConfig::default()), turn()).await;
        assert_eq!(items, vec![Err(http(502, None))]);
        assert_eq!(a.calls(), 1, "no Retry-After: no retry");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_up_to_max_attempts() {
        let after = Duration::from_secs(2);
        let a = Fake::new(
            "a",
            vec![Err(http(429, Some(after))), Err(http(503, Some(after)))],
        );
        let b = Fake::new("b", vec![answer("from b")]);
        let started = Instant::now();
        let (items, notes) = run(candidates(&[&a, &b], RetryConfig::default()), turn()).await;
        // Virtual time: the retry waited exactly the header's delay, then the fallback answered.
        assert_eq!(started.elapsed(), after);
        assert_eq!(a.calls(), 2, "max_attempts = 2");
        assert_eq!(items.last(), Some(&Ok(Event::text_done("from b"))));
        assert_eq!(
            notes[..4],
            [
                "attempt a 1",
                "failed a http_429 Retry { after: 2s }",
                "attempt a 2",
                "failed a http_503 Fallback { to: \"b\" }",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_the_cap_moves_on_without_waiting() {
        let a = Fake::new("a", vec![Err(http(429, Some(Duration::from_secs(3600))))]);
        let b = Fake::new("b", vec![answer("from b")]);
        let started = Instant::now();
        let (items, _) = run(candidates(&[&a, &b], RetryConfig::default()), turn()).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(a.calls(), 1);
        assert_eq!(items.last(), Some(&Ok(Event::text_done("from b"))));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_ends_the_retry_wait_at_once() {
        let a = Fake::new("a", vec![Err(http(503, Some(Duration::from_secs(4))))]);
        let turn = turn();
        let cancel = turn.cancel.clone();
        let started = Instant::now();
        let gateway = a.clone();
        let canceller = async move {
            gateway.called.notified().await;
            cancel.cancel();
        };
        let ((items, _), ()) = tokio::join!(
            run(candidates(&[&a], RetryConfig::default()), turn),
            canceller
        );
        assert_eq!(items, vec![Err(GatewayError::Cancelled)]);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(a.calls(), 1);
    }

    #[test]
    fn retry_wait_policy() {
        let policy = RetryConfig {
            max_attempts: 2,
            max_retry_after_ms: 1000,
        };
        let s = Duration::from_secs;
        assert_eq!(retry_wait(&http(429, Some(s(1))), &policy), Some(s(1)));
        assert_eq!(retry_wait(&http(503, Some(s(0))), &policy), Some(s(0)));
        assert_eq!(retry_wait(&http(429, Some(s(2))), &policy), None);
        assert_eq!(retry_wait(&http(429, None), &policy), None);
        assert_eq!(retry_wait(&http(500, Some(s(1))), &policy), None);
    }
}
