//! Soak test: a few thousand turns at concurrency 50 through the real host (in-process, on
//! 127.0.0.1) against the chaos upstream, with a fixed seed. It checks that every client stream
//! ends with exactly one `text_done` or `error` and nothing after it, that no task, file
//! descriptor or in-flight turn is leaked, that memory returns near its baseline, and that
//! session history holds only completed turns. Bounded: ~3,000 turns, tens of seconds in debug.
//!
//! Its own test binary (not a module of `all`) because it measures process-wide figures (open
//! file descriptors, RSS, runtime tasks) that other tests running in parallel would disturb.
//! See the figures with `cargo test -p gateway-tests --test soak -- --nocapture`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gateway_core::{Registry, Role};
use gateway_host::AppState;
use gateway_tests::chaos::{ChaosConfig, ChaosUpstream, Fault};
use gateway_tests::{env_at, HostSpec};
use parking_lot::Mutex;
use serde_json::{json, Value};

// Linked for its inventory registration of the `openai-compat` kind.
use gateway_openai_compat as _;

const SEED: u64 = 0x05EE_D0FC_4A05;
const TURNS: usize = 3_000;
const WARMUP: usize = 100;
const CONCURRENCY: usize = 50;
/// Faulty upstream answers per thousand.
const FAULTS_PER_MILLE: u64 = 300;
/// One turn in this many (with no session) is abandoned by the client after its first bytes.
const ABANDON_EVERY: usize = 25;
/// Generous leak bound on resident memory growth over the warmed-up baseline.
const RSS_SLACK_KIB: u64 = 64 * 1024;

#[derive(Debug)]
enum Outcome {
    Done(String),
    Error(String),
    Abandoned,
    Violation(String),
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Poll `cond` every 20 ms for up to 20 s (teardown of sockets and tasks is asynchronous).
async fn settle(what: &str, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        if Instant::now() > deadline {
            eprintln!("{what}: did not settle");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Check one SSE body: frames well-formed, exactly one final event, and it is the last one.
fn judge(body: &str) -> Outcome {
    let mut finals = Vec::new();
    let mut count = 0;
    for frame in body.split("\n\n").filter(|f| !f.trim().is_empty()) {
        if frame.lines().all(|l| l.starts_with(':')) {
            continue; // keep-alive comment
        }
        let name = frame.lines().find_map(|l| l.strip_prefix("event: "));
        let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
        let (Some(name), Some(data)) = (name, data) else {
            return Outcome::Violation(format!("malformed frame {frame:?}"));
        };
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return Outcome::Violation(format!("event data is not JSON: {data:?}"));
        };
        if event["type"] != name {
            return Outcome::Violation(format!("event name {name} but data {event}"));
        }
        if name == "text_done" || name == "error" {
            finals.push((count, event));
        }
        count += 1;
    }
    match finals.as_slice() {
        [(at, event)] if *at + 1 == count => match event["type"].as_str() {
            Some("text_done") => Outcome::Done(event["response"].as_str().unwrap().into()),
            _ => Outcome::Error(event["error"].as_str().unwrap_or("").into()),
        },
        [] => Outcome::Violation(format!("no final event in {body:?}")),
        [_] => Outcome::Violation(format!("events after the final one: {body:?}")),
        _ => Outcome::Violation(format!("{} final events: {body:?}", finals.len())),
    }
}

async fn turn(
    client: &reqwest::Client,
    url: &str,
    message: &str,
    session: Option<&str>,
    abandon: bool,
) -> Outcome {
    let request = client
        .post(format!("{url}/v1/conversation"))
        .json(&json!({"message": message, "session_key": session}));
    let run = async {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Violation(format!("request failed: {e}")),
        };
        let status = response.status();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Outcome::Violation(format!("HTTP {status}: {body}"));
        }
        let mut body = response.bytes_stream();
        if abandon {
            let _ = body.next().await;
            return Outcome::Abandoned;
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(e) => return Outcome::Violation(format!("body broke: {e}")),
            }
        }
        judge(&String::from_utf8_lossy(&bytes))
    };
    // A hang guard, not a speed assertion: the host's timeouts end every turn well before.
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| Outcome::Violation("hung".into()))
}

#[derive(Default)]
struct Tally {
    done: usize,
    errors: BTreeMap<String, usize>,
    abandoned: usize,
    violations: Vec<String>,
    /// Completed turns with a session: user message → the response the client received.
    completed: HashMap<String, String>,
    sessions: Vec<String>,
}

fn error_kind(message: &str) -> String {
    let kind = [
        "first token timeout",
        "idle timeout",
        "truncated",
        "upstream HTTP 429",
        "upstream HTTP 500",
        "upstream HTTP 503",
        "malformed",
        "cannot connect",
        "ended without a final event",
    ]
    .into_iter()
    .find(|k| message.contains(k))
    .unwrap_or(message);
    kind.chars().take(80).collect()
}

async fn run_turns(
    client: &reqwest::Client,
    url: &str,
    range: std::ops::Range<usize>,
    tally: &Arc<Mutex<Tally>>,
) {
    let next = Arc::new(AtomicUsize::new(range.start));
    let workers = (0..CONCURRENCY).map(|worker| {
        let (next, tally, client) = (next.clone(), tally.clone(), client.clone());
        let end = range.end;
        async move {
            let mut local = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::AcqRel);
                if i >= end {
                    break;
                }
                let abandon = i % ABANDON_EVERY == 7;
                // Sessions belong to one worker, so a session's turns never overlap here.
                let session =
                    (!abandon && i % 5 != 0).then(|| format!("soak-w{worker}-s{}", local % 3));
                local += 1;
                let message = format!("soak turn {i}");
                let outcome = turn(&client, url, &message, session.as_deref(), abandon).await;
                let mut t = tally.lock();
                match outcome {
                    Outcome::Done(response) => {
                        t.done += 1;
                        if let Some(s) = session {
                            t.completed.insert(message, response);
                            if !t.sessions.contains(&s) {
                                t.sessions.push(s);
                            }
                        }
                    }
                    Outcome::Error(e) => *t.errors.entry(error_kind(&e)).or_insert(0) += 1,
                    Outcome::Abandoned => t.abandoned += 1,
                    Outcome::Violation(v) => t.violations.push(format!("turn {i}: {v}")),
                }
            }
        }
    });
    futures::future::join_all(workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_against_a_chaos_upstream_leaks_nothing_and_ends_every_stream_once() {
    let started = Instant::now();
    let fds_before = open_fds();
    let tasks_before = alive_tasks();

    let chaos = ChaosUpstream::start(ChaosConfig {
        seed: SEED,
        faults_per_mille: FAULTS_PER_MILLE,
        stall: Duration::from_secs(2),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = HostSpec {
        config: json!({
            "timeouts": {"connect_ms": 1000, "first_token_ms": 200, "idle_ms": 200},
        }),
        ..HostSpec::default()
    }
    .host_config(dir.path());
    let env = env_at(chaos.base_url(), true, &[]);
    let registry = Registry::from_inventory().unwrap();
    let state = AppState::connect(config, &registry, &env).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_host, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, gateway_host::app(state.clone()))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();

    let tally = Arc::new(Mutex::new(Tally::default()));
    run_turns(&client, &url, 0..WARMUP, &tally).await;
    assert!(settle("warm-up in-flight", || state.limits().open() == 0).await);
    let rss_baseline = rss_kib();

    let soak_started = Instant::now();
    run_turns(&client, &url, WARMUP..WARMUP + TURNS, &tally).await;
    let soak_secs = soak_started.elapsed().as_secs_f64();

    // In flight back to zero, with the host and its pools still up.
    let drained = settle("in-flight", || state.limits().open() == 0).await;
    let open_after = state.limits().open();
    let gauge_zero = state
        .metrics()
        .render()
        .contains("gateway_host_in_flight_streams 0");
    let fds_alive = open_fds();
    let tasks_alive = alive_tasks();
    let rss_after = rss_kib();

    // History holds only completed turns, each answer right after its own question.
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner();
    let mut stored_turns = 0;
    let mut history_violations = Vec::new();
    for key in &tally.sessions {
        let history = state.store().history(key, 1000).await.unwrap();
        for pair in history.chunks(2) {
            let [user, assistant] = pair else {
                history_violations.push(format!("{key}: odd message {pair:?}"));
                continue;
            };
            match tally.completed.get(&*user.content) {
                Some(response)
                    if user.role == Role::User
                        && assistant.role == Role::Assistant
                        && *assistant.content == **response =>
                {
                    stored_turns += 1
                }
                _ => history_violations.push(format!("{key}: {pair:?}")),
            }
        }
    }

    // Tear everything down; every socket and task must go.
    drop(client);
    let _ = stop_host.send(());
    server.await.unwrap().unwrap();
    drop(state);
    chaos.stop();
    let counts = chaos.counts();
    let upstream_requests = chaos.requests();
    let chaos_closed = settle("chaos connections", || chaos.open_connections() == 0).await;
    drop(chaos);
    let tasks_settled = settle("tasks", || alive_tasks() <= tasks_before).await;
    let fds_settled = settle("fds", || open_fds() <= fds_before).await;
    let (tasks_end, fds_end) = (alive_tasks(), open_fds());

    let faults: u64 = counts
        .iter()
        .filter(|(f, _)| **f != Fault::None)
        .map(|(_, n)| n)
        .sum();
    let errors: usize = tally.errors.values().sum();
    println!("soak: seed {SEED:#x}, {TURNS} turns (+{WARMUP} warm-up) at concurrency {CONCURRENCY} in {soak_secs:.1} s ({:.0} turns/s), total {:.1} s",
        TURNS as f64 / soak_secs, started.elapsed().as_secs_f64());
    println!(
        "client outcomes: {} text_done, {errors} error, {} abandoned by the client, {} violations",
        tally.done,
        tally.abandoned,
        tally.violations.len()
    );
    for (kind, n) in &tally.errors {
        println!("  error event {kind:?}: {n}");
    }
    println!("upstream requests {upstream_requests}, faults injected {faults}:");
    for (fault, n) in &counts {
        println!("  {:<32} {n}", fault.label());
    }
    println!(
        "history: {} sessions, {stored_turns} stored turns checked, {} violations",
        tally.sessions.len(),
        history_violations.len()
    );
    println!("in-flight turns after: {open_after} (gauge at 0: {gauge_zero})");
    println!(
        "tasks: before {tasks_before}, with host up {tasks_alive}, after teardown {tasks_end}"
    );
    println!("fds: before {fds_before}, with host up {fds_alive}, after teardown {fds_end}");
    println!(
        "RSS: warmed-up baseline {} MiB, after soak {} MiB (bound +{} MiB)",
        rss_baseline / 1024,
        rss_after / 1024,
        RSS_SLACK_KIB / 1024
    );

    assert!(
        tally.violations.is_empty(),
        "terminal-event violations: {:#?}",
        &tally.violations[..tally.violations.len().min(10)]
    );
    assert!(
        history_violations.is_empty(),
        "history holds turns the client did not complete: {:#?}",
        &history_violations[..history_violations.len().min(10)]
    );
    assert_eq!(tally.done + errors + tally.abandoned, TURNS + WARMUP);
    for fault in Fault::ALL {
        assert!(
            counts.get(&fault).copied().unwrap_or(0) > 0,
            "{} never injected",
            fault.label()
        );
    }
    assert!(tally.done > 0 && errors > 0, "both outcomes exercised");
    assert!(stored_turns > 0, "some history was checked");
    assert!(drained && gauge_zero, "turns still in flight");
    // With everything up, only pooled keep-alive connections may remain: at most one per
    // client worker on each side of each hop (client↔host, host↔chaos), plus 2 listeners.
    let pooled_bound = 4 * CONCURRENCY + 2;
    assert!(
        fds_alive <= fds_before + pooled_bound,
        "fds {fds_alive} > {fds_before} + {pooled_bound}"
    );
    assert!(
        tasks_alive <= tasks_before + pooled_bound,
        "tasks {tasks_alive} > {tasks_before} + {pooled_bound}"
    );
    assert!(chaos_closed, "upstream connections left open");
    assert!(
        tasks_settled,
        "task leak: {tasks_end} alive, {tasks_before} before"
    );
    assert!(fds_settled, "fd leak: {fds_end} open, {fds_before} before");
    assert!(
        rss_after <= rss_baseline + RSS_SLACK_KIB,
        "RSS grew from {rss_baseline} KiB to {rss_after} KiB"
    );
}
