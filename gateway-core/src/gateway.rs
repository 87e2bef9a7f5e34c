//! The `Gateway` trait every backend implements, and the stream type it returns.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde::Serialize;

use crate::error::GatewayError;
use crate::event::Event;
use crate::turn::Turn;

/// Events of one turn. A gateway yields `Ok` events and ends with `Ok(text_done)` or one `Err`;
/// the host turns an `Err` into the final `error` event (see [`crate::stream::settle`]).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, GatewayError>> + Send>>;

/// Result of a health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Whether the backend looks usable.
    pub healthy: bool,
    /// Probe round trip, when one was made.
    pub latency_ms: Option<u64>,
    /// Why it is unhealthy, never containing a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Health {
    /// Healthy, with an optional probe latency.
    pub fn up(latency_ms: Option<u64>) -> Self {
        Self {
            healthy: true,
            latency_ms,
            detail: None,
        }
    }

    /// Unhealthy, with the reason.
    pub fn down(detail: impl Into<String>) -> Self {
        Self {
            healthy: false,
            latency_ms: None,
            detail: Some(detail.into()),
        }
    }
}

/// A configured backend that answers turns with a stream of events.
///
/// Object safe: the host holds gateways as `Arc<dyn Gateway>`.
#[async_trait]
pub trait Gateway: Send + Sync {
    /// Instance id, the name profiles use in `adapter_config.gateway_id`.
    fn id(&self) -> &str;

    /// Kind id this instance was built from (e.g. `openai-compat`).
    fn kind(&self) -> &str;

    /// Feature names such as `streaming`, `sessions`, `reset`.
    fn capabilities(&self) -> Vec<&'static str> {
        vec!["streaming"]
    }

    /// `Ok` when the instance has what it needs to serve; otherwise the reason.
    fn is_configured(&self) -> Result<(), GatewayError>;

    /// Model used when a turn does not override it.
    fn default_model(&self) -> Option<&str> {
        None
    }

    /// Probe the backend cheaply. The default reports configuration only.
    async fn health(&self) -> Health {
        match self.is_configured() {
            Ok(()) => Health::up(None),
            Err(e) => Health::down(e.to_string()),
        }
    }

    /// Start a turn. Failures before any byte of the answer (connection, HTTP status) may be
    /// returned here or as the stream's first item; both end the turn with one `error`.
    /// The gateway stops work promptly once `turn.cancel` is cancelled or the stream is dropped.
    async fn stream(&self, turn: Turn) -> Result<EventStream, GatewayError>;
}
