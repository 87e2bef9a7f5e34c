use gateway_tests::{openvoiceui_dirs, profile, HostSpec, TestHost};
use serde_json::{json, Value};

fn system_messages(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

/// The system messages the upstream got for one more turn of `host`.
async fn system_of_next_turn(host: &TestHost) -> Vec<String> {
    host.sse(json!({"message": "hi"})).await;
    system_messages(&host.upstream.last_request())
}

#[tokio::test]
async fn file_prompt_then_profile_prompt_and_hot_reload() {
    let host = TestHost::with(HostSpec {
        prompt: Some("# header\n# more\n\nVersion one.\n".into()),
        ..HostSpec::default()
    })
    .await;
    host.sse(json!({"message": "hi"})).await;
    let body = host.upstream.last_request();
    assert_eq!(
        system_messages(&body),
        ["Version one.\n\nYou are profile default."]
    );
    assert_eq!(
        body["messages"][0]["role"], "system",
        "system message first"
    );

    std::fs::write(host.prompt_path(), "# header\nVersion two, now longer.\n").unwrap();
    assert_eq!(
        system_of_next_turn(&host).await,
        ["Version two, now longer.\n\nYou are profile default."]
    );

    std::fs::remove_file(host.prompt_path()).unwrap();
    assert_eq!(
        system_of_next_turn(&host).await,
        ["You are profile default."]
    );
}

/// A prompt file with a byte that is not UTF-8 (a Windows-1252 quote) is used with that byte
/// replaced, not dropped whole.
#[tokio::test]
async fn a_prompt_with_invalid_utf8_is_used_with_the_bytes_replaced() {
    let host = TestHost::start().await;
    std::fs::write(host.prompt_path(), b"It\x92s version three.\n").unwrap();
    assert_eq!(
        system_of_next_turn(&host).await,
        ["It\u{FFFD}s version three.\n\nYou are profile default."]
    );
}

/// A Kubernetes ConfigMap volume: the prompt is a symlink through `..data`, and an update
/// swaps `..data` to a new folder in one rename. The next turn uses the new prompt.
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let host = TestHost::start().await;
    let prompt = host.prompt_path();
    let dir = prompt.parent().unwrap().to_path_buf();
    let version = |name: &str, text: &str| {
        std::fs::create_dir(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("voice-system-prompt.md"), text).unwrap();
    };
    version("..v1", "Prompt version one.\n");
    symlink("..v1", dir.join("..data")).unwrap();
    let _ = std::fs::remove_file(&prompt);
    symlink("..data/voice-system-prompt.md", &prompt).unwrap();
    assert_eq!(
        system_of_next_turn(&host).await,
        ["Prompt version one.\n\nYou are profile default."]
    );

    version("..v2", "Prompt version two.\n");
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    assert_eq!(
        system_of_next_turn(&host).await,
        ["Prompt version two.\n\nYou are profile default."]
    );
}

#[tokio::test]
async fn system_prompt_none_and_custom() {
    let host = TestHost::start().await;
    host.sse(json!({"message": "hi", "system_prompt": "none"}))
        .await;
    let body = host.upstream.last_request();
    assert!(system_messages(&body).is_empty(), "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);

    host.sse(json!({"message": "hi", "system_prompt": "Custom rules."}))
        .await;
    assert_eq!(
        system_messages(&host.upstream.last_request()),
        ["Custom rules."]
    );

    host.sse(json!({"message": "hi", "system_prompt": "default"}))
        .await;
    assert_eq!(
        system_messages(&host.upstream.last_request()),
        ["You speak briefly.\n\nYou are profile default."]
    );
}

#[tokio::test]
async fn no_system_message_when_both_prompts_are_empty() {
    let mut p = profile("bare");
    p["system_prompt"] = Value::Null;
    let host = TestHost::with(
        HostSpec {
            prompt: Some("# only comments\n".into()),
            ..HostSpec::default()
        }
        .with_profile(p),
    )
    .await;
    host.sse(json!({"message": "hi", "profile": "bare"})).await;
    assert!(system_messages(&host.upstream.last_request()).is_empty());
}

#[tokio::test]
async fn real_openvoiceui_prompt_is_stripped_of_comment_lines() {
    for dir in openvoiceui_dirs() {
        let path = dir.join("prompts/voice-system-prompt.md");
        let real =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        real_prompt_is_stripped(real).await;
    }
}

async fn real_prompt_is_stripped(real: String) {
    assert!(real.lines().any(|l| l.starts_with('#')));
    let host = TestHost::with(HostSpec {
        prompt: Some(real),
        ..HostSpec::default()
    })
    .await;
    host.sse(json!({"message": "hi"})).await;
    let system = system_messages(&host.upstream.last_request()).remove(0);
    assert!(
        system.len() > 10_000,
        "the real prompt is sent ({} bytes)",
        system.len()
    );
    assert!(system.lines().all(|l| !l.starts_with('#')));
    assert!(
        system.starts_with("[OPENVOICEUI SYSTEM INSTRUCTIONS:"),
        "{}",
        &system[..80]
    );
    assert!(system.ends_with("You are profile default."));
}
