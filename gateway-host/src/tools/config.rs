//! `[tools]` of `gateway.toml`: named MCP servers (a stdio command or a streamable-HTTP URL)
//! and the bounds of the tool loop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Host environment variables every stdio server gets (where set): what a program needs to
/// find its interpreter, packages, locale and temporary files.
pub const INHERITED_ENV: [&str; 10] = [
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// Most tool rounds accepted in `tools.max_rounds`.
pub const MAX_ROUNDS_LIMIT: u32 = 16;

/// `[tools]`: the MCP servers profiles may use and how long their calls may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolsConfig {
    /// Rounds of tool calls in one turn; after the last the model must answer without tools.
    pub max_rounds: u32,
    /// Longest one call may run, in milliseconds (a server's `timeout_ms` wins).
    pub call_timeout_ms: u64,
    /// Longest starting (or reaching) a server and listing its tools may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Servers by name (`[tools.servers.<name>]`), named by profiles in
    /// `adapter_config.tool_servers`.
    pub servers: BTreeMap<String, ToolServerConfig>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            max_rounds: 4,
            call_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            servers: BTreeMap::new(),
        }
    }
}

/// One `[tools.servers.<name>]` table: `command` (stdio) or `url` (streamable HTTP).
/// `Debug` shows the names of `env` variables and `headers`, never their values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolServerConfig {
    /// Program started as a stdio MCP server (found on `PATH` unless a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Variables set in its environment (values may be secrets). A stdio server gets only
    /// these, [`INHERITED_ENV`] and `inherit_env` of the host's environment, never the rest
    /// (the host's API keys and tokens live there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of further host environment variables a stdio server gets as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// URL of a streamable-HTTP MCP endpoint (`http://...` or `https://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers sent with every HTTP request (values may be secrets, e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// This server's call limit in milliseconds; `tools.call_timeout_ms` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The only tools of this server offered to models; every tool when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
}

impl std::fmt::Debug for ToolServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolServerConfig")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("inherit_env", &self.inherit_env)
            .field("url", &self.url.as_deref().map(crate::config::redact_url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout_ms", &self.timeout_ms)
            .field("allow", &self.allow)
            .finish()
    }
}

/// How the host reaches a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// A child process speaking MCP on its stdin and stdout.
    Stdio {
        /// The program.
        command: &'a str,
    },
    /// A streamable-HTTP endpoint.
    Http {
        /// Its URL.
        url: &'a str,
    },
}

impl ToolServerConfig {
    /// The server's transport: exactly one of `command` and `url`.
    pub fn transport(&self) -> Result<Transport<'_>, String> {
        match (self.command.as_deref(), self.url.as_deref()) {
            (Some(command), None) if !command.trim().is_empty() => Ok(Transport::Stdio { command }),
            (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(Transport::Http { url })
            }
            (None, Some(url)) => Err(format!(
                "url must start with http:// or https:// (got '{}')",
                crate::config::redact_url(url)
            )),
            (Some(_), Some(_)) => Err("set command (stdio) or url (HTTP), not both".into()),
            _ => Err("needs command (stdio) or url (streamable HTTP)".into()),
        }
    }

    /// True when the allow-list (if any) lets `tool` through.
    pub fn allows(&self, tool: &str) -> bool {
        self.allow
            .as_ref()
            .map_or(true, |names| names.iter().any(|n| n == tool))
    }
}

impl ToolsConfig {
    /// Values that deserialise but cannot work: the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_ROUNDS_LIMIT).contains(&self.max_rounds) {
            return Err(format!(
                "tools.max_rounds must be 1 to {MAX_ROUNDS_LIMIT}, got {}",
                self.max_rounds
            ));
        }
        if self.call_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err("tools.call_timeout_ms and tools.connect_timeout_ms must be > 0".into());
        }
        for (name, server) in &self.servers {
            if !crate::config::profile::is_valid_id(name) {
                return Err(format!(
                    "tool server name '{name}' is not valid (a-z, 0-9, -)"
                ));
            }
            server
                .transport()
                .map_err(|e| format!("tools.servers.{name}: {e}"))?;
            if server.timeout_ms == Some(0) {
                return Err(format!("tools.servers.{name}.timeout_ms must be > 0"));
            }
        }
        Ok(())
    }

    /// Hide every `env` and `headers` value of the servers in `value` (the config as JSON).
    pub fn redact(value: &mut serde_json::Value) {
        let Some(servers) = value
            .pointer_mut("/tools/servers")
            .and_then(|s| s.as_object_mut())
        else {
            return;
        };
        for server in servers.values_mut() {
            for key in ["env", "headers"] {
                if let Some(map) = server.get_mut(key).and_then(|m| m.as_object_mut()) {
                    map.values_mut().for_each(|v| *v = "***".into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_a_command_or_a_url() {
        let stdio = ToolServerConfig {
            command: Some("mcp-server-time".into()),
            ..Default::default()
        };
        assert_eq!(
            stdio.transport(),
            Ok(Transport::Stdio {
                command: "mcp-server-time"
            })
        );
        let both = ToolServerConfig {
            url: Some("http://127.0.0.1:1/mcp".into()),
            ..stdio.clone()
        };
        assert!(both.transport().unwrap_err().contains("not both"));
        let ftp = ToolServerConfig {
            url: Some("ftp://u:pw@h/mcp".into()),
            ..Default::default()
        };
        let err = ftp.transport().unwrap_err();
        assert!(err.contains("http://") && !err.contains("pw"), "{err}");
        assert!(ToolServerConfig::default().transport().is_err());
    }

    #[test]
    fn debug_and_redaction_hide_env_and_header_values() {
        let mut config = ToolsConfig::default();
        config.servers.insert(
            "remote".into(),
            ToolServerConfig {
                url: Some("https://tools.example/mcp".into()),
                headers: [("X-Team".into(), "team-SECRET".into())].into(),
                env: [("PLAIN".into(), "env-SECRET".into())].into(),
                allow: Some(vec!["echo".into()]),
                ..Default::default()
            },
        );
        let debug = format!("{config:?}");
        assert!(
            debug.contains("X-Team") && !debug.contains("SECRET"),
            "{debug}"
        );
        let mut value = serde_json::json!({ "tools": config });
        ToolsConfig::redact(&mut value);
        let shown = value.to_string();
        assert!(
            shown.contains("X-Team") && !shown.contains("SECRET"),
            "{shown}"
        );
        assert!(config.servers["remote"].allows("echo"));
        assert!(!config.servers["remote"].allows("get-env"));
    }

    #[test]
    fn bounds_are_checked() {
        let mut config = ToolsConfig {
            max_rounds: 0,
            ..Default::default()
        };
        assert!(config.check().unwrap_err().contains("max_rounds"));
        config.max_rounds = 2;
        config
            .servers
            .insert("Bad Name".into(), ToolServerConfig::default());
        assert!(config.check().unwrap_err().contains("Bad Name"));
    }
}
