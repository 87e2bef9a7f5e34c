//! `gateway-host check`: the effective config and the start-up report; non-zero on problems.

use std::path::PathBuf;
use std::process::ExitCode;

use gateway_core::{Env, Registry};

use super::report::{Level, Report};
use crate::config::{HostConfig, MemoryBackend};
use crate::state::AppState;

/// Prints the config (secrets redacted) and the report, and connects to Redis when it is the
/// store.
pub async fn check(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match HostConfig::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            println!("config: PROBLEM {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("config (secrets redacted):");
    println!("{}", serde_json::to_string_pretty(&config.redacted())?);
    let registry = Registry::from_inventory()?;
    println!(
        "gateway kinds: {}",
        registry.ids().collect::<Vec<_>>().join(", ")
    );
    let memory = config.memory.clone();
    let state = AppState::load(config, &registry, &Env::from_process());
    let mut report = Report::of(&state);
    crate::tools::check::report(&state, &mut report).await;
    if memory.backend == MemoryBackend::Redis {
        match crate::sessions::store::open(&memory).await {
            Ok(_) => report.push("memory", Level::Ok, "redis", "reachable".into()),
            Err(e) => report.push("memory", Level::Problem, "redis", e.to_string()),
        }
    }
    print!("{}", report.render());
    Ok(if report.has_problems() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
