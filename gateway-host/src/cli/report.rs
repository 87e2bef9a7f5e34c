//! The start-up report shared by `gateway-host check` and `serve`'s start-up log.

use std::fmt::Write as _;

use crate::config::prompt::PromptStatus;
use crate::config::MemoryBackend;
use crate::state::AppState;

/// Severity of a report line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something is off (e.g. an unconfigured gateway no profile uses).
    Warning,
    /// Broken: `check` exits non-zero.
    Problem,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Section: `gateway`, `profile`, `prompt`, `memory`, `access`, `tool`.
    pub section: &'static str,
    /// Severity.
    pub level: Level,
    /// Subject (instance id, profile file name, prompt path).
    pub subject: String,
    /// What was found, never a secret.
    pub detail: String,
}

/// The ids of the profiles that use instance `id`, as gateway or fallback.
fn users_of(state: &AppState, id: &str) -> Vec<String> {
    state
        .profiles()
        .iter()
        .filter(|p| p.gateway_id == id || p.fallback_gateway_ids.iter().any(|f| f == id))
        .map(|p| p.id.clone())
        .collect()
}

/// Everything `check` reports about a loaded state.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// All findings, in section order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Inspect instances, profiles and the prompt file. An instance that failed to build
    /// (unknown kind, bad settings) is a problem; an unconfigured one (key variable unset) is a
    /// problem when a profile uses it (as gateway or fallback), else a warning; a configured
    /// `[gateways.*]` instance no profile uses is a warning. Profiles naming an unknown gateway
    /// or fallback are problems (reported by the profile loader).
    pub fn of(state: &AppState) -> Self {
        let mut report = Self::default();
        report.gateways(state);
        report.profiles(state);
        report.prompt(state);
        report.memory(state);
        report.access(state);
        report.network(state);
        report
    }

    /// One line per instance (see [`Report::of`] for the levels), then the failed ones.
    fn gateways(&mut self, state: &AppState) {
        for g in state.instances().iter() {
            let users = users_of(state, g.id());
            let used = match users.as_slice() {
                [] => "no profile uses it".to_string(),
                users => format!("used by {}", users.join(", ")),
            };
            let declared = state.config().gateways.contains_key(g.id());
            let (level, detail) = match g.is_configured() {
                Ok(()) => {
                    let model = g.default_model().unwrap_or("-");
                    let head = format!("kind {}, configured, default model {model}", g.kind());
                    match (users.is_empty(), declared) {
                        (true, true) => (Level::Warning, format!("{head}, but {used}")),
                        (true, false) => (Level::Ok, format!("{head} (built in; {used})")),
                        (false, _) => (Level::Ok, format!("{head} ({used})")),
                    }
                }
                Err(e) if users.is_empty() => {
                    (Level::Warning, format!("kind {}: {e} ({used})", g.kind()))
                }
                Err(e) => (Level::Problem, format!("kind {}: {e} ({used})", g.kind())),
            };
            self.push("gateway", level, g.id(), detail);
        }
        for (id, f) in state.instances().failures() {
            let detail = format!("kind {}: {}", f.kind, f.reason);
            self.push("gateway", Level::Problem, id, detail);
        }
    }

    /// The loaded profiles with their gateways, their voice-setting problems, the files that
    /// failed to load, and a default profile that is missing.
    fn profiles(&mut self, state: &AppState) {
        for p in state.profiles().iter() {
            let fallbacks = match p.fallback_gateway_ids.as_slice() {
                [] => String::new(),
                ids => format!(", then {}", ids.join(", ")),
            };
            let detail = format!("id {}, gateway {}{fallbacks}", p.id, p.gateway_id);
            self.push("profile", Level::Ok, &p.file, detail);
            for problem in crate::turn::voice::VoiceSettings::problems(p) {
                self.push("profile", Level::Problem, &p.file, problem);
            }
        }
        for problem in state.profiles().problems() {
            let detail = problem.error.to_string();
            self.push("profile", Level::Problem, &problem.file, detail);
        }
        let default = &state.config().default_profile;
        if state.profiles().get(default).is_none() {
            let detail = "default_profile is not loaded: requests without `profile` get 404";
            self.push("profile", Level::Warning, default, detail.into());
        }
    }

    /// The voice prompt file, read now.
    fn prompt(&mut self, state: &AppState) {
        let path = state
            .prompts()
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into());
        let (level, detail) = match state.prompts().refresh() {
            PromptStatus::Loaded(bytes) => {
                (Level::Ok, format!("{bytes} bytes after stripping # lines"))
            }
            PromptStatus::Missing => (
                Level::Warning,
                "missing: profile prompts are used alone".into(),
            ),
            PromptStatus::Disabled => (Level::Ok, "no prompts directory".into()),
        };
        self.push("prompt", level, &path, detail);
    }

    /// The session store's settings (the Redis password never shown).
    fn memory(&mut self, state: &AppState) {
        let memory = &state.config().memory;
        let detail = match memory.backend {
            MemoryBackend::Redis => format!(
                "redis at {}{}, keys {}*, last {} messages, idle TTL {} s, writes retried for {} ms, turn leases of {} ms",
                crate::config::redact_url(&memory.redis_url),
                memory
                    .redis_ca_file
                    .as_ref()
                    .map(|f| format!(" (CA file {})", f.display()))
                    .unwrap_or_default(),
                memory.redis_key_prefix,
                memory.max_messages,
                memory.idle_ttl_secs,
                memory.write_timeout_ms,
                memory.lease_ms
            ),
            MemoryBackend::Memory => format!(
                "memory, last {} messages, at most {} sessions, idle TTL {} s",
                memory.max_messages, memory.max_sessions, memory.idle_ttl_secs
            ),
        };
        self.push("memory", Level::Ok, "store", detail);
    }

    /// Client authentication (broken, exposed, on or off) and the stream limits.
    fn access(&mut self, state: &AppState) {
        let config = state.config();
        let auth = state.auth();
        let (level, detail) = if let Some(problem) = auth.problem() {
            (
                Level::Problem,
                format!("{problem}: every request would be refused"),
            )
        } else if let Some(warning) = crate::http::auth::exposure_warning(config.bind, auth) {
            (Level::Warning, warning)
        } else if auth.is_enabled() {
            let metrics = if config.auth.public_metrics {
                "open"
            } else {
                "protected"
            };
            let tokens = auth.token_count();
            let detail =
                format!("{tokens} bearer token(s) accepted; /healthz open, /metrics {metrics}");
            (Level::Ok, detail)
        } else {
            (
                Level::Ok,
                format!("off (bound to loopback {})", config.bind),
            )
        };
        self.push("access", level, "auth", detail);
        let limits = &config.limits;
        let detail = format!(
            "{} streams in total, {} per session (0 = no limit), upstream concurrency {} per \
             instance (0 = no limit), answers up to {} characters, shutdown grace {} s",
            limits.max_streams,
            limits.max_streams_per_session,
            limits.max_upstream_concurrency,
            limits.max_answer_chars,
            config.shutdown_grace_secs
        );
        self.push("access", Level::Ok, "limits", detail);
    }

    /// Client connections (`[server]`: the cap under the open-file limit `serve` will have,
    /// the timeouts) and the web origins allowed (`[cors]`).
    fn network(&mut self, state: &AppState) {
        use crate::http::server::{connection_cap, open_file_limit, HEALTH_RESERVE};
        let server = &state.config().server;
        let cap = connection_cap(state, open_file_limit());
        let files = cap.open_files.map_or("unknown".into(), |n| n.to_string());
        let (level, lowered) = match cap.lowered {
            true => (
                Level::Warning,
                format!(", lowered from {}", server.max_connections),
            ),
            false => (Level::Ok, String::new()),
        };
        let detail = format!(
            "at most {} open (open-file limit {files}{lowered}) + {HEALTH_RESERVE} for \
             /healthz, served by {} threads; timeouts: header read {} ms, body read {} ms, \
             idle keep-alive {} ms",
            cap.max,
            server.serving_threads(),
            server.header_read_timeout_ms,
            server.body_read_timeout_ms,
            server.idle_timeout_ms
        );
        self.push("access", level, "connections", detail);
        let origins = &state.config().cors.allowed_origins;
        let detail = match origins.is_empty() {
            true => "browser requests from the host's own origin only".to_string(),
            false => format!("the host's own origin and {}", origins.join(", ")),
        };
        self.push("access", Level::Ok, "cors", detail);
    }

    /// Add a finding (e.g. the result of connecting to the session store).
    pub fn push(&mut self, section: &'static str, level: Level, subject: &str, detail: String) {
        self.findings.push(Finding {
            section,
            level,
            subject: subject.to_string(),
            detail,
        });
    }

    /// True when any finding is a problem.
    pub fn has_problems(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Problem)
    }

    /// Human-readable text, one finding per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for f in &self.findings {
            if f.section != section {
                section = f.section;
                match section {
                    "memory" | "access" => writeln!(out, "{section}:"),
                    _ => writeln!(out, "{section}s:"),
                }
                .ok();
            }
            let level = match f.level {
                Level::Ok => "ok",
                Level::Warning => "warning",
                Level::Problem => "PROBLEM",
            };
            let _ = writeln!(out, "  {level:<8} {}: {}", f.subject, f.detail);
        }
        let count = |l| self.findings.iter().filter(|f| f.level == l).count();
        let _ = writeln!(
            out,
            "{} problem(s), {} warning(s)",
            count(Level::Problem),
            count(Level::Warning)
        );
        out
    }

    /// Log every warning and problem (start-up of `serve`).
    pub fn log(&self) {
        for f in &self.findings {
            match f.level {
                Level::Ok => {
                    tracing::debug!(section = f.section, subject = %f.subject, "{}", f.detail)
                }
                Level::Warning => {
                    tracing::warn!(section = f.section, subject = %f.subject, "{}", f.detail)
                }
                Level::Problem => {
                    tracing::error!(section = f.section, subject = %f.subject, "{}", f.detail)
                }
            }
        }
    }
}
