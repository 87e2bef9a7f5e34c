//! Replicas behind a load balancer acting as one host (`memory.backend = "redis"`): every
//! replica learns through Redis which one runs a session's turn, and asks it to act.
//!
//! - **Turn lease.** A turn takes `<prefix>#turn:<session>` (value: its token
//!   `<replica>:<n>`) before it runs, with an expiry of `memory.lease_ms`, renewed every third
//!   of it while the turn runs. A replica killed with SIGKILL stops renewing, so its sessions
//!   are free again after one lease. A turn that finds the lease taken adds its replica to
//!   `<prefix>#wait:<session>`; the holder wakes those replicas when it lets go (and waiters
//!   try again every third of a lease anyway, for a holder that died).
//! - **Requests.** Each replica subscribes (RESP3 push, resubscribed after a reconnect) to
//!   `<prefix>#replica:<id>`. An interrupt, a steering turn or a session view on one replica
//!   sends a JSON request to the replica that holds the lease (and, for steering, to the
//!   replicas with turns waiting) and waits at most [`REQUEST_TIMEOUT`] for its reply.
//! - **Stream limit.** `limits.max_streams_per_session` is also counted in the sorted set
//!   `<prefix>#streams:<session>` (member: a turn's token, score: its lease expiry on the
//!   server's clock), checked and extended by one Lua script, renewed like the turn lease.
//!
//! Nothing here is on the per-token path: one or two Redis round trips when a turn starts and
//! ends, one renewal call per third of a lease for all of a replica's turns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use gateway_core::redis_store::{
    client, describe, host_of, manager_config, retrying, INTERNAL_MARK,
};
use gateway_core::{CancellationToken, SessionStore, StoreError};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::{ProtocolVersion, PushInfo, PushKind, RedisError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{CutBy, CutReport, SessionView, Sessions};
use crate::config::MemoryConfig;

/// Longest wait for another replica's reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A message between replicas, JSON on the receiver's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Message {
    /// Cut the session's running turn (`api`, with `heard`) or all its turns (steering).
    Cut {
        id: u64,
        from: String,
        key: String,
        heard: Option<String>,
        by: CutBy,
    },
    /// Describe the session's turns.
    View { id: u64, from: String, key: String },
    /// The session's turn lease was let go: try to take it.
    Released { key: String },
    /// The answer to request `id`.
    Reply { id: u64, reply: Reply },
}

/// What a request is answered with.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Cut(Vec<CutReport>),
    View(SessionView),
}

/// Why another replica could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The replica did not answer in time.
    #[error("replica {0} did not answer within {ms} ms", ms = REQUEST_TIMEOUT.as_millis())]
    NoAnswer(String),
}

/// Takes the turn lease (or finds it already taken by this token), or queues this replica as
/// a waiter. KEYS: lease, waiters. ARGV: token, lease (ms), replica. 1 taken, 0 queued.
const LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1]
  or redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SREM', KEYS[2], ARGV[3])
  return 1
end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) * 4)
return 0
";

/// Lets go of the turn lease if it is still ours and hands back the waiting replicas.
/// KEYS: lease, waiters. ARGV: token.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
local waiting = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return waiting
";

/// Extends turn leases that are ours, re-takes those that expired (Redis restarted), and
/// counts those another turn took. KEYS: leases. ARGV: a token per lease, then the lease (ms).
const RENEW_LOCKS: &str = r"
local lease = ARGV[#ARGV]
local lost = 0
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[i] then
    redis.call('PEXPIRE', key, lease)
  elseif not holder then
    redis.call('SET', key, ARGV[i], 'PX', lease)
  else
    lost = lost + 1
  end
end
return lost
";

/// Admits a stream of a session unless `max` unexpired ones are counted (a token already
/// counted is admitted). KEYS: the sorted set. ARGV: token, max, lease (ms). 1 admitted,
/// 0 refused.
const ADMIT: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Extends counted streams. KEYS: sorted sets. ARGV: a token per set, then the lease (ms).
const RENEW_STREAMS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[#ARGV])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i])
  redis.call('PEXPIRE', key, lease)
end
return 0
";

struct Scripts {
    lock: redis::Script,
    unlock: redis::Script,
    renew_locks: redis::Script,
    admit: redis::Script,
    renew_streams: redis::Script,
}

/// What a lease holds in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A session's turn lease.
    Turn,
    /// A counted stream of a session.
    Stream,
}

struct Shared {
    replica: String,
    /// `<memory.redis_key_prefix>#`.
    prefix: String,
    host: String,
    conn: ConnectionManager,
    lease: Duration,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Leases to renew: token → (kind, Redis key). Several streams of a session share a key.
    held: Mutex<HashMap<String, (Kind, String)>>,
    /// Sessions a local turn waits to take the lease of.
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
    /// Leases being given back in the background, and a signal when none is left.
    letting_go: AtomicU64,
    let_go_done: Notify,
    scripts: Scripts,
}

/// This replica's link to the others. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("replica", &self.shared.replica)
            .finish()
    }
}

/// A lease this replica holds in Redis (a session's turn, or a counted stream), renewed until
/// dropped; dropping it lets go (and wakes the replicas waiting for the session).
pub struct Lease {
    shared: Weak<Shared>,
    kind: Kind,
    session: String,
    key: String,
    token: String,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("key", &self.key).finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.held.lock().remove(&self.token);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the lease expires by itself
        };
        let (kind, session, key, token) = (
            self.kind,
            std::mem::take(&mut self.session),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        shared.letting_go.fetch_add(1, Ordering::AcqRel);
        runtime.spawn(async move {
            shared.let_go(kind, &session, &key, &token).await;
            if shared.letting_go.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared.let_go_done.notify_waiters();
            }
        });
    }
}

impl Cluster {
    /// Connect to the Redis of `memory` (RESP3, so requests arrive on the same connection)
    /// and subscribe to this replica's channel. Call [`Cluster::start`] once the local
    /// registry exists.
    pub async fn connect(memory: &MemoryConfig) -> Result<(Self, Inbox), StoreError> {
        let redis = client(&memory.redis_url, memory.redis_ca_file.as_deref())?;
        let host = host_of(&redis);
        let info = redis.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let redis = redis::Client::open(info.set_redis_settings(resp3))
            .map_err(|e| StoreError::Unavailable(describe(&host, &e)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let config = manager_config()
            .set_push_sender(tx)
            .set_automatic_resubscription();
        let mut conn = redis
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| StoreError::Unavailable(describe(&host, &e)))?;
        let replica = format!("{:016x}", fastrand::u64(..));
        let prefix = format!("{}{INTERNAL_MARK}", memory.redis_key_prefix);
        conn.subscribe(format!("{prefix}replica:{replica}"))
            .await
            .map_err(|e| StoreError::Unavailable(describe(&host, &e)))?;
        let shared = Arc::new(Shared {
            replica,
            prefix,
            host,
            conn,
            lease: Duration::from_millis(memory.lease_ms),
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            letting_go: AtomicU64::new(0),
            let_go_done: Notify::new(),
            scripts: Scripts {
                lock: redis::Script::new(LOCK),
                unlock: redis::Script::new(UNLOCK),
                renew_locks: redis::Script::new(RENEW_LOCKS),
                admit: redis::Script::new(ADMIT),
                renew_streams: redis::Script::new(RENEW_STREAMS),
            },
        });
        Ok((Self { shared }, Inbox(rx)))
    }

    /// Start answering other replicas' requests for `sessions` (memory written to `store`)
    /// and renewing this replica's leases. Both tasks end when the registry is dropped.
    pub fn start(&self, inbox: Inbox, sessions: &Sessions, store: Arc<dyn SessionStore>) {
        tokio::spawn(listen(
            Arc::downgrade(&self.shared),
            inbox.0,
            sessions.downgrade(),
            store,
        ));
        tokio::spawn(renew(Arc::downgrade(&self.shared)));
        tracing::info!(replica = %self.shared.replica, redis = %self.shared.host,
            "sharing in-flight turns with other replicas through redis");
    }

    /// Wait (at most `within`) until the leases of ended turns are given back, so that a
    /// replica shutting down does not leave its last sessions waiting for a lease to expire.
    pub async fn settle(&self, within: Duration) {
        let shared = &self.shared;
        let settled = async {
            loop {
                let done = shared.let_go_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if shared.letting_go.load(Ordering::Acquire) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(within, settled).await;
    }

    /// Take session `key`'s turn lease, waiting while another turn holds it. `None` when
    /// `cut` fires first.
    pub async fn lock(
        &self,
        key: &str,
        cut: &CancellationToken,
    ) -> Result<Option<Lease>, StoreError> {
        let shared = &self.shared;
        let token = shared.token();
        let wake = shared.waiter(key);
        let retry = shared.lease / 3;
        loop {
            let woken = wake.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if shared.try_lock(key, &token).await? {
                return Ok(Some(shared.lease_of(Kind::Turn, key, token)));
            }
            tokio::select! {
                biased;
                () = cut.cancelled() => return Ok(None),
                () = &mut woken => {}
                () = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Count a stream of session `key` against `max` across replicas; `None` when `max`
    /// are already streaming.
    pub async fn admit_stream(&self, key: &str, max: usize) -> Result<Option<Lease>, StoreError> {
        let shared = &self.shared;
        let token = shared.token();
        let set = shared.key("streams", key);
        let mut invocation = shared.scripts.admit.key(&set);
        invocation
            .arg(&token)
            .arg(max)
            .arg(shared.lease.as_millis() as u64);
        let admitted: i64 = shared.run(invocation).await?;
        Ok((admitted == 1).then(|| shared.lease_of(Kind::Stream, key, token)))
    }

    /// Cut the turns of session `key` on other replicas (the holder of its lease and those
    /// with turns waiting), for a steering turn; their memory is stored when this returns.
    pub async fn cut_elsewhere(&self, key: &str, by: CutBy) -> Result<Vec<CutReport>, StoreError> {
        let shared = &self.shared;
        let mut pipe = redis::pipe();
        pipe.get(shared.key("turn", key))
            .smembers(shared.key("wait", key));
        let (holder, mut replicas): (Option<String>, Vec<String>) = shared.run_pipe(&pipe).await?;
        replicas.extend(holder.as_deref().map(replica_of));
        replicas.sort();
        replicas.dedup();
        replicas.retain(|r| *r != shared.replica);
        let asks = replicas.iter().map(|to| {
            let request = |id, from| Message::Cut {
                id,
                from,
                key: key.to_string(),
                heard: None,
                by,
            };
            shared.request(to, request)
        });
        let mut reports = Vec::new();
        for (to, answer) in replicas.iter().zip(futures::future::join_all(asks).await) {
            match answer {
                Ok(Some(Reply::Cut(cuts))) => reports.extend(cuts),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(replica = %to, error = %e, "could not steer over a turn there")
                }
            }
        }
        Ok(reports)
    }

    /// Interrupt session `key`'s running turn where another replica runs it. `None` when no
    /// other replica runs a turn of it.
    pub async fn interrupt_elsewhere(
        &self,
        key: &str,
        heard: Option<&str>,
    ) -> Result<Option<CutReport>, RequestError> {
        let Some(holder) = self.holder(key).await? else {
            return Ok(None);
        };
        let request = |id, from| Message::Cut {
            id,
            from,
            key: key.to_string(),
            heard: heard.map(str::to_string),
            by: CutBy::Api,
        };
        match self.shared.request(&holder, request).await? {
            Some(Reply::Cut(cuts)) => Ok(cuts.into_iter().next()),
            _ => Ok(None),
        }
    }

    /// The view of session `key` from the replica running its turn, when another one does.
    pub async fn view_elsewhere(&self, key: &str) -> Result<Option<SessionView>, RequestError> {
        let Some(holder) = self.holder(key).await? else {
            return Ok(None);
        };
        let request = |id, from| Message::View {
            id,
            from,
            key: key.to_string(),
        };
        match self.shared.request(&holder, request).await {
            Ok(Some(Reply::View(view))) => Ok(Some(view)),
            Ok(_) => Ok(None),
            // It holds the lease but does not answer: the turn is in flight as far as we know.
            Err(RequestError::NoAnswer(_)) => Ok(Some(SessionView {
                in_flight: true,
                ..SessionView::default()
            })),
            Err(e) => Err(e),
        }
    }

    /// The other replica holding session `key`'s turn lease, if any.
    async fn holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        let shared = &self.shared;
        let mut cmd = redis::cmd("GET");
        cmd.arg(shared.key("turn", key));
        let holder: Option<String> = shared.run_cmd(&cmd).await?;
        Ok(holder
            .map(|token| replica_of(&token))
            .filter(|r| *r != shared.replica))
    }
}

/// The replica part of a token `<replica>:<n>`.
fn replica_of(token: &str) -> String {
    token.split(':').next().unwrap_or_default().to_string()
}

/// Wakes a session's local waiter; removed from the map when the last waiter goes.
struct Waiter {
    shared: Arc<Shared>,
    key: String,
    notify: Arc<Notify>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiting = self.shared.waiting.lock();
        // The map's own reference and ours: nobody else waits.
        if Arc::strong_count(&self.notify) <= 2 {
            waiting.remove(&self.key);
        }
    }
}

impl Shared {
    fn key(&self, kind: &str, session: &str) -> String {
        format!("{}{kind}:{session}", self.prefix)
    }

    fn channel(&self, replica: &str) -> String {
        format!("{}replica:{replica}", self.prefix)
    }

    fn token(&self) -> String {
        format!(
            "{}:{}",
            self.replica,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn unavailable(&self, error: &RedisError) -> StoreError {
        StoreError::Unavailable(describe(&self.host, error))
    }

    /// Run a script; every script here may run twice (a retry after a dropped connection).
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let invocation = &invocation;
        retrying(|| {
            let mut conn = self.conn.clone();
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
        .map_err(|e| self.unavailable(&e))
    }

    async fn run_cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        retrying(|| {
            let mut conn = self.conn.clone();
            async move { cmd.query_async(&mut conn).await }
        })
        .await
        .map_err(|e| self.unavailable(&e))
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        retrying(|| {
            let mut conn = self.conn.clone();
            async move { pipe.query_async(&mut conn).await }
        })
        .await
        .map_err(|e| self.unavailable(&e))
    }

    fn waiter(self: &Arc<Self>, key: &str) -> Waiter {
        let notify = self
            .waiting
            .lock()
            .entry(key.to_string())
            .or_default()
            .clone();
        Waiter {
            shared: self.clone(),
            key: key.to_string(),
            notify,
        }
    }

    fn wake(&self, key: &str) {
        if let Some(notify) = self.waiting.lock().get(key) {
            notify.notify_waiters();
        }
    }

    async fn try_lock(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        let (lease, waiters) = (self.key("turn", key), self.key("wait", key));
        let mut invocation = self.scripts.lock.key(&lease);
        invocation
            .key(&waiters)
            .arg(token)
            .arg(self.lease.as_millis() as u64)
            .arg(&self.replica);
        let taken: i64 = self.run(invocation).await?;
        Ok(taken == 1)
    }

    fn lease_of(self: &Arc<Self>, kind: Kind, session: &str, token: String) -> Lease {
        let key = match kind {
            Kind::Turn => self.key("turn", session),
            Kind::Stream => self.key("streams", session),
        };
        self.held.lock().insert(token.clone(), (kind, key.clone()));
        Lease {
            shared: Arc::downgrade(self),
            kind,
            session: session.to_string(),
            key,
            token,
        }
    }

    /// Give a lease back; for a turn, wake the replicas waiting for the session.
    async fn let_go(&self, kind: Kind, session: &str, key: &str, token: &str) {
        let result = match kind {
            Kind::Stream => {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(key).arg(token);
                self.run_cmd::<i64>(&cmd).await.map(|_| Vec::new())
            }
            Kind::Turn => {
                let mut invocation = self.scripts.unlock.key(key);
                invocation.key(self.key("wait", session)).arg(token);
                self.run::<Vec<String>>(invocation).await
            }
        };
        let waiting = match result {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::warn!(error = %e, "could not let go of a lease; it expires by itself");
                return;
            }
        };
        for replica in waiting {
            if replica == self.replica {
                self.wake(session);
                continue;
            }
            let note = Message::Released {
                key: session.to_string(),
            };
            if let Err(e) = self.publish(&replica, &note).await {
                tracing::debug!(error = %e, replica = %replica, "could not wake a waiting replica");
            }
        }
    }

    /// Send `message` to `replica`; the number of subscribers that got it (0: it is gone).
    async fn publish(&self, replica: &str, message: &Message) -> Result<i64, StoreError> {
        let body =
            serde_json::to_string(message).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.channel(replica)).arg(body);
        self.run_cmd(&cmd).await
    }

    /// Ask `replica` and wait for its reply; `None` when it is not listening (gone).
    async fn request(
        &self,
        replica: &str,
        make: impl FnOnce(u64, String) -> Message,
    ) -> Result<Option<Reply>, RequestError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let answer = async {
            if self
                .publish(replica, &make(id, self.replica.clone()))
                .await?
                == 0
            {
                return Ok(None);
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
                Ok(Ok(reply)) => Ok(Some(reply)),
                _ => Err(RequestError::NoAnswer(replica.to_string())),
            }
        }
        .await;
        self.pending.lock().remove(&id);
        answer
    }

    /// Extend every lease this replica holds.
    async fn renew_all(&self) -> Result<(), StoreError> {
        let held: Vec<(String, Kind, String)> = self
            .held
            .lock()
            .iter()
            .map(|(token, (kind, key))| (key.clone(), *kind, token.clone()))
            .collect();
        let lease = self.lease.as_millis() as u64;
        for (kind, script) in [
            (Kind::Turn, &self.scripts.renew_locks),
            (Kind::Stream, &self.scripts.renew_streams),
        ] {
            let mine: Vec<_> = held.iter().filter(|(_, k, _)| *k == kind).collect();
            if mine.is_empty() {
                continue;
            }
            let mut invocation = script.prepare_invoke();
            for (key, _, token) in &mine {
                invocation.key(key).arg(token);
            }
            invocation.arg(lease);
            let lost: i64 = self.run(invocation).await?;
            if lost > 0 {
                tracing::warn!(lost, "turn leases taken over by another replica (was Redis unreachable for longer than a lease?)");
            }
        }
        Ok(())
    }
}

/// Requests from other replicas, as Redis pushes them.
pub struct Inbox(mpsc::UnboundedReceiver<PushInfo>);

/// Answer requests until the registry or the cluster is gone.
async fn listen(
    shared: Weak<Shared>,
    mut inbox: mpsc::UnboundedReceiver<PushInfo>,
    sessions: super::WeakSessions,
    store: Arc<dyn SessionStore>,
) {
    while let Some(push) = inbox.recv().await {
        if push.kind != PushKind::Message {
            continue;
        }
        let (Some(shared), Some(sessions)) = (shared.upgrade(), sessions.upgrade()) else {
            return;
        };
        let Some(message) = push.data.get(1).and_then(parse) else {
            continue;
        };
        tokio::spawn(handle(shared, sessions, store.clone(), message));
    }
}

fn parse(value: &redis::Value) -> Option<Message> {
    let bytes: Vec<u8> = redis::from_redis_value_ref(value).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(message) => Some(message),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a malformed message from another replica");
            None
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    sessions: Sessions,
    store: Arc<dyn SessionStore>,
    message: Message,
) {
    let (id, from, reply) = match message {
        Message::Cut {
            id,
            from,
            key,
            heard,
            by,
        } => {
            let cuts = match by {
                CutBy::Api => sessions
                    .interrupt(&key, heard.as_deref())
                    .into_iter()
                    .collect(),
                by => sessions.cut_all(&key, by),
            };
            let mut reports = Vec::with_capacity(cuts.len());
            for cut in cuts {
                tracing::debug!(session = %key, from = %from, streamed_chars = cut.streamed_chars,
                    "turn cut at another replica's request");
                reports.push(sessions.store_cut(cut, store.as_ref()).await);
            }
            (id, from, Reply::Cut(reports))
        }
        Message::View { id, from, key } => (id, from, Reply::View(sessions.view(&key))),
        Message::Released { key } => return shared.wake(&key),
        Message::Reply { id, reply } => {
            if let Some(waiting) = shared.pending.lock().remove(&id) {
                let _ = waiting.send(reply);
            }
            return;
        }
    };
    if let Err(e) = shared.publish(&from, &Message::Reply { id, reply }).await {
        tracing::warn!(error = %e, replica = %from, "could not answer another replica");
    }
}

/// Renew this replica's leases every third of a lease until the cluster is gone.
async fn renew(shared: Weak<Shared>) {
    let Some(period) = shared.upgrade().map(|s| s.lease / 3) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.renew_all().await {
            tracing::warn!(error = %e, "could not renew turn leases");
        }
    }
}
