//! Session memory in Redis shared by two in-process hosts; Redis failures at request time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::testing::RedisServer;
use gateway_core::Role;
use gateway_tests::{Answer, HostSpec, TestHost, TextStream};
use serde_json::{json, Value};
use tokio::sync::Notify;

fn redis_spec(redis: &RedisServer, prefix: &str) -> HostSpec {
    HostSpec {
        config: json!({
            "memory": {"backend": "redis", "redis_url": redis.url(), "redis_key_prefix": prefix,
                       "max_messages": 200},
            "limits": {"max_streams_per_session": 0},
        }),
        ..HostSpec::default()
    }
}

/// Start a turn on `host` whose answer is held after its first token; returns the release
/// handle and the open body once that token arrived.
async fn held(host: &TestHost, i: usize) -> (Arc<Notify>, TextStream) {
    let (release, _) = host.upstream.hold(&[&format!("answer-{i}")]);
    let mut stream = host
        .post_stream(
            "/v1/conversation",
            json!({"message": format!("question-{i}"), "session_key": "shared"}),
        )
        .await;
    stream.until("answer-").await;
    (release, stream)
}

#[tokio::test]
async fn overlapping_turns_on_several_hosts_keep_each_turn_adjacent() {
    // Replicas of one session: each host runs one turn of it at a time (its session queue),
    // so overlap comes from several hosts. In each round every host's turn is held after its
    // first token until all are streaming, then all finish at once and their writes race.
    const HOSTS: usize = 4;
    const ROUNDS: usize = 3;
    let redis = RedisServer::start();
    let mut hosts = Vec::new();
    for _ in 0..HOSTS {
        hosts.push(TestHost::with(redis_spec(&redis, "overlap:")).await);
    }
    let mut answered = HashMap::new();
    for round in 0..ROUNDS {
        let mut open = Vec::new();
        for (h, host) in hosts.iter().enumerate() {
            let i = round * HOSTS + h;
            open.push((i, held(host, i).await));
        }
        for (_, (release, _)) in &open {
            release.notify_one();
        }
        let finishing = open.into_iter().map(|(i, (_, mut stream))| async move {
            stream.rest().await;
            (i, stream.seen)
        });
        for (i, text) in futures::future::join_all(finishing).await {
            let done = text
                .split("\n\n")
                .find(|f| f.starts_with("event: text_done"))
                .unwrap_or_else(|| panic!("turn {i} did not finish: {text}"));
            let data: Value = serde_json::from_str(done.split_once("data: ").unwrap().1).unwrap();
            answered.insert(
                format!("question-{i}"),
                data["response"].as_str().unwrap().to_string(),
            );
        }
    }
    let history = hosts[0]
        .state
        .store()
        .history("shared", 1000)
        .await
        .unwrap();
    assert_eq!(history.len(), 2 * HOSTS * ROUNDS, "{history:?}");
    for pair in history.chunks(2) {
        assert_eq!(pair[0].role, Role::User, "{pair:?}");
        assert_eq!(pair[1].role, Role::Assistant, "{pair:?}");
        assert_eq!(
            answered[&*pair[0].content], *pair[1].content,
            "each stored answer follows its own question: {pair:?}"
        );
    }
}

#[tokio::test]
async fn redis_down_at_request_time_is_a_clean_503_and_nothing_reaches_the_upstream() {
    let mut redis = RedisServer::start_with_password("redis-PASSWORD-e2e");
    let host = TestHost::with(redis_spec(&redis, "down:")).await;
    let ok = host
        .sse(json!({"message": "before", "session_key": "d"}))
        .await;
    assert_eq!(ok.last()["type"], "text_done");
    redis.stop();
    // A hang guard, not a speed assertion: the store's own timeouts end the request.
    let answer: Answer = tokio::time::timeout(
        Duration::from_secs(30),
        host.sse(json!({"message": "during", "session_key": "d"})),
    )
    .await
    .expect("no hang while Redis is down");
    assert_eq!(answer.status, 503, "{}", answer.body);
    let error = answer.error();
    assert_eq!(error["code"], "store_unavailable");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.1"), "names the host: {message}");
    assert!(
        !answer.body.contains("redis-PASSWORD-e2e"),
        "{}",
        answer.body
    );
    assert_eq!(
        host.upstream.requests().len(),
        1,
        "the failed turn never started"
    );
    // Turns without memory do not need Redis.
    let stateless = host.sse(json!({"message": "no session"})).await;
    assert_eq!(stateless.last()["type"], "text_done");
}

#[tokio::test]
async fn redis_down_at_start_up_names_the_host_not_the_password() {
    let mut redis = RedisServer::start_with_password("redis-PASSWORD-boot");
    let url = redis.url();
    redis.stop();
    let config = gateway_host::HostConfig::from_provider(figment::providers::Serialized::defaults(
        json!({"memory": {"backend": "redis", "redis_url": url}}),
    ))
    .unwrap();
    let registry = gateway_core::Registry::from_inventory().unwrap();
    let error = gateway_host::AppState::connect(config, &registry, &gateway_core::Env::default())
        .await
        .expect_err("start-up fails");
    let text = error.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", redis.port())),
        "{text}"
    );
    assert!(!text.contains("redis-PASSWORD-boot"), "{text}");
}
