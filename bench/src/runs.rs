//! Repeated paced runs (`--paced-runs`): one run's numbers move by more than the gaps being
//! judged, so every metric gets its median and range across the runs, per proxy and level,
//! and each live-pace target is counted in the runs that met it.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::compare::{self, Metric, HOST, METRICS, NGINX};
use crate::report::LevelReport;

/// The levels of each run, in run order; every run has the same levels in the same order
/// (a run that fails ends the phase).
pub struct Runs<'a> {
    /// Each run's levels.
    pub runs: &'a [Vec<LevelReport>],
    /// Content tokens per answer.
    pub tokens: usize,
}

/// A live-pace target of the host at one level, judged in each run.
struct Target {
    label: &'static str,
    key: &'static str,
    /// The metric it reads ([`METRICS`] index).
    metric: usize,
    /// Whether the host's value meets it, given nginx's in the same run when there is one;
    /// `None` when it cannot be judged.
    holds: fn(host: f64, nginx: Option<f64>) -> Option<bool>,
}

const P50: usize = 0;
const P99: usize = 1;
const CPU: usize = 4;

/// The live-pace targets: close to the bare hop at every level, and a bounded tail on its own.
const TARGETS: [Target; 4] = [
    Target {
        label: "added TTFT p50 within 0.3 ms of nginx's",
        key: "p50_within_0_3_ms_of_nginx",
        metric: P50,
        holds: |h, n| Some(h - n? <= 0.3),
    },
    Target {
        label: "added TTFT p99 within 1 ms of nginx's",
        key: "p99_within_1_ms_of_nginx",
        metric: P99,
        holds: |h, n| Some(h - n? <= 1.0),
    },
    Target {
        label: "CPU per turn at most 1.5× nginx's",
        key: "cpu_at_most_1_5x_nginx",
        metric: CPU,
        holds: |h, n| Some(h <= 1.5 * n?),
    },
    Target {
        label: "added TTFT p99 under 5 ms",
        key: "p99_under_5_ms",
        metric: P99,
        holds: |h, _| Some(h < 5.0),
    },
];

/// Median, lowest and highest of the finite values, if any.
fn spread(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some((median, values[0], values[n - 1]))
}

fn spread_cell(values: Vec<f64>, signed: bool) -> String {
    match spread(values) {
        Some((median, low, high)) => format!(
            "{} ({} … {})",
            compare::cell(median, signed),
            compare::cell(low, signed),
            compare::cell(high, signed)
        ),
        None => "–".to_owned(),
    }
}

fn spread_json(values: Vec<f64>) -> Value {
    match spread(values) {
        Some((median, low, high)) => json!({
            "median": compare::number(median),
            "min": compare::number(low),
            "max": compare::number(high),
        }),
        None => Value::Null,
    }
}

impl Runs<'_> {
    /// The first run's levels: the columns of every table.
    fn columns(&self) -> &[LevelReport] {
        self.runs.first().map_or(&[], Vec::as_slice)
    }

    /// `metric` of the proxy `name` at level `index` in each run it ran in.
    fn values(&self, metric: &Metric, name: &str, index: usize) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|run| {
                let level = run.get(index)?;
                Some(metric.value(level, level.proxy(name)?, self.tokens))
            })
            .collect()
    }

    /// `metric` of the host and of nginx at level `index`, in each run where both ran.
    fn pairs(&self, metric: &Metric, index: usize) -> Vec<(f64, f64)> {
        self.runs
            .iter()
            .filter_map(|run| {
                let level = run.get(index)?;
                let value = |name| Some(metric.value(level, level.proxy(name)?, self.tokens));
                Some((value(HOST)?, value(NGINX)?))
            })
            .collect()
    }

    /// Runs in which `target` held at level `index`, and runs in which it could be judged.
    fn count(&self, target: &Target, index: usize) -> (usize, usize) {
        let metric = &METRICS[target.metric];
        let verdicts: Vec<bool> = self
            .runs
            .iter()
            .filter_map(|run| {
                let level = run.get(index)?;
                let host = metric.value(level, level.proxy(HOST)?, self.tokens);
                let nginx = level
                    .proxy(NGINX)
                    .map(|p| metric.value(level, p, self.tokens));
                if !host.is_finite() {
                    return None;
                }
                (target.holds)(host, nginx.filter(|v| v.is_finite()))
            })
            .collect();
        (
            verdicts.iter().filter(|&&held| held).count(),
            verdicts.len(),
        )
    }

    /// Markdown: each metric's median (lowest … highest) per proxy and level, the host
    /// against nginx the same way, and the targets counted in runs.
    pub fn tables(&self) -> String {
        let columns = self.columns();
        let mut out = String::new();
        for metric in &METRICS {
            compare::header(&mut out, metric.title, columns);
            for name in compare::proxy_names(columns) {
                let _ = write!(out, "| {name} |");
                for index in 0..columns.len() {
                    let cell = spread_cell(self.values(metric, name, index), metric.signed);
                    let _ = write!(out, " {cell} |");
                }
                out.push('\n');
            }
            out.push('\n');
        }
        self.host_vs_nginx_table(&mut out);
        self.targets_table(&mut out);
        out
    }

    fn host_vs_nginx_table(&self, out: &mut String) {
        let columns = self.columns();
        compare::header(out, "gateway-host against nginx, per run", columns);
        for metric in &METRICS {
            if metric.signed {
                self.pair_row(out, metric, "host − nginx", |h, n| Some(h - n), true);
            }
            let ratio = |h: f64, n: f64| (n > 0.0).then(|| h / n);
            self.pair_row(out, metric, "host ÷ nginx", ratio, false);
        }
        out.push('\n');
    }

    /// One row of the host against nginx: `combine` of each run's pair, as a spread.
    fn pair_row(
        &self,
        out: &mut String,
        metric: &Metric,
        label: &str,
        combine: impl Fn(f64, f64) -> Option<f64>,
        signed: bool,
    ) {
        let _ = write!(out, "| {}: {label} |", metric.title);
        for index in 0..self.columns().len() {
            let pairs = self.pairs(metric, index).into_iter();
            let values = pairs.filter_map(|(h, n)| combine(h, n)).collect();
            let _ = write!(out, " {} |", spread_cell(values, signed));
        }
        out.push('\n');
    }

    fn targets_table(&self, out: &mut String) {
        let columns = self.columns();
        compare::header(out, "runs that met each target (gateway-host)", columns);
        for target in &TARGETS {
            let _ = write!(out, "| {} |", target.label);
            for index in 0..columns.len() {
                let (met, judged) = self.count(target, index);
                if judged == 0 {
                    out.push_str(" – |");
                } else {
                    let _ = write!(out, " {met} of {judged} |");
                }
            }
            out.push('\n');
        }
        out.push('\n');
    }

    /// The same numbers for the `SUMMARY` line.
    pub fn json(&self) -> Value {
        let columns = self.columns();
        let levels: Vec<Value> = (0..columns.len())
            .map(|index| self.level_json(index, &columns[index]))
            .collect();
        json!({ "runs": self.runs.len(), "levels": levels })
    }

    fn level_json(&self, index: usize, level: &LevelReport) -> Value {
        let mut proxies = serde_json::Map::new();
        for name in compare::proxy_names(std::slice::from_ref(level)) {
            let metrics: serde_json::Map<String, Value> = METRICS
                .iter()
                .map(|m| (m.key.to_owned(), spread_json(self.values(m, name, index))))
                .collect();
            proxies.insert(name.to_owned(), Value::Object(metrics));
        }
        let mut host_vs_nginx = serde_json::Map::new();
        for metric in &METRICS {
            let pairs = self.pairs(metric, index);
            let ratios = pairs.iter().filter(|p| p.1 > 0.0).map(|(h, n)| h / n);
            host_vs_nginx.insert(
                format!("{}_ratio", metric.key),
                spread_json(ratios.collect()),
            );
            if metric.signed {
                let diffs = pairs.iter().map(|(h, n)| h - n).collect();
                host_vs_nginx.insert(format!("{}_diff", metric.key), spread_json(diffs));
            }
        }
        let targets: serde_json::Map<String, Value> = TARGETS
            .iter()
            .map(|t| {
                let (met, judged) = self.count(t, index);
                (t.key.to_owned(), json!({ "met": met, "judged": judged }))
            })
            .collect();
        json!({
            "concurrency": level.concurrency,
            "proxies": proxies,
            "host_vs_nginx": host_vs_nginx,
            "targets": targets,
        })
    }
}

/// The side-by-side rows of every run in one object, each row naming its `run` (from 1).
pub fn side_by_side_json(runs: &[Vec<LevelReport>], tokens: usize) -> Value {
    let mut merged = serde_json::Map::new();
    for (number, levels) in (1..).zip(runs) {
        let Value::Object(proxies) = compare::json(levels, tokens) else {
            continue;
        };
        for (name, rows) in proxies {
            let entry = merged
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()));
            let (Value::Array(all), Value::Array(rows)) = (entry, rows) else {
                continue;
            };
            for mut row in rows {
                row["run"] = json!(number);
                all.push(row);
            }
        }
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_middle_of_finite_values() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(vec![4.0, f64::NAN, 1.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(vec![f64::NAN]), None);
    }

    #[test]
    fn targets_need_nginx_except_the_hosts_own_tail() {
        let [p50, p99, cpu, tail] = &TARGETS;
        assert_eq!((p50.holds)(0.7, Some(0.5)), Some(true));
        assert_eq!((p50.holds)(0.9, Some(0.5)), Some(false));
        assert_eq!((p99.holds)(2.0, None), None);
        assert_eq!((cpu.holds)(3.0, Some(2.0)), Some(true));
        assert_eq!((cpu.holds)(3.1, Some(2.0)), Some(false));
        assert_eq!((tail.holds)(4.9, None), Some(true));
        assert_eq!((tail.holds)(5.0, Some(1.0)), Some(false));
    }
}
