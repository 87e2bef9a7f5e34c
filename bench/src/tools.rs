//! The tool-round phase: what the host adds to a voice turn that calls one MCP tool, beyond
//! the tool's own time.
//!
//! A fresh host gets the reference MCP server (server-everything over stdio, from
//! `integrations/mcp-servers`) and a mock upstream that asks for one `echo` call and then
//! answers. Turns run one at a time through `POST /v1/conversation`, alternating a plain turn
//! (no tools, one upstream request) and a tool turn (two upstream requests and the call).
//! Per tool turn, the tool's own time is the call as the host timed it (`durationMs` of the
//! `result` action: the server's work and its pipe); the host adds
//! `tool turn − tool's own time − median plain turn`: the tool loop, the second upstream round
//! trip and the action events.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::host::{self, HostProcess, HostSpec, Workdir};
use crate::procs::ProxyProcess as _;

/// The profile whose turns call the tool.
const TOOL_PROFILE: &str = "bench-tools";

/// The measured phase.
pub struct ToolRound {
    /// Markdown for the report.
    pub markdown: String,
    /// The summary's `tool_round` object.
    pub json: Value,
    /// Turns that failed.
    pub errors: u64,
    /// Turns measured (both kinds).
    pub turns: u64,
}

/// server-everything's entry point, if `integrations/mcp-servers` is installed.
fn everything_js() -> Option<PathBuf> {
    let path = host::workspace_root().join(
        "integrations/mcp-servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
    );
    path.is_file().then_some(path)
}

/// Run `turns` tool turns and as many plain ones on a fresh host; `None` (with a note on
/// stderr) when the MCP server is not installed.
pub async fn run(
    bin: &Path,
    voice_prompt: &str,
    turns: usize,
) -> anyhow::Result<Option<ToolRound>> {
    let Some(js) = everything_js() else {
        eprintln!("tool phase skipped: run `(cd integrations/mcp-servers && npm ci)` first");
        return Ok(None);
    };
    let upstream = start_upstream().await?;
    let workdir = Workdir::create("tools", voice_prompt)?;
    write_tool_setup(workdir.path(), &js)?;
    let spec = HostSpec {
        bin: bin.to_path_buf(),
        upstream_base_url: upstream,
        max_messages: 20,
        extra_env: Vec::new(),
    };
    let mut process = HostProcess::start(&spec, &workdir).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{}/v1/conversation", process.base_url());
    // The first tool turn starts the MCP server: warm up before measuring.
    for _ in 0..3 {
        turn(&client, &url, TOOL_PROFILE).await?;
        turn(&client, &url, host::PROFILE_ID).await?;
    }
    let mut samples = Samples::default();
    for _ in 0..turns {
        samples.add(turn(&client, &url, host::PROFILE_ID).await, false);
        samples.add(turn(&client, &url, TOOL_PROFILE).await, true);
    }
    process.ensure_alive()?;
    process.stop().await;
    Ok(Some(samples.report()))
}

/// The profile with the tool and the `gateway.toml` naming the server, in the host's
/// working directory.
fn write_tool_setup(dir: &Path, js: &Path) -> anyhow::Result<()> {
    let profile = json!({"id": TOOL_PROFILE, "features": {"tools": true},
        "adapter_config": {"gateway_id": "openai-compat", "tool_servers": ["everything"]}});
    std::fs::write(
        dir.join("profiles").join(format!("{TOOL_PROFILE}.json")),
        profile.to_string(),
    )
    .context("writing the tool profile")?;
    let toml = format!(
        "[tools.servers.everything]\ncommand = \"node\"\nargs = [{:?}, \"stdio\"]\nallow = [\"echo\"]\n",
        js.display().to_string()
    );
    std::fs::write(dir.join("gateway.toml"), toml).context("writing gateway.toml")
}

/// One turn: its total time and, for a tool turn, the call's time from its `result` action.
async fn turn(
    client: &reqwest::Client,
    url: &str,
    profile: &str,
) -> anyhow::Result<(Duration, Option<f64>)> {
    let started = Instant::now();
    let body = client
        .post(url)
        .header("accept", "application/x-ndjson")
        .json(&json!({"profile": profile, "message": "echo this", "system_prompt": "none"}))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let total = started.elapsed();
    let events: Vec<Value> = body
        .lines()
        .filter(|l| !l.is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let last = events.last().context("no events")?;
    if last["type"] != "text_done" {
        bail!("the turn failed: {last}");
    }
    let call = events
        .iter()
        .filter(|e| e["type"] == "action" && e["action"]["phase"] == "result")
        .find_map(|e| e["action"]["durationMs"].as_f64());
    Ok((total, call))
}

#[derive(Default)]
struct Samples {
    plain_ms: Vec<f64>,
    tool_ms: Vec<f64>,
    call_ms: Vec<f64>,
    errors: u64,
}

impl Samples {
    /// Note one turn: a plain turn has no call, a tool turn exactly its call's time.
    fn add(&mut self, result: anyhow::Result<(Duration, Option<f64>)>, tool: bool) {
        match (result, tool) {
            (Ok((total, None)), false) => self.plain_ms.push(total.as_secs_f64() * 1e3),
            (Ok((total, Some(call))), true) => {
                self.tool_ms.push(total.as_secs_f64() * 1e3);
                self.call_ms.push(call);
            }
            (outcome, _) => {
                let why = outcome.err().map_or(
                    "no tool call where one was expected, or one where none was".to_string(),
                    |e| e.to_string(),
                );
                eprintln!("tool phase: a turn went wrong: {why}");
                self.errors += 1;
            }
        }
    }

    fn report(mut self) -> ToolRound {
        let plain_p50 = percentile(&mut self.plain_ms, 0.5);
        let mut added: Vec<f64> = self
            .tool_ms
            .iter()
            .zip(&self.call_ms)
            .map(|(total, call)| total - call - plain_p50)
            .collect();
        let row = |name: &str, v: &mut Vec<f64>| {
            format!(
                "| {name} | {:.2} | {:.2} | {:.2} |",
                percentile(v, 0.5),
                percentile(v, 0.9),
                percentile(v, 0.99)
            )
        };
        let markdown = [
            "## Tool round (one MCP call per turn)\n".to_string(),
            format!(
                "{} plain and {} tool turns, one at a time, `POST /v1/conversation`; the tool is \
                 server-everything's `echo` over stdio. Added = tool turn − the call (as the host \
                 timed it) − median plain turn.\n",
                self.plain_ms.len(),
                self.tool_ms.len()
            ),
            "| ms | p50 | p90 | p99 |".into(),
            "| --- | --- | --- | --- |".into(),
            row("plain turn", &mut self.plain_ms),
            row("tool turn", &mut self.tool_ms),
            row("the call (tool's own time)", &mut self.call_ms),
            row("**added by the host per tool round**", &mut added),
            String::new(),
        ]
        .join("\n");
        let json = json!({
            "turns": self.tool_ms.len(),
            "plain_p50_ms": plain_p50,
            "tool_turn_p50_ms": percentile(&mut self.tool_ms, 0.5),
            "call_p50_ms": percentile(&mut self.call_ms, 0.5),
            "added_p50_ms": percentile(&mut added, 0.5),
            "added_p90_ms": percentile(&mut added, 0.9),
        });
        ToolRound {
            markdown,
            json,
            errors: self.errors,
            turns: (self.plain_ms.len() + self.tool_ms.len()) as u64,
        }
    }
}

/// The `q` quantile (nearest rank) of `values`; NaN when empty.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// A mock upstream on 127.0.0.1: a request offering tools and holding no tool result asks for
/// one `echo` call; any other gets a short answer. Returns its base URL.
async fn start_upstream() -> anyhow::Result<String> {
    let router = Router::new().route("/v1/chat/completions", post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}/v1"))
}

async fn answer(Json(body): Json<Value>) -> impl IntoResponse {
    let has_result = body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let delta = if body.get("tools").is_some() && !has_result {
        json!({"tool_calls": [{"index": 0, "id": "call_bench", "type": "function",
            "function": {"name": "echo", "arguments": "{\"message\": \"bench\"}"}}]})
    } else {
        json!({"content": "Done."})
    };
    let finish = if delta.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    let chunk = |delta: Value, finish: Value| {
        let chunk = json!({"id": "b", "object": "chat.completion.chunk", "created": 1,
            "model": "bench-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {chunk}\n\n")
    };
    let body = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(delta, Value::Null),
        chunk(json!({}), json!(finish)),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        body,
    )
}
