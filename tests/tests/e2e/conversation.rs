use gateway_tests::{Answer, Reply, TestHost, TEST_KEY};
use serde_json::json;

fn assert_well_formed(answer: &Answer, text: &str) {
    let types = answer.types();
    assert_eq!(
        types.first().map(String::as_str),
        Some("handshake"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("text_done"),
        "{types:?}"
    );
    let finals = types
        .iter()
        .filter(|t| *t == "text_done" || *t == "error")
        .count();
    assert_eq!(finals, 1, "{types:?}");
    assert!(
        types[1..types.len() - 1].iter().all(|t| t == "delta"),
        "{types:?}"
    );
    assert_eq!(answer.events[0]["gateway"], "openai-compat");
    assert!(answer.events[0]["ms"].is_u64());
    assert_eq!(answer.text(), text);
    let done = answer.last();
    assert_eq!(done["response"], text);
    assert!(done["timing"]["ttft_ms"].is_u64(), "{done}");
    assert!(done["timing"]["total_ms"].as_u64() >= done["timing"]["ttft_ms"].as_u64());
}

#[tokio::test]
async fn sse_events_in_order_with_gateway_and_timing() {
    let host = TestHost::start().await;
    host.upstream.push(Reply::tokens(&["Hi", " you", "!"]));
    let answer = host.sse(json!({"message": "hello"})).await;
    assert_eq!(answer.status, 200);
    assert!(answer.content_type.starts_with("text/event-stream"));
    assert_well_formed(&answer, "Hi you!");
    assert_eq!(answer.names, answer.types(), "event: names match the types");
    // Deltas serialise exactly per gateway-core.
    assert!(
        answer
            .body
            .contains(r#"data: {"type":"delta","text":"Hi"}"#),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("event: delta\ndata: "));
}

#[tokio::test]
async fn ndjson_events_in_order() {
    let host = TestHost::start().await;
    host.upstream.push(Reply::tokens(&["One", " two"]));
    let answer = host
        .ndjson(json!({"message": "hello", "profile": "default"}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, "application/x-ndjson");
    assert_well_formed(&answer, "One two");
    assert!(answer.body.lines().all(|l| l.starts_with('{')));
}

#[tokio::test]
async fn profile_overrides_reach_the_upstream() {
    let mut p = gateway_tests::profile("tuned");
    p["llm"] =
        json!({"model": "special-model", "parameters": {"max_tokens": 77, "temperature": 0.25}});
    let host = TestHost::with(gateway_tests::HostSpec::default().with_profile(p)).await;
    let answer = host.sse(json!({"message": "hi", "profile": "tuned"})).await;
    assert_eq!(answer.last()["type"], "text_done");
    let body = host.upstream.last_request();
    assert_eq!(body["model"], "special-model");
    assert_eq!(body["max_tokens"], 77);
    assert!(
        (body["temperature"].as_f64().unwrap() - 0.25).abs() < 1e-6,
        "{body}"
    );
    assert_eq!(body["stream"], true);
    // The API key reached the upstream as a bearer token, and only there.
    let auth = host.upstream.request_headers()[0]["authorization"].clone();
    assert_eq!(auth.to_str().unwrap(), format!("Bearer {TEST_KEY}"));
}

#[tokio::test]
async fn upstream_http_error_ends_with_one_error_event_and_is_counted() {
    let host = TestHost::start().await;
    host.upstream.push(Reply::Status(
        429,
        r#"{"error":{"message":"Rate limit reached","type":"rate_limit"}}"#.into(),
    ));
    let answer = host.sse(json!({"message": "hi"})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.types(), ["error"]);
    assert!(answer.last()["error"].as_str().unwrap().contains("429"));
    let (_, metrics) = host.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics
            .contains(r#"gateway_host_errors_total{gateway="openai-compat",cause="http_429"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn gateways_profiles_health_and_metrics_endpoints() {
    let host = TestHost::start().await;
    let (status, gateways) = host.get("/v1/gateways").await;
    assert_eq!(status, 200);
    let text = gateways.to_string();
    assert!(!text.contains(TEST_KEY), "secret leaked: {text}");
    assert!(
        !text.contains(&host.upstream.base_url()),
        "settings values leaked: {text}"
    );
    let g = gateways["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "openai-compat")
        .expect("openai-compat listed");
    assert_eq!(g["kind"], "openai-compat");
    assert_eq!(g["configured"], true);
    assert_eq!(g["healthy"], true);
    assert!(g["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("streaming")));

    let (status, profiles) = host.get("/v1/profiles").await;
    assert_eq!(status, 200);
    assert_eq!(profiles["profiles"][0]["id"], "default");
    assert_eq!(profiles["profiles"][0]["gateway_id"], "openai-compat");
    assert_eq!(profiles["profiles"][0]["file"], "default.json");
    let (status, raw) = host.get("/v1/profiles/default").await;
    assert_eq!(status, 200);
    assert_eq!(
        raw["voice"]["tts_provider"], "groq",
        "unknown fields kept: {raw}"
    );

    let (status, health) = host.get("/healthz").await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));

    host.sse(json!({"message": "hi"})).await;
    let (status, metrics) = host.get("/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(
            r#"gateway_host_requests_total{profile="default",gateway="openai-compat"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gateway_host_ttft_seconds_count{gateway="openai-compat"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_host_in_flight_streams 0"),
        "{metrics}"
    );
}
