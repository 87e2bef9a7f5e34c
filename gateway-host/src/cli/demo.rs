//! `gateway-host demo`: a scripted OpenAI-compatible upstream on 127.0.0.1, the real host in
//! front of it, and a three-turn conversation over the real HTTP path. No key, no network.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use gateway_core::{Env, Registry};
use serde_json::{json, Value};

use crate::config::instances::Instances;
use crate::config::profile::{Profile, ProfileSet};
use crate::config::HostConfig;
use crate::state::AppState;

/// Kind the demo uses; must be linked into the binary.
pub const DEMO_KIND: &str = "openai-compat";
/// Delay between scripted words, to make streaming visible.
const WORD_DELAY: Duration = Duration::from_millis(12);

/// The scripted answer: how many earlier messages arrived and the previous user message.
pub fn scripted_answer(messages: &[Value]) -> String {
    let chat: Vec<&Value> = messages.iter().filter(|m| m["role"] != "system").collect();
    let earlier = chat.len().saturating_sub(1);
    let previous_user = chat[..earlier]
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str());
    match previous_user {
        None => "Hello! I am the scripted demo upstream. I received no earlier messages, \
                 so this is the start of our conversation."
            .to_string(),
        Some(prev) => {
            format!("I received {earlier} earlier messages. Your previous message was: \"{prev}\".")
        }
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0,
        "model": "demo-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {body}\n\n")
}

async fn completions(Json(body): Json<Value>) -> Response {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let answer = scripted_answer(&messages);
    let mut pieces = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    let words: Vec<&str> = answer.split_inclusive(' ').collect();
    pieces.extend(words.iter().map(|w| chunk(json!({"content": w}), None)));
    pieces.push(chunk(json!({}), Some("stop")));
    pieces.push("data: [DONE]\n\n".into());
    let stream = futures::stream::iter(pieces).then(|piece| async move {
        tokio::time::sleep(WORD_DELAY).await;
        Ok::<_, std::convert::Infallible>(piece)
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn serve_on_loopback(router: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "demo-model", "object": "model"}]}))
}

/// The demo's built-in profile.
pub fn demo_profile() -> Profile {
    let raw = json!({
        "id": "demo", "name": "Demo", "adapter": "clawdbot",
        "adapter_config": {"gateway_id": DEMO_KIND, "sessionKey": "demo-1", "agentId": null},
        "llm": {"model": "demo-model", "parameters": {"max_tokens": 200, "temperature": 0.7}},
        "context": {"max_history_messages": 20},
        "system_prompt": "You are the demo voice assistant. Answer briefly.",
    });
    // The literal above is valid; a failure here is a programming error reported as such.
    Profile::from_json(raw, "builtin").unwrap_or_else(|e| panic!("demo profile: {e}"))
}

/// Build a host state whose `openai-compat` instance points at `upstream`.
pub fn demo_state(upstream: SocketAddr) -> anyhow::Result<AppState> {
    let registry = Registry::from_inventory()?;
    registry
        .get(DEMO_KIND)
        .context("the demo needs the openai-compat gateway linked into this binary")?;
    let config = HostConfig {
        prompts_dir: "".into(),
        profiles_dir: "".into(),
        default_profile: "demo".into(),
        ..HostConfig::default()
    };
    let env = Env::from_pairs([
        ("OPENAI_COMPAT_BASE_URL", format!("http://{upstream}/v1")),
        ("OPENAI_COMPAT_API_KEY", "demo".to_string()),
        ("OPENAI_COMPAT_MODEL", "demo-model".to_string()),
    ]);
    let instances = Instances::build(&registry, &config, &env);
    let profiles = ProfileSet::from_profiles([demo_profile()], |g| instances.is_known(g));
    let store = AppState::store_for(&config);
    Ok(AppState::new(config, instances, profiles, store))
}

/// Run the demo, printing to stdout.
pub async fn run() -> anyhow::Result<ExitCode> {
    let upstream = serve_on_loopback(
        Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models)),
    )
    .await?;
    let state = demo_state(upstream)?;
    let host = serve_on_loopback(crate::http::app(state.clone())).await?;
    println!("demo upstream on http://{upstream}, host on http://{host}");
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut out = std::io::stdout();
    for message in [
        "Hi there, who are you?",
        "What did I just ask you?",
        "And how many messages have we exchanged?",
    ] {
        println!("\nyou> {message}");
        print!("assistant> ");
        out.flush()?;
        let response = client
            .post(format!("http://{host}/v1/conversation"))
            .json(&json!({"profile": "demo", "message": message}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "host answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        let mut events = response.bytes_stream();
        let mut buffer = Vec::new();
        let mut finished = false;
        while let Some(bytes) = events.next().await {
            buffer.extend_from_slice(&bytes?);
            while let Some(end) = find(&buffer, b"\n\n") {
                let frame: Vec<u8> = buffer.drain(..end + 2).collect();
                let Some(event) = parse_frame(&frame) else {
                    continue;
                };
                match event["type"].as_str() {
                    Some("delta") => {
                        print!("{}", event["text"].as_str().unwrap_or(""));
                        out.flush()?;
                    }
                    Some("text_done") => {
                        println!(
                            "\n  (time to first token {} ms, total {} ms)",
                            event["timing"]["ttft_ms"], event["timing"]["total_ms"]
                        );
                        finished = true;
                    }
                    Some("error") => bail!("turn failed: {}", event["error"]),
                    _ => {}
                }
            }
        }
        if !finished {
            bail!("stream ended without text_done");
        }
    }
    let gateways: Value = client
        .get(format!("http://{host}/v1/gateways"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "\nGET /v1/gateways:\n{}",
        serde_json::to_string_pretty(&gateways)?
    );
    let stored = state.store().history("demo-1", usize::MAX).await?;
    println!(
        "session memory: {} session(s), {} message(s) stored for session demo-1",
        state.store().session_count().await?,
        stored.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_frame(frame: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(frame).ok()?;
    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str(data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_answer_reflects_history() {
        let first = scripted_answer(&[
            json!({"role": "system", "content": "s"}),
            json!({"role": "user", "content": "hi"}),
        ]);
        assert!(first.contains("no earlier messages"));
        let third = scripted_answer(&[
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "hello"}),
            json!({"role": "user", "content": "again"}),
        ]);
        assert_eq!(
            third,
            "I received 2 earlier messages. Your previous message was: \"hi\"."
        );
    }

    #[test]
    fn demo_profile_is_valid() {
        assert_eq!(demo_profile().id, "demo");
    }
}
