//! The real `gateway-host` binary as a separate process: finding or building it, a throw-away
//! config directory, spawning it, waiting for it to be ready, and reading its memory and CPU
//! from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::cpus;
use crate::procs::{self, tail, ProcSample, ProxyProcess};

/// The profile id the bench creates and routes to.
pub const PROFILE_ID: &str = "bench";

/// The profile's own `system_prompt`, appended by the host after the voice prompt.
pub const PROFILE_SYSTEM_PROMPT: &str = "Be brief.";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The workspace's target directory (`CARGO_TARGET_DIR` if set).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Finds the host binary: `explicit` if given, else `target/release/gateway-host`, building it
/// with `cargo build --release -p gateway-host` first when it is missing.
pub fn locate_or_build(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--host-bin {} does not exist", path.display());
        }
        // Absolute, because the host runs with its temporary directory as working directory.
        return path
            .canonicalize()
            .with_context(|| format!("resolving --host-bin {}", path.display()));
    }
    let path = target_dir().join("release").join("gateway-host");
    if path.is_file() {
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "{} is missing: running `cargo build --release -p gateway-host` first",
        path.display()
    );
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "gateway-host"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build --release -p gateway-host")?;
    if !status.success() {
        bail!("cargo build --release -p gateway-host failed: {status}");
    }
    if !path.is_file() {
        bail!("{} still missing after the build", path.display());
    }
    Ok(path)
}

/// Strips the lines the host strips (`#` headings) so the direct leg can send the same system
/// prompt the host builds.
pub fn host_system_prompt(raw: &str) -> String {
    let body: Vec<&str> = raw
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect();
    let body = body.join("\n");
    format!("{}\n\n{PROFILE_SYSTEM_PROMPT}", body.trim())
}

/// A temporary directory with `profiles/bench.json` and `prompts/voice-system-prompt.md`,
/// removed on drop.
#[derive(Debug)]
pub struct Workdir {
    root: PathBuf,
}

impl Workdir {
    /// Creates the directory and writes the profile and the prompt into it.
    pub fn create(tag: &str, voice_prompt: &str) -> anyhow::Result<Self> {
        let root = std::env::temp_dir().join(format!(
            "gateway-bench-{}-{tag}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(root.join("profiles"))
            .with_context(|| format!("creating {}", root.display()))?;
        std::fs::create_dir_all(root.join("prompts"))
            .with_context(|| format!("creating {}", root.display()))?;
        let profile = serde_json::json!({
            "id": PROFILE_ID,
            "name": "Bench",
            "adapter": "clawdbot",
            "adapter_config": {"gateway_id": "openai-compat", "sessionKey": "bench-1"},
            "system_prompt": PROFILE_SYSTEM_PROMPT,
        });
        std::fs::write(
            root.join("profiles").join(format!("{PROFILE_ID}.json")),
            serde_json::to_vec_pretty(&profile).context("encoding the bench profile")?,
        )
        .context("writing the bench profile")?;
        std::fs::write(
            root.join("prompts").join("voice-system-prompt.md"),
            voice_prompt,
        )
        .context("writing the voice prompt")?;
        Ok(Self { root })
    }

    /// The directory itself (the host runs with it as working directory).
    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// How to start a host.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// The `gateway-host` binary.
    pub bin: PathBuf,
    /// The upstream base URL (`http://127.0.0.1:PORT/v1`).
    pub upstream_base_url: String,
    /// `GATEWAY_MEMORY__MAX_MESSAGES`.
    pub max_messages: usize,
    /// Extra environment variables (`KEY=VALUE`) passed to the host.
    pub extra_env: Vec<(String, String)>,
}

/// A running host process; killed on drop.
#[derive(Debug)]
pub struct HostProcess {
    child: Child,
    pid: u32,
    base_url: String,
    stderr_log: PathBuf,
}

impl HostProcess {
    /// Spawns `gateway-host serve --bind <bind>` in `workdir`, stdout piped, stderr to a file.
    fn spawn(spec: &HostSpec, workdir: &Workdir, bind: &str) -> anyhow::Result<(Child, PathBuf)> {
        let stderr_log = workdir
            .path()
            .join(format!("host-stderr-{}.log", bind.replace(':', "_")));
        let stderr =
            std::fs::File::create(&stderr_log).context("creating the host's stderr log")?;
        let mut command = Command::new(&spec.bin);
        procs::without_proxy_env(&mut command)
            .args(["serve", "--bind", bind])
            .current_dir(workdir.path())
            .env("RUST_LOG", "warn")
            .env("GATEWAY_PROFILES_DIR", workdir.path().join("profiles"))
            .env("GATEWAY_PROMPTS_DIR", workdir.path().join("prompts"))
            .env("GATEWAY_DEFAULT_PROFILE", PROFILE_ID)
            // Room for the largest level's clients (the default cap is 1,024 connections).
            .env("GATEWAY_SERVER__MAX_CONNECTIONS", "20000")
            .env(
                "GATEWAY_MEMORY__MAX_MESSAGES",
                spec.max_messages.to_string(),
            )
            .env("OPENAI_COMPAT_BASE_URL", &spec.upstream_base_url)
            .env("OPENAI_COMPAT_API_KEY", "sk-bench-not-a-secret")
            .env("OPENAI_COMPAT_MODEL", "bench-model")
            .envs(spec.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let child = cpus::spawn_proxy(&mut command)
            .with_context(|| format!("spawning {}", spec.bin.display()))?;
        Ok((child, stderr_log))
    }

    /// Starts a host on `127.0.0.1:0` and waits (at most 60 s) for its
    /// `gateway-host listening on http://...` line.
    pub async fn start(spec: &HostSpec, workdir: &Workdir) -> anyhow::Result<Self> {
        let (mut child, stderr_log) = Self::spawn(spec, workdir, "127.0.0.1:0")?;
        let pid = child.id().context("the host exited at once")?;
        let stdout = child
            .stdout
            .take()
            .context("the host's stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let line = match line {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                bail!(
                    "the host closed stdout before it was ready (exit: {status:?}); its stderr:\n{}",
                    tail(&stderr_log)
                );
            }
            Err(_) => bail!(
                "the host printed no ready line within 60 s; its stderr:\n{}",
                tail(&stderr_log)
            ),
        };
        let base_url = line
            .trim()
            .strip_prefix("gateway-host listening on ")
            .with_context(|| format!("unexpected ready line from the host: {line:?}"))?
            .trim_end_matches('/')
            .to_owned();
        // Keep draining stdout so the host never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            base_url,
            stderr_log,
        })
    }

    /// The host's base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Memory and CPU counters of the host, now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        ProcSample::read(self.pid)
    }

    /// Stops the host.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl ProxyProcess for HostProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("polling the host")? {
            bail!(
                "the host exited ({status}); its stderr:\n{}",
                tail(&self.stderr_log)
            );
        }
        Ok(())
    }

    fn stderr_tail(&self) -> String {
        tail(&self.stderr_log)
    }
}

/// Start-up times of one host start.
#[derive(Debug, Clone, Copy)]
pub struct StartupSample {
    /// Spawn to the first `GET /healthz` answered 200.
    pub to_healthz: Duration,
}

/// Starts the host `runs` times on a free port and times spawn → first `/healthz` 200,
/// polling every 1 ms with a fresh connection each try.
pub async fn measure_startup(
    spec: &HostSpec,
    workdir: &Workdir,
    runs: usize,
) -> anyhow::Result<Vec<StartupSample>> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .context("building the health-check client")?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let bind = format!("127.0.0.1:{port}");
        let url = format!("http://{bind}/healthz");
        let started = Instant::now();
        let (mut child, stderr_log) = HostProcess::spawn(spec, workdir, &bind)?;
        let deadline = started + Duration::from_secs(60);
        let ready = loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    break Some(started.elapsed());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "the host exited during start-up ({status}); its stderr:\n{}",
                    tail(&stderr_log)
                );
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let _ = child.start_kill();
        let _ = child.wait().await;
        match ready {
            Some(to_healthz) => samples.push(StartupSample { to_healthz }),
            None => bail!("the host never answered {url} within 60 s"),
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_heading_lines() {
        let prompt = host_system_prompt("# Title\nSpeak.\n## Sub\nBriefly.\n");
        assert_eq!(
            prompt,
            format!("Speak.\nBriefly.\n\n{PROFILE_SYSTEM_PROMPT}")
        );
    }
}
