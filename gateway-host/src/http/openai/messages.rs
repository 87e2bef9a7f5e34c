//! The client's `messages`, read as OpenAI's API takes them and kept as sent: roles `system`,
//! `developer` (sent upstream as `system`, which every provider knows), `user`, `assistant`
//! and `tool`; content as a string, `null` or an array of parts of any type (`text`,
//! `image_url`, `input_audio`, ...); assistant `tool_calls` and tool results' `tool_call_id`;
//! keys the host does not know (`name`, vendor keys, a call's `extra_content`) verbatim.
//! Each message is checked for the shape the upstream needs; a fault is a 400 naming it.

use gateway_core::{ChatMessage, Role};
use serde_json::{Map, Value};

use crate::http::error::ApiError;

/// The conversation: present, not empty, every message valid.
pub(super) fn read_all(wire: Option<Vec<Value>>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(wire) = wire else {
        return Err(ApiError::invalid(
            Some("missing_required_parameter"),
            Some("messages"),
            "you must provide a messages parameter",
        ));
    };
    if wire.is_empty() {
        return Err(ApiError::invalid(
            Some("empty_array"),
            Some("messages"),
            "messages must hold at least one message",
        ));
    }
    wire.into_iter()
        .enumerate()
        .map(|(i, m)| read(&format!("messages[{i}]"), m))
        .collect()
}

/// What a turn with server-side memory adds to the session after its history: the `tool`
/// results after the client's last assistant message, then its last `user` message when that
/// comes after the last assistant message (or when there are no such results). The rest of
/// `messages` is what the session already holds.
pub(super) fn new_input(messages: Vec<ChatMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
    let is_new = |i: usize| last_assistant.map_or(true, |a| i > a);
    let results = (0..messages.len()).any(|i| is_new(i) && messages[i].role == Role::Tool);
    let user = messages
        .iter()
        .rposition(|m| m.role == Role::User)
        .filter(|&u| is_new(u) || !results);
    let input: Vec<ChatMessage> = messages
        .into_iter()
        .enumerate()
        .filter(|(i, m)| (is_new(*i) && m.role == Role::Tool) || Some(*i) == user)
        .map(|(_, m)| m)
        .collect();
    if input.is_empty() {
        return Err(ApiError::invalid(
            Some("invalid_value"),
            Some("messages"),
            "with server-side memory (user or X-Session-Key) messages must hold a user message \
             or the tool results that answer the last assistant message",
        ));
    }
    Ok(input)
}

/// One message, checked, as sent.
fn read(param: &str, wire: Value) -> Result<ChatMessage, ApiError> {
    let Value::Object(fields) = &wire else {
        return Err(invalid_type(param, format!("{param} must be an object")));
    };
    let role = role(param, fields)?;
    content(param, role, fields.get("content"))?;
    tool_fields(param, role, fields)?;
    let mut message: ChatMessage =
        serde_json::from_value(wire).map_err(|e| invalid_type(param, format!("{param}: {e}")))?;
    if message.role == Role::Developer {
        message.role = Role::System;
    }
    Ok(message)
}

fn role(param: &str, fields: &Map<String, Value>) -> Result<Role, ApiError> {
    let at = format!("{param}.role");
    let Some(role) = fields.get("role") else {
        return Err(ApiError::invalid(
            Some("missing_required_parameter"),
            Some(&at),
            format!("{at} is required"),
        ));
    };
    match role.as_str() {
        Some("system") => Ok(Role::System),
        Some("developer") => Ok(Role::Developer),
        Some("user") => Ok(Role::User),
        Some("assistant") => Ok(Role::Assistant),
        Some("tool") => Ok(Role::Tool),
        Some("function") => Err(ApiError::invalid(
            Some("unsupported_value"),
            Some(&at),
            format!(
                "{param}: role 'function' (deprecated by OpenAI) is not supported: send tool \
                 results as role 'tool' with a tool_call_id"
            ),
        )),
        _ => Err(ApiError::invalid(
            Some("invalid_value"),
            Some(&at),
            format!(
                "{param}: unknown role {role} (expected system, developer, user, assistant or \
                 tool)"
            ),
        )),
    }
}

/// A string, an array of typed parts, or (assistant only) `null` / absent.
fn content(param: &str, role: Role, content: Option<&Value>) -> Result<(), ApiError> {
    let at = format!("{param}.content");
    match content {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .try_for_each(|(j, part)| content_part(&format!("{at}[{j}]"), part)),
        None | Some(Value::Null) if role == Role::Assistant => Ok(()),
        None | Some(Value::Null) => Err(ApiError::invalid(
            Some("missing_required_parameter"),
            Some(&at),
            format!("{at} is required"),
        )),
        Some(_) => Err(invalid_type(
            &at,
            format!("{at} must be a string or an array of content parts"),
        )),
    }
}

/// A part is an object with a string `type`; a `text` part has a string `text`. Other types
/// (`image_url`, `input_audio`, `file`, ...) go upstream as sent: the provider judges them.
fn content_part(at: &str, part: &Value) -> Result<(), ApiError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") if !part.get("text").is_some_and(Value::is_string) => Err(invalid_type(
            &format!("{at}.text"),
            format!("{at}: a text part needs a string 'text'"),
        )),
        Some(_) => Ok(()),
        None => Err(invalid_type(
            &format!("{at}.type"),
            format!("{at}: a content part needs a string 'type'"),
        )),
    }
}

/// A `tool` message names the call it answers; only an assistant message carries calls, each
/// a function call with an `id` and a `function.name`.
fn tool_fields(param: &str, role: Role, fields: &Map<String, Value>) -> Result<(), ApiError> {
    if role == Role::Tool && !fields.get("tool_call_id").is_some_and(is_text) {
        let at = format!("{param}.tool_call_id");
        return Err(ApiError::invalid(
            Some("missing_required_parameter"),
            Some(&at),
            format!("{at} is required for role 'tool': the id of the call it answers"),
        ));
    }
    let at = format!("{param}.tool_calls");
    match fields.get("tool_calls") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(calls)) if role == Role::Assistant => calls
            .iter()
            .enumerate()
            .try_for_each(|(j, call)| tool_call(&format!("{at}[{j}]"), call)),
        Some(Value::Array(_)) => Err(ApiError::invalid(
            Some("invalid_value"),
            Some(&at),
            format!("{at}: only assistant messages carry tool_calls"),
        )),
        Some(_) => Err(invalid_type(&at, format!("{at} must be an array"))),
    }
}

fn tool_call(at: &str, call: &Value) -> Result<(), ApiError> {
    if !call.get("id").is_some_and(is_text) {
        return Err(ApiError::invalid(
            Some("missing_required_parameter"),
            Some(&format!("{at}.id")),
            format!("{at}.id is required"),
        ));
    }
    if call
        .get("type")
        .is_some_and(|t| t.as_str() != Some("function"))
    {
        return Err(ApiError::invalid(
            Some("unsupported_value"),
            Some(&format!("{at}.type")),
            format!("{at}: only tool calls of type 'function' are supported"),
        ));
    }
    let name = call.get("function").and_then(|f| f.get("name"));
    if !name.is_some_and(is_text) {
        return Err(ApiError::invalid(
            Some("missing_required_parameter"),
            Some(&format!("{at}.function.name")),
            format!("{at}.function.name is required"),
        ));
    }
    Ok(())
}

fn is_text(value: &Value) -> bool {
    value.as_str().is_some_and(|s| !s.is_empty())
}

fn invalid_type(at: &str, message: String) -> ApiError {
    ApiError::invalid(Some("invalid_type"), Some(at), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_one(message: Value) -> Result<ChatMessage, ApiError> {
        read("messages[0]", message)
    }

    fn param_of(message: Value) -> String {
        match read_one(message).unwrap_err() {
            ApiError::Invalid { param, .. } => param.unwrap_or_default(),
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn tool_messages_parts_and_unknown_keys_are_kept_as_sent() {
        let call = json!({"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
            "extra_content": {"google": {"thought_signature": "c2ln"}}});
        let cases = [
            json!({"role": "assistant", "content": null, "tool_calls": [call]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "12 C"}),
            json!({"role": "user", "name": "ada", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]}),
        ];
        for wire in cases {
            let message = read_one(wire.clone()).unwrap();
            assert_eq!(serde_json::to_value(&message).unwrap(), wire);
        }
    }

    #[test]
    fn developer_is_sent_as_system() {
        let message = read_one(json!({"role": "developer", "content": "d"})).unwrap();
        assert_eq!(message.role, Role::System);
    }

    #[test]
    fn faults_name_the_parameter() {
        let cases = [
            (
                json!({"role": "tool", "content": "r"}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"role": "function", "content": "r"}),
                "messages[0].role",
            ),
            (json!({"role": "robot", "content": "r"}), "messages[0].role"),
            (json!({"content": "r"}), "messages[0].role"),
            (json!({"role": "user"}), "messages[0].content"),
            (
                json!({"role": "user", "content": 42}),
                "messages[0].content",
            ),
            (
                json!({"role": "user", "content": [{"text": "no type"}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"role": "user", "content": [{"type": "text"}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"role": "user", "content": "x", "tool_calls": []}),
                "messages[0].tool_calls",
            ),
            (
                json!({"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}),
                "messages[0].tool_calls[0].id",
            ),
            (
                json!({"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}),
                "messages[0].tool_calls[0].function.name",
            ),
            (
                json!({"role": "assistant", "tool_calls": [{"id": "c", "type": "custom",
                    "custom": {"name": "f", "input": "x"}}]}),
                "messages[0].tool_calls[0].type",
            ),
            (json!("hi"), "messages[0]"),
        ];
        for (message, param) in cases {
            assert_eq!(param_of(message.clone()), param, "{message}");
        }
    }

    type Shape<'a> = Vec<(Role, &'a str)>;

    fn roles_and_texts(messages: &[ChatMessage]) -> Shape<'_> {
        messages.iter().map(|m| (m.role, &*m.content)).collect()
    }

    #[test]
    fn memory_takes_the_results_after_the_last_answer_then_the_new_question() {
        let m = |role, text: &str| match role {
            Role::Tool => ChatMessage::tool_result("c1", text),
            Role::Assistant => ChatMessage::assistant_with_tool_calls(
                text,
                vec![gateway_core::ToolCall::new("c1", "f", "{}")],
            ),
            _ => ChatMessage::new(role, text),
        };
        let (u, a, t, s) = (Role::User, Role::Assistant, Role::Tool, Role::System);
        let cases: [(Shape, Shape); 6] = [
            (vec![(s, "sys"), (u, "q1")], vec![(u, "q1")]),
            (vec![(u, "old"), (a, "a"), (u, "q2")], vec![(u, "q2")]),
            (
                vec![(u, "q"), (a, ""), (t, "r1"), (t, "r2")],
                vec![(t, "r1"), (t, "r2")],
            ),
            (vec![(t, "r")], vec![(t, "r")]),
            (
                vec![(a, ""), (t, "r"), (u, "and?")],
                vec![(t, "r"), (u, "and?")],
            ),
            (vec![(u, "q1"), (a, "a1")], vec![(u, "q1")]),
        ];
        for (sent, expected) in cases {
            let messages = sent.iter().map(|&(r, text)| m(r, text)).collect();
            let input = new_input(messages).unwrap();
            assert_eq!(roles_and_texts(&input), expected, "{sent:?}");
        }
        assert!(new_input(vec![m(s, "only system")]).is_err());
        assert!(new_input(vec![m(u, "q"), m(a, "calls")]).is_ok());
    }
}
