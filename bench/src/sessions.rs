//! The session-memory phase: many distinct sessions, each driven through the host's
//! `/v1/conversation` until it holds a full history, then the host's RSS is read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::load::{self, Protocol, Target};

/// Workload of the sessions phase.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// Distinct session keys.
    pub sessions: u64,
    /// Turns per session (each stores a user and an assistant message).
    pub turns_per_session: u64,
    /// Bytes of each user message.
    pub message_bytes: usize,
    /// Concurrent workers (each drives one session at a time, its turns in order).
    pub concurrency: usize,
    /// Stop starting new sessions after this long.
    pub max_duration: Duration,
    /// Upper bound for one turn.
    pub turn_timeout: Duration,
}

/// What the sessions phase did.
#[derive(Debug, Clone)]
pub struct SessionsResult {
    /// Sessions whose turns all completed.
    pub full_sessions: u64,
    /// Turns completed.
    pub turns: u64,
    /// Turns that failed.
    pub errors: u64,
    /// First few error kinds.
    pub error_kinds: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether the phase stopped on its time limit.
    pub hit_time_limit: bool,
}

/// A user message of exactly `bytes` ASCII bytes naming its session and turn.
pub fn message(session: u64, turn: u64, bytes: usize) -> String {
    let mut text = format!("Session {session} turn {turn}: please remember this sentence. ");
    let filler = "The quick brown fox jumps over the lazy dog. ";
    while text.len() < bytes {
        text.push_str(filler);
    }
    text.truncate(bytes);
    text
}

/// Drives `config.sessions` sessions through the host at `host_base_url`.
pub async fn run(
    host_base_url: &str,
    profile: &str,
    config: &SessionsConfig,
) -> anyhow::Result<SessionsResult> {
    let target = Arc::new(Target {
        url: format!("{host_base_url}/v1/conversation"),
        protocol: Protocol::Conversation,
        model: profile.to_owned(),
        system_prompt: None,
        api_key: None,
    });
    let concurrency = config.concurrency.max(1);
    let client = load::client(concurrency)?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + config.max_duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let target = Arc::clone(&target);
        let next = Arc::clone(&next);
        let config = config.clone();
        workers.push(tokio::spawn(async move {
            let mut full = 0u64;
            let mut turns = 0u64;
            let mut errors = 0u64;
            let mut kinds = Vec::new();
            let mut hit_time_limit = false;
            loop {
                if Instant::now() >= deadline {
                    hit_time_limit = true;
                    break;
                }
                let session = next.fetch_add(1, Ordering::Relaxed);
                if session >= config.sessions {
                    break;
                }
                let key = format!("bench-session-{session}");
                let mut ok = true;
                for turn in 0..config.turns_per_session {
                    let text = message(session, turn, config.message_bytes);
                    match load::run_turn(&client, &target, &key, &text, config.turn_timeout).await {
                        Ok(_) => turns += 1,
                        Err(kind) => {
                            errors += 1;
                            ok = false;
                            if kinds.len() < 3 {
                                kinds.push(kind);
                            }
                        }
                    }
                }
                if ok {
                    full += 1;
                }
            }
            (full, turns, errors, kinds, hit_time_limit)
        }));
    }
    let mut result = SessionsResult {
        full_sessions: 0,
        turns: 0,
        errors: 0,
        error_kinds: Vec::new(),
        elapsed: Duration::ZERO,
        hit_time_limit: false,
    };
    for worker in workers {
        let (full, turns, errors, kinds, hit) =
            worker.await.context("a sessions worker panicked")?;
        result.full_sessions += full;
        result.turns += turns;
        result.errors += errors;
        result.hit_time_limit |= hit;
        for kind in kinds {
            if result.error_kinds.len() < 5 && !result.error_kinds.contains(&kind) {
                result.error_kinds.push(kind);
            }
        }
    }
    result.elapsed = started.elapsed();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_asked_size() {
        assert_eq!(message(9_999, 9, 200).len(), 200);
        assert_eq!(message(1, 1, 10).len(), 10);
    }
}
