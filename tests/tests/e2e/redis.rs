//! Session memory in Redis shared by two in-process hosts; Redis failures at request time.

use std::sync::Arc;
use std::time::Duration;

use gateway_core::testing::RedisServer;
use gateway_core::Role;
use gateway_tests::{
    chat_of, pairs, profile, upstream_closed, Answer, HostSpec, Reply, TestHost, TextStream,
};
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

/// `n` in-process replicas sharing `redis` under `prefix`, with a `steer` profile.
async fn replicas(redis: &RedisServer, prefix: &str, n: usize, limits: Value) -> Vec<TestHost> {
    let mut steer = profile("steer");
    steer["llm"]["queue"] = json!({"mode": "steer"});
    let mut hosts = Vec::new();
    for _ in 0..n {
        let mut spec = redis_spec(redis, prefix).with_profile(steer.clone());
        spec.config["limits"] = limits.clone();
        hosts.push(TestHost::with(spec).await);
    }
    hosts
}

fn final_event(text: &str) -> Value {
    let finals: Vec<&str> = text
        .split("\n\n")
        .filter(|f| f.starts_with("event: text_done") || f.starts_with("event: error"))
        .collect();
    assert_eq!(finals.len(), 1, "exactly one final event: {text}");
    serde_json::from_str(finals[0].split_once("data: ").unwrap().1).unwrap()
}

#[tokio::test]
async fn a_session_turn_waits_for_its_turn_on_another_replica_and_sees_it() {
    let redis = RedisServer::start();
    let hosts = replicas(&redis, "queue:", 3, json!({"max_streams_per_session": 0})).await;
    let (release, mut first) = held(&hosts[0], 0).await;
    let mut later = Vec::new();
    for host in &hosts[1..] {
        host.upstream.push(Reply::tokens(&["later answer"]));
        let turn = host.spawn_sse(json!({"message": "later", "session_key": "shared"}));
        host.wait_session("shared", |v| v.queued == 1).await;
        later.push(turn);
    }
    // Replica 1 sees the turn running on replica 0, with what it streamed so far.
    let (status, view) = hosts[1].get("/v1/sessions/shared").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["in_flight"], true, "{view}");
    assert_eq!(view["streamed_chars"], "answer-0".len(), "{view}");
    assert!(hosts[0].upstream.requests().len() == 1);
    assert!(
        hosts[1].upstream.requests().is_empty(),
        "waits for replica 0's turn"
    );
    release.notify_one();
    assert_eq!(final_event(&first.rest().await)["type"], "text_done");
    for turn in later {
        assert_eq!(turn.await.unwrap().last()["type"], "text_done");
    }
    // Each later turn ran after the turns before it and sent them as history.
    for host in &hosts[1..] {
        let sent = chat_of(&host.upstream.last_request());
        assert_eq!(
            sent[..2],
            pairs(&[("user", "question-0"), ("assistant", "answer-0")])
        );
    }
    let history = hosts[0]
        .state
        .store()
        .history("shared", 1000)
        .await
        .unwrap();
    assert_eq!(history.len(), 6, "{history:?}");
    for pair in history.chunks(2) {
        assert_eq!(
            (pair[0].role, pair[1].role),
            (Role::User, Role::Assistant),
            "{pair:?}"
        );
    }
}

#[tokio::test]
async fn interrupt_and_steer_on_one_replica_cut_the_turn_on_another() {
    let redis = RedisServer::start();
    let hosts = replicas(&redis, "cut:", 2, json!({"max_streams_per_session": 0})).await;
    // Interrupt through replica 1.
    let (_release, mut first) = held(&hosts[0], 0).await;
    let (status, body) = hosts[1]
        .post(
            "/v1/sessions/shared/interrupt",
            Some(json!({"heard": "answer"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["streamed_chars"], "answer-0".len());
    assert_eq!(body["stored"], "answer");
    let done = final_event(&first.rest().await);
    assert_eq!(
        (done["interrupted"].clone(), done["response"].clone()),
        (json!(true), json!("answer-0"))
    );
    let (status, body) = hosts[1].post("/v1/sessions/shared/interrupt", None).await;
    assert_eq!(status, 409, "nothing runs any more: {body}");
    // A steering turn on replica 1 over a turn on replica 0.
    let (_release, closed) = hosts[0].upstream.hold(&["partial"]);
    let mut running = hosts[0]
        .post_stream(
            "/v1/conversation",
            json!({"profile": "steer", "message": "one", "session_key": "shared"}),
        )
        .await;
    running.until("partial").await;
    hosts[1].upstream.push(Reply::tokens(&["steered"]));
    let steering = hosts[1]
        .sse(json!({"profile": "steer", "message": "two", "session_key": "shared"}))
        .await;
    assert_eq!(steering.last()["response"], "steered");
    upstream_closed(closed).await;
    assert_eq!(final_event(&running.rest().await)["interrupted"], true);
    assert_eq!(
        chat_of(&hosts[1].upstream.last_request()),
        pairs(&[
            ("user", "question-0"),
            ("assistant", "answer"),
            ("user", "one"),
            ("assistant", "partial"),
            ("user", "two"),
        ])
    );
}

#[tokio::test]
async fn the_per_session_stream_limit_holds_across_replicas() {
    let redis = RedisServer::start();
    let hosts = replicas(&redis, "limit:", 2, json!({"max_streams_per_session": 1})).await;
    let (release, mut first) = held(&hosts[0], 0).await;
    let refused = hosts[1]
        .sse(json!({"message": "second", "session_key": "shared"}))
        .await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.error()["code"], "session_busy");
    release.notify_one();
    first.rest().await;
    // The count is given back when the stream ends (in the background): ask until admitted.
    let deadline = tokio::time::Instant::now() + gateway_tests::DEADLINE;
    let mut answer = hosts[1]
        .sse(json!({"message": "third", "session_key": "shared"}))
        .await;
    while answer.status == 429 && tokio::time::Instant::now() < deadline {
        answer = hosts[1]
            .sse(json!({"message": "third", "session_key": "shared"}))
            .await;
    }
    assert_eq!(answer.last()["type"], "text_done", "{}", answer.body);
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

/// A replica on an append-only Redis (`appendfsync always`), so a restart loses only what
/// the host never wrote.
fn persistent_redis(dir: &std::path::Path) -> RedisServer {
    RedisServer::with(gateway_core::testing::RedisOptions {
        data_dir: Some(dir.into()),
        ..Default::default()
    })
}

/// A Redis that keeps its data in `dir` (so it can be stopped and started again) and a host
/// on it that gives up writing a session after 300 ms.
async fn host_with_short_writes(dir: &std::path::Path, prefix: &str) -> (RedisServer, TestHost) {
    let redis = persistent_redis(dir);
    let mut spec = redis_spec(&redis, prefix);
    spec.config["memory"]["write_timeout_ms"] = json!(300);
    (redis, TestHost::with(spec).await)
}

async fn metric(host: &TestHost, line: &str) -> bool {
    let (_, body) = host.get("/metrics").await;
    body.as_str().unwrap_or_default().contains(line)
}

#[tokio::test]
async fn a_turn_finishing_while_redis_is_dead_says_memory_was_not_updated_and_redis_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut redis, host) = host_with_short_writes(dir.path(), "lost:").await;
    let before = host
        .sse(json!({"message": "kept", "session_key": "shared"}))
        .await;
    assert_eq!(before.last()["type"], "text_done");
    let (release, mut turn) = held(&host, 1).await;
    redis.stop();
    release.notify_one();
    let done = final_event(&turn.rest().await);
    assert_eq!(done["type"], "text_done", "{done}");
    assert_eq!(done["response"], "answer-1");
    let why = done["memory_error"].as_str().expect("memory_error is set");
    assert!(why.contains("session memory was not updated"), "{why}");
    assert!(
        why.contains(&format!("redis at 127.0.0.1:{}", redis.port())),
        "{why}"
    );
    assert!(why.contains("not stored"), "{why}");
    assert!(
        metric(
            &host,
            r#"gateway_host_memory_not_stored_total{what="turn"} 1"#
        )
        .await
    );

    // While it is down, a session turn is refused with what happened (and the replica's
    // reconnection attempts give up meanwhile).
    let down = host
        .sse(json!({"message": "during", "session_key": "shared"}))
        .await;
    assert_eq!(down.status, 503, "{}", down.body);
    let message = down.error()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("connection refused") || message.contains("connection lost"),
        "{message}"
    );
    assert!(!message.ends_with("Io"), "{message}");

    redis.restart();
    // The first session turn after Redis returns works, and its history lacks only the lost turn.
    let after = host
        .sse(json!({"message": "after", "session_key": "shared"}))
        .await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.last()["type"], "text_done", "{}", after.body);
    assert!(after.last().get("memory_error").is_none(), "{}", after.body);
    let sent = chat_of(&host.upstream.last_request());
    assert_eq!(
        sent[0],
        ("user".to_string(), "kept".to_string()),
        "{sent:?}"
    );
    assert_eq!(
        sent.len(),
        3,
        "the lost turn is not in the history: {sent:?}"
    );
}

/// A turn through the OpenAI endpoint under `X-Session-Key` whose answer is held after its
/// first token while Redis is stopped; returns the response's body.
async fn openai_turn_losing_redis(
    host: &TestHost,
    redis: &mut RedisServer,
    stream: bool,
    turn: usize,
) -> super::openai_api::Raw {
    let (release, _) = host.upstream.hold(&[&format!("answer-{turn}")]);
    let body = json!({"model": "default", "stream": stream,
                      "messages": [{"role": "user", "content": format!("question-{turn}")}]});
    let response = super::openai_api::post(host, body.to_string(), Some("caller"));
    let stop = async {
        host.upstream.wait_for_requests(turn).await;
        redis.stop();
        release.notify_one();
    };
    let (raw, ()) = tokio::join!(response, stop);
    raw
}

#[tokio::test]
async fn the_openai_endpoint_says_when_memory_was_not_updated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut redis, host) = host_with_short_writes(dir.path(), "openai-lost:").await;
    let expect_why = |why: &Value| {
        let why = why.as_str().expect("memory_error is set");
        assert!(why.contains("session memory was not updated"), "{why}");
    };

    let whole = openai_turn_losing_redis(&host, &mut redis, false, 1).await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let completion: Value = serde_json::from_str(&whole.body).unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], "answer-1");
    expect_why(&completion["memory_error"]);

    redis.restart();
    let streamed = openai_turn_losing_redis(&host, &mut redis, true, 2).await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let chunks = streamed.chunks();
    let (finish, before) = chunks
        .iter()
        .position(|c| c["choices"][0]["finish_reason"].is_string())
        .map(|i| (&chunks[i], &chunks[..i]))
        .expect("a finish chunk");
    expect_why(&finish["memory_error"]);
    assert!(before.iter().all(|c| c.get("memory_error").is_none()));
    assert_eq!(streamed.data().last().map(String::as_str), Some("[DONE]"));

    // Once Redis is back, answers carry no memory_error.
    redis.restart();
    let after = json!({"model": "default", "messages": [{"role": "user", "content": "after"}]});
    let fine = super::openai_api::post(&host, after.to_string(), Some("caller")).await;
    assert_eq!(fine.status, 200, "{}", fine.body);
    let fine: Value = serde_json::from_str(&fine.body).unwrap();
    assert!(fine.get("memory_error").is_none(), "{fine}");
}

#[tokio::test]
async fn a_paused_redis_is_reported_only_when_the_write_did_not_land() {
    let redis = RedisServer::start();
    let mut spec = redis_spec(&redis, "pause:");
    spec.config["memory"]["write_timeout_ms"] = json!(1000);
    let host = TestHost::with(spec).await;
    let warm = host
        .sse(json!({"message": "warm", "session_key": "shared"}))
        .await;
    assert_eq!(warm.last()["type"], "text_done");

    // Paused for longer than the write timeout: reported, and it never lands later.
    let (release, mut turn) = held(&host, 1).await;
    redis.pause();
    release.notify_one();
    let done = final_event(&turn.rest().await);
    assert!(done["memory_error"].is_string(), "{done}");
    redis.resume();
    let history = host.state.store().history("shared", 100).await.unwrap();
    assert_eq!(history.len(), 2, "only the warm-up turn: {history:?}");

    // Paused for less: the write lands once and nothing is reported.
    let (release, mut turn) = held(&host, 2).await;
    redis.pause();
    release.notify_one();
    // The pause's length (shorter than the write timeout), not a synchronisation.
    tokio::time::sleep(Duration::from_millis(150)).await;
    redis.resume();
    let done = final_event(&turn.rest().await);
    assert!(done.get("memory_error").is_none(), "{done}");
    let history = host.state.store().history("shared", 100).await.unwrap();
    assert_eq!(history.len(), 4, "{history:?}");
    assert_eq!(&*history[2].content, "question-2");
}

#[tokio::test]
async fn replicas_over_rediss_trust_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::with(gateway_core::testing::RedisOptions {
        tls_dir: Some(dir.path().into()),
        ..Default::default()
    });
    let ca = redis.ca_file().unwrap();
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let mut spec = redis_spec(&redis, "tls:");
        spec.config["memory"]["redis_ca_file"] = json!(ca);
        hosts.push(TestHost::with(spec).await);
    }
    assert!(redis.url().starts_with("rediss://"));
    let (_release, mut turn) = held(&hosts[0], 0).await;
    let (status, body) = hosts[1].post("/v1/sessions/shared/interrupt", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(final_event(&turn.rest().await)["interrupted"], true);
    let history = hosts[1].state.store().history("shared", 10).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
}

#[tokio::test]
async fn a_turn_longer_than_its_lease_keeps_it_while_it_runs() {
    let redis = RedisServer::start();
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let mut spec = redis_spec(&redis, "renew:");
        spec.config["memory"]["lease_ms"] = json!(900);
        hosts.push(TestHost::with(spec).await);
    }
    let (release, mut first) = held(&hosts[0], 0).await;
    hosts[1].upstream.push(Reply::tokens(&["second"]));
    let second = hosts[1].spawn_sse(json!({"message": "next", "session_key": "shared"}));
    hosts[1].wait_session("shared", |v| v.queued == 1).await;
    // The turn's length (several leases), not a synchronisation: the renewals keep it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        hosts[1].upstream.requests().is_empty(),
        "the lease was renewed"
    );
    release.notify_one();
    assert_eq!(final_event(&first.rest().await)["type"], "text_done");
    assert_eq!(second.await.unwrap().last()["response"], "second");
    let sent = chat_of(&hosts[1].upstream.last_request());
    assert_eq!(sent[0], ("user".to_string(), "question-0".to_string()));
}
