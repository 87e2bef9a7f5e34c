//! Operations tests of the real `gateway-host` binary: two processes sharing session memory
//! through Redis (and a restart losing nothing), graceful shutdown on SIGTERM, and `check`
//! reporting auth and Redis without showing secrets.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;

use gateway_core::testing::RedisServer;
use gateway_tests::echo::start_upstream;
use gateway_tests::process::{host_command, output_text, ServeProcess, SERVE_ANY_PORT};
use gateway_tests::{chat_of, client, pairs, write_dirs, HostSpec, TextStream};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-host");
const KEY: &str = "sk-ops-test-DISTINCTIVE-8080";
const REDIS_PASSWORD: &str = "redis-ops-PASSWORD-5150";

/// `gateway-host <args>` in `dir` with a clean environment, the test key and `env`.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = host_command(BIN, dir, args);
    cmd.env("OPENAI_COMPAT_API_KEY", KEY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `gateway-host serve` in `dir` with debug logs and `env`.
fn serve(dir: &Path, env: &[(&str, &str)]) -> ServeProcess {
    let mut cmd = command(dir, SERVE_ANY_PORT, env);
    cmd.env("RUST_LOG", "debug");
    ServeProcess::spawn(cmd)
}

async fn turn(url: &str, message: &str, session: &str) -> String {
    client()
        .post(format!("{url}/v1/conversation"))
        .json(&json!({"message": message, "session_key": session}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_processes_share_memory_through_redis_and_a_restart_loses_nothing() {
    let redis = RedisServer::start_with_password(REDIS_PASSWORD);
    let (upstream, base_url) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let redis_url = redis.url();
    let env = [
        ("OPENAI_COMPAT_BASE_URL", base_url.as_str()),
        ("GATEWAY_MEMORY__BACKEND", "redis"),
        ("GATEWAY_MEMORY__REDIS_URL", redis_url.as_str()),
    ];
    let mut a = serve(dir.path(), &env);
    let b = serve(dir.path(), &env);

    let text = turn(&a.url, "first on A", "shared-1").await;
    assert!(text.contains("echo: first on A"), "{text}");
    let text = turn(&b.url, "second on B", "shared-1").await;
    assert!(text.contains("event: text_done"), "{text}");
    let seen_by_b = chat_of(&upstream.requests.lock().unwrap()[1]);
    assert_eq!(
        seen_by_b,
        pairs(&[
            ("user", "first on A"),
            ("assistant", "echo: first on A"),
            ("user", "second on B"),
        ]),
        "B sent A's turn as history"
    );

    // Restart A: the history lives in Redis, not in the process.
    a.signal("TERM");
    assert!(a.wait().success(), "{}", a.output());
    let a_output = a.output();
    drop(a);
    let a = serve(dir.path(), &env);
    turn(&a.url, "third on new A", "shared-1").await;
    let seen = chat_of(upstream.requests.lock().unwrap().last().unwrap());
    assert_eq!(
        seen,
        pairs(&[
            ("user", "first on A"),
            ("assistant", "echo: first on A"),
            ("user", "second on B"),
            ("assistant", "echo: second on B"),
            ("user", "third on new A"),
        ])
    );
    for output in [a_output, a.output(), b.output()] {
        assert!(
            output.contains("redis://:***@127.0.0.1"),
            "debug logs show the redacted URL: {output}"
        );
        assert!(
            !output.contains(REDIS_PASSWORD) && !output.contains(KEY),
            "a secret leaked:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_when_redis_is_down_and_names_only_the_host() {
    let mut redis = RedisServer::start_with_password(REDIS_PASSWORD);
    let url = redis.url();
    redis.stop();
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let mut cmd = command(
        dir.path(),
        SERVE_ANY_PORT,
        &[
            ("GATEWAY_MEMORY__BACKEND", "redis"),
            ("GATEWAY_MEMORY__REDIS_URL", &url),
        ],
    );
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(&format!("redis at 127.0.0.1:{}", redis.port())),
        "{text}"
    );
    assert!(!text.contains(REDIS_PASSWORD), "{text}");
}

/// Start a held turn on `host` and return its body stream once the first token arrived.
async fn held_stream(url: &str) -> TextStream {
    let response = client()
        .post(format!("{url}/v1/conversation"))
        .json(&json!({"message": "please hold", "session_key": "held"}))
        .send()
        .await
        .unwrap();
    let mut stream = TextStream::new(response);
    stream.until("echo: ").await;
    stream
}

fn final_events(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .filter(|e| *e == "text_done" || *e == "error")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_turn_finish_within_the_grace_period() {
    let (upstream, base_url) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let mut host = serve(
        dir.path(),
        &[
            ("OPENAI_COMPAT_BASE_URL", &base_url),
            ("GATEWAY_SHUTDOWN_GRACE_SECS", "60"),
        ],
    );
    let mut body = held_stream(&host.url).await;
    host.signal("TERM");
    host.wait_for_line("draining");
    // While draining, a new turn is refused (or its connection is no longer accepted).
    let late = client()
        .post(format!("{}/v1/conversation", host.url))
        .json(&json!({"message": "late"}))
        .send()
        .await;
    if let Ok(response) = late {
        assert_eq!(response.status(), 503);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "shutting_down");
    }
    upstream.release.notify_one();
    let text = body.rest().await;
    assert_eq!(final_events(&text), ["text_done"], "{text}");
    assert!(text.contains("please hold"), "{text}");
    let status = host.wait();
    assert!(status.success(), "exit {status:?}:\n{}", host.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_stuck_turn_with_one_error_event_after_the_grace_period() {
    let (_upstream, base_url) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let mut host = serve(
        dir.path(),
        &[
            ("OPENAI_COMPAT_BASE_URL", &base_url),
            ("GATEWAY_SHUTDOWN_GRACE_SECS", "1"),
        ],
    );
    let mut body = held_stream(&host.url).await;
    host.signal("TERM");
    let text = body.rest().await;
    assert_eq!(final_events(&text), ["error"], "{text}");
    assert!(text.contains("host shutting down"), "{text}");
    let status = host.wait();
    assert!(status.success(), "exit {status:?}:\n{}", host.output());
    assert!(
        host.output().contains("grace period over"),
        "{}",
        host.output()
    );
}

#[test]
fn check_reports_auth_exposure_and_redis_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let run = |env: &[(&str, &str)]| {
        let output = command(dir.path(), &["check"], env).output().unwrap();
        (output.status.success(), output_text(&output))
    };
    // Open on a public address: a warning (not a failure).
    let (ok, text) = run(&[("GATEWAY_BIND", "0.0.0.0:8787")]);
    assert!(ok, "{text}");
    assert!(text.contains("WITHOUT client authentication"), "{text}");
    // With tokens: counted, never shown.
    let tokens_file = dir.path().join("tokens.txt");
    std::fs::write(&tokens_file, "# clients\nfile-TOKEN-aaaa\n").unwrap();
    let (ok, text) = run(&[
        ("GATEWAY_BIND", "0.0.0.0:8787"),
        ("GATEWAY_AUTH__TOKENS", "env-TOKEN-bbbb,env-TOKEN-cccc"),
        ("GATEWAY_AUTH__TOKENS_FILE", tokens_file.to_str().unwrap()),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("3 bearer token(s) accepted"), "{text}");
    assert!(!text.contains("WITHOUT client authentication"), "{text}");
    assert!(!text.contains("TOKEN-"), "{text}");
    // A missing tokens file fails closed and fails check.
    let (ok, text) = run(&[("GATEWAY_AUTH__TOKENS_FILE", "/nonexistent/tokens")]);
    assert!(!ok && text.contains("/nonexistent/tokens"), "{text}");
    // So does one that holds no token: naming a file must not leave the host open.
    let empty_file = dir.path().join("empty-tokens.txt");
    std::fs::write(&empty_file, "# rotated out\n\n").unwrap();
    let (ok, text) = run(&[("GATEWAY_AUTH__TOKENS_FILE", empty_file.to_str().unwrap())]);
    assert!(!ok && text.contains("holds no token"), "{text}");
    // Redis down: a problem naming the host; the password is redacted.
    let (ok, text) = run(&[
        ("GATEWAY_MEMORY__BACKEND", "redis"),
        (
            "GATEWAY_MEMORY__REDIS_URL",
            &format!("redis://:{REDIS_PASSWORD}@127.0.0.1:9/0"),
        ),
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("redis://:***@127.0.0.1:9/0"), "{text}");
    assert!(text.contains("redis at 127.0.0.1:9"), "{text}");
    assert!(!text.contains(REDIS_PASSWORD), "{text}");
}

/// A tool server that echoes its credentials back (a 401 quoting the `Authorization`
/// header, a stderr line printing its env): `check` and the log show `***`, not the values.
#[test]
fn check_reports_tool_servers_without_their_secrets() {
    const HEADER_TOKEN: &str = "hdr-SECRET-TOKEN-555";
    const ENV_SECRET: &str = "env-SECRET-9876";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut socket in listener.incoming().map_while(Result::ok) {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n")
                && std::io::Read::read(&mut socket, &mut byte).unwrap_or(0) == 1
            {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let auth = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or_else(|| l.strip_prefix("Authorization: "))
                })
                .unwrap_or("")
                .to_string();
            let body = format!("got '{auth}' token={}", auth.trim_start_matches("Bearer "));
            let reply = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut socket, reply.as_bytes());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let config = format!(
        r#"[tools]
connect_timeout_ms = 1500
[tools.servers.remote]
url = "{url}"
headers = {{ Authorization = "Bearer {HEADER_TOKEN}" }}
[tools.servers.local]
command = "sh"
args = ["-c", "echo starting with $TEAM_TOKEN >&2; sleep 30"]
env = {{ TEAM_TOKEN = "{ENV_SECRET}" }}
"#
    );
    std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
    let output = command(dir.path(), &["check"], &[("RUST_LOG", "debug")])
        .output()
        .unwrap();
    let text = output_text(&output);
    assert!(text.contains("remote"), "{text}");
    assert!(
        text.contains("starting with ***"),
        "the stderr line, masked: {text}"
    );
    assert!(
        !text.contains(HEADER_TOKEN) && !text.contains(ENV_SECRET),
        "{text}"
    );
}
