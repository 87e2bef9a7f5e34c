//! Upstream concurrency per gateway instance: `max_concurrency` in a `[gateways.<id>]` table
//! (or `limits.max_upstream_concurrency` for every instance). A turn beyond the limit waits for
//! a slot up to the instance's first-token timeout, then fails with
//! [`GatewayError::Busy`] (transient, so a fallback gateway may take over). The slot is held
//! until the turn's upstream stream is dropped.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use gateway_core::{async_trait, EventStream, Gateway, GatewayError, Health, Turn};
use tokio::sync::Semaphore;

/// A gateway whose concurrent `stream` calls are bounded.
///
/// Every `Gateway` method is forwarded to the wrapped instance; when the trait gains a method,
/// forward it here too.
pub struct Limited {
    inner: Arc<dyn Gateway>,
    slots: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
}

impl Limited {
    /// Wrap `inner`, allowing `limit` (> 0) turns at once, each waiting at most `wait` for a slot.
    pub fn wrap(inner: Arc<dyn Gateway>, limit: usize, wait: Duration) -> Arc<dyn Gateway> {
        Arc::new(Self {
            inner,
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            wait,
        })
    }
}

#[async_trait]
impl Gateway for Limited {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn kind(&self) -> &str {
        self.inner.kind()
    }

    fn capabilities(&self) -> Vec<&'static str> {
        self.inner.capabilities()
    }

    fn is_configured(&self) -> Result<(), GatewayError> {
        self.inner.is_configured()
    }

    fn default_model(&self) -> Option<&str> {
        self.inner.default_model()
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    async fn stream(&self, turn: Turn) -> Result<EventStream, GatewayError> {
        let busy = || GatewayError::Busy {
            gateway: self.inner.id().to_string(),
            limit: self.limit,
            waited: self.wait,
        };
        let permit = tokio::select! {
            biased;
            () = turn.cancel.cancelled() => return Err(GatewayError::Cancelled),
            permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()) => {
                match permit {
                    Ok(Ok(permit)) => permit,
                    // Timed out, or the semaphore was closed (never done): both mean no slot.
                    Ok(Err(_)) | Err(_) => return Err(busy()),
                }
            }
        };
        let inner = self.inner.stream(turn).await?;
        // The permit lives as long as the stream: released when the turn ends or is dropped.
        Ok(Box::pin(stream::unfold(
            (inner, permit),
            |(mut inner, permit)| async move {
                let item = inner.next().await?;
                Some((item, (inner, permit)))
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::Event;
    use tokio::sync::Notify;

    /// Streams one delta, then waits for `release` before `text_done`.
    struct Held(Arc<Notify>);

    #[async_trait]
    impl Gateway for Held {
        fn id(&self) -> &str {
            "held"
        }
        fn kind(&self) -> &str {
            "test"
        }
        fn is_configured(&self) -> Result<(), GatewayError> {
            Ok(())
        }
        async fn stream(&self, _turn: Turn) -> Result<EventStream, GatewayError> {
            let release = self.0.clone();
            Ok(Box::pin(stream::iter([Ok(Event::delta("a"))]).chain(
                stream::once(async move {
                    release.notified().await;
                    Ok(Event::text_done("a"))
                }),
            )))
        }
    }

    #[tokio::test]
    async fn excess_turns_wait_then_fail_busy_and_slots_come_back() {
        let release = Arc::new(Notify::new());
        let gateway = Limited::wrap(
            Arc::new(Held(release.clone())),
            1,
            Duration::from_millis(50),
        );
        let mut first = gateway.stream(Turn::default()).await.unwrap();
        assert_eq!(first.next().await.unwrap().unwrap(), Event::delta("a"));
        let error = gateway.stream(Turn::default()).await.err().unwrap();
        assert_eq!(error.cause(), "busy");
        assert!(error.is_transient());
        assert!(error.to_string().contains("1 upstream slots"), "{error}");
        drop(first); // a dropped turn frees its slot
        let mut second = gateway.stream(Turn::default()).await.unwrap();
        assert_eq!(second.next().await.unwrap().unwrap(), Event::delta("a"));
        release.notify_one();
        assert!(second.next().await.unwrap().unwrap().is_terminal());
    }

    #[tokio::test]
    async fn a_waiting_turn_takes_the_slot_when_it_frees() {
        let release = Arc::new(Notify::new());
        let gateway = Limited::wrap(Arc::new(Held(release.clone())), 1, Duration::from_secs(30));
        let mut first = gateway.stream(Turn::default()).await.unwrap();
        first.next().await.unwrap().unwrap();
        let waiting = {
            let gateway = gateway.clone();
            tokio::spawn(async move { gateway.stream(Turn::default()).await.map(|_| ()) })
        };
        release.notify_one();
        while first.next().await.is_some() {}
        drop(first);
        waiting.await.unwrap().unwrap();
    }
}
