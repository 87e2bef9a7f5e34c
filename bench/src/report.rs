//! Markdown output: the machine, the command, one table per concurrency level, a summary table
//! and a final machine-readable `SUMMARY {json}` line.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::load::LegResult;

/// Counters of a proxy's processes over one leg (only for a proxy the bench started).
#[derive(Debug, Clone, Copy)]
pub struct ProcLegStats {
    /// Peak RSS during the leg (`VmHWM` after resetting it), MiB, summed over the proxy's
    /// processes; lifetime peak if the reset was refused.
    pub peak_rss_mib: f64,
    /// RSS at the end of the leg, MiB.
    pub rss_after_mib: f64,
    /// CPU seconds the proxy used during the leg, warm-up turns included.
    pub cpu_secs: f64,
    /// The share of `cpu_secs` spent in user space (the proxy's own code, not the kernel's),
    /// from clock ticks; NaN when the leg lasted no tick.
    pub user_share: f64,
    /// Context switches of the proxy's threads during the leg (each voluntary one is a
    /// thread that went to sleep and needed a wake-up).
    pub switches: u64,
    /// The voluntary part of `switches`.
    pub voluntary_switches: u64,
    /// Turns the proxy served during the leg, warm-up turns included.
    pub turns: u64,
}

impl ProcLegStats {
    /// CPU seconds per 1,000 turns (milliseconds per turn).
    pub fn cpu_per_1000(&self) -> f64 {
        self.per_turn(self.cpu_secs * 1000.0)
    }

    /// User-space CPU milliseconds per turn: [`Self::cpu_per_1000`] times the user share.
    pub fn user_cpu_per_turn_ms(&self) -> f64 {
        self.cpu_per_1000() * self.user_share
    }

    /// Context switches per turn.
    pub fn switches_per_turn(&self) -> f64 {
        self.per_turn(self.switches as f64)
    }

    /// Voluntary context switches (a thread that went to sleep) per turn.
    pub fn voluntary_per_turn(&self) -> f64 {
        self.per_turn(self.voluntary_switches as f64)
    }

    fn per_turn(&self, total: f64) -> f64 {
        if self.turns == 0 {
            f64::NAN
        } else {
            total / self.turns as f64
        }
    }
}

/// One proxy's leg of a level.
#[derive(Debug)]
pub struct ProxyLeg {
    /// The proxy's name in the summary (`gateway-host`, `nginx`, `litellm`, `proxy`).
    pub name: String,
    /// Its column heading (`via host`, `via nginx`, ...).
    pub label: String,
    /// What the load generator measured through it.
    pub leg: LegResult,
    /// Its processes' counters, when the bench started it.
    pub stats: Option<ProcLegStats>,
}

impl ProxyLeg {
    /// Errors of the leg, warm-up included.
    pub fn errors(&self) -> u64 {
        self.leg.errors + self.leg.warmup_errors
    }
}

/// Everything measured at one concurrency level: the direct leg and each proxy's leg.
#[derive(Debug)]
pub struct LevelReport {
    /// Concurrent workers.
    pub concurrency: usize,
    /// Turns asked per leg.
    pub turns: u64,
    /// The leg straight at the upstream.
    pub direct: LegResult,
    /// The legs through the proxies, in the order they ran.
    pub proxies: Vec<ProxyLeg>,
}

impl LevelReport {
    /// The leg through the proxy called `name`, if it ran at this level.
    pub fn proxy(&self, name: &str) -> Option<&ProxyLeg> {
        self.proxies.iter().find(|p| p.name == name)
    }
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

/// One table row per quantile of a latency histogram: direct, then each proxy and what it
/// added, in milliseconds.
fn percentile_rows(
    out: &mut String,
    label: &str,
    histogram: impl Fn(&LegResult) -> &Histogram<u64>,
    level: &LevelReport,
    quantiles: &[(&str, f64)],
) {
    for &(name, q) in quantiles {
        let dv = q_ms(histogram(&level.direct), q);
        let _ = write!(out, "| {label} {name} (ms) | {} |", ms(dv));
        for proxy in &level.proxies {
            let pv = q_ms(histogram(&proxy.leg), q);
            let _ = write!(out, " {} | {} |", ms(pv), signed_ms(pv - dv));
        }
        out.push('\n');
    }
}

/// A row with the direct leg's cell and one cell per proxy (its "added" cell left empty).
fn plain_row(out: &mut String, label: &str, direct: &str, cells: impl Iterator<Item = String>) {
    let _ = write!(out, "| {label} | {direct} |");
    for cell in cells {
        let _ = write!(out, " {cell} | |");
    }
    out.push('\n');
}

/// A row of the proxies' process counters (blank for a proxy the bench did not start).
fn stats_row(
    out: &mut String,
    label: &str,
    level: &LevelReport,
    cell: impl Fn(&ProcLegStats) -> String,
) {
    if level.proxies.iter().any(|p| p.stats.is_some()) {
        let cells = level.proxies.iter().map(|p| p.stats.as_ref().map(&cell));
        plain_row(out, label, "", cells.map(Option::unwrap_or_default));
    }
}

/// One Markdown table for one concurrency level: the direct leg, then each proxy's leg and
/// what it added.
pub fn level_table(level: &LevelReport, paced: bool) -> String {
    let d = &level.direct;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {}oncurrency {} ({} turns per leg asked)\n",
        if paced { "Paced, c" } else { "C" },
        level.concurrency,
        level.turns
    );
    let _ = write!(out, "| metric | direct |");
    for proxy in &level.proxies {
        let _ = write!(out, " {} | added |", proxy.label);
    }
    let _ = writeln!(
        out,
        "\n| --- | ---: |{}",
        " ---: | ---: |".repeat(level.proxies.len())
    );
    let legs = || level.proxies.iter().map(|p| &p.leg);
    let completed = legs().map(|l| l.completed.to_string());
    plain_row(
        &mut out,
        "completed turns",
        &d.completed.to_string(),
        completed,
    );
    let rate = legs().map(|l| format!("{:.0}", l.turns_per_sec()));
    let direct_rate = format!("{:.0}", d.turns_per_sec());
    plain_row(&mut out, "completed turns/s", &direct_rate, rate);
    const P50_P90_P99: [(&str, f64); 3] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)];
    percentile_rows(&mut out, "TTFT", |l| &l.ttft_us, level, &P50_P90_P99);
    if !d.ttft_net_us.is_empty() || legs().any(|l| !l.ttft_net_us.is_empty()) {
        let label = "TTFT net of upstream think";
        percentile_rows(&mut out, label, |l| &l.ttft_net_us, level, &P50_P90_P99);
    }
    let p50_p99 = [("p50", 0.5), ("p99", 0.99)];
    percentile_rows(&mut out, "full turn", |l| &l.total_us, level, &p50_p99);
    plain_row(&mut out, "errors", &errors_cell(d), legs().map(errors_cell));
    stats_row(&mut out, "proxy peak RSS (MiB)", level, |h| {
        format!("{:.1} (after: {:.1})", h.peak_rss_mib, h.rss_after_mib)
    });
    stats_row(&mut out, "proxy CPU s / 1,000 turns", level, |h| {
        format!(
            "{:.3} ({:.2} s for {} turns)",
            h.cpu_per_1000(),
            h.cpu_secs,
            h.turns
        )
    });
    stats_row(&mut out, "proxy context switches / turn", level, |h| {
        format!(
            "{:.1} ({:.1} voluntary)",
            h.switches_per_turn(),
            h.voluntary_per_turn()
        )
    });
    let limited: Vec<&str> = std::iter::once(("direct", d))
        .chain(level.proxies.iter().map(|p| (p.label.as_str(), &p.leg)))
        .filter(|(_, leg)| leg.hit_time_limit)
        .map(|(name, _)| name)
        .collect();
    if !limited.is_empty() {
        let _ = writeln!(
            out,
            "\n(time limit reached: {}; fewer turns than asked)",
            limited.join(", ")
        );
    }
    out
}

/// The one-row-per-level summary table of the proxy called `name`.
pub fn summary_table(levels: &[LevelReport], name: &str) -> String {
    let Some(label) = levels.iter().find_map(|l| l.proxy(name)).map(|p| &p.label) else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| concurrency | turns/s direct | turns/s {label} | TTFT p50 direct | TTFT p50 {label} | TTFT p99 direct | TTFT p99 {label} | added TTFT p50 | added TTFT p99 | added net TTFT p50 | added net TTFT p99 | full p99 direct | full p99 {label} | errors | peak RSS MiB | CPU s/1k turns |"
    );
    let _ = writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for l in levels {
        let Some(proxy) = l.proxy(name) else { continue };
        let (d, p) = (&l.direct, &proxy.leg);
        let (d50, p50) = (q_ms(&d.ttft_us, 0.5), q_ms(&p.ttft_us, 0.5));
        let (d99, p99) = (q_ms(&d.ttft_us, 0.99), q_ms(&p.ttft_us, 0.99));
        let added_net = |q: f64| signed_ms(q_ms(&p.ttft_net_us, q) - q_ms(&d.ttft_net_us, q));
        let (rss, cpu) = match &proxy.stats {
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
            d.errors + d.warmup_errors + proxy.errors(),
            rss,
            cpu
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

fn stats_json(stats: &ProcLegStats) -> Value {
    json!({
        "peak_rss_mib": finite(stats.peak_rss_mib),
        "rss_after_mib": finite(stats.rss_after_mib),
        "cpu_secs": finite(stats.cpu_secs),
        "cpu_secs_per_1000_turns": finite(stats.cpu_per_1000()),
        "cpu_user_share": finite(stats.user_share),
        "context_switches_per_turn": finite(stats.switches_per_turn()),
        "voluntary_context_switches_per_turn": finite(stats.voluntary_per_turn()),
    })
}

/// JSON of one level for the `SUMMARY` line: `proxy` and `host` are the first proxy's leg
/// and counters (the host, or `--proxy-url`); `proxies` lists every proxy's, named.
pub fn level_json(level: &LevelReport) -> Value {
    let first = level.proxies.first();
    json!({
        "concurrency": level.concurrency,
        "direct": leg_json(&level.direct),
        "proxy": first.map(|p| leg_json(&p.leg)),
        "host": first.and_then(|p| p.stats.as_ref()).map(stats_json),
        "proxies": level.proxies.iter().map(|p| json!({
            "name": p.name,
            "leg": leg_json(&p.leg),
            "process": p.stats.as_ref().map(stats_json),
        })).collect::<Vec<_>>(),
    })
}

/// Machine facts for the header: CPU count and model, kernel, memory, load average, date.
pub fn machine_info() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // The machine's CPUs, not this process's share of them (`--proxy-cpus` narrows that).
    let nproc = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
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
        "- date: {}\n- machine: {nproc} CPUs, {cpu}, {mem} RAM, Linux {kernel}\n- load average at start (1/5/15 min): {load}",
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
