//! The Redis session store against a real `redis-server` started on a loopback port.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::testing::{RedisOptions, RedisServer};
use gateway_core::{ChatMessage, RedisStore, RedisStoreConfig, SessionStore, ToolCall};

fn config(redis: &RedisServer, prefix: &str) -> RedisStoreConfig {
    let mut config = RedisStoreConfig::new(redis.url(), prefix);
    config.ca_file = redis.ca_file();
    config
}

async fn store(redis: &RedisServer, prefix: &str, ttl: Duration) -> RedisStore {
    let mut config = config(redis, prefix);
    config.idle_ttl = ttl;
    RedisStore::connect(config).await.unwrap()
}

async fn store_with_write_timeout(redis: &RedisServer, write_timeout: Duration) -> RedisStore {
    let mut config = config(redis, "w:");
    config.write_timeout = write_timeout;
    RedisStore::connect(config).await.unwrap()
}

fn turn(i: usize) -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(format!("q{i}")),
        ChatMessage::assistant(format!("a{i}")),
    ]
}

#[tokio::test]
async fn caps_history_server_side_and_shares_it_between_clients() {
    let redis = RedisServer::start();
    let replica_a = store(&redis, "t1:", Duration::from_secs(60)).await;
    let replica_b = store(&redis, "t1:", Duration::from_secs(60)).await;
    for i in 0..15 {
        replica_a.append("s", turn(i), 20).await.unwrap();
    }
    let history = replica_b.history("s", 20).await.unwrap();
    assert_eq!(history.len(), 20);
    assert_eq!(&*history[0].content, "q5");
    assert_eq!(&*history[19].content, "a14");
    assert_eq!(replica_b.history("s", 3).await.unwrap().len(), 3);
    assert_eq!(replica_b.session_count().await.unwrap(), 1);
    assert!(replica_b.clear("s").await.unwrap());
    assert!(replica_a.history("s", 20).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_turns_of_one_session_never_interleave() {
    let redis = RedisServer::start();
    let store = Arc::new(store(&redis, "t2:", Duration::from_secs(60)).await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append("s", turn(i), 1000).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let history = store.history("s", 1000).await.unwrap();
    assert_eq!(history.len(), 100);
    for pair in history.chunks(2) {
        let q = pair[0].content.strip_prefix('q').unwrap();
        let a = pair[1].content.strip_prefix('a').unwrap();
        assert_eq!(q, a, "a turn's messages were split: {pair:?}");
    }
}

#[tokio::test]
async fn histories_stored_before_tool_calls_still_read() {
    let redis = RedisServer::start();
    let store = store(&redis, "t4:", Duration::from_secs(60)).await;
    let client = redis::Client::open(redis.url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Exactly what earlier versions wrote: one `{"role", "content"}` object per message.
    let old = [
        r#"{"role":"user","content":"q1"}"#,
        r#"{"role":"assistant","content":"a1"}"#,
    ];
    redis::cmd("RPUSH")
        .arg("t4:s")
        .arg(&old[..])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.history("s", 20).await.unwrap(), turn(1));
}

#[tokio::test]
async fn a_tool_exchange_is_stored_and_replayed_as_sent() {
    let redis = RedisServer::start();
    let store = store(&redis, "t5:", Duration::from_secs(60)).await;
    let mut call = ToolCall::new("call_1", "get_weather", r#"{"city":"Oslo"}"#);
    call.extra.insert(
        "extra_content".into(),
        serde_json::json!({"google": {"thought_signature": "c2lnbmF0dXJl"}}),
    );
    let exchange = vec![
        ChatMessage::user("Weather in Oslo?"),
        ChatMessage::assistant_with_tool_calls("", vec![call]),
        ChatMessage::tool_result("call_1", r#"{"temp_c":12}"#),
        ChatMessage::assistant("It is 12 degrees."),
    ];
    store.append("s", exchange.clone(), 20).await.unwrap();
    let history = store.history("s", 20).await.unwrap();
    assert_eq!(history, exchange);
    // A window that cuts the call off does not start with its orphaned result.
    assert_eq!(store.history("s", 2).await.unwrap(), exchange[3..]);
    assert_eq!(
        serde_json::to_value(&history[1]).unwrap(),
        serde_json::json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
            "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}}]})
    );
}

#[tokio::test]
async fn sessions_expire_after_the_idle_ttl() {
    let redis = RedisServer::start();
    let store = store(&redis, "t3:", Duration::from_secs(1)).await;
    store.append("s", turn(1), 20).await.unwrap();
    let client = redis::Client::open(redis.url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("t3:s")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((0..=1).contains(&ttl), "ttl was {ttl}");
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_error_without_the_password() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = RedisStore::connect(RedisStoreConfig::new(
        format!("redis://:hunter2secret@127.0.0.1:{port}/"),
        "x:",
    ))
    .await
    .err()
    .expect("connect must fail");
    let text = error.to_string();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(!text.contains("hunter2secret"), "{text}");
}

fn texts(history: &[ChatMessage]) -> Vec<&str> {
    history.iter().map(|m| &*m.content).collect()
}

#[tokio::test]
async fn bookkeeping_keys_are_not_counted_as_sessions() {
    let redis = RedisServer::start();
    let store = store(&redis, "t6:", Duration::from_secs(60)).await;
    store.append("s", turn(1), 20).await.unwrap();
    let client = redis::Client::open(redis.url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("t6:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "the session and its write id: {keys:?}");
    assert_eq!(store.session_count().await.unwrap(), 1);
}

#[tokio::test]
async fn the_first_read_after_redis_came_back_succeeds() {
    let mut redis = RedisServer::start();
    let store = store(&redis, "t7:", Duration::from_secs(60)).await;
    store.append("s", turn(1), 20).await.unwrap();
    redis.stop();
    let error = store.history("s", 20).await.unwrap_err().to_string();
    assert!(
        error.contains(&format!("redis at 127.0.0.1:{}", redis.port())),
        "{error}"
    );
    assert!(
        error.contains("connection lost") || error.contains("connection refused"),
        "says what happened: {error}"
    );
    redis.restart();
    // The data died with the process (no persistence); the connection comes back at once.
    assert!(store.history("s", 20).await.unwrap().is_empty());
    store.append("s", turn(2), 20).await.unwrap();
    assert_eq!(texts(&store.history("s", 20).await.unwrap()), ["q2", "a2"]);
}

#[tokio::test]
async fn a_write_to_a_dead_redis_fails_within_its_bound_and_says_so() {
    let mut redis = RedisServer::start();
    let store = store_with_write_timeout(&redis, Duration::from_millis(300)).await;
    redis.stop();
    let error = store
        .append("s", turn(1), 20)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("the turn was not stored"), "{error}");
    assert!(!error.ends_with("Io"), "{error}");
}

#[tokio::test]
async fn a_write_that_timed_out_on_a_paused_redis_never_lands_later() {
    let redis = RedisServer::start();
    let store = store_with_write_timeout(&redis, Duration::from_millis(400)).await;
    // Loads the script, so the paused write is a whole EVALSHA waiting in the socket.
    store.append("warm-up", turn(0), 20).await.unwrap();
    redis.pause();
    let error = store
        .append("s", turn(1), 20)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("the turn was not stored"), "{error}");
    redis.resume();
    // The write still sitting in the paused server's socket ran after its deadline: no-op.
    assert!(store.history("s", 20).await.unwrap().is_empty());
    store.append("s", turn(2), 20).await.unwrap();
    assert_eq!(texts(&store.history("s", 20).await.unwrap()), ["q2", "a2"]);
}

#[tokio::test]
async fn a_write_during_a_short_pause_lands_once_and_is_reported_stored() {
    let redis = RedisServer::start();
    let store = Arc::new(store_with_write_timeout(&redis, Duration::from_secs(10)).await);
    redis.pause();
    let write = {
        let store = store.clone();
        tokio::spawn(async move { store.append("s", turn(1), 20).await })
    };
    // The pause's length, not a synchronisation: the outcome is the same for any length
    // shorter than the write timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.resume();
    write.await.unwrap().unwrap();
    assert_eq!(texts(&store.history("s", 20).await.unwrap()), ["q1", "a1"]);
}

#[tokio::test]
async fn an_append_only_redis_keeps_sessions_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::with(RedisOptions {
        data_dir: Some(dir.path().into()),
        ..RedisOptions::default()
    });
    let store = store(&redis, "t8:", Duration::from_secs(60)).await;
    store.append("s", turn(1), 20).await.unwrap();
    redis.restart();
    assert_eq!(texts(&store.history("s", 20).await.unwrap()), ["q1", "a1"]);
}

#[tokio::test]
async fn rediss_with_the_configured_ca_and_not_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::with(RedisOptions {
        password: Some("tls-PASSWORD-77".into()),
        tls_dir: Some(dir.path().into()),
        ..RedisOptions::default()
    });
    assert!(redis.url().starts_with("rediss://"));
    let store = store(&redis, "t9:", Duration::from_secs(60)).await;
    store.append("s", turn(1), 20).await.unwrap();
    assert_eq!(texts(&store.history("s", 20).await.unwrap()), ["q1", "a1"]);
    // The system's roots do not know the throwaway CA.
    let error = RedisStore::connect(RedisStoreConfig::new(redis.url(), "t9:"))
        .await
        .err()
        .expect("an unknown CA is refused")
        .to_string();
    assert!(
        error.contains(&format!("redis at 127.0.0.1:{}", redis.port())),
        "{error}"
    );
    assert!(!error.contains("tls-PASSWORD-77"), "{error}");
    // A CA file that cannot be read is named.
    let mut config = config(&redis, "t9:");
    config.ca_file = Some(dir.path().join("missing.pem"));
    let error = RedisStore::connect(config).await.err().unwrap().to_string();
    assert!(error.contains("missing.pem"), "{error}");
}
