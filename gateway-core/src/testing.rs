//! Test helpers shared by the workspace's test suites (feature `test-util`): a throwaway
//! `redis-server` on a loopback port that a test can kill, pause, resume and restart, with a
//! password, with TLS (a CA and certificate made for it with the `openssl` CLI) or with an
//! append-only file that survives restarts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a [`RedisServer`] runs.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Clients must authenticate with it (`requirepass`); [`RedisServer::url`] carries it.
    pub password: Option<String>,
    /// Serve TLS only, with a throwaway CA and server certificate written into this folder
    /// ([`RedisServer::ca_file`]); the URL is `rediss://`.
    pub tls_dir: Option<PathBuf>,
    /// Keep data in an append-only file in this folder, written on every command
    /// (`appendfsync always`), so a restart loses nothing.
    pub data_dir: Option<PathBuf>,
}

/// A `redis-server` on 127.0.0.1 (persistence off unless asked for), killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    options: RedisOptions,
}

impl RedisServer {
    /// Start one on a free port and wait (up to 10 s) until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not start: tests cannot go on.
    pub fn start() -> Self {
        Self::with(RedisOptions::default())
    }

    /// Like [`RedisServer::start`], but clients must authenticate with `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::with(RedisOptions {
            password: Some(password.to_string()),
            ..RedisOptions::default()
        })
    }

    /// Start one with `options`.
    pub fn with(options: RedisOptions) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        if let Some(dir) = &options.tls_dir {
            make_certificates(dir);
        }
        let mut server = Self {
            child: None,
            port,
            options,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        let port = self.port.to_string();
        command.args(["--bind", "127.0.0.1", "--save", ""]);
        match &self.options.tls_dir {
            Some(dir) => {
                let file = |name: &str| dir.join(name).display().to_string();
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .args(["--tls-cert-file", &file("server.pem")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        match &self.options.data_dir {
            Some(dir) => {
                command
                    .args(["--appendonly", "yes", "--appendfsync", "always"])
                    .arg("--dir")
                    .arg(dir);
            }
            None => {
                command.args(["--appendonly", "no"]);
            }
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        let child = command.stdout(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("redis-server must be installed (apt-get install redis-server): {e}")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            // Polling an external process's port, with a deadline.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>/` (`rediss://` with TLS), with `:<password>@` when one is
    /// required.
    pub fn url(&self) -> String {
        let scheme = match self.options.tls_dir {
            Some(_) => "rediss",
            None => "redis",
        };
        match &self.options.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
        }
    }

    /// The CA certificate (PEM) that signed a TLS server's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.options.tls_dir.as_ref().map(|d| d.join("ca.pem"))
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the server with SIGKILL (without `data_dir`, its data is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (after [`RedisServer::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freeze the process (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Let a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.pid().expect("redis-server is running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused process must run again to die of SIGKILL promptly everywhere.
            self.resume();
        }
        self.stop();
    }
}

/// Write `ca.pem`, `server.pem` and `server.key` into `dir`: a throwaway CA and a server
/// certificate it signed for `127.0.0.1` and `localhost`, valid for a day.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("the openssl CLI is needed for TLS tests: {e}"));
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run(&[
        &["req", "-x509", "-nodes", "-days", "1"][..],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=gateway test CA",
        ],
    ]
    .concat());
    run(&[
        &["req", "-nodes"][..],
        &ec[..],
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write server.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "server.pem",
        "-extfile",
        "server.ext",
    ]);
}
