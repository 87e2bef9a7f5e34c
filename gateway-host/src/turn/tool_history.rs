//! Session history made valid for the next upstream call: every tool call an assistant
//! message holds is answered by the `tool` results right after it. Memory can hold a call
//! without its result (a voice turn whose gateway asked for a tool nobody ran; an API client
//! that asked something else instead of sending the result), and upstreams refuse such a
//! history. So what is sent leaves the unanswered calls out (the assistant's text stays) and
//! drops a result whose call is not right before it. The stored history is not changed.

use std::collections::HashSet;

use gateway_core::{ChatMessage, Role};

/// `history` with only answered calls and only results of those calls; `next` (the messages
/// the turn adds after it) may answer the calls `history` ends with.
pub(crate) fn answered_only(history: Vec<ChatMessage>, next: &[ChatMessage]) -> Vec<ChatMessage> {
    if history
        .iter()
        .all(|m| m.role != Role::Tool && m.tool_calls().is_empty())
    {
        return history;
    }
    let mut kept = Vec::with_capacity(history.len());
    // The calls of the last assistant message that results may answer.
    let mut open: HashSet<&str> = HashSet::new();
    for (i, message) in history.iter().enumerate() {
        if message.role == Role::Tool {
            if message.tool_call_id().is_some_and(|id| open.contains(id)) {
                kept.push(message.clone());
            }
            continue;
        }
        open.clear();
        if message.tool_calls().is_empty() {
            kept.push(message.clone());
            continue;
        }
        let answered: HashSet<&str> = history[i + 1..]
            .iter()
            .chain(next)
            .take_while(|m| m.role == Role::Tool)
            .filter_map(ChatMessage::tool_call_id)
            .collect();
        let calls = message.tool_calls();
        let live: Vec<_> = calls
            .iter()
            .filter(|c| answered.contains(c.id.as_str()))
            .cloned()
            .collect();
        open.extend(
            calls
                .iter()
                .map(|c| c.id.as_str())
                .filter(|id| answered.contains(id)),
        );
        if live.len() == calls.len() {
            kept.push(message.clone());
        } else if !live.is_empty() || !message.content.trim().is_empty() {
            kept.push(ChatMessage::assistant_with_tool_calls(
                message.content.clone(),
                live,
            ));
        }
    }
    kept
}

/// The id of the first result at the start of `next` that answers no call of the last
/// message of `history`: such a result is refused (an upstream would refuse the turn, and
/// memory would keep it) rather than sent or stored.
pub(crate) fn stray_result<'a>(
    history: &[ChatMessage],
    next: &'a [ChatMessage],
) -> Option<&'a str> {
    let called: HashSet<&str> = history
        .last()
        .map(|m| m.tool_calls().iter().map(|c| c.id.as_str()).collect())
        .unwrap_or_default();
    next.iter()
        .take_while(|m| m.role == Role::Tool)
        .filter_map(ChatMessage::tool_call_id)
        .find(|id| !called.contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::ToolCall;

    fn asks(text: &str, ids: &[&str]) -> ChatMessage {
        let calls = ids.iter().map(|id| ToolCall::new(*id, "f", "{}")).collect();
        ChatMessage::assistant_with_tool_calls(text, calls)
    }

    fn ids(message: &ChatMessage) -> Vec<&str> {
        message.tool_calls().iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn a_result_must_answer_a_call_of_the_last_message() {
        let history = vec![ChatMessage::user("weather?"), asks("", &["c1"])];
        let answer = [ChatMessage::tool_result("c1", "12 C")];
        assert_eq!(stray_result(&history, &answer), None);
        let stray = [
            ChatMessage::tool_result("c1", "12 C"),
            ChatMessage::tool_result("zzz", "?"),
        ];
        assert_eq!(stray_result(&history, &stray), Some("zzz"));
        let after_text = [ChatMessage::tool_result("c1", "12 C")];
        let answered = vec![ChatMessage::user("hi"), ChatMessage::assistant("Hello.")];
        assert_eq!(stray_result(&answered, &after_text), Some("c1"));
        assert_eq!(stray_result(&answered, &[ChatMessage::user("more")]), None);
    }

    #[test]
    fn a_whole_exchange_is_sent_as_stored() {
        let history = vec![
            ChatMessage::user("weather?"),
            asks("", &["c1", "c2"]),
            ChatMessage::tool_result("c1", "12 C"),
            ChatMessage::tool_result("c2", "rain"),
            ChatMessage::assistant("12 C and rain."),
        ];
        assert_eq!(answered_only(history.clone(), &[]), history);
    }

    #[test]
    fn calls_at_the_end_are_answered_by_the_next_messages() {
        let history = vec![ChatMessage::user("weather?"), asks("", &["c1"])];
        let next = [ChatMessage::tool_result("c1", "12 C")];
        assert_eq!(answered_only(history.clone(), &next), history);
    }

    #[test]
    fn unanswered_calls_are_left_out_and_their_text_kept() {
        let history = vec![
            ChatMessage::user("weather?"),
            asks("Let me look.", &["c1", "c2"]),
            ChatMessage::tool_result("c2", "rain"),
            ChatMessage::user("never mind"),
            asks("", &["c3"]),
            ChatMessage::user("and now?"),
            asks("Checking.", &["c4"]),
        ];
        let next = [ChatMessage::user("hello?")];
        let sent = answered_only(history, &next);
        let shape: Vec<(Role, &str, Vec<&str>)> =
            sent.iter().map(|m| (m.role, &*m.content, ids(m))).collect();
        assert_eq!(
            shape,
            [
                (Role::User, "weather?", vec![]),
                (Role::Assistant, "Let me look.", vec!["c2"]),
                (Role::Tool, "rain", vec![]),
                (Role::User, "never mind", vec![]),
                (Role::User, "and now?", vec![]),
                (Role::Assistant, "Checking.", vec![]),
            ]
        );
        assert!(sent[5].is_plain());
    }

    #[test]
    fn a_result_without_its_call_right_before_it_is_dropped() {
        let history = vec![
            ChatMessage::tool_result("gone", "cut off by the window"),
            ChatMessage::user("q"),
            asks("", &["c1"]),
            ChatMessage::tool_result("c1", "r"),
            ChatMessage::assistant("a"),
            ChatMessage::tool_result("c1", "late duplicate"),
        ];
        let sent = answered_only(history.clone(), &[]);
        assert_eq!(sent, history[1..5]);
    }
}
