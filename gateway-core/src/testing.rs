//! Test helpers shared by the workspace's test suites (feature `test-util`): a throwaway
//! `redis-server` on a loopback port.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on 127.0.0.1 with persistence off, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Start one on a free port and wait (up to 10 s) until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not start: tests cannot go on.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Like [`RedisServer::start`], but clients must authenticate with `password`
    /// (`requirepass`); [`RedisServer::url`] carries it.
    pub fn start_with_password(password: &str) -> Self {
        Self::launch(Some(password.to_string()))
    }

    fn launch(password: Option<String>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        let mut server = Self {
            child: None,
            port,
            password,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command.stdout(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("redis-server must be installed (apt-get install redis-server): {e}")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>/`, with `:<password>@` when one is required.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the server (its data is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
