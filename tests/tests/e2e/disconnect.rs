//! A client hanging up mid-answer, and keep-alive comments while the upstream is silent. The
//! scenarios are shared with the OpenAI facade's tests (`openai_api.rs`), which run them on
//! `/v1/chat/completions`.

use std::time::Duration;

use gateway_tests::{upstream_closed, wait_for, TestHost};
use serde_json::{json, Value};

/// POST `body` (a turn of session `gone`) to `path` over an upstream answer held after
/// `Partial`, hang up once `Partial` arrived, then check that the host closed the upstream
/// connection, has no stream in flight and stored nothing for `gone`. Returns the host.
pub(super) async fn hang_up_mid_answer(path: &str, body: Value) -> TestHost {
    let host = TestHost::start().await;
    let (_release, closed) = host.upstream.hold(&["Partial"]);
    let mut stream = host.post_stream(path, body).await;
    stream.until("Partial").await;
    drop(stream); // the client goes away mid-answer
    upstream_closed(closed).await;
    let metrics = host.state.metrics();
    wait_for(|| {
        metrics
            .render()
            .contains("gateway_host_in_flight_streams 0")
    })
    .await;
    assert!(host
        .state
        .store()
        .history("gone", 10)
        .await
        .unwrap()
        .is_empty());
    host
}

/// POST `body` to `path` on a host with `keepalive_secs: 1` while the upstream is silent after
/// `Wait`: a `: keep-alive` comment must arrive (within 10 s); then the upstream finishes and
/// the whole body is returned.
pub(super) async fn keep_alive_while_silent(path: &str, body: Value) -> String {
    let host = TestHost::with_config(json!({"keepalive_secs": 1})).await;
    let (release, _closed) = host.upstream.hold(&["Wait"]);
    let mut stream = host.post_stream(path, body).await;
    tokio::time::timeout(Duration::from_secs(10), stream.until(": keep-alive\n\n"))
        .await
        .expect("a keep-alive comment arrives");
    release.notify_one();
    stream.rest().await;
    stream.seen
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream() {
    let host = hang_up_mid_answer(
        "/v1/conversation",
        json!({"message": "hi", "session_key": "gone"}),
    )
    .await;
    assert!(host
        .state
        .metrics()
        .render()
        .contains(r#"cause="client_disconnected""#));
}

#[tokio::test]
async fn keep_alive_comments_while_the_upstream_is_silent() {
    let seen = keep_alive_while_silent("/v1/conversation", json!({"message": "hi"})).await;
    assert!(seen.contains("event: text_done"), "{seen}");
    assert_eq!(seen.matches("event: text_done").count(), 1);
}
