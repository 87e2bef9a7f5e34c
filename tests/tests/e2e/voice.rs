//! Voice-grade turns: interrupts, queue modes, session view and sentence events.

use gateway_tests::{
    chat_of, pairs, profile, upstream_closed, HostSpec, Reply, TestHost, DEADLINE,
};
use serde_json::{json, Value};

/// A profile with `llm.queue.mode` set.
fn queued(id: &str, mode: &str) -> Value {
    let mut p = profile(id);
    p["llm"]["queue"] = json!({"mode": mode, "block_streaming_chunk": 60});
    p
}

/// A host with `steer`, `steer-backlog` and an unknown-mode profile besides `default`.
async fn host() -> TestHost {
    TestHost::with(
        HostSpec::default()
            .with_profile(queued("steer", "steer"))
            .with_profile(queued("backlog", "steer-backlog"))
            .with_profile(queued("typo", "stear")),
    )
    .await
}

fn text_dones(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["type"] == "text_done").collect()
}

/// Await `f`, failing the test after [`DEADLINE`] instead of hanging.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("finished within the deadline")
}

async fn interrupt(host: &TestHost, key: &str, body: Option<Value>) -> (u16, Value) {
    host.post(&format!("/v1/sessions/{key}/interrupt"), body)
        .await
}

#[tokio::test]
async fn interrupt_with_heard_cuts_the_turn_and_the_next_turn_sees_only_what_was_heard() {
    let host = host().await;
    let (_release, closed) = host.upstream.hold(&["Hello there", ", how are"]);
    let mut first = host
        .open(json!({"message": "one", "session_key": "i1"}))
        .await;
    first.until_text("Hello there, how are").await;

    let (status, body) = interrupt(&host, "i1", Some(json!({"heard": "Hello there"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"interrupted": true, "key": "i1", "streamed_chars": 20, "heard_is_prefix": true,
               "stored": "Hello there", "kept_user_message": true})
    );
    upstream_closed(closed).await;
    let events = first.rest().await;
    let done = text_dones(&events);
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["response"], "Hello there, how are");
    assert_eq!(done[0]["interrupted"], true);
    assert_eq!(events.last().unwrap()["type"], "text_done");
    assert!(events.iter().all(|e| e["type"] != "error"), "{events:?}");

    host.upstream.push(Reply::tokens(&["Sure."]));
    let next = within(host.sse(json!({"message": "two", "session_key": "i1"}))).await;
    assert_eq!(next.last()["type"], "text_done");
    assert_eq!(next.last().get("interrupted"), None);
    assert_eq!(
        chat_of(&host.upstream.last_request()),
        pairs(&[
            ("user", "one"),
            ("assistant", "Hello there"),
            ("user", "two")
        ])
    );
}

#[tokio::test]
async fn interrupt_without_heard_keeps_what_was_streamed() {
    let host = host().await;
    let (_release, closed) = host.upstream.hold(&["I think", " that"]);
    let mut first = host
        .open(json!({"message": "one", "session_key": "i2"}))
        .await;
    first.until_text("I think that").await;
    // An empty body means "no heard".
    let (status, body) = interrupt(&host, "i2", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], "I think that");
    assert_eq!(body["heard_is_prefix"], Value::Null);
    upstream_closed(closed).await;
    let events = first.rest().await;
    assert_eq!(text_dones(&events)[0]["interrupted"], true);

    // `heard` that is not a prefix of the streamed text is stored as given.
    let (_release, _closed) = host.upstream.hold(&["Bonjour"]);
    let mut second = host
        .open(json!({"message": "two", "session_key": "i2"}))
        .await;
    second.until_text("Bonjour").await;
    let (status, body) = interrupt(&host, "i2", Some(json!({"heard": "Bon jour"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["heard_is_prefix"], false);
    assert_eq!(body["stored"], "Bon jour");
    second.rest().await;

    within(host.sse(json!({"message": "three", "session_key": "i2"}))).await;
    assert_eq!(
        chat_of(&host.upstream.last_request()),
        pairs(&[
            ("user", "one"),
            ("assistant", "I think that"),
            ("user", "two"),
            ("assistant", "Bon jour"),
            ("user", "three")
        ])
    );
}

#[tokio::test]
async fn interrupt_when_nothing_is_in_flight_is_a_409_and_bad_input_a_400() {
    let host = host().await;
    let (status, body) = interrupt(&host, "idle", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_in_flight");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'idle'"));

    // After a completed turn there is nothing to interrupt either.
    host.sse(json!({"message": "hi", "session_key": "idle"}))
        .await;
    assert_eq!(interrupt(&host, "idle", None).await.0, 409);

    let (status, body) = interrupt(&host, "bad%20key", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );
    let url = format!("{}/v1/sessions/idle/interrupt", host.url);
    let r = host
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A body must be sent as JSON; no body needs no type.
    let r = host.client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let (status, body) = interrupt(&host, "idle", Some(json!({"heard": 5}))).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid_request"))
    );
    let long = "x".repeat(16_001);
    let (status, body) = interrupt(&host, "idle", Some(json!({"heard": long}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("heard"));
}

#[tokio::test]
async fn collect_runs_the_second_turn_after_the_first_with_it_in_history() {
    let host = host().await;
    let (release, _closed) = host.upstream.hold(&["First answer."]);
    host.upstream.push(Reply::tokens(&["Second answer."]));
    let mut first = host
        .open(json!({"message": "one", "session_key": "c1"}))
        .await;
    first.until_text("First answer.").await;
    let second = host.spawn_sse(json!({"message": "two", "session_key": "c1"}));
    host.wait_session("c1", |v| v.in_flight && v.queued == 1)
        .await;
    assert_eq!(
        host.upstream.requests().len(),
        1,
        "the second turn waits for the first"
    );

    release.notify_one();
    let events = first.rest().await;
    assert_eq!(events.last().unwrap()["response"], "First answer.");
    assert_eq!(events.last().unwrap().get("interrupted"), None);
    let second = within(second).await.unwrap();
    assert_eq!(second.last()["response"], "Second answer.");
    assert_eq!(
        chat_of(&host.upstream.requests()[1]),
        pairs(&[
            ("user", "one"),
            ("assistant", "First answer."),
            ("user", "two")
        ])
    );
    host.wait_no_sessions().await;
}

#[tokio::test]
async fn unknown_queue_mode_runs_as_collect() {
    let host = host().await;
    let (release, _closed) = host.upstream.hold(&["Held."]);
    let mut first = host
        .open(json!({"profile": "typo", "message": "one", "session_key": "t1"}))
        .await;
    first.until_text("Held.").await;
    let second = host.spawn_sse(json!({"profile": "typo", "message": "two", "session_key": "t1"}));
    host.wait_session("t1", |v| v.queued == 1).await;
    release.notify_one();
    assert_eq!(first.rest().await.last().unwrap().get("interrupted"), None);
    assert_eq!(within(second).await.unwrap().last()["type"], "text_done");
    assert_eq!(chat_of(&host.upstream.last_request()).len(), 3);
}

#[tokio::test]
async fn steer_interrupts_the_running_turn_and_the_new_turn_sees_what_was_streamed() {
    let host = host().await;
    let (_release, closed) = host.upstream.hold(&["Partial", " answer"]);
    let mut first = host
        .open(json!({"profile": "steer", "message": "one", "session_key": "s1"}))
        .await;
    first.until_text("Partial answer").await;

    host.upstream.push(Reply::tokens(&["New answer."]));
    let second =
        within(host.sse(json!({"profile": "steer", "message": "two", "session_key": "s1"}))).await;
    assert_eq!(second.last()["response"], "New answer.");
    upstream_closed(closed).await;
    let events = first.rest().await;
    let done = text_dones(&events);
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["interrupted"], true);
    assert_eq!(done[0]["response"], "Partial answer");
    assert_eq!(
        chat_of(&host.upstream.requests()[1]),
        pairs(&[
            ("user", "one"),
            ("assistant", "Partial answer"),
            ("user", "two")
        ])
    );
    host.wait_no_sessions().await;
}

#[tokio::test]
async fn steer_backlog_keeps_the_user_message_when_nothing_was_streamed_and_steer_does_not() {
    let host = host().await;
    for (profile, key, expected) in [
        ("backlog", "b1", pairs(&[("user", "one"), ("user", "two")])),
        ("steer", "b2", pairs(&[("user", "two")])),
    ] {
        let (_release, closed) = host.upstream.hold(&[]);
        let before = host.upstream.requests().len();
        let mut first = host
            .open(json!({"profile": profile, "message": "one", "session_key": key}))
            .await;
        host.upstream.wait_for_requests(before + 1).await;

        host.upstream.push(Reply::tokens(&["Answer."]));
        let second =
            within(host.sse(json!({"profile": profile, "message": "two", "session_key": key})))
                .await;
        assert_eq!(second.last()["response"], "Answer.");
        upstream_closed(closed).await;
        let events = first.rest().await;
        assert_eq!(
            events,
            [
                json!({"type": "text_done", "response": "", "actions": [], "interrupted": true,
                    "timing": events[0]["timing"]})
            ],
            "{profile}"
        );
        assert_eq!(
            chat_of(&host.upstream.last_request()),
            expected,
            "{profile}"
        );
    }
}

#[tokio::test]
async fn get_session_shows_history_and_in_flight() {
    let host = host().await;
    let (status, body) = host.get("/v1/sessions/g1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"key": "g1", "backend": "memory", "messages": [], "in_flight": false,
               "queued": 0, "streamed_chars": null})
    );
    host.upstream.push(Reply::tokens(&["Hi!"]));
    host.sse(json!({"message": "hello", "session_key": "g1"}))
        .await;
    let (release, _closed) = host.upstream.hold(&["Wait"]);
    let mut turn = host
        .open(json!({"message": "again", "session_key": "g1"}))
        .await;
    turn.until_text("Wait").await;
    let (_, body) = host.get("/v1/sessions/g1").await;
    assert_eq!(body["in_flight"], true);
    assert_eq!(body["streamed_chars"], 4);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi!"}])
    );
    release.notify_one();
    turn.rest().await;
    host.wait_no_sessions().await;
    let (_, body) = host.get("/v1/sessions/g1").await;
    assert_eq!(body["in_flight"], false);
    assert_eq!(body["messages"].as_array().unwrap().len(), 4);
    assert_eq!(host.get("/v1/sessions/bad%20key").await.0, 400);
}

const SENTENCE_TOKENS: &[&str] = &[
    "Hi",
    ". ",
    "Dr",
    ". Smith has 3",
    ".5 apples. ",
    "That is a lot! Really? ",
    "Yes",
    ".",
];

fn sentences(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "sentence")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

fn deltas(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "delta")
        .cloned()
        .collect()
}

#[tokio::test]
async fn sentence_events_concatenate_to_the_answer_and_respect_the_minimum() {
    let mut p = profile("talk");
    p["llm"]["queue"] = json!({"mode": "collect", "block_streaming_chunk": 20});
    p["voice"]["sentence_events"] = json!(true);
    let host = TestHost::with(HostSpec::default().with_profile(p)).await;
    host.upstream.push(Reply::tokens(SENTENCE_TOKENS));
    let answer = host
        .sse(json!({"profile": "talk", "message": "count"}))
        .await;
    let full = SENTENCE_TOKENS.concat();
    assert_eq!(answer.last()["response"], full.as_str());
    let said = sentences(&answer.events);
    assert_eq!(
        said,
        [
            "Hi. Dr. Smith has 3.5 apples. ",
            "That is a lot! Really? ",
            "Yes."
        ]
    );
    assert_eq!(said.concat(), full);
    let (last, rest) = said.split_last().unwrap();
    assert!(rest.iter().all(|s| s.chars().count() >= 20), "{said:?}");
    assert!(!last.is_empty());
    // Every sentence follows the delta that completed it; the last comes before text_done.
    let types = answer.types();
    assert_eq!(types[types.len() - 2], "sentence");
    assert_eq!(answer.names, types, "SSE event names follow the types");

    // Deltas are the same with sentences switched off by the request.
    host.upstream.push(Reply::tokens(SENTENCE_TOKENS));
    let plain = host
        .sse(json!({"profile": "talk", "message": "count", "sentences": false}))
        .await;
    assert!(sentences(&plain.events).is_empty());
    assert_eq!(deltas(&plain.events), deltas(&answer.events));
}

#[tokio::test]
async fn sentences_request_flag_on_a_profile_without_it() {
    let host = host().await;
    host.upstream.push(Reply::tokens(SENTENCE_TOKENS));
    let plain = host.ndjson(json!({"message": "count"})).await;
    assert!(sentences(&plain.events).is_empty());
    host.upstream.push(Reply::tokens(SENTENCE_TOKENS));
    let answer = host
        .ndjson(json!({"message": "count", "sentences": true}))
        .await;
    assert_eq!(
        sentences(&answer.events),
        [
            "Hi. ",
            "Dr. Smith has 3.5 apples. ",
            "That is a lot! ",
            "Really? ",
            "Yes."
        ]
    );
    assert_eq!(deltas(&plain.events), deltas(&answer.events));
    assert_eq!(answer.last()["type"], "text_done");
}

#[tokio::test]
async fn check_reports_an_unknown_queue_mode() {
    let host = host().await;
    let report = gateway_host::Report::of(&host.state);
    assert!(report.has_problems());
    let text = report.render();
    assert!(
        text.contains("typo.json: unknown llm.queue.mode \"stear\""),
        "{text}"
    );
    assert!(!text.contains("steer.json: unknown"), "{text}");
}
