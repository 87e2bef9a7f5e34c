//! Markdown output: the machine, the command, one table per concurrency level, a summary table
//! and a final machine-readable `SUMMARY {json}` line.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::load::LegResult;

/// Host counters over one proxy leg (only for a host the bench spawned).
#[derive(Debug, Clone, Copy)]
pub struct HostLegStats {
    /// Peak RSS during the leg (`VmHWM` after resetting it), MiB; lifetime peak if the reset
    /// was refused.
    pub peak_rss_mib: f64,
    /// RSS at the end of the leg, MiB.
    pub rss_after_mib: f64,
    /// User plus system CPU seconds the host used during the leg, warm-up turns included.
    pub cpu_secs: f64,
    /// Turns the host served during the leg, warm-up turns included.
    pub turns: u64,
}

impl HostLegStats {
    /// Host CPU seconds per 1,000 turns.
    pub fn cpu_per_1000(&self) -> f64 {
        if self.turns == 0 {
            0.0
        } else {
            self.cpu_secs * 1000.0 / self.turns as f64
        }
    }
}

/// Everything measured at one concurrency level.
#[derive(Debug)]
pub struct LevelReport {
    /// Concurrent workers.
    pub concurrency: usize,
    /// Turns asked per leg.
    pub turns: u64,
    /// The leg straight at the upstream.
    pub direct: LegResult,
    /// The leg through the host or proxy.
    pub proxy: LegResult,
    /// Host counters over the proxy leg, when the bench spawned the host.
    pub host: Option<HostLegStats>,
}

/// Milliseconds of a microsecond histogram quantile.
pub fn q_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `KiB` to `MiB`.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".to_owned()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn signed_ms(v: f64) -> String {
    if v.is_nan() {
        "–".to_owned()
    } else if v.abs() < 10.0 {
        format!("{v:+.2}")
    } else {
        format!("{v:+.1}")
    }
}

fn errors_cell(leg: &LegResult) -> String {
    let mut cell = leg.errors.to_string();
    if leg.warmup_errors > 0 {
        let _ = write!(cell, " (+{} warm-up)", leg.warmup_errors);
    }
    if !leg.error_kinds.is_empty() {
        let kinds: Vec<String> = leg
            .error_kinds
            .iter()
            .take(3)
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = write!(cell, " [{}]", kinds.join("; "));
    }
    cell
}

/// One table row per quantile of a latency histogram: direct, via the proxy, and the added
/// difference, in milliseconds.
fn percentile_rows(
    out: &mut String,
    label: &str,
    direct: &Histogram<u64>,
    proxy: &Histogram<u64>,
    quantiles: &[(&str, f64)],
) {
    for &(name, q) in quantiles {
        let (dv, pv) = (q_ms(direct, q), q_ms(proxy, q));
        let _ = writeln!(
            out,
            "| {label} {name} (ms) | {} | {} | {} |",
            ms(dv),
            ms(pv),
            signed_ms(pv - dv)
        );
    }
}

/// One Markdown table for one concurrency level.
pub fn level_table(level: &LevelReport, proxy_label: &str, paced: bool) -> String {
    let d = &level.direct;
    let p = &level.proxy;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {}oncurrency {} ({} turns per leg asked)\n",
        if paced { "Paced, c" } else { "C" },
        level.concurrency,
        level.turns
    );
    let _ = writeln!(out, "| metric | direct | {proxy_label} | added |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    let _ = writeln!(
        out,
        "| completed turns | {} | {} | |",
        d.completed, p.completed
    );
    let _ = writeln!(
        out,
        "| completed turns/s | {:.0} | {:.0} | |",
        d.turns_per_sec(),
        p.turns_per_sec()
    );
    const P50_P90_P99: [(&str, f64); 3] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)];
    percentile_rows(&mut out, "TTFT", &d.ttft_us, &p.ttft_us, &P50_P90_P99);
    if !d.ttft_net_us.is_empty() || !p.ttft_net_us.is_empty() {
        let label = "TTFT net of upstream think";
        percentile_rows(
            &mut out,
            label,
            &d.ttft_net_us,
            &p.ttft_net_us,
            &P50_P90_P99,
        );
    }
    let p50_p99 = [("p50", 0.5), ("p99", 0.99)];
    percentile_rows(&mut out, "full turn", &d.total_us, &p.total_us, &p50_p99);
    let _ = writeln!(
        out,
        "| errors | {} | {} | |",
        errors_cell(d),
        errors_cell(p)
    );
    if let Some(h) = &level.host {
        let _ = writeln!(
            out,
            "| host peak RSS (MiB) | | {:.1} (after: {:.1}) | |",
            h.peak_rss_mib, h.rss_after_mib
        );
        let _ = writeln!(
            out,
            "| host CPU s / 1,000 turns | | {:.3} ({:.2} s for {} turns) | |",
            h.cpu_per_1000(),
            h.cpu_secs,
            h.turns
        );
    }
    if d.hit_time_limit || p.hit_time_limit {
        let _ = writeln!(
            out,
            "\n(time limit reached: direct {}, {proxy_label} {}; fewer turns than asked)",
            d.hit_time_limit, p.hit_time_limit
        );
    }
    out
}

/// The one-row-per-level summary table.
pub fn summary_table(levels: &[LevelReport], proxy_label: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| concurrency | turns/s direct | turns/s {proxy_label} | TTFT p50 direct | TTFT p50 {proxy_label} | TTFT p99 direct | TTFT p99 {proxy_label} | added TTFT p50 | added TTFT p99 | added net TTFT p50 | added net TTFT p99 | full p99 direct | full p99 {proxy_label} | errors | host peak RSS MiB | host CPU s/1k turns |"
    );
    let _ = writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for l in levels {
        let (d, p) = (&l.direct, &l.proxy);
        let (d50, p50) = (q_ms(&d.ttft_us, 0.5), q_ms(&p.ttft_us, 0.5));
        let (d99, p99) = (q_ms(&d.ttft_us, 0.99), q_ms(&p.ttft_us, 0.99));
        let added_net = |q: f64| signed_ms(q_ms(&p.ttft_net_us, q) - q_ms(&d.ttft_net_us, q));
        let (host_rss, host_cpu) = match &l.host {
            Some(h) => (
                format!("{:.1}", h.peak_rss_mib),
                format!("{:.3}", h.cpu_per_1000()),
            ),
            None => ("–".to_owned(), "–".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            l.concurrency,
            d.turns_per_sec(),
            p.turns_per_sec(),
            ms(d50),
            ms(p50),
            ms(d99),
            ms(p99),
            signed_ms(p50 - d50),
            signed_ms(p99 - d99),
            added_net(0.5),
            added_net(0.99),
            ms(q_ms(&d.total_us, 0.99)),
            ms(q_ms(&p.total_us, 0.99)),
            d.errors + d.warmup_errors + p.errors + p.warmup_errors,
            host_rss,
            host_cpu
        );
    }
    out
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// JSON of one leg for the `SUMMARY` line.
pub fn leg_json(leg: &LegResult) -> Value {
    json!({
        "turns": leg.completed,
        "errors": leg.errors,
        "warmup_errors": leg.warmup_errors,
        "turns_per_sec": finite(leg.turns_per_sec()),
        "ttft_net_ms": {
            "p50": finite(q_ms(&leg.ttft_net_us, 0.5)),
            "p90": finite(q_ms(&leg.ttft_net_us, 0.9)),
            "p99": finite(q_ms(&leg.ttft_net_us, 0.99)),
        },
        "ttft_ms": {
            "p50": finite(q_ms(&leg.ttft_us, 0.5)),
            "p90": finite(q_ms(&leg.ttft_us, 0.9)),
            "p99": finite(q_ms(&leg.ttft_us, 0.99)),
        },
        "full_ms": {
            "p50": finite(q_ms(&leg.total_us, 0.5)),
            "p99": finite(q_ms(&leg.total_us, 0.99)),
        },
        "error_kinds": leg.error_kinds,
    })
}

/// JSON of one level for the `SUMMARY` line.
pub fn level_json(level: &LevelReport) -> Value {
    json!({
        "concurrency": level.concurrency,
        "direct": leg_json(&level.direct),
        "proxy": leg_json(&level.proxy),
        "host": level.host.map(|h| json!({
            "peak_rss_mib": finite(h.peak_rss_mib),
            "rss_after_mib": finite(h.rss_after_mib),
            "cpu_secs": finite(h.cpu_secs),
            "cpu_secs_per_1000_turns": finite(h.cpu_per_1000()),
        })),
    })
}

/// Machine facts for the header: CPU count and model, kernel, memory, load average, date.
pub fn machine_info() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "- date: {}\n- machine: {nproc} CPUs (nproc), {cpu}, {mem} RAM, Linux {kernel}\n- load average at start (1/5/15 min): {load}",
        date()
    )
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("unix time {secs}")
        })
}

/// The command as a user would type it.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).map(|a| shell_quote(&a)).collect();
    if args.is_empty() {
        "cargo run --release -p gateway-bench".to_owned()
    } else {
        format!("cargo run --release -p gateway-bench -- {}", args.join(" "))
    }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:@+".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Seconds with millisecond precision, e.g. `12.345 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(shell_quote("--concurrency"), "--concurrency");
        assert_eq!(shell_quote("1,100"), "1,100");
        assert_eq!(shell_quote("a b"), "'a b'");
    }

    #[test]
    fn quantiles_in_ms() {
        let mut h = crate::load::new_histogram();
        h.record(1500).unwrap();
        assert!((q_ms(&h, 0.5) - 1.5).abs() < 0.01);
        assert!(q_ms(&crate::load::new_histogram(), 0.5).is_nan());
    }
}
