#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) with cargo-fuzz.
#
#   scripts/fuzz.sh            # all targets, 60 s each
#   scripts/fuzz.sh 300 sse_decoder completion_decoder
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without nightly the
# stable toolchain is used with RUSTC_BOOTSTRAP=1. Crashing inputs land in
# fuzz/artifacts/<target>/: copy each into the crate's regression folder
# (gateway-openai-compat/tests/fuzz-regressions/<target>/ or
# gateway-host/tests/fuzz-regressions/<target>/) so the normal test suite replays it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sse_decoder completion_decoder profile host_config)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 1
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  # Seed the corpus with the fixtures and profiles where they fit (the shared data folder
  # beside the repository adds its own when present).
  case "$target" in
    sse_decoder|completion_decoder)
      for f in ../gateway-openai-compat/tests/conformance/*.sse ../gateway-openai-compat/tests/fixtures/*.sse \
               ../../shared/conformance/*.sse; do
        [ -f "$f" ] && { printf '\x07'; cat "$f"; } > "corpus/$target/seed${f//[^A-Za-z0-9-]/_}" || true
      done ;;
    profile)
      for f in ../profiles/*.json ../tests/fixtures/openvoiceui/profiles/*.json ../../shared/openvoiceui/profiles/*.json; do
        [ -f "$f" ] && cp "$f" "corpus/$target/seed${f//[^A-Za-z0-9-]/_}" || true
      done ;;
  esac
  echo "== $target: ${seconds} s"
  "${fuzz[@]}" run -O "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 2>&1 \
    | grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|SUMMARY|panicked|Done [0-9]+ runs' || true
  if compgen -G "artifacts/$target/crash-*" >/dev/null; then
    echo "!! $target: crashing inputs in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
