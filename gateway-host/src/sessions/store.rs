//! The session store selected by `memory.backend`: in-process `memory`, or `redis` shared by
//! every replica pointing at the same server.

use std::sync::Arc;
use std::time::Duration;

use gateway_core::{
    async_trait, ChatMessage, MemoryStore, MemoryStoreConfig, RedisStore, RedisStoreConfig,
    SessionStore, StoreError,
};

use crate::config::{MemoryBackend, MemoryConfig};

/// The in-memory store with the configured bounds.
pub fn memory(config: &MemoryConfig) -> Arc<dyn SessionStore> {
    Arc::new(MemoryStore::new(MemoryStoreConfig {
        max_sessions: config.max_sessions,
        idle_ttl: Duration::from_secs(config.idle_ttl_secs),
    }))
}

/// Open the configured store. For `redis` this connects (a few seconds at most) and fails
/// with a message naming the host, never the password.
pub async fn open(config: &MemoryConfig) -> Result<Arc<dyn SessionStore>, StoreError> {
    match config.backend {
        MemoryBackend::Redis => {
            let store = RedisStore::connect(redis_config(config)).await?;
            Ok(Arc::new(store))
        }
        MemoryBackend::Memory => Ok(memory(config)),
    }
}

/// The Redis store's settings from `memory.*`.
pub fn redis_config(config: &MemoryConfig) -> RedisStoreConfig {
    RedisStoreConfig {
        url: config.redis_url.clone(),
        key_prefix: config.redis_key_prefix.clone(),
        idle_ttl: Duration::from_secs(config.idle_ttl_secs),
        ca_file: config.redis_ca_file.clone(),
        write_timeout: Duration::from_millis(config.write_timeout_ms),
    }
}

/// Stands in for a store that could not be opened synchronously (a `redis` backend given to
/// [`crate::AppState::load`]): every call fails with the reason, so turns answer 503.
pub struct Unavailable(pub String);

#[async_trait]
impl SessionStore for Unavailable {
    async fn history(&self, _key: &str, _limit: usize) -> Result<Vec<ChatMessage>, StoreError> {
        Err(StoreError::Unavailable(self.0.clone()))
    }

    async fn append(
        &self,
        _key: &str,
        _messages: Vec<ChatMessage>,
        _cap: usize,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(self.0.clone()))
    }

    async fn clear(&self, _key: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(self.0.clone()))
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(self.0.clone()))
    }

    fn backend(&self) -> &'static str {
        "unavailable"
    }
}
