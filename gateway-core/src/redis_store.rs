//! A Redis-backed [`SessionStore`], so several host replicas share conversation memory.
//!
//! Each session is a Redis list of JSON messages under `<prefix><session key>`. A turn is
//! appended by one Lua script (`RPUSH`, `LTRIM`, `EXPIRE`), so the cap and the idle expiry are
//! enforced by the server and two turns of one session never interleave, whichever replica
//! serves them.
//!
//! **When Redis goes away.** A read that meets a dropped connection is tried once more on the
//! re-made connection (so the first turn after Redis returns does not fail). A write is retried
//! for [`RedisStoreConfig::write_timeout`]; each try carries a write id (a retried write that
//! already landed is not applied twice) and a deadline on the server's clock (a try that reaches
//! a paused Redis after the deadline changes nothing). So an `Err` from [`RedisStore::append`]
//! means the turn is not stored and never will be, and `Ok` means it is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{ErrorKind, FromRedisValue, RedisError};

use crate::error::StoreError;
use crate::message::ChatMessage;
use crate::session::{starts_history, SessionStore};

/// How long one Redis command (and one connection attempt) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// The default of [`RedisStoreConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a read keeps trying after a dropped connection or while Redis loads its data.
pub const READ_RETRY: Duration = Duration::from_secs(1);

/// Keys of this store's own bookkeeping start with `<prefix>#` (`#` is not allowed in a
/// session key), so they are never taken for sessions.
pub const INTERNAL_MARK: char = '#';

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// `redis://host:port/db` or `rediss://` (TLS); a password in the URL is never printed.
    pub url: String,
    /// Prefix of every key this store writes.
    pub key_prefix: String,
    /// A session untouched for this long expires (server-side TTL).
    pub idle_ttl: Duration,
    /// PEM file of the CA that signed the server's certificate (`rediss://`); the system's
    /// roots when absent.
    pub ca_file: Option<PathBuf>,
    /// How long a turn's write is retried before it is reported as not stored.
    pub write_timeout: Duration,
}

impl RedisStoreConfig {
    /// Settings for `url` and `key_prefix` with the defaults: a day of idle TTL, the system's
    /// TLS roots, [`DEFAULT_WRITE_TIMEOUT`].
    pub fn new(url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: key_prefix.into(),
            idle_ttl: Duration::from_secs(24 * 3600),
            ca_file: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// A client for `url`. A `rediss://` URL trusts `ca_file` (PEM) when given, else the system's
/// roots. Errors name the problem, never the URL's password.
pub fn client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, StoreError> {
    let invalid = |e: RedisError| StoreError::Unavailable(format!("invalid redis URL: {e}"));
    let Some(ca_file) = ca_file.filter(|_| url.starts_with("rediss://")) else {
        return redis::Client::open(url).map_err(invalid);
    };
    let pem = std::fs::read(ca_file).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot read the CA file {}: {e}",
            ca_file.display()
        ))
    })?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(url, certificates).map_err(invalid)
}

/// `host:port` of a client, the only part of its URL that messages show.
pub fn host_of(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// What went wrong with Redis at `host`, in words (never the URL or a password).
pub fn describe(host: &str, error: &RedisError) -> String {
    let what = if error.is_timeout() {
        format!(
            "no answer within {} ms (is it paused or overloaded?)",
            COMMAND_TIMEOUT.as_millis()
        )
    } else if error.is_connection_refusal() {
        "connection refused (is redis-server running?)".to_string()
    } else if error.is_connection_dropped() {
        format!("connection lost ({error}); reconnecting")
    } else {
        match error.kind() {
            ErrorKind::AuthenticationFailed => "authentication failed".to_string(),
            ErrorKind::Io => format!("I/O error: {error}"),
            _ => error.to_string(),
        }
    };
    format!("redis at {host}: {what}")
}

/// True for failures that may pass: the connection, a timeout, a server still loading.
pub fn is_transient(error: &RedisError) -> bool {
    use redis::ServerErrorKind as S;
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || matches!(
            error.kind(),
            ErrorKind::Server(S::BusyLoading | S::TryAgain | S::MasterDown | S::ReadOnly)
        )
}

/// Run `attempt` (a read or an idempotent write) again while it fails with a dropped
/// connection or a server still loading its data, for up to [`READ_RETRY`]: the first try
/// after Redis came back meets the dead connection, the next one the connection the manager
/// re-made. A timeout is not tried again.
pub async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, RedisError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RedisError>>,
{
    let until = Instant::now() + READ_RETRY;
    let mut pause = Duration::from_millis(10);
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let left = until.saturating_duration_since(Instant::now());
        if error.is_timeout() || !is_transient(&error) || left.is_zero() {
            return Err(error);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The connection-manager settings every connection of the host uses.
pub fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The Redis server's clock as seen from here: its offset from the local clock, measured with
/// `TIME`, and the measurement's uncertainty (half the round trip).
#[derive(Debug, Clone, Copy)]
pub struct ServerClock {
    offset_ms: i64,
    uncertainty_ms: i64,
}

impl ServerClock {
    /// Measure with one `TIME` command.
    pub async fn measure(conn: &mut ConnectionManager) -> Result<Self, RedisError> {
        let before = local_ms();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
        let after = local_ms();
        let server = secs * 1000 + micros / 1000;
        Ok(Self {
            offset_ms: server - (before + after) / 2,
            uncertainty_ms: (after - before) / 2 + 1,
        })
    }

    /// The server's time now, in milliseconds since the Unix epoch (estimated).
    pub fn now_ms(&self) -> i64 {
        local_ms() + self.offset_ms
    }

    /// How far [`ServerClock::now_ms`] may be off.
    pub fn uncertainty_ms(&self) -> i64 {
        self.uncertainty_ms
    }
}

/// Appends a turn unless it was already appended (its write id is known) or the server's
/// clock is past the deadline. KEYS: the session list, the write id's marker. ARGV: deadline
/// (ms), cap, TTL (s), marker TTL (ms), the messages. Returns 1 stored, 2 already stored,
/// 0 too late (nothing changed).
const APPEND: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 5))
local cap = tonumber(ARGV[2])
if cap == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('LTRIM', KEYS[1], -cap, -1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return 1
";

/// Session memory in Redis, shared by every replica that points at the same server.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    ttl_secs: i64,
    host: String,
    write_timeout: Duration,
    clock: ServerClock,
    append: redis::Script,
}

/// A write that did not land, with the reason.
enum Attempt {
    Stored,
    TooLate,
    Failed(RedisError),
}

impl RedisStore {
    /// Connects to Redis. Fails with a message naming the host (never a password).
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, StoreError> {
        let client = client(&config.url, config.ca_file.as_deref())?;
        let host = host_of(&client);
        let unavailable = |e: RedisError| StoreError::Unavailable(describe(&host, &e));
        let mut conn = client
            .get_connection_manager_with_config(manager_config())
            .await
            .map_err(unavailable)?;
        let clock = ServerClock::measure(&mut conn).await.map_err(unavailable)?;
        Ok(Self {
            conn,
            prefix: config.key_prefix,
            ttl_secs: config.idle_ttl.as_secs().max(1) as i64,
            host,
            write_timeout: config.write_timeout,
            clock,
            append: redis::Script::new(APPEND),
        })
    }

    fn key(&self, session: &str) -> String {
        format!("{}{}", self.prefix, session)
    }

    fn unavailable(&self, error: &RedisError) -> StoreError {
        StoreError::Unavailable(describe(&self.host, error))
    }

    /// Run a read (or an idempotent write), see [`retrying`].
    async fn run<T: FromRedisValue>(&self, query: Query<'_>) -> Result<T, StoreError> {
        retrying(|| {
            let mut conn = self.conn.clone();
            async move { query.run(&mut conn).await }
        })
        .await
        .map_err(|e| self.unavailable(&e))
    }

    /// One try of a fenced, idempotent append, cut off at `until`.
    async fn try_append(&self, keys: [&str; 2], args: &[String], until: Instant) -> Attempt {
        let mut invocation = self.append.key(keys[0]);
        invocation.key(keys[1]);
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.conn.clone();
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(0)) => Attempt::TooLate,
            Ok(Ok(_)) => Attempt::Stored,
            Ok(Err(e)) => Attempt::Failed(e),
            Err(_) => Attempt::Failed(RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }
}

/// A command or a pipeline, run the same way.
#[derive(Clone, Copy)]
enum Query<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
}

impl Query<'_> {
    async fn run<T: FromRedisValue>(self, conn: &mut ConnectionManager) -> Result<T, RedisError> {
        match self {
            Query::Cmd(cmd) => cmd.query_async(conn).await,
            Query::Pipe(pipe) => pipe.query_async(conn).await,
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
        let mut pipe = redis::pipe();
        pipe.lrange(&key, -(limit as isize), -1)
            .expire(&key, self.ttl_secs);
        let (raw, _): (Vec<String>, i64) = self.run(Query::Pipe(&pipe)).await?;
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
        let started = Instant::now();
        let until = started + self.write_timeout;
        // The server must refuse the write before we give up on it.
        let margin = 50 + self.clock.uncertainty_ms();
        let deadline = self.clock.now_ms() + self.write_timeout.as_millis() as i64 - margin;
        let marker = format!(
            "{}{INTERNAL_MARK}w:{:016x}{:016x}",
            self.prefix,
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let marker_ttl_ms = self.write_timeout.as_millis() as u64 + 60_000;
        let mut args = vec![
            deadline.to_string(),
            cap.to_string(),
            self.ttl_secs.to_string(),
            marker_ttl_ms.to_string(),
        ];
        for message in &messages {
            args.push(
                serde_json::to_string(message).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        let list = self.key(key);
        let mut pause = Duration::from_millis(50);
        loop {
            let error = match self.try_append([&list, &marker], &args, until).await {
                Attempt::Stored => return Ok(()),
                Attempt::TooLate => None,
                Attempt::Failed(e) if is_transient(&e) => Some(e),
                Attempt::Failed(e) => return Err(self.unavailable(&e)),
            };
            let left = until.saturating_duration_since(Instant::now());
            if error.is_none() || left.is_zero() {
                let why = match error {
                    Some(e) => describe(&self.host, &e),
                    None => format!("redis at {}: answered too late", self.host),
                };
                return Err(StoreError::Unavailable(format!(
                    "{why}; the turn was not stored (gave up after {} ms)",
                    started.elapsed().as_millis()
                )));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(400));
        }
    }

    async fn clear(&self, key: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        let removed: i64 = self.run(Query::Cmd(&cmd)).await?;
        Ok(removed > 0)
    }

    async fn session_count(&self) -> Result<u64, StoreError> {
        let pattern = format!("{}[^{INTERNAL_MARK}]*", self.prefix);
        let mut cursor: u64 = 0;
        let mut count = 0u64;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<String>) = self.run(Query::Cmd(&cmd)).await?;
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
