//! Turning Chat Completions responses into spoken text and tool calls: the streamed
//! `chat.completion.chunk` format (over [`crate::sse`]), a plain JSON `chat.completion` body,
//! and error bodies.
//!
//! Pure and synchronous, like the SSE decoder, so it can be fuzzed without a network.
//!
//! ```
//! use gateway_openai_compat::completion::CompletionDecoder;
//! let mut decoder = CompletionDecoder::new();
//! let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
//! assert_eq!(decoder.push(body).unwrap(), ["Hi"]);
//! assert_eq!(decoder.finish().unwrap().text, "Hi");
//! ```

use std::borrow::Cow;

use gateway_core::{GatewayError, ToolCall, Usage};
use serde::Deserialize;

use crate::sse::{SseDecoder, SseEvent};
use crate::tool_calls::{self, CallDelta, ToolCalls};

/// Most bytes of a non-SSE body kept to explain a stream that held no events.
const PREFIX_LIMIT: usize = 4096;

/// The outcome of a finished answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The full spoken text: every delta concatenated.
    pub text: String,
    /// Token usage, when the upstream reported it.
    pub usage: Option<Usage>,
    /// The finish reason: `tool_calls` whenever the answer holds calls, otherwise the
    /// upstream's own when it sent one.
    pub finish_reason: Option<String>,
    /// The tool calls the answer asks for, complete and in order, every
    /// provider's quirks normalised (`docs/openai-api.md`, "Tool calls and provider quirks").
    pub tool_calls: Vec<ToolCall>,
}

/// Decodes a streamed Chat Completions body: push bytes, get the new content deltas. Tool
/// call deltas are gathered on the side and come out whole in the [`Completion`].
///
/// After an error the decoder is spent: the error is final. When the bytes of one `push`
/// hold content followed by an error, `push` returns the content and the error waits in
/// [`take_error`](Self::take_error), so no spoken text is lost. Reasoning fields
/// (`reasoning_content`, `reasoning`) are never part of the text.
#[derive(Debug, Default)]
pub struct CompletionDecoder {
    sse: SseDecoder,
    text: String,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    calls: ToolCalls,
    done: bool,
    failed: bool,
    error: Option<GatewayError>,
    events: usize,
    prefix: Vec<u8>,
}

impl CompletionDecoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed received bytes; returns the non-empty content deltas they completed, in order.
    /// Bytes after `[DONE]` are ignored.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, GatewayError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if self.done || self.failed {
            return Ok(Vec::new());
        }
        if self.events == 0 && self.prefix.len() < PREFIX_LIMIT {
            let take = bytes.len().min(PREFIX_LIMIT - self.prefix.len());
            self.prefix.extend_from_slice(&bytes[..take]);
        }
        self.sse.push(bytes);
        self.drain()
    }

    /// End of the body: flushes an unterminated last event and decides how the turn ended.
    /// A stream with neither `[DONE]` nor a finish reason is [`GatewayError::Truncated`].
    /// Returns the deltas of a flushed last event along with the outcome.
    pub fn finish_with_deltas(&mut self) -> Result<(Vec<String>, Completion), GatewayError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if self.failed {
            return Err(GatewayError::Truncated);
        }
        self.sse.finish();
        let deltas = match self.drain() {
            Ok(deltas) => deltas,
            // A last event cut off after the finish reason loses nothing spoken.
            Err(GatewayError::Truncated) if self.finish_reason.is_some() => Vec::new(),
            Err(error) => return Err(error),
        };
        if self.error.is_some() || self.done || self.finish_reason.is_some() {
            let completion = self.completion().inspect_err(|_| self.failed = true)?;
            return Ok((deltas, completion));
        }
        self.failed = true;
        if self.events == 0 {
            if let Some(message) = error_in_json(&self.prefix) {
                return Err(GatewayError::Provider(message));
            }
        }
        Err(GatewayError::Truncated)
    }

    /// Like [`finish_with_deltas`](Self::finish_with_deltas) for callers that take the text
    /// from the [`Completion`] only.
    pub fn finish(&mut self) -> Result<Completion, GatewayError> {
        self.finish_with_deltas().map(|(_, completion)| completion)
    }

    /// The error that ended the stream right after the deltas the last `push` returned.
    pub fn take_error(&mut self) -> Option<GatewayError> {
        self.error.take()
    }

    /// True once `[DONE]` was seen: the answer is complete, nothing more will be read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// True once a finish reason or `[DONE]` was seen: an end of stream now is a normal end.
    pub fn is_finished(&self) -> bool {
        self.done || self.finish_reason.is_some()
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True once a tool call started arriving.
    pub fn has_tool_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// The outcome so far (text, usage, finish reason, tool calls). Fails when a tool call
    /// cannot be completed (no name, or cut at `max_tokens` inside its arguments).
    pub fn completion(&mut self) -> Result<Completion, GatewayError> {
        let tool_calls = self.calls.finish(self.finish_reason.as_deref())?;
        Ok(Completion {
            text: self.text.clone(),
            usage: self.usage,
            finish_reason: tool_calls::finish_reason(&tool_calls, self.finish_reason.clone()),
            tool_calls,
        })
    }

    fn drain(&mut self) -> Result<Vec<String>, GatewayError> {
        let mut deltas = Vec::new();
        while !self.done {
            let event = match self.sse.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => return self.fail(deltas, GatewayError::Malformed(e.to_string())),
            };
            self.events += 1;
            match self.on_event(&event) {
                Ok(Some(delta)) => deltas.push(delta),
                Ok(None) => {}
                Err(e) => return self.fail(deltas, e),
            }
        }
        Ok(deltas)
    }

    /// Ends the stream with `error`, handing out `deltas` decoded before it first.
    fn fail(
        &mut self,
        deltas: Vec<String>,
        error: GatewayError,
    ) -> Result<Vec<String>, GatewayError> {
        self.failed = true;
        if deltas.is_empty() {
            return Err(error);
        }
        self.error = Some(error);
        Ok(deltas)
    }

    fn on_event(&mut self, event: &SseEvent) -> Result<Option<String>, GatewayError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(None);
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let chunk: Chunk<'_> = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(_) if !event.complete => return Err(GatewayError::Truncated),
            Err(e) => {
                return Err(GatewayError::Malformed(format!(
                    "malformed JSON in stream chunk: {e}"
                )))
            }
        };
        if let Some(message) = chunk.error_message() {
            return Err(GatewayError::Provider(message));
        }
        if let Some(usage) = chunk.usage.or(chunk.x_groq.and_then(|x| x.usage)) {
            self.usage = Some(usage.into());
        }
        let Some(choice) = chunk
            .choices
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0)
        else {
            return Ok(None);
        };
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason.into_owned());
        }
        let Some(delta) = choice.delta else {
            return Ok(None);
        };
        for call in delta.tool_calls.into_iter().flatten() {
            self.calls.push(call)?;
        }
        match delta.content {
            Some(content) if !content.is_empty() => {
                self.text.push_str(&content);
                Ok(Some(content.into_owned()))
            }
            _ => Ok(None),
        }
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    x_groq: Option<XGroq>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    /// `"error"` on vLLM's flat error chunk, whose `message` is then the error.
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<serde_json::Value>,
}

impl Chunk<'_> {
    /// The error this chunk reports: an `error` field (OpenAI, OpenRouter, most servers), or
    /// vLLM's flat `{"object": "error", "message": ..., "type": ..., "code": ...}`.
    fn error_message(&self) -> Option<String> {
        if let Some(message) = self.error.as_ref().and_then(error_message) {
            return Some(message);
        }
        if self.object.as_deref() != Some("error") {
            return None;
        }
        let message = self.message.as_ref().and_then(error_message);
        Some(message.unwrap_or_else(|| "error chunk without a message".into()))
    }
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<CallDelta>>,
}

#[derive(Deserialize)]
struct XGroq {
    #[serde(default)]
    usage: Option<RawUsage>,
}

#[derive(Deserialize, Clone, Copy)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl From<RawUsage> for Usage {
    fn from(raw: RawUsage) -> Self {
        let prompt_tokens = raw.prompt_tokens.unwrap_or(0);
        let completion_tokens = raw.completion_tokens.unwrap_or(0);
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: raw
                .total_tokens
                .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
        }
    }
}

#[derive(Deserialize)]
struct FullCompletion {
    #[serde(default)]
    choices: Vec<FullChoice>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct FullChoice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<FullMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct FullMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

/// Parse a plain JSON `chat.completion` body (a non-streamed answer to a streaming request).
/// An `error` object in it is [`GatewayError::Provider`]; anything else unexpected is
/// [`GatewayError::Malformed`].
pub fn parse_completion_body(body: &[u8]) -> Result<Completion, GatewayError> {
    let full: FullCompletion = serde_json::from_slice(body).map_err(|e| {
        GatewayError::Malformed(format!("malformed JSON chat.completion body: {e}"))
    })?;
    if let Some(message) = full.error.as_ref().and_then(error_message) {
        return Err(GatewayError::Provider(message));
    }
    let choice = full
        .choices
        .into_iter()
        .find(|c| c.index.unwrap_or(0) == 0)
        .ok_or_else(|| GatewayError::Malformed("chat.completion body without choices".into()))?;
    let (text, mut calls) = choice.message.map_or_else(Default::default, |m| {
        (
            m.content.unwrap_or_default(),
            m.tool_calls.unwrap_or_default(),
        )
    });
    tool_calls::normalise(&mut calls, choice.finish_reason.as_deref())?;
    Ok(Completion {
        text,
        usage: full.usage.map(Usage::from),
        finish_reason: tool_calls::finish_reason(&calls, choice.finish_reason),
        tool_calls: calls,
    })
}

/// The message of an `error` value: `{"message": ...}`, a plain string, or a short rendering
/// of anything else. `null` and `false` are no error.
fn error_message(error: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match error {
        Value::Null | Value::Bool(false) => None,
        Value::String(s) => Some(short(s)),
        Value::Object(map) => {
            let text =
                ["message", "error", "detail", "msg"]
                    .iter()
                    .find_map(|k| match map.get(*k) {
                        Some(Value::String(s)) if !s.trim().is_empty() => Some(short(s)),
                        Some(inner @ Value::Object(_)) => error_message(inner),
                        _ => None,
                    });
            Some(text.unwrap_or_else(|| short(&error.to_string())))
        }
        other => Some(short(&other.to_string())),
    }
}

/// The error message of a JSON body shaped `{"error": ...}`, if it is one.
fn error_in_json(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    error_message(value.get("error")?)
}

/// The provider's explanation in an HTTP error body: `error.message` (OpenAI shape), a string
/// `error` (Ollama and others), a top-level `message` or `detail` (vLLM, FastAPI), an HTML
/// `<title>`, or the first 200 characters of a plain-text body, whitespace collapsed.
/// `None` for an empty body.
pub fn error_body_message(body: &[u8]) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let serde_json::Value::Object(map) = &value {
            if let Some(message) = map.get("error").and_then(error_message) {
                return Some(message);
            }
            for key in ["message", "detail"] {
                if let Some(serde_json::Value::String(s)) = map.get(key) {
                    return Some(short(s));
                }
            }
        }
        return Some(short(&value.to_string())).filter(|s| !s.is_empty());
    }
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    if let (Some(open), Some(close)) = (lower.find("<title>"), lower.find("</title>")) {
        let start = open + "<title>".len();
        if start <= close {
            if let Some(title) = text.get(start..close) {
                let title = short(title);
                if !title.is_empty() {
                    return Some(title);
                }
            }
        }
    }
    let text = short(&text);
    (!text.is_empty()).then_some(text)
}

/// Whitespace collapsed, control characters dropped (an upstream's text must not steer a
/// terminal the log is read on), at most 200 characters.
fn short(text: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
        if out.chars().count() > MAX {
            let mut cut: String = out.chars().take(MAX).collect();
            cut.push('…');
            return cut;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8]) -> Result<(String, Completion), GatewayError> {
        let mut decoder = CompletionDecoder::new();
        let mut text = decoder.push(body)?.concat();
        let (tail, completion) = decoder.finish_with_deltas()?;
        text.push_str(&tail.concat());
        Ok((text, completion))
    }

    #[test]
    fn content_before_an_error_in_the_same_read_is_not_lost() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n",
            "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
        );
        let mut decoder = CompletionDecoder::new();
        assert_eq!(decoder.push(body.as_bytes()).unwrap(), ["Hello"]);
        let error = decoder
            .take_error()
            .expect("the error waits after the content");
        assert!(error.to_string().contains("overloaded"), "{error}");
        assert!(decoder.take_error().is_none());
        assert!(decoder.push(b"data: [DONE]\n\n").unwrap().is_empty());

        let mut decoder = CompletionDecoder::new();
        assert_eq!(decoder.push(body.as_bytes()).unwrap(), ["Hello"]);
        assert!(
            decoder.finish().is_err(),
            "finish reports the waiting error"
        );
    }

    #[test]
    fn deltas_usage_and_reasoning() {
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"hmm\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"reasoning\":\"x\",\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\" \\\"you\\\"\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"ignored\"}}]}\n\n",
        );
        let (text, completion) = run(body.as_bytes()).unwrap();
        assert_eq!(text, "Hi \"you\"");
        assert_eq!(completion.text, text);
        assert_eq!(completion.finish_reason.as_deref(), Some("length"));
        assert_eq!(
            completion.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 5
            })
        );
    }

    #[test]
    fn endings() {
        let finished =
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"eos\"}]}\n\n";
        assert_eq!(run(finished.as_bytes()).unwrap().0, "a");
        let done_only = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]";
        assert_eq!(run(done_only.as_bytes()).unwrap().0, "a");
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
        assert_eq!(run(cut.as_bytes()), Err(GatewayError::Truncated));
        let cut_mid_line = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"cho";
        assert_eq!(run(cut_mid_line.as_bytes()), Err(GatewayError::Truncated));
        assert_eq!(run(b""), Err(GatewayError::Truncated));
        let cut_after_finish = format!("{finished}data: {{\"choices\":[],\"usa");
        assert_eq!(run(cut_after_finish.as_bytes()).unwrap().0, "a");
    }

    #[test]
    fn errors_in_stream() {
        let malformed = "data: {\"choices\":[{\"delta\":{\"content\":\"bro\n\n";
        let err = run(malformed.as_bytes()).unwrap_err();
        assert!(matches!(err, GatewayError::Malformed(_)));
        assert!(err.to_string().contains("malformed"));
        let provider = "data: {\"error\":{\"code\":502,\"message\":\"overloaded\"},\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
        assert_eq!(
            run(provider.as_bytes()),
            Err(GatewayError::Provider("overloaded".into()))
        );
        let string_error = "data: {\"error\":\"quota exceeded\"}\n\n";
        assert_eq!(
            run(string_error.as_bytes()),
            Err(GatewayError::Provider("quota exceeded".into()))
        );
        let vllm_flat = "data: {\"object\": \"error\", \"message\": \"engine died\", \"type\": \"BadRequestError\", \"param\": null, \"code\": 400}\n\n";
        assert_eq!(
            run(vllm_flat.as_bytes()),
            Err(GatewayError::Provider("engine died".into()))
        );
        let no_message = "data: {\"object\":\"error\"}\n\n";
        assert!(matches!(
            run(no_message.as_bytes()),
            Err(GatewayError::Provider(_))
        ));
        let a_message_is_not_an_error = "data: {\"object\":\"chat.completion.chunk\",\"message\":\"hi\",\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(run(a_message_is_not_an_error.as_bytes()).unwrap().0, "ok");
        let null_error = "data: {\"error\":null,\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(run(null_error.as_bytes()).unwrap().0, "ok");
        let bare_json = "{\"error\":{\"message\":\"bad model\"}}\n";
        assert_eq!(
            run(bare_json.as_bytes()),
            Err(GatewayError::Provider("bad model".into()))
        );
    }

    #[test]
    fn completion_body() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        let completion = parse_completion_body(body).unwrap();
        assert_eq!(completion.text, "Hello");
        assert_eq!(completion.usage.map(|u| u.total_tokens), Some(2));
        assert!(matches!(
            parse_completion_body(b"{\"error\":\"nope\"}"),
            Err(GatewayError::Provider(m)) if m == "nope"
        ));
        assert!(matches!(
            parse_completion_body(b"<html>"),
            Err(GatewayError::Malformed(_))
        ));
    }

    #[test]
    fn completion_body_with_tool_calls() {
        let body = br#"{"object":"chat.completion","choices":[{"index":0,"finish_reason":"stop",
            "message":{"role":"assistant","content":null,"tool_calls":[
              {"id":"c1","type":"function","function":{"name":"get_weather","arguments":{"city":"Oslo"}},
               "extra_content":{"google":{"thought_signature":"c2ln"}}},
              {"type":"function","function":{"name":"get_time","arguments":""}}]}}]}"#;
        let completion = parse_completion_body(body).unwrap();
        assert_eq!(completion.text, "");
        assert_eq!(completion.finish_reason.as_deref(), Some("tool_calls"));
        let calls = &completion.tool_calls;
        assert_eq!(calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(
            calls[0].extra["extra_content"]["google"]["thought_signature"],
            "c2ln"
        );
        assert_eq!(
            (calls[1].name.as_str(), calls[1].arguments.as_str()),
            ("get_time", "{}")
        );
        assert!(calls[1].id.starts_with("call_"));
    }

    #[test]
    fn streamed_tool_calls_come_whole_in_the_completion() {
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"One moment.\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":\"stop\"}]}\n\n",
        );
        let mut decoder = CompletionDecoder::new();
        assert_eq!(decoder.push(body.as_bytes()).unwrap(), ["One moment."]);
        assert!(decoder.has_tool_calls());
        let completion = decoder.finish().unwrap();
        assert_eq!(completion.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            completion.tool_calls,
            [ToolCall::new("a", "f", "{\"x\":1}")]
        );
    }

    #[test]
    fn error_bodies() {
        let openai =
            br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#;
        assert_eq!(
            error_body_message(openai).as_deref(),
            Some("Incorrect API key provided")
        );
        assert_eq!(
            error_body_message(br#"{"error":"model 'x' not found"}"#).as_deref(),
            Some("model 'x' not found")
        );
        assert_eq!(
            error_body_message(br#"{"object":"error","message":"too long","code":400}"#).as_deref(),
            Some("too long")
        );
        assert_eq!(
            error_body_message(br#"{"detail":"Not Found"}"#).as_deref(),
            Some("Not Found")
        );
        let html = b"<html>\r\n<head><title>502 Bad Gateway</title></head><body>x</body></html>";
        assert_eq!(error_body_message(html).as_deref(), Some("502 Bad Gateway"));
        assert_eq!(
            error_body_message(b"  upstream\n  busy  ").as_deref(),
            Some("upstream busy")
        );
        assert_eq!(error_body_message(b"   "), None);
        assert_eq!(
            error_body_message(b"{\"error\":\"bad\\u0000 \\u001b[31mred\\u0007\"}").as_deref(),
            Some("bad [31mred"),
            "control characters never reach a log or an event"
        );
        assert_eq!(
            error_body_message(b"raw \x1b[2Jclear\x00").as_deref(),
            Some("raw [2Jclear")
        );
        let long = "x ".repeat(500);
        let message = error_body_message(long.as_bytes()).unwrap_or_default();
        assert!(message.chars().count() <= 201);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut next = crate::xorshift(0x2545_F491_4F6C_DD1D_u64);
        let pieces: [&[u8]; 13] = [
            b"data: ",
            b"{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
            b"{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\"}}]}}]}",
            b"{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":{\"x\":1}}}]}}]}",
            b"{\"choices\":[{\"finish_reason\":\"length\"}]}",
            b"\n",
            b"\r\n",
            b"[DONE]",
            b"{\"error\":1}",
            b"\xf0\x9f",
            b":",
            b"{\"choices\":[{\"finish_reason\":\"stop\"}]}",
            b"{\"choices\":7}",
        ];
        for _ in 0..500 {
            let mut decoder = CompletionDecoder::new();
            for _ in 0..(next() % 20) {
                let piece = pieces[(next() % pieces.len() as u64) as usize];
                let _ = decoder.push(piece);
            }
            let _ = decoder.finish();
            let _ = error_body_message(&decoder.prefix);
        }
    }
}
