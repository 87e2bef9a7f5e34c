//! Admission of turns: the host-wide stream limit (`limits.max_streams`), the per-session
//! limit (`limits.max_streams_per_session`, see [`crate::sessions::slots`]) and refusal while
//! shutting down. The returned [`Admission`] is held by the turn until its stream ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sessions::cluster::Lease;
use crate::sessions::slots::{SessionSlot, SessionSlots};

/// Why a turn was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `max_streams` turns are streaming.
    #[error("the host is at its limit of {0} concurrent streams; retry shortly")]
    Overloaded(usize),
    /// `max_streams_per_session` turns of this session are streaming.
    #[error("this session already has {0} turn(s) streaming; wait for it to finish")]
    SessionBusy(usize),
    /// The host is draining before exit.
    #[error("the host is shutting down")]
    ShuttingDown,
}

impl Refusal {
    /// The HTTP status answered: 503, or 429 for a busy session.
    pub fn status(&self) -> axum::http::StatusCode {
        match self {
            Refusal::SessionBusy(_) => axum::http::StatusCode::TOO_MANY_REQUESTS,
            Refusal::Overloaded(_) | Refusal::ShuttingDown => {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Stable code for clients and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Overloaded(_) => "overloaded",
            Refusal::SessionBusy(_) => "session_busy",
            Refusal::ShuttingDown => "shutting_down",
        }
    }

    /// Seconds sent in `Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Refusal::Overloaded(_) | Refusal::SessionBusy(_) => 1,
            Refusal::ShuttingDown => 5,
        }
    }
}

/// Counts of open streams, host-wide and per session.
#[derive(Debug)]
pub struct StreamLimits {
    max_streams: usize,
    open: Arc<AtomicUsize>,
    sessions: Arc<SessionSlots>,
}

/// A turn's place in the limits; released on drop.
#[derive(Debug)]
pub struct Admission {
    open: Arc<AtomicUsize>,
    _session: Option<SessionSlot>,
    /// The session's stream counted across replicas (`memory.backend = "redis"`).
    shared: Option<Lease>,
}

impl StreamLimits {
    /// Limits of `max_streams` in total and `per_session` per key (0 = none).
    pub fn new(max_streams: usize, per_session: usize) -> Self {
        Self {
            max_streams,
            open: Arc::new(AtomicUsize::new(0)),
            sessions: SessionSlots::new(per_session),
        }
    }

    /// Admit a turn of `session` (if any): host-wide count first, then the session's.
    pub fn admit(&self, session: Option<&str>) -> Result<Admission, Refusal> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_streams).then_some(n + 1)
            })
            .map_err(|_| Refusal::Overloaded(self.max_streams))?;
        let session = match session.map(|key| self.sessions.try_acquire(key)) {
            None => None,
            Some(Some(slot)) => Some(slot),
            Some(None) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::SessionBusy(self.sessions.max()));
            }
        };
        Ok(Admission {
            open: self.open.clone(),
            _session: session,
            shared: None,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The per-session counts.
    pub fn sessions(&self) -> &Arc<SessionSlots> {
        &self.sessions
    }
}

impl Admission {
    /// Hold the session's stream counted across replicas until the turn's stream ends.
    pub fn hold(&mut self, lease: Lease) {
        self.shared = Some(lease);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_session_limits_release_on_drop() {
        let limits = StreamLimits::new(3, 1);
        let a = limits.admit(Some("s")).unwrap();
        assert_eq!(
            limits.admit(Some("s")).unwrap_err(),
            Refusal::SessionBusy(1)
        );
        assert_eq!(limits.open(), 1, "a refused session turn holds nothing");
        let b = limits.admit(None).unwrap();
        let c = limits.admit(Some("t")).unwrap();
        assert_eq!(limits.admit(None).unwrap_err(), Refusal::Overloaded(3));
        drop(a);
        let d = limits.admit(Some("s")).unwrap();
        drop((b, c, d));
        assert_eq!(limits.open(), 0);
        assert_eq!(limits.sessions().sessions(), 0);
    }
}
