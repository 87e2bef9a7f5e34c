//! The `scripted` kind inside a host built from an explicit registry, without a socket: the
//! way a gateway author tests a kind against the real turn pipeline.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Instant;

use futures::StreamExt;
use gateway_core::{Env, Event, Registry};
use gateway_host::config::GatewayConfig;
use gateway_host::turn::{self, TurnRequest};
use gateway_host::{AppState, HostConfig, Instances};
use gateway_host::{Profile, ProfileSet};
use serde_json::json;

#[tokio::test]
async fn answers_a_turn_through_the_host_pipeline() {
    let registry = Registry::from_kinds([&scripted_gateway::KIND]).unwrap();
    let mut config = HostConfig {
        prompts_dir: "does-not-exist".into(),
        ..HostConfig::default()
    };
    // The timeout is the host's key: the kind (which rejects unknown keys) never sees it.
    let settings = json!({"reply": "Beep: {message}", "first_token_timeout_ms": 4000});
    config.gateways.insert(
        "robot".into(),
        GatewayConfig {
            kind: Some("scripted".into()),
            settings: settings.as_object().unwrap().clone(),
            ..GatewayConfig::default()
        },
    );
    let instances = Instances::build(&registry, &config, &Env::default());
    assert_eq!(instances.failures().count(), 0, "{instances:?}");
    let profile = Profile::from_json(
        json!({"id": "default", "adapter_config": {"gateway_id": "robot"}}),
        "builtin",
    )
    .unwrap();
    let profiles = ProfileSet::from_profiles([profile], |g| instances.is_known(g));
    let store = AppState::store_for(&config);
    let state = AppState::new(config, instances, profiles, store);

    let request = TurnRequest {
        message: "hello robot".into(),
        session_key: Some("s-1".into()),
        ..TurnRequest::default()
    };
    let started = turn::start(&state, request, Instant::now()).await.unwrap();
    let events: Vec<Event> = started.events.collect().await;
    assert!(matches!(&events[0], Event::Handshake { gateway: Some(g), .. } if g == "robot"));
    match events.last().unwrap() {
        Event::TextDone { response, .. } => assert_eq!(response, "Beep: hello robot"),
        other => panic!("expected text_done, got {other:?}"),
    }
    assert_eq!(state.store().history("s-1", 10).await.unwrap().len(), 2);
}
