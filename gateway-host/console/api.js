// The host's HTTP API as the console uses it: the bearer token, JSON errors, streamed turns.

const TOKEN_KEY = 'gateway-host.console.token';
let token = sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || '';
let unauthorized = () => {};

/** A failed API call: the HTTP status and the host's `{error: {code, message}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** True when a token is held (its value is never shown). */
export function hasToken() {
  return token !== '';
}

/** Keep `value` for this tab, or on this device when `remember`. */
export function setToken(value, remember) {
  forgetToken();
  token = value.trim();
  (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
}

/** Drop the token everywhere. */
export function forgetToken() {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

/** Call `handler(message)` whenever the host answers 401. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function failure(response) {
  const text = await response.text();
  let error = {};
  try {
    error = JSON.parse(text).error || {};
  } catch {
    error = { message: text.slice(0, 300) };
  }
  const message = error.message || `HTTP ${response.status}`;
  if (response.status === 401) unauthorized(message);
  return new ApiError(response.status, error.code || `http_${response.status}`, message);
}

/** `fetch` with the token; throws [`ApiError`] unless the answer is 2xx. */
export async function call(method, path, body, extraHeaders = {}, signal = undefined) {
  const init = { method, headers: headers(extraHeaders), signal, cache: 'no-store' };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response;
}

/** GET a JSON document. */
export async function getJson(path) {
  return (await call('GET', path)).json();
}

/** GET a text document. */
export async function getText(path) {
  return (await call('GET', path)).text();
}

/** The console's own settings (public): `{auth_required, version}`. */
export async function consoleConfig() {
  const response = await fetch('/console/config.json', { cache: 'no-store' });
  return response.json();
}

/**
 * Run one turn (`POST /v1/conversation`, SSE) and call `onEvent` with every event as it
 * arrives. Resolves when the stream ends; throws [`ApiError`] when the host refuses the turn.
 */
export async function streamTurn(body, onEvent, signal) {
  const response = await call('POST', '/v1/conversation', body, { Accept: 'text/event-stream' }, signal);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parse = sseParser(onEvent);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parse(value);
  }
}

/** An incremental SSE parser: feed it text, it calls `onEvent` with each `data:` JSON. */
export function sseParser(onEvent) {
  let buffer = '';
  return (chunk) => {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame
        .split('\n')
        .map((line) => line.replace(/\r$/, ''))
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  };
}
