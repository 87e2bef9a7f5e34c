//! Tools over MCP: the servers of `[tools.servers]` (stdio commands started lazily, or
//! streamable-HTTP endpoints), the tools a profile offers a model, and the calls a model asks
//! for. The tool loop of a turn lives in `turn/tool_loop.rs`; this room knows nothing of turns.
//!
//! Inside: `config` (the `[tools]` table), `server` (one server's connection: started on
//! first use, listed once, started again after a crash) and `check` (what `gateway-host
//! check` reports).

pub(crate) mod check;
pub(crate) mod config;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use gateway_core::ToolCall;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{json, Map, Value};

use config::ToolsConfig;
use server::Server;

/// Longest tool result handed to the model and shown in `action` events, in bytes.
pub const MAX_RESULT_BYTES: usize = 32 * 1024;

/// Why a tool call (or reaching its server) failed. Messages go to the model as the tool's
/// result and to clients in `action` events: they never carry a header or env value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The server could not be started or reached, or did not list its tools.
    #[error("tool server '{server}' is unreachable: {reason}")]
    Unreachable {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// The call did not finish within the server's limit (it was cancelled).
    #[error("the tool did not answer within {ms} ms")]
    Timeout {
        /// The limit.
        ms: u64,
    },
    /// The server went away during the call; it is started again on next use.
    #[error("tool server '{server}' closed the connection during the call")]
    Closed {
        /// Server name.
        server: String,
    },
    /// The server answered the call with a protocol error.
    #[error("the tool call failed: {0}")]
    Failed(String),
    /// The tool reported an error (`isError`), with its text.
    #[error("{0}")]
    Tool(String),
    /// The model named a tool this turn does not offer.
    #[error("unknown tool '{0}'")]
    Unknown(String),
    /// The model's arguments are not a JSON object.
    #[error("the arguments are not a JSON object: {0}")]
    BadArguments(String),
}

impl ToolError {
    /// Stable cause for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            ToolError::Unreachable { .. } => "unreachable",
            ToolError::Timeout { .. } => "timeout",
            ToolError::Closed { .. } => "server_closed",
            ToolError::Failed(_) => "protocol_error",
            ToolError::Tool(_) => "tool_error",
            ToolError::Unknown(_) => "unknown_tool",
            ToolError::BadArguments(_) => "bad_arguments",
        }
    }
}

/// The host's MCP servers, by name. Cheap to share; connections are made on first use.
pub struct ToolServers {
    servers: BTreeMap<String, Arc<Server>>,
    max_rounds: u32,
}

impl std::fmt::Debug for ToolServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolServers")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ToolServers {
    /// The servers of a (checked) `[tools]` table; nothing is started yet.
    pub fn new(config: &ToolsConfig) -> Self {
        let ms = Duration::from_millis;
        let servers = config
            .servers
            .iter()
            .map(|(name, server)| {
                let call = ms(server.timeout_ms.unwrap_or(config.call_timeout_ms));
                let connect = ms(config.connect_timeout_ms);
                let server = Server::new(name, server.clone(), call, connect);
                (name.clone(), Arc::new(server))
            })
            .collect();
        Self {
            servers,
            max_rounds: config.max_rounds,
        }
    }

    /// Rounds of tool calls in one turn.
    pub fn max_rounds(&self) -> u32 {
        self.max_rounds
    }

    /// True when a server of this name is configured.
    pub fn is_known(&self, name: &str) -> bool {
        self.servers.contains_key(name)
    }

    /// The names of the tools `server` offers (allow-list applied), starting it if needed.
    pub async fn probe(&self, server: &str) -> Result<Vec<String>, ToolError> {
        let Some(server) = self.servers.get(server) else {
            return Err(ToolError::Unreachable {
                server: server.to_string(),
                reason: "not configured in [tools.servers]".into(),
            });
        };
        let connection = server.connection().await?;
        Ok(connection
            .tools
            .iter()
            .map(|t| t.name.to_string())
            .collect())
    }

    /// The tools of the named servers, in order; a tool name offered by two servers goes to
    /// the first. A server that cannot be reached is left out (logged), so the turn still runs.
    pub async fn toolset(&self, names: &[String]) -> ToolSet {
        let reached = futures::future::join_all(
            names
                .iter()
                .filter_map(|name| self.servers.get(name))
                .map(|server| async move { (server, server.connection().await) }),
        )
        .await;
        let mut set = ToolSetInner::default();
        for (server, connection) in reached {
            match connection {
                Ok(connection) => set.add(server, &connection.tools),
                Err(error) => {
                    tracing::warn!(server = %server.name(), %error, "tool server left out of the turn")
                }
            }
        }
        ToolSet(Arc::new(set))
    }
}

/// The tools offered in one turn: their owners and their OpenAI `tools` array.
#[derive(Clone, Default)]
pub struct ToolSet(Arc<ToolSetInner>);

#[derive(Default)]
struct ToolSetInner {
    owners: HashMap<String, Arc<Server>>,
    openai: Vec<Value>,
}

impl ToolSetInner {
    fn add(&mut self, server: &Arc<Server>, tools: &[rmcp::model::Tool]) {
        for tool in tools {
            if let Some(first) = self.owners.get(tool.name.as_ref()) {
                tracing::warn!(tool = %tool.name, server = %server.name(), first = %first.name(),
                    "tool name offered by two servers; the first one keeps it");
                continue;
            }
            self.owners.insert(tool.name.to_string(), server.clone());
            self.openai.push(openai_tool(tool));
        }
    }
}

/// A tool in OpenAI's `tools` form: `{"type": "function", "function": {...}}`.
fn openai_tool(tool: &rmcp::model::Tool) -> Value {
    let mut function = Map::new();
    function.insert("name".into(), tool.name.as_ref().into());
    if let Some(description) = &tool.description {
        function.insert("description".into(), description.as_ref().into());
    }
    function.insert(
        "parameters".into(),
        Value::Object(tool.input_schema.as_ref().clone()),
    );
    json!({"type": "function", "function": function})
}

/// What one call came to: the text the model gets, or the error it gets instead.
#[derive(Debug, Clone)]
pub struct ToolOutcome {
    /// The server that ran it (none for an unknown tool).
    pub server: Option<String>,
    /// The result text, or why it failed.
    pub result: Result<String, ToolError>,
    /// How long the call took.
    pub elapsed: Duration,
}

impl ToolSet {
    /// True when no tool is offered.
    pub fn is_empty(&self) -> bool {
        self.0.openai.is_empty()
    }

    /// The tools as OpenAI's `tools` request field.
    pub fn openai_tools(&self) -> Value {
        Value::Array(self.0.openai.clone())
    }

    /// Run `call`: an unknown tool, arguments that are not a JSON object, a failure of the
    /// server and an `isError` result all come back as `Err` results, never as a panic.
    pub async fn call(&self, call: &ToolCall) -> ToolOutcome {
        let started = Instant::now();
        let owner = self.0.owners.get(&call.name);
        let result = match (owner, arguments(&call.arguments)) {
            (None, _) => Err(ToolError::Unknown(call.name.clone())),
            (Some(_), Err(e)) => Err(e),
            (Some(server), Ok(args)) => server.call(&call.name, args).await,
        };
        ToolOutcome {
            server: owner.map(|s| s.name().to_string()),
            result,
            elapsed: started.elapsed(),
        }
    }

    /// The call limit of the server owning `tool`.
    pub fn timeout_of(&self, tool: &str) -> Option<Duration> {
        self.0.owners.get(tool).map(|s| s.call_timeout())
    }
}

/// The arguments of a call as a JSON object (empty text is no arguments).
pub fn arguments(text: &str) -> Result<Map<String, Value>, ToolError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ToolError::BadArguments(format!("got {other}"))),
        Err(e) => Err(ToolError::BadArguments(e.to_string())),
    }
}

/// The text of a result: its text blocks joined with newlines, other blocks as JSON, the
/// structured content when there is nothing else; an `isError` result is an error.
pub(super) fn result_text(result: CallToolResult) -> Result<String, ToolError> {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(text) => text.text.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        })
        .collect();
    if parts.is_empty() {
        parts.extend(result.structured_content.as_ref().map(Value::to_string));
    }
    let text = truncate(parts.join("\n"));
    if result.is_error == Some(true) {
        return Err(ToolError::Tool(text));
    }
    Ok(text)
}

/// `text` cut to [`MAX_RESULT_BYTES`] at a character boundary, saying so.
fn truncate(mut text: String) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text;
    }
    let mut end = MAX_RESULT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(" [truncated]");
    text
}

/// rustls (under the MCP client's reqwest) needs a process-wide crypto provider: the ring one
/// the rest of the workspace uses. Installing it twice, or after another part did, is fine.
pub(crate) fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_a_json_object() {
        assert_eq!(arguments(" ").unwrap(), Map::new());
        assert_eq!(arguments(r#"{"a":1}"#).unwrap()["a"], 1);
        assert!(matches!(arguments("[1]"), Err(ToolError::BadArguments(_))));
        assert!(matches!(
            arguments("{\"city\": Oslo"),
            Err(ToolError::BadArguments(_))
        ));
    }

    #[test]
    fn long_results_are_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_RESULT_BYTES);
        let cut = truncate(text);
        assert!(cut.ends_with(" [truncated]"));
        assert!(cut.len() <= MAX_RESULT_BYTES + 12);
    }

    #[tokio::test]
    async fn an_unknown_tool_is_an_error_result() {
        let set = ToolSet::default();
        let outcome = set.call(&ToolCall::new("c1", "nope", "{}")).await;
        assert_eq!(outcome.result, Err(ToolError::Unknown("nope".into())));
        assert!(outcome.server.is_none());
    }
}
