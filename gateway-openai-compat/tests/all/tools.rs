//! Tool calls over real HTTP: what the upstream receives (the turn's extra request fields and
//! messages as the client sent them) and how calls come back (events, timeouts, JSON answers).

use std::sync::Arc;
use std::time::Duration;

use gateway_core::{ChatMessage, Event, GatewayError, ToolCall, Turn};
use gateway_openai_compat::OpenAiCompatConfig;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::server::{self, chunk, config, end, gateway, head_chunked, respond, run, serve};

/// One whole call in one chunk, Gemini-style: no `index`, `finish_reason` `stop`.
const GEMINI_CALL: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"finish_reason\":\"stop\",\"delta\":{\"role\":\"assistant\",",
    "\"tool_calls\":[{\"id\":\"function-call-1\",\"type\":\"function\",",
    "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"},",
    "\"extra_content\":{\"google\":{\"thought_signature\":\"c2lnbmF0dXJl\"}}}]}}]}\n\n",
    "data: [DONE]\n\n",
);

fn tool_calls(events: &[Event]) -> Vec<&ToolCall> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ToolCall { call } => Some(call),
            _ => None,
        })
        .collect()
}

fn finish_reason(events: &[Event]) -> Option<&str> {
    match events.last()? {
        Event::TextDone { finish_reason, .. } => finish_reason.as_deref(),
        _ => None,
    }
}

/// The second step of a tool round trip as an agent framework sends it: the history with the
/// provider's extras on the call, the tool's result, and every request field a client may set.
fn round_trip_turn() -> (Turn, Value, Value) {
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "name": "ada", "content": [
            {"type": "text", "text": "What's the weather where this photo was taken?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "function-call-1",
            "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
            "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}}]},
        {"role": "tool", "tool_call_id": "function-call-1", "content": "{\"temp_c\":12}"}
    ]);
    let extra = json!({
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Current weather", "strict": true,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], "additionalProperties": false}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "stop": ["\n\n"], "top_p": 0.9, "seed": 42, "frequency_penalty": 0.5,
        "presence_penalty": -0.5, "logit_bias": {"50256": -100}, "logprobs": true,
        "top_logprobs": 2, "reasoning_effort": "low", "metadata": {"trace": "t-1"},
        "x_vendor_option": {"nested": [1, 2, 3]},
        // The host's own fields win over these.
        "model": "client-model", "stream": false, "max_tokens": 1, "messages": [],
        "stream_options": {"include_usage": false}
    });
    let turn = Turn {
        max_tokens: Some(64),
        extra: Arc::new(extra.as_object().cloned().unwrap_or_default()),
        ..Turn::new(serde_json::from_value(messages.clone()).expect("messages parse"))
    };
    (turn, messages, extra)
}

#[tokio::test]
async fn extra_fields_and_messages_reach_the_upstream_as_sent() {
    let mut server = serve(|_, mut socket| async move {
        let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
        let _ = chunk(
            &mut socket,
            server::delta_line("It is 12 degrees.").as_bytes(),
        )
        .await;
        let _ = chunk(&mut socket, server::FINISH.as_bytes()).await;
        let _ = end(&mut socket).await;
    })
    .await;
    let gw = gateway(config(server.base_url("/v1")));
    let (turn, messages, extra) = round_trip_turn();
    let outcome = run(&gw, turn).await;
    assert_eq!(outcome.response(), Some("It is 12 degrees."));
    let body = server.requests.recv().await.expect("a request").json();
    assert_eq!(
        body["messages"], messages,
        "messages go as the client sent them"
    );
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    let own = [
        "model",
        "stream",
        "max_tokens",
        "messages",
        "stream_options",
    ];
    for (key, value) in extra.as_object().expect("object") {
        if !own.contains(&key.as_str()) {
            assert_eq!(&body[key], value, "{key} is forwarded unchanged");
        }
    }
}

#[tokio::test]
async fn a_streamed_call_comes_back_whole_with_its_provider_extras() {
    let server = serve(|_, mut socket| async move {
        let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
        let _ = chunk(&mut socket, GEMINI_CALL.as_bytes()).await;
        let _ = end(&mut socket).await;
    })
    .await;
    let gw = gateway(config(server.base_url("/v1")));
    let outcome = run(&gw, server::hello()).await;
    assert_eq!(outcome.error, None);
    let calls = tool_calls(&outcome.events);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "function-call-1");
    assert_eq!(
        calls[0].extra["extra_content"]["google"]["thought_signature"],
        "c2lnbmF0dXJl"
    );
    assert_eq!(finish_reason(&outcome.events), Some("tool_calls"));
    assert!(
        !outcome
            .events
            .iter()
            .any(|e| matches!(e, Event::Handshake { .. })),
        "a call is not a spoken token: {:?}",
        outcome.events
    );
    // Stored and sent back, the call is what the provider needs to see again.
    let history = ChatMessage::assistant_with_tool_calls("", vec![calls[0].clone()]);
    assert_eq!(
        serde_json::to_value(&history).expect("serialises")["tool_calls"][0]["extra_content"],
        json!({"google": {"thought_signature": "c2lnbmF0dXJl"}})
    );
}

#[tokio::test]
async fn a_stalled_call_is_an_idle_timeout_not_a_first_token_timeout_nor_a_half_call() {
    let (keep_tx, keep_rx) = oneshot::channel::<()>();
    let keep_rx = std::sync::Mutex::new(Some(keep_rx));
    let server = serve(move |_, mut socket| {
        let keep = keep_rx.lock().expect("lock").take();
        async move {
            let _ = head_chunked(&mut socket, 200, "text/event-stream", &[]).await;
            let fragment = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n";
            let _ = chunk(&mut socket, fragment.as_bytes()).await;
            if let Some(keep) = keep {
                let _ = keep.await;
            }
        }
    })
    .await;
    let gw = gateway(OpenAiCompatConfig {
        first_token_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(400),
        ..config(server.base_url("/v1"))
    });
    let outcome = run(&gw, server::hello()).await;
    assert!(outcome.events.is_empty(), "{:?}", outcome.events);
    assert_eq!(
        outcome.error,
        Some(GatewayError::IdleTimeout(Duration::from_millis(400)))
    );
    drop(keep_tx);
}

#[tokio::test]
async fn a_json_answer_with_calls_yields_them_before_text_done() {
    let server = serve(|_, mut socket| async move {
        let body = json!({"object": "chat.completion", "choices": [{"index": 0,
            "finish_reason": "stop", "message": {"role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_time", "arguments": {"tz": "Europe/Oslo"}}}]}}]});
        let _ = respond(
            &mut socket,
            200,
            "application/json",
            &[],
            body.to_string().as_bytes(),
        )
        .await;
    })
    .await;
    let gw = gateway(config(server.base_url("/v1")));
    let outcome = run(&gw, server::hello()).await;
    assert_eq!(outcome.error, None);
    let kinds: Vec<&str> = outcome.events.iter().map(Event::kind).collect();
    assert_eq!(kinds, ["handshake", "delta", "tool_call", "text_done"]);
    assert_eq!(
        *tool_calls(&outcome.events)[0],
        ToolCall::new("c1", "get_time", r#"{"tz":"Europe/Oslo"}"#)
    );
    assert_eq!(finish_reason(&outcome.events), Some("tool_calls"));
}
