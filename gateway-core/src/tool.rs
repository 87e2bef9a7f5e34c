//! Tool (function) calls a model asks for: one typed shape every gateway kind yields and
//! session memory stores, serialised in OpenAI's wire form.

use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `finish_reason` of an answer that holds tool calls, whatever the upstream said.
pub const TOOL_CALLS_FINISH: &str = "tool_calls";

/// One finished tool call.
///
/// Serialises as OpenAI's `{"id", "type": "function", "function": {"name", "arguments"}}`
/// followed by the `extra` keys; deserialises from that shape, an object `arguments`
/// becoming its JSON text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id; a tool result names it in `tool_call_id`.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text (always a string, as the model wrote it).
    pub arguments: String,
    /// Keys of the call object the host does not know, kept verbatim so they go back to the
    /// provider on the next request (Gemini's `extra_content.google.thought_signature`).
    pub extra: Map<String, Value>,
}

/// Keys of the call object written from [`ToolCall`]'s own fields.
const OWN_KEYS: [&str; 3] = ["id", "type", "function"];

impl ToolCall {
    /// A call without extra keys.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
            extra: Map::new(),
        }
    }

    /// The text of an `arguments` value: a string as it is, `null` as nothing, anything else
    /// (an object, as some local servers send) as its compact JSON.
    pub fn arguments_text(value: Value) -> String {
        match value {
            Value::String(text) => text,
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

impl Serialize for ToolCall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("type", "function")?;
        map.serialize_entry(
            "function",
            &Function {
                name: &self.name,
                arguments: &self.arguments,
            },
        )?;
        for (key, value) in &self.extra {
            if !OWN_KEYS.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// A call object as received.
#[derive(Deserialize)]
struct WireCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Value,
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let WireCall {
            id,
            function,
            mut extra,
        } = WireCall::deserialize(deserializer)?;
        extra.retain(|key, _| !OWN_KEYS.contains(&key.as_str()));
        let (name, arguments) = function.map_or_else(Default::default, |f| {
            (
                f.name.unwrap_or_default(),
                ToolCall::arguments_text(f.arguments),
            )
        });
        Ok(Self {
            id: id.unwrap_or_default(),
            name,
            arguments,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_in_openai_wire_form_with_extra_keys_after() {
        let mut call = ToolCall::new("call_1", "get_weather", r#"{"city":"Paris"}"#);
        call.extra.insert(
            "extra_content".into(),
            json!({"google": {"thought_signature": "sig"}}),
        );
        let text = serde_json::to_string(&call).unwrap();
        assert_eq!(
            text,
            r#"{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},"extra_content":{"google":{"thought_signature":"sig"}}}"#
        );
        assert_eq!(serde_json::from_str::<ToolCall>(&text).unwrap(), call);
    }

    #[test]
    fn object_arguments_become_their_json_text_and_type_is_not_an_extra() {
        let call: ToolCall = serde_json::from_value(json!({
            "id": "c", "type": "function", "index": 0,
            "function": {"name": "f", "arguments": {"a": [1, 2]}}
        }))
        .unwrap();
        assert_eq!(call.arguments, r#"{"a":[1,2]}"#);
        assert_eq!(call.extra, json!({"index": 0}).as_object().unwrap().clone());
        let bare: ToolCall = serde_json::from_value(json!({"function": {"name": "f"}})).unwrap();
        assert_eq!((bare.id.as_str(), bare.arguments.as_str()), ("", ""));
    }
}
