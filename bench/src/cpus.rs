//! `--proxy-cpus`: the proxies (the host, nginx, LiteLLM) on cores of their own, the bench's
//! load generator and mock on the others, so a proxy is neither preempted by the client it
//! has just written to nor measured against the bench's own CPU use.

use std::sync::OnceLock;

use anyhow::{bail, Context as _};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use tokio::process::Child;

/// The proxies' CPUs, once the bench has moved itself off them.
static PROXY_CPUS: OnceLock<Vec<usize>> = OnceLock::new();

/// CPUs `list` names (`1`, `2,3`, `2-3`), checked against `usable`.
pub fn parse(list: &str, usable: &[usize]) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let number = |s: &str| -> anyhow::Result<usize> {
            s.trim()
                .parse()
                .with_context(|| format!("--proxy-cpus: `{part}` is not a CPU number or range"))
        };
        cpus.extend(number(first)?..=number(last)?);
    }
    cpus.sort_unstable();
    cpus.dedup();
    if let Some(cpu) = cpus.iter().find(|cpu| !usable.contains(cpu)) {
        bail!("--proxy-cpus: CPU {cpu} is not one this process may use ({usable:?})");
    }
    if cpus.is_empty() || cpus.len() == usable.len() {
        bail!("--proxy-cpus must leave the bench at least one of the CPUs {usable:?}");
    }
    Ok(cpus)
}

/// The CPUs this process may run on.
pub fn usable() -> anyhow::Result<Vec<usize>> {
    let set = sched_getaffinity(None).context("reading the CPU affinity")?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

/// Moves the calling thread, and so every thread it starts later (the runtime's workers), onto
/// the CPUs of `usable` that are not `proxies`; the proxies started afterwards run on `proxies`.
/// Call it before the runtime is built.
pub fn split(proxies: Vec<usize>, usable: &[usize]) -> anyhow::Result<()> {
    let bench = usable.iter().filter(|cpu| !proxies.contains(cpu));
    sched_setaffinity(None, &set_of(bench)).context("moving the bench off the proxies' CPUs")?;
    PROXY_CPUS
        .set(proxies)
        .map_err(|_| anyhow::anyhow!("the CPUs were already split"))
}

/// The proxies' CPUs, if `--proxy-cpus` split them off.
pub fn proxy_cpus() -> Option<&'static [usize]> {
    PROXY_CPUS.get().map(Vec::as_slice)
}

/// Starts `command` on the proxies' CPUs (where it would start anyway without a split).
pub fn spawn_proxy(command: &mut tokio::process::Command) -> anyhow::Result<Child> {
    match proxy_cpus() {
        Some(cpus) => spawn_on(command, cpus),
        None => Ok(command.spawn()?),
    }
}

/// Starts `command` on `cpus`: the calling thread moves onto them for the spawn, whose child
/// inherits its affinity, and back.
fn spawn_on(command: &mut tokio::process::Command, cpus: &[usize]) -> anyhow::Result<Child> {
    let own = sched_getaffinity(None).context("reading the CPU affinity")?;
    sched_setaffinity(None, &set_of(cpus.iter())).context("moving onto the proxies' CPUs")?;
    let child = command.spawn();
    sched_setaffinity(None, &own).context("moving back off the proxies' CPUs")?;
    Ok(child?)
}

fn set_of<'a>(cpus: impl Iterator<Item = &'a usize>) -> CpuSet {
    let mut set = CpuSet::new();
    cpus.for_each(|&cpu| set.set(cpu));
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_name_the_cpus() {
        let usable = [0, 1, 2, 3];
        assert_eq!(parse("1", &usable).unwrap(), vec![1]);
        assert_eq!(parse("3,1-2", &usable).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn the_bench_keeps_a_cpu_and_only_usable_ones_are_named() {
        let usable = [0, 1];
        let err = |list| parse(list, &usable).unwrap_err().to_string();
        assert!(err("0-1").contains("at least one"), "{}", err("0-1"));
        assert!(err("2").contains("CPU 2 is not one"), "{}", err("2"));
        assert!(err("x").contains("`x` is not a CPU"), "{}", err("x"));
    }

    #[tokio::test]
    async fn a_proxy_starts_on_its_cpus_and_the_bench_stays_where_it_was() {
        let before = usable().unwrap();
        let last = *before.last().unwrap();
        let mut command = tokio::process::Command::new("sleep");
        command.arg("30").kill_on_drop(true);
        let child = spawn_on(&mut command, &[last]).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id().unwrap()));
        let allowed = status.unwrap().lines().find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_owned())
        });
        assert_eq!(allowed, Some(last.to_string()));
        assert_eq!(usable().unwrap(), before);
    }
}
