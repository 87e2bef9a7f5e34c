//! A turn: everything a gateway needs to answer one user message.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::message::ChatMessage;

/// One request to a gateway: the ordered conversation plus per-profile overrides.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    /// System prompt, history and the new user message, in order.
    pub messages: Vec<ChatMessage>,
    /// Model override (`llm.model` of the profile); `None` uses the gateway's default.
    pub model: Option<String>,
    /// Maximum answer length in tokens; `None` uses the gateway's default.
    pub max_tokens: Option<u32>,
    /// Sampling temperature; `None` leaves it to the upstream.
    pub temperature: Option<f32>,
    /// Request fields the host does not use itself (`tools`, `tool_choice`, `response_format`,
    /// `stop`, `top_p`, `seed`, vendor keys, ...), for gateways that forward them unchanged.
    /// Where the host sets a field of its own (model, messages, max_tokens, ...) it wins.
    /// Shared, so the rounds and retries of one turn reuse a long tool list without copying.
    pub extra: Arc<Map<String, Value>>,
    /// Session key the turn belongs to, if any.
    pub session_key: Option<String>,
    /// Agent id passed by the client, if any.
    pub agent_id: Option<String>,
    /// Cancelled when the client goes away or the turn is interrupted; gateways stop at once.
    pub cancel: CancellationToken,
}

impl Turn {
    /// A turn with the given messages and a fresh cancellation token.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }
}
