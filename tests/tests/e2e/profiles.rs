use gateway_host::ProfileSet;
use gateway_tests::{openvoiceui_dirs, profile, HostSpec, TestHost};
use serde_json::json;

#[tokio::test]
async fn broken_profiles_are_skipped_and_reported_by_file_name() {
    let mut spec = HostSpec::default().with_profile(profile("good"));
    spec.profiles
        .push(("broken.json".into(), "{ not json".into()));
    spec.profiles
        .push(("badid.json".into(), json!({"id": "Bad_Id"}).to_string()));
    spec.profiles.push((
        "ghost.json".into(),
        json!({"id": "ghost", "adapter_config": {"gateway_id": "nowhere"}}).to_string(),
    ));
    spec.profiles
        .push(("dupe.json".into(), profile("good").to_string()));
    let host = TestHost::with(spec).await;
    let mut files: Vec<String> = host
        .state
        .profiles()
        .problems()
        .iter()
        .map(|p| p.file.clone())
        .collect();
    files.sort();
    // Files load in name order, so the later of the two "good" files is the duplicate.
    assert_eq!(
        files,
        ["badid.json", "broken.json", "ghost.json", "good.json"]
    );
    let answer = host.sse(json!({"message": "hi", "profile": "good"})).await;
    assert_eq!(answer.last()["type"], "text_done");
    let (_, list) = host.get("/v1/profiles").await;
    let ids: Vec<_> = list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(ids, [json!("default"), json!("good")]);
}

#[tokio::test]
async fn real_openvoiceui_default_profile_loads_unchanged() {
    for dir in openvoiceui_dirs() {
        openvoiceui_default_profile_serves(&dir.join("profiles")).await;
    }
}

async fn openvoiceui_default_profile_serves(dir: &std::path::Path) {
    let set = ProfileSet::load_dir(dir, |g| g == "openai-compat");
    assert!(
        set.problems().is_empty(),
        "{}: {:?}",
        dir.display(),
        set.problems()
    );
    let p = set.get("default").expect("default profile");
    assert_eq!(p.gateway_id, "openai-compat");
    assert_eq!(p.session_key.as_deref(), Some("voice-main-1"));
    assert_eq!(p.model.as_deref(), Some("glm-5-turbo"));
    assert_eq!(p.max_tokens, Some(256));
    assert_eq!(p.max_history_messages, Some(8));
    assert_eq!(p.queue_mode.as_deref(), Some("steer"));
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("default.json")).unwrap()).unwrap();
    assert_eq!(*p.raw, original, "kept as written, unknown fields included");

    // And it serves through the host, its settings reaching the upstream.
    let text = std::fs::read_to_string(dir.join("default.json")).unwrap();
    let host = TestHost::with(HostSpec {
        profiles: vec![("default.json".into(), text)],
        ..HostSpec::default()
    })
    .await;
    let answer = host.sse(json!({"message": "hi"})).await;
    assert_eq!(answer.last()["type"], "text_done");
    let body = host.upstream.last_request();
    assert_eq!(body["model"], "glm-5-turbo");
    assert_eq!(body["max_tokens"], 256);
}

#[tokio::test]
async fn shipped_profiles_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let set = ProfileSet::load_dir(&dir, |g| g == "openai-compat");
    assert!(set.problems().is_empty(), "{:?}", set.problems());
    assert!(set.get("default").is_some());
    let agent = set.get("openai-agent").expect("openai-agent profile");
    assert_eq!(agent.session_key.as_deref(), Some("openai-1"));
    assert_eq!(agent.adapter.as_deref(), Some("clawdbot"));
}
