//! Client authentication and stream limits.

use std::sync::Arc;

use gateway_tests::{TestHost, TextStream};
use serde_json::{json, Value};
use tokio::sync::Notify;

const TOKEN: &str = "tok-e2e-DISTINCT-4242";

async fn post(host: &TestHost, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = host
        .client
        .post(format!("{}/v1/conversation", host.url))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn get(host: &TestHost, path: &str, token: Option<&str>) -> u16 {
    let mut request = host.client.get(format!("{}{path}", host.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn json_error(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();
    (status, headers, body["error"].clone())
}

#[tokio::test]
async fn bearer_tokens_guard_everything_but_healthz() {
    let host = TestHost::with_config(json!({"auth": {"tokens": ["other-token", TOKEN]}})).await;
    for token in [None, Some("wrong"), Some("tok-e2e-DISTINCT-424"), Some("")] {
        let (status, headers, error) =
            json_error(post(&host, token, json!({"message": "hi"})).await).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(error["code"], "unauthorized");
        assert!(headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }
    // A lower-case scheme is fine (RFC 7235: case-insensitive).
    let response = host
        .client
        .post(format!("{}/v1/conversation", host.url))
        .header("authorization", format!("bearer {TOKEN}"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    let answer = gateway_tests::Answer::read(response).await;
    assert_eq!(answer.last()["type"], "text_done", "{}", answer.body);
    assert_eq!(
        host.upstream.requests().len(),
        1,
        "refused requests never reached the upstream"
    );
    assert_eq!(get(&host, "/healthz", None).await, 200);
    assert_eq!(get(&host, "/metrics", None).await, 401);
    assert_eq!(get(&host, "/metrics", Some(TOKEN)).await, 200);
    assert_eq!(get(&host, "/v1/profiles", None).await, 401);
    assert_eq!(get(&host, "/v1/profiles", Some(TOKEN)).await, 200);
    assert_eq!(get(&host, "/no/such/route", None).await, 401);
    let (_, body) = host.get("/v1/gateways").await;
    assert!(!body.to_string().contains(TOKEN));
}

#[tokio::test]
async fn public_metrics_and_auth_off_by_default() {
    let host =
        TestHost::with_config(json!({"auth": {"tokens": TOKEN, "public_metrics": true}})).await;
    assert_eq!(get(&host, "/metrics", None).await, 200);
    assert_eq!(get(&host, "/v1/profiles", None).await, 401);
    let open = TestHost::start().await;
    assert_eq!(get(&open, "/v1/profiles", None).await, 200);
}

/// Start a turn whose upstream answer is held until `release`; returns once its first delta
/// arrived, with the body stream still open.
async fn held_turn(host: &TestHost, body: Value) -> (Arc<Notify>, TextStream) {
    let (release, _) = host.upstream.hold(&["Held"]);
    let mut stream = TextStream::new(post(host, None, body).await);
    assert_eq!(stream.status, 200);
    stream.until("Held").await;
    (release, stream)
}

#[tokio::test]
async fn total_stream_limit_answers_503_overloaded_with_retry_after() {
    let host = TestHost::with_config(json!({"limits": {"max_streams": 1}})).await;
    let (release, mut stream) = held_turn(&host, json!({"message": "first"})).await;
    let (status, headers, error) =
        json_error(post(&host, None, json!({"message": "second"})).await).await;
    assert_eq!(status, 503);
    assert_eq!(error["code"], "overloaded");
    assert_eq!(headers["retry-after"], "1");
    release.notify_one();
    let text = stream.rest().await;
    assert!(text.contains("event: text_done"), "{text}");
    let answer = host.sse(json!({"message": "third"})).await;
    assert_eq!(answer.last()["type"], "text_done", "the slot came back");
    assert!(host
        .state
        .metrics()
        .render()
        .contains(r#"cause="overloaded""#));
}

#[tokio::test]
async fn per_session_limit_answers_429_session_busy() {
    let host = TestHost::with_config(json!({"limits": {"max_streams_per_session": 1}})).await;
    let (release, mut stream) =
        held_turn(&host, json!({"message": "first", "session_key": "busy-1"})).await;
    let (status, headers, error) = json_error(
        post(
            &host,
            None,
            json!({"message": "again", "session_key": "busy-1"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(error["code"], "session_busy");
    assert_eq!(headers["retry-after"], "1");
    let other = host
        .sse(json!({"message": "elsewhere", "session_key": "busy-2"}))
        .await;
    assert_eq!(other.last()["type"], "text_done", "other sessions are free");
    release.notify_one();
    stream.rest().await;
    let again = host
        .sse(json!({"message": "now", "session_key": "busy-1"}))
        .await;
    assert_eq!(again.last()["type"], "text_done");
    let stored = host.state.store().history("busy-1", 10).await.unwrap();
    let users: Vec<_> = stored
        .iter()
        .filter(|m| m.role == gateway_core::Role::User)
        .map(|m| m.content.to_string())
        .collect();
    assert_eq!(users, ["first", "now"], "the refused turn left no trace");
}

#[tokio::test]
async fn upstream_concurrency_limit_waits_then_errors_busy() {
    let host = TestHost::with_config(json!({
        "timeouts": {"first_token_ms": 300},
        "gateways": {"openai-compat": {"max_concurrency": 1}}
    }))
    .await;
    let (release, mut stream) = held_turn(&host, json!({"message": "first"})).await;
    let answer = host.sse(json!({"message": "second"})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.types(), ["error"], "{}", answer.body);
    let error = answer.last()["error"].as_str().unwrap();
    assert!(
        error.contains("busy") && error.contains("1 upstream slots"),
        "{error}"
    );
    assert_eq!(
        host.upstream.requests().len(),
        1,
        "the upstream saw one turn"
    );
    release.notify_one();
    stream.rest().await;
    let answer = host.sse(json!({"message": "third"})).await;
    assert_eq!(answer.last()["type"], "text_done");
    assert!(host.state.metrics().render().contains(r#"cause="busy""#));
}

#[tokio::test]
async fn openai_facade_gets_the_same_auth_and_limits_in_its_own_error_shape() {
    let host = TestHost::with_config(json!({
        "auth": {"tokens": [TOKEN]},
        "limits": {"max_streams_per_session": 1},
    }))
    .await;
    let url = format!("{}/v1/chat/completions", host.url);
    let body = json!({"model": "default", "stream": true, "user": "facade-1",
                      "messages": [{"role": "user", "content": "hi"}]});
    let denied = host.client.post(&url).json(&body).send().await.unwrap();
    let (status, headers, error) = json_error(denied).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(
        error["type"], "authentication_error",
        "OpenAI clients read type"
    );
    assert_eq!(error["code"], "unauthorized");

    let (release, _) = host.upstream.hold(&["Held"]);
    let authorized = || host.client.post(&url).bearer_auth(TOKEN).json(&body).send();
    let mut stream = TextStream::new(authorized().await.unwrap());
    stream.until("Held").await;
    let busy = authorized().await.unwrap();
    let (status, headers, error) = json_error(busy).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(error["code"], "session_busy");
    assert_eq!(error["type"], "rate_limit_error");
    release.notify_one();
    let rest = stream.rest().await;
    assert!(rest.contains("[DONE]"), "{rest}");
}
