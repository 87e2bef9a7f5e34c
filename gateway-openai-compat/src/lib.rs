//! The `openai-compat` gateway kind: streams voice turns from any OpenAI Chat Completions
//! compatible API (OpenAI, Groq, Together, Fireworks, OpenRouter, vLLM, LiteLLM, Ollama).
//!
//! Linking this crate registers the kind [`KIND_ID`] with the host's registry. Instances can
//! also be built directly:
//!
//! ```no_run
//! use futures::StreamExt;
//! use gateway_core::{ChatMessage, Event, Gateway, Turn};
//! use gateway_openai_compat::{ApiKey, OpenAiCompat, OpenAiCompatConfig};
//!
//! # async fn run() -> Result<(), gateway_core::GatewayError> {
//! let gateway = OpenAiCompat::new(
//!     "groq",
//!     OpenAiCompatConfig {
//!         base_url: "https://api.groq.com/openai/v1".into(),
//!         api_key: Some(ApiKey::new("gsk_...")),
//!         model: "llama-3.3-70b-versatile".into(),
//!         ..Default::default()
//!     },
//! )?;
//! let mut events = gateway.stream(Turn::new(vec![ChatMessage::user("Hello!")])).await?;
//! while let Some(event) = events.next().await {
//!     match event? {
//!         Event::Delta { text } => print!("{text}"),
//!         Event::TextDone { .. } => println!(),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Configuration keys (settings table, all optional; unknown keys are rejected): `base_url`,
//! `auth` (`bearer`, the default, or `none`), `api_key_env`, `api_key` (discouraged), `model`,
//! `max_tokens`, `temperature`, `headers`. The timeouts come typed in
//! [`gateway_core::InstanceConfig::timeouts`] (the host resolves `*_timeout_ms` and
//! `<prefix>*_TIMEOUT_MS`). For an instance with an environment prefix (`OPENAI_COMPAT_` for the
//! built-in one), `<prefix>API_KEY`, `<prefix>AUTH`, `<prefix>BASE_URL`, `<prefix>MODEL`,
//! `<prefix>MAX_TOKENS` and `<prefix>TEMPERATURE` beat the table. A server that needs no key (a local Ollama or vLLM) is declared
//! with `auth = "none"`: it is configured without a key and sends no `Authorization` header.
//!
//! Tool calls: the turn's `extra` request fields (`tools`, `tool_choice`, ...) and its messages
//! (tool calls, tool results, content parts) are forwarded as sent; the calls of an answer come
//! back as one [`Event::ToolCall`](gateway_core::Event::ToolCall) each, before `text_done`,
//! every provider's quirks normalised (missing `index`, object `arguments`, Gemini's `stop`).
//!
//! The parsers are pure and public for fuzzing: [`sse::SseDecoder`] and
//! [`completion::CompletionDecoder`].

mod body;
mod clients;
pub mod completion;
pub mod config;
mod gateway;
pub mod sse;
mod tool_calls;

/// A small deterministic pseudo-random sequence (xorshift64) for the decoders' tests that feed
/// them arbitrary bytes.
#[cfg(test)]
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

pub use config::{ApiKey, Auth, OpenAiCompatConfig};
pub use gateway::{build, OpenAiCompat};

/// Id of the gateway kind this crate registers.
pub const KIND_ID: &str = "openai-compat";

gateway_core::inventory::submit! {
    gateway_core::GatewayKind {
        id: KIND_ID,
        description: "Any OpenAI Chat Completions compatible API (OpenAI, Groq, Together, OpenRouter, vLLM, Ollama, ...)",
        build,
    }
}
