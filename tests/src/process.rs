//! A host binary (`gateway-host`, or a binary built on the host such as an example gateway) run
//! as a real process: a clean environment inside a temp dir, its
//! `gateway-host listening on http://…` line, its output and its exit.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Longest wait for an external process to start, print a line or exit (a deadline, not a
/// delay).
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// The first line a serving host prints on stdout, followed by its URL.
pub const LISTENING: &str = "gateway-host listening on ";

/// `serve` on a free loopback port.
pub const SERVE_ANY_PORT: &[&str] = &["serve", "--bind", "127.0.0.1:0"];

/// A command for `bin` with `args`, run inside `dir` with a clean environment (only `PATH`
/// kept), so no `.env`, `gateway.toml` or variable of the developer's checkout is picked up.
pub fn clean_command(bin: &str, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

/// [`clean_command`] for a host whose `profiles/` and `prompts/` folders are in `dir`
/// (`GATEWAY_PROFILES_DIR`, `GATEWAY_PROMPTS_DIR`).
pub fn host_command(bin: &str, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = clean_command(bin, dir, args);
    cmd.env("GATEWAY_PROFILES_DIR", dir.join("profiles"))
        .env("GATEWAY_PROMPTS_DIR", dir.join("prompts"));
    cmd
}

/// A finished process's stdout followed by its stderr, as text.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Text collected from a pipe: one stream's own, and both streams' in arrival order.
#[derive(Clone, Default)]
struct Collected {
    own: Arc<Mutex<String>>,
    all: Arc<Mutex<String>>,
}

/// A running `serve` process whose stdout and stderr are collected in the background. It is
/// killed when dropped, so a failed assertion leaves nothing running.
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`, from the listening line.
    pub url: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    output: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    readers: Vec<JoinHandle<()>>,
}

impl ServeProcess {
    /// Spawn `command` with its stdout and stderr piped here and wait ([`PROCESS_DEADLINE`] at
    /// most) for its first stdout line, which must be the [`LISTENING`] line.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the host process");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let output = Arc::new(Mutex::new(String::new()));
        let (out, err) = (
            Collected {
                all: output.clone(),
                ..Collected::default()
            },
            Collected {
                all: output.clone(),
                ..Collected::default()
            },
        );
        let (tx, lines) = mpsc::channel();
        let (first_tx, first_rx) = mpsc::channel();
        let readers = vec![
            collect(stdout, out.clone(), tx.clone(), Some(first_tx)),
            collect(stderr, err.clone(), tx, None),
        ];
        let mut process = Self {
            child,
            url: String::new(),
            stdout: out.own,
            stderr: err.own,
            output,
            lines,
            readers,
        };
        let first = match first_rx.recv_timeout(PROCESS_DEADLINE) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                process.kill();
                panic!(
                    "no listening line within {PROCESS_DEADLINE:?}; output:\n{}",
                    process.output()
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = process.kill();
                panic!(
                    "stdout closed without a listening line ({status}); output:\n{}",
                    process.output()
                )
            }
        };
        process.url = match first.trim().strip_prefix(LISTENING) {
            Some(url) => url.to_string(),
            None => {
                process.kill();
                panic!(
                    "unexpected first line {first:?}; output:\n{}",
                    process.output()
                )
            }
        };
        process
    }

    /// Block until a line (stdout or stderr) containing `needle` is printed, at most
    /// [`PROCESS_DEADLINE`]; returns that line.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?}; output:\n{}", self.output()),
            }
        }
    }

    /// GET `path` from the process and parse the body as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        crate::client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON body")
    }

    /// Send the signal `name` (e.g. `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Wait for the process to exit ([`PROCESS_DEADLINE`] at most) and for its output to be
    /// read to the end.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the host did not exit");
            // Polling an external process, with a deadline.
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// Kill the process, then [`ServeProcess::wait`] for it.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.wait()
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().clone()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().clone()
    }

    /// Everything printed on stdout and stderr so far, in the order the lines arrived.
    pub fn output(&self) -> String {
        self.output.lock().clone()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read `pipe` line by line on a thread into `into`, sending each line on `lines` and the
/// first one on `first` too.
fn collect(
    pipe: impl Read + Send + 'static,
    into: Collected,
    lines: mpsc::Sender<String>,
    mut first: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            into.own.lock().push_str(&format!("{line}\n"));
            into.all.lock().push_str(&format!("{line}\n"));
            if let Some(first) = first.take() {
                let _ = first.send(line.clone());
            }
            let _ = lines.send(line);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let dir = std::env::temp_dir();
        clean_command("sh", &dir, &["-c", script])
    }

    #[test]
    fn reads_the_listening_line_and_collects_both_streams() {
        let mut process = ServeProcess::spawn(sh(
            "echo 'gateway-host listening on http://127.0.0.1:9'; echo 'a log line' >&2",
        ));
        assert_eq!(process.url, "http://127.0.0.1:9");
        assert!(process.wait().success());
        assert_eq!(
            process.stdout(),
            "gateway-host listening on http://127.0.0.1:9\n"
        );
        assert_eq!(process.stderr(), "a log line\n");
        assert_eq!(process.wait_for_line("log"), "a log line");
    }

    #[test]
    #[should_panic(expected = "unexpected first line \"starting\"")]
    fn another_first_line_fails() {
        ServeProcess::spawn(sh(
            "echo starting; echo 'gateway-host listening on http://x'",
        ));
    }

    #[test]
    #[should_panic(expected = "stdout closed without a listening line")]
    fn exiting_without_a_listening_line_fails_with_the_output() {
        ServeProcess::spawn(sh("echo 'bad config' >&2; exit 3"));
    }
}
