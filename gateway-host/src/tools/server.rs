//! One configured MCP server: started (or reached) on first use, its tools listed once per
//! connection, started again on the next use after it crashed or closed the connection.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use gateway_core::Secrets;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, Tool};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceError, ServiceExt as _};
use tokio::io::AsyncBufReadExt as _;

use super::config::{ToolServerConfig, Transport, INHERITED_ENV};
use super::ToolError;

/// A configured server and its live connection, if any.
pub(super) struct Server {
    name: String,
    config: ToolServerConfig,
    call_timeout: Duration,
    connect_timeout: Duration,
    /// Its header and env values: masked in its errors, results and stderr lines.
    secrets: Secrets,
    live: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// When the last start failed, and why: callers that were already waiting for that start
    /// get its error instead of each trying (and waiting) again.
    failed: parking_lot::Mutex<Option<(Instant, ToolError)>>,
}

/// A running MCP client session with a server, and the tools it offers (allow-list applied).
pub(super) struct Connection {
    service: RunningService<RoleClient, ()>,
    pub(super) tools: Vec<Tool>,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.service.is_closed() || self.service.peer().is_transport_closed()
    }
}

impl Server {
    pub(super) fn new(
        name: &str,
        config: ToolServerConfig,
        call_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let secrets = Secrets::new(config.headers.values().chain(config.env.values()));
        Self {
            name: name.to_string(),
            secrets,
            config,
            call_timeout,
            connect_timeout,
            live: tokio::sync::Mutex::new(None),
            failed: parking_lot::Mutex::new(None),
        }
    }

    /// The server's name in the config.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The call limit of this server.
    pub(super) fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The live connection; the server is started (or reached) first when there is none or
    /// the last one closed. Concurrent callers wait for one start.
    pub(super) async fn connection(&self) -> Result<Arc<Connection>, ToolError> {
        let asked = Instant::now();
        let mut live = self.live.lock().await;
        if let Some(connection) = live.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        if let Some(error) = self.failed_since(asked) {
            return Err(error);
        }
        if live.take().is_some() {
            tracing::info!(server = %self.name, "tool server connection closed; starting it again");
        }
        let connection = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| ToolError::Unreachable {
                server: self.name.clone(),
                reason: format!("no answer within {} ms", self.connect_timeout.as_millis()),
            })
            .and_then(|connected| connected)
            .inspect_err(|error| {
                *self.failed.lock() = Some((Instant::now(), error.clone()));
            })?;
        let connection = Arc::new(connection);
        *live = Some(connection.clone());
        Ok(connection)
    }

    /// The error of a start that failed after `asked`: the caller waited for that start.
    fn failed_since(&self, asked: Instant) -> Option<ToolError> {
        self.failed
            .lock()
            .as_ref()
            .filter(|(at, _)| *at >= asked)
            .map(|(_, error)| error.clone())
    }

    /// Start or reach the server, initialise the session and list its tools.
    async fn connect(&self) -> Result<Connection, ToolError> {
        let unreachable = |reason: String| ToolError::Unreachable {
            server: self.name.clone(),
            reason: self.scrub(&reason),
        };
        let transport = self.config.transport().map_err(unreachable)?;
        let service = match transport {
            Transport::Stdio { command } => {
                let child = self
                    .spawn(command)
                    .map_err(|e| unreachable(e.to_string()))?;
                ().serve(child).await
            }
            Transport::Http { url } => {
                let config = StreamableHttpClientTransportConfig::with_uri(url)
                    .custom_headers(self.headers().map_err(unreachable)?);
                crate::tools::install_tls_provider();
                ().serve(StreamableHttpClientTransport::from_config(config))
                    .await
            }
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let listed = service
            .peer()
            .list_all_tools()
            .await
            .map_err(|e| unreachable(format!("cannot list its tools: {e}")))?;
        let tools = listed
            .into_iter()
            .filter(|t| self.config.allows(&t.name))
            .collect();
        tracing::debug!(server = %self.name, "tool server connected");
        Ok(Connection { service, tools })
    }

    /// The stdio child: the command with its args and only the environment its config
    /// gives it, stderr passed to the log at debug level, killed when the connection is
    /// dropped.
    fn spawn(&self, command: &str) -> std::io::Result<TokioChildProcess> {
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(&self.config.args).env_clear();
        let inherited = INHERITED_ENV
            .iter()
            .copied()
            .chain(self.config.inherit_env.iter().map(String::as_str));
        for name in inherited {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.envs(&self.config.env).kill_on_drop(true);
        let (child, stderr) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(stderr) = stderr {
            let name = self.name.clone();
            let secrets = self.secrets.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(server = %name, "tool server: {}", secrets.scrub(&line));
                }
            });
        }
        Ok(child)
    }

    /// The configured HTTP headers, marked sensitive.
    fn headers(&self) -> Result<std::collections::HashMap<HeaderName, HeaderValue>, String> {
        self.config
            .headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("header name '{name}' is not valid"))?;
                let mut value = HeaderValue::try_from(value.as_str())
                    .map_err(|_| format!("the value of header '{name}' is not valid"))?;
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect()
    }

    /// Call `tool` with `arguments` within the server's call limit: the result's text, or
    /// the error, with this server's secrets masked. Dropping the future cancels the call
    /// (MCP `notifications/cancelled`).
    pub(super) async fn call(
        &self,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<String, ToolError> {
        match self
            .call_raw(tool, arguments)
            .await
            .and_then(super::result_text)
        {
            Ok(text) => Ok(self.secrets.scrub_owned(text)),
            Err(ToolError::Tool(text)) => Err(ToolError::Tool(self.secrets.scrub_owned(text))),
            Err(other) => Err(other),
        }
    }

    async fn call_raw(
        &self,
        tool: &str,
        arguments: JsonObject,
    ) -> Result<CallToolResult, ToolError> {
        let connection = self.connection().await?;
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let call = connection.service.peer().call_tool(params);
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(result)) => Ok(result),
            Err(_) => Err(ToolError::Timeout {
                ms: self.call_timeout.as_millis() as u64,
            }),
            // An HTTP error status on a session that is still open (a failing server, a
            // proxy in front of it) is this call's failure, not the end of the session.
            Ok(Err(ServiceError::TransportSend(e))) if !connection.is_closed() => {
                Err(ToolError::Failed(self.scrub(&innermost_cause(&e))))
            }
            Ok(Err(ServiceError::TransportClosed | ServiceError::TransportSend(_))) => {
                self.forget(&connection).await;
                Err(ToolError::Closed {
                    server: self.name.clone(),
                })
            }
            Ok(Err(e)) => Err(ToolError::Failed(self.scrub(&e.to_string()))),
        }
    }

    /// Drop `connection` if it is still the live one, so the next use starts the server again.
    async fn forget(&self, connection: &Arc<Connection>) {
        let mut live = self.live.lock().await;
        if live.as_ref().is_some_and(|c| Arc::ptr_eq(c, connection)) {
            *live = None;
        }
    }

    /// `text` without the secrets of this server's config: header and env values (and the
    /// bare token of a `Bearer` header), and the password of its URL.
    fn scrub(&self, text: &str) -> String {
        let text = match &self.config.url {
            Some(url) => text.replace(url.as_str(), &crate::config::redact_url(url)),
            None => text.to_string(),
        };
        self.secrets.scrub_owned(text)
    }
}

/// The message of the innermost cause of `error` (the transport's own message names its Rust
/// types, which mean nothing to a model or a client).
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let innermost = gateway_core::error::causes(error).last().unwrap_or(error);
    innermost.to_string()
}
