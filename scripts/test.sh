#!/usr/bin/env bash
# The whole test suite: unit, conformance and end-to-end tests of every crate, the Python
# client tests (OpenVoiceUI plugin, official openai SDK) and the Redis replica tests.
# Installs what is missing first: redis-server (Debian, when run as root) and the Python
# test packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian package) for the shared-memory tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is required by the tests: install it (Debian/Ubuntu: apt-get install redis-server)" >&2
    exit 1
  fi
fi

if ! python3 -c 'import openai' >/dev/null 2>&1; then
  echo "installing the Python test packages (integrations/requirements-test.txt)"
  python3 -m pip install -q --disable-pip-version-check -r integrations/requirements-test.txt
fi

exec cargo test --workspace --locked "$@"
