//! Replays every fixture pair (`NAME.sse` + `NAME.json`) of the shared conformance folder and
//! of this crate's `tests/fixtures/` through the real gateway over real HTTP, whole, one byte
//! per write, in random small pieces, and (for `unicode` cases and non-ASCII bodies) cut in two
//! at every byte boundary. Every response uses chunked framing, one chunk per piece, so the
//! client sees each piece as its own read whatever TCP does with the writes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gateway_core::{Event, Usage};
use gateway_openai_compat::completion::CompletionDecoder;
use serde::Deserialize;

use crate::server::{self, assert_no_secret, Outcome};

#[derive(Debug, Clone, Deserialize)]
struct Meta {
    status: u16,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    expect_text: Option<String>,
    #[serde(default)]
    expect_error_contains: Option<Vec<String>>,
    /// This crate's fixtures may also pin the usage reported in `text_done`.
    #[serde(default)]
    expect_usage: Option<Usage>,
}

#[derive(Debug, Clone)]
struct Fixture {
    name: String,
    meta: Meta,
    body: Vec<u8>,
}

impl Fixture {
    fn content_type(&self) -> &str {
        self.meta
            .content_type
            .as_deref()
            .unwrap_or("text/event-stream")
    }
}

/// The shared folder: `$GATEWAY_CONFORMANCE_DIR`, else `../../shared/conformance` from this
/// crate (the repository clone has `shared/` beside it).
fn shared_dir() -> PathBuf {
    match std::env::var_os("GATEWAY_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    }
}

fn own_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(dir: &Path, label: &str) -> Vec<Fixture> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "conformance folder {} cannot be read ({e}); set GATEWAY_CONFORMANCE_DIR",
            dir.display()
        )
    });
    let mut fixtures = Vec::new();
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let name = format!("{label}/{stem}");
        let meta: Meta = serde_json::from_slice(&std::fs::read(&path).expect("read json"))
            .unwrap_or_else(|e| panic!("{name}: bad fixture JSON: {e}"));
        assert!(
            meta.expect_text.is_some() != meta.expect_error_contains.is_some(),
            "{name}: needs exactly one of expect_text and expect_error_contains"
        );
        let body = std::fs::read(path.with_extension("sse"))
            .unwrap_or_else(|e| panic!("{name}: missing {stem}.sse: {e}"));
        fixtures.push(Fixture { name, meta, body });
    }
    fixtures.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        !fixtures.is_empty(),
        "no fixture pairs in {}",
        dir.display()
    );
    fixtures
}

fn all_fixtures() -> Vec<Fixture> {
    let mut fixtures = load(&shared_dir(), "shared");
    fixtures.extend(load(&own_dir(), "own"));
    fixtures
}

/// How the server writes a body.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Split {
    Whole,
    Bytes,
    Random(u64),
    /// Two writes cut at the n-th request's boundary (n counted per fixture).
    EveryCut,
}

pub(crate) fn pieces(body: &[u8], split: Split, cut: usize) -> Vec<&[u8]> {
    match split {
        Split::Whole => vec![body],
        Split::Bytes => body.chunks(1).collect(),
        Split::EveryCut => {
            let cut = cut.min(body.len());
            vec![&body[..cut], &body[cut..]]
        }
        Split::Random(seed) => {
            let mut state = seed | 1;
            let mut out = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let n = (1 + (state % 7) as usize).min(rest.len());
                out.push(&rest[..n]);
                rest = &rest[n..];
            }
            out
        }
    }
}

pub(crate) fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Check one outcome against the fixture; `Err` describes the mismatch.
fn check(fixture: &Fixture, outcome: &Outcome) -> Result<(), String> {
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
    let fixtures = all_fixtures();
    let by_name: Arc<HashMap<String, Fixture>> = Arc::new(
        fixtures
            .iter()
            .map(|f| (f.name.replace('/', "~"), f.clone()))
            .collect(),
    );
    let cuts: Arc<HashMap<String, AtomicUsize>> = Arc::new(
        by_name
            .keys()
            .map(|k| (k.clone(), AtomicUsize::new(0)))
            .collect(),
    );
    // Path: /<fixture>/<split>/chat/completions
    let server = server::serve(move |request, mut socket| {
        let by_name = by_name.clone();
        let cuts = cuts.clone();
        async move {
            let mut parts = request.path.trim_start_matches('/').split('/');
            let (Some(name), Some(split)) = (parts.next(), parts.next()) else {
                return;
            };
            let Some(fixture) = by_name.get(name) else {
                return;
            };
            let split = match split {
                "whole" => Split::Whole,
                "bytes" => Split::Bytes,
                "every-cut" => Split::EveryCut,
                seed => Split::Random(seed.parse().unwrap_or(1)),
            };
            let cut = cuts[name].fetch_add(1, Ordering::SeqCst);
            let headers: Vec<(String, String)> = fixture
                .meta
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if server::head_chunked(
                &mut socket,
                fixture.meta.status,
                fixture.content_type(),
                &headers,
            )
            .await
            .is_err()
            {
                return;
            }
            for piece in pieces(&fixture.body, split, cut) {
                if server::chunk(&mut socket, piece).await.is_err() {
                    return;
                }
            }
            let _ = server::end(&mut socket).await;
        }
    })
    .await;

    let mut failures = Vec::new();
    let mut runs = 0;
    for fixture in &fixtures {
        let key = fixture.name.replace('/', "~");
        let seed = seed_of(&fixture.name);
        let mut modes = vec![
            ("whole".to_string(), 1),
            ("bytes".to_string(), 1),
            (seed.to_string(), 1),
            ((seed ^ 0x5555).to_string(), 1),
        ];
        if !fixture.body.is_ascii() || fixture.name.contains("unicode") {
            modes.push(("every-cut".to_string(), fixture.body.len() + 1));
        }
        for (mode, repeat) in modes {
            let gateway =
                server::gateway(server::config(server.base_url(&format!("/{key}/{mode}"))));
            for attempt in 0..repeat {
                runs += 1;
                let outcome = server::run(&gateway, server::hello()).await;
                if let Err(why) = check(fixture, &outcome) {
                    failures.push(format!("{} [{mode} #{attempt}]: {why}", fixture.name));
                    break;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} replays failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The pure decoder agrees with every SSE fixture at every two-piece split and byte by byte.
#[test]
fn decoder_survives_every_split_of_every_fixture() {
    let mut failures = Vec::new();
    for fixture in all_fixtures() {
        if fixture.meta.status != 200 || !fixture.content_type().starts_with("text/event-stream") {
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
