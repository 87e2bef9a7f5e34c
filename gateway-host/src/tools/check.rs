//! What `gateway-host check` says about tools: every server reached (started) and its tools
//! listed, unknown servers named by profiles, allow-list names a server does not offer, and
//! tool names two servers of one profile both offer.

use std::collections::BTreeMap;

use crate::cli::report::{Level, Report};
use crate::state::AppState;

/// Add the `tool` findings to `report`: reaches every configured server.
pub async fn report(state: &AppState, report: &mut Report) {
    let config = &state.config().tools;
    let mut offered: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, server) in &config.servers {
        let users = users_of(state, name);
        match state.tools().probe(name).await {
            Ok(tools) => {
                let detail = format!(
                    "{}, {} tool(s): {}{}",
                    transport_text(server),
                    tools.len(),
                    tools.join(", "),
                    used_by_text(&users)
                );
                report.push("tool", Level::Ok, name, detail);
                for missing in server.allow.iter().flatten().filter(|a| !tools.contains(a)) {
                    let detail =
                        format!("allow names '{missing}', which the server does not offer");
                    report.push("tool", Level::Warning, name, detail);
                }
                offered.insert(name, tools);
            }
            Err(error) => {
                let level = if users.is_empty() {
                    Level::Warning
                } else {
                    Level::Problem
                };
                report.push(
                    "tool",
                    level,
                    name,
                    format!("{error}{}", used_by_text(&users)),
                );
            }
        }
    }
    for profile in state.profiles().iter() {
        profile_findings(state, profile, &offered, report);
    }
}

/// Unknown servers, tools switched off, and clashing tool names of one profile.
fn profile_findings(
    state: &AppState,
    profile: &crate::config::profile::Profile,
    offered: &BTreeMap<&str, Vec<String>>,
    report: &mut Report,
) {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for server in &profile.tool_servers {
        if !state.tools().is_known(server) {
            let detail = format!(
                "profile '{}' names unknown tool server '{server}'",
                profile.id
            );
            report.push("tool", Level::Problem, &profile.file, detail);
            continue;
        }
        for tool in offered.get(server.as_str()).into_iter().flatten() {
            if let Some(first) = owner.insert(tool, server) {
                let detail = format!(
                    "profile '{}': tool '{tool}' is offered by both '{first}' and '{server}' \
                     (the model would only see '{first}''s; narrow one with allow)",
                    profile.id
                );
                report.push("tool", Level::Problem, &profile.file, detail);
            }
        }
    }
    if !profile.tool_servers.is_empty() && !profile.tools_enabled {
        let detail = format!(
            "profile '{}' names tool servers but features.tools is not true: no tools offered",
            profile.id
        );
        report.push("tool", Level::Warning, &profile.file, detail);
    }
}

fn users_of(state: &AppState, server: &str) -> Vec<String> {
    state
        .profiles()
        .iter()
        .filter(|p| p.tools_enabled && p.tool_servers.iter().any(|s| s == server))
        .map(|p| p.id.clone())
        .collect()
}

fn used_by_text(users: &[String]) -> String {
    match users {
        [] => " (no profile uses it)".into(),
        users => format!(" (used by {})", users.join(", ")),
    }
}

/// How the server is reached, without secrets.
fn transport_text(server: &super::config::ToolServerConfig) -> String {
    match server.transport() {
        Ok(super::config::Transport::Stdio { command }) => format!("stdio `{command}`"),
        Ok(super::config::Transport::Http { url }) => {
            format!("streamable HTTP {}", crate::config::redact_url(url))
        }
        Err(e) => e,
    }
}
