//! Voice turns that use tools: the real host, a scripted upstream asking for calls, and the
//! reference MCP servers (`mcp-server-time`, server-everything) over stdio and streamable HTTP.

use gateway_tests::tools::{
    actions, everything_stdio, everything_stdio_with_pid, messages_with_role, offered_tools,
    time_server, tool_calls, tool_profile, EverythingHttp,
};
use gateway_tests::{HostSpec, Reply, TestHost};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

/// A host whose default profile uses the given tool servers (`[tools]` merged with `tools`).
async fn host_with(servers: Value, tools: Value) -> TestHost {
    let names: Vec<String> = servers
        .as_object()
        .expect("servers")
        .keys()
        .cloned()
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut config = json!({"tools": {"servers": servers}});
    for (key, value) in tools.as_object().into_iter().flatten() {
        config["tools"][key] = value.clone();
    }
    let spec = HostSpec {
        profiles: vec![(
            "default.json".into(),
            tool_profile("default", &names).to_string(),
        )],
        config,
        ..HostSpec::default()
    };
    TestHost::with(spec).await
}

fn phases(actions: &[Value]) -> Vec<String> {
    actions
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["phase"].as_str().unwrap(),
                a["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn tool_messages(body: &Value) -> Vec<(String, String)> {
    messages_with_role(body, "tool")
        .iter()
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_two_round_turn_speaks_the_preamble_runs_the_tool_and_answers() {
    let host = host_with(json!({"time": time_server()}), json!({})).await;
    host.upstream.push(tool_calls(
        "Let me check. ",
        &[(
            "call_1",
            "get_current_time",
            r#"{"timezone": "Europe/Oslo"}"#,
        )],
    ));
    host.upstream.push(Reply::tokens(&["It is", " noon."]));
    let answer = host
        .sse(json!({"message": "What time is it in Oslo?"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let types = answer.types();
    assert_eq!(types[0], "handshake", "{types:?}");
    assert_eq!(
        answer.events[1]["text"], "Let me check. ",
        "the preamble first"
    );
    let start = types.iter().position(|t| t == "action").unwrap();
    assert!(types[..start].contains(&"delta".to_string()));
    let done = answer.last();
    assert_eq!(done["type"], "text_done", "{}", answer.body);
    assert_eq!(done["response"], "Let me check. It is noon.");
    assert_eq!(answer.text(), "Let me check. It is noon.");
    let streamed = actions(&answer.events);
    assert_eq!(
        phases(&streamed),
        ["start:get_current_time", "result:get_current_time"]
    );
    assert_eq!(
        done["actions"],
        json!(streamed),
        "text_done lists every action"
    );
    let result = &streamed[1];
    assert_eq!(result["type"], "tool");
    assert_eq!(result["toolCallId"], "call_1");
    assert_eq!(result["input"], json!({"timezone": "Europe/Oslo"}));
    assert_eq!(result["server"], "time");
    assert!(result["result"].as_str().unwrap().contains("Europe/Oslo"));
    assert!(result["ts"].as_f64().unwrap() >= streamed[0]["ts"].as_f64().unwrap());

    let requests = host.upstream.requests();
    assert_eq!(requests.len(), 2);
    let mut offered = offered_tools(&requests[0]);
    offered.sort();
    assert_eq!(offered, ["convert_time", "get_current_time"]);
    assert!(requests[0].get("tool_choice").is_none());
    let assistant = messages_with_role(&requests[1], "assistant");
    assert_eq!(assistant[0]["content"], "Let me check. ");
    assert_eq!(assistant[0]["tool_calls"][0]["id"], "call_1");
    let results = tool_messages(&requests[1]);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, "call_1");
    assert!(results[0].1.contains("Europe/Oslo"), "{results:?}");

    let (_, metrics) = host.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics
        .contains(r#"gateway_host_tool_calls_total{server="time",tool="get_current_time"} 1"#));
}

#[tokio::test]
async fn parallel_calls_run_together_and_go_back_in_order() {
    let host = host_with(json!({"everything": everything_stdio()}), json!({})).await;
    host.upstream.push(tool_calls(
        "",
        &[
            ("c_sum", "get-sum", r#"{"a": 2, "b": 3}"#),
            ("c_echo", "echo", r#"{"message": "hello tools"}"#),
        ],
    ));
    host.upstream.push(Reply::tokens(&["Five, and hello."]));
    let answer = host.sse(json!({"message": "Add and echo"})).await;
    let streamed = actions(&answer.events);
    let order = phases(&streamed);
    assert_eq!(
        &order[..2],
        ["start:get-sum", "start:echo"],
        "both start first"
    );
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(
        streamed[2..].iter().all(|a| a["phase"] == "result"),
        "{order:?}"
    );
    // No spoken text before the calls: the handshake is the first spoken token, after them.
    let types = answer.types();
    assert_eq!(&types[..2], ["action", "action"], "{types:?}");
    assert_eq!(
        types.iter().position(|t| t == "handshake"),
        types.iter().position(|t| t == "delta").map(|i| i - 1)
    );
    let results = tool_messages(&host.upstream.requests()[1]);
    assert_eq!(results[0].0, "c_sum");
    assert!(results[0].1.contains('5'), "{results:?}");
    assert_eq!(results[1].0, "c_echo");
    assert!(results[1].1.contains("hello tools"), "{results:?}");
    assert_eq!(answer.last()["response"], "Five, and hello.");
}

#[tokio::test]
async fn a_failing_tool_an_unknown_tool_and_bad_arguments_are_results_and_the_turn_goes_on() {
    let host = host_with(json!({"time": time_server()}), json!({})).await;
    host.upstream.push(tool_calls(
        "One moment. ",
        &[
            (
                "c_bad_zone",
                "get_current_time",
                r#"{"timezone": "Mars/Olympus_Mons"}"#,
            ),
            ("c_unknown", "launch_rocket", "{}"),
            ("c_not_json", "get_current_time", r#"{"timezone": Oslo"#),
        ],
    ));
    host.upstream
        .push(Reply::tokens(&["I could not find that."]));
    let answer = host.sse(json!({"message": "Time on Mars?"})).await;
    assert_eq!(answer.last()["type"], "text_done", "{}", answer.body);
    assert_eq!(
        answer.last()["response"],
        "One moment. I could not find that."
    );
    let ends: Vec<Value> = actions(&answer.events)
        .into_iter()
        .filter(|a| a["phase"] != "start")
        .collect();
    assert_eq!(ends.len(), 3);
    assert!(ends.iter().all(|a| a["phase"] == "error"), "{ends:?}");
    let by_id = |id: &str| ends.iter().find(|a| a["toolCallId"] == id).unwrap().clone();
    assert!(by_id("c_bad_zone")["error"]
        .as_str()
        .unwrap()
        .contains("Mars"));
    assert_eq!(by_id("c_unknown")["error"], "unknown tool 'launch_rocket'");
    assert_eq!(by_id("c_not_json")["input"], r#"{"timezone": Oslo"#);
    assert!(by_id("c_not_json")["error"]
        .as_str()
        .unwrap()
        .contains("not a JSON object"));

    let results = tool_messages(&host.upstream.requests()[1]);
    let ids: Vec<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["c_bad_zone", "c_unknown", "c_not_json"]);
    assert!(
        results.iter().all(|(_, text)| text.starts_with("Error: ")),
        "{results:?}"
    );

    let (_, metrics) = host.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    for needle in [
        r#"tool_errors_total{server="time",tool="get_current_time",cause="tool_error"} 1"#,
        r#"tool_errors_total{server="",tool="(unknown)",cause="unknown_tool"} 1"#,
        r#"tool_errors_total{server="time",tool="get_current_time",cause="bad_arguments"} 1"#,
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_tool_that_hangs_past_its_timeout_is_cancelled_and_reported() {
    let mut server = everything_stdio();
    server["timeout_ms"] = json!(300);
    let host = host_with(json!({"everything": server}), json!({})).await;
    host.upstream.push(tool_calls(
        "Working on it. ",
        &[(
            "c_slow",
            "trigger-long-running-operation",
            r#"{"duration": 60, "steps": 60}"#,
        )],
    ));
    host.upstream.push(Reply::tokens(&["That took too long."]));
    let answer = host.sse(json!({"message": "Do the slow thing"})).await;
    let end = actions(&answer.events).pop().unwrap();
    assert_eq!(end["phase"], "error");
    assert_eq!(end["error"], "the tool did not answer within 300 ms");
    assert_eq!(
        answer.last()["response"],
        "Working on it. That took too long."
    );
    let results = tool_messages(&host.upstream.requests()[1]);
    assert_eq!(results[0].1, "Error: the tool did not answer within 300 ms");
}

#[tokio::test]
async fn a_server_killed_mid_call_is_an_error_result_and_is_started_again_on_next_use() {
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("server.pid");
    let host = host_with(
        json!({"everything": everything_stdio_with_pid(&pid_file)}),
        json!({}),
    )
    .await;
    host.upstream.push(tool_calls(
        "Starting. ",
        &[(
            "c_long",
            "trigger-long-running-operation",
            r#"{"duration": 60, "steps": 60}"#,
        )],
    ));
    host.upstream.push(Reply::tokens(&["The server crashed."]));
    let mut reader = host.open(json!({"message": "long job"})).await;
    while reader.next().await.expect("an event")["type"] != "action" {}
    let first_pid = std::fs::read_to_string(&pid_file).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", first_pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let events = reader.rest().await;
    let end = actions(&events).pop().unwrap();
    assert_eq!(end["phase"], "error", "{end}");
    assert!(
        end["error"]
            .as_str()
            .unwrap()
            .contains("closed the connection"),
        "{end}"
    );
    assert_eq!(
        events.last().unwrap()["response"],
        "Starting. The server crashed."
    );

    host.upstream.push(tool_calls(
        "",
        &[("c_echo", "echo", r#"{"message": "back"}"#)],
    ));
    host.upstream.push(Reply::tokens(&["It is back."]));
    let answer = host.sse(json!({"message": "again"})).await;
    let end = actions(&answer.events).pop().unwrap();
    assert_eq!(end["phase"], "result", "{end}");
    assert!(end["result"].as_str().unwrap().contains("back"));
    let second_pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_ne!(first_pid, second_pid, "a new server process");
}

#[tokio::test]
async fn an_interrupt_during_a_call_cancels_it_and_ends_the_turn() {
    let host = host_with(json!({"everything": everything_stdio()}), json!({})).await;
    host.upstream.push(tool_calls(
        "Let me look. ",
        &[(
            "c_long",
            "trigger-long-running-operation",
            r#"{"duration": 60, "steps": 60}"#,
        )],
    ));
    let mut reader = host
        .open(json!({"message": "long job", "session_key": "tool-int"}))
        .await;
    while reader.next().await.expect("an event")["type"] != "action" {}
    let (status, reply) = host.post("/v1/sessions/tool-int/interrupt", None).await;
    assert_eq!(status, 200, "{reply}");
    // Bounded by the reader's deadline (5 s), far below the call's 60 s: the call is not waited for.
    let events = reader.rest().await;
    let done = events.last().unwrap();
    assert_eq!(done["type"], "text_done");
    assert_eq!(done["interrupted"], true);
    assert_eq!(done["response"], "Let me look. ");
    assert_eq!(actions(&events).len(), 1, "no result of the cancelled call");
    assert_eq!(
        host.upstream.requests().len(),
        1,
        "no round after the interrupt"
    );
    host.wait_no_sessions().await;
}

#[tokio::test]
async fn a_steering_turn_cancels_the_call_of_the_turn_before() {
    let mut profile = tool_profile("steery", &["everything"]);
    profile["llm"]["queue"] = json!({"mode": "steer"});
    let spec = HostSpec {
        profiles: vec![("steery.json".into(), profile.to_string())],
        config: json!({"default_profile": "steery",
                       "tools": {"servers": {"everything": everything_stdio()}}}),
        ..HostSpec::default()
    };
    let host = TestHost::with(spec).await;
    host.upstream.push(tool_calls(
        "Hold on. ",
        &[(
            "c_long",
            "trigger-long-running-operation",
            r#"{"duration": 60, "steps": 60}"#,
        )],
    ));
    host.upstream
        .push(Reply::tokens(&["Sure, the other thing."]));
    let mut first = host
        .open(json!({"message": "long job", "session_key": "steer-tools"}))
        .await;
    while first.next().await.expect("an event")["type"] != "action" {}
    let second = host
        .sse(json!({"message": "never mind", "session_key": "steer-tools"}))
        .await;
    let events = first.rest().await;
    assert_eq!(events.last().unwrap()["interrupted"], true);
    assert_eq!(second.last()["response"], "Sure, the other thing.");
}

#[tokio::test]
async fn after_the_round_limit_the_model_must_answer_without_tools() {
    let host = host_with(
        json!({"everything": everything_stdio()}),
        json!({"max_rounds": 2}),
    )
    .await;
    for i in 0..3 {
        let id = format!("c{i}");
        host.upstream.push(tool_calls(
            "",
            &[(id.as_str(), "echo", r#"{"message": "again"}"#)],
        ));
    }
    let answer = host.sse(json!({"message": "loop forever"})).await;
    assert_eq!(answer.last()["type"], "text_done", "{}", answer.body);
    let requests = host.upstream.requests();
    assert_eq!(
        requests.len(),
        3,
        "two rounds of calls, then one without tools"
    );
    assert!(requests[..2].iter().all(|r| r.get("tool_choice").is_none()));
    assert_eq!(requests[2]["tool_choice"], "none");
    assert_eq!(
        phases(&actions(&answer.events)).len(),
        4,
        "the third round's call is not run"
    );

    host.upstream
        .push(tool_calls("", &[("c9", "echo", r#"{"message": "x"}"#)]));
    host.upstream.push(Reply::tokens(&["Done looping."]));
    let answer = host.sse(json!({"message": "loop once"})).await;
    assert_eq!(answer.last()["response"], "Done looping.");
}

#[tokio::test]
async fn memory_keeps_the_whole_tool_exchange() {
    let host = host_with(json!({"everything": everything_stdio()}), json!({})).await;
    host.upstream.push(tool_calls(
        "Echoing. ",
        &[("c_echo", "echo", r#"{"message": "remember me"}"#)],
    ));
    host.upstream.push(Reply::tokens(&["Echoed."]));
    let answer = host
        .sse(json!({"message": "echo something", "session_key": "tool-mem"}))
        .await;
    assert_eq!(answer.last()["type"], "text_done");
    let (status, session) = host.get("/v1/sessions/tool-mem").await;
    assert_eq!(status, 200);
    let history = session["messages"].as_array().expect("messages").clone();
    let roles: Vec<&str> = history
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant"],
        "{history:?}"
    );
    assert_eq!(history[1]["tool_calls"][0]["id"], "c_echo");
    assert_eq!(history[2]["tool_call_id"], "c_echo");
    assert!(history[2]["content"]
        .as_str()
        .unwrap()
        .contains("remember me"));
    assert_eq!(history[3]["content"], "Echoed.");

    host.upstream.push(Reply::tokens(&["Yes."]));
    host.sse(json!({"message": "did you echo?", "session_key": "tool-mem"}))
        .await;
    let next = host.upstream.last_request();
    let sent: Vec<&str> = next["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent,
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
}

#[tokio::test]
async fn a_streamable_http_server_with_headers_and_an_allow_list() {
    let server = EverythingHttp::start();
    let host = host_with(
        json!({"remote": {"url": server.url, "headers": {"X-Team-Token": "hdr-SECRET-1"},
                          "allow": ["echo", "get-sum"]}}),
        json!({}),
    )
    .await;
    host.upstream.push(tool_calls(
        "Over HTTP. ",
        &[
            ("c1", "echo", r#"{"message": "via http"}"#),
            ("c2", "get-sum", r#"{"a": 1, "b": 1}"#),
        ],
    ));
    host.upstream.push(Reply::tokens(&["Done."]));
    let answer = host.sse(json!({"message": "use http"})).await;
    let mut offered = offered_tools(&host.upstream.requests()[0]);
    offered.sort();
    assert_eq!(
        offered,
        ["echo", "get-sum"],
        "the allow-list narrows the tools"
    );
    let ends: Vec<Value> = actions(&answer.events)
        .into_iter()
        .filter(|a| a["phase"] != "start")
        .collect();
    assert!(ends.iter().all(|a| a["phase"] == "result"), "{ends:?}");
    assert!(answer.body.contains("via http"));
    assert!(!answer.body.contains("hdr-SECRET-1"));
    let (_, config) = host.get("/metrics").await;
    assert!(!config.to_string().contains("hdr-SECRET-1"));
}

/// A stdio server gets only its configured environment, the basic variables and the ones it
/// inherits by name, never the rest of the host's (where its keys live). And a result holding
/// one of its configured secrets (server-everything's `get-env` returns its environment)
/// gets `***` into the action event, the upstream's tool message and memory.
#[tokio::test]
async fn a_stdio_server_gets_only_its_environment_and_its_secrets_are_masked() {
    const SECRET: &str = "env-SECRET-4242";
    let mut server = everything_stdio();
    server["env"] = json!({"TEAM_TOKEN": SECRET});
    server["inherit_env"] = json!(["CARGO_PKG_NAME"]);
    let host = host_with(json!({"everything": server}), json!({})).await;
    host.upstream
        .push(tool_calls("", &[("c1", "get-env", "{}")]));
    host.upstream.push(Reply::tokens(&["Done."]));
    let answer = host
        .sse(json!({"message": "show the env", "session_key": "masked"}))
        .await;
    let results: Vec<Value> = actions(&answer.events)
        .into_iter()
        .filter(|a| a["phase"] == "result")
        .collect();
    assert_eq!(results.len(), 1, "{:?}", answer.events);
    let masked = r#""TEAM_TOKEN": "***""#;
    assert!(results[0].to_string().contains("TEAM_TOKEN"), "{results:?}");
    let tool_results = tool_messages(&host.upstream.requests()[1]);
    assert!(tool_results[0].1.contains(masked), "{tool_results:?}");
    let env: Value = serde_json::from_str(&tool_results[0].1).expect("get-env returns JSON");
    assert!(
        env.get("PATH").is_some() && env.get("CARGO_PKG_NAME").is_some(),
        "{env}"
    );
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some() && env.get("CARGO_MANIFEST_DIR").is_none(),
        "the host's other variables stay with the host: {env}"
    );
    let (_, session) = host.get("/v1/sessions/masked").await;
    assert!(session.to_string().contains("TEAM_TOKEN"), "{session}");
    let shown = [
        answer.body.clone(),
        host.upstream.requests()[1].to_string(),
        session.to_string(),
    ];
    for text in shown {
        assert!(!text.contains(SECRET), "{text}");
    }
}

/// Turns that arrive while a server is being started wait for that one start: when it
/// times out, they all go on without its tools, instead of each starting the server again
/// and waiting out its own timeout in turn.
#[tokio::test]
async fn turns_waiting_on_a_hung_server_share_its_one_failed_start() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let script = format!("echo start >> '{}'; exec sleep 60", starts.display());
    let host = host_with(
        json!({"hung": {"command": "sh", "args": ["-c", script]}}),
        json!({"connect_timeout_ms": 3000}),
    )
    .await;
    for _ in 0..3 {
        host.upstream.push(Reply::tokens(&["Without tools."]));
    }
    let turns: Vec<_> = (0..3)
        .map(|i| host.spawn_sse(json!({"message": format!("turn {i}")})))
        .collect();
    for turn in turns {
        let answer = turn.await.unwrap();
        assert_eq!(
            answer.last()["response"],
            "Without tools.",
            "{:?}",
            answer.events
        );
    }
    let started = std::fs::read_to_string(&starts).unwrap();
    assert_eq!(started.lines().count(), 1, "one start for the three turns");
}

/// A streamable-HTTP MCP endpoint whose `tools/call` answers HTTP 500 (a server bug, a proxy
/// in front of it failing); everything else as the protocol says, JSON replies. Counts
/// `initialize` requests.
async fn failing_http_server(initializes: Arc<AtomicUsize>) -> String {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let handler = move |body: axum::Json<Value>| {
        let initializes = initializes.clone();
        async move {
            let id = body.get("id").cloned().unwrap_or(Value::Null);
            let reply = |result: Value| {
                let headers = [
                    ("content-type", "application/json"),
                    ("mcp-session-id", "s-1"),
                ];
                let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
                (StatusCode::OK, headers, body).into_response()
            };
            match body["method"].as_str().unwrap_or_default() {
                "initialize" => {
                    initializes.fetch_add(1, Ordering::SeqCst);
                    reply(
                        json!({"protocolVersion": "2025-03-26", "capabilities": {"tools": {}},
                                 "serverInfo": {"name": "flaky", "version": "1"}}),
                    )
                }
                "tools/list" => reply(json!({"tools": [{"name": "flaky",
                    "inputSchema": {"type": "object"}}]})),
                "tools/call" => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "database down").into_response()
                }
                _ => StatusCode::ACCEPTED.into_response(),
            }
        }
    };
    let router = axum::Router::new().route(
        "/mcp",
        axum::routing::post(handler)
            .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
            .delete(|| async { StatusCode::OK }),
    );
    format!("http://{}/mcp", gateway_tests::serve(router).await)
}

/// An HTTP error on a call is that call's error, naming the status, and the session stays:
/// the next call does not initialise again.
#[tokio::test]
async fn an_http_error_on_a_call_is_reported_and_the_session_kept() {
    let initializes = Arc::new(AtomicUsize::new(0));
    let url = failing_http_server(initializes.clone()).await;
    let host = host_with(json!({"flaky": {"url": url}}), json!({})).await;
    for turn in 0..2 {
        host.upstream.push(tool_calls("", &[("c1", "flaky", "{}")]));
        host.upstream.push(Reply::tokens(&["Sorry."]));
        let answer = host.sse(json!({"message": format!("turn {turn}")})).await;
        let errors: Vec<Value> = actions(&answer.events)
            .into_iter()
            .filter(|a| a["phase"] == "error")
            .collect();
        assert_eq!(errors.len(), 1, "{:?}", answer.events);
        let shown = errors[0].to_string();
        assert!(shown.contains("500"), "the status is named: {shown}");
        assert!(!shown.contains("closed"), "{shown}");
    }
    assert_eq!(
        initializes.load(Ordering::SeqCst),
        1,
        "one session for both calls"
    );
}

#[tokio::test]
async fn a_profile_without_features_tools_or_a_down_server_still_answers() {
    let mut off = tool_profile("off", &["everything"]);
    off["features"]["tools"] = json!(false);
    let spec = HostSpec {
        profiles: vec![
            ("off.json".into(), off.to_string()),
            (
                "down.json".into(),
                tool_profile("down", &["gone"]).to_string(),
            ),
        ],
        config: json!({"default_profile": "off", "tools": {"connect_timeout_ms": 3000,
            "servers": {"everything": everything_stdio(),
                        "gone": {"command": "/nonexistent/mcp-server"}}}}),
        ..HostSpec::default()
    };
    let host = TestHost::with(spec).await;
    for profile in ["off", "down"] {
        let answer = host.sse(json!({"profile": profile, "message": "hi"})).await;
        assert_eq!(answer.last()["response"], "Hello there.", "{profile}");
        assert!(
            host.upstream.last_request().get("tools").is_none(),
            "{profile}"
        );
    }
}

#[tokio::test]
async fn chat_completions_without_tools_of_its_own_gets_the_profiles_tools() {
    let host = host_with(json!({"everything": everything_stdio()}), json!({})).await;
    host.upstream.push(tool_calls(
        "Checking. ",
        &[("c_sum", "get-sum", r#"{"a": 20, "b": 22}"#)],
    ));
    host.upstream.push(Reply::tokens(&["It is 42."]));
    let (status, body) = host
        .post(
            "/v1/chat/completions",
            Some(json!({"model": "default", "messages": [{"role": "user", "content": "20+22?"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Checking. It is 42."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let requests = host.upstream.requests();
    assert_eq!(requests.len(), 2);
    assert!(tool_messages(&requests[1])[0].1.contains("42"));
}

#[tokio::test]
async fn chat_completions_with_tools_of_its_own_gets_only_those_and_the_host_runs_nothing() {
    let host = host_with(json!({"everything": everything_stdio()}), json!({})).await;
    host.upstream.push(tool_calls(
        "",
        &[("c_weather", "get_weather", r#"{"city": "Oslo"}"#)],
    ));
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let (status, body) = host
        .post(
            "/v1/chat/completions",
            Some(json!({"model": "default", "tools": [weather],
                        "messages": [{"role": "user", "content": "Weather in Oslo?"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let requests = host.upstream.requests();
    assert_eq!(requests.len(), 1, "the host ran nothing");
    assert_eq!(
        offered_tools(&requests[0]),
        ["get_weather"],
        "only the client's tools"
    );
}
