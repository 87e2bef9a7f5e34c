//! Runs the benchmark binary in `--smoke` mode against the real `gateway-host` and checks
//! its machine-readable `SUMMARY` line: turns were served at every level, throughput and paced,
//! and none failed. No timing is asserted.
//!
//! The host binary is `GATEWAY_HOST_BIN` when set; otherwise `gateway-host` next to this
//! test's `gateway-bench` binary, built first with `cargo build -p gateway-host` in the same
//! profile (`dev`, `release` or `profiling`; a no-op when it is up to date, so a stale host is
//! never benchmarked).

use std::path::{Path, PathBuf};
use std::process::Command;

fn host_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GATEWAY_HOST_BIN") {
        return PathBuf::from(path);
    }
    let bench = Path::new(env!("CARGO_BIN_EXE_gateway-bench"));
    let dir = bench.parent().expect("the bench binary has a directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent");
    // target/<dir>: `debug` is the `dev` profile; `release`, `profiling`, ... are their own.
    let profile = match dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let status = Command::new(cargo)
        .args(["build", "-p", "gateway-host", "--profile", profile])
        .current_dir(workspace)
        .status()
        .expect("running cargo build -p gateway-host");
    assert!(status.success(), "cargo build -p gateway-host failed");
    dir.join("gateway-host")
}

#[test]
fn smoke_run_reports_turns_and_no_errors() {
    let host = host_bin();
    assert!(host.is_file(), "no host binary at {}", host.display());
    let output = Command::new(env!("CARGO_BIN_EXE_gateway-bench"))
        .arg("--smoke")
        .arg("--host-bin")
        .arg(&host)
        .output()
        .expect("running gateway-bench --smoke");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "gateway-bench --smoke failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .unwrap_or_else(|| panic!("no SUMMARY line in:\n{stdout}\n{stderr}"));
    let summary: serde_json::Value = serde_json::from_str(line).expect("SUMMARY is JSON");
    assert_eq!(summary["errors"], 0, "errors reported:\n{stdout}\n{stderr}");
    assert!(
        summary["turns"].as_u64().unwrap_or(0) > 0,
        "no turns:\n{stdout}"
    );
    let levels = summary["levels"].as_array().expect("levels is an array");
    assert_eq!(levels.len(), 2, "smoke runs two concurrency levels");
    for level in levels {
        assert!(level["proxy"]["turns"].as_u64().unwrap_or(0) > 0);
        assert!(level["host"]["cpu_secs_per_1000_turns"].is_number());
    }
    assert!(summary["idle_rss_mib"].as_f64().unwrap_or(0.0) > 0.0);
    let paced = summary["paced"]["levels"]
        .as_array()
        .expect("paced levels are reported");
    assert_eq!(
        paced.len(),
        2,
        "the paced levels repeat the concurrency levels"
    );
    for level in paced {
        assert!(level["proxy"]["turns"].as_u64().unwrap_or(0) > 0);
    }
}
