// The session inspector: look a session up by key, see its history and in-flight turn,
// interrupt or delete it.

import * as api from './api.js';
import { announce, byId, notice, renderMessages } from './dom.js';

let shownKey = '';

/** Wire the inspector's controls (once). */
export function initSessions() {
  byId('lookup').addEventListener('submit', (e) => {
    e.preventDefault();
    shownKey = byId('lookup-key').value.trim();
    show();
  });
  byId('session-refresh').addEventListener('click', () => show());
  byId('session-interrupt').addEventListener('click', () => interrupt());
  byId('session-delete').addEventListener('click', () => remove());
}

function path(suffix = '') {
  return `/v1/sessions/${encodeURIComponent(shownKey)}${suffix}`;
}

async function show() {
  if (!shownKey) return;
  try {
    const session = await api.getJson(path());
    byId('session-backend').textContent = session.backend;
    byId('session-inflight').textContent = session.in_flight ? 'yes' : 'no';
    byId('session-queued').textContent = String(session.queued);
    byId('session-streamed').textContent = String(session.streamed_chars);
    byId('session-count').textContent = String(session.messages.length);
    byId('session-interrupt').disabled = !session.in_flight;
    renderMessages(byId('session-messages'), session.messages);
    byId('session-view').hidden = false;
    notice('');
  } catch (e) {
    notice(`Cannot look up session '${shownKey}': ${e.message}`);
  }
}

async function interrupt() {
  try {
    await api.call('POST', path('/interrupt'));
    announce('Turn interrupted');
  } catch (e) {
    notice(`Cannot interrupt: ${e.message}`);
  }
  await show();
}

async function remove() {
  if (!window.confirm(`Delete everything session '${shownKey}' remembers?`)) return;
  try {
    await api.call('DELETE', path());
    announce('Session deleted');
  } catch (e) {
    if (e.status !== 404) return notice(`Cannot delete: ${e.message}`);
  }
  await show();
}
