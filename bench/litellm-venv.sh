#!/usr/bin/env bash
# Installs LiteLLM's proxy server, at a pinned version, into a virtualenv for the bench's
# LiteLLM leg. The bench looks for it at <target dir>/litellm-venv/bin/litellm unless told
# otherwise with --litellm or BENCH_LITELLM.
#
# Usage: bench/litellm-venv.sh [DIR]
#   DIR defaults to ${CARGO_TARGET_DIR:-target}/litellm-venv; PYTHON picks the interpreter
#   (python3 by default; LiteLLM needs 3.9 or later). Needs PyPI; takes a minute or two.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.80.5
dir=${1:-${CARGO_TARGET_DIR:-target}/litellm-venv}
python=${PYTHON:-python3}

"$python" -m venv "$dir"
"$dir/bin/python" -m pip install -q --disable-pip-version-check "litellm[proxy]==$version"
echo "installed: $("$dir/bin/python" -c 'import importlib.metadata as m; print("litellm", m.version("litellm"))')"
echo "the bench finds it at $dir/bin/litellm (or pass --litellm $(realpath "$dir")/bin/litellm)"
