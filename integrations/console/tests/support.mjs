// Shared by the console's browser tests: a scripted OpenAI-compatible upstream, the real
// gateway-host binary as a process, headless Chromium (Debian's, driven by playwright-core),
// and an independent reading of /metrics to check the page against.
//
// Every wait is bounded by a deadline and ends on a condition, never on a fixed delay.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const DEADLINE_MS = 20_000;
export const UPSTREAM_KEY = 'sk-console-SECRET-5d1f0c9a';
export const SCREENSHOTS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

// ---------------------------------------------------------------- scripted upstream

function chunk(delta, finish = null) {
  const body = {
    id: 'chatcmpl-console', object: 'chat.completion.chunk', created: 1, model: 'mock-model',
    choices: [{ index: 0, delta, finish_reason: finish }],
  };
  return `data: ${JSON.stringify(body)}\n\n`;
}

const tokens = (list) => list.map((t) => chunk({ content: t })).join('');
const END = chunk({}, 'stop') + 'data: [DONE]\n\n';
// OpenAI's closing usage chunk (`stream_options.include_usage`): empty choices, then [DONE].
const USAGE = `data: ${JSON.stringify({
  id: 'chatcmpl-console', object: 'chat.completion.chunk', created: 1, model: 'mock-model', choices: [],
  usage: { prompt_tokens: 21, completion_tokens: 7, total_tokens: 28 },
})}\n\n`;

/**
 * An OpenAI-compatible upstream on 127.0.0.1 whose answer depends on the user's message:
 * `[hold]` sends one token and waits for `release()`; `[slow]` sends three sentences and then
 * never finishes (until the host hangs up: `closed` resolves); `[fail]` answers HTTP 500 with a
 * provider error; anything else is answered at once.
 */
export async function startUpstream() {
  const upstream = { requests: [], releases: [], closes: [] };
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ object: 'list', data: [{ id: 'mock-model', object: 'model' }] }));
    }
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => answer(upstream, JSON.parse(raw || '{}'), res));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  upstream.url = `http://127.0.0.1:${server.address().port}/v1`;
  upstream.release = () => upstream.releases.splice(0).forEach((r) => r());
  upstream.close = () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); });
  return upstream;
}

function answer(upstream, body, res) {
  upstream.requests.push(body);
  const last = [...(body.messages || [])].reverse().find((m) => m.role === 'user')?.content || '';
  if (last.includes('[fail]')) {
    res.writeHead(500, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ error: { message: 'The model is overloaded', type: 'server_error' } }));
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.write(chunk({ role: 'assistant', content: '' }));
  if (last.includes('[hold]')) {
    res.write(tokens(['Streaming ']));
    upstream.releases.push(() => res.end(tokens(['works ', 'fine.']) + END));
  } else if (last.includes('[slow]')) {
    res.write(tokens(['One. ', 'Two. ', 'Three. ']));
    upstream.closes.push(new Promise((resolve) => res.on('close', resolve)));
  } else {
    res.end(tokens(['You said: ', last.slice(0, 40), '.']) + chunk({}, 'stop') + USAGE + 'data: [DONE]\n\n');
  }
}

// ---------------------------------------------------------------- the host process

/** A port on 127.0.0.1 where nothing listens. */
export async function refusedPort() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const PROFILES = [
  { id: 'default', name: 'Mock assistant', adapter_config: { gateway_id: 'mock' } },
  { id: 'broken', name: 'Broken backend', adapter_config: { gateway_id: 'down' } },
  { id: 'rescued', name: 'Rescued by fallback', adapter_config: { gateway_id: 'down', fallback_gateway_ids: ['mock'] } },
];

function hostFiles(upstream, downPort, tokens) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-host-'));
  fs.mkdirSync(path.join(dir, 'profiles'));
  fs.mkdirSync(path.join(dir, 'prompts'));
  for (const profile of PROFILES) {
    fs.writeFileSync(path.join(dir, 'profiles', `${profile.id}.json`), JSON.stringify(profile));
  }
  fs.writeFileSync(path.join(dir, 'prompts', 'voice-system-prompt.md'), '# console tests\nBe brief.\n');
  const toml = [
    `profiles_dir = ${JSON.stringify(path.join(dir, 'profiles'))}`,
    `prompts_dir = ${JSON.stringify(path.join(dir, 'prompts'))}`,
    tokens.length ? `[auth]\ntokens = ${JSON.stringify(tokens)}` : '',
    `[gateways.mock]\nkind = "openai-compat"\nbase_url = "${upstream.url}"\napi_key_env = "MOCK_API_KEY"\nmodel = "mock-model"`,
    `[gateways.down]\nkind = "openai-compat"\nbase_url = "http://127.0.0.1:${downPort}/v1"\nauth = "none"\nmodel = "unreachable"`,
  ];
  fs.writeFileSync(path.join(dir, 'gateway.toml'), toml.join('\n\n'));
  return dir;
}

/** The real `gateway-host serve` ($GATEWAY_HOST_BIN) in a clean environment. */
export async function startHost(upstream, { tokens = [] } = {}) {
  const bin = process.env.GATEWAY_HOST_BIN;
  if (!bin) throw new Error('GATEWAY_HOST_BIN must name the gateway-host binary');
  const dir = hostFiles(upstream, await refusedPort(), tokens);
  const child = spawn(bin, ['serve', '--bind', '127.0.0.1:0', '--config', path.join(dir, 'gateway.toml')], {
    cwd: dir,
    env: { PATH: process.env.PATH, MOCK_API_KEY: UPSTREAM_KEY, RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stderr.on('data', (d) => (output += d));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`host did not start:\n${output}`)), DEADLINE_MS);
    child.stdout.on('data', (d) => {
      output += d;
      const match = /gateway-host listening on (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`host exited (${code}):\n${output}`)));
  });
  const headers = tokens.length ? { Authorization: `Bearer ${tokens[0]}` } : {};
  return {
    url,
    output: () => output,
    /** GET a path as JSON (or text), with the first token when auth is on. */
    async get(p, as = 'json') {
      const response = await fetch(url + p, { headers });
      return as === 'json' ? response.json() : response.text();
    },
    /** POST a turn straight to the host (not through the page); resolves to the SSE text. */
    async turn(body) {
      const response = await fetch(`${url}/v1/conversation`, {
        method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
      return response.text();
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.on('exit', resolve)));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- the browser

/** Debian's headless Chromium with a fresh profile. */
export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium chromium-driver`);
  const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'console-chromium-'));
  const context = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
  });
  context.setDefaultTimeout(DEADLINE_MS);
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(userData, { recursive: true, force: true });
    },
  };
}

/** A new page whose console errors and uncaught exceptions are collected in `errors`. */
export async function openPage(browser, url) {
  const page = await browser.context.newPage();
  const errors = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  return { page, errors };
}

/** Save a screenshot under integrations/console/screenshots/ (git-ignored). */
export async function screenshot(page, name) {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

// ---------------------------------------------------------------- /metrics, read independently

/** Sum of every sample of `name` whose labels include `match`. */
export function metricSum(text, name, match = {}) {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^(\w+)(?:\{([^}]*)\})? (\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels = Object.fromEntries([...(m[2] || '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(match).every(([k, v]) => labels[k] === v)) total += Number(m[3]);
  }
  return total;
}

/** The smallest TTFT bucket bound (seconds) holding the `q` quantile of `gateway`, or 'inf'. */
export function ttftBucket(text, gateway, q) {
  const count = metricSum(text, 'gateway_host_ttft_seconds_count', { gateway });
  const bounds = [...text.matchAll(/^gateway_host_ttft_seconds_bucket\{([^}]*)\} (\S+)$/gm)]
    .filter((m) => m[1].includes(`gateway="${gateway}"`))
    .map((m) => ({ le: /le="([^"]+)"/.exec(m[1])[1], n: Number(m[2]) }))
    .sort((a, b) => (a.le === '+Inf' ? 1 : b.le === '+Inf' ? -1 : Number(a.le) - Number(b.le)));
  const hit = bounds.find((b) => b.n >= q * count);
  return !hit || hit.le === '+Inf' ? 'inf' : Number(hit.le);
}
