//! The paced levels: a mock streaming its tokens `--paced-token-delay-ms` apart, a fresh host
//! and the peers (nginx, LiteLLM) in front of it, each level run straight at the mock and then
//! through every proxy in turn; the proxies side by side at the end.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::compare::{self, HOST};
use crate::host::{HostProcess, Workdir};
use crate::levels::{self, Proxy, Workload};
use crate::load::Target;
use crate::peers::{self, PeerKind, PeerOptions, PeerProcess};
use crate::procs::ProxyProcess;
use crate::report;
use crate::runs::{self, Runs};
use crate::upstream::{AnswerSpec, MockUpstream};
use crate::{Args, HostEndpoint};

/// What a phase did, for the run's totals and its `SUMMARY`.
pub struct PhaseOutcome {
    /// Completed turns, all legs.
    pub turns: u64,
    /// Errors of the direct and host legs (the peers' are in `json`).
    pub errors: u64,
    /// The phase's part of the `SUMMARY` line.
    pub json: serde_json::Value,
}

/// The peers asked for and started, and those skipped with the reason.
struct Peers {
    running: Vec<PeerProcess>,
    skipped: Vec<(PeerKind, String)>,
}

impl Peers {
    /// Starts each peer `args` asks for in front of `upstream`; one that is missing or does
    /// not start is skipped with the reason.
    async fn start(args: &Args, upstream: &MockUpstream, system_prompt: &Arc<str>) -> Self {
        let options = PeerOptions {
            nginx: args.nginx.clone(),
            nginx_workers: args.nginx_workers.clone(),
            litellm: args.litellm.clone(),
        };
        let mut peers = Self {
            running: Vec::new(),
            skipped: Vec::new(),
        };
        for &kind in args.peer_kinds() {
            let started = match peers::locate(kind, &options) {
                Ok(bin) => {
                    eprintln!("starting {} ({})", kind.name(), bin.display());
                    PeerProcess::start(kind, &bin, upstream.addr(), &options, system_prompt)
                        .await
                        .map_err(|e| format!("did not start: {e:#}"))
                }
                Err(reason) => Err(reason),
            };
            match started {
                Ok(peer) => {
                    eprintln!(
                        "{} pid {} ready at {}",
                        kind.name(),
                        peer.pid(),
                        peer.base_url()
                    );
                    peers.running.push(peer);
                }
                Err(reason) => {
                    eprintln!("skipping {}: {reason}", kind.name());
                    peers.skipped.push((kind, reason));
                }
            }
        }
        peers
    }

    async fn stop(self) {
        for peer in self.running {
            peer.stop().await;
        }
    }
}

/// The paced levels through a fresh host from `host_bin` (its `endpoint`, as the throughput
/// levels used) and through the peers `args` asks for.
pub async fn phase(
    args: &Args,
    host_bin: &Path,
    voice_prompt: &str,
    system_prompt: &Arc<str>,
    endpoint: HostEndpoint,
) -> anyhow::Result<PhaseOutcome> {
    let delay = args.paced_token_delay_ms;
    let answer = AnswerSpec {
        tokens: args.tokens,
        token_text: args.token_text.clone(),
        token_delay: Duration::from_millis(delay),
    };
    let upstream = MockUpstream::start(&answer).await?;
    let workdir = Workdir::create("paced", voice_prompt)?;
    let spec = crate::host_spec(host_bin, &upstream.base_url(), args.max_messages);
    let mut host = HostProcess::start(&spec, &workdir).await?;
    eprintln!("paced host pid {} ready at {}", host.pid(), host.base_url());
    let mut peers = Peers::start(args, &upstream, system_prompt).await;
    // One answer: the role chunk at once, then the tokens, the finish chunk and `[DONE]`, each
    // `delay` after the one before.
    let answer_span = Duration::from_millis(delay * (args.tokens as u64 + 2));
    let stagger = if args.no_stagger {
        Duration::ZERO
    } else {
        answer_span
    };
    print_intro(args, answer_span, stagger, &peers);
    let workload = Workload {
        concurrency: &args.paced_concurrency,
        turns: &|c| args.paced_turns_for(c),
        warmup_turns: &|_| 1,
        paced: true,
        stagger,
        max_duration: Duration::from_secs_f64(args.max_seconds),
        turn_timeout: Duration::from_secs_f64(args.turn_timeout_secs),
    };
    let direct_target = crate::direct_target(&upstream, system_prompt);
    let host_target = endpoint.target(host.base_url());
    let mut proxies = vec![Proxy::new(
        HOST,
        "via host",
        host_target,
        Some(&mut host as &mut dyn ProxyProcess),
    )];
    proxies.extend(
        peers
            .running
            .iter_mut()
            .map(|peer| peer_proxy(args, peer, system_prompt)),
    );
    let outcome = run_repeatedly(args.paced_runs, &workload, &direct_target, &mut proxies).await;
    let gone: Vec<(String, String)> = proxies
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.gone.clone()?)))
        .collect();
    drop(proxies);
    let runs = match outcome {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("host stderr (last lines):\n{}", host.stderr_tail());
            host.stop().await;
            peers.stop().await;
            return Err(e);
        }
    };
    let all_levels = || runs.iter().flatten();
    let errors: u64 = all_levels().map(|l| levels::level_errors(l, &[HOST])).sum();
    if errors > 0 {
        eprintln!("host stderr (last lines):\n{}", host.stderr_tail());
    }
    host.stop().await;
    peers.skipped.extend(
        gone.into_iter()
            .filter_map(|(name, why)| Some((kind_named(&name)?, why))),
    );
    let skipped = std::mem::take(&mut peers.skipped);
    peers.stop().await;
    print_summary(args, &runs, &skipped);
    let across = Runs {
        runs: &runs,
        tokens: args.tokens,
    };
    Ok(PhaseOutcome {
        turns: all_levels()
            .map(|l| l.direct.completed + l.proxies.iter().map(|p| p.leg.completed).sum::<u64>())
            .sum(),
        errors,
        json: json!({
            "token_delay_ms": delay,
            "runs": runs.len(),
            "levels": all_levels().map(report::level_json).collect::<Vec<_>>(),
            "side_by_side": runs::side_by_side_json(&runs, args.tokens),
            "across_runs": (runs.len() > 1).then(|| across.json()),
            "skipped": skipped.iter().map(|(kind, reason)| json!({
                "name": kind.name(),
                "reason": reason,
            })).collect::<Vec<_>>(),
        }),
    })
}

/// `runs` runs of every level of `workload`, one after the other, each headed when there are
/// several.
async fn run_repeatedly(
    runs: usize,
    workload: &Workload<'_>,
    direct_target: &Target,
    proxies: &mut [Proxy<'_>],
) -> anyhow::Result<Vec<Vec<report::LevelReport>>> {
    let mut all = Vec::with_capacity(runs);
    for run in 1..=runs {
        if runs > 1 {
            println!("### Paced run {run} of {runs}\n");
            eprintln!("paced run {run} of {runs}");
        }
        all.push(levels::run_levels(workload, direct_target, proxies).await?);
    }
    Ok(all)
}

fn kind_named(name: &str) -> Option<PeerKind> {
    [PeerKind::Nginx, PeerKind::Litellm]
        .into_iter()
        .find(|k| k.name() == name)
}

/// The proxy entry of a running peer: LiteLLM stops at `--litellm-max-concurrency`; a peer's
/// death skips its later levels instead of ending the run.
fn peer_proxy<'a>(args: &Args, peer: &'a mut PeerProcess, system_prompt: &Arc<str>) -> Proxy<'a> {
    let kind = peer.kind();
    let target: Target = peer.target(system_prompt);
    let mut proxy = Proxy::new(
        kind.name(),
        &format!("via {}", kind.name()),
        target,
        Some(peer as &mut dyn ProxyProcess),
    );
    proxy.required = false;
    if kind == PeerKind::Litellm {
        proxy.max_concurrency = args.litellm_max_concurrency;
    }
    proxy
}

fn print_intro(args: &Args, answer_span: Duration, stagger: Duration, peers: &Peers) {
    let delay = args.paced_token_delay_ms;
    println!("## Paced load ({delay} ms between tokens)\n");
    println!(
        "The TTFT targets are about the delay the host adds to a live conversation. Here the \
         mock streams its {} tokens {delay} ms apart (the role chunk at once), like an LLM \
         answering at {:.0} tokens/s, so each worker's turn lasts ~{} ms and 100 or 1,000 \
         concurrent turns are that many conversations in progress rather than a flood that \
         saturates the CPU. A fresh host serves these levels; each worker runs one unmeasured \
         turn first (it opens the worker's connection). {} TTFT includes the mock's first \
         {delay} ms gap on both legs; compare the added column.\n",
        args.tokens,
        1000.0 / delay as f64,
        answer_span.as_millis(),
        if stagger.is_zero() {
            "Then all workers start their measured turns at the same instant (`--no-stagger`): \
             every turn start meets as many others as there are workers, a thundering herd."
                .to_owned()
        } else {
            format!(
                "The workers' first measured turns are spread evenly over one answer ({} ms), \
                 so turns start at a steady rate, as independent conversations do \
                 (`--no-stagger` starts them all at once).",
                stagger.as_millis()
            )
        }
    );
    if !peers.running.is_empty() {
        let names: Vec<&str> = peers.running.iter().map(|p| p.kind().name()).collect();
        println!(
            "At each level the direct leg runs first, then one leg through each proxy in turn: \
             the host, then {} (started by the bench in front of the same mock; nginx with \
             `worker_processes {}`, no buffering, a keep-alive upstream pool; LiteLLM with one \
             worker, up to concurrency {}). The peers are sent the request the host would send \
             upstream (the voice prompt as the system message), so every leg moves the same \
             prompt to the mock; the host adds session memory on top. Proxy CPU and context \
             switches are read from `/proc` for the proxy's processes and threads, summed.\n",
            names.join(", "),
            args.nginx_workers,
            args.litellm_max_concurrency
        );
    }
    for (kind, reason) in &peers.skipped {
        println!("NOTE: {} skipped: {reason}\n", kind.name());
    }
}

fn print_summary(args: &Args, runs: &[Vec<report::LevelReport>], skipped: &[(PeerKind, String)]) {
    for (number, levels) in (1..).zip(runs) {
        let run = if runs.len() > 1 {
            format!(", run {number} of {}", runs.len())
        } else {
            String::new()
        };
        print_run_summary(args, levels, &run, skipped);
    }
    if runs.len() > 1 {
        println!("### Across the {} paced runs\n", runs.len());
        println!(
            "Each cell: the median over the runs (lowest … highest). The host against nginx \
             compares the two within each run, then takes the median of those. A target is \
             counted in the runs where it could be judged (nginx ran at that level).\n"
        );
        let across = Runs {
            runs,
            tokens: args.tokens,
        };
        println!("{}", across.tables());
    }
}

fn print_run_summary(
    args: &Args,
    levels: &[report::LevelReport],
    run: &str,
    skipped: &[(PeerKind, String)],
) {
    let delay = args.paced_token_delay_ms;
    println!("### Summary, paced ({delay} ms between tokens{run})\n");
    println!("{}", report::summary_table(levels, HOST));
    println!("### The proxies side by side, paced{run}\n");
    println!(
        "Added = through the proxy minus direct, of each percentile, at the same level. CPU per \
         turn: the proxy's processes' user + system time over the leg (warm-up turns included) \
         divided by its turns. Context switches per token: all context switches of the proxy's \
         threads over the leg, per turn, divided by the {} tokens of an answer. User-space CPU \
         per turn: CPU per turn times the share of the leg's clock ticks spent in user space \
         (the proxy's own code; the rest is the kernel's), coarse for a short leg.\n",
        args.tokens
    );
    for (kind, reason) in skipped {
        println!("{} skipped: {reason}\n", kind.name());
    }
    println!("{}", compare::tables(levels, args.tokens));
}
