//! Chat messages: what a turn sends upstream and what session memory stores.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person speaking.
    User,
    /// The model's answer.
    Assistant,
}

/// One chat message. The content is shared (`Arc<str>`) so the same prompt or history entry
/// can go into many turns without copying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: Arc<str>,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: Role, content: impl Into<Arc<str>>) -> Self {
        Self {
            role,
            content: content.into(),
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
}
