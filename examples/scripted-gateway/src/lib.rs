//! An example third-party gateway kind, `scripted`: answers every turn with a deterministic
//! script, word by word, with no network. Useful for demos, load tests and as a template.
//!
//! Run with: cargo run -p scripted-gateway -- serve
//!
//! Declare an instance in `gateway.toml` and point a profile at it:
//!
//! ```toml
//! [gateways.robot]
//! kind = "scripted"
//! reply = "You said: {message}. That was message {turn}."
//! token_delay_ms = 20
//! ```
//!
//! The kind registers itself with `inventory::submit!`; a binary gets it by linking this crate
//! (see `src/main.rs`: `use scripted_gateway as _;`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream;
use gateway_core::{
    async_trait, Event, EventStream, Gateway, GatewayError, GatewayKind, InstanceConfig, Role, Turn,
};
use serde::Deserialize;

/// Kind id profiles' instances name in `kind = "scripted"`.
pub const KIND_ID: &str = "scripted";

/// Settings of a `scripted` instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedConfig {
    /// Answer template; `{message}` is the user's last message, `{turn}` the number of user
    /// messages in the conversation, `{model}` the requested model.
    #[serde(default = "default_reply")]
    pub reply: String,
    /// Pause before each word, in milliseconds.
    #[serde(default)]
    pub token_delay_ms: u64,
    /// Model name reported when a turn does not ask for one.
    #[serde(default = "default_model")]
    pub model: String,
}

fn default_reply() -> String {
    "You said: {message}".to_string()
}

fn default_model() -> String {
    "script-1".to_string()
}

/// A gateway that speaks its script.
#[derive(Debug)]
pub struct Scripted {
    id: String,
    config: ScriptedConfig,
}

impl Scripted {
    /// An instance with the given id and settings.
    pub fn new(id: impl Into<String>, config: ScriptedConfig) -> Self {
        Self {
            id: id.into(),
            config,
        }
    }

    /// The answer this instance gives to a turn.
    pub fn answer(&self, turn: &Turn) -> String {
        let last_user = turn
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.to_string())
            .unwrap_or_default();
        let user_turns = turn
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .count();
        let model = turn.model.as_deref().unwrap_or(&self.config.model);
        self.config
            .reply
            .replace("{message}", last_user.trim())
            .replace("{turn}", &user_turns.to_string())
            .replace("{model}", model)
    }
}

fn build(config: &InstanceConfig) -> Result<Arc<dyn Gateway>, GatewayError> {
    Ok(Arc::new(Scripted::new(
        config.id.clone(),
        config.settings_as::<ScriptedConfig>()?,
    )))
}

/// The `scripted` kind. Linking this crate registers it; tests can also hand it to
/// `Registry::from_kinds([&KIND])` to get a registry of exactly this kind.
pub const KIND: GatewayKind = GatewayKind {
    id: KIND_ID,
    description: "deterministic scripted answers (example third-party kind)",
    build,
};

inventory::submit! { KIND }

#[async_trait]
impl Gateway for Scripted {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        KIND_ID
    }

    fn capabilities(&self) -> Vec<&'static str> {
        vec!["streaming"]
    }

    fn is_configured(&self) -> Result<(), GatewayError> {
        Ok(())
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.config.model)
    }

    async fn stream(&self, turn: Turn) -> Result<EventStream, GatewayError> {
        let started = Instant::now();
        let answer = self.answer(&turn);
        let words: Vec<String> = answer.split_inclusive(' ').map(str::to_string).collect();
        let delay = Duration::from_millis(self.config.token_delay_ms);
        let cancel = turn.cancel.clone();
        let events = stream::unfold((words.into_iter(), false), move |(mut words, done)| {
            let cancel = cancel.clone();
            let answer = answer.clone();
            async move {
                if done {
                    return None;
                }
                if cancel.is_cancelled() {
                    return Some((Err(GatewayError::Cancelled), (words, true)));
                }
                let Some(word) = words.next() else {
                    return Some((Ok(Event::text_done(answer)), (words, true)));
                };
                if !delay.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => {
                            return Some((Err(GatewayError::Cancelled), (words, true)));
                        }
                    }
                }
                Some((Ok(Event::delta(word)), (words, false)))
            }
        });
        let handshake = Event::Handshake {
            ms: started.elapsed().as_millis() as u64,
            gateway: None,
        };
        Ok(Box::pin(futures::StreamExt::chain(
            stream::iter([Ok(handshake)]),
            events,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use gateway_core::{ChatMessage, Registry};

    /// Build instance `robot` of the kind as registered, from `settings`.
    fn build_robot(settings: serde_json::Value) -> Result<Arc<dyn Gateway>, GatewayError> {
        let registry = Registry::from_inventory().unwrap();
        (registry.get(KIND_ID).unwrap().build)(&InstanceConfig {
            id: "robot".into(),
            settings,
            ..InstanceConfig::default()
        })
    }

    fn instance(settings: serde_json::Value) -> Arc<dyn Gateway> {
        build_robot(settings).unwrap()
    }

    #[tokio::test]
    async fn speaks_the_script_word_by_word() {
        let gateway = instance(serde_json::json!({"reply": "Heard {message} on turn {turn}"}));
        let turn = Turn::new(vec![
            ChatMessage::user("one"),
            ChatMessage::assistant("x"),
            ChatMessage::user("two"),
        ]);
        let events: Vec<_> = gateway.stream(turn).await.unwrap().collect().await;
        let deltas: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(Event::Delta { text }) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, "Heard two on turn 2");
        assert!(matches!(events.first(), Some(Ok(Event::Handshake { .. }))));
        assert_eq!(
            events.last().unwrap().as_ref().unwrap(),
            &Event::text_done("Heard two on turn 2")
        );
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let gateway = instance(serde_json::json!({"token_delay_ms": 60000}));
        let turn = Turn::new(vec![ChatMessage::user("hello there")]);
        let cancel = turn.cancel.clone();
        let mut events = gateway.stream(turn).await.unwrap();
        assert!(matches!(
            events.next().await,
            Some(Ok(Event::Handshake { .. }))
        ));
        cancel.cancel();
        assert_eq!(events.next().await, Some(Err(GatewayError::Cancelled)));
        assert_eq!(events.next().await, None);
    }

    #[test]
    fn rejects_unknown_settings() {
        let result = build_robot(serde_json::json!({"rpely": "typo"}));
        let error = result.err().unwrap().to_string();
        assert!(
            error.contains("robot") && error.contains("rpely"),
            "{error}"
        );
    }
}
