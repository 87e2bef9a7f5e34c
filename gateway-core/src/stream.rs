//! Stream helpers that enforce the protocol: exactly one final event, nothing after it.

use futures::stream::{self, Stream, StreamExt};

use crate::error::GatewayError;
use crate::event::Event;
use crate::gateway::EventStream;

/// Turns a gateway's stream into a well-formed event stream: an `Err` becomes the final
/// `error` event, nothing is passed on after a final event, and a stream that ends without
/// one gets an `error` saying so. Never yields more than one final event.
pub fn finish(inner: EventStream) -> impl Stream<Item = Event> + Send {
    stream::unfold(Some(inner), |state| async move {
        let mut inner = state?;
        let event = settle(inner.next().await);
        let rest = (!event.is_terminal()).then_some(inner);
        Some((event, rest))
    })
}

/// What [`finish`] passes on for one item of a gateway's stream (`None`: the stream ended):
/// the event itself, an `Err` as the final `error` event, or, for a stream that ended without
/// a final event, an `error` saying so. The result is final when [`Event::is_terminal`] says so.
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

    fn events(items: Vec<Result<Event, GatewayError>>) -> Vec<Event> {
        let inner: EventStream = Box::pin(stream::iter(items));
        futures::executor::block_on(finish(inner).collect())
    }

    #[test]
    fn passes_a_good_stream_through() {
        let out = events(vec![Ok(Event::delta("a")), Ok(Event::text_done("a"))]);
        assert_eq!(out, vec![Event::delta("a"), Event::text_done("a")]);
    }

    #[test]
    fn error_is_final_and_later_items_are_dropped() {
        let out = events(vec![
            Ok(Event::delta("a")),
            Err(GatewayError::Truncated),
            Ok(Event::text_done("a")),
        ]);
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[1], Event::Error { error } if error.contains("truncated")));
    }

    #[test]
    fn missing_final_event_becomes_an_error() {
        let out = events(vec![Ok(Event::delta("a"))]);
        assert!(matches!(&out[1], Event::Error { error } if error.contains("without a final")));
        let out = events(vec![Ok(Event::text_done("x")), Ok(Event::text_done("y"))]);
        assert_eq!(out, vec![Event::text_done("x")]);
    }
}
