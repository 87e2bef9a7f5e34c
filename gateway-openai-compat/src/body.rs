//! The request body of `POST {base_url}/chat/completions`, serialised straight from the
//! turn's messages into a buffer sized up front.
//!
//! A voice turn carries the same long system prompt (~12 KB) every time. JSON-escaping it
//! was the largest single cost of a turn, so a long system message is escaped once and
//! reused: [`EscapedPrompts`] remembers the escaped form of the last few, matched by the
//! shared `Arc<str>` (the host hands every turn of a profile the same one) or, failing that,
//! by content. The bytes sent are exactly what serialising the messages directly gives.

use std::sync::{Arc, Mutex};

use gateway_core::{ChatMessage, Role};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// System messages at least this long are escaped once and reused.
const MIN_CACHED_BYTES: usize = 1024;
/// Distinct system prompts remembered (one per profile in use, plus hot-reload churn).
const CACHE_SLOTS: usize = 8;

/// The request body; fields in the order OpenAI documents them.
#[derive(Serialize)]
pub(crate) struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    pub stream: bool,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    pub stream_options: StreamOptions,
}

/// `stream_options` of the request.
#[derive(Serialize)]
pub(crate) struct StreamOptions {
    pub include_usage: bool,
}

/// One message as sent: `{"role": ..., "content": ...}`, like [`ChatMessage`] serialises.
#[derive(Serialize)]
pub(crate) struct WireMessage<'a> {
    role: Role,
    content: Content<'a>,
}

/// A message's content: plain text, or a JSON string literal escaped earlier.
enum Content<'a> {
    Text(&'a str),
    Escaped(Arc<RawValue>),
}

impl Serialize for Content<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Content::Text(text) => serializer.serialize_str(text),
            Content::Escaped(raw) => raw.serialize(serializer),
        }
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
    fn estimated_len(&self) -> usize {
        let messages: usize = self
            .messages
            .iter()
            .map(|m| match &m.content {
                Content::Text(text) => text.len() + text.len() / 16 + 40,
                Content::Escaped(raw) => raw.get().len() + 40,
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
    /// The messages of a turn as sent, long system messages from the cache.
    pub fn wire<'a>(&self, messages: &'a [ChatMessage]) -> Vec<WireMessage<'a>> {
        messages
            .iter()
            .map(|m| WireMessage {
                role: m.role,
                content: match m.role {
                    Role::System if m.content.len() >= MIN_CACHED_BYTES => self
                        .escaped(&m.content)
                        .map_or(Content::Text(&m.content), Content::Escaped),
                    _ => Content::Text(&m.content),
                },
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
        ChatRequest {
            model: "m\"odel",
            messages: cache.wire(messages),
            stream: true,
            max_tokens: 77,
            temperature,
            stream_options: StreamOptions {
                include_usage: true,
            },
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
