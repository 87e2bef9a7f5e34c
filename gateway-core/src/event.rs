//! The gateway event protocol spoken to voice front ends (OpenVoiceUI's format).

use serde::{Deserialize, Serialize};

use crate::tool::ToolCall;

/// One event of a streamed turn; serialises as `{"type": "...", ...}`.
///
/// A well-formed stream is: an optional `handshake`, any number of `delta`, `action` and
/// `sentence` events, the answer's `tool_call`s, then exactly one `text_done` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Sent once, when the first token arrives: `ms` since the request started.
    Handshake {
        /// Time to first token in milliseconds.
        ms: u64,
        /// Id of the gateway instance that answered (filled in by the host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
    },
    /// A piece of the spoken answer.
    Delta {
        /// Text to append to the answer.
        text: String,
    },
    /// A tool or lifecycle event, passed through as JSON.
    Action {
        /// The action object.
        action: serde_json::Value,
    },
    /// A tool call the answer asks for, complete: one per call, in the answer's order, after
    /// its text and before `text_done` (whose `finish_reason` is then `tool_calls`).
    ToolCall {
        /// The call, in OpenAI's wire form.
        call: ToolCall,
    },
    /// A completed sentence of the answer, for TTS clients without their own splitter.
    Sentence {
        /// The sentence text.
        text: String,
    },
    /// Final event of a successful turn.
    TextDone {
        /// The full answer: the concatenation of every `delta`.
        response: String,
        /// Every action emitted during the turn.
        #[serde(default)]
        actions: Vec<serde_json::Value>,
        /// Time to first token and total time, filled in by the host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timing: Option<Timing>,
        /// Token usage when the upstream reported it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// Why the upstream stopped (`stop`, `length`, ...), when it said so.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finish_reason: Option<String>,
        /// True when the turn was cut short by an interrupt.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interrupted: bool,
        /// Set by the host when the session's memory was not updated with this turn (its
        /// store stayed unreachable): why. The next turn's history lacks this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory_error: Option<String>,
    },
    /// Final event of a failed turn, instead of `text_done`.
    Error {
        /// What went wrong, never containing a secret.
        error: String,
    },
}

impl Event {
    /// A `delta` event.
    pub fn delta(text: impl Into<String>) -> Self {
        Event::Delta { text: text.into() }
    }

    /// A `text_done` event with the full response and no extras.
    pub fn text_done(response: impl Into<String>) -> Self {
        Event::TextDone {
            response: response.into(),
            actions: Vec::new(),
            timing: None,
            usage: None,
            finish_reason: None,
            interrupted: false,
            memory_error: None,
        }
    }

    /// A `tool_call` event.
    pub fn tool_call(call: ToolCall) -> Self {
        Event::ToolCall { call }
    }

    /// An `error` event.
    pub fn error(message: impl Into<String>) -> Self {
        Event::Error {
            error: message.into(),
        }
    }

    /// The protocol name of this event (`"delta"`, `"text_done"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Handshake { .. } => "handshake",
            Event::Delta { .. } => "delta",
            Event::Action { .. } => "action",
            Event::ToolCall { .. } => "tool_call",
            Event::Sentence { .. } => "sentence",
            Event::TextDone { .. } => "text_done",
            Event::Error { .. } => "error",
        }
    }

    /// True for `text_done` and `error`, the events that end a stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Event::TextDone { .. } | Event::Error { .. })
    }
}

/// Timing of a turn as reported in `text_done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Time from request start to the first token, if any token arrived.
    pub ttft_ms: Option<u64>,
    /// Time from request start to the final event.
    pub total_ms: u64,
}

/// Token counts reported by an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens in the answer.
    pub completion_tokens: u64,
    /// Sum of both.
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_to_the_openvoiceui_protocol() {
        let cases = [
            (
                Event::Handshake {
                    ms: 42,
                    gateway: None,
                },
                json!({"type": "handshake", "ms": 42}),
            ),
            (Event::delta("Hi"), json!({"type": "delta", "text": "Hi"})),
            (
                Event::Action {
                    action: json!({"name": "x"}),
                },
                json!({"type": "action", "action": {"name": "x"}}),
            ),
            (
                Event::tool_call(ToolCall::new("c1", "f", "{}")),
                json!({"type": "tool_call", "call": {"id": "c1", "type": "function",
                       "function": {"name": "f", "arguments": "{}"}}}),
            ),
            (
                Event::text_done("Hi"),
                json!({"type": "text_done", "response": "Hi", "actions": []}),
            ),
            (
                Event::error("boom"),
                json!({"type": "error", "error": "boom"}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(serde_json::to_value(&event).unwrap(), expected);
            let back: Event = serde_json::from_value(expected).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn text_done_carries_timing_and_interrupted_only_when_set() {
        let event = Event::TextDone {
            response: "a".into(),
            actions: vec![],
            timing: Some(Timing {
                ttft_ms: Some(3),
                total_ms: 9,
            }),
            usage: None,
            finish_reason: None,
            interrupted: true,
            memory_error: None,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"type": "text_done", "response": "a", "actions": [],
                   "timing": {"ttft_ms": 3, "total_ms": 9}, "interrupted": true})
        );
    }

    #[test]
    fn terminal_events() {
        assert!(Event::text_done("").is_terminal());
        assert!(Event::error("x").is_terminal());
        assert!(!Event::delta("x").is_terminal());
    }
}
