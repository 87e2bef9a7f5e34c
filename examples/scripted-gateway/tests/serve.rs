//! The `scripted-gateway` binary serves a third-party `scripted` instance and an
//! `openai-compat` instance (in front of a mock upstream on 127.0.0.1) side by side.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use gateway_tests::process::{clean_command, ServeProcess, SERVE_ANY_PORT};
use gateway_tests::{write_profile, Answer, MockUpstream, Reply};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_scripted-gateway");
const KEY: &str = "sk-scripted-example-test-4242";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_scripted_and_openai_compat_side_by_side() {
    let upstream = MockUpstream::start().await;
    upstream.push(Reply::tokens(&["From", " the", " cloud."]));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("profiles")).unwrap();
    std::fs::write(
        root.join("gateway.toml"),
        format!(
            r#"
default_profile = "robot"

[gateways.robot]
kind = "scripted"
reply = "Robot heard {{message}} on turn {{turn}}."

[gateways.cloud]
kind = "openai-compat"
base_url = "{}"
api_key_env = "CLOUD_API_KEY"
model = "cloud-model"
"#,
            upstream.base_url()
        ),
    )
    .unwrap();
    for (id, gateway) in [("robot", "robot"), ("cloud", "cloud")] {
        let profile = json!({"id": id, "adapter_config": {"gateway_id": gateway}});
        write_profile(root, &profile);
    }

    let mut cmd = clean_command(BIN, root, SERVE_ANY_PORT);
    cmd.env("CLOUD_API_KEY", KEY);
    let host = ServeProcess::spawn(cmd);
    let url = host.url.clone();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let gateways = host.get_json("/v1/gateways").await;
    let kind_of = |id: &str| {
        gateways["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .map(|g| g["kind"].clone())
            .unwrap_or_else(|| panic!("{id} not listed: {gateways}"))
    };
    assert_eq!(kind_of("robot"), "scripted");
    assert_eq!(kind_of("cloud"), "openai-compat");
    assert_eq!(
        kind_of("scripted"),
        "scripted",
        "built-in instance of the kind"
    );

    let turn = |profile: &'static str| {
        let request = client
            .post(format!("{url}/v1/conversation"))
            .json(&json!({"message": "hello", "profile": profile}))
            .send();
        async move { Answer::read(request.await.unwrap()).await }
    };
    let (robot, cloud) = tokio::join!(turn("robot"), turn("cloud"));
    assert_eq!(robot.last()["type"], "text_done", "{}", robot.body);
    assert_eq!(robot.last()["response"], "Robot heard hello on turn 1.");
    assert_eq!(robot.events[0]["gateway"], "robot");
    assert_eq!(cloud.last()["type"], "text_done", "{}", cloud.body);
    assert_eq!(cloud.text(), "From the cloud.");
    assert_eq!(cloud.events[0]["gateway"], "cloud");
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the cloud profile went upstream"
    );
    assert_eq!(upstream.last_request()["model"], "cloud-model");
    assert_eq!(upstream.authorizations(), [Some(format!("Bearer {KEY}"))]);
    drop(host);
}
