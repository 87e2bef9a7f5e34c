// The console's entry point: theme, tabs, the access token, then the three views.

import * as api from './api.js';
import { byId, notice } from './dom.js';
import { hideOverview, initOverview, showOverview } from './overview.js';
import { initPlayground, loadPlayground } from './playground.js';
import { initSessions } from './sessions.js';

const THEME_STORE = 'gateway-host.console.theme';
const VIEWS = ['playground', 'overview', 'sessions'];

function initTheme() {
  const select = byId('theme');
  const apply = (choice) => {
    if (choice === 'system') delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = choice;
  };
  select.value = localStorage.getItem(THEME_STORE) || 'system';
  apply(select.value);
  select.addEventListener('change', () => {
    localStorage.setItem(THEME_STORE, select.value);
    apply(select.value);
  });
}

function showView(name, focus = false) {
  for (const view of VIEWS) {
    const tab = byId(`tab-${view}`);
    const selected = view === name;
    tab.setAttribute('aria-selected', String(selected));
    tab.tabIndex = selected ? 0 : -1;
    byId(`view-${view}`).hidden = !selected;
    if (selected && focus) tab.focus();
  }
  if (name === 'overview') showOverview();
  else hideOverview();
  if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
}

function initTabs() {
  const tabs = byId('tabs');
  tabs.addEventListener('click', (e) => {
    const tab = e.target.closest('[role="tab"]');
    if (tab) showView(tab.id.slice(4));
  });
  tabs.addEventListener('keydown', (e) => {
    const at = VIEWS.indexOf(document.activeElement?.id?.slice(4));
    const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -at, End: VIEWS.length - 1 - at };
    if (at < 0 || !(e.key in moves)) return;
    e.preventDefault();
    showView(VIEWS[(at + moves[e.key] + VIEWS.length) % VIEWS.length], true);
  });
  window.addEventListener('hashchange', () => showView(viewFromHash()));
}

function viewFromHash() {
  const name = location.hash.slice(1);
  return VIEWS.includes(name) ? name : 'playground';
}

// ---------------------------------------------------------------- access token

function askForToken(message) {
  const dialog = byId('token-dialog');
  const error = byId('token-error');
  error.textContent = message ? `The host refused the token: ${message}` : '';
  error.hidden = !message;
  byId('token-button').hidden = false;
  if (dialog.open) return; // keep what is being typed
  byId('token-input').value = '';
  dialog.showModal();
  byId('token-input').focus();
}

function initToken() {
  byId('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    api.setToken(byId('token-input').value, byId('token-remember').checked);
    byId('token-input').value = '';
    byId('token-dialog').close();
    start();
  });
  byId('token-forget').addEventListener('click', () => {
    api.forgetToken();
    askForToken('');
  });
  byId('token-button').addEventListener('click', () => askForToken(''));
  api.onUnauthorized((message) => askForToken(api.hasToken() ? message : ''));
}

/** Load what every view needs; on 401 the token dialog is already open. */
async function start() {
  try {
    await loadPlayground();
    notice('');
    showView(viewFromHash());
  } catch (e) {
    if (e.status !== 401) notice(`Cannot reach the host's API: ${e.message}`);
  }
}

async function boot() {
  initTheme();
  initTabs();
  initToken();
  initPlayground();
  initOverview();
  initSessions();
  const config = await api.consoleConfig();
  byId('token-button').hidden = !config.auth_required;
  if (config.auth_required && !api.hasToken()) {
    askForToken('');
    return;
  }
  await start();
}

boot().catch((e) => notice(`The console failed to start: ${e.message}`));
