//! Real MCP servers for the tool tests, and scripted upstream answers that ask for tool calls.
//!
//! The servers are the reference ones, installed by `scripts/test.sh`: `mcp-server-time`
//! (PyPI, run as `python3 -m mcp_server_time`) and `@modelcontextprotocol/server-everything`
//! (npm, pinned in `integrations/mcp-servers/package-lock.json`).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::{chunk, Reply, DEADLINE};

/// `dist/index.js` of the npm server-everything; fails with how to install it when missing.
pub fn everything_js() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../integrations/mcp-servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        path.is_file(),
        "the MCP test server is not installed: run scripts/test.sh, or \
         (cd integrations/mcp-servers && npm ci)"
    );
    path
}

/// Fails with how to install it unless `python3 -m mcp_server_time` can run.
pub fn require_time_server() {
    let found = Command::new("python3")
        .args(["-c", "import mcp_server_time"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the MCP time server is not installed: run scripts/test.sh, or \
         python3 -m pip install -r integrations/requirements-test.txt"
    );
}

/// `[tools.servers.<name>]` of the time server over stdio.
pub fn time_server() -> Value {
    require_time_server();
    json!({"command": "python3", "args": ["-m", "mcp_server_time", "--local-timezone", "Etc/UTC"]})
}

/// `[tools.servers.<name>]` of server-everything over stdio.
pub fn everything_stdio() -> Value {
    json!({"command": "node", "args": [everything_js(), "stdio"]})
}

/// server-everything over stdio through `sh`, which writes the server's pid to `pid_file`
/// first (`exec` keeps the pid), so a test can kill it.
pub fn everything_stdio_with_pid(pid_file: &Path) -> Value {
    let script = format!(
        "echo $$ > '{}'; exec node '{}' stdio",
        pid_file.display(),
        everything_js().display()
    );
    json!({"command": "sh", "args": ["-c", script]})
}

/// server-everything serving streamable HTTP on 127.0.0.1; killed when dropped.
pub struct EverythingHttp {
    child: Child,
    /// `http://127.0.0.1:<port>/mcp`.
    pub url: String,
}

impl EverythingHttp {
    /// Start it on a free port and wait until it says it listens (at most six times
    /// [`DEADLINE`]: node starts slowly on a loaded machine).
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new("node")
            .arg(everything_js())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on port") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(DEADLINE * 6)
            .expect("server-everything listens on its port");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A streamed answer as OpenAI sends one with tool calls: the role chunk, `text` (if any),
/// each call as a head chunk (id, name) and an arguments chunk, `finish_reason:
/// "tool_calls"` and `[DONE]`. `calls` are (id, name, arguments text).
pub fn tool_calls(text: &str, calls: &[(&str, &str, &str)]) -> Reply {
    let mut body = chunk(json!({"role": "assistant", "content": ""}), None);
    if !text.is_empty() {
        body.push_str(&chunk(json!({"content": text}), None));
    }
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        let head = json!({"index": index, "id": id, "type": "function",
                          "function": {"name": name, "arguments": ""}});
        body.push_str(&chunk(json!({"tool_calls": [head]}), None));
        let rest = json!({"index": index, "function": {"arguments": arguments}});
        body.push_str(&chunk(json!({"tool_calls": [rest]}), None));
    }
    body.push_str(&chunk(json!({}), Some("tool_calls")));
    body.push_str("data: [DONE]\n\n");
    Reply::Sse(body)
}

/// A profile (see [`crate::profile`]) with `features.tools` on and these tool servers.
pub fn tool_profile(id: &str, servers: &[&str]) -> Value {
    let mut profile = crate::profile(id);
    profile["features"] = json!({"tools": true, "canvas": true});
    profile["adapter_config"]["tool_servers"] = json!(servers);
    profile
}

/// The messages of an upstream request whose role is `role`.
pub fn messages_with_role(body: &Value, role: &str) -> Vec<Value> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == role)
        .cloned()
        .collect()
}

/// The names of the tools offered in an upstream request.
pub fn offered_tools(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `action` objects of a list of events.
pub fn actions(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "action")
        .map(|e| e["action"].clone())
        .collect()
}
