#!/usr/bin/env bash
# The whole test suite: unit, conformance and end-to-end tests of every crate, the Python
# client tests (OpenVoiceUI plugin, official openai SDK) and the Redis replica tests.
# Installs what is missing first: redis-server, nginx and openssl (replicas behind a load
# balancer, Redis over TLS), chromium and chromium-driver (Debian, when run as root), the
# Python test packages (the openai SDK, the MCP time server), the console's npm packages
# (playwright-core, which drives the system chromium; no browser is downloaded) and the
# reference MCP server the tool tests use (integrations/mcp-servers).
set -euo pipefail
cd "$(dirname "$0")/.."

servers=()
command -v redis-server >/dev/null 2>&1 || servers+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || servers+=(nginx)
command -v openssl >/dev/null 2>&1 || servers+=(openssl)
if [ "${#servers[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${servers[*]} (Debian packages) for the replica and Redis tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${servers[@]}" >/dev/null
  else
    echo "the replica tests need ${servers[*]}: install them (Debian/Ubuntu: apt-get install ${servers[*]})" >&2
    exit 1
  fi
fi

missing_debs=()
command -v chromium >/dev/null 2>&1 || missing_debs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing_debs+=(chromium-driver)
command -v npm >/dev/null 2>&1 || missing_debs+=(nodejs npm)
if [ "${#missing_debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing_debs[*]} (Debian packages) for the console's browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
  else
    echo "the console's browser tests need ${missing_debs[*]}: install them (Debian: apt-get install ${missing_debs[*]})" >&2
    exit 1
  fi
fi

if [ ! -d integrations/console/node_modules/playwright-core ]; then
  echo "installing the console test packages (integrations/console/package-lock.json)"
  (cd integrations/console && npm ci --no-audit --no-fund --silent)
fi

if [ ! -f integrations/mcp-servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js ]; then
  echo "installing the MCP test server (integrations/mcp-servers/package-lock.json)"
  (cd integrations/mcp-servers && npm ci --no-audit --no-fund --silent)
fi

if ! python3 -c 'import openai, mcp_server_time' >/dev/null 2>&1; then
  echo "installing the Python test packages (integrations/requirements-test.txt)"
  python3 -m pip install -q --disable-pip-version-check -r integrations/requirements-test.txt
fi

exec cargo test --workspace --locked "$@"
