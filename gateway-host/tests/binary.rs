//! Tests of the real `gateway-host` binary: the linked `openai-compat` kind, the listening line,
//! one turn, secrets absent from its output, `demo` and `check`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use gateway_tests::process::{host_command, output_text, ServeProcess, SERVE_ANY_PORT};
use gateway_tests::{write_dirs, write_profile, HostSpec, MockUpstream, Reply};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_gateway-host");
const KEY: &str = "sk-binary-test-DISTINCTIVE-31337";

/// `gateway-host check` on the files in `dir`, with the built-in gateway's key and `env`.
fn check(dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    host_command(BIN, dir, &["check"])
        .env("OPENAI_COMPAT_API_KEY", KEY)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The harness's mock upstream, answering the next turn with "Binary answer"; returns its
/// base URL.
async fn mock_upstream() -> String {
    let upstream = MockUpstream::start().await;
    upstream.push(Reply::tokens(&["Binary", " answer"]));
    upstream.base_url()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_lists_openai_compat_answers_and_never_prints_the_key() {
    let base_url = mock_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let mut cmd = host_command(BIN, dir.path(), SERVE_ANY_PORT);
    cmd.env("OPENAI_COMPAT_BASE_URL", &base_url)
        .env("OPENAI_COMPAT_API_KEY", KEY)
        .env("RUST_LOG", "debug");
    let mut host = ServeProcess::spawn(cmd);
    let url = host.url.clone();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let gateways = host.get_json("/v1/gateways").await;
    let ids: Vec<&str> = gateways["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"openai-compat"),
        "linked kind listed: {gateways}"
    );
    let text = client
        .post(format!("{url}/v1/conversation"))
        .json(&json!({"message": "hello", "session_key": "bin-1"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: text_done"), "{text}");
    assert!(text.contains("Binary answer"), "{text}");

    host.kill();
    let (out, err) = (host.stdout(), host.stderr());
    assert!(!err.is_empty(), "debug logs were written");
    assert!(
        !out.contains(KEY) && !err.contains(KEY),
        "the key leaked:\n{out}\n{err}"
    );
    assert_eq!(
        out.lines().count(),
        1,
        "stdout holds only the listening line: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_one_turn_to_the_terminal() {
    let base_url = mock_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let mut cmd = host_command(BIN, dir.path(), &["chat", "--profile", "default", "hello"]);
    cmd.env("OPENAI_COMPAT_BASE_URL", &base_url)
        .env("OPENAI_COMPAT_API_KEY", KEY);
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "Binary answer");
    assert!(stderr.contains("time to first token"), "{stderr}");

    // An unknown profile is an error exit.
    let mut cmd = host_command(BIN, dir.path(), &["chat", "--profile", "nope", "hello"]);
    cmd.env("OPENAI_COMPAT_API_KEY", KEY);
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown profile"));
}

#[test]
fn demo_runs_without_key_or_network() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .arg("demo")
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("I received 2 earlier messages"), "{stdout}");
    assert!(
        stdout.contains("Your previous message was: \"What did I just ask you?\""),
        "{stdout}"
    );
    assert!(stdout.contains("6 message(s) stored"), "{stdout}");
}

#[test]
fn check_exit_code_follows_problems_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[gateways.groq]\nkind = \"openai-compat\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         api_key = \"sk-inline-SECRET-777\"\n",
    )
    .unwrap();
    let run = || {
        let output = check(dir.path(), &[]);
        (output.status.success(), output_text(&output))
    };
    let (ok, text) = run();
    assert!(ok, "{text}");
    assert!(text.contains("default.json"), "{text}");
    assert!(text.contains("\"api_key\": \"***\""), "{text}");
    assert!(
        !text.contains("sk-inline-SECRET-777") && !text.contains(KEY),
        "{text}"
    );

    std::fs::write(dir.path().join("profiles/broken.json"), "{ nope").unwrap();
    let (ok, text) = run();
    assert!(!ok, "a broken profile fails check: {text}");
    assert!(text.contains("broken.json"), "{text}");
    std::fs::remove_file(dir.path().join("profiles/broken.json")).unwrap();

    // The default profile uses openai-compat: without its key check fails and names the variable.
    let output = host_command(BIN, dir.path(), &["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("OPENAI_COMPAT_API_KEY"), "{text}");
}

#[test]
fn check_reports_unknown_kinds_unset_keys_unused_instances_and_unknown_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    std::fs::write(
        dir.path().join("gateway.toml"),
        r#"
[gateways.mystery]
kind = "nope"

[gateways.groq]
kind = "openai-compat"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "GROQ_API_KEY"

[gateways.spare]
kind = "openai-compat"
base_url = "http://127.0.0.1:9/v1"
auth = "none"

[gateways.ollama]
kind = "openai-compat"
base_url = "http://127.0.0.1:9/v1"
auth = "none"
"#,
    )
    .unwrap();
    let profile = |id: &str, gateway: &str, fallbacks: &[&str]| {
        let p = json!({"id": id, "adapter_config": {"gateway_id": gateway,
                       "fallback_gateway_ids": fallbacks}});
        write_profile(dir.path(), &p);
    };
    profile("slow", "groq", &["ollama"]);
    profile("fast", "openai-compat", &["ghost"]);
    let output = check(dir.path(), &[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{text}");
    let line = |subject: &str| {
        text.lines()
            .find(|l| l.contains(&format!(" {subject}: ")))
            .unwrap_or_else(|| panic!("no line for {subject}:\n{text}"))
            .to_string()
    };
    let mystery = line("mystery");
    assert!(
        mystery.contains("PROBLEM") && mystery.contains("unknown gateway kind 'nope'"),
        "{mystery}"
    );
    let groq = line("groq");
    assert!(
        groq.contains("PROBLEM") && groq.contains("GROQ_API_KEY is not set"),
        "{groq}"
    );
    assert!(groq.contains("used by slow"), "{groq}");
    let spare = line("spare");
    assert!(
        spare.contains("warning") && spare.contains("no profile uses it"),
        "{spare}"
    );
    let ollama = line("ollama");
    assert!(
        ollama.contains("ok") && ollama.contains("used by slow"),
        "{ollama}"
    );
    let fast = line("fast.json");
    assert!(
        fast.contains("PROBLEM") && fast.contains("unknown gateway 'ghost'"),
        "{fast}"
    );
    assert!(line("slow.json").contains("gateway groq, then ollama"));
    assert!(!text.contains(KEY), "{text}");

    // With the key set and the broken pieces gone, check passes (unused instance: a warning).
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[gateways.groq]\nkind = \"openai-compat\"\napi_key_env = \"GROQ_API_KEY\"\n\
         [gateways.spare]\nkind = \"openai-compat\"\nauth = \"none\"\n",
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("profiles/fast.json")).unwrap();
    profile("slow", "groq", &[]);
    let output = check(dir.path(), &[("GROQ_API_KEY", "gsk-check-test")]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("0 problem(s), 1 warning(s)"), "{text}");
    assert!(!text.contains("gsk-check-test"), "{text}");
}

#[test]
fn check_starts_tool_servers_and_reports_unreachable_unknown_and_clashing_ones() {
    let dir = tempfile::tempdir().unwrap();
    write_dirs(dir.path(), &HostSpec::default());
    let js = gateway_tests::tools::everything_js();
    let js = js.display();
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!(
            r#"
[tools.servers.everything]
command = "node"
args = ["{js}", "stdio"]
env = {{ EVERYTHING_TOKEN = "env-SECRET-42" }}

[tools.servers.everything-two]
command = "node"
args = ["{js}", "stdio"]
allow = ["echo", "no-such-tool"]

[tools.servers.gone]
command = "/nonexistent/mcp-server"

[tools.servers.remote]
url = "http://127.0.0.1:9/mcp"
headers = {{ Authorization = "Bearer hdr-SECRET-43" }}
"#
        ),
    )
    .unwrap();
    let helper = json!({"id": "helper", "features": {"tools": true},
        "adapter_config": {"tool_servers": ["everything", "everything-two", "gone", "ghost"]}});
    write_profile(dir.path(), &helper);
    let output = check(dir.path(), &[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{text}");
    let lines = |subject: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(&format!(" {subject}: ")))
            .map(str::to_string)
            .collect()
    };
    let everything = lines("everything").join("\n");
    assert!(
        everything.contains("ok")
            && everything.contains("get-sum")
            && everything.contains("used by helper"),
        "{everything}"
    );
    let two = lines("everything-two").join("\n");
    assert!(two.contains("1 tool(s): echo"), "{two}");
    assert!(
        two.contains("warning") && two.contains("'no-such-tool'"),
        "{two}"
    );
    let gone = lines("gone").join("\n");
    assert!(
        gone.contains("PROBLEM") && gone.contains("unreachable"),
        "{gone}"
    );
    let remote = lines("remote").join("\n");
    assert!(
        remote.contains("warning") && remote.contains("no profile uses it"),
        "{remote}"
    );
    let helper = lines("helper.json").join("\n");
    assert!(helper.contains("unknown tool server 'ghost'"), "{helper}");
    assert!(
        helper.contains("tool 'echo' is offered by both 'everything' and 'everything-two'"),
        "{helper}"
    );
    for secret in ["env-SECRET-42", "hdr-SECRET-43"] {
        assert!(
            !output_text(&output).contains(secret),
            "{secret} shown:\n{text}"
        );
    }
}
