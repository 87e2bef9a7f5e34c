//! Chat messages: what a turn sends upstream and what session memory stores.
//!
//! A plain text message is a role and a shared `Arc<str>`: cloning it into every turn costs a
//! reference count. Anything else a client may send (tool calls, a tool result's id, content as
//! an array of parts, keys the host does not know) lives behind one optional shared pointer, so
//! plain turns pay nothing for it. Messages serialise in OpenAI's wire form, which is also the
//! stored form; plain `{"role", "content"}` records written before tool calls existed still
//! read.

use std::fmt;
use std::sync::Arc;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tool::ToolCall;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// Instructions for the model, as OpenAI's newer models name them.
    Developer,
    /// The person speaking.
    User,
    /// The model's answer.
    Assistant,
    /// The result of a tool call, naming it in `tool_call_id`.
    Tool,
}

/// One chat message. The text is shared (`Arc<str>`) so the same prompt or history entry
/// can go into many turns without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said: the whole content of a text message; for content sent as an array of
    /// parts, its `text` parts joined with newlines; empty for `null` content.
    pub content: Arc<str>,
    /// Everything beyond role and text; `None` for a plain text message.
    extra: Option<Arc<Extra>>,
}

/// The parts of a message that a plain text message does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Extra {
    /// The content as sent when it is not a string (an array of parts, or `null`).
    content: Option<Value>,
    tool_calls: Vec<ToolCall>,
    tool_call_id: Option<String>,
    /// Keys the host does not know (`name`, vendor keys), verbatim.
    fields: Map<String, Value>,
}

impl ChatMessage {
    /// A text message with the given role.
    pub fn new(role: Role, content: impl Into<Arc<str>>) -> Self {
        Self {
            role,
            content: content.into(),
            extra: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<Arc<str>>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<Arc<str>>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<Arc<str>>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// An assistant answer holding tool calls, spoken text first (`null` content when none,
    /// as OpenAI writes it). Without calls it is a plain [`assistant`](Self::assistant) message.
    pub fn assistant_with_tool_calls(text: impl Into<Arc<str>>, calls: Vec<ToolCall>) -> Self {
        let mut message = Self::assistant(text);
        if calls.is_empty() {
            return message;
        }
        let content = message.content.is_empty().then_some(Value::Null);
        message.extra = Some(Arc::new(Extra {
            content,
            tool_calls: calls,
            ..Extra::default()
        }));
        message
    }

    /// The result of the tool call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<Arc<str>>) -> Self {
        let mut message = Self::new(Role::Tool, content);
        message.extra = Some(Arc::new(Extra {
            tool_call_id: Some(tool_call_id.into()),
            ..Extra::default()
        }));
        message
    }

    /// True for a message that is a role and a text only.
    pub fn is_plain(&self) -> bool {
        self.extra.is_none()
    }

    /// The tool calls of an assistant message (empty for any other).
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.extra.as_deref().map_or(&[], |e| &e.tool_calls)
    }

    /// The call a `tool` message answers.
    pub fn tool_call_id(&self) -> Option<&str> {
        self.extra.as_deref()?.tool_call_id.as_deref()
    }

    /// The content as sent when it was not a string: an array of parts (`text`, `image_url`,
    /// `input_audio`, ...) or `null`.
    pub fn content_value(&self) -> Option<&Value> {
        self.extra.as_deref()?.content.as_ref()
    }

    /// A key of the message the host does not know (`name`, a vendor key), as sent.
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.extra.as_deref()?.fields.get(key)
    }

    /// Every key of the message the host does not know, as sent.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.extra
            .as_deref()
            .into_iter()
            .flat_map(|e| e.fields.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

/// The text of content sent as an array of parts: its `text` parts joined with newlines.
fn text_of_parts(parts: &[Value]) -> String {
    let texts = parts.iter().filter_map(|part| {
        (part.get("type")?.as_str()? == "text").then_some(part.get("text")?.as_str()?)
    });
    texts.collect::<Vec<_>>().join("\n")
}

impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("role", &self.role)?;
        let Some(extra) = self.extra.as_deref() else {
            map.serialize_entry("content", &*self.content)?;
            return map.end();
        };
        match &extra.content {
            Some(value) => map.serialize_entry("content", value)?,
            None => map.serialize_entry("content", &*self.content)?,
        }
        if !extra.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &extra.tool_calls)?;
        }
        if let Some(id) = &extra.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        for (key, value) in &extra.fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ChatMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MessageVisitor)
    }
}

/// A key of a message object: the known ones, or any other (kept by name).
enum Key {
    Role,
    Content,
    ToolCalls,
    ToolCallId,
    Other(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "role" => Key::Role,
                    "content" => Key::Content,
                    "tool_calls" => Key::ToolCalls,
                    "tool_call_id" => Key::ToolCallId,
                    other => Key::Other(other.to_owned()),
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// A message's `content`: text straight into its shared form, anything else as a value.
enum Content {
    Text(Arc<str>),
    Other(Value),
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of content parts or null")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Content, E> {
                Ok(Content::Text(text.into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Content, E> {
                Ok(Content::Other(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Content, E> {
                Ok(Content::Other(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Content::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Content::Other)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Content, E> {
                Ok(Content::Other(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Content, E> {
                Ok(Content::Other(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Content, E> {
                Ok(Content::Other(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Content, E> {
                Ok(Content::Other(v.into()))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = ChatMessage;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatMessage, A::Error> {
        let mut role = None;
        // An absent content reads as `null`, as OpenAI treats it.
        let mut content = Content::Other(Value::Null);
        let mut extra = Extra::default();
        while let Some(key) = map.next_key()? {
            match key {
                Key::Role => role = Some(map.next_value()?),
                Key::Content => content = map.next_value()?,
                Key::ToolCalls => {
                    extra.tool_calls = map.next_value::<Option<_>>()?.unwrap_or_default()
                }
                Key::ToolCallId => extra.tool_call_id = map.next_value()?,
                Key::Other(key) => {
                    extra.fields.insert(key, map.next_value()?);
                }
            }
        }
        let role = role.ok_or_else(|| de::Error::missing_field("role"))?;
        let text = match content {
            Content::Text(text) => text,
            Content::Other(value) => {
                let text = value
                    .as_array()
                    .map(|p| text_of_parts(p))
                    .unwrap_or_default();
                extra.content = Some(value);
                text.into()
            }
        };
        let extra = (extra != Extra::default()).then(|| Arc::new(extra));
        Ok(ChatMessage {
            role,
            content: text,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(value: Value) -> ChatMessage {
        let message: ChatMessage = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&message).unwrap(), value);
        message
    }

    #[test]
    fn a_plain_message_is_role_and_content_as_before() {
        let message = ChatMessage::user("Hi \"you\"");
        let text = serde_json::to_string(&message).unwrap();
        assert_eq!(text, r#"{"role":"user","content":"Hi \"you\""}"#);
        let back: ChatMessage = serde_json::from_str(&text).unwrap();
        assert!(back.is_plain());
        assert_eq!(back, message);
    }

    #[test]
    fn tool_calls_tool_results_and_unknown_keys_survive_a_round_trip() {
        let call = json!({"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
            "extra_content": {"google": {"thought_signature": "c2ln"}}});
        let assistant = round_trip(json!({"role": "assistant", "content": null,
            "tool_calls": [call], "x_vendor": 1}));
        assert_eq!(&*assistant.content, "");
        assert_eq!(assistant.tool_calls()[0].name, "get_weather");
        assert_eq!(assistant.field("x_vendor"), Some(&json!(1)));
        let result =
            round_trip(json!({"role": "tool", "content": "12 C", "tool_call_id": "call_1"}));
        assert_eq!(result.tool_call_id(), Some("call_1"));
        assert_eq!(result, ChatMessage::tool_result("call_1", "12 C"));
    }

    #[test]
    fn content_parts_are_kept_and_their_text_joined() {
        let parts = json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "Be brief."}
        ]);
        let message = round_trip(json!({"role": "user", "content": parts, "name": "ada"}));
        assert_eq!(&*message.content, "What is this?\nBe brief.");
        assert_eq!(message.content_value(), Some(&parts));
        assert!(!message.is_plain());
    }

    #[test]
    fn assistant_with_calls_writes_null_content_only_without_text() {
        let call = ToolCall::new("c1", "f", "{}");
        let silent = ChatMessage::assistant_with_tool_calls("", vec![call.clone()]);
        assert_eq!(
            serde_json::to_value(&silent).unwrap()["content"],
            Value::Null
        );
        let spoken = ChatMessage::assistant_with_tool_calls("Let me check.", vec![call]);
        assert_eq!(
            serde_json::to_value(&spoken).unwrap()["content"],
            "Let me check."
        );
        assert!(ChatMessage::assistant_with_tool_calls("a", vec![]).is_plain());
    }

    #[test]
    fn a_message_without_role_is_an_error() {
        assert!(serde_json::from_value::<ChatMessage>(json!({"content": "x"})).is_err());
        assert!(serde_json::from_value::<ChatMessage>(json!({"role": "robot"})).is_err());
    }
}
