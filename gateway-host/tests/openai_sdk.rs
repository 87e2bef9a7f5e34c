//! Runs the official `openai` Python SDK (`integrations/openai-sdk`) against this crate's real
//! `gateway-host` binary and a scripted upstream: streaming, non-streaming, include_usage,
//! memory via `user`, unknown models and upstream errors as SDK exceptions, and tool calls (the
//! SDK's accumulator rebuilds every tool fixture's calls; a round trip). Needs `python3`
//! and the packages of `integrations/requirements-test.txt`.

mod support;

#[test]
fn official_openai_python_sdk_tests_pass() {
    support::python_unittest("OpenAI SDK", "integrations/openai-sdk", &["openai"]);
}
