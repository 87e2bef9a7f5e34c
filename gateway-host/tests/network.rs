//! The real `gateway-host` binary on a hostile network: a low open-file limit and hundreds of
//! sockets that send nothing must not stop `/healthz`; the start-up lines name the address
//! actually bound; `check` shows the connection and CORS settings.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use gateway_tests::process::{host_command, output_text, ServeProcess, SERVE_ANY_PORT};
use gateway_tests::raw::RawConn;
use gateway_tests::{write_dirs, HostSpec};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-host");
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
/// Silent sockets opened against the host (more than its open-file limit allows at once).
const SILENT: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_low_open_file_limit_silent_sockets_leave_healthz_answering() {
    // This process holds all the sockets: let it open them.
    rlimit::increase_nofile_limit(4 * SILENT as u64).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let script = r#"ulimit -n 128 && exec "$0" serve --bind 127.0.0.1:0"#;
    let mut cmd = host_command("sh", dir.path(), &["-c", script, BIN]);
    // A header timeout far beyond the test: the cap, not the timeout, must keep room.
    cmd.env("GATEWAY_SERVER__HEADER_READ_TIMEOUT_MS", "600000");
    let host = ServeProcess::spawn(cmd);
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(RawConn::connect(&host.url).await);
    }
    let mut probe = RawConn::connect(&host.url).await;
    probe.send(HEALTHZ).await.unwrap();
    assert_eq!(probe.response().await.status, 200, "{}", host.output());
    // Room was made by closing the oldest silent sockets, unanswered.
    for conn in silent.iter_mut().take(SILENT - 60) {
        assert!(conn.closed().await.is_empty());
    }
    let output = host.output();
    assert!(
        output.contains("server.max_connections lowered"),
        "{output}"
    );
    assert!(!output.contains("Too many open files"), "{output}");
}

#[test]
fn the_start_up_lines_name_the_port_actually_bound() {
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let mut cmd = host_command(BIN, dir.path(), SERVE_ANY_PORT);
    cmd.env("RUST_LOG", "debug");
    let mut host = ServeProcess::spawn(cmd);
    let bound = host.url.trim_start_matches("http://").to_string();
    assert!(!bound.ends_with(":0"), "{bound}");
    host.wait_for_line("serving");
    host.signal("TERM");
    assert!(host.wait().success());
    let output = host.output();
    assert!(
        output.contains(&format!("bound to loopback {bound}")),
        "{output}"
    );
    assert!(!output.contains("127.0.0.1:0"), "{output}");
}

#[test]
fn check_shows_connections_and_cors_and_refuses_a_bad_origin() {
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let check = |env: &[(&str, &str)]| {
        let mut cmd = host_command(BIN, dir.path(), &["check"]);
        cmd.env("OPENAI_COMPAT_API_KEY", "sk-check");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = cmd.output().unwrap();
        (output.status.success(), output_text(&output))
    };
    let (ok, text) = check(&[
        ("GATEWAY_SERVER__MAX_CONNECTIONS", "77"),
        ("GATEWAY_SERVER__IDLE_TIMEOUT_MS", "4321"),
        (
            "GATEWAY_CORS__ALLOWED_ORIGINS",
            "https://app.example, http://localhost:3000",
        ),
        ("GATEWAY_LIMITS__MAX_ANSWER_CHARS", "9999"),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("at most 77 open"), "{text}");
    assert!(text.contains("idle keep-alive 4321 ms"), "{text}");
    assert!(
        text.contains("the host's own origin and https://app.example, http://localhost:3000"),
        "{text}"
    );
    assert!(text.contains("answers up to 9999 characters"), "{text}");
    assert!(text.contains("\"header_read_timeout_ms\": 10000"), "{text}");
    let (ok, text) = check(&[("GATEWAY_CORS__ALLOWED_ORIGINS", "https://app.example/x")]);
    assert!(!ok, "{text}");
    assert!(text.contains("is not an origin"), "{text}");
}
