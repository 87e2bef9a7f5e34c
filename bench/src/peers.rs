//! The peers: other proxies the paced levels run through beside the host, each started by the
//! bench in front of its own mock: a bare `nginx` hop (no buffering, keep-alive upstream pool:
//! the floor for any HTTP proxy) and, when installed, LiteLLM's proxy with one worker.
//!
//! A peer that cannot be found or started is skipped with the reason; it never fails the run.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::ValueEnum;
use rustix::process::{kill_process, Pid, Signal};
use tokio::process::{Child, Command};

use crate::cpus;
use crate::load::{self, Protocol, Target};
use crate::procs::{self, ProxyProcess};

/// A proxy the bench can start beside the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    /// Debian's (or any) `nginx` binary as a bare streaming hop.
    Nginx,
    /// LiteLLM's proxy server (`litellm` from a virtualenv, see `bench/litellm-venv.sh`).
    Litellm,
}

impl PeerKind {
    /// Its name in tables and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Litellm => "litellm",
        }
    }

    /// How long it may take from spawn to its first answered turn.
    fn start_timeout(self) -> Duration {
        match self {
            Self::Nginx => Duration::from_secs(10),
            // Importing LiteLLM's proxy takes seconds, more on a busy machine.
            Self::Litellm => Duration::from_secs(180),
        }
    }
}

/// Where the peers' programs are and how nginx runs.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The `nginx` binary, when given; else searched on `PATH` and in the usual sbin folders.
    pub nginx: Option<PathBuf>,
    /// nginx's `worker_processes` (`auto` or a number).
    pub nginx_workers: String,
    /// The `litellm` executable, when given; else `<target>/litellm-venv/bin/litellm`.
    pub litellm: Option<PathBuf>,
}

/// The program that runs `kind`, or why there is none.
pub fn locate(kind: PeerKind, options: &PeerOptions) -> Result<PathBuf, String> {
    let (given, found, hint) = match kind {
        PeerKind::Nginx => (
            options.nginx.as_deref(),
            find_nginx(),
            "not found on PATH nor in /usr/sbin, /usr/local/sbin, /usr/local/nginx/sbin \
             (apt-get install nginx, or give --nginx)",
        ),
        PeerKind::Litellm => (
            options.litellm.as_deref(),
            Some(crate::host::target_dir().join("litellm-venv/bin/litellm")),
            "not installed (bench/litellm-venv.sh installs it; or give --litellm)",
        ),
    };
    match (given, found) {
        (Some(path), _) if path.is_file() => Ok(path.to_path_buf()),
        (Some(path), _) => Err(format!("{} does not exist", path.display())),
        (None, Some(path)) if path.is_file() => Ok(path),
        (None, _) => Err(hint.to_owned()),
    }
}

fn find_nginx() -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let usual = ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(usual)
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// The `nginx.conf` of a bare hop: every request on `listen` is passed to `upstream` over a
/// pool of HTTP/1.1 keep-alive connections, the answer written to the client as each chunk
/// arrives (`proxy_buffering off`). `dir` holds the pid file and the temp folders.
pub fn nginx_conf(dir: &Path, listen: SocketAddr, upstream: SocketAddr, workers: &str) -> String {
    let dir = dir.display();
    let mut conf = String::new();
    let _ = writeln!(conf, "worker_processes {workers};");
    let _ = writeln!(conf, "daemon off;");
    let _ = writeln!(conf, "pid {dir}/nginx.pid;");
    let _ = writeln!(conf, "error_log {dir}/error.log warn;");
    let _ = writeln!(conf, "events {{ worker_connections 8192; }}");
    let _ = writeln!(conf, "http {{");
    let _ = writeln!(conf, "  access_log off;");
    for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(conf, "  {temp}_temp_path {dir}/{temp}_temp;");
    }
    // A request body (the 12 KB voice prompt and the message) is read whole, in memory, as
    // every LLM proxy must read it before forwarding.
    let _ = writeln!(conf, "  client_body_buffer_size 1m;");
    let _ = writeln!(conf, "  client_max_body_size 16m;");
    let _ = writeln!(conf, "  keepalive_requests 1000000;");
    let _ = writeln!(conf, "  upstream mock {{");
    let _ = writeln!(conf, "    server {upstream};");
    let _ = writeln!(conf, "    keepalive 2048;");
    let _ = writeln!(conf, "    keepalive_requests 1000000;");
    let _ = writeln!(conf, "  }}");
    let _ = writeln!(conf, "  server {{");
    let _ = writeln!(conf, "    listen {listen};");
    let _ = writeln!(conf, "    location / {{");
    let _ = writeln!(conf, "      proxy_pass http://mock;");
    let _ = writeln!(conf, "      proxy_http_version 1.1;");
    let _ = writeln!(conf, "      proxy_set_header Connection \"\";");
    let _ = writeln!(conf, "      proxy_buffering off;");
    let _ = writeln!(conf, "      proxy_read_timeout 300s;");
    let _ = writeln!(conf, "    }}");
    let _ = writeln!(conf, "  }}");
    let _ = writeln!(conf, "}}");
    conf
}

/// LiteLLM's proxy config: one model, `bench`, served by the OpenAI-compatible mock.
pub fn litellm_config(upstream_base_url: &str) -> String {
    format!(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench-model\n      api_base: {upstream_base_url}\n      api_key: sk-bench-not-a-secret\nlitellm_settings:\n  drop_params: true\n  telemetry: false\n"
    )
}

/// A running peer proxy; sent SIGTERM (with its children) when dropped unstopped.
#[derive(Debug)]
pub struct PeerProcess {
    kind: PeerKind,
    child: Child,
    pid: u32,
    base_url: String,
    stderr_log: PathBuf,
    // Holds the config and logs; removed on drop, after the process is stopped.
    dir: tempfile::TempDir,
}

impl PeerProcess {
    /// Starts `kind` from `bin` in front of the mock at `upstream` and waits until a turn
    /// through it succeeds.
    pub async fn start(
        kind: PeerKind,
        bin: &Path,
        upstream: SocketAddr,
        options: &PeerOptions,
        system_prompt: &Arc<str>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gateway-bench-{}-", kind.name()))
            .tempdir()
            .context("creating the peer's temporary directory")?;
        let listen = free_port()?;
        let mut command = match kind {
            PeerKind::Nginx => nginx_command(bin, dir.path(), listen, upstream, options)?,
            PeerKind::Litellm => litellm_command(bin, dir.path(), listen, upstream)?,
        };
        let stderr_log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_log).context("creating the peer's log")?;
        let log_copy = stderr.try_clone().context("sharing the peer's log")?;
        procs::without_proxy_env(&mut command)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_copy))
            .stderr(Stdio::from(stderr));
        let child = cpus::spawn_proxy(&mut command)
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id().context("the peer exited at once")?;
        let mut peer = Self {
            kind,
            child,
            pid,
            base_url: format!("http://{listen}/v1"),
            stderr_log,
            dir,
        };
        let probe = peer.target(system_prompt);
        peer.wait_ready(&probe).await?;
        Ok(peer)
    }

    /// Its base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Which peer this is.
    pub fn kind(&self) -> PeerKind {
        self.kind
    }

    /// The target a leg through this peer sends its turns to: the same request as the direct
    /// leg's (system prompt included), with the model name the peer routes to the mock.
    pub fn target(&self, system_prompt: &Arc<str>) -> Target {
        let model = match self.kind {
            PeerKind::Nginx => "bench-model",
            PeerKind::Litellm => "bench",
        };
        Target {
            url: format!("{}/chat/completions", self.base_url),
            protocol: Protocol::ChatCompletions,
            model: model.to_owned(),
            system_prompt: Some(Arc::clone(system_prompt)),
            api_key: None,
        }
    }

    async fn wait_ready(&mut self, probe: &Target) -> anyhow::Result<()> {
        let client = load::client(1)?;
        let deadline = Instant::now() + self.kind.start_timeout();
        loop {
            let turn = load::run_turn(&client, probe, "bench-probe", "Hello?", PROBE_TIMEOUT);
            let outcome = turn.await;
            if outcome.is_ok() {
                return Ok(());
            }
            self.ensure_alive()?;
            if let (Err(kind), true) = (outcome, Instant::now() >= deadline) {
                bail!(
                    "no turn through {} succeeded within {} s (last: {kind}); its log:\n{}",
                    self.kind.name(),
                    self.kind.start_timeout().as_secs(),
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the peer: SIGTERM (nginx's master then stops its workers), SIGKILL to whatever
    /// is left after 10 s.
    pub async fn stop(mut self) {
        signal_tree(self.pid, Signal::TERM);
        let exited = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if exited.is_err() {
            signal_tree(self.pid, Signal::KILL);
            let _ = self.child.wait().await;
        }
    }
}

/// Upper bound on one readiness probe turn.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

impl ProxyProcess for PeerProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("polling the peer")? {
            bail!(
                "{} exited ({status}); its log:\n{}",
                self.kind.name(),
                self.stderr_tail()
            );
        }
        Ok(())
    }

    fn stderr_tail(&self) -> String {
        let mut tail = procs::tail(&self.stderr_log);
        let error_log = self.dir.path().join("error.log");
        if error_log.is_file() {
            tail.push('\n');
            tail.push_str(&procs::tail(&error_log));
        }
        tail
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal_tree(self.pid, Signal::TERM);
        }
    }
}

/// Sends `signal` to `root` and its descendants (nginx's workers, LiteLLM's helpers).
fn signal_tree(root: u32, signal: Signal) {
    for pid in std::iter::once(root).chain(procs::descendants(root)) {
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, signal);
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago (the peer binds it itself).
fn free_port() -> anyhow::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")
}

fn nginx_command(
    bin: &Path,
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    options: &PeerOptions,
) -> anyhow::Result<Command> {
    let conf_path = dir.join("nginx.conf");
    let conf = nginx_conf(dir, listen, upstream, &options.nginx_workers);
    std::fs::write(&conf_path, conf).context("writing nginx.conf")?;
    let mut command = Command::new(bin);
    // `-e`: the error log before the config is read (else the compiled-in path is opened).
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"));
    Ok(command)
}

fn litellm_command(
    bin: &Path,
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> anyhow::Result<Command> {
    let config_path = dir.join("litellm.yaml");
    let config = litellm_config(&format!("http://{upstream}/v1"));
    std::fs::write(&config_path, config).context("writing litellm.yaml")?;
    let mut command = Command::new(bin);
    command
        .arg("--config")
        .arg(&config_path)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(listen.port().to_string())
        .args(["--num_workers", "1"])
        // The model cost map ships inside the package: no fetch from the internet at start.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOG", "ERROR");
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_is_a_bare_streaming_hop() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let conf = nginx_conf(Path::new("/tmp/x"), listen, upstream, "auto");
        for line in [
            "worker_processes auto;",
            "daemon off;",
            "server 127.0.0.1:9090;",
            "keepalive 2048;",
            "listen 127.0.0.1:8080;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_buffering off;",
            "client_body_temp_path /tmp/x/client_body_temp;",
        ] {
            assert!(conf.contains(line), "missing {line:?} in:\n{conf}");
        }
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn litellm_config_routes_bench_to_the_mock() {
        let config = litellm_config("http://127.0.0.1:9090/v1");
        assert!(config.contains("model_name: bench\n"));
        assert!(config.contains("api_base: http://127.0.0.1:9090/v1\n"));
    }

    #[test]
    fn a_missing_given_program_is_named() {
        let options = PeerOptions {
            nginx: Some(PathBuf::from("/nonexistent/nginx")),
            nginx_workers: "1".to_owned(),
            litellm: Some(PathBuf::from("/nonexistent/litellm")),
        };
        let nginx = locate(PeerKind::Nginx, &options).unwrap_err();
        assert!(nginx.contains("/nonexistent/nginx"), "{nginx}");
        let litellm = locate(PeerKind::Litellm, &options).unwrap_err();
        assert!(litellm.contains("/nonexistent/litellm"), "{litellm}");
    }
}
