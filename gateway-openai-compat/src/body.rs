//! The request body of `POST {base_url}/chat/completions`, serialised straight from the
//! turn's messages into a buffer sized up front.
//!
//! A voice turn carries the same long system prompt (~12 KB) every time. JSON-escaping it
//! was the largest single cost of a turn, so a long system message is escaped once and
//! reused: [`EscapedPrompts`] remembers the escaped form of the last few, matched by the
//! shared `Arc<str>` (the host hands every turn of a profile the same one) or, failing that,
//! by content. The bytes sent are exactly what serialising the messages directly gives.
//!
//! The turn's `extra` request fields (`tools`, `tool_choice`, `response_format`, vendor keys,
//! ...) follow the host's own fields, which win where the host sets them; messages go as the
//! client sent them (tool calls, tool results, content parts, unknown keys).

use std::sync::{Arc, Mutex};

use gateway_core::{ChatMessage, Role};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// System messages at least this long are escaped once and reused.
const MIN_CACHED_BYTES: usize = 1024;
/// Distinct system prompts remembered (one per profile in use, plus hot-reload churn).
const CACHE_SLOTS: usize = 8;

/// The request body: the host's fields in the order OpenAI documents them, then the turn's
/// other request fields.
pub(crate) struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    pub stream: bool,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub stream_options: StreamOptions,
    /// Request fields the host does not use itself, forwarded unchanged.
    pub extra: &'a Map<String, Value>,
}

impl ChatRequest<'_> {
    /// True for a field the host sets itself, which an `extra` field of that name does not
    /// replace.
    fn sets(&self, key: &str) -> bool {
        match key {
            "model" | "messages" | "stream" | "max_tokens" | "stream_options" => true,
            "temperature" => self.temperature.is_some(),
            _ => false,
        }
    }
}

impl Serialize for ChatRequest<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("messages", &self.messages)?;
        map.serialize_entry("stream", &self.stream)?;
        map.serialize_entry("max_tokens", &self.max_tokens)?;
        if let Some(temperature) = self.temperature {
            map.serialize_entry("temperature", &temperature)?;
        }
        map.serialize_entry("stream_options", &self.stream_options)?;
        for (key, value) in self.extra {
            if !self.sets(key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// `stream_options` of the request.
#[derive(Serialize)]
pub(crate) struct StreamOptions {
    pub include_usage: bool,
}

/// One message as sent, exactly as [`ChatMessage`] serialises, a long system prompt's
/// content taken from the escaped cache.
pub(crate) struct WireMessage<'a> {
    message: &'a ChatMessage,
    /// The content as a JSON string literal escaped earlier (plain system messages only).
    escaped: Option<Arc<RawValue>>,
}

impl Serialize for WireMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(raw) = &self.escaped else {
            return self.message.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("role", &self.message.role)?;
        map.serialize_entry("content", raw)?;
        map.end()
    }
}

impl ChatRequest<'_> {
    /// The JSON body. Serialising plain data into a `Vec` cannot fail; an error is reported
    /// as text for the caller's error path all the same.
    pub fn to_body(&self) -> Result<Vec<u8>, String> {
        let mut body = Vec::with_capacity(self.estimated_len());
        serde_json::to_writer(&mut body, self).map_err(|e| e.to_string())?;
        Ok(body)
    }

    /// The body's length, rounded up a little: escaping grows plain text by a few percent.
    /// (Tool calls, content parts and extra fields are not counted: the buffer grows for them.)
    fn estimated_len(&self) -> usize {
        let messages: usize = self
            .messages
            .iter()
            .map(|m| match &m.escaped {
                None => m.message.content.len() + m.message.content.len() / 16 + 40,
                Some(raw) => raw.get().len() + 40,
            })
            .sum();
        messages + self.model.len() + 160
    }
}

/// The escaped form of recently sent long system prompts, most recently used last.
#[derive(Debug, Default)]
pub(crate) struct EscapedPrompts {
    slots: Mutex<Vec<(Arc<str>, Arc<RawValue>)>>,
}

impl EscapedPrompts {
    /// The messages of a turn as sent, long plain system messages from the cache.
    pub fn wire<'a>(&self, messages: &'a [ChatMessage]) -> Vec<WireMessage<'a>> {
        messages
            .iter()
            .map(|m| WireMessage {
                message: m,
                escaped: (m.role == Role::System
                    && m.content.len() >= MIN_CACHED_BYTES
                    && m.is_plain())
                .then(|| self.escaped(&m.content))
                .flatten(),
            })
            .collect()
    }

    /// The JSON string literal of `text`, escaped at most once per distinct prompt.
    fn escaped(&self, text: &Arc<str>) -> Option<Arc<RawValue>> {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = slots
                .iter()
                .rposition(|(key, _)| Arc::ptr_eq(key, text) || **key == **text)
            {
                let raw = Arc::clone(&slots[i].1);
                if i + 1 != slots.len() {
                    let hit = slots.remove(i);
                    slots.push(hit);
                }
                return Some(raw);
            }
        }
        // Escape outside the lock; two turns racing on a new prompt both escape it once.
        let literal = serde_json::to_string(&**text).ok()?;
        let raw: Arc<RawValue> = RawValue::from_string(literal).ok()?.into();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= CACHE_SLOTS {
            slots.remove(0);
        }
        slots.push((Arc::clone(text), Arc::clone(&raw)));
        Some(raw)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the body used to be: the messages serialised as they are.
    #[derive(Serialize)]
    struct Plain<'a> {
        model: &'a str,
        messages: &'a [ChatMessage],
        stream: bool,
        max_tokens: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        temperature: Option<f32>,
        stream_options: StreamOptions,
    }

    fn body(cache: &EscapedPrompts, messages: &[ChatMessage], temperature: Option<f32>) -> Vec<u8> {
        let extra = Map::new();
        ChatRequest {
            model: "m\"odel",
            messages: cache.wire(messages),
            stream: true,
            max_tokens: 77,
            temperature,
            stream_options: StreamOptions {
                include_usage: true,
            },
            extra: &extra,
        }
        .to_body()
        .unwrap()
    }

    fn plain(messages: &[ChatMessage], temperature: Option<f32>) -> Vec<u8> {
        serde_json::to_vec(&Plain {
            model: "m\"odel",
            messages,
            stream: true,
            max_tokens: 77,
            temperature,
            stream_options: StreamOptions {
                include_usage: true,
            },
        })
        .unwrap()
    }

    fn long_prompt(tag: &str) -> Arc<str> {
        let mut text = format!("{tag}: speak \"briefly\"\\ \u{1}\t\n é 🙂 ");
        while text.len() < MIN_CACHED_BYTES * 3 {
            text.push_str("Answer in short spoken sentences.\n");
        }
        text.into()
    }

    #[test]
    fn bytes_equal_serialising_the_messages_directly() {
        let cache = EscapedPrompts::default();
        let prompt = long_prompt("a");
        let messages = vec![
            ChatMessage::system(prompt.clone()),
            ChatMessage::user("Hi \"there\"\n"),
            ChatMessage::assistant("Hello.\u{7f}\u{1f}"),
            ChatMessage::system("short system note"),
            ChatMessage::user("And?"),
        ];
        for temperature in [None, Some(0.7)] {
            // A miss, then hits by pointer.
            for _ in 0..3 {
                assert_eq!(
                    body(&cache, &messages, temperature),
                    plain(&messages, temperature)
                );
            }
        }
        assert_eq!(cache.len(), 1, "only the long system prompt is cached");
        // The same text in another allocation hits by content and gives the same bytes.
        let copy = vec![
            ChatMessage::system(prompt.to_string()),
            ChatMessage::user("x"),
        ];
        assert_eq!(body(&cache, &copy, None), plain(&copy, None));
        assert_eq!(cache.len(), 1);
        let value: serde_json::Value = serde_json::from_slice(&body(&cache, &copy, None)).unwrap();
        assert_eq!(value["messages"][0]["content"].as_str(), Some(&*prompt));
    }

    #[test]
    fn extra_fields_follow_and_the_hosts_own_fields_win() {
        let cache = EscapedPrompts::default();
        let prompt = long_prompt("tools");
        let exchange = serde_json::json!([
            {"role": "user", "name": "ada", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
                "extra_content": {"google": {"thought_signature": "c2ln"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "12 C"}
        ]);
        let mut messages = vec![ChatMessage::system(prompt)];
        messages.extend(serde_json::from_value::<Vec<ChatMessage>>(exchange.clone()).unwrap());
        let extra = serde_json::json!({
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
            "tool_choice": "auto", "parallel_tool_calls": false, "seed": 7, "stop": ["\n"],
            "x_vendor": {"a": 1}, "model": "theirs", "stream": false, "max_tokens": 5,
            "stream_options": {"include_usage": false}, "temperature": 0.1
        });
        let extra = extra.as_object().unwrap();
        for (temperature, sent) in [(None, 0.1), (Some(0.5), 0.5)] {
            let request = ChatRequest {
                model: "ours",
                messages: cache.wire(&messages),
                stream: true,
                max_tokens: 77,
                temperature,
                stream_options: StreamOptions {
                    include_usage: true,
                },
                extra,
            };
            let body: Value = serde_json::from_slice(&request.to_body().unwrap()).unwrap();
            assert_eq!(body["model"], "ours");
            assert_eq!(body["stream"], true);
            assert_eq!(body["max_tokens"], 77);
            assert_eq!(body["stream_options"]["include_usage"], true);
            assert!((body["temperature"].as_f64().unwrap() - sent).abs() < 1e-6);
            for key in [
                "tools",
                "tool_choice",
                "parallel_tool_calls",
                "seed",
                "stop",
                "x_vendor",
            ] {
                assert_eq!(body[key], extra[key], "{key}");
            }
            assert_eq!(
                body["messages"].as_array().unwrap()[1..],
                exchange.as_array().unwrap()[..]
            );
        }
        assert_eq!(
            cache.len(),
            1,
            "the long system prompt still comes from the cache"
        );
    }

    #[test]
    fn a_changed_prompt_is_escaped_anew_and_the_cache_stays_bounded() {
        let cache = EscapedPrompts::default();
        for i in 0..(CACHE_SLOTS * 3) {
            let messages = vec![
                ChatMessage::system(long_prompt(&i.to_string())),
                ChatMessage::user("q"),
            ];
            assert_eq!(body(&cache, &messages, None), plain(&messages, None));
        }
        assert_eq!(cache.len(), CACHE_SLOTS);
    }
}
