//! Folders of fixture pairs (`NAME.sse` + `NAME.json`) and their replay through the real
//! gateway over real HTTP: whole, one byte per write, in random small pieces, and (for
//! `unicode` cases and non-ASCII bodies) cut in two at every byte boundary. Every response uses
//! chunked framing, one chunk per piece, so the client sees each piece as its own read whatever
//! TCP does with the writes.
//!
//! The repository carries every folder its tests need. When the shared data folder exists
//! beside the repository (`../shared/`, or `$GATEWAY_SHARED_DIR`), its folders of fixture pairs
//! are replayed as well; when it does not, nothing is missing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::server::{self, Outcome};

/// How to serve a fixture: the keys every folder's `NAME.json` shares.
#[derive(Debug, Clone, Deserialize)]
pub struct Serve {
    pub status: u16,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Serve {
    pub fn content_type(&self) -> &str {
        self.content_type.as_deref().unwrap_or("text/event-stream")
    }
}

/// One pair: the exact body an upstream sends, how to serve it, and what the folder's
/// replay expects of it (`M`, read from the same `NAME.json`).
#[derive(Debug, Clone)]
pub struct Fixture<M> {
    /// `<label>/<stem>`.
    pub name: String,
    pub serve: Serve,
    pub meta: M,
    pub body: Vec<u8>,
}

/// A folder of this crate's `tests/`.
pub fn own(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// The shared data folder beside the repository (`$GATEWAY_SHARED_DIR` when set), if it
/// exists.
pub fn shared_root() -> Option<PathBuf> {
    let root = match std::env::var_os("GATEWAY_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    root.is_dir().then_some(root)
}

/// Every folder of the shared root that holds fixture pairs (`*.sse`), sorted, except the
/// folders named in `except` (replayed by another test).
pub fn shared_dirs(except: &[&str]) -> Vec<PathBuf> {
    let Some(root) = shared_root() else {
        return Vec::new();
    };
    let entries = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", root.display()));
    let mut dirs: Vec<PathBuf> = entries
        .map(|entry| entry.expect("dir entry").path())
        .filter(|dir| dir.is_dir() && holds_pairs(dir))
        .filter(|dir| {
            !except
                .iter()
                .any(|name| dir.file_name() == Some((*name).as_ref()))
        })
        .collect();
    dirs.sort();
    dirs
}

fn holds_pairs(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "sse"))
    })
}

/// The label a folder's fixtures are named with: `<parent>/<folder>`, e.g. `tests/fixtures`
/// or `shared/conformance`.
fn label(dir: &Path) -> String {
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    format!("{}/{}", name(dir.parent()), name(Some(dir)))
}

/// Every pair of one folder, sorted by name. A folder without pairs, a `NAME.json` that does
/// not parse and a missing `NAME.sse` all fail the test.
pub fn load<M: DeserializeOwned>(dir: &Path) -> Vec<Fixture<M>> {
    let label = label(dir);
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("fixture folder {} cannot be read: {e}", dir.display()));
    let mut fixtures: Vec<Fixture<M>> = entries
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|x| x == "json"))
        .map(|path| load_pair(&path, &label))
        .collect();
    fixtures.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        !fixtures.is_empty(),
        "no fixture pairs in {}",
        dir.display()
    );
    fixtures
}

fn load_pair<M: DeserializeOwned>(json: &Path, label: &str) -> Fixture<M> {
    let stem = json.file_stem().and_then(|s| s.to_str()).expect("name");
    let name = format!("{label}/{stem}");
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(json).expect("read"))
        .unwrap_or_else(|e| panic!("{name}: bad fixture JSON: {e}"));
    let parse = |what| format!("{name}: {what}");
    let serve = Serve::deserialize(&value).unwrap_or_else(|e| panic!("{}: {e}", parse("serve")));
    let meta = M::deserialize(&value).unwrap_or_else(|e| panic!("{}: {e}", parse("expect")));
    let body = std::fs::read(json.with_extension("sse"))
        .unwrap_or_else(|e| panic!("{name}: missing {stem}.sse: {e}"));
    Fixture {
        name,
        serve,
        meta,
        body,
    }
}

/// How the server writes a body.
#[derive(Debug, Clone, Copy)]
enum Split {
    Whole,
    Bytes,
    Random(u64),
    /// Two writes cut at the n-th request's boundary (n counted per fixture).
    EveryCut,
}

impl Split {
    fn parse(mode: &str) -> Self {
        match mode {
            "whole" => Split::Whole,
            "bytes" => Split::Bytes,
            "every-cut" => Split::EveryCut,
            seed => Split::Random(seed.parse().unwrap_or(1)),
        }
    }
}

fn pieces(body: &[u8], split: Split, cut: usize) -> Vec<&[u8]> {
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

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The ways one fixture is served, each with how many requests it takes.
fn modes<M>(fixture: &Fixture<M>) -> Vec<(String, usize)> {
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
    modes
}

/// The fixture's key in a request path (`/` is the path separator).
fn key(name: &str) -> String {
    name.replace('/', "~")
}

/// Serves every fixture at `/<key>/<mode>/chat/completions`.
async fn serve_all<M>(fixtures: &[Fixture<M>]) -> server::Server {
    let by_key: Arc<HashMap<String, (Serve, Vec<u8>)>> = Arc::new(
        fixtures
            .iter()
            .map(|f| (key(&f.name), (f.serve.clone(), f.body.clone())))
            .collect(),
    );
    let cuts: Arc<HashMap<String, AtomicUsize>> = Arc::new(
        by_key
            .keys()
            .map(|k| (k.clone(), AtomicUsize::new(0)))
            .collect(),
    );
    server::serve(move |request, mut socket| {
        let by_key = by_key.clone();
        let cuts = cuts.clone();
        async move {
            let mut parts = request.path.trim_start_matches('/').split('/');
            let (Some(key), Some(mode)) = (parts.next(), parts.next()) else {
                return;
            };
            let Some((serve, body)) = by_key.get(key) else {
                return;
            };
            let cut = cuts[key].fetch_add(1, Ordering::SeqCst);
            let headers: Vec<(String, String)> = serve.headers.clone().into_iter().collect();
            let head =
                server::head_chunked(&mut socket, serve.status, serve.content_type(), &headers);
            if head.await.is_err() {
                return;
            }
            for piece in pieces(body, Split::parse(mode), cut) {
                if server::chunk(&mut socket, piece).await.is_err() {
                    return;
                }
            }
            let _ = server::end(&mut socket).await;
        }
    })
    .await
}

/// Replays every fixture in every mode through a real gateway and checks each outcome with
/// `check` (`Err` describes the mismatch). Fails with the list of every failing replay.
pub async fn replay<M>(
    fixtures: &[Fixture<M>],
    check: impl Fn(&Fixture<M>, &Outcome) -> Result<(), String>,
) {
    let server = serve_all(fixtures).await;
    let mut failures = Vec::new();
    let mut runs = 0;
    for fixture in fixtures {
        for (mode, repeat) in modes(fixture) {
            let url = server.base_url(&format!("/{}/{mode}", key(&fixture.name)));
            let gateway = server::gateway(server::config(url));
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
