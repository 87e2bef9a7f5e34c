//! The proxies side by side: per metric one table with a row per proxy and a column per
//! concurrency level, then the host against the bare nginx hop as differences and ratios.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::report::{q_ms, LevelReport, ProxyLeg};

/// The host's name among the proxies.
pub const HOST: &str = "gateway-host";
/// The bare hop's name among the proxies.
pub const NGINX: &str = "nginx";

/// What one side-by-side metric reads from a proxy's leg at a level.
pub struct Metric {
    /// Its table heading.
    pub title: &'static str,
    /// Its key in the `SUMMARY` line.
    pub key: &'static str,
    value: fn(&LevelReport, &ProxyLeg, usize) -> f64,
    /// Whether it is a difference (shown with a sign, compared to nginx's by subtraction).
    pub signed: bool,
}

impl Metric {
    /// The metric of `proxy`'s leg at `level`; `tokens` is the content tokens per answer.
    pub fn value(&self, level: &LevelReport, proxy: &ProxyLeg, tokens: usize) -> f64 {
        (self.value)(level, proxy, tokens)
    }
}

fn added(level: &LevelReport, proxy: &ProxyLeg, q: f64, net: bool) -> f64 {
    let pick = |leg: &crate::load::LegResult| {
        let h = if net { &leg.ttft_net_us } else { &leg.ttft_us };
        q_ms(h, q)
    };
    pick(&proxy.leg) - pick(&level.direct)
}

fn cpu_ms_per_turn(proxy: &ProxyLeg) -> f64 {
    proxy.stats.map_or(f64::NAN, |s| s.cpu_per_1000())
}

fn switches_per_token(proxy: &ProxyLeg, tokens: usize) -> f64 {
    let per_turn = proxy.stats.map_or(f64::NAN, |s| s.switches_per_turn());
    per_turn / tokens.max(1) as f64
}

/// The side-by-side metrics, in table order.
pub const METRICS: [Metric; 7] = [
    Metric {
        title: "added TTFT p50 (ms)",
        key: "added_ttft_p50_ms",
        value: |l, p, _| added(l, p, 0.5, false),
        signed: true,
    },
    Metric {
        title: "added TTFT p99 (ms)",
        key: "added_ttft_p99_ms",
        value: |l, p, _| added(l, p, 0.99, false),
        signed: true,
    },
    Metric {
        title: "added net TTFT p50 (ms)",
        key: "added_net_ttft_p50_ms",
        value: |l, p, _| added(l, p, 0.5, true),
        signed: true,
    },
    Metric {
        title: "added net TTFT p99 (ms)",
        key: "added_net_ttft_p99_ms",
        value: |l, p, _| added(l, p, 0.99, true),
        signed: true,
    },
    Metric {
        title: "CPU ms per turn",
        key: "cpu_ms_per_turn",
        value: |_, p, _| cpu_ms_per_turn(p),
        signed: false,
    },
    Metric {
        title: "context switches per token",
        key: "context_switches_per_token",
        value: |_, p, tokens| switches_per_token(p, tokens),
        signed: false,
    },
    Metric {
        title: "user-space CPU ms per turn",
        key: "user_cpu_ms_per_turn",
        value: |_, p, _| p.stats.map_or(f64::NAN, |s| s.user_cpu_per_turn_ms()),
        signed: false,
    },
];

/// A metric's value as a table cell: `–` when unknown.
pub fn cell(v: f64, signed: bool) -> String {
    match (v.is_finite(), signed) {
        (false, _) => "–".to_owned(),
        (true, true) => format!("{v:+.2}"),
        (true, false) => format!("{v:.2}"),
    }
}

/// `a ÷ b` as a table cell: `–` when unknown.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".to_owned()
    }
}

/// The proxies' names in the order they first ran.
pub fn proxy_names(levels: &[LevelReport]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for proxy in levels.iter().flat_map(|l| &l.proxies) {
        if !names.contains(&proxy.name.as_str()) {
            names.push(&proxy.name);
        }
    }
    names
}

/// A table's heading row, one column per level.
pub fn header(out: &mut String, title: &str, levels: &[LevelReport]) {
    let _ = write!(out, "| {title} |");
    for level in levels {
        let _ = write!(out, " c = {} |", level.concurrency);
    }
    let _ = writeln!(out, "\n| --- |{}", " ---: |".repeat(levels.len()));
}

/// One table per metric (rows: proxies; columns: levels), then the host against nginx.
/// `tokens` is the content tokens per answer.
pub fn tables(levels: &[LevelReport], tokens: usize) -> String {
    let mut out = String::new();
    for metric in &METRICS {
        header(&mut out, metric.title, levels);
        for name in proxy_names(levels) {
            let _ = write!(out, "| {name} |");
            for level in levels {
                let v = level
                    .proxy(name)
                    .map_or(f64::NAN, |p| (metric.value)(level, p, tokens));
                let _ = write!(out, " {} |", cell(v, metric.signed));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    host_vs_nginx_table(&mut out, levels, tokens);
    out
}

fn host_vs_nginx_table(out: &mut String, levels: &[LevelReport], tokens: usize) {
    let pairs: Vec<Option<(&ProxyLeg, &ProxyLeg)>> = levels
        .iter()
        .map(|l| l.proxy(HOST).zip(l.proxy(NGINX)))
        .collect();
    if pairs.iter().all(Option::is_none) {
        return;
    }
    header(out, "gateway-host against nginx", levels);
    for metric in &METRICS {
        let values = |level: &LevelReport, pair: &Option<(&ProxyLeg, &ProxyLeg)>| {
            pair.map(|(host, nginx)| {
                let value = |p| (metric.value)(level, p, tokens);
                (value(host), value(nginx))
            })
        };
        if metric.signed {
            let _ = write!(out, "| {}: host − nginx |", metric.title);
            for (level, pair) in levels.iter().zip(&pairs) {
                let text = values(level, pair).map(|(h, n)| cell(h - n, true));
                let _ = write!(out, " {} |", text.unwrap_or_else(|| "–".to_owned()));
            }
            out.push('\n');
        }
        let _ = write!(out, "| {}: host ÷ nginx |", metric.title);
        for (level, pair) in levels.iter().zip(&pairs) {
            let text = values(level, pair).map(|(h, n)| ratio(h, n));
            let _ = write!(out, " {} |", text.unwrap_or_else(|| "–".to_owned()));
        }
        out.push('\n');
    }
    out.push('\n');
}

/// The side-by-side numbers for the `SUMMARY` line: per proxy, per level, each metric.
pub fn json(levels: &[LevelReport], tokens: usize) -> Value {
    let mut proxies = serde_json::Map::new();
    for name in proxy_names(levels) {
        let rows: Vec<Value> = levels
            .iter()
            .filter_map(|level| {
                let proxy = level.proxy(name)?;
                let mut row = serde_json::Map::new();
                row.insert("concurrency".into(), json!(level.concurrency));
                for metric in &METRICS {
                    let v = metric.value(level, proxy, tokens);
                    row.insert(metric.key.into(), number(v));
                }
                Some(Value::Object(row))
            })
            .collect();
        proxies.insert(name.to_owned(), Value::Array(rows));
    }
    Value::Object(proxies)
}

/// A finite value rounded to three decimals for the `SUMMARY` line, else `null`.
pub fn number(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}
