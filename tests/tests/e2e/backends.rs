//! Named gateway instances: several backends side by side, each with its own upstream, model,
//! key (or none), sampling settings and extra headers.

use figment::providers::{Format, Toml};
use figment::Figment;
use gateway_core::{Env, Registry};
use gateway_host::{HostConfig, Instances};
use gateway_tests::{profile_on, HostSpec, MockUpstream, Reply, TestHost, TEST_KEY};
use serde_json::json;
use tokio::sync::oneshot;

const GROQ_KEY: &str = "gsk-test-GROQ-5a4b3c";

#[tokio::test]
async fn two_profiles_on_two_named_instances_reach_their_own_upstream() {
    let groq = MockUpstream::start().await;
    let local = MockUpstream::start().await;
    let spec = HostSpec {
        config: json!({"gateways": {
            "groq": {"kind": "openai-compat", "base_url": groq.base_url(),
                     "api_key_env": "GROQ_API_KEY", "model": "llama-3.3-70b-versatile",
                     "max_tokens": 77, "temperature": 0.25, "idle_timeout_ms": 5000,
                     "headers": {"HTTP-Referer": "https://voice.example", "X-Title": "Voice"}},
            "ollama": {"kind": "openai-compat", "base_url": local.base_url(), "auth": "none",
                       "model": "llama3.2", "max_tokens": 55, "connect_timeout_ms": 500},
        }}),
        ..HostSpec::default()
    }
    .with_env("GROQ_API_KEY", GROQ_KEY)
    .with_profile(profile_on("fast", "groq", &[]))
    .with_profile(profile_on("local", "ollama", &[]));
    let host = TestHost::with(spec).await;

    let fast = host.sse(json!({"message": "hi", "profile": "fast"})).await;
    let home = host.sse(json!({"message": "hi", "profile": "local"})).await;
    assert_eq!(fast.last()["type"], "text_done", "{}", fast.body);
    assert_eq!(home.last()["type"], "text_done", "{}", home.body);
    assert_eq!(fast.events[0]["gateway"], "groq");
    assert_eq!(home.events[0]["gateway"], "ollama");

    assert_eq!(groq.requests().len(), 1);
    assert_eq!(local.requests().len(), 1);
    assert!(host.upstream.requests().is_empty(), "built-in not used");
    let body = groq.last_request();
    assert_eq!(body["model"], "llama-3.3-70b-versatile");
    assert_eq!(body["max_tokens"], 77);
    assert_eq!(body["temperature"], 0.25);
    let body = local.last_request();
    assert_eq!(body["model"], "llama3.2");
    assert_eq!(body["max_tokens"], 55);
    assert!(body.get("temperature").is_none());

    assert_eq!(groq.authorizations(), [Some(format!("Bearer {GROQ_KEY}"))]);
    assert_eq!(local.authorizations(), [None], "auth = none sends no key");
    let headers = &groq.request_headers()[0];
    assert_eq!(headers["http-referer"], "https://voice.example");
    assert_eq!(headers["x-title"], "Voice");
    assert!(local.request_headers()[0].get("x-title").is_none());

    let (_, gateways) = host.get("/v1/gateways").await;
    let text = gateways.to_string();
    assert!(
        !text.contains(GROQ_KEY) && !text.contains(TEST_KEY),
        "{text}"
    );
    for id in ["groq", "ollama", "openai-compat"] {
        let g = gateways["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed: {text}"));
        assert_eq!(g["configured"], true, "{g}");
        assert_eq!(g["kind"], "openai-compat");
    }
}

#[tokio::test]
async fn a_named_instance_without_its_key_answers_503_naming_the_variable() {
    let groq = MockUpstream::start().await;
    let spec = HostSpec {
        config: json!({"gateways": {"groq": {"kind": "openai-compat",
            "base_url": groq.base_url(), "api_key_env": "GROQ_API_KEY"}}}),
        ..HostSpec::default()
    }
    .with_profile(profile_on("fast", "groq", &[]));
    let host = TestHost::with(spec).await;
    let answer = host.sse(json!({"message": "hi", "profile": "fast"})).await;
    assert_eq!(answer.status, 503);
    let message = answer.error()["message"].as_str().unwrap().to_string();
    assert!(message.contains("GROQ_API_KEY"), "{message}");
    assert!(groq.requests().is_empty());
}

#[test]
fn the_shipped_example_config_builds_both_backends() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway.example.toml");
    let config = HostConfig::from_provider(Figment::from(Toml::file(&path))).unwrap();
    let registry = Registry::from_inventory().unwrap();
    let instances = Instances::build(
        &registry,
        &config,
        &Env::from_pairs([("GROQ_API_KEY", GROQ_KEY)]),
    );
    assert_eq!(instances.failures().count(), 0, "{instances:?}");
    for id in ["groq", "ollama"] {
        let gateway = instances.get(id).unwrap_or_else(|| panic!("{id} built"));
        assert_eq!(gateway.is_configured(), Ok(()), "{id}");
    }
    // Without the Groq key, groq is listed as not configured, naming the variable.
    let instances = Instances::build(&registry, &config, &Env::default());
    let reason = instances.get("groq").unwrap().is_configured().unwrap_err();
    assert!(reason.to_string().contains("GROQ_API_KEY"), "{reason}");
    assert_eq!(instances.get("ollama").unwrap().is_configured(), Ok(()));
}

#[tokio::test]
async fn the_builtin_instance_takes_its_timeouts_from_its_variables() {
    // The variable beats the table, which beats `[timeouts]`; no retry hides the timeout.
    let spec = HostSpec {
        config: json!({
            "retry": {"max_attempts": 1},
            "gateways": {"openai-compat": {"first_token_timeout_ms": 20000}},
        }),
        ..HostSpec::default()
    }
    .with_env("OPENAI_COMPAT_FIRST_TOKEN_TIMEOUT_MS", "300");
    let host = TestHost::with(spec).await;
    let (closed, _closed_rx) = oneshot::channel();
    host.upstream.push(Reply::silent(closed));
    let answer = host.sse(json!({"message": "hi"})).await;
    assert_eq!(answer.last()["type"], "error", "{}", answer.body);
    let error = answer.last()["error"].as_str().unwrap();
    assert!(
        error.contains("first token timeout") && error.contains("300 ms"),
        "{error}"
    );
}
