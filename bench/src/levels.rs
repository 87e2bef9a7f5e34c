//! Running the concurrency levels of one workload: at each level the direct leg, then one leg
//! through each proxy, with the processes of the proxies the bench started sampled around
//! their legs.

use std::time::Duration;

use crate::load::{self, LegConfig, Target};
use crate::procs::{self, ProcSample, ProxyProcess};
use crate::report::{self, mib, LevelReport, ProcLegStats, ProxyLeg};

/// A proxy the legs run through.
pub struct Proxy<'a> {
    /// Its name in the summary (`gateway-host`, `nginx`, `litellm`, `proxy`).
    pub name: String,
    /// Its column heading.
    pub label: String,
    /// Where its legs send their turns.
    pub target: Target,
    /// Its processes, when the bench started it.
    pub process: Option<&'a mut dyn ProxyProcess>,
    /// Levels above this concurrency skip it.
    pub max_concurrency: usize,
    /// Whether its exit ends the run (the host) or only its own legs (a peer).
    pub required: bool,
    /// Why it no longer runs, once it has died.
    pub gone: Option<String>,
}

impl<'a> Proxy<'a> {
    /// A proxy that runs at every level and whose exit ends the run.
    pub fn new(
        name: &str,
        label: &str,
        target: Target,
        process: Option<&'a mut dyn ProxyProcess>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            label: label.to_owned(),
            target,
            process,
            max_concurrency: usize::MAX,
            required: true,
            gone: None,
        }
    }
}

/// The levels of one kind of load.
pub struct Workload<'a> {
    /// Concurrency levels, in order.
    pub concurrency: &'a [usize],
    /// Measured turns per leg at a level.
    pub turns: &'a dyn Fn(usize) -> u64,
    /// Unmeasured turns per worker before each leg at a level.
    pub warmup_turns: &'a dyn Fn(usize) -> u64,
    /// Whether the upstream paces its tokens (only changes the headings).
    pub paced: bool,
    /// Spread of the workers' first measured turns (see [`LegConfig::stagger`]).
    pub stagger: Duration,
    /// Upper bound on the measured part of each leg.
    pub max_duration: Duration,
    /// Upper bound on one turn.
    pub turn_timeout: Duration,
}

/// Errors of a level's direct leg and of the proxies named in `names`, warm-up included.
pub fn level_errors(level: &LevelReport, names: &[&str]) -> u64 {
    let d = &level.direct;
    let proxies = level
        .proxies
        .iter()
        .filter(|p| names.contains(&p.name.as_str()));
    d.errors + d.warmup_errors + proxies.map(ProxyLeg::errors).sum::<u64>()
}

/// Runs each concurrency level of `workload`: the direct leg, then a leg through each proxy
/// that runs at that level; prints each level's table.
pub async fn run_levels(
    workload: &Workload<'_>,
    direct_target: &Target,
    proxies: &mut [Proxy<'_>],
) -> anyhow::Result<Vec<LevelReport>> {
    let mut levels = Vec::new();
    for &concurrency in workload.concurrency {
        let leg = |name: &str| LegConfig {
            name: name.to_owned(),
            concurrency,
            turns: (workload.turns)(concurrency),
            max_duration: workload.max_duration,
            turn_timeout: workload.turn_timeout,
            warmup_turns: (workload.warmup_turns)(concurrency),
            stagger: workload.stagger,
        };
        let kind = if workload.paced { "paced, " } else { "" };
        let config = leg("direct");
        eprintln!(
            "{kind}concurrency {concurrency}: direct leg, {} turns",
            config.turns
        );
        let direct = load::run_leg(direct_target, &config).await?;
        log_leg("direct", &direct);
        let mut legs = Vec::new();
        for proxy in proxies.iter_mut() {
            if proxy.gone.is_some() || concurrency > proxy.max_concurrency {
                continue;
            }
            eprintln!(
                "{kind}concurrency {concurrency}: leg through {}",
                proxy.name
            );
            let measured = run_proxy_leg(proxy, &leg(&proxy.name)).await?;
            log_leg(&proxy.name, &measured.leg);
            legs.push(measured);
        }
        let level = LevelReport {
            concurrency,
            turns: config.turns,
            direct,
            proxies: legs,
        };
        println!("{}", report::level_table(&level, workload.paced));
        levels.push(level);
    }
    Ok(levels)
}

fn log_leg(name: &str, leg: &load::LegResult) {
    eprintln!(
        "  {name}: {} ok, {} errors in {}",
        leg.completed,
        leg.errors,
        report::secs(leg.elapsed)
    );
}

/// One leg through `proxy`, its processes sampled before and after. A peer that died during
/// the leg is marked gone (its later levels skipped); the host's death ends the run.
async fn run_proxy_leg(proxy: &mut Proxy<'_>, config: &LegConfig) -> anyhow::Result<ProxyLeg> {
    let before = match proxy.process.as_deref() {
        Some(p) => {
            if !procs::reset_peak_rss(p.pid()) {
                eprintln!("  (could not reset VmHWM; peak RSS is the lifetime peak)");
            }
            Some(ProcSample::read_tree(p.pid())?)
        }
        None => None,
    };
    let leg = load::run_leg(&proxy.target, config).await?;
    let mut stats = None;
    if let (Some(p), Some(before)) = (proxy.process.as_deref_mut(), before) {
        match p.ensure_alive() {
            Ok(()) => {
                let after = ProcSample::read_tree(p.pid())?;
                let turns = leg.issued() + config.concurrency as u64 * config.warmup_turns;
                stats = Some(leg_stats(before, after, turns));
            }
            Err(e) if !proxy.required => {
                eprintln!("  {} died: {e:#}", proxy.name);
                proxy.gone = Some(format!("{} exited during a leg", proxy.name));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ProxyLeg {
        name: proxy.name.clone(),
        label: proxy.label.clone(),
        leg,
        stats,
    })
}

/// The share of the CPU time between two samples that was spent in user space.
fn user_share(before: &ProcSample, after: &ProcSample) -> f64 {
    let user = after.user_ticks.saturating_sub(before.user_ticks);
    let system = after.system_ticks.saturating_sub(before.system_ticks);
    match user + system {
        0 => f64::NAN,
        total => user as f64 / total as f64,
    }
}

/// The counters of a leg from the samples around it; `turns` served, warm-up included.
fn leg_stats(before: ProcSample, after: ProcSample, turns: u64) -> ProcLegStats {
    ProcLegStats {
        peak_rss_mib: mib(after.hwm_kib.max(after.rss_kib)),
        rss_after_mib: mib(after.rss_kib),
        cpu_secs: (after.cpu_secs - before.cpu_secs).max(0.0),
        user_share: user_share(&before, &after),
        switches: after.switches().saturating_sub(before.switches()),
        voluntary_switches: after
            .voluntary_switches
            .saturating_sub(before.voluntary_switches),
        turns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(user_ticks: u64, system_ticks: u64) -> ProcSample {
        ProcSample {
            user_ticks,
            system_ticks,
            ..ProcSample::default()
        }
    }

    #[test]
    fn the_user_share_is_of_the_ticks_between_the_samples() {
        let share = user_share(&sample(100, 50), &sample(130, 60));
        assert!((share - 0.75).abs() < 1e-9, "30 of 40 ticks: {share}");
        assert!(user_share(&sample(7, 7), &sample(7, 7)).is_nan(), "no tick");
    }
}
