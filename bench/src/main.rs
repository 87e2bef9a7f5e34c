//! Run with: cargo run --release -p gateway-bench -- --concurrency 1,100,1000
//!
//! Load benchmark of `gateway-host`. It starts, all on 127.0.0.1:
//!
//! 1. a fast mock OpenAI-compatible upstream, in-process, streaming a fixed answer of
//!    `--tokens` `chat.completion.chunk` events (`--token-delay-ms` apart) and `[DONE]`;
//! 2. the real `gateway-host` binary as a separate process, pointed at that upstream and
//!    carrying OpenVoiceUI's real ~12 KB voice prompt in every turn;
//! 3. a load generator that runs the same streaming workload twice per concurrency level:
//!    straight at the upstream, then through the host's `POST /v1/chat/completions` (or
//!    through any other OpenAI-compatible proxy given with `--proxy-url`).
//!
//! The levels run twice: first for throughput (`--token-delay-ms`, default 0: each answer
//! arrives at once and closed-loop workers saturate the CPU), then paced
//! (`--paced-token-delay-ms`, default 20 ms between tokens, on a fresh host and a second mock)
//! for the TTFT a host adds to conversations in progress. The paced levels also run through
//! the peers, started by the bench in front of the same mock: a bare `nginx` hop and, when
//! installed (`bench/litellm-venv.sh`), LiteLLM; a missing peer is skipped with the reason.
//!
//! It prints Markdown: per level, turns/s, time to first token (TTFT) p50/p90/p99 for every
//! leg and the TTFT each proxy adds, full-turn latency, errors, each started proxy's peak
//! RSS, CPU seconds per 1,000 turns and context switches per turn; the proxies side by side
//! and the host against nginx; then the idle host's RSS, the RSS after `--sessions` sessions
//! of full history, and the host's start-up time. The last line is `SUMMARY {json}`.
//! Everything is bounded by turn counts and `--max-seconds`.

mod compare;
mod cpus;
mod host;
mod levels;
mod load;
mod paced;
mod peers;
mod procs;
mod report;
mod runs;
mod sessions;
mod tools;
mod upstream;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use serde_json::json;

use crate::host::{HostProcess, HostSpec, Workdir};
use crate::levels::{Proxy, Workload};
use crate::load::{Protocol, Target};
use crate::peers::PeerKind;
use crate::procs::ProxyProcess;
use crate::report::mib;
use crate::upstream::{AnswerSpec, MockUpstream};

/// Which host endpoint the proxy leg drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HostEndpoint {
    /// `POST /v1/chat/completions`, the same protocol as the direct leg.
    ChatCompletions,
    /// `POST /v1/conversation`, the host's own event stream.
    Conversation,
}

/// The direct leg's target: the mock itself, sent the system prompt the host would add, so that
/// both legs move the same bytes to the upstream.
fn direct_target(upstream: &MockUpstream, system_prompt: &Arc<str>) -> Target {
    Target {
        url: format!("{}/chat/completions", upstream.base_url()),
        protocol: Protocol::ChatCompletions,
        model: "bench-model".to_owned(),
        system_prompt: Some(Arc::clone(system_prompt)),
        api_key: None,
    }
}

impl HostEndpoint {
    /// The endpoint that speaks `protocol`.
    fn of(protocol: Protocol) -> Self {
        match protocol {
            Protocol::ChatCompletions => Self::ChatCompletions,
            Protocol::Conversation => Self::Conversation,
        }
    }

    /// Its name in the machine-readable summary.
    fn name(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat-completions",
            Self::Conversation => "conversation",
        }
    }

    /// A target for this endpoint of the host at `base_url`, asking for the bench's profile.
    fn target(self, base_url: &str) -> Target {
        let (path, protocol) = match self {
            Self::ChatCompletions => ("/v1/chat/completions", Protocol::ChatCompletions),
            Self::Conversation => ("/v1/conversation", Protocol::Conversation),
        };
        Target {
            url: format!("{base_url}{path}"),
            protocol,
            model: host::PROFILE_ID.to_owned(),
            system_prompt: None,
            api_key: None,
        }
    }
}

/// Load benchmark: mock upstream vs. the same workload through gateway-host.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Concurrency levels, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    concurrency: Vec<usize>,
    /// Measured turns per leg [default: max(2000, 20 × concurrency), at most 20000].
    #[arg(long)]
    turns: Option<u64>,
    /// Upper bound on the measured part of each leg, seconds.
    #[arg(long, default_value_t = 20.0)]
    max_seconds: f64,
    /// Upper bound on one turn, seconds (a slower turn is an error).
    #[arg(long, default_value_t = 30.0)]
    turn_timeout_secs: f64,
    /// Skip the unmeasured warm-up turns (at least one per worker, ~50 per leg).
    #[arg(long)]
    no_warmup: bool,
    /// Content chunks (tokens) per upstream answer.
    #[arg(long, default_value_t = 20)]
    tokens: usize,
    /// Text of one token.
    #[arg(long, default_value = "word ")]
    token_text: String,
    /// Delay between tokens in the mock upstream, milliseconds (the throughput levels).
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Delay between tokens of the paced levels, milliseconds: after the throughput levels the
    /// same concurrency levels run against a second mock that streams at this pace (20 ms is
    /// 50 tokens/s, a brisk LLM), on a fresh host. These levels measure the TTFT a host adds
    /// to live conversations rather than CPU queueing under a flood. 0 skips them.
    #[arg(long, default_value_t = 20)]
    paced_token_delay_ms: u64,
    /// Start all workers of a paced level at the same instant instead of spreading their first
    /// turns evenly over one answer's duration (a thundering herd rather than independent
    /// conversations).
    #[arg(long)]
    no_stagger: bool,
    /// Measured turns per paced leg [default: 20 × concurrency, at most 20000].
    #[arg(long)]
    paced_turns: Option<u64>,
    /// Runs of the paced levels, one after the other on the same host and peers. With more
    /// than one, the report ends with each metric's median and range across the runs and how
    /// many runs met each live-pace target.
    #[arg(long, default_value_t = 1)]
    paced_runs: usize,
    /// Concurrency levels of the paced load, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,20,100,1000")]
    paced_concurrency: Vec<usize>,
    /// Peers the paced levels also run through, comma separated (each skipped with the
    /// reason when it is not installed).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["nginx", "litellm"])]
    peers: Vec<PeerKind>,
    /// Run the paced levels through the host only.
    #[arg(long)]
    no_peers: bool,
    /// The nginx binary [default: `nginx` on PATH, else /usr/sbin/nginx and the like].
    #[arg(long, env = "BENCH_NGINX")]
    nginx: Option<PathBuf>,
    /// nginx's `worker_processes`: `auto` is one per core, as the host's runtime has one
    /// worker thread per core.
    #[arg(long, default_value = "auto")]
    nginx_workers: String,
    /// CPUs for the proxies (`1`, `2,3`, `2-3`): the host, nginx and LiteLLM run on these,
    /// the load generator and mock on the others. `--nginx-workers auto` then means one per
    /// proxy CPU, as the host starts one serving thread per CPU it may use. Default: all
    /// share every CPU.
    #[arg(long)]
    proxy_cpus: Option<String>,
    /// The `litellm` executable [default: <target>/litellm-venv/bin/litellm, which
    /// bench/litellm-venv.sh installs].
    #[arg(long, env = "BENCH_LITELLM")]
    litellm: Option<PathBuf>,
    /// Paced levels above this concurrency skip LiteLLM (one Python worker: at 100 streams it
    /// already adds seconds).
    #[arg(long, default_value_t = 100)]
    litellm_max_concurrency: usize,
    /// The gateway-host binary [default: target/release/gateway-host, built if missing].
    #[arg(long, env = "GATEWAY_HOST_BIN")]
    host_bin: Option<PathBuf>,
    /// Host endpoint for the proxy leg.
    #[arg(long, value_enum, default_value_t = HostEndpoint::ChatCompletions)]
    host_endpoint: HostEndpoint,
    /// Send the proxy leg to this OpenAI-compatible base URL (e.g. http://127.0.0.1:4000/v1)
    /// instead of a spawned host; it must itself point at the printed mock upstream. The value
    /// `upstream` sends it to the mock itself: a null proxy that shows the generator's noise.
    #[arg(long)]
    proxy_url: Option<String>,
    /// `model` to ask `--proxy-url` for.
    #[arg(long, default_value = "bench")]
    proxy_model: String,
    /// Bearer token for `--proxy-url`.
    #[arg(long, env = "BENCH_PROXY_API_KEY")]
    proxy_api_key: Option<String>,
    /// Seconds to wait after printing the upstream URL before the `--proxy-url` legs start.
    #[arg(long, default_value_t = 0)]
    proxy_wait_secs: u64,
    /// OpenVoiceUI's voice prompt [default: <repo>/tests/fixtures/openvoiceui/prompts/voice-system-prompt.md].
    #[arg(long)]
    prompt: Option<PathBuf>,
    /// `GATEWAY_MEMORY__MAX_MESSAGES` for the spawned hosts.
    #[arg(long, default_value_t = 20)]
    max_messages: usize,
    /// Distinct sessions in the session-memory phase.
    #[arg(long, default_value_t = 10_000)]
    sessions: u64,
    /// Turns per session in the session-memory phase (2 stored messages each).
    #[arg(long, default_value_t = 10)]
    session_turns: u64,
    /// Bytes per user message and per answer in the session-memory phase.
    #[arg(long, default_value_t = 200)]
    session_message_bytes: usize,
    /// Concurrent sessions in the session-memory phase.
    #[arg(long, default_value_t = 256)]
    sessions_concurrency: usize,
    /// Upper bound on the session-memory phase, seconds.
    #[arg(long, default_value_t = 120.0)]
    sessions_max_seconds: f64,
    /// Skip the session-memory phase.
    #[arg(long)]
    skip_sessions: bool,
    /// Tool turns (and as many plain ones) in the tool-round phase; 0 skips it.
    #[arg(long, default_value_t = 200)]
    tool_turns: usize,
    /// Host starts to time (spawn → /healthz 200).
    #[arg(long, default_value_t = 5)]
    startup_runs: usize,
    /// Tiny run for the test suite: concurrency 1,10, 60 turns per leg (paced: two runs of
    /// 20 turns, 1 ms between tokens, concurrency 1,10, nginx as the only peer), no sessions
    /// phase, one start-up sample.
    #[arg(long)]
    smoke: bool,
}

impl Args {
    fn apply_smoke(&mut self) {
        if self.smoke {
            self.concurrency = vec![1, 10];
            self.turns = Some(self.turns.unwrap_or(60));
            self.paced_turns = Some(self.paced_turns.unwrap_or(20));
            self.paced_token_delay_ms = self.paced_token_delay_ms.min(1);
            self.paced_concurrency = vec![1, 10];
            self.paced_runs = 2;
            // LiteLLM takes seconds to start: the smoke run covers the nginx hop only.
            self.peers.retain(|&kind| kind == PeerKind::Nginx);
            self.skip_sessions = true;
            self.tool_turns = self.tool_turns.min(5);
            self.startup_runs = self.startup_runs.min(1);
            self.max_seconds = self.max_seconds.min(20.0);
        }
    }

    fn turns_for(&self, concurrency: usize) -> u64 {
        self.turns
            .unwrap_or_else(|| (20 * concurrency as u64).clamp(2_000, 20_000))
    }

    /// The peers the paced levels run through.
    fn peer_kinds(&self) -> &[PeerKind] {
        if self.no_peers {
            &[]
        } else {
            &self.peers
        }
    }

    fn paced_turns_for(&self, concurrency: usize) -> u64 {
        self.paced_turns
            .unwrap_or_else(|| (20 * concurrency as u64).clamp(20, 20_000))
    }

    /// Unmeasured turns per worker before a throughput leg.
    fn warmup_turns(&self, concurrency: usize) -> u64 {
        if self.no_warmup {
            0
        } else {
            load::warmup_turns(concurrency)
        }
    }

    fn prompt_path(&self) -> PathBuf {
        self.prompt.clone().unwrap_or_else(|| {
            host::workspace_root().join("tests/fixtures/openvoiceui/prompts/voice-system-prompt.md")
        })
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.apply_smoke();
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs positive numbers");
    }
    if args.paced_concurrency.contains(&0) {
        bail!("--paced-concurrency needs positive numbers");
    }
    if args.paced_runs == 0 {
        bail!("--paced-runs needs a positive number");
    }
    // 1000 workers need ~1000 fds for the client plus ~1000 for the mock upstream, and the
    // spawned host inherits the limit for its own ~2000.
    let nofile = rlimit::increase_nofile_limit(65_536).unwrap_or(0);
    if let Some(list) = &args.proxy_cpus {
        let usable = cpus::usable()?;
        let proxies = cpus::parse(list, &usable)?;
        if args.nginx_workers == "auto" {
            args.nginx_workers = proxies.len().to_string();
        }
        cpus::split(proxies, &usable)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args, nofile))
}

async fn run(args: Args, nofile: u64) -> anyhow::Result<()> {
    println!("# gateway-host load benchmark\n");
    println!("{}", report::machine_info());
    println!("- command: `{}`", report::command_line());
    println!("- open-file limit: {nofile}");
    if let Some(cpus) = cpus::proxy_cpus() {
        println!("- proxies on CPUs {cpus:?}, the load generator and mock on the others");
    }

    let prompt_path = args.prompt_path();
    let voice_prompt = std::fs::read_to_string(&prompt_path).with_context(|| {
        format!(
            "reading the voice prompt {} (give another with --prompt)",
            prompt_path.display()
        )
    })?;
    let system_prompt: Arc<str> = host::host_system_prompt(&voice_prompt).into();
    let answer = AnswerSpec {
        tokens: args.tokens,
        token_text: args.token_text.clone(),
        token_delay: Duration::from_millis(args.token_delay_ms),
    };
    println!(
        "- voice prompt: {} bytes ({} after stripping `#` lines, sent as the system message)",
        voice_prompt.len(),
        system_prompt.len()
    );
    println!(
        "- upstream answer: {} tokens of {:?} ({} bytes), {} ms between tokens",
        answer.tokens,
        answer.token_text,
        answer.answer().len(),
        args.token_delay_ms
    );
    let upstream = MockUpstream::start(&answer).await?;
    eprintln!("mock upstream: {}", upstream.base_url());

    let mut total_errors = 0u64;
    let mut total_turns = 0u64;
    let mut summary = serde_json::Map::new();

    // The spawned host, unless the proxy leg goes elsewhere.
    let host_bin = match &args.proxy_url {
        Some(_) => None,
        None => Some(host::locate_or_build(args.host_bin.as_deref())?),
    };
    if let Some(bin) = &host_bin {
        let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
        let shown = bin.strip_prefix(host::workspace_root()).unwrap_or(bin);
        println!(
            "- host binary: {} ({:.1} MiB)",
            shown.display(),
            size as f64 / 1024.0 / 1024.0
        );
    }
    println!();

    // Start-up time first, while the machine is quiet.
    if let Some(bin) = &host_bin {
        if args.startup_runs > 0 {
            let workdir = Workdir::create("startup", &voice_prompt)?;
            let spec = host_spec(bin, &upstream.base_url(), args.max_messages);
            eprintln!("timing {} host start-ups", args.startup_runs);
            let samples = host::measure_startup(&spec, &workdir, args.startup_runs).await?;
            let mut ms: Vec<f64> = samples
                .iter()
                .map(|s| s.to_healthz.as_secs_f64() * 1000.0)
                .collect();
            ms.sort_by(f64::total_cmp);
            let best = ms.first().copied().unwrap_or(f64::NAN);
            let median = ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN);
            println!("## Start-up\n");
            println!(
                "Spawn to first `GET /healthz` 200 (polled every 1 ms), {} starts: best {best:.1} ms, median {median:.1} ms (all: {}).\n",
                ms.len(),
                ms.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(", ")
            );
            summary.insert("startup_ms".into(), json!({"best": best, "median": median}));
        }
    }

    // The proxy target.
    let main_workdir = match &host_bin {
        Some(_) => Some(Workdir::create("main", &voice_prompt)?),
        None => None,
    };
    let mut host_process = match (&host_bin, &main_workdir) {
        (Some(bin), Some(workdir)) => {
            let spec = host_spec(bin, &upstream.base_url(), args.max_messages);
            let started = Instant::now();
            let process = HostProcess::start(&spec, workdir).await?;
            let idle = process.sample()?;
            eprintln!(
                "host pid {} ready at {} in {:.1} ms",
                process.pid(),
                process.base_url(),
                started.elapsed().as_secs_f64() * 1000.0
            );
            println!("## Idle host\n");
            println!(
                "RSS right after ready: {:.1} MiB (peak so far {:.1} MiB).\n",
                mib(idle.rss_kib),
                mib(idle.hwm_kib)
            );
            summary.insert("idle_rss_mib".into(), json!(mib(idle.rss_kib)));
            Some(process)
        }
        _ => None,
    };
    let (proxy_target, (proxy_name, proxy_label)) = match (&args.proxy_url, &host_process) {
        (Some(url), _) => {
            if args.proxy_wait_secs > 0 {
                eprintln!(
                    "point the proxy at {} ; starting in {} s",
                    upstream.base_url(),
                    args.proxy_wait_secs
                );
                tokio::time::sleep(Duration::from_secs(args.proxy_wait_secs)).await;
            }
            let base = if url == "upstream" {
                upstream.base_url()
            } else {
                url.trim_end_matches('/').to_owned()
            };
            (
                Target {
                    url: format!("{base}/chat/completions"),
                    protocol: Protocol::ChatCompletions,
                    model: args.proxy_model.clone(),
                    system_prompt: Some(Arc::clone(&system_prompt)),
                    api_key: args.proxy_api_key.clone(),
                },
                ("proxy", "via proxy"),
            )
        }
        (None, Some(process)) => {
            let endpoint = choose_endpoint(
                process.base_url(),
                args.host_endpoint,
                args.turn_timeout_secs,
            )
            .await?;
            let target = endpoint.target(process.base_url());
            println!(
                "Proxy leg: the spawned host's `{}` endpoint (the host adds the voice prompt and session memory).\n",
                target.url.trim_start_matches(process.base_url())
            );
            summary.insert("host_endpoint".into(), json!(endpoint.name()));
            (target, (compare::HOST, "via host"))
        }
        (None, None) => bail!("no proxy target: neither --proxy-url nor a spawned host"),
    };
    let direct_target = direct_target(&upstream, &system_prompt);

    println!(
        "## Throughput load ({} ms between tokens)\n",
        args.token_delay_ms
    );
    println!(
        "Per level: each leg runs the turns with that many concurrent workers (unmeasured warm-up turns first — at least one per worker, about 50 in all: {}). \
         TTFT = request sent → bytes holding the first non-empty content token. \
         Added = via minus direct, of each percentile. \
         Each worker starts its next turn as soon as one ends, so with no delay between tokens \
         100 or 1,000 workers keep the 2 cores saturated: the TTFT at those levels is mostly \
         the wait for CPU shared by generator, mock and host (the paced levels below measure the \
         delay the host adds to live conversations).\n",
        !args.no_warmup
    );
    let workload = Workload {
        concurrency: &args.concurrency,
        turns: &|c| args.turns_for(c),
        warmup_turns: &|c| args.warmup_turns(c),
        paced: false,
        stagger: Duration::ZERO,
        max_duration: Duration::from_secs_f64(args.max_seconds),
        turn_timeout: Duration::from_secs_f64(args.turn_timeout_secs),
    };
    let process = host_process.as_mut().map(|p| p as &mut dyn ProxyProcess);
    let mut proxies = [Proxy::new(
        proxy_name,
        proxy_label,
        proxy_target.clone(),
        process,
    )];
    let levels = levels::run_levels(&workload, &direct_target, &mut proxies).await?;
    for level in &levels {
        total_turns +=
            level.direct.completed + level.proxies.iter().map(|p| p.leg.completed).sum::<u64>();
        total_errors += levels::level_errors(level, &[proxy_name]);
    }
    if let Some(p) = &host_process {
        if !p.stderr_tail().is_empty() && total_errors > 0 {
            eprintln!("host stderr (last lines):\n{}", p.stderr_tail());
        }
    }
    println!("### Summary, throughput\n");
    println!("{}", report::summary_table(&levels, proxy_name));
    summary.insert(
        "levels".into(),
        json!(levels.iter().map(report::level_json).collect::<Vec<_>>()),
    );
    if let Some(p) = host_process.take() {
        p.stop().await;
    }
    drop(main_workdir);

    // Paced levels: a second mock that streams at a conversational pace, a fresh host and the
    // peers in front of the same mock.
    if args.paced_token_delay_ms > 0 {
        match &host_bin {
            Some(bin) => {
                let endpoint = HostEndpoint::of(proxy_target.protocol);
                let paced =
                    paced::phase(&args, bin, &voice_prompt, &system_prompt, endpoint).await?;
                total_turns += paced.turns;
                total_errors += paced.errors;
                summary.insert("paced".into(), paced.json);
            }
            None => println!(
                "NOTE: no paced levels: they need a host the bench spawns (not --proxy-url).\n"
            ),
        }
    }

    // Session memory, on a fresh host so its RSS is not mixed with the load legs'.
    if let (Some(bin), false) = (&host_bin, args.skip_sessions) {
        let result = sessions_phase(&args, bin, &voice_prompt).await?;
        total_errors += result.errors;
        summary.insert("sessions".into(), result.json);
    }

    // What a tool round costs, on a fresh host with an MCP server.
    if let (Some(bin), true) = (&host_bin, args.tool_turns > 0) {
        if let Some(round) = tools::run(bin, &voice_prompt, args.tool_turns).await? {
            println!("{}", round.markdown);
            total_turns += round.turns;
            total_errors += round.errors;
            summary.insert("tool_round".into(), round.json);
        }
    }

    summary.insert("turns".into(), json!(total_turns));
    summary.insert("errors".into(), json!(total_errors));
    println!("SUMMARY {}", serde_json::Value::Object(summary));
    Ok(())
}

fn host_spec(bin: &std::path::Path, upstream: &str, max_messages: usize) -> HostSpec {
    HostSpec {
        bin: bin.to_path_buf(),
        upstream_base_url: upstream.to_owned(),
        max_messages,
        extra_env: Vec::new(),
    }
}

/// Probes `/v1/chat/completions` with one turn; falls back to `/v1/conversation` (with a note)
/// when the host does not offer it yet.
async fn choose_endpoint(
    base_url: &str,
    wanted: HostEndpoint,
    timeout_secs: f64,
) -> anyhow::Result<HostEndpoint> {
    if wanted == HostEndpoint::Conversation {
        return Ok(wanted);
    }
    let client = load::client(1)?;
    let target = HostEndpoint::ChatCompletions.target(base_url);
    let timeout = Duration::from_secs_f64(timeout_secs);
    match load::run_turn(&client, &target, "bench-probe", "Hello?", timeout).await {
        Ok(_) => Ok(HostEndpoint::ChatCompletions),
        Err(kind) if kind == "HTTP 404" || kind == "HTTP 405" => {
            println!(
                "NOTE: the host answered {kind} on /v1/chat/completions: falling back to /v1/conversation.\n"
            );
            Ok(HostEndpoint::Conversation)
        }
        Err(kind) => bail!("probe turn through the host's /v1/chat/completions failed: {kind}"),
    }
}

struct SessionsOutcome {
    errors: u64,
    json: serde_json::Value,
}

async fn sessions_phase(
    args: &Args,
    bin: &std::path::Path,
    voice_prompt: &str,
) -> anyhow::Result<SessionsOutcome> {
    // Answers of the same size as the user messages: each stored message is ~N bytes.
    let token_text = "remember. ".to_owned();
    let tokens = (args.session_message_bytes / token_text.len()).max(1);
    let answer = AnswerSpec {
        tokens,
        token_text,
        token_delay: Duration::ZERO,
    };
    let upstream = MockUpstream::start(&answer).await?;
    let workdir = Workdir::create("sessions", voice_prompt)?;
    let spec = host_spec(bin, &upstream.base_url(), args.max_messages);
    let mut process = HostProcess::start(&spec, &workdir).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = process.sample()?;
    let config = sessions::SessionsConfig {
        sessions: args.sessions,
        turns_per_session: args.session_turns,
        message_bytes: args.session_message_bytes,
        concurrency: args.sessions_concurrency,
        max_duration: Duration::from_secs_f64(args.sessions_max_seconds),
        turn_timeout: Duration::from_secs_f64(args.turn_timeout_secs),
    };
    eprintln!(
        "sessions phase: {} sessions × {} turns, {} concurrent",
        config.sessions, config.turns_per_session, config.concurrency
    );
    let result = sessions::run(process.base_url(), host::PROFILE_ID, &config).await?;
    process.ensure_alive()?;
    // Let freed request buffers settle before reading the resident size.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = process.sample()?;
    let max_body = upstream.stats().max_body_bytes.load(Ordering::Relaxed);
    let requests = upstream.stats().requests.load(Ordering::Relaxed);
    if result.errors > 0 {
        eprintln!("host stderr (last lines):\n{}", process.stderr_tail());
    }
    process.stop().await;

    let grown_kib = after.rss_kib.saturating_sub(idle.rss_kib);
    let per_session = if result.full_sessions > 0 {
        grown_kib as f64 * 1024.0 / result.full_sessions as f64
    } else {
        f64::NAN
    };
    let stored = 2 * config.turns_per_session.min(args.max_messages as u64 / 2);
    println!("## Session memory\n");
    println!(
        "A fresh host; {} sessions × {} turns through `/v1/conversation`, {} concurrent; user messages of {} bytes, answers of {} bytes, `GATEWAY_MEMORY__MAX_MESSAGES={}` (so each session should end holding {} messages).\n",
        config.sessions,
        config.turns_per_session,
        config.concurrency,
        config.message_bytes,
        answer.answer().len(),
        args.max_messages,
        stored
    );
    println!("| metric | value |");
    println!("| --- | ---: |");
    println!("| full sessions | {} |", result.full_sessions);
    println!("| turns completed | {} |", result.turns);
    println!(
        "| errors | {}{} |",
        result.errors,
        if result.error_kinds.is_empty() {
            String::new()
        } else {
            format!(" [{}]", result.error_kinds.join("; "))
        }
    );
    println!(
        "| wall time | {}{} |",
        report::secs(result.elapsed),
        if result.hit_time_limit {
            " (time limit reached)"
        } else {
            ""
        }
    );
    println!(
        "| turns/s | {:.0} |",
        result.turns as f64 / result.elapsed.as_secs_f64().max(1e-9)
    );
    println!("| host RSS idle (MiB) | {:.1} |", mib(idle.rss_kib));
    println!("| host RSS after (MiB) | {:.1} |", mib(after.rss_kib));
    println!("| host peak RSS (MiB) | {:.1} |", mib(after.hwm_kib));
    println!(
        "| RSS growth per full session (bytes) | {:.0} |",
        per_session
    );
    println!(
        "| raw text per full session (bytes) | {} |",
        stored * config.message_bytes as u64
    );
    println!("| upstream requests | {requests} |");
    println!("| largest upstream request body (bytes) | {max_body} |");
    println!();
    Ok(SessionsOutcome {
        errors: result.errors,
        json: json!({
            "sessions": result.full_sessions,
            "turns": result.turns,
            "errors": result.errors,
            "idle_rss_mib": mib(idle.rss_kib),
            "rss_after_mib": mib(after.rss_kib),
            "bytes_per_session": if per_session.is_finite() { json!(per_session.round()) } else { serde_json::Value::Null },
            "max_upstream_body_bytes": max_body,
        }),
    })
}
