//! Replays every tool-call fixture pair (`NAME.sse` + `NAME.json`) of this crate's
//! `tests/conformance-tools/` and, when it exists, of the shared `conformance-tools` folder
//! through the real gateway over real HTTP: whole, one byte per write and in random pieces.
//! Each answer must hold exactly the expected text, calls (in order) and finish reason, or end
//! with one error and no call at all.

use std::collections::HashSet;

use gateway_core::{Event, ToolCall};
use gateway_openai_compat::completion::CompletionDecoder;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::fixtures::{self, Fixture};
use crate::server::{assert_no_secret, Outcome};

#[derive(Debug, Clone, Deserialize)]
struct Meta {
    #[serde(default)]
    expect_text: Option<String>,
    #[serde(default)]
    expect_tool_calls: Vec<ExpectedCall>,
    #[serde(default)]
    expect_finish_reason: Option<String>,
    #[serde(default)]
    expect_error_contains: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct ExpectedCall {
    /// Checked when the upstream gave one; otherwise any non-empty unique id is right.
    #[serde(default)]
    id: Option<String>,
    name: String,
    /// The JSON value the call's argument string must parse to.
    arguments: Value,
    /// Keys the call object must carry besides its own (this repository's fixtures only).
    #[serde(default)]
    extra: Map<String, Value>,
}

/// The folders this replay reads: the repository's copies (always there, so a clone with
/// nothing beside it tests them), then the shared folder when it exists.
fn all_fixtures() -> Vec<Fixture<Meta>> {
    let mut dirs = vec![fixtures::own("conformance-tools")];
    dirs.extend(fixtures::shared_root().map(|root| root.join("conformance-tools")));
    let mut all = Vec::new();
    for dir in dirs.iter().filter(|dir| dir.is_dir()) {
        for f in fixtures::load::<Meta>(dir) {
            assert!(
                f.meta.expect_text.is_some() != f.meta.expect_error_contains.is_some(),
                "{}: needs exactly one of expect_text and expect_error_contains",
                f.name
            );
            all.push(f);
        }
    }
    all
}

/// The calls match the expected ones in order; ids are non-empty and unique.
fn check_calls(expected: &[ExpectedCall], calls: &[&ToolCall]) -> Result<(), String> {
    if calls.len() != expected.len() {
        return Err(format!(
            "{} calls, expected {}: {calls:?}",
            calls.len(),
            expected.len()
        ));
    }
    let ids: HashSet<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    if ids.len() != calls.len() || ids.contains("") {
        return Err(format!("call ids are not non-empty and unique: {calls:?}"));
    }
    for (i, (want, got)) in expected.iter().zip(calls).enumerate() {
        let arguments: Value = serde_json::from_str(&got.arguments)
            .map_err(|e| format!("call {i}: arguments {:?} are not JSON: {e}", got.arguments))?;
        let id_ok = want.id.as_ref().map_or(true, |id| *id == got.id);
        let extra_ok = want.extra.iter().all(|(k, v)| got.extra.get(k) == Some(v));
        if !id_ok || want.name != got.name || want.arguments != arguments || !extra_ok {
            return Err(format!("call {i}: got {got:?}, expected {want:?}"));
        }
    }
    Ok(())
}

/// Check one outcome against the fixture; `Err` describes the mismatch.
fn check(fixture: &Fixture<Meta>, outcome: &Outcome) -> Result<(), String> {
    if outcome.terminals != 1 || outcome.after_terminal != 0 {
        return Err(format!(
            "expected exactly one terminal item, got {} (and {} after it): {outcome:?}",
            outcome.terminals, outcome.after_terminal
        ));
    }
    let calls: Vec<&ToolCall> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ToolCall { call } => Some(call),
            _ => None,
        })
        .collect();
    if let Some(needles) = &fixture.meta.expect_error_contains {
        let Some(error) = &outcome.error else {
            return Err(format!("expected an error, got {:?}", outcome.events));
        };
        assert_no_secret(error);
        if outcome.done().is_some() || !calls.is_empty() {
            return Err(format!("an error case also produced {:?}", outcome.events));
        }
        let message = error.to_string().to_lowercase();
        return match needles
            .iter()
            .find(|n| !message.contains(&n.to_lowercase()))
        {
            Some(needle) => Err(format!("error {message:?} does not contain {needle:?}")),
            None => Ok(()),
        };
    }
    let expected = fixture.meta.expect_text.as_deref().unwrap_or_default();
    if let Some(error) = &outcome.error {
        return Err(format!("expected an answer, got error: {error}"));
    }
    if outcome.text() != expected || outcome.response() != Some(expected) {
        let (text, response) = (outcome.text(), outcome.response());
        return Err(format!(
            "deltas {text:?} / text_done {response:?} != {expected:?}"
        ));
    }
    check_order(outcome)?;
    check_calls(&fixture.meta.expect_tool_calls, &calls)?;
    match (&fixture.meta.expect_finish_reason, outcome.done()) {
        (None, _) => Ok(()),
        (Some(want), Some(Event::TextDone { finish_reason, .. }))
            if finish_reason.as_ref() == Some(want) =>
        {
            Ok(())
        }
        (Some(want), done) => Err(format!("finish_reason: expected {want:?} in {done:?}")),
    }
}

/// A handshake right before the first delta (none without text), the calls after the last
/// delta, `text_done` last.
fn check_order(outcome: &Outcome) -> Result<(), String> {
    let kinds: Vec<&str> = outcome.events.iter().map(Event::kind).collect();
    let first_delta = kinds.iter().position(|k| *k == "delta");
    let handshakes: Vec<usize> = (0..kinds.len())
        .filter(|&i| kinds[i] == "handshake")
        .collect();
    let handshake_ok = match first_delta {
        Some(i) => i >= 1 && handshakes == [i - 1],
        None => handshakes.is_empty(),
    };
    let last_delta = kinds.iter().rposition(|k| *k == "delta");
    let first_call = kinds.iter().position(|k| *k == "tool_call");
    let calls_ok = match (last_delta, first_call) {
        (Some(d), Some(c)) => d < c,
        _ => true,
    };
    if handshake_ok && calls_ok && kinds.last() == Some(&"text_done") {
        Ok(())
    } else {
        Err(format!("events out of order: {kinds:?}"))
    }
}

#[tokio::test]
async fn replays_every_tool_fixture_over_http() {
    fixtures::replay(&all_fixtures(), check).await;
}

/// What the pure decoder makes of a body: text and calls (generated ids blanked), or the
/// error's cause.
fn decode(pieces: &[&[u8]]) -> Result<(String, Vec<ToolCall>, Option<String>), String> {
    let mut decoder = CompletionDecoder::new();
    let mut text = String::new();
    for piece in pieces {
        text.push_str(&decoder.push(piece).map_err(|e| e.cause())?.concat());
    }
    let (tail, completion) = decoder.finish_with_deltas().map_err(|e| e.cause())?;
    text.push_str(&tail.concat());
    let mut calls = completion.tool_calls;
    for call in &mut calls {
        if call.id.starts_with("call_") && call.id.len() == 29 {
            call.id.clear();
        }
    }
    Ok((text, calls, completion.finish_reason))
}

/// The pure decoder gives the same text, calls and finish reason at every two-piece split
/// and byte by byte.
#[test]
fn decoder_gives_the_same_calls_at_every_split() {
    let mut failures = Vec::new();
    for fixture in all_fixtures() {
        let body = &fixture.body[..];
        let whole = decode(&[body]);
        let mut variants = vec![("bytes".to_string(), body.chunks(1).collect::<Vec<_>>())];
        variants.extend(
            (0..=body.len()).map(|cut| (format!("cut {cut}"), vec![&body[..cut], &body[cut..]])),
        );
        if let Some((label, got)) = variants
            .into_iter()
            .map(|(label, pieces)| (label, decode(&pieces)))
            .find(|(_, got)| *got != whole)
        {
            failures.push(format!("{} [{label}]: {got:?} != {whole:?}", fixture.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
