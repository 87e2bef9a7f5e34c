//! Per-session chat memory: the `SessionStore` contract and its in-memory default.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::error::StoreError;
use crate::message::ChatMessage;

/// Default number of messages kept per session.
pub const DEFAULT_HISTORY: usize = 20;

/// Stores the history of each session. Implementations must make `append` atomic per key,
/// so the messages of two turns of one session never interleave.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The last `limit` messages of a session, oldest first (empty for an unknown key).
    async fn history(&self, key: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError>;

    /// Append a completed turn's messages, then keep only the last `cap` messages.
    async fn append(
        &self,
        key: &str,
        messages: Vec<ChatMessage>,
        cap: usize,
    ) -> Result<(), StoreError>;

    /// Forget a session. Returns whether it existed.
    async fn clear(&self, key: &str) -> Result<bool, StoreError>;

    /// Number of sessions held (approximate for caches).
    async fn session_count(&self) -> Result<u64, StoreError>;

    /// Backend name for diagnostics (`memory`, `redis`, ...).
    fn backend(&self) -> &'static str;
}

/// Limits of the in-memory store.
#[derive(Debug, Clone, Copy)]
pub struct MemoryStoreConfig {
    /// Most sessions held; the least recently used are evicted beyond it.
    pub max_sessions: u64,
    /// A session untouched for this long is dropped.
    pub idle_ttl: Duration,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            max_sessions: 100_000,
            idle_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

type History = Arc<Mutex<VecDeque<ChatMessage>>>;

/// In-process store bounded in sessions (LRU-ish eviction) and idle age.
pub struct MemoryStore {
    sessions: moka::sync::Cache<String, History>,
}

impl MemoryStore {
    /// A store with the given limits.
    pub fn new(config: MemoryStoreConfig) -> Self {
        Self {
            sessions: moka::sync::Cache::builder()
                .max_capacity(config.max_sessions)
                .time_to_idle(config.idle_ttl)
                .build(),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(MemoryStoreConfig::default())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn history(&self, key: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError> {
        let Some(history) = self.sessions.get(key) else {
            return Ok(Vec::new());
        };
        let history = history.lock();
        let skip = history.len().saturating_sub(limit);
        Ok(history.iter().skip(skip).cloned().collect())
    }

    async fn append(
        &self,
        key: &str,
        messages: Vec<ChatMessage>,
        cap: usize,
    ) -> Result<(), StoreError> {
        let history = self
            .sessions
            .get_with_by_ref(key, || Arc::new(Mutex::new(VecDeque::new())));
        let mut history = history.lock();
        history.extend(messages);
        while history.len() > cap {
            history.pop_front();
        }
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.sessions.remove(key).is_some())
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        self.sessions.run_pending_tasks();
        Ok(self.sessions.entry_count())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(i: usize) -> Vec<ChatMessage> {
        vec![
            ChatMessage::user(format!("q{i}")),
            ChatMessage::assistant(format!("a{i}")),
        ]
    }

    #[tokio::test]
    async fn keeps_the_last_n_messages_in_order() {
        let store = MemoryStore::default();
        for i in 0..15 {
            store.append("s", turn(i), 20).await.unwrap();
        }
        let history = store.history("s", 20).await.unwrap();
        assert_eq!(history.len(), 20);
        assert_eq!(&*history[0].content, "q5");
        assert_eq!(&*history[19].content, "a14");
        let last4 = store.history("s", 4).await.unwrap();
        assert_eq!(&*last4[0].content, "q13");
        assert!(store.history("other", 20).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn clear_forgets_one_session() {
        let store = MemoryStore::default();
        store.append("a", turn(1), 20).await.unwrap();
        store.append("b", turn(1), 20).await.unwrap();
        assert!(store.clear("a").await.unwrap());
        assert!(!store.clear("a").await.unwrap());
        assert!(store.history("a", 20).await.unwrap().is_empty());
        assert_eq!(store.history("b", 20).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bounded_in_sessions() {
        let store = MemoryStore::new(MemoryStoreConfig {
            max_sessions: 10,
            idle_ttl: Duration::from_secs(60),
        });
        for i in 0..200 {
            store.append(&format!("s{i}"), turn(i), 20).await.unwrap();
        }
        assert!(store.session_count().await.unwrap() <= 10);
    }
}
