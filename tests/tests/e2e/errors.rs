use gateway_tests::{HostSpec, TestHost, TEST_KEY};
use serde_json::json;

async fn post_raw(host: &TestHost, body: impl Into<reqwest::Body>) -> (u16, serde_json::Value) {
    let r = host
        .client
        .post(format!("{}/v1/conversation", host.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "JSON error, got {ct}");
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn request_errors_are_json() {
    let host = TestHost::start().await;
    let cases = [
        (
            json!({"message": "hi", "profile": "nope"}),
            404,
            "unknown_profile",
        ),
        (
            json!({"message": "hi", "profile": "../etc/passwd"}),
            400,
            "bad_request",
        ),
        (
            json!({"message": "hi", "profile": "UPPER"}),
            400,
            "bad_request",
        ),
        (json!({"message": "   "}), 400, "bad_request"),
        (json!({"message": 42}), 422, "invalid_request"),
        (json!({"profile": "default"}), 422, "invalid_request"),
        (
            json!({"message": "hi", "session_key": "a/b"}),
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, err) = post_raw(&host, body.to_string()).await;
        assert_eq!(got, status, "{body} → {err}");
        assert_eq!(err["error"]["code"], code, "{body} → {err}");
        assert!(err["error"]["message"].is_string());
    }
    let (status, err) = post_raw(&host, "[\"hi\"]").await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(
        err["error"]["message"],
        "invalid request: the body must be a JSON object ({...}), not an array"
    );
    let (status, err) = post_raw(&host, "{\"message\": ").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "invalid_json");
    let (status, err) = post_raw(&host, vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        host.upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn oversize_body_is_413_json() {
    let host = TestHost::with_config(json!({"limits": {"max_body_bytes": 1024}})).await;
    let body = json!({"message": "x".repeat(5000)}).to_string();
    let (status, err) = post_raw(&host, body).await;
    assert_eq!(status, 413);
    assert_eq!(err["error"]["code"], "payload_too_large");
    // Too many characters within the body limit is a 400.
    let host = TestHost::with_config(json!({"limits": {"max_message_chars": 10}})).await;
    let (status, _) = post_raw(&host, json!({"message": "x".repeat(11)}).to_string()).await;
    assert_eq!(status, 400);
}

/// A body whose declared length is over the limit is refused before a byte of it is read:
/// no `100 Continue` for a client that asked, no wait for a body that could never be taken.
#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_at_once() {
    use gateway_tests::raw::RawConn;
    let host = TestHost::with_config(json!({"limits": {"max_body_bytes": 1024}})).await;
    for expect in [true, false] {
        let mut head = String::from(
            "POST /v1/conversation HTTP/1.1\r\nhost: 127.0.0.1\r\n\
             content-type: application/json\r\ncontent-length: 9999999\r\n",
        );
        if expect {
            head.push_str("expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        let mut conn = RawConn::connect(&host.url).await;
        conn.send(head.as_bytes()).await.unwrap();
        let response = conn.response().await;
        assert_eq!(response.status, 413, "expect {expect}: {response:?}");
        assert_eq!(response.json()["error"]["code"], "payload_too_large");
    }
    assert!(host.upstream.requests().is_empty());
}

#[tokio::test]
async fn unconfigured_gateway_is_503_naming_the_variable() {
    let host = TestHost::with(HostSpec {
        with_key: false,
        ..HostSpec::default()
    })
    .await;
    let (status, err) = post_raw(&host, json!({"message": "hi"}).to_string()).await;
    assert_eq!(status, 503);
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("OPENAI_COMPAT_API_KEY"), "{message}");
    let (_, gateways) = host.get("/v1/gateways").await;
    let g = &gateways["gateways"][0];
    assert_eq!(g["configured"], false);
    assert!(g["reason"]
        .as_str()
        .unwrap()
        .contains("OPENAI_COMPAT_API_KEY"));
    assert!(!gateways.to_string().contains(TEST_KEY));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let host = TestHost::start().await;
    let (status, body) = host.get("/v1/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = host.get("/v1/conversation").await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (status, body) = host.get("/v1/profiles/Bad%2F..").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = host.get("/v1/profiles/missing").await;
    assert_eq!(status, 404, "{body}");
}
