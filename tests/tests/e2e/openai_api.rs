//! The OpenAI-compatible facade on the wire: `/v1/chat/completions` chunks and objects,
//! `[DONE]`, usage, errors, memory, cancellation, and `/v1/models`. Tool calls and forwarded
//! fields: `openai_tools`.

use gateway_tests::{chunk, profile, HostSpec, Reply, TestHost, TEST_KEY};
use serde_json::{json, Value};

use super::disconnect::{hang_up_mid_answer, keep_alive_while_silent};

pub(super) const SYSTEM: &str = "You speak briefly.\n\nYou are profile default.";

/// A raw answer from the facade.
pub(super) struct Raw {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Raw {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `data:` payloads of an SSE body, checking every frame is `data: ...\n\n` (or a
    /// comment) and nothing else.
    pub fn data(&self) -> Vec<String> {
        assert!(
            self.content_type.starts_with("text/event-stream"),
            "{}",
            self.content_type
        );
        assert!(self.body.ends_with("\n\n"), "{:?}", self.body);
        self.body
            .split("\n\n")
            .filter(|f| !f.is_empty() && !f.starts_with(':'))
            .map(|f| {
                let data = f.strip_prefix("data: ").unwrap_or_else(|| panic!("{f:?}"));
                assert!(!data.contains('\n'), "one line per frame: {f:?}");
                data.to_string()
            })
            .collect()
    }

    /// The chunks (every payload but `[DONE]`) as JSON.
    pub fn chunks(&self) -> Vec<Value> {
        self.data()
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

pub(super) async fn post(
    host: &TestHost,
    body: impl Into<reqwest::Body>,
    session: Option<&str>,
) -> Raw {
    let mut request = host
        .client
        .post(format!("{}/v1/chat/completions", host.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = session {
        request = request.header("x-session-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Raw {
        status,
        content_type,
        body: response.text().await.unwrap(),
    }
}

pub(super) async fn chat(host: &TestHost, body: Value) -> Raw {
    post(host, body.to_string(), None).await
}

fn hi(extra: Value) -> Value {
    let mut body = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn usage_answer(tokens: &[&str]) -> String {
    let mut body = chunk(json!({"role": "assistant", "content": ""}), None);
    for t in tokens {
        body.push_str(&chunk(json!({"content": t}), None));
    }
    body.push_str(&chunk(json!({}), Some("stop")));
    let usage = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
        "model": "mock-model", "choices": [],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}});
    body.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    body
}

pub(super) fn assert_openai_error(raw: &Raw, status: u16, code: &str) -> Value {
    assert_eq!(raw.status, status, "{}", raw.body);
    assert!(
        raw.content_type.starts_with("application/json"),
        "{}",
        raw.content_type
    );
    let body = raw.json();
    let error = body["error"].clone();
    let mut keys: Vec<&String> = error.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"], "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(!error["message"].as_str().unwrap().is_empty());
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    assert_eq!(error["type"], kind, "{body}");
    assert!(!raw.body.contains(TEST_KEY));
    error
}

#[tokio::test]
async fn stream_sends_role_content_finish_and_done_chunks() {
    let host = TestHost::start().await;
    let raw = chat(&host, hi(json!({"stream": true}))).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert!(
        !raw.body.contains("event:"),
        "plain data frames: {}",
        raw.body
    );
    let data = raw.data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    let chunks = raw.chunks();
    assert_eq!(chunks.len(), 5, "{}", raw.body);
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() > 20, "{id}");
    let created = chunks[0]["created"].as_u64().unwrap();
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["created"], created);
        assert_eq!(c["model"], "default");
        assert!(c.get("usage").is_none(), "no usage without include_usage");
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
        assert_eq!(c["choices"][0]["index"], 0);
    }
    let choice = |i: usize| chunks[i]["choices"][0].clone();
    assert_eq!(
        choice(0)["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(choice(0)["finish_reason"], Value::Null);
    let text: Vec<&str> = (1..4)
        .map(|i| {
            chunks[i]["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, ["Hello", " there", "."]);
    assert_eq!(choice(1)["finish_reason"], Value::Null);
    assert_eq!(choice(4)["delta"], json!({}));
    assert_eq!(choice(4)["finish_reason"], "stop");
    // A second response has another id.
    let again = chat(&host, hi(json!({"stream": true}))).await;
    assert_ne!(again.chunks()[0]["id"], id);
}

#[tokio::test]
async fn include_usage_adds_a_usage_chunk_with_empty_choices() {
    let host = TestHost::start().await;
    host.upstream.push(Reply::Sse(usage_answer(&["Hi"])));
    let body = hi(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let raw = chat(&host, body.clone()).await;
    let data = raw.data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks = raw.chunks();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
    );
    assert_eq!(usage["id"], chunks[0]["id"]);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["usage"], Value::Null, "usage: null on the other chunks");
        assert!(c.get("usage").is_some());
    }
    // The upstream reported no usage: no usage chunk, still null on the others.
    let raw = chat(&host, body).await;
    let chunks = raw.chunks();
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(chunks.iter().all(|c| c["usage"] == Value::Null));
    // Without include_usage the upstream's usage is not streamed.
    host.upstream.push(Reply::Sse(usage_answer(&["Hi"])));
    let raw = chat(&host, hi(json!({"stream": true}))).await;
    assert!(raw.chunks().iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn non_streaming_answers_one_chat_completion_object() {
    let host = TestHost::start().await;
    host.upstream
        .push(Reply::Sse(usage_answer(&["Hello", " you"])));
    let raw = chat(&host, hi(json!({}))).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert!(raw.content_type.starts_with("application/json"));
    let body = raw.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "default");
    assert_eq!(body["choices"].as_array().unwrap().len(), 1);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello you");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
    );
    // `stream: false` is the same; no usage reported upstream means no usage field.
    let body = chat(&host, hi(json!({"stream": false}))).await.json();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello there.");
    assert!(body.get("usage").is_none());
}

#[tokio::test]
async fn an_answer_cut_at_max_tokens_reports_length() {
    let host = TestHost::start().await;
    let cut = [
        chunk(json!({"content": "Once upon"}), None),
        chunk(json!({}), Some("length")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    host.upstream.push(Reply::Sse(cut.clone()));
    let body = chat(&host, hi(json!({}))).await.json();
    assert_eq!(body["choices"][0]["message"]["content"], "Once upon");
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    host.upstream.push(Reply::Sse(cut));
    let chunks = chat(&host, hi(json!({"stream": true}))).await.chunks();
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .collect();
    assert_eq!(finish.last().copied(), Some(&json!("length")), "{chunks:?}");
    assert!(finish[..finish.len() - 1].iter().all(|f| f.is_null()));
}

#[tokio::test]
async fn upstream_gets_profile_model_prompt_and_client_messages_in_order() {
    let mut p = profile("tuned");
    p["llm"] =
        json!({"model": "profile-model", "parameters": {"max_tokens": 77, "temperature": 0.25}});
    p["adapter_config"]["sessionKey"] = json!("profile-key");
    let host = TestHost::with(HostSpec::default().with_profile(p)).await;
    let messages = json!([
        {"role": "system", "content": "Client rules."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "developer", "content": "Dev note."},
        {"role": "user", "content": [{"type": "text", "text": "q2"}, {"type": "text", "text": "more"}]},
    ]);
    let raw = chat(&host, json!({"model": "tuned", "messages": messages})).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let sent = host.upstream.last_request();
    assert_eq!(sent["model"], "profile-model");
    assert_eq!(sent["max_tokens"], 77);
    assert_eq!(sent["temperature"], 0.25);
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You speak briefly.\n\nYou are profile tuned."},
            {"role": "system", "content": "Client rules."},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "system", "content": "Dev note."},
            {"role": "user", "content": [{"type": "text", "text": "q2"},
                                         {"type": "text", "text": "more"}]},
        ])
    );
    // The client's conversation is complete: the profile's session key stores nothing.
    assert!(host
        .state
        .store()
        .history("profile-key", 10)
        .await
        .unwrap()
        .is_empty());

    // Request values override the profile's; max_completion_tokens wins over max_tokens.
    let cases = [
        (json!({"max_tokens": 20, "temperature": 1.5}), 20, 1.5),
        (json!({"max_completion_tokens": 12}), 12, 0.25),
        (
            json!({"max_tokens": 20, "max_completion_tokens": 12, "temperature": 0}),
            12,
            0.0,
        ),
    ];
    for (extra, max_tokens, temperature) in cases {
        let mut body = json!({"model": "tuned", "messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        assert_eq!(chat(&host, body).await.status, 200);
        let sent = host.upstream.last_request();
        assert_eq!(sent["max_tokens"], max_tokens, "{extra}");
        assert_eq!(
            sent["temperature"].as_f64().unwrap(),
            temperature,
            "{extra}"
        );
    }

    // `system_prompt: "none"` leaves the client's own system message first.
    let body = json!({"model": "default", "system_prompt": "none", "messages": [
        {"role": "system", "content": "Only mine."}, {"role": "user", "content": "x"}]});
    assert_eq!(chat(&host, body).await.status, 200);
    assert_eq!(
        host.upstream.last_request()["messages"],
        json!([{"role": "system", "content": "Only mine."}, {"role": "user", "content": "x"}])
    );
    // Default profile: the host's system prompt first.
    assert_eq!(chat(&host, hi(json!({}))).await.status, 200);
    assert_eq!(
        host.upstream.last_request()["messages"][0]["content"],
        SYSTEM
    );
}

#[tokio::test]
async fn request_errors_have_openai_shape_and_status() {
    let host = TestHost::start().await;
    let user = |content: Value| json!([{"role": "user", "content": content}]);
    let cases = [
        (
            json!({"model": "nope", "messages": user(json!("hi"))}),
            404,
            "model_not_found",
            json!("model"),
        ),
        (
            json!({"model": "Not/A-Profile", "messages": user(json!("hi")), "stream": true}),
            404,
            "model_not_found",
            json!("model"),
        ),
        (
            json!({"messages": user(json!("hi"))}),
            400,
            "missing_required_parameter",
            json!("model"),
        ),
        (
            json!({"model": "default"}),
            400,
            "missing_required_parameter",
            json!("messages"),
        ),
        (
            json!({"model": "default", "messages": []}),
            400,
            "empty_array",
            json!("messages"),
        ),
        (
            json!({"model": "default", "stream": true, "messages": user(json!([
                {"type": "text", "text": "look"},
                {"image_url": {"url": "https://x/y.png"}}]))}),
            400,
            "invalid_type",
            json!("messages[0].content[1].type"),
        ),
        (
            json!({"model": "default", "messages": [{"role": "tool", "content": "r"}]}),
            400,
            "missing_required_parameter",
            json!("messages[0].tool_call_id"),
        ),
        (
            json!({"model": "default", "messages": [{"role": "function", "content": "r"}]}),
            400,
            "unsupported_value",
            json!("messages[0].role"),
        ),
        (
            json!({"model": "default", "messages": [{"role": "assistant", "content": null,
                "tool_calls": [{"id": "c1", "type": "function", "function": {}}]}]}),
            400,
            "missing_required_parameter",
            json!("messages[0].tool_calls[0].function.name"),
        ),
        (
            json!({"model": "default", "messages": user(json!(42))}),
            400,
            "invalid_type",
            json!("messages[0].content"),
        ),
        (
            json!({"model": "default", "messages": "hi"}),
            400,
            "invalid_type",
            Value::Null,
        ),
        (
            // A body that is not an object.
            json!(["default", user(json!("hi"))]),
            400,
            "invalid_type",
            Value::Null,
        ),
        (
            json!({"model": "default", "messages": user(json!("hi")), "n": 2}),
            400,
            "invalid_value",
            json!("n"),
        ),
        (
            json!({"model": "default", "messages": user(json!("hi")), "temperature": 3}),
            400,
            "invalid_value",
            json!("temperature"),
        ),
        (
            json!({"model": "default", "messages": user(json!("hi")), "max_tokens": 0}),
            400,
            "invalid_value",
            json!("max_tokens"),
        ),
        (
            json!({"model": "default", "messages": user(json!("hi")), "user": "a b/c"}),
            400,
            "invalid_value",
            json!("user"),
        ),
        (
            json!({"model": "default", "user": "u1",
                   "messages": [{"role": "system", "content": "only system"}]}),
            400,
            "invalid_value",
            json!("messages"),
        ),
    ];
    for (body, status, code, param) in cases {
        let raw = chat(&host, body.clone()).await;
        let error = assert_openai_error(&raw, status, code);
        assert_eq!(error["param"], param, "{body} → {error}");
    }
    let raw = post(&host, "{\"model\": ", None).await;
    assert_openai_error(&raw, 400, "invalid_json");
    let raw = post(&host, hi(json!({})).to_string(), Some("bad key!")).await;
    let error = assert_openai_error(&raw, 400, "invalid_value");
    assert_eq!(error["param"], "X-Session-Key");
    let raw = chat(
        &host,
        json!({"model": "nope", "messages": user(json!("hi"))}),
    )
    .await;
    assert!(raw.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'nope'"));
    assert!(
        host.upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn oversize_body_is_413_and_unconfigured_gateway_is_503() {
    let host =
        TestHost::with_config(json!({"limits": {"max_body_bytes": 1024, "max_message_chars": 10}}))
            .await;
    let big =
        json!({"model": "default", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    assert_openai_error(&chat(&host, big).await, 413, "payload_too_large");
    let long =
        json!({"model": "default", "messages": [{"role": "user", "content": "x".repeat(11)}]});
    let error = assert_openai_error(&chat(&host, long).await, 400, "invalid_value");
    assert!(error["message"].as_str().unwrap().contains("messages[0]"));

    let host = TestHost::with(HostSpec {
        with_key: false,
        ..HostSpec::default()
    })
    .await;
    let raw = chat(&host, hi(json!({"stream": true}))).await;
    let error = assert_openai_error(&raw, 503, "gateway_unavailable");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("OPENAI_COMPAT_API_KEY"));
}

#[tokio::test]
async fn upstream_errors_end_a_stream_with_an_error_chunk_and_no_done() {
    let host = TestHost::start().await;
    let provider_error = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}});
    host.upstream
        .push(Reply::Status(401, provider_error.to_string()));
    let raw = chat(&host, hi(json!({"stream": true}))).await;
    assert_eq!(raw.status, 200);
    let data = raw.data();
    assert!(!data.iter().any(|d| d == "[DONE]"), "{}", raw.body);
    assert_eq!(data.len(), 2, "{}", raw.body);
    let error: Value = serde_json::from_str(&data[1]).unwrap();
    let error = &error["error"];
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["code"], "upstream_error");
    assert_eq!(error["param"], Value::Null);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("401") && message.contains("Incorrect API key"),
        "{message}"
    );
    assert!(!raw.body.contains(TEST_KEY));

    // The provider's in-stream error after a 200.
    let body = format!(
        "{}{}data: {{\"error\": {{\"message\": \"model overloaded\"}}}}\n\n",
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Part"}), None)
    );
    host.upstream.push(Reply::Sse(body.clone()));
    let raw = chat(&host, hi(json!({"stream": true}))).await;
    let chunks = raw.chunks();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model overloaded"));
    assert!(!raw.data().iter().any(|d| d == "[DONE]"));

    // Not streamed: an HTTP 502 in the same shape.
    host.upstream.push(Reply::Sse(body));
    let raw = chat(&host, hi(json!({}))).await;
    let error = assert_openai_error(&raw, 502, "upstream_error");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("model overloaded"));
}

#[tokio::test]
async fn user_or_session_header_switches_on_server_side_memory() {
    let host = TestHost::start().await;
    host.upstream.push(Reply::tokens(&["a1"]));
    let first = json!({"model": "default", "user": "alice", "messages": [
        {"role": "system", "content": "ignored with memory"}, {"role": "user", "content": "q1"}]});
    assert_eq!(chat(&host, first).await.status, 200);
    host.upstream.push(Reply::tokens(&["a2"]));
    let second = json!({"model": "default", "user": "alice", "stream": true, "messages": [
        {"role": "user", "content": "client-side history, ignored"},
        {"role": "assistant", "content": "also ignored"},
        {"role": "user", "content": "q2"}]});
    let raw = chat(&host, second).await;
    assert_eq!(raw.data().last().unwrap(), "[DONE]");
    assert_eq!(
        host.upstream.last_request()["messages"],
        json!([
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ])
    );
    let history = host.state.store().history("alice", 20).await.unwrap();
    assert_eq!(history.len(), 4);

    // The header wins over `user`.
    let body = json!({"model": "default", "user": "alice",
                      "messages": [{"role": "user", "content": "q-bob"}]});
    assert_eq!(post(&host, body.to_string(), Some("bob")).await.status, 200);
    assert_eq!(
        host.state.store().history("bob", 20).await.unwrap().len(),
        2
    );
    assert_eq!(
        host.state.store().history("alice", 20).await.unwrap().len(),
        4
    );
    // An empty header is no header.
    let body = json!({"model": "default", "user": "carol",
                      "messages": [{"role": "user", "content": "q-carol"}]});
    assert_eq!(post(&host, body.to_string(), Some("")).await.status, 200);
    assert_eq!(
        host.state.store().history("carol", 20).await.unwrap().len(),
        2
    );

    // The same session is visible to the host's session API.
    let r = host
        .client
        .delete(format!("{}/v1/sessions/alice", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream() {
    hang_up_mid_answer(
        "/v1/chat/completions",
        hi(json!({"stream": true, "user": "gone"})),
    )
    .await;
}

#[tokio::test]
async fn keep_alive_comments_while_the_upstream_is_silent() {
    let seen = keep_alive_while_silent("/v1/chat/completions", hi(json!({"stream": true}))).await;
    assert!(seen.ends_with("data: [DONE]\n\n"), "{seen}");
}

#[tokio::test]
async fn models_list_profiles_and_unknown_models_are_404() {
    let host = TestHost::with(HostSpec::default().with_profile(profile("alpha"))).await;
    let (status, list) = host.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alpha", "default"]);
    for m in data {
        let mut keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["created", "id", "object", "owned_by"]);
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "gateway-host");
        assert!(m["created"].as_u64().unwrap() > 1_600_000_000);
    }
    let (status, one) = host.get("/v1/models/alpha").await;
    assert_eq!(status, 200);
    assert_eq!(one, data[0]);
    for path in [
        "/v1/models/missing",
        "/v1/models/UPPER",
        "/v1/models/..%2Fetc",
    ] {
        let (status, body) = host.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "model_not_found", "{path}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
    }
}

#[tokio::test]
async fn a_profile_with_sentence_events_streams_each_token_once() {
    let mut p = profile("spoken");
    p["voice"] = json!({"sentence_events": true});
    let host = TestHost::with(HostSpec::default().with_profile(p)).await;
    host.upstream
        .push(Reply::tokens(&["One sentence here.", " Two", " more."]));
    let body = json!({"model": "spoken", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let raw = chat(&host, body).await;
    let text: String = raw
        .chunks()
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "One sentence here. Two more.", "{}", raw.body);
}
