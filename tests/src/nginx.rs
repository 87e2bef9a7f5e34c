//! `nginx` (Debian's package) as a round-robin load balancer in front of host processes: a
//! temp `nginx.conf` with `proxy_buffering off` (streams pass through as they are written),
//! run as a child with `-p <tempdir> -c nginx.conf -g 'daemon off;'` (its log in `<tempdir>/error.log`) and
//! stopped on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::process::PROCESS_DEADLINE;

/// A running nginx balancing `http://127.0.0.1:<port>` over loopback backends.
pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

/// A free loopback port (bound, then released for the caller to use).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `nginx` on PATH, else Debian's `/usr/sbin/nginx` (not on a non-root PATH).
fn binary() -> &'static str {
    let on_path = Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        "nginx"
    } else {
        "/usr/sbin/nginx"
    }
}

impl Nginx {
    /// Balance round-robin over `backends` (loopback ports); a backend that refuses the
    /// connection is skipped for the next one.
    ///
    /// # Panics
    /// When nginx is not installed (`apt-get install nginx`) or does not start.
    pub fn round_robin(backends: &[u16]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let servers: String = backends
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=0;\n"))
            .collect();
        let conf = format!(
            "worker_processes 1;\n\
             pid nginx.pid;\n\
             error_log error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path tmp;\n\
               proxy_temp_path tmp;\n\
               upstream replicas {{\n{servers}    keepalive 16;\n  }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{\n\
                   proxy_pass http://replicas;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_buffering off;\n\
                   proxy_read_timeout 120s;\n\
                   proxy_next_upstream error;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        std::fs::create_dir(dir.path().join("tmp")).expect("nginx temp dir");
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("write nginx.conf");
        let prefix = format!("{}/", dir.path().display());
        let child = Command::new(binary())
            .args(["-e", "error.log", "-p", &prefix, "-c", "nginx.conf"])
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nginx must be installed (apt-get install nginx): {e}"));
        let deadline = Instant::now() + PROCESS_DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            // Polling an external process's port, with a deadline.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would leave them running).
        let stopped = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
