//! Counters of a process tree read from `/proc`: memory, CPU time and context switches of a
//! process and all its descendants (nginx's workers, a Python proxy's helpers), summed.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;

/// A proxy process the bench started: sampled around each leg, checked after it.
pub trait ProxyProcess {
    /// Its process id, the root of the tree that is sampled.
    fn pid(&self) -> u32;
    /// Fails, with the end of its log, if it has exited.
    fn ensure_alive(&mut self) -> anyhow::Result<()>;
    /// The last lines of its log.
    fn stderr_tail(&self) -> String;
}

/// Clear the proxy variables from a proxy's environment: its upstream is the bench's mock on
/// 127.0.0.1, reached directly.
pub fn without_proxy_env(command: &mut tokio::process::Command) -> &mut tokio::process::Command {
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .fold(command, |command, name| command.env_remove(name))
}

/// The last 20 lines of the file at `path` (empty if it cannot be read).
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(20);
    lines[from..].join("\n")
}

/// Memory, CPU and scheduling counters of a process tree, summed over its processes (and, for
/// the context switches, over their threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// CPU time of the live threads, seconds (from `schedstat`; user plus system clock ticks
    /// where the kernel has no `schedstat`).
    pub cpu_secs: f64,
    /// Clock ticks of CPU time in user space (`utime`), all threads: coarse (10 ms), but
    /// over a leg it shows what share of `cpu_secs` is the proxy's own code.
    pub user_ticks: u64,
    /// Clock ticks of CPU time in the kernel on the process's behalf (`stime`), all threads.
    pub system_ticks: u64,
    /// Times a thread gave up the CPU to wait (for a socket, a lock, a timer): one per
    /// wake-up it later needed.
    pub voluntary_switches: u64,
    /// Times a thread was taken off the CPU while it still had work.
    pub involuntary_switches: u64,
}

impl ProcSample {
    /// Reads the counters of `pid` alone.
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        let threads = thread_counters(pid);
        let (user_ticks, system_ticks) = cpu_ticks(&stat)?;
        let ticks_secs = (user_ticks + system_ticks) as f64 / clock_ticks_per_sec();
        Ok(Self {
            rss_kib: status_field(&status, "VmRSS:"),
            hwm_kib: status_field(&status, "VmHWM:"),
            cpu_secs: threads.cpu_ns.map_or(ticks_secs, |ns| ns as f64 / 1e9),
            user_ticks,
            system_ticks,
            voluntary_switches: threads.voluntary,
            involuntary_switches: threads.involuntary,
        })
    }

    /// Reads the counters of `root` and every live descendant of it, summed. Fails only if
    /// `root` itself cannot be read (a child that exits meanwhile is skipped).
    pub fn read_tree(root: u32) -> anyhow::Result<Self> {
        let mut total = Self::read(root)?;
        for pid in descendants(root) {
            if let Ok(sample) = Self::read(pid) {
                total.add(&sample);
            }
        }
        Ok(total)
    }

    /// Context switches of all kinds.
    pub fn switches(&self) -> u64 {
        self.voluntary_switches + self.involuntary_switches
    }

    fn add(&mut self, other: &Self) {
        self.rss_kib += other.rss_kib;
        self.hwm_kib += other.hwm_kib;
        self.cpu_secs += other.cpu_secs;
        self.user_ticks += other.user_ticks;
        self.system_ticks += other.system_ticks;
        self.voluntary_switches += other.voluntary_switches;
        self.involuntary_switches += other.involuntary_switches;
    }
}

/// Resets the peak-RSS counter (`VmHWM`) of `root` and its descendants so a later sample
/// shows the peak of one phase. Returns false where the kernel does not allow it.
pub fn reset_peak_rss(root: u32) -> bool {
    std::iter::once(root)
        .chain(descendants(root))
        .all(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
}

/// The first number of a `/proc/<pid>/status` line starting with `name`, or 0.
fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The fields of a `/proc/<pid>/stat` line after `(comm)`, which may itself hold spaces: the
/// state (field 3) is index 0, the parent pid (4) index 1, utime (14) and stime (15) 11 and 12.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
}

/// User and system clock ticks (`utime`, `stime`) of a `/proc/<pid>/stat` line.
fn cpu_ticks(stat: &str) -> anyhow::Result<(u64, u64)> {
    let fields = stat_fields(stat).context("parsing /proc/<pid>/stat")?;
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    Ok((ticks(11), ticks(12)))
}

/// Counters summed over the live threads of a process.
#[derive(Debug, Default)]
struct ThreadCounters {
    /// CPU time from `schedstat`, nanoseconds (`None` where the kernel has no `schedstat`).
    cpu_ns: Option<u64>,
    voluntary: u64,
    involuntary: u64,
}

/// CPU time and context switches of all threads of `pid` (the process's own `status` counts
/// only its main thread). `schedstat` counts CPU time in nanoseconds, where `stat` counts it in
/// clock ticks of 10 ms: too coarse for a leg of 20 turns of a few milliseconds each.
fn thread_counters(pid: u32) -> ThreadCounters {
    let mut total = ThreadCounters {
        cpu_ns: Some(0),
        ..ThreadCounters::default()
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return ThreadCounters::default();
    };
    for task in tasks.filter_map(Result::ok) {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total.voluntary += status_field(&status, "voluntary_ctxt_switches:");
        total.involuntary += status_field(&status, "nonvoluntary_ctxt_switches:");
        let run_ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        total.cpu_ns = total.cpu_ns.zip(run_ns).map(|(a, b)| a + b);
    }
    total
}

/// Every live process below `root`, found through the parent pids in `/proc/*/stat`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, parent) in all_parents() {
        children.entry(parent).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// `(pid, parent pid)` of every process `/proc` lists.
fn all_parents() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent = stat_fields(&stat)?.get(1)?.parse().ok()?;
            Some((pid, parent))
        })
        .collect()
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once (100 on every common Linux).
pub fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc_counters() {
        let sample = ProcSample::read(std::process::id()).unwrap();
        assert!(sample.rss_kib > 0);
        assert!(sample.hwm_kib >= sample.rss_kib);
        assert!(sample.switches() > 0);
    }

    #[test]
    fn a_tree_counts_its_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let found = descendants(me).contains(&child.id());
        let alone = ProcSample::read(me).unwrap();
        let tree = ProcSample::read_tree(me).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found, "the child is a descendant");
        assert!(
            tree.rss_kib > alone.rss_kib,
            "the tree adds the child's RSS"
        );
    }

    #[test]
    fn stat_fields_survive_spaces_in_the_name() {
        let stat = "42 (a b) S 7 42 42 0 -1 0 0 0 0 0 5 3 0 0";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[1], "7");
        assert_eq!(cpu_ticks(stat).unwrap(), (5, 3), "utime and stime");
    }
}
