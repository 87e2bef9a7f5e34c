//! Replicas behind a load balancer: real `gateway-host` processes sharing a real
//! `redis-server`, with a real `nginx` balancing round-robin in front (`proxy_buffering off`).
//! Interrupts and steering turns land on the replica that does not run the turn and still cut
//! it; a replica killed with SIGKILL leaves its session free after one lease; a soak through
//! nginx with one replica restarted in the middle ends every stream with exactly one final
//! event and loses no completed turn.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use gateway_core::testing::RedisServer;
use gateway_tests::echo::{start_upstream, Upstream};
use gateway_tests::nginx::{free_port, Nginx};
use gateway_tests::process::{host_command, ServeProcess};
use gateway_tests::{chat_of, client, pairs, profile, write_dirs, HostSpec, TextStream};
use serde_json::{json, Value};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_gateway-host");
const CUT_ELSEWHERE: &str = "turn cut at another replica's request";

/// What every replica shares: the files, Redis and the upstream.
struct Setup {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    upstream: Upstream,
    redis: RedisServer,
}

impl Setup {
    async fn new() -> Self {
        let redis = RedisServer::start();
        let (upstream, base_url) = start_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let mut steer = profile("steer");
        steer["llm"]["queue"] = json!({"mode": "steer"});
        write_dirs(dir.path(), &HostSpec::default().with_profile(steer));
        let env = [
            ("OPENAI_COMPAT_API_KEY", "sk-replicas-test"),
            ("OPENAI_COMPAT_BASE_URL", base_url.as_str()),
            ("GATEWAY_MEMORY__BACKEND", "redis"),
            ("GATEWAY_MEMORY__REDIS_URL", &redis.url()),
            ("GATEWAY_MEMORY__MAX_MESSAGES", "200"),
            ("GATEWAY_MEMORY__LEASE_MS", "1000"),
            ("RUST_LOG", "gateway_host=debug"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        Self {
            dir,
            env,
            upstream,
            redis,
        }
    }

    /// A replica serving on `port` (blocks until it listens).
    async fn replica(&self, port: u16) -> ServeProcess {
        let command = replica_command(self.dir.path(), port, &self.env);
        tokio::task::spawn_blocking(move || ServeProcess::spawn(command))
            .await
            .unwrap()
    }
}

fn replica_command(dir: &Path, port: u16, env: &[(String, String)]) -> std::process::Command {
    let bind = format!("127.0.0.1:{port}");
    let mut command = host_command(BIN, dir, &["serve", "--bind", &bind]);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// POST a turn to `url` and return the open body.
async fn open_turn(url: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/conversation"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A held turn of `session` through `url`, once its first token arrived.
async fn held(url: &str, profile: &str, session: &str) -> TextStream {
    let body = json!({"profile": profile, "message": "please hold", "session_key": session});
    let response = open_turn(url, body).await;
    assert_eq!(response.status(), 200);
    let mut stream = TextStream::new(response);
    stream.until("echo: ").await;
    stream
}

/// The data of every final (`text_done` or `error`) event of an SSE body.
fn finals(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|f| f.starts_with("event: text_done") || f.starts_with("event: error"))
        .map(|f| serde_json::from_str(f.split_once("data: ").unwrap().1).unwrap())
        .collect()
}

fn one_final(text: &str) -> Value {
    let mut finals = finals(text);
    assert_eq!(finals.len(), 1, "exactly one final event: {text}");
    finals.remove(0)
}

/// Wait until the replicas logged `n` turns cut at another replica's request (their output is
/// read by threads, so a line may lag its effect a little).
async fn cut_elsewhere(replicas: &[&ServeProcess], n: usize) {
    let count = || -> usize {
        replicas
            .iter()
            .map(|r| r.output().matches(CUT_ELSEWHERE).count())
            .sum()
    };
    gateway_tests::wait_for(|| count() >= n).await;
    assert_eq!(count(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupts_and_steering_through_nginx_reach_the_replica_running_the_turn() {
    let setup = Setup::new().await;
    let ports = [free_port(), free_port()];
    let a = setup.replica(ports[0]).await;
    let b = setup.replica(ports[1]).await;
    let nginx = Nginx::round_robin(&ports);

    // Round-robin: the turn goes to one replica, the interrupt to the other.
    let mut turn = held(&nginx.url, "default", "barge-in").await;
    let asked = Instant::now();
    let response = client()
        .post(format!("{}/v1/sessions/barge-in/interrupt", nginx.url))
        .json(&json!({"heard": "echo:"}))
        .send()
        .await
        .unwrap();
    let answered_in = asked.elapsed();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["interrupted"], true, "{body}");
    assert_eq!(body["stored"], "echo:", "{body}");
    let done = one_final(&turn.rest().await);
    assert_eq!(done["interrupted"], true, "{done}");
    // Cut on the other replica's request.
    cut_elsewhere(&[&a, &b], 1).await;
    println!("interrupt through nginx, served by the other replica, answered in {answered_in:?}");

    // A steering turn through nginx over a turn running on the other replica.
    let mut running = held(&nginx.url, "steer", "steered").await;
    let steering = open_turn(
        &nginx.url,
        json!({"profile": "steer", "message": "new question", "session_key": "steered"}),
    )
    .await;
    let steering = one_final(&steering.text().await.unwrap());
    assert_eq!(steering["response"], "echo: new question", "{steering}");
    assert_eq!(one_final(&running.rest().await)["interrupted"], true);
    cut_elsewhere(&[&a, &b], 2).await;
    let sent = chat_of(setup.upstream.requests.lock().unwrap().last().unwrap());
    assert_eq!(
        sent,
        pairs(&[
            ("user", "please hold"),
            ("assistant", "echo:"),
            ("user", "new question"),
        ]),
        "the steering turn sees what was streamed of the cut one"
    );
    setup.upstream.release.notify_waiters();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_with_sigkill_leaves_its_session_free_after_one_lease() {
    let setup = Setup::new().await;
    let mut a = setup.replica(free_port()).await;
    let b = setup.replica(free_port()).await;
    let _turn = held(&a.url, "default", "orphan").await;
    let view = b.get_json("/v1/sessions/orphan").await;
    assert_eq!(view["in_flight"], true, "b sees a's turn: {view}");
    a.kill();
    // b's turn waits for the lease a can no longer renew (1 s here), then runs.
    let text = open_turn(
        &b.url,
        json!({"message": "after the crash", "session_key": "orphan"}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(one_final(&text)["response"], "echo: after the crash");
    let view = b.get_json("/v1/sessions/orphan").await;
    assert_eq!(view["in_flight"], false, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_sigterm_leaves_no_lease_behind() {
    let setup = Setup::new().await;
    let mut a = setup.replica(free_port()).await;
    let body = json!({"message": "goodbye", "session_key": "leaving"});
    let text = open_turn(&a.url, body).await.text().await.unwrap();
    assert_eq!(one_final(&text)["type"], "text_done");
    a.signal("TERM");
    let (status, a) = tokio::task::spawn_blocking(move || (a.wait(), a))
        .await
        .unwrap();
    assert!(status.success(), "{}", a.output());
    let client = redis::Client::open(setup.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("gateway:session:#*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let leases: Vec<&String> = keys.iter().filter(|k| !k.contains("#w:")).collect();
    assert!(leases.is_empty(), "leases left behind: {leases:?}");
}

/// Counts of a soak's outcomes.
#[derive(Default)]
struct Tally {
    completed: AtomicUsize,
    refused: AtomicUsize,
}

/// Run `turns` turns of session `key` one after the other through `url`; every 200 stream
/// must end with exactly one final event. Returns the (question, answer) of completed turns.
async fn session_turns(
    url: String,
    key: String,
    turns: usize,
    tally: Arc<Tally>,
    halfway: Arc<Notify>,
    half: usize,
) -> Vec<(String, String)> {
    let mut done = Vec::new();
    for t in 0..turns {
        let question = format!("{key} turn {t}");
        for attempt in 0.. {
            assert!(attempt < 200, "turn {question} refused 200 times");
            let response = open_turn(&url, json!({"message": question, "session_key": key})).await;
            if response.status() != 200 {
                // A draining replica's 503, or nginx's 502 for a connection closed under it.
                tally.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let last = one_final(&response.text().await.unwrap());
            assert_eq!(last["type"], "text_done", "{last}");
            assert!(last.get("memory_error").is_none(), "{last}");
            done.push((
                question.clone(),
                last["response"].as_str().unwrap().to_string(),
            ));
            if tally.completed.fetch_add(1, Ordering::Relaxed) + 1 == half {
                halfway.notify_one();
            }
            break;
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_through_nginx_with_a_replica_restarted_loses_no_completed_turn() {
    const SESSIONS: usize = 12;
    const TURNS: usize = 10;
    let setup = Setup::new().await;
    let ports = [free_port(), free_port()];
    let mut a = setup.replica(ports[0]).await;
    let b = setup.replica(ports[1]).await;
    let nginx = Nginx::round_robin(&ports);
    let tally = Arc::new(Tally::default());
    let halfway = Arc::new(Notify::new());
    let started = Instant::now();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|s| {
            tokio::spawn(session_turns(
                nginx.url.clone(),
                format!("soak-{s}"),
                TURNS,
                tally.clone(),
                halfway.clone(),
                SESSIONS * TURNS / 2,
            ))
        })
        .collect();
    halfway.notified().await;
    // A rolling restart of replica a: SIGTERM (it drains), then a new process on its port.
    a.signal("TERM");
    let status = tokio::task::spawn_blocking(move || (a.wait(), a))
        .await
        .unwrap();
    assert!(status.0.success(), "{}", status.1.output());
    let restarted = setup.replica(ports[0]).await;
    let mut answered = HashMap::new();
    for (s, session) in sessions.into_iter().enumerate() {
        answered.insert(format!("soak-{s}"), session.await.unwrap());
    }
    let took = started.elapsed();
    for (key, turns) in &answered {
        assert_eq!(turns.len(), TURNS);
        let view = b.get_json(&format!("/v1/sessions/{key}")).await;
        let stored: Vec<(String, String)> = view["messages"]
            .as_array()
            .unwrap()
            .chunks(2)
            .map(|pair| {
                (
                    pair[0]["content"].as_str().unwrap().to_string(),
                    pair[1]["content"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            &stored, turns,
            "session {key}: every completed turn, in order"
        );
    }
    println!(
        "soak: {} turns through nginx over 2 replicas (one restarted halfway) in {took:?}, {} refused and retried",
        tally.completed.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed)
    );
    drop(restarted);
}
