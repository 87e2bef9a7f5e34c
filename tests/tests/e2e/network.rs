//! Hostile networks, over real sockets against the host's own connection handling: the
//! header-read, body-read and idle timeouts, the connection cap, malformed requests, a
//! request on a kept-alive connection during shutdown, the cross-site rules (JSON bodies,
//! `Origin`, CORS preflights) and the answer size cap with an upstream that never stops.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use futures::StreamExt as _;
use gateway_tests::raw::{request, RawConn};
use gateway_tests::{chunk, profile_on, serve, HostSpec, TestHost, DEADLINE};
use serde_json::{json, Value};

/// Timeouts short enough for tests (each a deadline the host enforces, not a test delay).
fn fast_timeouts() -> Value {
    json!({"server": {
        "header_read_timeout_ms": 300,
        "body_read_timeout_ms": 300,
        "idle_timeout_ms": 300,
    }})
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed_at_the_header_deadline() {
    let host = TestHost::with_config(fast_timeouts()).await;
    let mut silent = RawConn::connect(&host.url).await;
    assert!(silent.closed().await.is_empty(), "closed without an answer");
}

#[tokio::test]
async fn dribbled_headers_do_not_extend_the_header_deadline() {
    let host = TestHost::with_config(fast_timeouts()).await;
    let mut conn = RawConn::connect(&host.url).await;
    conn.send(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    // One header byte every 20 ms, forever: each byte is activity, none completes the head.
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let dribble = async {
        loop {
            ticks.tick().await;
            if conn.send(b"x").await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, dribble)
        .await
        .expect("the host hangs up on a head that never ends");
    assert!(conn.closed().await.is_empty());
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_the_connection_closes() {
    let host = TestHost::with_config(fast_timeouts()).await;
    let mut conn = RawConn::connect(&host.url).await;
    let head = "POST /v1/conversation HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"message\":";
    conn.send(head.as_bytes()).await.unwrap();
    let answer = conn.response().await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "request_timeout");
    assert_eq!(answer.header("connection"), Some("close"));
    conn.closed().await;
    assert!(host.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_kept_alive_connection_serves_again_then_closes_when_idle() {
    let host = TestHost::with_config(fast_timeouts()).await;
    let mut conn = RawConn::connect(&host.url).await;
    for _ in 0..2 {
        conn.send(HEALTHZ).await.unwrap();
        assert_eq!(conn.response().await.status, 200);
    }
    assert!(conn.closed().await.is_empty(), "closed idle, nothing sent");
}

#[tokio::test]
async fn long_answers_and_keep_alive_comments_outlive_every_timeout() {
    let mut config = fast_timeouts();
    config["keepalive_secs"] = json!(1);
    let host = TestHost::with_config(config).await;
    let (release, _closed) = host.upstream.hold(&["Slow"]);
    let mut stream = host
        .post_stream("/v1/conversation", json!({"message": "hi"}))
        .await;
    stream.until("Slow").await;
    // A keep-alive comment comes after 1 s of upstream silence: longer than every timeout.
    stream.until(": keep-alive\n\n").await;
    release.notify_one();
    let rest = stream.rest().await;
    assert!(rest.contains("event: text_done"), "{}", stream.seen);
}

#[tokio::test]
async fn at_the_cap_idle_sockets_make_room_and_live_streams_go_on() {
    let host = TestHost::with_config(json!({"server": {"max_connections": 4}})).await;
    let (release, _closed) = host.upstream.hold(&["Live"]);
    let mut live = host
        .post_stream("/v1/conversation", json!({"message": "hi"}))
        .await;
    live.until("Live").await;
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(RawConn::connect(&host.url).await);
    }
    let (status, body) = host.get("/healthz").await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    // The oldest silent sockets were closed to make room, unanswered.
    for conn in silent.iter_mut().take(8) {
        assert!(conn.closed().await.is_empty());
    }
    release.notify_one();
    let rest = live.rest().await;
    assert!(rest.contains("event: text_done"), "{}", live.seen);
}

#[tokio::test]
async fn with_every_connection_busy_healthz_still_answers_and_turns_get_503() {
    let host = TestHost::with_config(json!({"server": {"max_connections": 2}})).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (release, _closed) = host.upstream.hold(&["Busy"]);
        let mut stream = host
            .post_stream("/v1/conversation", json!({"message": "hi"}))
            .await;
        stream.until("Busy").await;
        held.push((release, stream));
    }
    let mut probe = RawConn::connect(&host.url).await;
    probe.send(HEALTHZ).await.unwrap();
    assert_eq!(probe.response().await.status, 200);
    let mut turn = RawConn::connect(&host.url).await;
    let body = json!({"message": "one more"}).to_string();
    let headers = [("content-type", "application/json")];
    turn.send(&request("POST", "/v1/conversation", &headers, &body))
        .await
        .unwrap();
    let refused = turn.response().await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "overloaded");
    assert_eq!(refused.header("connection"), Some("close"));
    for (release, mut stream) in held {
        release.notify_one();
        assert!(stream.rest().await.contains("event: text_done"));
    }
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let host = TestHost::start().await;
    let mut conn = RawConn::connect(&host.url).await;
    conn.send(b"NOT A REQUEST\r\n\r\n").await.unwrap();
    let answer = conn.response().await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.json()["error"]["code"], "malformed_request");

    let mut conn = RawConn::connect(&host.url).await;
    let huge = "a".repeat(70 * 1024);
    conn.send(&request("GET", "/healthz", &[("x-huge", &huge)], ""))
        .await
        .unwrap();
    let answer = conn.response().await;
    assert_eq!(answer.status, 431);
    assert_eq!(answer.json()["error"]["code"], "headers_too_large");
}

#[tokio::test]
async fn during_shutdown_a_kept_alive_connection_gets_503_shutting_down() {
    let host = TestHost::start().await;
    let (release, _closed) = host.upstream.hold(&["Draining"]);
    let mut in_flight = host
        .post_stream("/v1/conversation", json!({"message": "hi"}))
        .await;
    in_flight.until("Draining").await;
    let mut kept = RawConn::connect(&host.url).await;
    kept.send(HEALTHZ).await.unwrap();
    assert_eq!(kept.response().await.status, 200);

    host.state.shutdown().begin();
    let body = json!({"message": "late"}).to_string();
    let headers = [("content-type", "application/json")];
    kept.send(&request("POST", "/v1/conversation", &headers, &body))
        .await
        .unwrap();
    let refused = kept.response().await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "shutting_down");
    assert_eq!(refused.header("connection"), Some("close"));
    kept.closed().await;
    release.notify_one();
    assert!(in_flight.rest().await.contains("event: text_done"));
}

/// POST `body` to `path` with extra `headers`; returns status, JSON body and response headers.
async fn post_with(
    host: &TestHost,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = host
        .client
        .post(format!("{}{path}", host.url))
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_default(),
        headers,
    )
}

#[tokio::test]
async fn turns_must_be_json_and_foreign_origins_are_refused() {
    let host = TestHost::start().await;
    let turn = json!({"message": "spend the key"}).to_string();
    let json_type = ("content-type", "application/json");
    // What any web page can send without a preflight.
    let (status, body, _) = post_with(
        &host,
        "/v1/conversation",
        &[("content-type", "text/plain")],
        &turn,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (415, &json!("unsupported_media_type"))
    );
    let (status, body, _) = post_with(&host, "/v1/chat/completions", &[], &turn).await;
    assert_eq!(status, 415);
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let interrupt = "/v1/sessions/s1/interrupt";
    let form = ("content-type", "application/x-www-form-urlencoded");
    assert_eq!(post_with(&host, interrupt, &[form], "a=b").await.0, 415);

    let evil = ("origin", "http://evil.example");
    let (status, body, headers) =
        post_with(&host, "/v1/conversation", &[json_type, evil], &turn).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("origin_not_allowed"))
    );
    assert!(headers.get("access-control-allow-origin").is_none());
    let preflight = host
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/conversation", host.url),
        )
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 403);
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let delete = host
        .client
        .delete(format!("{}/v1/sessions/s1", host.url))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 403);
    assert!(
        host.upstream.requests().is_empty(),
        "no turn reached the upstream"
    );

    // The host's own page (the console at `/`): Origin equals the Host it was sent to.
    let own = ("origin", host.url.as_str());
    let (status, _, _) = post_with(&host, "/v1/conversation", &[json_type, own], &turn).await;
    assert_eq!(status, 200);
    assert_eq!(host.upstream.requests().len(), 1);
}

#[tokio::test]
async fn configured_origins_get_preflights_and_cors_headers_before_auth() {
    let app = "http://app.example:3000";
    let host = TestHost::with_config(json!({
        "cors": {"allowed_origins": [app]},
        "auth": {"tokens": ["tok-cors-1"]},
    }))
    .await;
    let preflight = host
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/conversation", host.url),
        )
        .header("origin", app)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204, "no token needed for a preflight");
    let allowed = |name: &str| {
        preflight.headers()[name]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
    };
    assert_eq!(allowed("access-control-allow-origin"), app);
    assert!(allowed("access-control-allow-methods").contains("post"));
    let headers = allowed("access-control-allow-headers");
    assert!(headers.contains("authorization") && headers.contains("content-type"));

    let turn = json!({"message": "hi"}).to_string();
    let call = [
        ("content-type", "application/json"),
        ("origin", app),
        ("authorization", "Bearer tok-cors-1"),
    ];
    let (status, _, headers) = post_with(&host, "/v1/conversation", &call, &turn).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], app);
    let other = [
        ("content-type", "application/json"),
        ("origin", "http://app.example:3001"),
        ("authorization", "Bearer tok-cors-1"),
    ];
    assert_eq!(
        post_with(&host, "/v1/conversation", &other, &turn).await.0,
        403
    );
}

/// An upstream that streams 1 KB pieces of answer for ever; `dropped` is set when the host
/// hangs up. Returns its base URL.
async fn endless_upstream(dropped: Arc<AtomicBool>) -> String {
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let guard = OnDrop(dropped.clone());
            let piece = chunk(json!({"content": "la ".repeat(341)}), None);
            let body = futures::stream::repeat(piece).map(move |p| {
                let _ = &guard;
                Ok::<_, Infallible>(p)
            });
            async move {
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
            }
        }),
    );
    format!("http://{}/v1", serve(router).await)
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_cap_and_nothing_is_stored() {
    let dropped = Arc::new(AtomicBool::new(false));
    let base_url = endless_upstream(dropped.clone()).await;
    let host = TestHost::with(
        HostSpec {
            config: json!({
                "limits": {"max_answer_chars": 50_000},
                "gateways": {"endless": {
                    "kind": "openai-compat", "base_url": base_url, "api_key_env": "ENDLESS_KEY",
                }},
            }),
            ..HostSpec::default()
        }
        .with_env("ENDLESS_KEY", "sk-endless")
        .with_profile(profile_on("endless", "endless", &[])),
    )
    .await;
    let answer = host
        .sse(json!({"profile": "endless", "message": "talk", "session_key": "long-1"}))
        .await;
    assert_eq!(answer.types().last().map(String::as_str), Some("error"));
    let error = answer.last()["error"].as_str().unwrap();
    assert!(error.contains("max_answer_chars"), "{error}");
    assert!(answer.text().chars().count() <= 50_000);
    assert!(host
        .state
        .store()
        .history("long-1", 10)
        .await
        .unwrap()
        .is_empty());
    gateway_tests::wait_for(|| dropped.load(Ordering::SeqCst)).await;

    // The OpenAI facade ends the same answer with an OpenAI-style error, streamed or not.
    let mut chat = json!({"model": "endless", "messages": [{"role": "user", "content": "talk"}]});
    chat["stream"] = json!(true);
    let mut stream = host.post_stream("/v1/chat/completions", chat.clone()).await;
    let text = stream.rest().await;
    let last = text.lines().rfind(|l| l.starts_with("data: {")).unwrap();
    let error: Value = serde_json::from_str(&last["data: ".len()..]).unwrap();
    assert_eq!(error["error"]["type"], "server_error", "{last}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_answer_chars"));
    chat["stream"] = json!(false);
    let (status, body) = host.post("/v1/chat/completions", Some(chat)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_answer_chars"));
}

#[tokio::test]
async fn one_serving_thread_streams_turns_on_many_connections_at_once() {
    let host = TestHost::with_config(json!({"server": {"threads": 1}})).await;
    let held: Vec<_> = (0..4).map(|_| host.upstream.hold(&["Held"])).collect();
    let mut streams = Vec::new();
    for _ in &held {
        let mut stream = host
            .post_stream("/v1/conversation", json!({"message": "hi"}))
            .await;
        stream.until("Held").await;
        streams.push(stream);
    }
    for (release, _) in &held {
        release.notify_one();
    }
    for mut stream in streams {
        assert!(stream.rest().await.contains("event: text_done"));
    }
}

#[tokio::test]
async fn dropping_serve_closes_the_connections_of_its_threads() {
    let host = TestHost::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(gateway_host::serve(listener, host.state.clone()));
    let mut kept = RawConn::connect(&url).await;
    kept.send(HEALTHZ).await.unwrap();
    assert_eq!(kept.response().await.status, 200);

    served.abort();
    assert!(
        kept.closed().await.is_empty(),
        "closed without another byte"
    );
}
