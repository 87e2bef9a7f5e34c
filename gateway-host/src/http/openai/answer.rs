//! How a turn's events become OpenAI's answer: `chat.completion.chunk` SSE frames for a
//! stream, one `chat.completion` object otherwise. Tool calls take OpenAI's strict shape
//! whatever the gateway kind: each streamed call is one `tool_calls` delta with its `index`,
//! `id`, `type`, `function.name` and whole `function.arguments` string, provider keys kept on
//! the call; the answer then finishes with `tool_calls`. When the session's memory could not
//! be updated with the turn, the finish chunk (or the completion) carries a top-level
//! `memory_error` saying why, as the host's own `text_done` event does.

use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use futures::future;
use futures::stream::{self, StreamExt};
use gateway_core::{Event, ToolCall, Usage, TOOL_CALLS_FINISH};
use serde::Serialize;

use super::unix_now;
use crate::http::error::{ApiError, OpenAiError};
use crate::http::sse;
use crate::turn::TurnEvents;

/// OpenAI's name for why an answer ended: `tool_calls` whenever it holds calls; else the
/// upstream's `length` and `content_filter` pass through and anything else (`stop`, `eos`,
/// none) is `stop`.
fn finish_reason(upstream: Option<&str>, has_calls: bool) -> &'static str {
    if has_calls {
        return TOOL_CALLS_FINISH;
    }
    match upstream {
        Some("length") => "length",
        Some("content_filter") => "content_filter",
        Some(TOOL_CALLS_FINISH) => TOOL_CALLS_FINISH,
        _ => "stop",
    }
}

/// What every chunk or completion of one response repeats.
pub(super) struct Meta {
    id: String,
    created: u64,
    model: String,
    /// A content chunk's JSON up to the content string, rendered once per response: a
    /// content chunk is then this, the escaped text and a constant tail.
    delta_head: String,
}

/// The tail of a content chunk after the content string, without and with `usage: null`.
const DELTA_TAIL: [&str; 2] = [
    r#"},"logprobs":null,"finish_reason":null}]}"#,
    r#"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
];

impl Meta {
    /// A new response (fresh id) answering as `model`.
    pub(super) fn new(model: String) -> Self {
        let random: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(24)
            .collect();
        let id = format!("chatcmpl-{random}");
        let created = unix_now();
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let delta_head = format!(
            r#"{{"id":{},"object":"chat.completion.chunk","created":{created},"model":{},"choices":[{{"index":0,"delta":{{"content":"#,
            json(&id),
            json(&model)
        );
        Self {
            id,
            created,
            model,
            delta_head,
        }
    }

    /// One `chat.completion.chunk` as JSON text. `usage`: absent without `include_usage`,
    /// else `null` or the usage object.
    fn chunk(&self, choice: Option<ChunkChoice<'_>>, usage: Option<Option<Usage>>) -> String {
        self.chunk_with(choice, usage, None)
    }

    /// [`chunk`](Self::chunk) with a `memory_error` when there is one.
    fn chunk_with(
        &self,
        choice: Option<ChunkChoice<'_>>,
        usage: Option<Option<Usage>>,
        memory_error: Option<&str>,
    ) -> String {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: choice.into_iter().collect(),
            usage,
            memory_error,
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    /// The `chat.completion` object of a non-streamed answer.
    fn completion(&self, answer: &Answer) -> String {
        let has_calls = !answer.calls.is_empty();
        let content = (!answer.text.is_empty() || !has_calls).then_some(answer.text.as_str());
        let completion = Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: [CompletionChoice {
                index: 0,
                message: CompletionMessage {
                    role: "assistant",
                    content,
                    refusal: None,
                    tool_calls: &answer.calls,
                },
                logprobs: None,
                finish_reason: finish_reason(answer.finish_reason.as_deref(), has_calls),
            }],
            usage: answer.usage,
            memory_error: answer.memory_error.as_deref(),
        };
        serde_json::to_string(&completion).unwrap_or_default()
    }
}

/// The frames of one streamed response: the role chunk, then one or more frames per event.
struct ChunkWriter {
    meta: Meta,
    include_usage: bool,
    /// Tool calls sent so far: the next call's `index`.
    calls: u32,
}

impl ChunkWriter {
    /// The chunk that opens the stream: `delta: {"role": "assistant", "content": ""}`.
    fn role(&self, out: &mut BytesMut) {
        let role = self.meta.chunk(
            Some(ChunkChoice::delta(Some("assistant"), Some(""), None)),
            self.usage_null(),
        );
        sse::frame(out, None, role.as_bytes());
    }

    /// Appends the SSE frames of one turn event: a content chunk from the pre-rendered head,
    /// anything else through [`frames`](Self::frames).
    fn write(&mut self, event: Event, out: &mut BytesMut) {
        match event {
            Event::Delta { text } if !text.is_empty() => {
                out.reserve(self.meta.delta_head.len() + text.len() + 80);
                out.put_slice(b"data: ");
                out.put_slice(self.meta.delta_head.as_bytes());
                // Writing into memory cannot fail.
                let _ = serde_json::to_writer(out.writer(), &text);
                out.put_slice(DELTA_TAIL[usize::from(self.include_usage)].as_bytes());
                out.put_slice(b"\n\n");
            }
            other => {
                for data in self.frames(other) {
                    sse::frame(out, None, data.as_bytes());
                }
            }
        }
    }

    /// `usage: null` on every chunk with `include_usage`, absent without.
    fn usage_null(&self) -> Option<Option<Usage>> {
        self.include_usage.then_some(None)
    }

    /// The `data:` payloads one turn event becomes.
    fn frames(&mut self, event: Event) -> Vec<String> {
        match event {
            Event::Delta { text } if !text.is_empty() => {
                let choice = ChunkChoice::delta(None, Some(&text), None);
                vec![self.meta.chunk(Some(choice), self.usage_null())]
            }
            Event::ToolCall { call } => {
                let index = self.calls;
                self.calls += 1;
                let mut choice = ChunkChoice::delta(None, None, None);
                choice.delta.tool_calls = Some([IndexedCall { index, call: &call }]);
                vec![self.meta.chunk(Some(choice), self.usage_null())]
            }
            Event::TextDone {
                usage,
                finish_reason: upstream,
                memory_error,
                ..
            } => {
                let finish = finish_reason(upstream.as_deref(), self.calls > 0);
                let choice = ChunkChoice::delta(None, None, Some(finish));
                let finish_chunk =
                    self.meta
                        .chunk_with(Some(choice), self.usage_null(), memory_error.as_deref());
                let mut frames = vec![finish_chunk];
                if let (true, Some(usage)) = (self.include_usage, usage) {
                    frames.push(self.meta.chunk(None, Some(Some(usage))));
                }
                frames.push("[DONE]".into());
                frames
            }
            Event::Error { error } => vec![OpenAiError(ApiError::Upstream(error)).body_text()],
            _ => Vec::new(),
        }
    }
}

/// SSE: a role chunk at once, content chunks, one chunk per tool call, a finish chunk, the
/// usage chunk when asked for and known, `[DONE]`; a failed turn ends with an
/// `{"error": ...}` chunk and no `[DONE]`.
pub(super) fn stream(
    events: TurnEvents,
    meta: Meta,
    include_usage: bool,
    keep_alive: Duration,
) -> Response {
    // `None` stands for the role chunk, sent before the first event.
    let items = stream::once(future::ready(None)).chain(events.map(Some));
    let mut writer = ChunkWriter {
        meta,
        include_usage,
        calls: 0,
    };
    let encode = move |item: Option<Event>, out: &mut BytesMut| match item {
        None => writer.role(out),
        Some(event) => writer.write(event, out),
    };
    sse::response(items, encode, keep_alive)
}

/// A whole answer: its text, calls, usage, the upstream's finish reason, and why memory was
/// not updated with it, if it was not.
#[derive(Default)]
struct Answer {
    text: String,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    memory_error: Option<String>,
}

/// Non-streamed: wait for the end of the turn and answer one `chat.completion` object
/// (`message.tool_calls` when the answer holds calls; `content` is then `null` without text).
pub(super) async fn complete(mut events: TurnEvents, meta: Meta) -> Result<Response, OpenAiError> {
    let mut answer = Answer::default();
    while let Some(event) = events.next().await {
        match event {
            Event::ToolCall { call } => answer.calls.push(call),
            Event::TextDone {
                response,
                usage,
                finish_reason,
                memory_error,
                ..
            } => {
                answer.text = response;
                answer.usage = usage;
                answer.finish_reason = finish_reason;
                answer.memory_error = memory_error;
                let body = meta.completion(&answer);
                return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
            }
            Event::Error { error } => return Err(ApiError::Upstream(error).into()),
            _ => {}
        }
    }
    Err(ApiError::Upstream("the turn ended without an answer".into()).into())
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_error: Option<&'a str>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [ToolCall],
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_error: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[IndexedCall<'a>; 1]>,
}

/// A whole call as a streamed `tool_calls` entry: its `index` in the answer, then the call in
/// OpenAI's wire form with its provider keys.
#[derive(Serialize)]
struct IndexedCall<'a> {
    index: u32,
    #[serde(flatten)]
    call: &'a ToolCall,
}

impl<'a> ChunkChoice<'a> {
    fn delta(
        role: Option<&'static str>,
        content: Option<&'a str>,
        finish_reason: Option<&'static str>,
    ) -> Self {
        Self {
            index: 0,
            delta: Delta {
                role,
                content,
                tool_calls: None,
            },
            logprobs: None,
            finish_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn writer(include_usage: bool) -> ChunkWriter {
        ChunkWriter {
            meta: Meta::new("m\"odel".into()),
            include_usage,
            calls: 0,
        }
    }

    #[test]
    fn content_frames_equal_the_serialised_chunk() {
        for text in ["hi", "line\nbreak \"quoted\" é 🙂", "\u{1}"] {
            for include_usage in [false, true] {
                let mut writer = writer(include_usage);
                let mut out = BytesMut::new();
                writer.write(Event::delta(text), &mut out);
                let [frame] = &writer.frames(Event::delta(text))[..] else {
                    panic!("one frame");
                };
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    format!("data: {frame}\n\n")
                );
            }
        }
    }

    #[test]
    fn chunk_ids_are_stable_per_response_and_random_across() {
        let a = Meta::new("p".into());
        let b = Meta::new("p".into());
        assert!(
            a.id.starts_with("chatcmpl-") && a.id.len() == 33,
            "{}",
            a.id
        );
        assert_ne!(a.id, b.id);
        let id = a.id.clone();
        let mut writer = ChunkWriter {
            meta: a,
            include_usage: false,
            calls: 0,
        };
        let frames = writer.frames(Event::delta("hi"));
        let chunk: Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(chunk["id"], id.as_str());
        assert!(chunk.get("usage").is_none());
    }

    #[test]
    fn each_call_is_one_indexed_delta_and_the_answer_finishes_with_tool_calls() {
        let mut writer = writer(false);
        let mut signed = ToolCall::new("c1", "get_weather", r#"{"city":"Paris"}"#);
        signed.extra.insert(
            "extra_content".into(),
            json!({"google": {"thought_signature": "c2ln"}}),
        );
        let calls = [signed, ToolCall::new("c2", "get_time", "{}")];
        for (index, call) in calls.iter().enumerate() {
            let [frame] = &writer.frames(Event::tool_call(call.clone()))[..] else {
                panic!("one frame per call");
            };
            let chunk: Value = serde_json::from_str(frame).unwrap();
            let mut expected = serde_json::to_value(call).unwrap();
            expected["index"] = json!(index);
            assert_eq!(
                chunk["choices"][0]["delta"],
                json!({"tool_calls": [expected]})
            );
            assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
        }
        // The upstream's `stop` (Gemini) still finishes an answer with calls as `tool_calls`.
        let mut done = Event::text_done("");
        if let Event::TextDone { finish_reason, .. } = &mut done {
            *finish_reason = Some("stop".into());
        }
        let frames = writer.frames(done);
        let finish: Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(frames.last().unwrap(), "[DONE]");
    }

    #[test]
    fn a_memory_error_rides_on_the_finish_chunk_and_the_completion_only() {
        let why = "session memory was not updated: redis down";
        let mut done = Event::text_done("hi");
        if let Event::TextDone { memory_error, .. } = &mut done {
            *memory_error = Some(why.into());
        }
        let mut writer = writer(true);
        let frames = writer.frames(done);
        let finish: Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(finish["memory_error"], why);
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        let delta: Value = serde_json::from_str(&writer.frames(Event::delta("a"))[0]).unwrap();
        assert!(delta.get("memory_error").is_none(), "{delta}");
        let clean: Value = serde_json::from_str(&writer.frames(Event::text_done(""))[0]).unwrap();
        assert!(clean.get("memory_error").is_none(), "{clean}");

        let meta = Meta::new("p".into());
        let answer = Answer {
            text: "hi".into(),
            memory_error: Some(why.into()),
            ..Answer::default()
        };
        let body: Value = serde_json::from_str(&meta.completion(&answer)).unwrap();
        assert_eq!(body["memory_error"], why);
        let body: Value = serde_json::from_str(&meta.completion(&Answer::default())).unwrap();
        assert!(body.get("memory_error").is_none(), "{body}");
    }

    #[test]
    fn a_completion_with_calls_has_null_content_without_text() {
        let meta = Meta::new("p".into());
        let calls = vec![ToolCall::new("c1", "f", "{}")];
        let cases = [
            ("", calls.clone(), Value::Null, "tool_calls"),
            ("Checking.", calls, json!("Checking."), "tool_calls"),
            ("", vec![], json!(""), "stop"),
        ];
        for (text, calls, content, finish) in cases {
            let answer = Answer {
                text: text.into(),
                calls: calls.clone(),
                ..Answer::default()
            };
            let body: Value = serde_json::from_str(&meta.completion(&answer)).unwrap();
            let choice = &body["choices"][0];
            assert_eq!(choice["message"]["content"], content);
            assert_eq!(choice["finish_reason"], finish);
            match calls.is_empty() {
                true => assert!(choice["message"].get("tool_calls").is_none()),
                false => assert_eq!(
                    choice["message"]["tool_calls"],
                    serde_json::to_value(&calls).unwrap()
                ),
            }
        }
    }
}
