//! Tool calls rebuilt from streamed `tool_calls` deltas, every provider's quirks normalised
//! into complete [`ToolCall`]s:
//!
//! - deltas with an `index` belong to the call at that index, and a new `id` at an index
//!   already used starts a new call (servers that put every call at index 0);
//! - deltas without an `index` (Gemini) continue the last call, unless they bring a new `id`,
//!   or a `name` when the last call already has one (whole calls side by side in one chunk);
//! - `arguments` sent as an object (some local servers) become its JSON text; fragments join;
//! - keys of the call object the host does not know (Gemini's `extra_content`) are kept;
//! - at the end, a call without an id gets a unique one (so does a repeated id), empty
//!   arguments become `{}`, a call without a name is an error, and so is an answer cut at
//!   `max_tokens` inside a call's arguments: never a half call.

use gateway_core::{GatewayError, ToolCall, TOOL_CALLS_FINISH};
use serde::Deserialize;
use serde_json::{Map, Value};

/// One entry of a streamed `delta.tool_calls` array.
#[derive(Debug, Deserialize)]
pub(crate) struct CallDelta {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
    /// Every other key (`type`, vendor keys).
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Value,
}

/// Most bytes of names and arguments all calls of one answer may hold: an upstream streaming
/// endless arguments must not grow the host's memory without bound.
pub(crate) const MAX_CALLS_BYTES: usize = 4 * 1024 * 1024;

/// The calls of one answer, as far as they arrived.
#[derive(Debug, Default)]
pub(crate) struct ToolCalls {
    calls: Vec<ToolCall>,
    /// The upstream `index` of each call in `calls` (`None` when it sent none).
    indexes: Vec<Option<u64>>,
    /// Bytes of names and arguments taken so far.
    bytes: usize,
}

impl ToolCalls {
    /// True until the first delta of a call arrived.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Take one delta into the call it belongs to; an error once the answer's calls pass
    /// [`MAX_CALLS_BYTES`].
    pub fn push(&mut self, delta: CallDelta) -> Result<(), GatewayError> {
        let (name, arguments) = match delta.function {
            Some(f) => (
                f.name.unwrap_or_default(),
                ToolCall::arguments_text(f.arguments),
            ),
            None => (String::new(), String::new()),
        };
        self.bytes += name.len() + arguments.len();
        if self.bytes > MAX_CALLS_BYTES {
            return Err(GatewayError::Malformed(format!(
                "the answer's tool calls are longer than {} MiB",
                MAX_CALLS_BYTES / (1024 * 1024)
            )));
        }
        let id = delta.id.unwrap_or_default();
        let slot = self.slot(delta.index, &id, &name);
        let call = &mut self.calls[slot];
        if call.id.is_empty() {
            call.id = id;
        }
        if call.name.is_empty() {
            call.name = name;
        }
        call.arguments.push_str(&arguments);
        for (key, value) in delta.extra {
            if key != "type" {
                call.extra.insert(key, value);
            }
        }
        Ok(())
    }

    /// The position of the call a delta belongs to, opening a new call when it starts one.
    fn slot(&mut self, index: Option<u64>, id: &str, name: &str) -> usize {
        let current = match index {
            Some(_) => self.indexes.iter().rposition(|i| *i == index),
            None => self.calls.len().checked_sub(1),
        };
        if let Some(slot) = current {
            let call = &self.calls[slot];
            let new_id = !id.is_empty() && !call.id.is_empty() && id != call.id;
            // Without an index a second name can only be a second call; with one, a name
            // repeated on every delta is the same call.
            let new_name = id.is_empty()
                && !name.is_empty()
                && !call.name.is_empty()
                && (index.is_none() || name != call.name);
            if !new_id && !new_name {
                return slot;
            }
        }
        self.calls.push(ToolCall::default());
        self.indexes.push(index);
        self.calls.len() - 1
    }

    /// The finished calls, made valid in place (see [`normalise`]); the same on every call.
    pub fn finish(&mut self, finish_reason: Option<&str>) -> Result<Vec<ToolCall>, GatewayError> {
        normalise(&mut self.calls, finish_reason)?;
        Ok(self.calls.clone())
    }
}

/// Make an answer's complete calls valid: unique non-empty ids, `{}` for empty arguments.
/// A call without a name, or an answer stopped at `max_tokens` (`length`) while a call's
/// arguments are not yet complete JSON, is an error. Idempotent.
pub(crate) fn normalise(
    calls: &mut [ToolCall],
    finish_reason: Option<&str>,
) -> Result<(), GatewayError> {
    for i in 0..calls.len() {
        let (earlier, rest) = calls.split_at_mut(i);
        let call = &mut rest[0];
        if call.name.is_empty() {
            return Err(GatewayError::Malformed(
                "a tool call without a function name".into(),
            ));
        }
        if call.id.is_empty() || earlier.iter().any(|c| c.id == call.id) {
            call.id = new_call_id();
        }
        if call.arguments.trim().is_empty() {
            call.arguments = "{}".into();
        }
        let complete = serde_json::from_str::<serde::de::IgnoredAny>(&call.arguments).is_ok();
        if finish_reason == Some("length") && !complete {
            return Err(GatewayError::Malformed(format!(
                "the answer reached max_tokens (finish_reason length) inside the arguments of tool call '{}'",
                call.name
            )));
        }
    }
    Ok(())
}

/// The finish reason an answer reports: `tool_calls` whenever it holds calls (Gemini says
/// `stop`), otherwise the upstream's own.
pub(crate) fn finish_reason(calls: &[ToolCall], upstream: Option<String>) -> Option<String> {
    if calls.is_empty() {
        upstream
    } else {
        Some(TOOL_CALLS_FINISH.into())
    }
}

/// A fresh id in OpenAI's style: `call_` and 24 random letters and digits.
fn new_call_id() -> String {
    let mut id = String::with_capacity(29);
    id.push_str("call_");
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(24));
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calls(deltas: &[Value]) -> Result<Vec<ToolCall>, GatewayError> {
        let mut calls = ToolCalls::default();
        for delta in deltas {
            calls.push(serde_json::from_value(delta.clone()).unwrap())?;
        }
        calls.finish(Some("tool_calls"))
    }

    #[test]
    fn endless_arguments_are_an_error_not_unbounded_memory() {
        let chunk = "x".repeat(1024 * 1024);
        let mut deltas = vec![json!({"index": 0, "id": "a", "function": {"name": "f"}})];
        deltas.extend((0..3).map(|_| json!({"index": 0, "function": {"arguments": chunk}})));
        assert_eq!(calls(&deltas).unwrap().len(), 1, "3 MiB is still taken");
        deltas.push(json!({"index": 1, "id": "b", "function": {"name": "g", "arguments": chunk}}));
        let error = calls(&deltas).unwrap_err().to_string();
        assert!(
            error.contains("tool calls are longer than 4 MiB"),
            "{error}"
        );
    }

    fn summary(calls: &[ToolCall]) -> Vec<(&str, &str)> {
        calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect()
    }

    #[test]
    fn fragments_join_by_index_and_a_new_id_at_a_used_index_is_a_new_call() {
        let got = calls(&[
            json!({"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}),
            json!({"index": 0, "function": {"arguments": "{\"x\":"}}),
            json!({"index": 0, "function": {"arguments": "1}"}}),
            json!({"index": 0, "id": "b", "function": {"name": "g", "arguments": "{}"}}),
            json!({"index": 0, "id": "b", "function": {"name": "g", "arguments": ""}}),
        ])
        .unwrap();
        assert_eq!(summary(&got), [("f", "{\"x\":1}"), ("g", "{}")]);
        assert_eq!((got[0].id.as_str(), got[1].id.as_str()), ("a", "b"));
        assert!(got[0].extra.is_empty(), "type is not an extra key");
    }

    #[test]
    fn without_index_whole_calls_side_by_side_stay_apart_and_fragments_continue() {
        let got = calls(&[
            json!({"id": "c1", "function": {"name": "f", "arguments": "{\"a\":"}}),
            json!({"function": {"arguments": "1}"}}),
            json!({"function": {"name": "f", "arguments": "{\"a\":2}"},
                   "extra_content": {"google": {"thought_signature": "s"}}}),
        ])
        .unwrap();
        assert_eq!(summary(&got), [("f", "{\"a\":1}"), ("f", "{\"a\":2}")]);
        assert_eq!(
            got[1].extra["extra_content"]["google"]["thought_signature"],
            "s"
        );
    }

    #[test]
    fn object_arguments_missing_and_repeated_ids_and_empty_arguments() {
        let got = calls(&[
            json!({"index": 0, "id": "same", "function": {"name": "f", "arguments": {"city": "Oslo"}}}),
            json!({"index": 1, "id": "same", "function": {"name": "g"}}),
            json!({"index": 2, "id": "", "function": {"name": "h", "arguments": "  "}}),
        ])
        .unwrap();
        assert_eq!(
            summary(&got),
            [("f", r#"{"city":"Oslo"}"#), ("g", "{}"), ("h", "{}")]
        );
        assert_eq!(got[0].id, "same");
        assert!(got[1].id.starts_with("call_") && got[1].id.len() == 29);
        assert!(got[2].id.starts_with("call_") && got[2].id != got[1].id);
    }

    #[test]
    fn finishing_twice_gives_the_same_calls() {
        let mut open = ToolCalls::default();
        open.push(serde_json::from_value(json!({"function": {"name": "f"}})).unwrap())
            .unwrap();
        let first = open.finish(Some("stop")).unwrap();
        assert_eq!(open.finish(Some("stop")).unwrap(), first);
    }

    #[test]
    fn a_nameless_call_and_a_call_cut_at_max_tokens_are_errors() {
        let nameless = calls(&[json!({"index": 0, "id": "a", "function": {"arguments": "{}"}})]);
        assert!(nameless
            .unwrap_err()
            .to_string()
            .contains("without a function name"));
        let mut cut = ToolCalls::default();
        cut.push(
            serde_json::from_value(
                json!({"index": 0, "id": "a", "function": {"name": "f", "arguments": "{\"a\":"}}),
            )
            .unwrap(),
        )
        .unwrap();
        let error = cut.finish(Some("length")).unwrap_err().to_string();
        assert!(
            error.contains("max_tokens") && error.contains("'f'"),
            "{error}"
        );
        let mut whole = vec![ToolCall::new("a", "f", "{\"a\":1}")];
        assert!(normalise(&mut whole, Some("length")).is_ok());
    }
}
