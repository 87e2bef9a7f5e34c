//! Per-session chat memory: the `SessionStore` contract and its in-memory default.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hashlink::LinkedHashMap;
use parking_lot::Mutex;

use crate::error::StoreError;
use crate::message::{ChatMessage, Role};

/// Default number of messages kept per session.
pub const DEFAULT_HISTORY: usize = 20;

/// True for a message a history may start with. A tool result whose call was trimmed away
/// is not one: upstreams reject a `tool` message without the assistant call before it.
pub(crate) fn starts_history(message: &ChatMessage) -> bool {
    message.role != Role::Tool
}

/// Stores the history of each session. Implementations must make `append` atomic per key,
/// so the messages of two turns of one session never interleave.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The last `limit` messages of a session, oldest first (empty for an unknown key), less
    /// any tool results at the front whose call fell outside them.
    async fn history(&self, key: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError>;

    /// Append a completed turn's messages, then keep only the last `cap` messages. An error
    /// means the messages are not stored and never will be (a write that may still land later
    /// must not be reported as failed).
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

/// Most history slots reserved up front for a new session: the usual cap (20) fits, and a
/// very large configured cap does not reserve memory no session uses yet.
const MAX_RESERVED: usize = 64;

/// One session's memory.
struct Entry {
    history: VecDeque<ChatMessage>,
    /// Last read or write.
    touched: Instant,
}

/// Sessions in least-recently-used order (front = oldest), which is also idle-age order.
struct Lru {
    map: LinkedHashMap<Box<str>, Entry, RandomState>,
    max_sessions: usize,
    idle_ttl: Duration,
}

impl Lru {
    /// Drop the sessions idle for `idle_ttl` or longer; they sit at the front.
    fn expire(&mut self, now: Instant) {
        while let Some((_, entry)) = self.map.front() {
            if now.saturating_duration_since(entry.touched) < self.idle_ttl {
                break;
            }
            self.map.pop_front();
        }
    }

    fn history(&mut self, key: &str, limit: usize, now: Instant) -> Vec<ChatMessage> {
        self.expire(now);
        let Some(entry) = self.map.to_back(key) else {
            return Vec::new();
        };
        entry.touched = now;
        let skip = entry.history.len().saturating_sub(limit);
        let kept = entry.history.iter().skip(skip);
        kept.skip_while(|m| !starts_history(m)).cloned().collect()
    }

    fn append(&mut self, key: &str, messages: Vec<ChatMessage>, cap: usize, now: Instant) {
        self.expire(now);
        let entry = match self.map.to_back(key) {
            Some(entry) => entry,
            None => {
                while self.map.len() >= self.max_sessions.max(1) {
                    self.map.pop_front();
                }
                let entry = Entry {
                    history: VecDeque::with_capacity(cap.min(MAX_RESERVED)),
                    touched: now,
                };
                self.map.entry(key.into()).or_insert(entry)
            }
        };
        entry.touched = now;
        // Make room first, so a full history never grows its buffer beyond `cap`.
        let history = &mut entry.history;
        let overflow = (history.len() + messages.len()).saturating_sub(cap);
        let from_history = overflow.min(history.len());
        history.drain(..from_history);
        history.extend(messages.into_iter().skip(overflow - from_history));
    }
}

/// In-process store bounded in sessions (the least recently used is evicted beyond the
/// limit) and in idle age. Its bookkeeping is a linked hash map: about 150 bytes per session
/// beyond the messages themselves.
pub struct MemoryStore {
    sessions: Mutex<Lru>,
}

impl MemoryStore {
    /// A store with the given limits.
    pub fn new(config: MemoryStoreConfig) -> Self {
        Self {
            sessions: Mutex::new(Lru {
                map: LinkedHashMap::with_hasher(RandomState::new()),
                max_sessions: usize::try_from(config.max_sessions).unwrap_or(usize::MAX),
                idle_ttl: config.idle_ttl,
            }),
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
        Ok(self.sessions.lock().history(key, limit, Instant::now()))
    }

    async fn append(
        &self,
        key: &str,
        messages: Vec<ChatMessage>,
        cap: usize,
    ) -> Result<(), StoreError> {
        self.sessions
            .lock()
            .append(key, messages, cap, Instant::now());
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.sessions.lock().map.remove(key).is_some())
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        let mut sessions = self.sessions.lock();
        sessions.expire(Instant::now());
        Ok(sessions.map.len() as u64)
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
    async fn evicts_the_least_recently_used_session() {
        let store = MemoryStore::new(MemoryStoreConfig {
            max_sessions: 2,
            idle_ttl: Duration::from_secs(60),
        });
        store.append("a", turn(1), 20).await.unwrap();
        store.append("b", turn(1), 20).await.unwrap();
        // Reading `a` makes `b` the least recently used.
        assert_eq!(store.history("a", 20).await.unwrap().len(), 2);
        store.append("c", turn(1), 20).await.unwrap();
        assert_eq!(store.session_count().await.unwrap(), 2);
        assert!(store.history("b", 20).await.unwrap().is_empty());
        assert_eq!(store.history("a", 20).await.unwrap().len(), 2);
        assert_eq!(store.history("c", 20).await.unwrap().len(), 2);
    }

    #[test]
    fn sessions_expire_after_the_idle_ttl_counted_from_the_last_use() {
        let ttl = Duration::from_secs(60);
        let mut lru = Lru {
            map: LinkedHashMap::with_hasher(RandomState::new()),
            max_sessions: 10,
            idle_ttl: ttl,
        };
        let t0 = Instant::now();
        lru.append("old", turn(1), 20, t0);
        lru.append("used", turn(1), 20, t0);
        // A read counts as use.
        assert_eq!(lru.history("used", 20, t0 + ttl / 2).len(), 2);
        let later = t0 + ttl;
        assert!(
            lru.history("old", 20, later).is_empty(),
            "idle for the whole ttl"
        );
        assert_eq!(lru.history("used", 20, later).len(), 2);
        assert_eq!(lru.map.len(), 1);
        assert!(lru.history("used", 20, later + ttl).is_empty());
        assert_eq!(lru.map.len(), 0);
    }

    #[test]
    fn a_full_history_keeps_its_buffer_and_a_long_turn_keeps_its_tail() {
        let mut lru = Lru {
            map: LinkedHashMap::with_hasher(RandomState::new()),
            max_sessions: 10,
            idle_ttl: Duration::from_secs(60),
        };
        let now = Instant::now();
        for i in 0..50 {
            lru.append("s", turn(i), 20, now);
        }
        let entry = lru.map.get("s").unwrap();
        assert_eq!(entry.history.len(), 20);
        assert!(
            entry.history.capacity() < 32,
            "{}",
            entry.history.capacity()
        );
        // More new messages than the cap: only the last `cap` of them stay.
        let many: Vec<ChatMessage> = (0..5).flat_map(turn).collect();
        lru.append("s", many, 3, now);
        let history = lru.history("s", 20, now);
        let texts: Vec<&str> = history.iter().map(|m| &*m.content).collect();
        assert_eq!(texts, ["a3", "q4", "a4"]);
    }

    #[tokio::test]
    async fn a_tool_exchange_is_kept_whole_and_in_order() {
        let store = MemoryStore::default();
        let call = crate::ToolCall::new("c1", "get_time", "{}");
        let exchange = vec![
            ChatMessage::user("Time?"),
            ChatMessage::assistant_with_tool_calls("One moment.", vec![call]),
            ChatMessage::tool_result("c1", "09:30"),
            ChatMessage::assistant("It is half past nine."),
        ];
        store.append("s", exchange.clone(), 20).await.unwrap();
        assert_eq!(store.history("s", 20).await.unwrap(), exchange);
        // A window that cuts the call off does not start with its orphaned result.
        assert_eq!(store.history("s", 2).await.unwrap(), exchange[3..]);
        assert_eq!(store.history("s", 3).await.unwrap(), exchange[1..]);
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
