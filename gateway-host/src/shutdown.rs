//! Graceful shutdown: on SIGTERM/SIGINT the host stops accepting, refuses new turns, lets
//! in-flight turns finish for `shutdown_grace_secs`, then ends the rest with one `error`
//! event ("host shutting down") so every client stream still ends with exactly one final event.

use gateway_core::CancellationToken;
use tokio_util::sync::WaitForCancellationFutureOwned;

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

    /// Resolves once [`Shutdown::abort`] is called. Each turn holds one across its events: it
    /// waits on a token of its own (a child of the shared one), so the turns streaming at once
    /// never contend for one lock, and it registers its interest once.
    pub fn aborted(&self) -> WaitForCancellationFutureOwned {
        self.abort.child_token().cancelled_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    #[tokio::test]
    async fn aborted_resolves_only_after_abort() {
        let shutdown = Shutdown::default();
        let mut waiting = Box::pin(shutdown.aborted());
        assert!((&mut waiting).now_or_never().is_none());
        shutdown.begin();
        assert!((&mut waiting).now_or_never().is_none());
        shutdown.abort();
        assert!(shutdown.is_draining());
        assert!(waiting.now_or_never().is_some());
        // A turn that starts waiting after the abort sees it at once.
        assert!(shutdown.aborted().now_or_never().is_some());
    }
}
