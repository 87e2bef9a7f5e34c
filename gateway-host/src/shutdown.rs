//! Graceful shutdown: on SIGTERM/SIGINT the host stops accepting, refuses new turns, lets
//! in-flight turns finish for `shutdown_grace_secs`, then ends the rest with one `error`
//! event ("host shutting down") so every client stream still ends with exactly one final event.

use futures::stream::{self, Stream, StreamExt};
use gateway_core::{CancellationToken, Event};

/// The message of the `error` event that ends turns cut by the shutdown.
pub const SHUTDOWN_MESSAGE: &str = "host shutting down";

/// Shutdown phases shared by the server loop and every turn.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    draining: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    /// Enter the draining phase: new turns are refused.
    pub fn begin(&self) {
        self.draining.cancel();
    }

    /// True once [`Shutdown::begin`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// True once [`Shutdown::abort`] was called: the grace period is over.
    pub fn is_aborted(&self) -> bool {
        self.abort.is_cancelled()
    }

    /// Resolves when draining begins.
    pub async fn draining(&self) {
        self.draining.cancelled().await;
    }

    /// End every turn still streaming (grace period over). Implies draining.
    pub fn abort(&self) {
        self.draining.cancel();
        self.abort.cancel();
    }

    /// Pass `events` through until it ends or [`Shutdown::abort`] is called; then, unless
    /// the final event was already sent, send `error: host shutting down` (after calling
    /// `on_abort`) and stop, dropping (and so cancelling) the rest of the turn.
    pub fn guard<S>(
        &self,
        events: S,
        on_abort: impl Fn() + Send + 'static,
    ) -> impl Stream<Item = Event> + Send
    where
        S: Stream<Item = Event> + Send + Unpin,
    {
        let abort = self.abort.clone();
        stream::unfold(Some((events, abort, on_abort)), |state| async move {
            let (mut events, abort, on_abort) = state?;
            // The deadline first: a turn that keeps streaming is still ended on time.
            tokio::select! {
                biased;
                () = abort.cancelled() => {
                    on_abort();
                    Some((Event::error(SHUTDOWN_MESSAGE), None))
                }
                event = events.next() => match event {
                    Some(event) if event.is_terminal() => Some((event, None)),
                    Some(event) => Some((event, Some((events, abort, on_abort)))),
                    None => None,
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn abort_ends_a_pending_stream_with_one_error() {
        let shutdown = Shutdown::default();
        let aborted = Arc::new(AtomicUsize::new(0));
        let counter = aborted.clone();
        let pending = stream::iter([Event::delta("a")]).chain(stream::pending());
        let mut guarded = Box::pin(shutdown.guard(pending, move || {
            counter.fetch_add(1, Ordering::Relaxed);
        }));
        assert_eq!(guarded.next().await, Some(Event::delta("a")));
        shutdown.abort();
        assert!(shutdown.is_draining());
        assert_eq!(guarded.next().await, Some(Event::error(SHUTDOWN_MESSAGE)));
        assert_eq!(guarded.next().await, None);
        assert_eq!(aborted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_finished_stream_is_untouched_by_a_later_abort() {
        let shutdown = Shutdown::default();
        let events = stream::iter([Event::delta("a"), Event::text_done("a")]);
        let guarded = shutdown.guard(events, || panic!("not aborted"));
        let out: Vec<_> = guarded.collect().await;
        shutdown.abort();
        assert_eq!(out, [Event::delta("a"), Event::text_done("a")]);
    }
}
