//! A Redis-backed [`SessionStore`], so several host replicas share conversation memory.
//!
//! Each session is a Redis list of JSON messages under `<prefix><session key>`. A turn is
//! appended with one `MULTI`/`EXEC` (`RPUSH`, `LTRIM`, `EXPIRE`), so the cap and the idle
//! expiry are enforced by the server and two turns of one session never interleave, whichever
//! replica serves them.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::error::StoreError;
use crate::message::ChatMessage;
use crate::session::{starts_history, SessionStore};

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// `redis://host:port/db` (a password in the URL is never printed).
    pub url: String,
    /// Prefix of every key this store writes.
    pub key_prefix: String,
    /// A session untouched for this long expires (server-side TTL).
    pub idle_ttl: Duration,
}

/// Session memory in Redis, shared by every replica that points at the same server.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    ttl_secs: i64,
    host: String,
}

impl RedisStore {
    /// Connects to Redis. Fails with a message naming the host (never a password).
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("invalid redis URL: {}", e.kind_str())))?;
        let host = client.get_connection_info().addr().to_string();
        let retries = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(3)));
        let conn = client
            .get_connection_manager_with_config(retries)
            .await
            .map_err(|e| unavailable(&host, &e))?;
        Ok(Self {
            conn,
            prefix: config.key_prefix,
            ttl_secs: config.idle_ttl.as_secs().max(1) as i64,
            host,
        })
    }

    fn key(&self, session: &str) -> String {
        format!("{}{}", self.prefix, session)
    }
}

fn unavailable(host: &str, error: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis at {host}: {}", error.kind_str()))
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    /// The error's category and detail, without the URL it was built from.
    fn kind_str(&self) -> String {
        match self.detail() {
            Some(detail) => format!("{:?}: {detail}", self.kind()),
            None => format!("{:?}", self.kind()),
        }
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn history(&self, key: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.key(key);
        let mut conn = self.conn.clone();
        let (raw, _): (Vec<String>, i64) = redis::pipe()
            .lrange(&key, -(limit as isize), -1)
            .expire(&key, self.ttl_secs)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&self.host, &e))?;
        let mut messages = raw
            .iter()
            .map(|item| serde_json::from_str(item).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<Result<Vec<ChatMessage>, _>>()?;
        let start = messages
            .iter()
            .position(starts_history)
            .unwrap_or(messages.len());
        messages.drain(..start);
        Ok(messages)
    }

    async fn append(
        &self,
        key: &str,
        messages: Vec<ChatMessage>,
        cap: usize,
    ) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let key = self.key(key);
        let encoded = messages
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic().rpush(&key, encoded).ignore();
        if cap == 0 {
            pipe.del(&key).ignore();
        } else {
            pipe.ltrim(&key, -(cap as isize), -1)
                .ignore()
                .expire(&key, self.ttl_secs)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| unavailable(&self.host, &e))
    }

    async fn clear(&self, key: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = conn
            .del(self.key(key))
            .await
            .map_err(|e| unavailable(&self.host, &e))?;
        Ok(removed > 0)
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut count = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&self.host, &e))?;
            count += keys.len() as u64;
            if next == 0 {
                return Ok(count);
            }
            cursor = next;
        }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
