use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gateway_tests::{wait_for, HostSpec, Reply, TestHost};
use serde_json::json;
use tokio::sync::{oneshot, Notify};

#[tokio::test]
async fn client_disconnect_cancels_the_upstream() {
    let host = TestHost::start().await;
    let (closed_tx, closed_rx) = oneshot::channel();
    let release = Arc::new(Notify::new());
    host.upstream.push(Reply::Hold {
        first: vec!["Partial".into()],
        release: release.clone(),
        closed: closed_tx,
    });
    let response = host
        .client
        .post(format!("{}/v1/conversation", host.url))
        .json(&json!({"message": "hi", "session_key": "gone"}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("Partial") {
        let chunk = body.next().await.expect("stream open").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body); // the client goes away mid-answer
    tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the upstream connection was closed promptly")
        .expect("closed signal");
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
    let (closed_tx, _closed_rx) = oneshot::channel();
    let release = Arc::new(Notify::new());
    host.upstream.push(Reply::Hold {
        first: vec!["Wait".into()],
        release: release.clone(),
        closed: closed_tx,
    });
    let response = host
        .client
        .post(format!("{}/v1/conversation", host.url))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let read = async {
        while !seen.contains(": keep-alive\n\n") {
            let chunk = body.next().await.expect("stream open").unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a keep-alive comment arrives");
    release.notify_one();
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(seen.contains("event: text_done"), "{seen}");
    assert_eq!(seen.matches("event: text_done").count(), 1);
}
