//! The protocol rule a host applies to a gateway's stream: exactly one final event, nothing
//! after it.

use crate::error::GatewayError;
use crate::event::Event;

/// The event a host passes on for one item of a gateway's stream (`None`: the stream ended):
/// the event itself, an `Err` as the final `error` event, or, for a stream that ended without
/// a final event, an `error` saying so. The result is final when [`Event::is_terminal`] says
/// so, and a host then stops reading the stream.
pub fn settle(item: Option<Result<Event, GatewayError>>) -> Event {
    match item {
        Some(Ok(event)) => event,
        Some(Err(error)) => Event::error(error.to_string()),
        None => Event::error(
            GatewayError::Other("gateway stream ended without a final event".into()).to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pass_through_unchanged() {
        assert_eq!(settle(Some(Ok(Event::delta("a")))), Event::delta("a"));
        assert_eq!(
            settle(Some(Ok(Event::text_done("a")))),
            Event::text_done("a")
        );
    }

    #[test]
    fn an_error_becomes_the_final_event() {
        let event = settle(Some(Err(GatewayError::Truncated)));
        assert!(event.is_terminal());
        assert!(matches!(&event, Event::Error { error } if error.contains("truncated")));
    }

    #[test]
    fn the_end_without_a_final_event_becomes_an_error() {
        let event = settle(None);
        assert!(event.is_terminal());
        assert!(matches!(&event, Event::Error { error } if error.contains("without a final")));
    }
}
