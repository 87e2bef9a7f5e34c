//! [`CancelWatch`]: waiting on a [`CancellationToken`] from a stream that is polled once per
//! streamed token.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use futures::Future;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Watches a token for a stream's `poll_next`. The token's own wait takes its locks at every
/// poll; this polls it only after it woke (and once at first), so the poll of a stream that is
/// merely woken for its next token costs two atomic operations.
pub struct CancelWatch {
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    flag: Arc<WokenFlag>,
    /// The task waker last registered in `flag` (it stays there until a wake-up takes it).
    registered: Option<Waker>,
    fired: bool,
}

/// Set when the token's wait wakes; forwards the wake-up to the task polling the watch.
struct WokenFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WokenFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl CancelWatch {
    /// Watch `token`.
    pub fn new(token: CancellationToken) -> Self {
        Self {
            wait: Box::pin(token.cancelled_owned()),
            flag: Arc::new(WokenFlag {
                // Poll the wait once at first: the token may be cancelled already.
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
            registered: None,
            fired: false,
        }
    }

    /// `Ready` once the token is cancelled (and from then on); otherwise `Pending`, and the
    /// task in `cx` is woken when it is.
    pub fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired {
            return Poll::Ready(());
        }
        // Nothing woke the wait since the last poll, and the task registered then is this one:
        // that registration still stands (only a wake-up takes it), so there is nothing to do.
        let same_task = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if same_task && !self.flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Register before looking at the flag, so a wake-up in between is not lost.
        self.flag.task.register(cx.waker());
        if !same_task {
            self.registered = Some(cx.waker().clone());
        }
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&self.flag));
        match self.wait.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(()) => {
                self.fired = true;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for CancelWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelWatch")
            .field("fired", &self.fired)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;
    use std::sync::atomic::AtomicUsize;

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn pending_until_cancelled_then_ready_for_good() {
        let token = CancellationToken::new();
        let mut watch = CancelWatch::new(token.clone());
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        assert!(watch.poll_cancelled(&mut cx).is_pending());
        assert!(watch.poll_cancelled(&mut cx).is_pending());
        assert_eq!(counter.0.load(Ordering::Relaxed), 0);
        token.cancel();
        assert_eq!(
            counter.0.load(Ordering::Relaxed),
            1,
            "the polling task is woken"
        );
        assert!(watch.poll_cancelled(&mut cx).is_ready());
        assert!(watch.poll_cancelled(&mut cx).is_ready(), "ready for good");
    }

    #[test]
    fn a_token_cancelled_before_the_watch_is_seen_at_the_first_poll() {
        let token = CancellationToken::new();
        token.cancel();
        let mut watch = CancelWatch::new(token);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(watch.poll_cancelled(&mut cx).is_ready());
    }

    #[test]
    fn the_latest_task_is_the_one_woken() {
        let token = CancellationToken::new();
        let mut watch = CancelWatch::new(token.clone());
        let first = Arc::new(Counter(AtomicUsize::new(0)));
        let second = Arc::new(Counter(AtomicUsize::new(0)));
        let w1 = Waker::from(Arc::clone(&first));
        let w2 = Waker::from(Arc::clone(&second));
        assert!(watch
            .poll_cancelled(&mut Context::from_waker(&w1))
            .is_pending());
        assert!(watch
            .poll_cancelled(&mut Context::from_waker(&w2))
            .is_pending());
        token.cancel();
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(second.0.load(Ordering::Relaxed), 1);
    }
}
