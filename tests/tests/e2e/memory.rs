use gateway_tests::{chat_of, pairs, profile, HostSpec, Reply, TestHost};
use serde_json::{json, Value};

#[tokio::test]
async fn history_is_sent_and_capped_at_max_messages() {
    let host = TestHost::with_config(json!({"memory": {"max_messages": 4}})).await;
    for i in 0..4 {
        host.upstream.push(Reply::Tokens(vec![format!("a{i}")]));
        let answer = host
            .sse(json!({"message": format!("q{i}"), "session_key": "s1"}))
            .await;
        assert_eq!(answer.last()["type"], "text_done");
    }
    let requests = host.upstream.requests();
    assert_eq!(chat_of(&requests[0]), [("user".into(), "q0".into())]);
    assert_eq!(chat_of(&requests[1]).len(), 3);
    let last = chat_of(&requests[3]);
    let expected = pairs(&[
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
        ("user", "q3"),
    ]);
    assert_eq!(last, expected);
    // Another session is independent; no session key means no memory.
    host.sse(json!({"message": "x", "session_key": "s2"})).await;
    assert_eq!(chat_of(&host.upstream.last_request()).len(), 1);
    host.sse(json!({"message": "y"})).await;
    host.sse(json!({"message": "z"})).await;
    assert_eq!(chat_of(&host.upstream.last_request()).len(), 1);
}

#[tokio::test]
async fn profile_history_limit_and_session_key_apply() {
    let mut p = profile("short");
    p["adapter_config"]["sessionKey"] = json!("short-1");
    p["context"]["max_history_messages"] = json!(2);
    let host = TestHost::with(HostSpec::default().with_profile(p)).await;
    for i in 0..3 {
        host.upstream.push(Reply::Tokens(vec![format!("a{i}")]));
        host.sse(json!({"message": format!("q{i}"), "profile": "short"}))
            .await;
    }
    let last = chat_of(&host.upstream.last_request());
    assert_eq!(
        last,
        pairs(&[("user", "q1"), ("assistant", "a1"), ("user", "q2")])
    );
    let stored = host.state.store().history("short-1", 100).await.unwrap();
    assert_eq!(stored.len(), 2, "kept at the profile's cap");
}

#[tokio::test]
async fn failed_turn_stores_nothing_and_empty_answer_stores_user_only() {
    let host = TestHost::start().await;
    host.upstream
        .push(Reply::Status(500, r#"{"error":{"message":"boom"}}"#.into()));
    let answer = host.sse(json!({"message": "q0", "session_key": "f"})).await;
    assert_eq!(answer.last()["type"], "error");
    assert!(host
        .state
        .store()
        .history("f", 100)
        .await
        .unwrap()
        .is_empty());

    host.upstream.push(Reply::Tokens(vec![]));
    let answer = host.sse(json!({"message": "q1", "session_key": "f"})).await;
    assert_eq!(answer.last()["type"], "text_done", "{:?}", answer.events);
    let stored = host.state.store().history("f", 100).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(&*stored[0].content, "q1");
}

#[tokio::test]
async fn delete_session_clears_it() {
    let host = TestHost::start().await;
    host.sse(json!({"message": "remember me", "session_key": "del-1"}))
        .await;
    let url = format!("{}/v1/sessions/del-1", host.url);
    let r = host.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = host.client.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_session");
    host.sse(json!({"message": "fresh", "session_key": "del-1"}))
        .await;
    assert_eq!(chat_of(&host.upstream.last_request()).len(), 1);
    let r = host
        .client
        .delete(format!("{}/v1/sessions/bad%20key", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
