//! Failing providers: fallback before the first token (refused connection, 503, first-token
//! timeout), never after it, `Retry-After` honoured up to the cap, and the wait cut short when
//! the client goes away. Two named instances on two real mock upstreams.

use std::time::Duration;

use gateway_host::{Level, Report};
use gateway_tests::{
    profile_on, refused_base_url, wait_for, HostSpec, MockUpstream, Reply, TestHost,
};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const PRIMARY_KEY: &str = "sk-primary-test-111";
const BACKUP_KEY: &str = "sk-backup-test-222";

/// A host whose profile `voice` is answered by `primary` (at `primary_url`, with
/// `primary_settings` added), falling back to `backup` (at `backup`'s URL).
async fn host(
    primary_url: String,
    primary_settings: Value,
    backup: &MockUpstream,
    extra: Value,
) -> TestHost {
    let mut primary = json!({"kind": "openai-compat", "base_url": primary_url,
        "api_key_env": "PRIMARY_KEY", "model": "primary-model"});
    for (k, v) in primary_settings.as_object().unwrap() {
        primary[k] = v.clone();
    }
    let mut config = json!({"gateways": {
        "primary": primary,
        "backup": {"kind": "openai-compat", "base_url": backup.base_url(),
                   "api_key_env": "BACKUP_KEY", "model": "backup-model"},
    }});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let spec = HostSpec {
        config,
        ..HostSpec::default()
    }
    .with_env("PRIMARY_KEY", PRIMARY_KEY)
    .with_env("BACKUP_KEY", BACKUP_KEY)
    .with_profile(profile_on("voice", "primary", &["backup"]));
    TestHost::with(spec).await
}

fn metrics(host: &TestHost) -> String {
    host.state.metrics().render()
}

/// The backup answered: handshake names it, its own model and key reached it.
fn assert_backup_answered(answer: &gateway_tests::Answer, backup: &MockUpstream) {
    assert_eq!(
        answer.types(),
        ["handshake", "delta", "delta", "delta", "text_done"],
        "{}",
        answer.body
    );
    assert_eq!(answer.events[0]["gateway"], "backup");
    assert_eq!(answer.text(), "Hello there.");
    assert_eq!(backup.requests().len(), 1);
    assert_eq!(backup.last_request()["model"], "backup-model");
    assert_eq!(
        backup.authorizations(),
        [Some(format!("Bearer {BACKUP_KEY}"))]
    );
}

#[tokio::test]
async fn falls_back_when_the_primary_refuses_connections() {
    let backup = MockUpstream::start().await;
    let host = host(refused_base_url().await, json!({}), &backup, json!({})).await;
    let answer = host.sse(json!({"message": "hi", "profile": "voice"})).await;
    assert_backup_answered(&answer, &backup);
    let text = metrics(&host);
    assert!(
        text.contains(r#"gateway_host_fallbacks_total{from="primary",to="backup"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gateway_host_errors_total{gateway="primary",cause="connect"} 1"#),
        "{text}"
    );
    assert!(!answer.body.contains(PRIMARY_KEY) && !answer.body.contains(BACKUP_KEY));
}

#[tokio::test]
async fn falls_back_on_503_and_stores_the_turn_once() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(primary.base_url(), json!({}), &backup, json!({})).await;
    primary.push(Reply::Status(
        503,
        json!({"error": {"message": "overloaded"}}).to_string(),
    ));
    let answer = host
        .sse(json!({"message": "hi", "profile": "voice", "session_key": "fo-1"}))
        .await;
    assert_backup_answered(&answer, &backup);
    assert_eq!(primary.requests().len(), 1, "no Retry-After: no retry");
    assert_eq!(primary.last_request()["model"], "primary-model");
    assert_eq!(
        primary.authorizations(),
        [Some(format!("Bearer {PRIMARY_KEY}"))]
    );
    let history = host.state.store().history("fo-1", 20).await.unwrap();
    let contents: Vec<&str> = history.iter().map(|m| &*m.content).collect();
    assert_eq!(
        contents,
        ["hi", "Hello there."],
        "stored once, the answer that succeeded"
    );

    let text = metrics(&host);
    for line in [
        r#"gateway_host_fallbacks_total{from="primary",to="backup"} 1"#,
        r#"gateway_host_errors_total{gateway="primary",cause="http_503"} 1"#,
        r#"gateway_host_requests_total{profile="voice",gateway="primary"} 1"#,
        r#"gateway_host_requests_total{profile="voice",gateway="backup"} 1"#,
        r#"gateway_host_ttft_seconds_count{gateway="backup"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(!text.contains(r#"gateway_host_ttft_seconds_count{gateway="primary"}"#));
}

#[tokio::test]
async fn falls_back_on_first_token_timeout_and_closes_the_primary() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(
        primary.base_url(),
        json!({"first_token_timeout_ms": 300}),
        &backup,
        json!({}),
    )
    .await;
    let (closed_tx, closed_rx) = oneshot::channel();
    primary.push(Reply::silent(closed_tx));
    let answer = host.sse(json!({"message": "hi", "profile": "voice"})).await;
    assert_backup_answered(&answer, &backup);
    tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the silent primary's connection was closed")
        .expect("closed signal");
    assert!(metrics(&host).contains(r#"cause="first_token_timeout""#));
}

#[tokio::test]
async fn no_fallback_after_the_first_token() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(primary.base_url(), json!({}), &backup, json!({})).await;
    primary.push(Reply::Cut(vec!["Hel".into()]));
    let answer = host
        .sse(json!({"message": "hi", "profile": "voice", "session_key": "fo-2"}))
        .await;
    assert_eq!(
        answer.types(),
        ["handshake", "delta", "error"],
        "{}",
        answer.body
    );
    assert_eq!(answer.events[0]["gateway"], "primary");
    assert!(answer.last()["error"]
        .as_str()
        .unwrap()
        .contains("truncated"));
    assert!(backup.requests().is_empty(), "the backup is never called");
    assert!(host
        .state
        .store()
        .history("fo-2", 20)
        .await
        .unwrap()
        .is_empty());
    assert!(!metrics(&host).contains("gateway_host_fallbacks_total{"));
}

#[tokio::test]
async fn non_transient_errors_do_not_fall_back() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(primary.base_url(), json!({}), &backup, json!({})).await;
    primary.push(Reply::Status(
        401,
        json!({"error": {"message": "Invalid API key"}}).to_string(),
    ));
    let answer = host.sse(json!({"message": "hi", "profile": "voice"})).await;
    assert_eq!(answer.types(), ["error"], "{}", answer.body);
    assert!(answer.last()["error"].as_str().unwrap().contains("401"));
    assert!(backup.requests().is_empty());
}

#[tokio::test]
async fn retry_after_is_honoured_on_the_same_instance() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(primary.base_url(), json!({}), &backup, json!({})).await;
    primary.push(Reply::retry_after(429, 1));
    let answer = host.sse(json!({"message": "hi", "profile": "voice"})).await;
    assert_eq!(answer.last()["type"], "text_done", "{}", answer.body);
    assert_eq!(answer.events[0]["gateway"], "primary");
    assert_eq!(
        primary.requests().len(),
        2,
        "retried once on the same instance"
    );
    assert!(backup.requests().is_empty());
    let times = primary.request_times();
    assert!(
        times[1] - times[0] >= Duration::from_secs(1),
        "the retry waited for Retry-After"
    );
    let text = metrics(&host);
    assert!(
        text.contains(r#"gateway_host_retries_total{gateway="primary",cause="http_429"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gateway_host_requests_total{profile="voice",gateway="primary"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn retries_are_bounded_then_the_turn_falls_back() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(
        primary.base_url(),
        json!({"retry": {"max_attempts": 2}}),
        &backup,
        json!({"retry": {"max_attempts": 5}}),
    )
    .await;
    primary.push(Reply::retry_after(503, 0));
    primary.push(Reply::retry_after(503, 0));
    primary.push(Reply::retry_after(503, 0));
    let answer = host.sse(json!({"message": "hi", "profile": "voice"})).await;
    assert_backup_answered(&answer, &backup);
    assert_eq!(
        primary.requests().len(),
        2,
        "the instance's max_attempts wins"
    );
}

#[tokio::test]
async fn retry_after_beyond_the_cap_moves_on_without_waiting() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(primary.base_url(), json!({}), &backup, json!({})).await;
    primary.push(Reply::retry_after(429, 3600));
    // A guard against hanging for an hour, not a speed measurement.
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        host.sse(json!({"message": "hi", "profile": "voice"})),
    )
    .await
    .expect("the host did not wait for a Retry-After beyond max_retry_after_ms");
    assert_backup_answered(&answer, &backup);
    assert_eq!(primary.requests().len(), 1);
}

#[tokio::test]
async fn the_last_gateways_error_ends_the_turn() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(primary.base_url(), json!({}), &backup, json!({})).await;
    primary.push(Reply::Status(503, "{}".into()));
    backup.push(Reply::Status(
        502,
        json!({"error": {"message": "bad gateway"}}).to_string(),
    ));
    let answer = host
        .sse(json!({"message": "hi", "profile": "voice", "session_key": "fo-3"}))
        .await;
    assert_eq!(answer.types(), ["error"], "{}", answer.body);
    assert!(answer.last()["error"].as_str().unwrap().contains("502"));
    assert!(host
        .state
        .store()
        .history("fo-3", 20)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn client_disconnect_ends_the_retry_wait() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    let host = host(
        primary.base_url(),
        json!({}),
        &backup,
        json!({"retry": {"max_retry_after_ms": 600000}}),
    )
    .await;
    primary.push(Reply::retry_after(503, 300));
    let stream = host
        .post_stream(
            "/v1/conversation",
            json!({"message": "hi", "profile": "voice"}),
        )
        .await;
    let m = host.state.metrics();
    // The host is now waiting out the 300 s Retry-After.
    wait_for(|| {
        m.render()
            .contains(r#"gateway_host_retries_total{gateway="primary""#)
    })
    .await;
    drop(stream);
    wait_for(|| m.render().contains("gateway_host_in_flight_streams 0")).await;
    assert!(m.render().contains(r#"cause="client_disconnected""#));
    assert_eq!(primary.requests().len(), 1);
    assert!(backup.requests().is_empty());
}

#[tokio::test]
async fn an_unconfigured_primary_is_skipped() {
    let backup = MockUpstream::start().await;
    let spec = HostSpec {
        config: json!({"gateways": {
            "primary": {"kind": "openai-compat", "base_url": refused_base_url().await,
                        "api_key_env": "UNSET_PRIMARY_KEY"},
            "backup": {"kind": "openai-compat", "base_url": backup.base_url(),
                       "api_key_env": "BACKUP_KEY", "model": "backup-model"},
        }}),
        ..HostSpec::default()
    }
    .with_env("BACKUP_KEY", BACKUP_KEY)
    .with_profile(profile_on("voice", "primary", &["backup"]));
    let host = TestHost::with(spec).await;
    let answer = host.sse(json!({"message": "hi", "profile": "voice"})).await;
    assert_backup_answered(&answer, &backup);
}

#[tokio::test]
async fn unknown_fallback_id_is_reported() {
    let spec = HostSpec::default().with_profile(profile_on("voice", "openai-compat", &["nowhere"]));
    let host = TestHost::with(spec).await;
    let problem = host
        .state
        .profiles()
        .problems()
        .iter()
        .find(|p| p.file == "voice.json")
        .expect("voice.json reported");
    assert!(
        problem.error.to_string().contains("'nowhere'"),
        "{:?}",
        problem
    );
    let report = Report::of(&host.state);
    assert!(report.has_problems());
    assert!(report
        .findings
        .iter()
        .any(|f| f.level == Level::Problem && f.detail.contains("nowhere")));
    let answer = host.sse(json!({"message": "hi", "profile": "voice"})).await;
    assert_eq!(answer.status, 404);
}
