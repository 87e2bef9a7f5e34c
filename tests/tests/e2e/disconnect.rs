use std::time::Duration;

use gateway_tests::{upstream_closed, wait_for, HostSpec, TestHost};
use serde_json::json;

#[tokio::test]
async fn client_disconnect_cancels_the_upstream() {
    let host = TestHost::start().await;
    let (_release, closed) = host.upstream.hold(&["Partial"]);
    let mut stream = host
        .post_stream(
            "/v1/conversation",
            json!({"message": "hi", "session_key": "gone"}),
        )
        .await;
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
    assert!(metrics.render().contains(r#"cause="client_disconnected""#));
    assert!(host
        .state
        .store()
        .history("gone", 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn keep_alive_comments_while_the_upstream_is_silent() {
    let host = TestHost::with(HostSpec {
        config: json!({"keepalive_secs": 1}),
        ..HostSpec::default()
    })
    .await;
    let (release, _closed) = host.upstream.hold(&["Wait"]);
    let mut stream = host
        .post_stream("/v1/conversation", json!({"message": "hi"}))
        .await;
    tokio::time::timeout(Duration::from_secs(10), stream.until(": keep-alive\n\n"))
        .await
        .expect("a keep-alive comment arrives");
    release.notify_one();
    stream.rest().await;
    let seen = stream.seen;
    assert!(seen.contains("event: text_done"), "{seen}");
    assert_eq!(seen.matches("event: text_done").count(), 1);
}
