//! Tool calls through the OpenAI-compatible facade, against a mock upstream that records each
//! request body: request fields and messages reach the upstream as the client sent them,
//! calls come back in OpenAI's strict shape for every tool fixture (streamed and not), a
//! two-step round trip keeps the provider's keys on the call, server-side memory keeps a tool
//! exchange valid, and `/v1/conversation` carries calls without breaking its session.

use std::collections::HashSet;
use std::path::Path;

use gateway_tests::{chunk, tool_fixture_dirs, Reply, TestHost, TEST_KEY};
use serde_json::{json, Map, Value};

use super::openai_api::{assert_openai_error, chat, post, Raw, SYSTEM};

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}])
}

/// A call as Gemini's compatibility layer sends it: whole, with its thought signature.
fn signed_call(id: &str, city: &str) -> Value {
    json!({"id": id, "type": "function",
           "function": {"name": "get_weather", "arguments": json!({"city": city}).to_string()},
           "extra_content": {"google": {"thought_signature": format!("sig-{id}")}}})
}

/// An upstream answer: `text` (if any), then `calls` in one delta without `index` (as Gemini
/// sends them), then `finish_reason: stop` (as Gemini says it) and `[DONE]`.
fn answer_with_calls(text: &str, calls: &[Value]) -> Reply {
    let mut body = chunk(json!({"role": "assistant", "content": ""}), None);
    if !text.is_empty() {
        body.push_str(&chunk(json!({"content": text}), None));
    }
    body.push_str(&chunk(json!({"tool_calls": calls}), None));
    body.push_str(&chunk(json!({}), Some("stop")));
    body.push_str("data: [DONE]\n\n");
    Reply::Sse(body)
}

/// What a streamed response holds, each part checked for OpenAI's strict shape.
#[derive(Debug)]
struct Streamed {
    text: String,
    /// The calls as the chunks carried them, without `index`.
    calls: Vec<Value>,
    finish_reason: Option<String>,
    done: bool,
    error: Option<Value>,
}

/// Reads a streamed response as a strict SDK accumulator would and fails on anything it
/// could trip over: every `tool_calls` entry has an `index`, a string `id`, `type: function`,
/// a `function` with string `name` and `arguments`; indices count up from 0, one entry each
/// (the host sends whole calls); `finish_reason` only on the last choice chunk.
fn read_stream(raw: &Raw) -> Streamed {
    assert_eq!(raw.status, 200, "{}", raw.body);
    let data = raw.data();
    let done = data.last().is_some_and(|d| d == "[DONE]");
    let mut streamed = Streamed {
        text: String::new(),
        calls: Vec::new(),
        finish_reason: None,
        done,
        error: None,
    };
    for chunk in raw.chunks() {
        if let Some(error) = chunk.get("error") {
            streamed.error = Some(error.clone());
            continue;
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue; // the usage chunk
        };
        assert!(streamed.finish_reason.is_none(), "a chunk after the finish");
        let delta = &choice["delta"];
        streamed.text += delta["content"].as_str().unwrap_or("");
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(call["index"], streamed.calls.len(), "{call}");
            assert!(
                call["id"].as_str().is_some_and(|id| !id.is_empty()),
                "{call}"
            );
            assert_eq!(call["type"], "function", "{call}");
            assert!(call["function"]["name"].is_string(), "{call}");
            assert!(call["function"]["arguments"].is_string(), "{call}");
            let mut call = call.clone();
            call.as_object_mut().unwrap().remove("index");
            streamed.calls.push(call);
        }
        streamed.finish_reason = choice["finish_reason"].as_str().map(str::to_string);
    }
    streamed
}

fn body(extra: Value) -> Value {
    let mut body = json!({"model": "default", "tools": weather_tools(),
                          "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn every_field_the_host_does_not_use_reaches_the_upstream_unchanged() {
    let host = TestHost::start().await;
    let forwarded = json!({
        "tools": weather_tools(),
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "weather",
            "strict": true, "schema": {"type": "object", "additionalProperties": false,
            "properties": {"celsius": {"type": "number"}}, "required": ["celsius"]}}},
        "stop": ["\n\n", "END"], "top_p": 0.9, "seed": 42,
        "frequency_penalty": 0.5, "presence_penalty": -0.25,
        "logit_bias": {"50256": -100}, "logprobs": true, "top_logprobs": 3,
        "reasoning_effort": "low", "metadata": {"caller": "kitchen"},
        "x_vendor_flag_from_next_month": {"nested": [1, "two", null]},
    });
    let messages = json!([
        {"role": "system", "content": "Client rules."},
        {"role": "user", "content": [{"type": "text", "text": "Weather where this is?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                "detail": "low"}}]},
        {"role": "assistant", "content": null, "tool_calls": [signed_call("call_a", "Oslo")]},
        {"role": "tool", "tool_call_id": "call_a", "content": "12 C"},
        {"role": "user", "name": "ada", "content": [{"type": "input_audio",
            "input_audio": {"data": "UklGRg==", "format": "wav"}}]},
    ]);
    let mut request = forwarded.clone();
    // The host's own fields: used here, not forwarded (the gateway writes its own).
    for (k, v) in [
        ("model", json!("default")),
        ("messages", messages.clone()),
        ("stream", json!(true)),
        ("stream_options", json!({"include_usage": false, "x": 1})),
        ("max_completion_tokens", json!(33)),
        ("temperature", json!(0.5)),
        ("n", json!(1)),
        ("system_prompt", json!("default")),
    ] {
        request[k] = v;
    }
    let raw = chat(&host, request).await;
    assert!(read_stream(&raw).done, "{}", raw.body);

    let sent = host.upstream.last_request();
    for (k, v) in forwarded.as_object().unwrap() {
        assert_eq!(&sent[k], v, "{k}");
    }
    let mut keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
    keys.retain(|k| !forwarded.as_object().unwrap().contains_key(*k));
    keys.sort();
    assert_eq!(
        keys,
        [
            "max_tokens",
            "messages",
            "model",
            "stream",
            "stream_options",
            "temperature"
        ]
    );
    assert_eq!(sent["max_tokens"], 33);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    let mut expected = vec![json!({"role": "system", "content": SYSTEM})];
    expected.extend(messages.as_array().unwrap().iter().cloned());
    assert_eq!(sent["messages"], Value::Array(expected));
}

#[tokio::test]
async fn an_image_part_reaches_the_upstream_within_the_message_limit() {
    let host = TestHost::with_config(json!({"limits": {"max_message_chars": 40}})).await;
    let image = json!({"type": "image_url",
                       "image_url": {"url": format!("data:image/jpeg;base64,{}", "A".repeat(400))}});
    let user =
        json!({"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]});
    let raw = chat(&host, json!({"model": "default", "messages": [user]})).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let sent = host.upstream.last_request();
    assert_eq!(sent["messages"][1], user, "the parts go as sent");

    // The limit counts text and a call's arguments; media parts only count against the body.
    let long_text =
        json!([{"role": "user", "content": [{"type": "text", "text": "x".repeat(41)}, image]}]);
    let long_call = json!([{"role": "user", "content": "q"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": json!({"a": "x".repeat(40)}).to_string()}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}]);
    for messages in [long_text, long_call] {
        let raw = chat(&host, json!({"model": "default", "messages": messages})).await;
        let error = assert_openai_error(&raw, 400, "invalid_value");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("the limit is 40"),
            "{error}"
        );
    }
    assert_eq!(host.upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_two_step_round_trip_keeps_the_providers_keys_on_the_call() {
    let host = TestHost::start().await;
    let calls = [signed_call("fc-1", "Paris"), signed_call("fc-2", "London")];
    host.upstream
        .push(answer_with_calls("Let me check.", &calls));
    let raw = chat(&host, body(json!({"stream": true}))).await;
    let step1 = read_stream(&raw);
    assert_eq!(step1.text, "Let me check.");
    assert_eq!(step1.calls, calls, "whole calls, provider keys kept");
    assert_eq!(step1.finish_reason.as_deref(), Some("tool_calls"));
    assert!(step1.done);
    assert!(!raw.body.contains(TEST_KEY));

    // The client runs the tools and sends the conversation back with their results.
    let mut messages = body(json!({}))["messages"].as_array().unwrap().clone();
    messages.push(json!({"role": "assistant", "content": step1.text, "tool_calls": step1.calls}));
    messages.push(json!({"role": "tool", "tool_call_id": "fc-1", "content": "18 C"}));
    messages.push(json!({"role": "tool", "tool_call_id": "fc-2", "content": "11 C"}));
    host.upstream
        .push(Reply::tokens(&["Paris 18 C, London 11 C."]));
    let raw = chat(&host, body(json!({"messages": messages}))).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let answer = raw.json();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Paris 18 C, London 11 C."
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let sent = host.upstream.last_request();
    assert_eq!(
        sent["messages"].as_array().unwrap()[1..],
        messages[..],
        "the signatures went back"
    );
    assert_eq!(sent["tools"], weather_tools());
}

#[tokio::test]
async fn a_non_streamed_answer_holds_message_tool_calls() {
    let host = TestHost::start().await;
    let calls = [signed_call("fc-1", "Paris")];
    host.upstream.push(answer_with_calls("", &calls));
    let raw = chat(&host, body(json!({}))).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let choice = raw.json()["choices"][0].clone();
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": calls})
    );
    assert_eq!(choice["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn memory_keeps_a_tool_exchange_valid_for_the_next_call() {
    let host = TestHost::start().await;
    let key = "tools-memory";
    let call = signed_call("fc-1", "Paris");
    host.upstream
        .push(answer_with_calls("", std::slice::from_ref(&call)));
    let raw = post(&host, body(json!({"stream": true})).to_string(), Some(key)).await;
    assert_eq!(read_stream(&raw).calls, std::slice::from_ref(&call));

    // The client sends its whole conversation (as SDK agent loops do): only the tool result
    // is new.
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": "fc-1", "content": "18 C"},
    ]);
    host.upstream.push(Reply::tokens(&["It is 18 C."]));
    let raw = post(
        &host,
        body(json!({"messages": messages})).to_string(),
        Some(key),
    )
    .await;
    assert_eq!(
        raw.json()["choices"][0]["message"]["content"],
        "It is 18 C."
    );
    let mut exchange = vec![json!({"role": "system", "content": SYSTEM})];
    exchange.extend(messages.as_array().unwrap().iter().cloned());
    assert_eq!(
        host.upstream.last_request()["messages"],
        Value::Array(exchange.clone())
    );

    // The next question goes after the whole exchange and the answer.
    let next = json!([{"role": "user", "content": "And tomorrow?"}]);
    host.upstream.push(Reply::tokens(&["Sunny."]));
    let raw = post(
        &host,
        body(json!({"messages": next})).to_string(),
        Some(key),
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    exchange.push(json!({"role": "assistant", "content": "It is 18 C."}));
    exchange.push(json!({"role": "user", "content": "And tomorrow?"}));
    assert_eq!(
        host.upstream.last_request()["messages"],
        Value::Array(exchange)
    );
    let stored = host.state.store().history(key, 20).await.unwrap();
    assert_eq!(stored.len(), 6);
    assert_eq!(
        serde_json::to_value(&stored[1]).unwrap()["tool_calls"][0],
        call
    );
}

/// `limits.max_answer_chars` counts a call's name and arguments like answer text: an
/// upstream streaming huge arguments ends the turn with the cap's error, and nothing reaches
/// memory (where it would be sent upstream again on every later turn).
#[tokio::test]
async fn huge_call_arguments_are_cut_at_the_answer_cap_and_not_stored() {
    let host = TestHost::with_config(json!({"limits": {"max_answer_chars": 1000}})).await;
    let key = "tools-huge";
    let arguments = json!({"city": "x".repeat(5000)}).to_string();
    let call = json!({"id": "fc-1", "type": "function",
                      "function": {"name": "get_weather", "arguments": arguments}});
    host.upstream.push(answer_with_calls("", &[call]));
    let raw = post(&host, body(json!({"stream": true})).to_string(), Some(key)).await;
    let streamed = read_stream(&raw);
    assert!(streamed.calls.is_empty(), "{streamed:?}");
    let error = streamed.error.expect("the cap's error");
    assert!(error.to_string().contains("max_answer_chars"), "{error}");
    assert!(host
        .state
        .store()
        .history(key, 20)
        .await
        .unwrap()
        .is_empty());
}

/// With memory, a tool result whose `tool_call_id` the last assistant message did not call
/// is a 400 naming the id: it reaches neither the upstream (which would refuse the turn) nor
/// memory (where it would break every later turn).
#[tokio::test]
async fn a_result_for_a_call_never_made_is_refused_naming_the_id() {
    let host = TestHost::start().await;
    host.upstream
        .push(answer_with_calls("", &[signed_call("fc-1", "Oslo")]));
    assert_eq!(
        chat(&host, body(json!({"user": "stray"}))).await.status,
        200
    );
    let stray = json!({"model": "default", "user": "stray", "tools": weather_tools(),
                       "messages": [{"role": "tool", "tool_call_id": "zzz", "content": "?"}]});
    let raw = chat(&host, stray).await;
    assert_eq!(raw.status, 400, "{}", raw.body);
    let message = raw.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("tool_call_id 'zzz'"), "{message}");
    assert_eq!(
        host.upstream.requests().len(),
        1,
        "nothing more went upstream"
    );
    let stored = host.state.store().history("stray", 20).await.unwrap();
    assert!(
        stored.iter().all(|m| m.tool_call_id() != Some("zzz")),
        "{stored:?}"
    );
}

#[tokio::test]
async fn memory_leaves_out_a_call_the_client_never_answered() {
    let host = TestHost::start().await;
    host.upstream.push(answer_with_calls(
        "One moment.",
        &[signed_call("fc-1", "Oslo")],
    ));
    let first = body(json!({"user": "abandoned"}));
    assert_eq!(chat(&host, first).await.status, 200);
    // The client asks something else instead of sending the result.
    let second = json!({"model": "default", "user": "abandoned",
                        "messages": [{"role": "user", "content": "Never mind. Hi!"}]});
    assert_eq!(chat(&host, second).await.status, 200);
    assert_eq!(
        host.upstream.last_request()["messages"],
        json!([
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "One moment."},
            {"role": "user", "content": "Never mind. Hi!"},
        ])
    );
}

#[tokio::test]
async fn a_voice_turn_carries_calls_and_its_session_stays_valid() {
    let host = TestHost::start().await;
    let call = signed_call("fc-9", "Rome");
    host.upstream
        .push(answer_with_calls("Checking.", std::slice::from_ref(&call)));
    let answer = host
        .sse(json!({"message": "Weather in Rome?", "session_key": "voice-tools"}))
        .await;
    assert_eq!(
        answer.types(),
        ["handshake", "delta", "tool_call", "text_done"],
        "{}",
        answer.body
    );
    assert_eq!(answer.events[2]["call"], call);
    assert_eq!(answer.last()["finish_reason"], "tool_calls");
    assert_eq!(answer.last()["response"], "Checking.");

    let answer = host
        .sse(json!({"message": "Thanks.", "session_key": "voice-tools"}))
        .await;
    assert_eq!(answer.last()["type"], "text_done", "{}", answer.body);
    assert_eq!(
        host.upstream.last_request()["messages"].as_array().unwrap()[1..],
        [
            json!({"role": "user", "content": "Weather in Rome?"}),
            json!({"role": "assistant", "content": "Checking."}),
            json!({"role": "user", "content": "Thanks."}),
        ]
    );
}

/// A tool fixture's expectations (`gateway-openai-compat/tests/conformance-tools/README.md`).
struct Fixture {
    name: String,
    sse: String,
    meta: Value,
}

fn fixtures() -> Vec<Fixture> {
    let mut all = Vec::new();
    for dir in tool_fixture_dirs() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sse"))
            .collect();
        names.sort();
        all.extend(names.iter().map(|sse| fixture(sse)));
    }
    assert!(all.len() >= 5, "the repository's tool fixtures are missing");
    all
}

fn fixture(sse: &Path) -> Fixture {
    let meta = std::fs::read_to_string(sse.with_extension("json")).unwrap();
    Fixture {
        name: sse.display().to_string(),
        sse: std::fs::read_to_string(sse).unwrap(),
        meta: serde_json::from_str(&meta).unwrap(),
    }
}

/// The calls match the fixture's: name, arguments as JSON, the upstream's id when it gave
/// one (else any unique one), the provider keys the fixture names.
fn check_calls(name: &str, expected: &Value, calls: &[Value]) {
    let expected = expected.as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), expected.len(), "{name}: {calls:?}");
    let ids: HashSet<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), calls.len(), "{name}: ids unique");
    for (want, got) in expected.iter().zip(calls) {
        let arguments: Value = serde_json::from_str(got["function"]["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: arguments are not JSON: {e}"));
        assert_eq!(arguments, want["arguments"], "{name}");
        assert_eq!(got["function"]["name"], want["name"], "{name}");
        if let Some(id) = want.get("id") {
            assert_eq!(&got["id"], id, "{name}");
        }
        let extra = want.get("extra").and_then(Value::as_object).cloned();
        for (k, v) in extra.unwrap_or_else(Map::new) {
            assert_eq!(got[&k], v, "{name}: {k}");
        }
    }
}

#[tokio::test]
async fn every_tool_fixture_comes_back_in_openais_shape_streamed_and_not() {
    let host = TestHost::start().await;
    for f in fixtures() {
        host.upstream.push(Reply::Sse(f.sse.clone()));
        let raw = chat(&host, body(json!({"stream": true}))).await;
        let streamed = read_stream(&raw);
        host.upstream.push(Reply::Sse(f.sse.clone()));
        let whole = chat(&host, body(json!({}))).await;
        if let Some(needles) = f.meta["expect_error_contains"].as_array() {
            assert!(
                streamed.calls.is_empty() && !streamed.done,
                "{}: {}",
                f.name,
                raw.body
            );
            let error = streamed
                .error
                .unwrap_or_else(|| panic!("{}: no error", f.name));
            let error_text = assert_openai_error(&whole, 502, "upstream_error")["message"].clone();
            for needle in needles {
                let needle = needle.as_str().unwrap();
                assert!(
                    error["message"].as_str().unwrap().contains(needle),
                    "{}",
                    f.name
                );
                assert!(error_text.as_str().unwrap().contains(needle), "{}", f.name);
            }
            continue;
        }
        assert!(streamed.done, "{}: {}", f.name, raw.body);
        assert_eq!(streamed.text, f.meta["expect_text"], "{}", f.name);
        assert_eq!(
            streamed.finish_reason.as_deref(),
            f.meta["expect_finish_reason"].as_str()
        );
        check_calls(&f.name, &f.meta["expect_tool_calls"], &streamed.calls);

        assert_eq!(whole.status, 200, "{}: {}", f.name, whole.body);
        let choice = whole.json()["choices"][0].clone();
        assert_eq!(
            choice["finish_reason"], f.meta["expect_finish_reason"],
            "{}",
            f.name
        );
        let calls = choice["message"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        check_calls(&f.name, &f.meta["expect_tool_calls"], &calls);
        let text = choice["message"]["content"].as_str().unwrap_or("");
        assert_eq!(text, f.meta["expect_text"], "{}", f.name);
    }
}
