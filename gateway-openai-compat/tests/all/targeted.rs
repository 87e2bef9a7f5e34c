//! Targeted behaviour: connection failures, timeouts, request contents, configuration,
//! secrets, cancellation and registration.

use std::time::Duration;

use futures::StreamExt;
use gateway_core::{
    ChatMessage, Env, Event, Gateway, GatewayError, InstanceConfig, Registry, Turn, Usage,
};
use gateway_openai_compat::{ApiKey, OpenAiCompat, OpenAiCompatConfig, KIND_ID};
use serde_json::json;
use tokio::sync::oneshot;

use crate::server::{
    self, assert_no_secret, chunk, config, delta_line, end, gateway, head_chunked, hello, respond,
    run, serve, wait_closed, FINISH, SECRET,
};

/// A server that answers every request with one fixed SSE body.
async fn sse_server(body: &'static str) -> server::Server {
    serve(move |_, mut socket| async move {
        let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
        let _ = chunk(&mut socket, body.as_bytes()).await;
        let _ = server::end(&mut socket).await;
    })
    .await
}

const HELLO_BODY: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n",
    "data: [DONE]\n\n",
);

/// A server that answers with a `text/event-stream` head and `pieces` (one body chunk each), or
/// with nothing at all for `None`, then holds the connection open, silent, until the returned
/// sender is dropped.
async fn stalling_server(pieces: Option<Vec<Vec<u8>>>) -> (server::Server, oneshot::Sender<()>) {
    let (keep_tx, keep_rx) = oneshot::channel::<()>();
    let keep_rx = std::sync::Mutex::new(Some(keep_rx));
    let server = serve(move |_, mut socket| {
        let keep = keep_rx.lock().expect("lock").take();
        let pieces = pieces.clone();
        async move {
            if let Some(pieces) = pieces {
                let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
                for piece in pieces {
                    let _ = chunk(&mut socket, &piece).await;
                }
            }
            if let Some(keep) = keep {
                let _ = keep.await;
            }
        }
    })
    .await;
    (server, keep_tx)
}

fn dead_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

#[tokio::test]
async fn connection_refused() {
    let addr = dead_port();
    let gw = gateway(config(format!("http://{addr}/v1")));
    let outcome = run(&gw, hello()).await;
    let error = outcome.error.expect("an error");
    assert_no_secret(&error);
    match &error {
        GatewayError::Connect { host, reason } => {
            assert_eq!(host, &addr.to_string());
            assert_eq!(reason, "connection refused");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(error.is_transient());
}

#[tokio::test]
async fn dns_failure() {
    // `.invalid` never resolves (RFC 2606); the sandbox resolver answers NXDOMAIN at once.
    // The connect timeout bounds the lookup should a resolver hang.
    let gw = gateway(OpenAiCompatConfig {
        connect_timeout: Duration::from_secs(5),
        ..config("http://no-such-host.invalid/v1".into())
    });
    let error = run(&gw, hello()).await.error.expect("an error");
    assert_no_secret(&error);
    match &error {
        GatewayError::Connect { host, reason } => {
            assert_eq!(host, "no-such-host.invalid:80");
            assert!(reason.to_lowercase().contains("dns"), "{reason}");
        }
        GatewayError::ConnectTimeout { .. } => {
            eprintln!("note: the resolver hung; bounded by the connect timeout")
        }
        other => panic!("expected Connect (DNS), got {other:?}"),
    }
}

/// A loopback listener whose accept queue is full, so a new SYN goes unanswered. `None` where
/// the kernel still completes connections (then the test is skipped with a note).
async fn full_backlog() -> Option<(tokio::net::TcpListener, Vec<std::net::TcpStream>)> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind("127.0.0.1:0".parse().ok()?).ok()?;
    let listener = socket.listen(1).ok()?;
    let addr = listener.local_addr().ok()?;
    let mut held = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => held.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Some((listener, held)),
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test]
async fn connect_timeout() {
    let Some((listener, _held)) = full_backlog().await else {
        eprintln!("note: connect timeout not reproducible on this loopback; skipped");
        return;
    };
    let addr = listener.local_addr().expect("addr");
    let gw = gateway(OpenAiCompatConfig {
        connect_timeout: Duration::from_millis(300),
        first_token_timeout: Duration::from_secs(20),
        ..config(format!("http://{addr}/v1"))
    });
    let error = run(&gw, hello()).await.error.expect("an error");
    assert_no_secret(&error);
    assert_eq!(
        error,
        GatewayError::ConnectTimeout {
            host: addr.to_string(),
            after: Duration::from_millis(300)
        }
    );
}

#[tokio::test]
async fn first_token_timeout_waiting_for_headers() {
    // Hold the connection open, silent, until the test ends.
    let (server, keep_tx) = stalling_server(None).await;
    let gw = gateway(OpenAiCompatConfig {
        first_token_timeout: Duration::from_millis(300),
        ..config(server.base_url("/v1"))
    });
    let outcome = run(&gw, hello()).await;
    assert_eq!(
        outcome.error,
        Some(GatewayError::FirstTokenTimeout(Duration::from_millis(300)))
    );
    drop(keep_tx);
}

#[tokio::test]
async fn first_token_timeout_after_headers_and_keepalives() {
    // Keep-alives and a role-only chunk are not a first token.
    let (server, keep_tx) = stalling_server(Some(vec![
        b": OPENROUTER PROCESSING\n\n".to_vec(),
        b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n".to_vec(),
    ]))
    .await;
    let gw = gateway(OpenAiCompatConfig {
        first_token_timeout: Duration::from_millis(300),
        ..config(server.base_url("/v1"))
    });
    let outcome = run(&gw, hello()).await;
    assert!(outcome.events.is_empty(), "{:?}", outcome.events);
    assert_eq!(
        outcome.error,
        Some(GatewayError::FirstTokenTimeout(Duration::from_millis(300)))
    );
    drop(keep_tx);
}

#[tokio::test]
async fn idle_timeout_when_the_stream_stalls() {
    let (server, keep_tx) = stalling_server(Some(vec![delta_line("Hello").into_bytes()])).await;
    let gw = gateway(OpenAiCompatConfig {
        idle_timeout: Duration::from_millis(300),
        ..config(server.base_url("/v1"))
    });
    let outcome = run(&gw, hello()).await;
    assert_eq!(outcome.text(), "Hello");
    assert!(matches!(outcome.events[0], Event::Handshake { .. }));
    assert!(outcome.done().is_none());
    assert_eq!(
        outcome.error,
        Some(GatewayError::IdleTimeout(Duration::from_millis(300)))
    );
    drop(keep_tx);
}

#[tokio::test]
async fn a_slow_answer_with_short_gaps_is_not_cut_by_the_idle_timeout() {
    // Six tokens 120 ms apart: 720 ms in all, more than twice the 300 ms idle timeout, but no
    // gap reaches it. The idle deadline runs from the last read, not from the first token.
    let server = serve(|_, mut socket| async move {
        let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
        for word in ["One ", "two ", "three ", "four ", "five ", "six."] {
            let _ = chunk(&mut socket, delta_line(word).as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        let _ = chunk(&mut socket, FINISH.as_bytes()).await;
        let _ = chunk(&mut socket, b"data: [DONE]\n\n").await;
        let _ = end(&mut socket).await;
    })
    .await;
    let gw = gateway(OpenAiCompatConfig {
        idle_timeout: Duration::from_millis(300),
        ..config(server.base_url("/v1"))
    });
    let outcome = run(&gw, hello()).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.response(), Some("One two three four five six."));
}

#[tokio::test]
async fn trailing_slash_and_request_contents() {
    let mut server = sse_server(HELLO_BODY).await;
    let mut cfg = config(server.base_url("/api/v1/"));
    cfg.max_tokens = 11;
    cfg.headers
        .insert("HTTP-Referer".into(), "https://example.test".into());
    cfg.headers.insert("X-Title".into(), "Voice".into());
    let gw = gateway(cfg);

    let turn = Turn {
        model: Some("override-model".into()),
        max_tokens: Some(77),
        temperature: Some(0.25),
        ..Turn::new(vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello!"),
            ChatMessage::user("How are you?"),
        ])
    };
    let outcome = run(&gw, turn).await;
    assert_eq!(outcome.response(), Some("Hi"));
    let request = server.requests.recv().await.expect("a request");
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(request.header("accept"), Some("text/event-stream"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("http-referer"), Some("https://example.test"));
    assert_eq!(request.header("x-title"), Some("Voice"));
    assert_eq!(
        request.json(),
        json!({
            "model": "override-model",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "How are you?"},
            ],
            "stream": true,
            "max_tokens": 77,
            "temperature": 0.25,
            "stream_options": {"include_usage": true},
        })
    );

    // Without overrides: the instance's model and max_tokens, and no temperature at all.
    let outcome = run(&gw, hello()).await;
    assert_eq!(outcome.response(), Some("Hi"));
    let body = server.requests.recv().await.expect("a request").json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["max_tokens"], 11);
    assert!(body.get("temperature").is_none(), "{body}");
}

#[tokio::test]
async fn text_done_carries_usage_and_handshake_comes_first() {
    let server = sse_server(HELLO_BODY).await;
    let gw = gateway(config(server.base_url("/v1")));
    let outcome = run(&gw, hello()).await;
    assert!(matches!(
        outcome.events[0],
        Event::Handshake { gateway: None, .. }
    ));
    assert_eq!(outcome.events[1], Event::delta("Hi"));
    match &outcome.events[2] {
        Event::TextDone {
            response,
            usage,
            finish_reason,
            ..
        } => {
            assert_eq!(response, "Hi");
            assert_eq!(finish_reason.as_deref(), Some("stop"));
            assert_eq!(
                *usage,
                Some(Usage {
                    prompt_tokens: 5,
                    completion_tokens: 1,
                    total_tokens: 6
                })
            );
        }
        other => panic!("expected text_done, got {other:?}"),
    }
    assert_eq!(outcome.events.len(), 3);
}

#[tokio::test]
async fn http_errors_carry_retry_after_and_the_provider_message() {
    let server = serve(|_, mut socket| async move {
        let _ = respond(
            &mut socket,
            429,
            "application/json",
            &[("retry-after", "7")],
            br#"{"error":{"message":"Rate limit reached","type":"tokens"}}"#,
        )
        .await;
    })
    .await;
    let gw = gateway(config(server.base_url("/v1")));
    let error = run(&gw, hello()).await.error.expect("an error");
    assert_eq!(
        error,
        GatewayError::Http {
            status: 429,
            message: "Rate limit reached".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
}

/// Send `message` back as an upstream reports an error: a 401 with an OpenAI error body
/// (`http`), or an error object inside a 200 event stream.
async fn echo_as_error(socket: &mut tokio::net::TcpStream, http: bool, message: &str) {
    let error = json!({"error": {"message": message}});
    if http {
        let body = error.to_string();
        let _ = respond(socket, 401, "application/json", &[], body.as_bytes()).await;
        return;
    }
    let _ = head_chunked(socket, 200, "text/event-stream", &[]).await;
    let _ = chunk(socket, format!("data: {error}\n\n").as_bytes()).await;
    let _ = server::end(socket).await;
}

/// A server that echoes the key back in every kind of error must not get it into one.
#[tokio::test]
async fn the_key_never_appears_in_errors_or_debug_output() {
    let server = serve(|request, mut socket| async move {
        let echoed = request.header("authorization").unwrap_or("").to_string();
        match request.path.as_str() {
            "/http/chat/completions" => {
                let message = format!("Incorrect API key provided: {echoed}");
                echo_as_error(&mut socket, true, &message).await;
            }
            "/plain/chat/completions" => {
                let _ = respond(&mut socket, 403, "text/plain", &[], echoed.as_bytes()).await;
            }
            "/stream/chat/completions" => {
                echo_as_error(&mut socket, false, &format!("bad key {echoed}")).await;
            }
            _ => {
                let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
                let line = format!("data: {{\"oops {echoed}\n\n");
                let _ = chunk(&mut socket, line.as_bytes()).await;
                let _ = server::end(&mut socket).await;
            }
        }
    })
    .await;
    let mut errors = Vec::new();
    for path in ["/http", "/plain", "/stream", "/malformed"] {
        let gw = gateway(config(server.base_url(path)));
        assert!(!format!("{gw:?} {:?}", gw.config()).contains(SECRET));
        errors.push(run(&gw, hello()).await.error.expect("an error"));
        let health = gw.health().await;
        assert!(!format!("{health:?}").contains(SECRET));
    }
    let gw = gateway(config(format!("http://{}/v1", dead_port())));
    errors.push(run(&gw, hello()).await.error.expect("an error"));
    for error in &errors {
        assert_no_secret(error);
    }
    assert!(matches!(errors[0], GatewayError::Http { status: 401, .. }));
    assert!(errors[0]
        .to_string()
        .contains("Incorrect API key provided: Bearer ***"));
    assert!(matches!(errors[2], GatewayError::Provider(_)));
    assert!(matches!(errors[3], GatewayError::Malformed(_)));
}

/// Configured headers carry secrets too (Azure's `api-key`, a proxy's own auth header): an
/// upstream that echoes every request header must get none of them into an error.
#[tokio::test]
async fn configured_header_values_never_appear_in_errors() {
    const HEADER_SECRET: &str = "HdrSecret-4410";
    const PROXY_TOKEN: &str = "proxy-tok-8831";
    let server = serve(|request, mut socket| async move {
        let echoed = format!(
            "api-key={} auth={} bare={}",
            request.header("api-key").unwrap_or(""),
            request.header("x-proxy-auth").unwrap_or(""),
            request
                .header("x-proxy-auth")
                .unwrap_or("")
                .trim_start_matches("Bearer "),
        );
        let http = request.path.starts_with("/http");
        echo_as_error(&mut socket, http, &format!("rejected: {echoed}")).await;
    })
    .await;
    for path in ["/http", "/stream"] {
        let mut config = config(server.base_url(path));
        config
            .headers
            .insert("api-key".into(), HEADER_SECRET.into());
        config
            .headers
            .insert("X-Proxy-Auth".into(), format!("Bearer {PROXY_TOKEN}"));
        let error = run(&gateway(config), hello())
            .await
            .error
            .expect("an error");
        let shown = format!("{error} {error:?}");
        assert!(shown.contains("api-key=*** auth=*** bare=***"), "{shown}");
        assert!(
            !shown.contains(HEADER_SECRET) && !shown.contains(PROXY_TOKEN),
            "{shown}"
        );
    }
}

fn builtin_instance(settings: serde_json::Value, env: &[(&str, &str)]) -> InstanceConfig {
    InstanceConfig {
        id: "openai-compat".into(),
        settings,
        env_prefix: Some("OPENAI_COMPAT_".into()),
        env: Env::from_pairs(env.iter().copied()),
        ..InstanceConfig::default()
    }
}

#[tokio::test]
async fn missing_key_is_not_configured_and_sends_nothing() {
    let mut server = sse_server(HELLO_BODY).await;
    let gw = gateway_openai_compat::build(&builtin_instance(
        json!({"base_url": server.base_url("/v1")}),
        &[],
    ))
    .expect("builds without a key");
    let expected = GatewayError::NotConfigured {
        gateway: "openai-compat".into(),
        reason: "OPENAI_COMPAT_API_KEY is not set".into(),
    };
    assert_eq!(gw.is_configured(), Err(expected.clone()));
    match gw.stream(hello()).await {
        Err(error) => assert_eq!(error, expected),
        Ok(_) => panic!("an unconfigured gateway streamed"),
    }
    let health = gw.health().await;
    assert!(!health.healthy);
    assert!(health
        .detail
        .unwrap_or_default()
        .contains("OPENAI_COMPAT_API_KEY is not set"));
    assert_eq!(server.connection_count(), 0);
    assert!(server.requests.try_recv().is_err());
}

#[tokio::test]
async fn environment_beats_the_settings_table() {
    let mut server = sse_server(HELLO_BODY).await;
    let dead = format!("http://{}/v1", dead_port());
    let gw = gateway_openai_compat::build(&builtin_instance(
        json!({"base_url": dead, "model": "file-model", "api_key": "literal-key"}),
        &[
            ("OPENAI_COMPAT_BASE_URL", &server.base_url("/env/v1")),
            ("OPENAI_COMPAT_MODEL", "env-model"),
            ("OPENAI_COMPAT_API_KEY", SECRET),
            ("OPENAI_COMPAT_MAX_TOKENS", "33"),
        ],
    ))
    .expect("builds");
    assert_eq!(gw.default_model(), Some("env-model"));
    assert_eq!(gw.kind(), KIND_ID);
    assert_eq!(gw.capabilities(), ["streaming", "sessions", "reset"]);
    let outcome = run(gw.as_ref(), hello()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let request = server.requests.recv().await.expect("a request");
    assert_eq!(request.path, "/env/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(request.json()["model"], "env-model");
    assert_eq!(request.json()["max_tokens"], 33);
}

#[tokio::test]
async fn named_instance_reads_its_key_from_api_key_env() {
    let gw = gateway_openai_compat::build(&InstanceConfig {
        id: "groq".into(),
        settings: json!({"base_url": "https://api.groq.com/openai/v1", "api_key_env": "GROQ_API_KEY"}),
        env_prefix: None,
        env: Env::from_pairs([("OPENAI_COMPAT_API_KEY", "not-this-one")]),
        ..InstanceConfig::default()
    })
    .expect("builds");
    assert_eq!(
        gw.is_configured(),
        Err(GatewayError::NotConfigured {
            gateway: "groq".into(),
            reason: "GROQ_API_KEY is not set".into()
        })
    );
    let gw = gateway_openai_compat::build(&InstanceConfig {
        id: "groq".into(),
        settings: json!({"api_key_env": "GROQ_API_KEY", "headers": {"X-Title": "t"}}),
        env_prefix: None,
        env: Env::from_pairs([("GROQ_API_KEY", "gsk")]),
        ..InstanceConfig::default()
    })
    .expect("builds");
    assert_eq!(gw.is_configured(), Ok(()));
}

#[tokio::test]
async fn auth_none_is_configured_without_a_key_and_sends_no_authorization() {
    let mut server = sse_server(HELLO_BODY).await;
    let gw = gateway_openai_compat::build(&InstanceConfig {
        id: "ollama".into(),
        settings: json!({"base_url": server.base_url("/v1"), "auth": "none", "model": "llama3.2"}),
        env_prefix: None,
        env: Env::from_pairs([("OPENAI_COMPAT_API_KEY", SECRET)]),
        ..InstanceConfig::default()
    })
    .expect("builds");
    assert_eq!(gw.is_configured(), Ok(()));
    let outcome = run(gw.as_ref(), hello()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let request = server.requests.recv().await.expect("a request");
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.json()["model"], "llama3.2");
}

#[tokio::test]
async fn build_errors_name_the_cause() {
    let cases = [
        (json!({"bogus": 1}), vec![], "bogus"),
        (json!({"base_url": "nope"}), vec![], "base_url"),
        (
            json!({}),
            vec![("OPENAI_COMPAT_BASE_URL", "::")],
            "OPENAI_COMPAT_BASE_URL",
        ),
        // The host takes its timeout keys out of the table and hands them over typed.
        (json!({"idle_timeout_ms": 5}), vec![], "idle_timeout_ms"),
        (
            json!({}),
            vec![("OPENAI_COMPAT_TEMPERATURE", "warm")],
            "OPENAI_COMPAT_TEMPERATURE",
        ),
        (
            json!({"headers": {"bad header": "x"}}),
            vec![],
            "bad header",
        ),
    ];
    for (settings, env, needle) in cases {
        let error = gateway_openai_compat::build(&builtin_instance(settings.clone(), &env))
            .err()
            .unwrap_or_else(|| panic!("{settings} {env:?} should fail"));
        assert!(
            matches!(error, GatewayError::InvalidConfig { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains(needle), "{error} lacks {needle}");
    }
}

/// A server that sends one delta, reports it, then reports when the client hangs up.
async fn hang_up_server() -> (
    server::Server,
    tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let server = serve(move |_, mut socket| {
        let tx = tx.clone();
        async move {
            let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
            let _ = chunk(&mut socket, delta_line("Hello").as_bytes()).await;
            let _ = tx.send("sent");
            wait_closed(&mut socket).await;
            let _ = tx.send("closed");
        }
    })
    .await;
    (server, rx)
}

async fn expect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>, what: &str) {
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("server never reported '{what}'"));
    assert_eq!(got, Some(what));
}

#[tokio::test]
async fn cancelling_the_turn_closes_the_upstream_connection() {
    let (server, mut rx) = hang_up_server().await;
    let gw = gateway(config(server.base_url("/v1")));
    let turn = hello();
    let cancel = turn.cancel.clone();
    let mut stream = gw.stream(turn).await.expect("stream");
    assert!(matches!(
        stream.next().await,
        Some(Ok(Event::Handshake { .. }))
    ));
    assert_eq!(stream.next().await, Some(Ok(Event::delta("Hello"))));
    expect(&mut rx, "sent").await;
    cancel.cancel();
    assert_eq!(stream.next().await, Some(Err(GatewayError::Cancelled)));
    assert_eq!(stream.next().await, None);
    expect(&mut rx, "closed").await;
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_connection() {
    let (server, mut rx) = hang_up_server().await;
    let gw = gateway(config(server.base_url("/v1")));
    let mut stream = gw.stream(hello()).await.expect("stream");
    assert!(matches!(
        stream.next().await,
        Some(Ok(Event::Handshake { .. }))
    ));
    expect(&mut rx, "sent").await;
    drop(stream);
    expect(&mut rx, "closed").await;
}

#[tokio::test]
async fn cancelling_before_the_response_head_returns_cancelled() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = serve(move |_, mut socket| {
        let tx = tx.clone();
        async move {
            let _ = tx.send("sent");
            wait_closed(&mut socket).await;
            let _ = tx.send("closed");
        }
    })
    .await;
    let gw = std::sync::Arc::new(gateway(config(server.base_url("/v1"))));
    let turn = hello();
    let cancel = turn.cancel.clone();
    let task = tokio::spawn({
        let gw = gw.clone();
        async move { gw.stream(turn).await.err() }
    });
    expect(&mut rx, "sent").await;
    cancel.cancel();
    assert_eq!(task.await.expect("join"), Some(GatewayError::Cancelled));
    expect(&mut rx, "closed").await;
}

#[tokio::test]
async fn health_probes_models() {
    let server = serve(|request, mut socket| async move {
        let status = if request.path == "/ok/models" && request.method == "GET" {
            200
        } else {
            401
        };
        let _ = respond(
            &mut socket,
            status,
            "application/json",
            &[],
            b"{\"data\":[]}",
        )
        .await;
    })
    .await;
    let up = gateway(config(server.base_url("/ok"))).health().await;
    assert!(up.healthy, "{up:?}");
    assert!(up.latency_ms.is_some());
    let down = gateway(config(server.base_url("/bad"))).health().await;
    assert!(!down.healthy);
    assert!(down.detail.unwrap_or_default().contains("401"));
    let dead = gateway(config(format!("http://{}/v1", dead_port())))
        .health()
        .await;
    assert!(dead
        .detail
        .unwrap_or_default()
        .contains("connection refused"));
}

#[test]
fn the_kind_is_registered() {
    let registry = Registry::from_inventory().expect("no duplicate kinds");
    let kind = registry.get(KIND_ID).expect("openai-compat is linked");
    assert_eq!(kind.id, "openai-compat");
    assert_eq!(kind.env_prefix(), "OPENAI_COMPAT_");
    let gw = (kind.build)(&builtin_instance(
        serde_json::Value::Null,
        &[("OPENAI_COMPAT_API_KEY", SECRET)],
    ))
    .expect("builds");
    assert_eq!(gw.id(), "openai-compat");
    assert_eq!(gw.default_model(), Some("gpt-4o-mini"));
    assert_eq!(gw.is_configured(), Ok(()));
}

#[test]
fn new_accepts_a_hand_made_config() {
    let gw = OpenAiCompat::new(
        "local",
        OpenAiCompatConfig {
            base_url: "http://localhost:11434/v1/".into(),
            api_key: Some(ApiKey::new("ollama")),
            ..Default::default()
        },
    )
    .expect("builds");
    assert_eq!(gw.chat_url(), "http://localhost:11434/v1/chat/completions");
}

#[tokio::test]
async fn many_concurrent_turns_share_one_instance() {
    let server = serve(|request, mut socket| async move {
        let body: serde_json::Value = request.json();
        let answer = body["messages"][0]["content"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
        let _ = chunk(&mut socket, delta_line(&answer).as_bytes()).await;
        let _ = chunk(&mut socket, FINISH.as_bytes()).await;
        let _ = server::end(&mut socket).await;
    })
    .await;
    let gw = gateway(config(server.base_url("/v1")));
    let turns = (0..64).map(|i| {
        let gw = &gw;
        async move {
            let outcome = run(gw, Turn::new(vec![ChatMessage::user(format!("n{i}"))])).await;
            (i, outcome)
        }
    });
    for (i, outcome) in futures::future::join_all(turns).await {
        assert_eq!(
            outcome.response(),
            Some(format!("n{i}").as_str()),
            "{outcome:?}"
        );
    }
}
