//! Graceful shutdown: on SIGTERM/SIGINT the host stops accepting, refuses new turns, lets
//! in-flight turns finish for `shutdown_grace_secs`, then ends the rest with one `error`
//! event ("host shutting down") so every client stream still ends with exactly one final event.

use gateway_core::CancellationToken;

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

    /// A token cancelled by [`Shutdown::abort`], for one turn to watch across its events: a
    /// token of its own (a child of the shared one), so the turns streaming at once never
    /// contend for one lock.
    pub fn abort_token(&self) -> CancellationToken {
        self.abort.child_token()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_tokens_fire_on_abort_only() {
        let shutdown = Shutdown::default();
        let token = shutdown.abort_token();
        shutdown.begin();
        assert!(shutdown.is_draining());
        assert!(!token.is_cancelled());
        shutdown.abort();
        assert!(token.is_cancelled());
        // A turn that asks after the abort gets a token already cancelled.
        assert!(shutdown.abort_token().is_cancelled());
    }
}
