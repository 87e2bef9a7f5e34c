//! `gateway-host chat`: one turn in-process, the answer streamed to the terminal.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use futures::StreamExt;
use gateway_core::Event;

use super::load_state;
use crate::turn::{self, TurnRequest};

/// Runs one turn and prints its answer; the timing goes to stderr.
pub async fn chat(
    config: Option<PathBuf>,
    profile: Option<String>,
    session: Option<String>,
    message: String,
) -> anyhow::Result<ExitCode> {
    let state = load_state(config.as_deref()).await?;
    let request = TurnRequest {
        profile,
        message,
        session_key: session,
        ..TurnRequest::default()
    };
    let mut turn = turn::start(&state, request, Instant::now()).await?;
    let mut stdout = std::io::stdout();
    while let Some(event) = turn.events.next().await {
        match event {
            Event::Delta { text } => {
                print!("{text}");
                stdout.flush()?;
            }
            Event::TextDone { timing, .. } => {
                println!();
                if let Some(t) = timing {
                    match t.ttft_ms {
                        Some(ttft) => {
                            eprintln!("time to first token: {ttft} ms (total {} ms)", t.total_ms)
                        }
                        None => eprintln!("no tokens (total {} ms)", t.total_ms),
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            Event::Error { error } => {
                println!();
                eprintln!("error: {error}");
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
    Ok(ExitCode::FAILURE)
}
