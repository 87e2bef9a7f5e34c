// The playground: pick a profile, send a turn, watch it stream, stop it like a barge-in,
// speak it, and see what the session remembers.

import * as api from './api.js';
import { announce, byId, el, formatMs, newSessionKey, notice, renderMessages } from './dom.js';

const KEY_STORE = 'gateway-host.console.session';
const PROFILE_STORE = 'gateway-host.console.profile';
const SPEAK_STORE = 'gateway-host.console.speak';

let current = null; // the turn streaming now
const gateways = new Map(); // profile id -> its gateway, for error reports

/** Wire the playground's controls (once). */
export function initPlayground() {
  const key = byId('session-key');
  key.value = sessionStorage.getItem(KEY_STORE) || newSessionKey();
  key.addEventListener('change', () => sessionKeyChanged());
  byId('new-session').addEventListener('click', () => {
    key.value = newSessionKey();
    sessionKeyChanged();
  });
  byId('profile').addEventListener('change', (e) => localStorage.setItem(PROFILE_STORE, e.target.value));
  byId('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });
  byId('message').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  byId('stop').addEventListener('click', () => stop());
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && current && !byId('token-dialog').open) stop();
  });
  byId('history-refresh').addEventListener('click', () => refreshHistory());
  byId('history-clear').addEventListener('click', () => clearSession());
  initSpeech();
}

/** Load the profiles and the session's history (after access is granted). */
export async function loadPlayground() {
  const { profiles } = await api.getJson('/v1/profiles');
  const select = byId('profile');
  const chosen = localStorage.getItem(PROFILE_STORE);
  select.replaceChildren(
    ...profiles.map((p) =>
      el('option', { value: p.id, text: `${p.name || p.id} (${p.id}) → ${p.gateway_id}` }),
    ),
  );
  if (profiles.some((p) => p.id === chosen)) select.value = chosen;
  gateways.clear();
  for (const p of profiles) gateways.set(p.id, p.gateway_id);
  sessionStorage.setItem(KEY_STORE, byId('session-key').value);
  await refreshHistory();
}

function sessionKey() {
  return byId('session-key').value.trim();
}

function sessionPath(suffix = '') {
  return `/v1/sessions/${encodeURIComponent(sessionKey())}${suffix}`;
}

function sessionKeyChanged() {
  const input = byId('session-key');
  if (!input.checkValidity()) {
    notice('A session key is 1 to 128 letters, digits or . _ : -');
    return;
  }
  notice('');
  sessionStorage.setItem(KEY_STORE, input.value);
  byId('turns').replaceChildren();
  byId('turns-empty').hidden = false;
  refreshHistory();
}

async function refreshHistory() {
  if (!byId('session-key').checkValidity()) return;
  try {
    const session = await api.getJson(sessionPath());
    renderMessages(byId('history'), session.messages);
  } catch (e) {
    byId('history').replaceChildren(el('li', { class: 'error', text: `Cannot read the history: ${e.message}` }));
  }
}

async function clearSession() {
  try {
    await api.call('DELETE', sessionPath());
  } catch (e) {
    if (e.status !== 404) return notice(`Cannot clear the session: ${e.message}`);
  }
  byId('turns').replaceChildren();
  byId('turns-empty').hidden = false;
  announce('Session cleared');
  await refreshHistory();
}

// ---------------------------------------------------------------- a turn

function send() {
  const message = byId('message').value.trim();
  if (current || !message) return;
  if (!byId('session-key').checkValidity()) return notice('Enter a valid session key first.');
  notice('');
  byId('message').value = '';
  runTurn(message);
}

function turnView(message) {
  const meta = el('dl', { class: 'meta' });
  const fields = {};
  for (const [name, label] of [
    ['ttft', 'TTFT'], ['browser', 'In browser'], ['total', 'Total'], ['gateway', 'Gateway'], ['finish', 'Finish'],
  ]) {
    fields[name] = el('dd', { 'data-field': name, text: '…' });
    meta.append(el('div', {}, el('dt', { text: label }), fields[name]));
  }
  const answer = el('p', { class: 'answer' });
  const timeline = el('ol', { class: 'timeline', 'aria-label': 'Tool actions', hidden: true });
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const root = el(
    'li',
    { class: 'turn', 'data-state': 'streaming', 'aria-busy': 'true' },
    el('div', { class: 'you' }, el('span', { class: 'who', text: 'You' }), el('p', { text: message })),
    el('div', { class: 'reply' }, el('span', { class: 'who', text: 'Assistant' }), answer, timeline, error, meta),
  );
  byId('turns-empty').hidden = true;
  byId('turns').append(root);
  return { root, answer, timeline, error, fields, meta };
}

async function runTurn(message) {
  const view = turnView(message);
  const profile = byId('profile').value;
  const turn = { view, profile, key: sessionKey(), shown: '', started: performance.now(), stopping: false, final: null };
  turn.controller = new AbortController();
  current = turn;
  setBusy(true);
  const body = { profile: profile || undefined, message, session_key: turn.key, sentences: speaking() };
  try {
    await api.streamTurn(body, (event) => onEvent(turn, event), turn.controller.signal);
    if (!turn.final) fail(turn, 'The connection closed before the turn ended.');
  } catch (e) {
    if (e.name === 'AbortError') fail(turn, 'Cancelled by the console: the host stored nothing for this turn.');
    else fail(turn, e.status ? `${e.message} (HTTP ${e.status}, ${e.code})` : `Cannot reach the host: ${e.message}`);
  } finally {
    current = null;
    setBusy(false);
    view.root.removeAttribute('aria-busy');
    refreshHistory();
  }
}

function onEvent(turn, event) {
  const { view } = turn;
  switch (event.type) {
    case 'handshake':
      view.fields.ttft.textContent = formatMs(event.ms);
      view.fields.ttft.dataset.ms = event.ms;
      view.fields.gateway.textContent = event.gateway || '–';
      break;
    case 'delta':
      if (turn.stopping) break; // after Stop only what was already shown counts
      if (!turn.shown) markBrowserTtft(turn);
      turn.shown += event.text;
      view.answer.textContent = turn.shown;
      break;
    case 'sentence':
      if (!turn.stopping) speak(event.text);
      break;
    case 'action':
      addAction(view.timeline, event.action || {});
      break;
    case 'text_done':
      finish(turn, event);
      break;
    case 'error':
      turn.final = event;
      fail(turn, event.error);
      break;
    default:
      break;
  }
}

function markBrowserTtft(turn) {
  const ms = performance.now() - turn.started;
  turn.view.fields.browser.textContent = formatMs(ms);
  turn.view.fields.browser.dataset.ms = ms.toFixed(1);
}

function finish(turn, event) {
  const { view } = turn;
  turn.final = event;
  const timing = event.timing || {};
  if (timing.ttft_ms !== undefined && timing.ttft_ms !== null) {
    view.fields.ttft.textContent = formatMs(timing.ttft_ms);
    view.fields.ttft.dataset.ms = timing.ttft_ms;
  }
  view.fields.total.textContent = formatMs(timing.total_ms);
  view.fields.total.dataset.ms = timing.total_ms ?? '';
  if (event.usage) {
    const { prompt_tokens: prompt, completion_tokens: answer } = event.usage;
    view.meta.append(el('div', {}, el('dt', { text: 'Tokens' }), el('dd', { 'data-field': 'tokens', text: `${prompt} in, ${answer} out` })));
  }
  if (event.interrupted) {
    view.fields.finish.textContent = 'interrupted';
    view.root.dataset.state = 'interrupted';
    announce('Answer stopped');
  } else {
    // Finished before a Stop reached the host: the whole answer was stored, so show it.
    view.answer.textContent = event.response;
    view.fields.finish.textContent = event.finish_reason || 'done';
    view.root.dataset.state = 'done';
    announce('Answer complete');
  }
  clearPending(view);
}

function fail(turn, message) {
  const { view } = turn;
  view.error.textContent = message;
  view.error.hidden = false;
  view.fields.finish.textContent = 'error';
  if (view.fields.gateway.textContent === '…') view.fields.gateway.textContent = `${gateways.get(turn.profile) || '–'} (failed)`;
  view.root.dataset.state = 'error';
  clearPending(view);
  announce(`Turn failed: ${message}`);
}

function clearPending(view) {
  for (const field of Object.values(view.fields)) if (field.textContent === '…') field.textContent = '–';
}

/** One row per tool call: added at `start`, updated in place by its `result` or `error`. */
function addAction(timeline, action) {
  const id = action.toolCallId ? String(action.toolCallId) : '';
  let row = id ? [...timeline.children].find((li) => li.dataset.toolCall === id) : null;
  if (!row) {
    row = el('li', { class: 'action', 'data-tool-call': id || undefined, 'data-started': action.ts });
    timeline.append(row);
  }
  const phase = action.phase || action.type || 'action';
  const detail = phase === 'start' ? action.input : action.result ?? action.error;
  const text = detail === undefined || detail === null ? '' : typeof detail === 'string' ? detail : JSON.stringify(detail);
  const took = phase !== 'start' && row.dataset.started && action.ts ? elapsedMs(row.dataset.started, action.ts) : NaN;
  row.dataset.phase = phase;
  row.replaceChildren(
    el('span', { class: 'phase', text: phase === 'start' ? 'running' : phase }),
    el('span', { class: 'tool', text: action.name || action.type || 'tool' }),
    Number.isFinite(took) ? el('span', { class: 'took', text: formatMs(took) }) : null,
    text ? el('code', { text: text.length > 200 ? `${text.slice(0, 200)}…` : text }) : null,
  );
  timeline.hidden = false;
}

/** Milliseconds between two action timestamps, in epoch milliseconds or (Python's) seconds. */
function elapsedMs(from, to) {
  const scale = Number(to) > 1e11 ? 1 : 1000;
  return (Number(to) - Number(from)) * scale;
}

/** Stop = barge-in: the host ends the turn and stores only what was already shown. */
async function stop() {
  const turn = current;
  if (!turn || turn.stopping) return;
  turn.stopping = true;
  byId('stop').disabled = true;
  cancelSpeech();
  try {
    await api.call('POST', `/v1/sessions/${encodeURIComponent(turn.key)}/interrupt`, { heard: turn.shown });
  } catch (e) {
    // Nothing to interrupt (the turn already ended) or the call failed: if the stream is still
    // open, close it, which cancels the turn without storing anything.
    if (!turn.final) turn.controller.abort();
  }
}

function setBusy(busy) {
  byId('send').disabled = busy;
  byId('stop').disabled = !busy;
  byId('talk').disabled = busy;
  if (!busy) byId('message').focus();
}

// ---------------------------------------------------------------- speech

function speaking() {
  return byId('speak').checked && 'speechSynthesis' in window;
}

function speak(text) {
  if (!speaking() || !text.trim()) return;
  window.speechSynthesis.speak(new SpeechSynthesisUtterance(text));
}

function cancelSpeech() {
  if ('speechSynthesis' in window) window.speechSynthesis.cancel();
}

function initSpeech() {
  const toggle = byId('speak');
  if (!('speechSynthesis' in window)) {
    toggle.disabled = true;
    toggle.title = 'This browser cannot speak';
  }
  toggle.checked = localStorage.getItem(SPEAK_STORE) === 'on' && !toggle.disabled;
  toggle.addEventListener('change', () => {
    localStorage.setItem(SPEAK_STORE, toggle.checked ? 'on' : 'off');
    if (!toggle.checked) cancelSpeech();
  });
  const Recognition = window.SpeechRecognition || window.webkitSpeechRecognition;
  if (Recognition) initPushToTalk(Recognition);
}

function initPushToTalk(Recognition) {
  const button = byId('talk');
  button.hidden = false;
  let recognition = null;
  let heard = '';
  const start = () => {
    if (recognition || current) return;
    heard = '';
    recognition = new Recognition();
    recognition.interimResults = true;
    recognition.lang = document.documentElement.lang || 'en';
    recognition.onresult = (e) => {
      heard = Array.from(e.results, (r) => r[0].transcript).join('');
      byId('message').value = heard;
    };
    recognition.onerror = (e) => notice(`Speech recognition: ${e.error}`);
    recognition.onend = () => {
      recognition = null;
      button.setAttribute('aria-pressed', 'false');
      if (heard.trim()) send();
    };
    button.setAttribute('aria-pressed', 'true');
    recognition.start();
  };
  const end = () => recognition?.stop();
  button.addEventListener('pointerdown', start);
  button.addEventListener('pointerup', end);
  button.addEventListener('pointerleave', end);
  button.addEventListener('keydown', (e) => {
    if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) {
      e.preventDefault();
      start();
    }
  });
  button.addEventListener('keyup', (e) => {
    if (e.key === ' ' || e.key === 'Enter') end();
  });
}
