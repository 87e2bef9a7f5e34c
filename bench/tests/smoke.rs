//! Runs the benchmark binary in `--smoke` mode against the real `gateway-host` and checks
//! its machine-readable `SUMMARY` line: turns were served at every level, throughput and paced,
//! and none failed; where nginx is installed (CI installs it) the paced levels also ran through
//! the bare nginx hop without errors, and elsewhere nginx is reported as skipped with a reason;
//! the two paced runs are summarised across runs. No timing is asserted.
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

/// Whether the bench will find nginx: `BENCH_NGINX`, `PATH` or the usual sbin folders.
fn nginx_installed() -> bool {
    if let Some(path) = std::env::var_os("BENCH_NGINX") {
        return Path::new(&path).is_file();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .any(|dir| dir.join("nginx").is_file())
}

/// The paced levels' nginx legs ran without errors, or nginx was skipped with a reason.
fn check_nginx(paced: &serde_json::Value, report: &str) {
    let levels = paced["levels"]
        .as_array()
        .expect("paced levels are reported");
    let legs: Vec<&serde_json::Value> = levels
        .iter()
        .filter_map(|level| {
            level["proxies"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "nginx")
        })
        .collect();
    if nginx_installed() {
        assert_eq!(
            legs.len(),
            levels.len(),
            "nginx at every paced level:\n{report}"
        );
        for leg in legs {
            assert!(leg["leg"]["turns"].as_u64().unwrap_or(0) > 0, "{report}");
            assert_eq!(leg["leg"]["errors"], 0, "nginx errors:\n{report}");
            assert_eq!(leg["leg"]["warmup_errors"], 0, "nginx errors:\n{report}");
            assert!(leg["process"]["cpu_secs_per_1000_turns"].is_number());
            assert!(leg["process"]["context_switches_per_turn"].is_number());
        }
        assert!(paced["side_by_side"]["nginx"].is_array(), "{report}");
    } else {
        let skipped = paced["skipped"]
            .as_array()
            .expect("skipped peers are listed");
        let nginx = skipped.iter().find(|s| s["name"] == "nginx");
        let reason = nginx.and_then(|s| s["reason"].as_str()).unwrap_or("");
        assert!(!reason.is_empty(), "nginx skipped with a reason:\n{report}");
    }
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
        4,
        "two paced runs, each of the two concurrency levels"
    );
    for level in paced {
        assert!(level["proxy"]["turns"].as_u64().unwrap_or(0) > 0);
    }
    check_nginx(&summary["paced"], &stdout);
    check_across_runs(&summary["paced"], &stdout);
}

/// Two paced runs are summarised level by level: the host's medians, and with nginx each
/// target judged in both runs.
fn check_across_runs(paced: &serde_json::Value, report: &str) {
    assert_eq!(paced["runs"], 2, "{report}");
    let host_rows = paced["side_by_side"]["gateway-host"]
        .as_array()
        .expect("the host's side-by-side rows");
    let runs: Vec<&serde_json::Value> = host_rows.iter().map(|row| &row["run"]).collect();
    assert_eq!(runs, [1, 1, 2, 2], "each row names its run:\n{report}");
    for row in host_rows {
        let user = row
            .get("user_cpu_ms_per_turn")
            .unwrap_or_else(|| panic!("user-space CPU per turn is reported: {row}"));
        // A leg of a few turns may last no clock tick, so the user-space part may be null.
        if let Some(user) = user.as_f64() {
            let cpu = row["cpu_ms_per_turn"].as_f64().expect("CPU per turn");
            assert!((0.0..=cpu).contains(&user), "{row}");
        } else {
            assert!(user.is_null(), "{row}");
        }
    }
    let levels = paced["across_runs"]["levels"]
        .as_array()
        .expect("the levels across runs");
    assert_eq!(levels.len(), 2, "{report}");
    for level in levels {
        let cpu = &level["proxies"]["gateway-host"]["cpu_ms_per_turn"];
        let (low, median, high) = (&cpu["min"], &cpu["median"], &cpu["max"]);
        let number = |v: &serde_json::Value| v.as_f64().expect("a number");
        assert!(number(low) <= number(median) && number(median) <= number(high));
        let judged = &level["targets"]["p50_within_0_3_ms_of_nginx"]["judged"];
        assert_eq!(judged, if nginx_installed() { 2 } else { 0 }, "{report}");
        assert_eq!(level["targets"]["p99_under_5_ms"]["judged"], 2, "{report}");
    }
    assert!(report.contains("### Across the 2 paced runs"), "{report}");
}
