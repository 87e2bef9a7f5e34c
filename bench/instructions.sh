#!/usr/bin/env bash
# Instructions the host executes per turn, counted by valgrind's callgrind: a repeatable
# number for comparing two builds on a machine too busy for wall-clock timings.
#
# Usage: bench/instructions.sh [HOST_BIN] [-- extra gateway-bench arguments]
#   HOST_BIN defaults to target/profiling/gateway-host ($CARGO_TARGET_DIR is honoured), built here with the `profiling` profile
#   (the release code plus line tables, so callgrind_annotate can name source lines). The load
#   is one worker, answers at once; pass e.g. `-- --concurrency 10 --token-delay-ms 2` for
#   paced tokens.
#
# It runs the benchmark twice (200 and 1,200 measured turns through the host, no warm-up,
# no paced levels, no sessions phase, no tool round, which would start a second host) with
# the host under callgrind, and prints (I(1200) - I(200)) / 1000: the start-up and the probe
# turn cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }

host_arg=""
[ $# -gt 0 ] && [ "$1" != "--" ] && { host_arg=$1; shift; }
[ "${1:-}" = "--" ] && shift
extra=("$@")
[ ${#extra[@]} -eq 0 ] && extra=(--concurrency 1)

packages=(-p gateway-bench)
[ -z "$host_arg" ] && packages+=(-p gateway-host)
cargo build --profile profiling -q "${packages[@]}"
bin=${CARGO_TARGET_DIR:-target}/profiling
host=$(realpath "${host_arg:-$bin/gateway-host}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The bench kills its host with SIGKILL, which would lose callgrind's counts: the wrapper runs
# valgrind in the background (it outlives the killed wrapper) and the script stops it with
# SIGTERM, on which the host shuts down cleanly and callgrind writes its totals.
cat >"$work/wrap.sh" <<EOF
#!/usr/bin/env bash
valgrind --tool=callgrind --callgrind-out-file="\$CG_OUT" "$host" "\$@" 2>"\$CG_OUT.log" &
echo \$! >"\$CG_OUT.pid"
wait
EOF
chmod +x "$work/wrap.sh"

count() {
  local turns=$1 out="$work/cg.$1"
  CG_OUT=$out "$bin/gateway-bench" --host-bin "$work/wrap.sh" --turns "$turns" \
    --no-warmup --startup-runs 0 --skip-sessions --tool-turns 0 --paced-token-delay-ms 0 \
    --turn-timeout-secs 300 --max-seconds 900 "${extra[@]}" >"$out.bench" 2>&1 || {
    cat "$out.bench" >&2
    exit 1
  }
  local pid
  pid=$(cat "$out.pid")
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sed -n 's/.*I *refs: *//p' "$out.log" | tr -d ,
}

small=$(count 200)
large=$(count 1200)
echo "host: $host"
echo "instructions: $small (200 turns), $large (1200 turns)"
echo "instructions per turn: $(((large - small) / 1000))"
