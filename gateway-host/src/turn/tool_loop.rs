//! The tool loop of a turn whose profile offers MCP tools (see `docs/tools.md`).
//!
//! Each round sends the conversation with the profile's tools through failover and streams
//! the spoken text (the preamble, "Let me check") at once. When the answer asks for tool
//! calls, every call gets an `action` event with `phase: "start"`, the calls run concurrently
//! (each within its server's limit), each ends with a `result` or `error` action, and the
//! results go back to the model in the next round. A failure of a tool (error, timeout,
//! unknown name, arguments that are not JSON, a crashed server) is that tool's result: the
//! turn goes on. After `tools.max_rounds` rounds of calls the model is asked once more with
//! `tool_choice: "none"`, and its answer ends the turn. The final `text_done` holds every
//! spoken word and every action; the whole exchange (assistant messages with their calls,
//! tool results, the answer) is handed to memory.
//!
//! The loop runs as a task feeding the turn's stream; dropping the stream (interrupt, steer,
//! client gone, shutdown) aborts the task, which drops the running calls: MCP cancels them.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt as _};
use gateway_core::{ChatMessage, Event, EventStream, GatewayError, ToolCall, Turn, Usage};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::failover::{self, Candidate, Observer};
use crate::state::AppState;
use crate::tools::{ToolOutcome, ToolSet};

/// The messages a completed tool turn adds to memory after the user message.
pub(crate) type Exchange = Arc<OnceLock<Vec<ChatMessage>>>;

/// What the loop of one turn needs.
pub(crate) struct ToolLoop {
    /// For metrics.
    pub state: AppState,
    /// The tools offered.
    pub tools: ToolSet,
    /// Rounds of calls before the model must answer without tools.
    pub max_rounds: u32,
    /// The profile's gateways, tried in order each round.
    pub candidates: Vec<Candidate>,
    /// Metrics and logs of the attempts.
    pub observe: Observer,
    /// Written with the whole exchange before the final `text_done` is sent.
    pub exchange: Exchange,
}

/// The turn's events: the loop runs in a task that ends when the stream is dropped.
pub(crate) fn events(tool_loop: ToolLoop, turn: Turn) -> EventStream {
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(tool_loop.run(turn, Sink(tx)));
    let guard = AbortOnDrop(task.abort_handle());
    Box::pin(futures::stream::poll_fn(move |cx| {
        let _keep = &guard;
        rx.poll_recv(cx)
    }))
}

/// Aborts the loop's task when the turn's stream is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The sending side of the turn's stream; `Err(Gone)` once the stream was dropped.
struct Sink(mpsc::Sender<Result<Event, GatewayError>>);

/// The turn's stream is gone: the loop stops.
struct Gone;

impl Sink {
    async fn send(&self, item: Result<Event, GatewayError>) -> Result<(), Gone> {
        self.0.send(item).await.map_err(|_| Gone)
    }
}

/// What the rounds so far add up to.
#[derive(Default)]
struct Answer {
    /// Every delta's text.
    spoken: String,
    /// Every action sent.
    actions: Vec<Value>,
    /// Token usage summed over the rounds that reported it.
    usage: Option<Usage>,
    /// Messages for memory after the user message.
    exchange: Vec<ChatMessage>,
}

/// One round's answer.
struct Round {
    text: String,
    calls: Vec<ToolCall>,
    finish_reason: Option<String>,
}

impl ToolLoop {
    async fn run(self, mut turn: Turn, sink: Sink) {
        let offer = with_tools(&turn.extra, self.tools.openai_tools(), false);
        let last = with_tools(&turn.extra, self.tools.openai_tools(), true);
        let mut answer = Answer::default();
        for round in 0..=self.max_rounds {
            let tools_allowed = round < self.max_rounds;
            turn.extra = if tools_allowed { &offer } else { &last }.clone();
            let Ok(Some(step)) = self.round(&turn, &sink, &mut answer).await else {
                return;
            };
            if step.calls.is_empty() || !tools_allowed {
                if !step.calls.is_empty() {
                    tracing::warn!(
                        rounds = self.max_rounds,
                        "the model asked for tools after the last tool round; not run"
                    );
                }
                let _ = self.finish(step, answer, &sink).await;
                return;
            }
            let assistant = ChatMessage::assistant_with_tool_calls(step.text, step.calls.clone());
            turn.messages.push(assistant.clone());
            answer.exchange.push(assistant);
            let Ok(results) = self.run_calls(&step.calls, &sink, &mut answer).await else {
                return;
            };
            for (call, result) in step.calls.iter().zip(results) {
                let message = ChatMessage::tool_result(call.id.clone(), result);
                turn.messages.push(message.clone());
                answer.exchange.push(message);
            }
        }
    }

    /// Stream one round: deltas and the gateway's own actions pass on, calls are collected.
    /// `Ok(None)` when the round failed (its error was passed on) or the stream ended early.
    async fn round(
        &self,
        turn: &Turn,
        sink: &Sink,
        answer: &mut Answer,
    ) -> Result<Option<Round>, Gone> {
        let mut events =
            failover::events(self.candidates.clone(), turn.clone(), self.observe.clone());
        let mut text = String::new();
        let mut calls = Vec::new();
        while let Some(item) = events.next().await {
            match item {
                Ok(Event::ToolCall { call }) => calls.push(call),
                Ok(Event::TextDone {
                    usage,
                    finish_reason,
                    ..
                }) => {
                    answer.usage = add_usage(answer.usage, usage);
                    return Ok(Some(Round {
                        text,
                        calls,
                        finish_reason,
                    }));
                }
                Ok(Event::Delta { text: piece }) => {
                    text.push_str(&piece);
                    answer.spoken.push_str(&piece);
                    sink.send(Ok(Event::Delta { text: piece })).await?;
                }
                Ok(Event::Action { action }) => {
                    answer.actions.push(action.clone());
                    sink.send(Ok(Event::Action { action })).await?;
                }
                Ok(event @ Event::Error { .. }) => {
                    sink.send(Ok(event)).await?;
                    return Ok(None);
                }
                Ok(other) => sink.send(Ok(other)).await?,
                Err(error) => {
                    sink.send(Err(error)).await?;
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Announce every call, run them concurrently, announce each end as it comes; the texts
    /// for the model in the calls' order.
    async fn run_calls(
        &self,
        calls: &[ToolCall],
        sink: &Sink,
        answer: &mut Answer,
    ) -> Result<Vec<String>, Gone> {
        for call in calls {
            self.act(action_start(call), sink, answer).await?;
        }
        let mut running: FuturesUnordered<_> = calls
            .iter()
            .enumerate()
            .map(|(i, call)| async move { (i, self.tools.call(call).await) })
            .collect();
        let mut results = vec![String::new(); calls.len()];
        while let Some((i, outcome)) = running.next().await {
            self.record(&calls[i], &outcome);
            self.act(action_end(&calls[i], &outcome), sink, answer)
                .await?;
            results[i] = match outcome.result {
                Ok(text) => text,
                Err(error) => format!("Error: {error}"),
            };
        }
        Ok(results)
    }

    async fn act(&self, action: Value, sink: &Sink, answer: &mut Answer) -> Result<(), Gone> {
        answer.actions.push(action.clone());
        sink.send(Ok(Event::Action { action })).await
    }

    /// Metrics and a log line of one finished call.
    fn record(&self, call: &ToolCall, outcome: &ToolOutcome) {
        // Label values are configured names only: a name the model made up is "(unknown)".
        let (server, tool) = match &outcome.server {
            Some(server) => (server.as_str(), call.name.as_str()),
            None => ("", "(unknown)"),
        };
        let cause = outcome.result.as_ref().err().map(|e| e.cause());
        self.state
            .metrics()
            .tool_call(server, tool, outcome.elapsed, cause);
        tracing::debug!(server, tool, elapsed_ms = outcome.elapsed.as_millis() as u64,
            error = ?outcome.result.as_ref().err(), "tool call done");
    }

    /// The final `text_done`: every spoken word and action; memory gets the exchange first.
    async fn finish(&self, last: Round, mut answer: Answer, sink: &Sink) -> Result<(), Gone> {
        if !last.text.trim().is_empty() {
            answer.exchange.push(ChatMessage::assistant(last.text));
        }
        let _ = self.exchange.set(answer.exchange);
        let done = Event::TextDone {
            response: answer.spoken,
            actions: answer.actions,
            timing: None,
            usage: answer.usage,
            finish_reason: last.finish_reason.filter(|_| last.calls.is_empty()),
            interrupted: false,
            memory_error: None,
        };
        sink.send(Ok(done)).await
    }
}

/// The turn's extra fields with the host's `tools` (and `tool_choice: "none"` for the last
/// round), shared by every round that uses them.
fn with_tools(extra: &Map<String, Value>, tools: Value, last: bool) -> Arc<Map<String, Value>> {
    let mut extra = extra.clone();
    extra.insert("tools".into(), tools);
    if last {
        extra.insert("tool_choice".into(), "none".into());
    }
    Arc::new(extra)
}

fn add_usage(sum: Option<Usage>, more: Option<Usage>) -> Option<Usage> {
    match (sum, more) {
        (Some(a), Some(b)) => Some(Usage {
            prompt_tokens: a.prompt_tokens + b.prompt_tokens,
            completion_tokens: a.completion_tokens + b.completion_tokens,
            total_tokens: a.total_tokens + b.total_tokens,
        }),
        (a, b) => a.or(b),
    }
}

/// A call's arguments as shown in actions: the JSON value, or the text when it is not JSON.
fn input_of(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| call.arguments.clone().into())
}

/// Seconds since the epoch, as OpenVoiceUI's `ts`.
fn now_ts() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// The `start` action of a call, in OpenVoiceUI's shape.
fn action_start(call: &ToolCall) -> Value {
    json!({"type": "tool", "phase": "start", "name": call.name, "toolCallId": call.id,
           "input": input_of(call), "ts": now_ts()})
}

/// The `result` or `error` action of a finished call.
fn action_end(call: &ToolCall, outcome: &ToolOutcome) -> Value {
    let mut action = json!({"type": "tool", "name": call.name, "toolCallId": call.id,
        "input": input_of(call), "ts": now_ts(),
        "durationMs": (outcome.elapsed.as_secs_f64() * 1e6).round() / 1e3});
    match &outcome.result {
        Ok(text) => {
            action["phase"] = "result".into();
            action["result"] = text.as_str().into();
        }
        Err(error) => {
            action["phase"] = "error".into();
            action["error"] = error.to_string().into();
        }
    }
    if let Some(server) = &outcome.server {
        action["server"] = server.as_str().into();
    }
    action
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolError;
    use std::time::Duration;

    #[test]
    fn actions_have_openvoiceuis_shape() {
        let call = ToolCall::new("call_1", "get_sum", r#"{"a":1,"b":2}"#);
        let start = action_start(&call);
        assert_eq!(start["phase"], "start");
        assert_eq!(start["input"], json!({"a": 1, "b": 2}));
        assert!(start["ts"].as_f64().unwrap() > 1.0e9);
        let ok = ToolOutcome {
            server: Some("everything".into()),
            result: Ok("3".into()),
            elapsed: Duration::from_millis(5),
        };
        let end = action_end(&call, &ok);
        assert_eq!(
            (&end["phase"], &end["result"], &end["toolCallId"]),
            (&json!("result"), &json!("3"), &json!("call_1"))
        );
        let bad = ToolCall::new("call_2", "get_sum", "{not json");
        let failed = ToolOutcome {
            server: None,
            result: Err(ToolError::Timeout { ms: 500 }),
            elapsed: Duration::from_millis(500),
        };
        let end = action_end(&bad, &failed);
        assert_eq!(end["phase"], "error");
        assert_eq!(end["input"], "{not json");
        assert!(end["error"].as_str().unwrap().contains("500 ms"));
    }

    #[test]
    fn the_last_round_forbids_tools_and_usage_adds_up() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let offer = with_tools(&Map::new(), tools.clone(), false);
        assert_eq!(offer["tools"], tools);
        assert!(!offer.contains_key("tool_choice"));
        assert_eq!(with_tools(&Map::new(), tools, true)["tool_choice"], "none");
        let u = |n| Usage {
            prompt_tokens: n,
            completion_tokens: n,
            total_tokens: 2 * n,
        };
        assert_eq!(add_usage(Some(u(1)), Some(u(2))), Some(u(3)));
        assert_eq!(add_usage(None, Some(u(2))), Some(u(2)));
    }
}
