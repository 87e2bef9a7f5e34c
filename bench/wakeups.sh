#!/usr/bin/env bash
# Where the wake-ups go: scheduler events and syscalls per paced token in the host and in the
# bare nginx hop, counted by `perf stat` on their processes during the bench's paced levels.
# Counts, not times: they hold on a busy machine, where latency percentiles do not.
#
# Usage: bench/wakeups.sh [HOST_BIN] [-- extra gateway-bench arguments]
#   HOST_BIN defaults to target/release/gateway-host (build it and gateway-bench first:
#   cargo build --release -p gateway-bench -p gateway-host). The default load is one paced
#   level, concurrency 1, 100 turns of 20 tokens 20 ms apart (~45 s per proxy);
#   e.g. `-- --paced-concurrency 20 --paced-turns 400` for another level.
#
# perf is attached to the paced host and to nginx (master and workers) for their whole life,
# so the counts include the legs' warm-up turns and nginx's readiness probe (both counted as
# turns below) and the idle time while the other legs run (a few events per second: the
# idle line shows them). Needs perf with tracepoints (apt-get install linux-perf) and nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }

host=$(realpath "${1:-target/release/gateway-host}")
shift || true
[ "${1:-}" = "--" ] && shift
extra=("$@")
[ ${#extra[@]} -eq 0 ] && extra=(--paced-concurrency 1 --paced-turns 100)

events=sched:sched_switch,sched:sched_wakeup,syscalls:sys_enter_futex
events+=,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait
events+=,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_readv
events+=,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto

work=$(mktemp -d)
perf_pids=()
cleanup() {
  for pid in "${perf_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

target/release/gateway-bench --host-bin "$host" --concurrency 1 --turns 10 \
  --skip-sessions --startup-runs 0 --peers nginx --max-seconds 600 "${extra[@]}" \
  >"$work/bench.out" 2>"$work/bench.err" &
bench=$!

# The bench prints `paced host pid N` and `nginx pid N` once each is ready, before any leg.
until grep -q '^nginx pid\|^skipping nginx' "$work/bench.err"; do
  kill -0 "$bench" 2>/dev/null || { cat "$work/bench.err" >&2; exit 1; }
  sleep 0.1
done
host_pid=$(sed -n 's/^paced host pid \([0-9]*\).*/\1/p' "$work/bench.err")
nginx_pid=$(sed -n 's/^nginx pid \([0-9]*\).*/\1/p' "$work/bench.err")
[ -n "$nginx_pid" ] || { grep '^skipping nginx' "$work/bench.err" >&2; exit 1; }
nginx_pids=$(echo "$nginx_pid" $(pgrep -P "$nginx_pid") | tr ' ' ,)

perf stat -e "$events" --per-thread -p "$host_pid" -o "$work/host.perf" &
perf_pids+=($!)
perf stat -e "$events" --per-thread -p "$nginx_pids" -o "$work/nginx.perf" &
perf_pids+=($!)
# A baseline: the same events on the idle host for 5 s, before its first paced leg ends.
perf stat -e "$events" -p "$host_pid" -o "$work/idle.perf" -- sleep 5 >/dev/null 2>&1 || true

wait "$bench" || { cat "$work/bench.err" >&2; exit 1; }
for pid in "${perf_pids[@]}"; do wait "$pid" || true; done
perf_pids=()

python3 - "$work" <<'EOF'
import collections, json, re, sys
work = sys.argv[1]
out = open(f"{work}/bench.out").read()
summary = json.loads(next(l for l in out.splitlines() if l.startswith("SUMMARY "))[8:])
tokens = int(re.search(r"upstream answer: (\d+) tokens", out).group(1))

def turns(name):
    """Turns through a proxy in the paced levels, warm-up turns included."""
    total = 0
    for level in summary["paced"]["levels"]:
        for proxy in level["proxies"]:
            if proxy["name"] == name:
                leg = proxy["leg"]
                total += leg["turns"] + leg["errors"] + level["concurrency"]
    return total

def counts(path):
    """Event counts per thread (name-tid) of one `perf stat` output."""
    per_thread = collections.defaultdict(collections.Counter)
    for line in open(path):
        m = re.match(r"\s*(\S+-\d+)\s+([\d,]+)\s+\S+:(\S+)", line)
        if m:
            per_thread[m.group(1)][m.group(3)] += int(m.group(2).replace(",", ""))
    return per_thread

# nginx's readiness probe is one more turn through it.
for name, label, probe in (("gateway-host", "host", 0), ("nginx", "nginx", 1)):
    n = turns(name) + probe
    per_thread = counts(f"{work}/{label}.perf")
    total = sum(per_thread.values(), collections.Counter())
    print(f"== {name}: {n} turns of {tokens} tokens")
    print(f"  {'event':22} {'per turn':>9} {'per token':>9}")
    for event, k in sorted(total.items()):
        print(f"  {event:22} {k / n:9.2f} {k / n / tokens:9.3f}")
    print("  per thread, per turn:")
    for thread, c in sorted(per_thread.items()):
        row = ", ".join(f"{e} {k / n:.1f}" for e, k in sorted(c.items()) if k)
        if row:
            print(f"    {thread}: {row}")
idle = collections.Counter()
for line in open(f"{work}/idle.perf"):
    m = re.match(r"\s*([\d,]+)\s+\S+:(\S+)", line)
    if m:
        idle[m.group(2)] += int(m.group(1).replace(",", ""))
print("== idle host, 5 s: "
      + (", ".join(f"{e} {k}" for e, k in sorted(idle.items()) if k) or "no events"))
print()
paced = out[out.find("## Paced load"):]
print("\n".join(l for l in paced.splitlines()
                if l.startswith(("### Paced", "| metric", "| proxy context", "| proxy CPU"))))
print()
print(out[out.find("### The proxies side by side"):out.find("SUMMARY ")].strip())
EOF
