//! The text conformance replay: every fixture pair of `tests/conformance/` (real providers'
//! bytes), of `tests/fixtures/` (this crate's own cases) and, when the shared data folder
//! exists beside the repository, of each of its fixture folders except those another replay
//! owns. See `fixtures.rs` for how each pair is served.

use std::path::PathBuf;

use gateway_core::{Event, Usage};
use gateway_openai_compat::completion::CompletionDecoder;
use serde::Deserialize;

use crate::fixtures::{self, Fixture};
use crate::server::{assert_no_secret, Outcome};

/// Shared folders with keys this replay does not know, replayed by their own test.
const OWNED_ELSEWHERE: [&str; 1] = ["conformance-tools"];

/// What a text fixture expects (`status`, `content_type` and `headers` are in [`fixtures::Serve`]).
#[derive(Debug, Clone, Deserialize)]
struct Meta {
    #[serde(default)]
    expect_text: Option<String>,
    #[serde(default)]
    expect_error_contains: Option<Vec<String>>,
    /// This crate's fixtures may also pin the usage reported in `text_done`.
    #[serde(default)]
    expect_usage: Option<Usage>,
}

/// The folders this replay reads: the repository's two, then the shared ones present.
fn dirs() -> Vec<PathBuf> {
    let mut dirs = vec![fixtures::own("conformance"), fixtures::own("fixtures")];
    dirs.extend(fixtures::shared_dirs(&OWNED_ELSEWHERE));
    dirs
}

/// Every fixture of one folder, each checked to expect exactly one outcome.
fn load(dir: &std::path::Path) -> Vec<Fixture<Meta>> {
    let fixtures = fixtures::load::<Meta>(dir);
    for f in &fixtures {
        assert!(
            f.meta.expect_text.is_some() != f.meta.expect_error_contains.is_some(),
            "{}: needs exactly one of expect_text and expect_error_contains",
            f.name
        );
    }
    fixtures
}

fn all_fixtures() -> Vec<Fixture<Meta>> {
    dirs().iter().flat_map(|dir| load(dir)).collect()
}

/// Check one outcome against the fixture; `Err` describes the mismatch.
fn check(fixture: &Fixture<Meta>, outcome: &Outcome) -> Result<(), String> {
    if outcome.terminals != 1 || outcome.after_terminal != 0 {
        return Err(format!(
            "expected exactly one terminal item, got {} (and {} after it): {outcome:?}",
            outcome.terminals, outcome.after_terminal
        ));
    }
    if let Some(error) = &outcome.error {
        assert_no_secret(error);
    }
    if let Some(expected) = &fixture.meta.expect_text {
        if let Some(error) = &outcome.error {
            return Err(format!("expected text, got error: {error}"));
        }
        if &outcome.text() != expected {
            return Err(format!(
                "deltas {:?} != expected {expected:?}",
                outcome.text()
            ));
        }
        if outcome.response() != Some(expected.as_str()) {
            return Err(format!("text_done response {:?}", outcome.response()));
        }
        if !matches!(outcome.events.last(), Some(Event::TextDone { .. })) {
            return Err("text_done is not the last event".into());
        }
        let handshakes: Vec<usize> = outcome
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Event::Handshake { .. }))
            .map(|(i, _)| i)
            .collect();
        let first_delta = outcome
            .events
            .iter()
            .position(|e| matches!(e, Event::Delta { .. }));
        match first_delta {
            Some(i) if i >= 1 && handshakes == [i - 1] => {}
            None if handshakes.is_empty() => {}
            _ => {
                return Err(format!(
                    "handshake not once, right before the first delta: {outcome:?}"
                ))
            }
        }
        if let Some(expected) = fixture.meta.expect_usage {
            match outcome.done() {
                Some(Event::TextDone { usage, .. }) if *usage == Some(expected) => {}
                other => return Err(format!("usage: expected {expected:?}, got {other:?}")),
            }
        }
    } else if let Some(needles) = &fixture.meta.expect_error_contains {
        let Some(error) = &outcome.error else {
            return Err(format!("expected an error, got {:?}", outcome.events));
        };
        if outcome.done().is_some() {
            return Err("an error case also produced text_done".into());
        }
        let message = error.to_string().to_lowercase();
        for needle in needles {
            if !message.contains(&needle.to_lowercase()) {
                return Err(format!("error {message:?} does not contain {needle:?}"));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn replays_every_fixture_over_http() {
    fixtures::replay(&all_fixtures(), check).await;
}

/// The pure decoder agrees with every SSE fixture at every two-piece split and byte by byte.
#[test]
fn decoder_survives_every_split_of_every_fixture() {
    let mut failures = Vec::new();
    for fixture in all_fixtures() {
        if fixture.serve.status != 200
            || !fixture
                .serve
                .content_type()
                .starts_with("text/event-stream")
        {
            continue;
        }
        let body = &fixture.body;
        let decode = |pieces: Vec<&[u8]>| -> Result<String, String> {
            let mut decoder = CompletionDecoder::new();
            let mut text = String::new();
            for piece in pieces {
                text.push_str(&decoder.push(piece).map_err(|e| e.to_string())?.concat());
            }
            let (tail, completion) = decoder.finish_with_deltas().map_err(|e| e.to_string())?;
            text.push_str(&tail.concat());
            if completion.text != text {
                return Err(format!(
                    "completion {:?} != deltas {text:?}",
                    completion.text
                ));
            }
            Ok(text)
        };
        let whole = decode(vec![body]);
        let mut variants = vec![("bytes".to_string(), body.chunks(1).collect::<Vec<_>>())];
        for cut in 0..=body.len() {
            variants.push((format!("cut {cut}"), vec![&body[..cut], &body[cut..]]));
        }
        for (label, pieces) in variants {
            let got = decode(pieces);
            if got != whole {
                failures.push(format!("{} [{label}]: {got:?} != {whole:?}", fixture.name));
                break;
            }
        }
        match (&whole, &fixture.meta.expect_text) {
            (Ok(text), Some(expected)) if text == expected => {}
            (Err(_), None) => {}
            _ => failures.push(format!("{}: decoded {whole:?}", fixture.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
