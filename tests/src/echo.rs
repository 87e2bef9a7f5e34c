//! An OpenAI-compatible upstream for the replica and operations tests: it records request
//! bodies and answers `echo: <message>`; a message containing `hold` streams its first token,
//! then waits for `release` (or for the host to hang up).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::chunk;

/// An OpenAI-compatible upstream that records request bodies and answers `echo: <message>`.
/// A message containing `hold` streams its first token, then waits for `release`.
#[derive(Clone, Default)]
pub struct Upstream {
    /// Every request body, in arrival order.
    pub requests: Arc<Mutex<Vec<Value>>>,
    /// Lets a held answer go on.
    pub release: Arc<Notify>,
}

async fn completions(
    State(upstream): State<Upstream>,
    axum::Json(body): axum::Json<Value>,
) -> impl IntoResponse {
    let message = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    upstream.requests.lock().expect("requests lock").push(body);
    let release = upstream.release.clone();
    let hold = message.contains("hold");
    let pieces = futures::stream::iter(0..3).then(move |step| {
        let release = release.clone();
        let message = message.clone();
        async move {
            let piece = match step {
                0 => chunk(json!({"content": "echo: "}), None),
                1 => {
                    if hold {
                        release.notified().await;
                    }
                    chunk(json!({"content": message}), None)
                }
                _ => chunk(json!({}), Some("stop")) + "data: [DONE]\n\n",
            };
            Ok::<_, std::convert::Infallible>(piece)
        }
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(pieces),
    )
}

/// Serves an echo upstream on 127.0.0.1; returns it and its base URL (`.../v1`).
pub async fn start_upstream() -> (Upstream, String) {
    let upstream = Upstream::default();
    let router = axum::Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (upstream, format!("http://{addr}/v1"))
}
