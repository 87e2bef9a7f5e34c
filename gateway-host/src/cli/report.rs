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
        let mut findings = Vec::new();
        let mut push = |section, level, subject: &str, detail: String| {
            findings.push(Finding {
                section,
                level,
                subject: subject.to_string(),
                detail,
            })
        };
        let used_by = |id: &str| {
            state
                .profiles()
                .iter()
                .filter(|p| p.gateway_id == id || p.fallback_gateway_ids.iter().any(|f| f == id))
                .map(|p| p.id.clone())
                .collect::<Vec<_>>()
        };
        for g in state.instances().iter() {
            let users = used_by(g.id());
            let model = g.default_model().unwrap_or("-");
            let declared = state.config().gateways.contains_key(g.id());
            match g.is_configured() {
                Ok(()) if users.is_empty() && declared => push(
                    "gateway",
                    Level::Warning,
                    g.id(),
                    format!(
                        "kind {}, configured, default model {model}, but no profile uses it",
                        g.kind()
                    ),
                ),
                Ok(()) if users.is_empty() => push(
                    "gateway",
                    Level::Ok,
                    g.id(),
                    format!(
                        "kind {}, configured, default model {model} (built in; no profile uses it)",
                        g.kind()
                    ),
                ),
                Ok(()) => push(
                    "gateway",
                    Level::Ok,
                    g.id(),
                    format!(
                        "kind {}, configured, default model {model} (used by {})",
                        g.kind(),
                        users.join(", ")
                    ),
                ),
                Err(e) if users.is_empty() => push(
                    "gateway",
                    Level::Warning,
                    g.id(),
                    format!("kind {}: {e} (no profile uses it)", g.kind()),
                ),
                Err(e) => push(
                    "gateway",
                    Level::Problem,
                    g.id(),
                    format!("kind {}: {e} (used by {})", g.kind(), users.join(", ")),
                ),
            }
        }
        for (id, f) in state.instances().failures() {
            push(
                "gateway",
                Level::Problem,
                id,
                format!("kind {}: {}", f.kind, f.reason),
            );
        }
        for p in state.profiles().iter() {
            let fallbacks = match p.fallback_gateway_ids.as_slice() {
                [] => String::new(),
                ids => format!(", then {}", ids.join(", ")),
            };
            push(
                "profile",
                Level::Ok,
                &p.file,
                format!("id {}, gateway {}{fallbacks}", p.id, p.gateway_id),
            );
            for problem in crate::turn::voice::VoiceSettings::problems(p) {
                push("profile", Level::Problem, &p.file, problem);
            }
        }
        for problem in state.profiles().problems() {
            push(
                "profile",
                Level::Problem,
                &problem.file,
                problem.error.to_string(),
            );
        }
        let default = &state.config().default_profile;
        if state.profiles().get(default).is_none() {
            push(
                "profile",
                Level::Warning,
                default,
                "default_profile is not loaded: requests without `profile` get 404".into(),
            );
        }
        let path = state
            .prompts()
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into());
        match state.prompts().refresh() {
            PromptStatus::Loaded(bytes) => push(
                "prompt",
                Level::Ok,
                &path,
                format!("{bytes} bytes after stripping # lines"),
            ),
            PromptStatus::Missing => push(
                "prompt",
                Level::Warning,
                &path,
                "missing: profile prompts are used alone".into(),
            ),
            PromptStatus::Disabled => {
                push("prompt", Level::Ok, &path, "no prompts directory".into())
            }
        }
        let memory = &state.config().memory;
        let detail = match memory.backend {
            MemoryBackend::Redis => format!(
                "redis at {}, keys {}*, last {} messages, idle TTL {} s",
                crate::config::redact_url(&memory.redis_url),
                memory.redis_key_prefix,
                memory.max_messages,
                memory.idle_ttl_secs
            ),
            MemoryBackend::Memory => format!(
                "memory, last {} messages, at most {} sessions, idle TTL {} s",
                memory.max_messages, memory.max_sessions, memory.idle_ttl_secs
            ),
        };
        push("memory", Level::Ok, "store", detail);
        let auth = state.auth();
        let bind = state.config().bind;
        if let Some(problem) = auth.problem() {
            push(
                "access",
                Level::Problem,
                "auth",
                format!("{problem}: every request would be refused"),
            );
        } else if let Some(warning) = crate::http::auth::exposure_warning(bind, auth) {
            push("access", Level::Warning, "auth", warning);
        } else if auth.is_enabled() {
            let metrics = if state.config().auth.public_metrics {
                "open"
            } else {
                "protected"
            };
            push(
                "access",
                Level::Ok,
                "auth",
                format!(
                    "{} bearer token(s) accepted; /healthz open, /metrics {metrics}",
                    auth.token_count()
                ),
            );
        } else {
            push(
                "access",
                Level::Ok,
                "auth",
                format!("off (bound to loopback {bind})"),
            );
        }
        let limits = &state.config().limits;
        push(
            "access",
            Level::Ok,
            "limits",
            format!(
                "{} streams in total, {} per session (0 = no limit), upstream concurrency {} \
                 per instance (0 = no limit), shutdown grace {} s",
                limits.max_streams,
                limits.max_streams_per_session,
                limits.max_upstream_concurrency,
                state.config().shutdown_grace_secs
            ),
        );
        Self { findings }
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
