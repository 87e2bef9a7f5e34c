// The overview: every gateway (configured, healthy, probe latency, who uses it), live TTFT and
// turn rates from /metrics, errors by cause, turns in flight. Polls while it is on screen.

import * as api from './api.js';
import { byId, el, formatMs, notice, svg } from './dom.js';
import { largestBound, meanMs, parsePrometheus, quantileBucket, summarize } from './metrics.js';

const METRICS_EVERY_MS = 2000;
const GATEWAYS_EVERY = 5; // probe gateways (GET /v1/gateways) every 5th update
const CHART_POINTS = 30; // one minute at one update every 2 s

const state = {
  running: false, paused: false, timer: 0, ticks: 0, previous: null,
  gateways: [], profiles: [], cards: new Map(), series: new Map(),
};

/** Wire the overview's controls (once). */
export function initOverview() {
  const pause = byId('overview-pause');
  pause.addEventListener('click', () => {
    state.paused = !state.paused;
    pause.setAttribute('aria-pressed', String(state.paused));
    pause.textContent = state.paused ? 'Resume updates' : 'Pause updates';
    if (!state.paused) schedule(0);
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.running) schedule(0);
  });
}

/** Start updating (the overview is shown). */
export function showOverview() {
  state.running = true;
  state.ticks = 0;
  schedule(0);
}

/** Stop updating (another view is shown). */
export function hideOverview() {
  state.running = false;
  clearTimeout(state.timer);
}

function schedule(delay) {
  clearTimeout(state.timer);
  state.timer = setTimeout(tick, delay);
}

async function tick() {
  if (!state.running || state.paused || document.hidden) return;
  try {
    if (state.ticks % GATEWAYS_EVERY === 0) await loadGateways();
    const summary = summarize(parsePrometheus(await api.getText('/metrics')));
    render(summary, performance.now());
    state.ticks += 1;
    const view = byId('view-overview');
    view.dataset.updates = String(Number(view.dataset.updates || 0) + 1);
    byId('overview-updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    notice('');
  } catch (e) {
    byId('overview-updated').textContent = `Update failed: ${e.message}`;
  }
  if (state.running && !state.paused) schedule(METRICS_EVERY_MS);
}

async function loadGateways() {
  const [{ gateways }, { profiles }] = await Promise.all([api.getJson('/v1/gateways'), api.getJson('/v1/profiles')]);
  // Fallbacks are in each profile as written (adapter_config.fallback_gateway_ids).
  const full = await Promise.all(profiles.map((p) => api.getJson(`/v1/profiles/${encodeURIComponent(p.id)}`)));
  state.gateways = gateways;
  state.profiles = profiles.map((p, i) => ({ ...p, fallbacks: full[i]?.adapter_config?.fallback_gateway_ids || [] }));
  renderProfiles();
}

// ---------------------------------------------------------------- rendering

function setStat(node, value, text = String(value)) {
  node.textContent = text;
  node.dataset.value = String(value);
}

function render(summary, now) {
  const previous = state.previous;
  const seconds = previous ? (now - previous.at) / 1000 : 0;
  const rate = (a, b) => (seconds > 0 ? Math.max(0, a - b) / seconds : null);
  const total = rate(summary.requests, previous?.summary.requests ?? 0);
  setStat(byId('stat-rate'), total ?? '', total === null ? '–' : total.toFixed(1));
  setStat(byId('stat-turns'), summary.requests);
  setStat(byId('stat-inflight'), summary.inFlight);
  setStat(byId('stat-errors'), summary.errors);
  setStat(byId('stat-fallbacks'), summary.fallbacks);
  setStat(byId('stat-retries'), summary.retries);
  const ids = new Set([...state.gateways.map((g) => g.id), ...summary.gateways.keys()]);
  const container = byId('gateways');
  for (const id of ids) {
    const stats = summary.gateways.get(id) || { requests: 0, errors: 0, ttft: { count: 0, sum: 0, buckets: [] } };
    const before = previous?.summary.gateways.get(id);
    record(id, stats, before, seconds);
    const card = cardFor(id, container);
    renderCard(card, state.gateways.find((g) => g.id === id), stats);
    renderChart(card, state.series.get(id));
  }
  renderCauses(summary.causes);
  state.previous = { at: now, summary };
}

function record(id, stats, before, seconds) {
  if (!before || seconds <= 0) return;
  const turns = Math.max(0, stats.requests - before.requests);
  const count = stats.ttft.count - before.ttft.count;
  const mean = count > 0 ? ((stats.ttft.sum - before.ttft.sum) / count) * 1000 : null;
  const series = state.series.get(id) || [];
  series.push({ rate: turns / seconds, mean });
  if (series.length > CHART_POINTS) series.shift();
  state.series.set(id, series);
}

const STATS = [
  ['turns', 'Turns'], ['errors', 'Errors'], ['ttft-count', 'TTFT samples'], ['ttft-mean', 'TTFT mean'],
  ['ttft-p50', 'TTFT p50'], ['ttft-p95', 'TTFT p95'], ['ttft-p99', 'TTFT p99'],
];

function cardFor(id, container) {
  if (state.cards.has(id)) return state.cards.get(id);
  const stats = el('dl', { class: 'stats' });
  for (const [name, label] of STATS) {
    stats.append(el('div', {}, el('dt', { text: label }), el('dd', { 'data-stat': name, text: '–' })));
  }
  const card = el(
    'article',
    { class: 'gateway', 'data-gateway': id, 'aria-label': `Gateway ${id}` },
    el('header', {}, el('h4', { text: id }), el('span', { class: 'badge', 'data-field': 'health' })),
    el('p', { class: 'sub', 'data-field': 'desc' }),
    el('p', { class: 'reason', 'data-field': 'reason', hidden: true }),
    stats,
    el('figure', { class: 'chart' }, el('figcaption', { 'data-field': 'chart-caption' })),
    el('p', { class: 'uses', 'data-field': 'uses' }),
  );
  container.append(card);
  state.cards.set(id, card);
  return card;
}

function field(card, name) {
  return card.querySelector(`[data-field="${name}"]`);
}

function renderCard(card, info, stats) {
  const health = field(card, 'health');
  const status = !info ? 'unknown' : !info.configured ? 'not configured' : info.healthy ? 'healthy' : 'down';
  health.textContent = status;
  health.dataset.status = status.replace(' ', '-');
  const probe = info?.latency_ms !== null && info?.latency_ms !== undefined ? `probe ${formatMs(info.latency_ms)}` : null;
  field(card, 'desc').textContent = [info?.kind, info?.default_model, probe].filter(Boolean).join(' · ');
  const reason = field(card, 'reason');
  const probeFailed = info?.configured && !info.healthy ? 'The health probe failed.' : '';
  reason.textContent = info && !info.healthy ? info.reason || probeFailed : '';
  reason.hidden = !reason.textContent;
  const stat = (name) => card.querySelector(`[data-stat="${name}"]`);
  setStat(stat('turns'), stats.requests);
  setStat(stat('errors'), stats.errors);
  setStat(stat('ttft-count'), stats.ttft.count);
  const mean = meanMs(stats.ttft);
  setStat(stat('ttft-mean'), mean ?? '', formatMs(mean));
  for (const [name, q] of [['ttft-p50', 0.5], ['ttft-p95', 0.95], ['ttft-p99', 0.99]]) {
    renderQuantile(stat(name), stats.ttft, q);
  }
  field(card, 'uses').textContent = usesText(card.dataset.gateway);
}

function renderQuantile(node, ttft, q) {
  const bucket = quantileBucket(ttft, q);
  if (!bucket) return setStat(node, '', '–');
  if (!Number.isFinite(bucket.le)) return setStat(node, 'inf', `> ${formatMs(largestBound(ttft) * 1000)}`);
  return setStat(node, bucket.le, `≤ ${formatMs(bucket.le * 1000)}`);
}

function usesText(id) {
  const primary = state.profiles.filter((p) => p.gateway_id === id).map((p) => p.id);
  const fallback = state.profiles.filter((p) => p.fallbacks.includes(id)).map((p) => p.id);
  const parts = [];
  if (primary.length) parts.push(`Answers: ${primary.join(', ')}`);
  if (fallback.length) parts.push(`Fallback for: ${fallback.join(', ')}`);
  return parts.join(' · ') || 'No profile uses this gateway.';
}

function renderChart(card, series = []) {
  const means = series.map((p) => p.mean).filter((m) => m !== null);
  const peakMean = means.length ? Math.max(...means) : null;
  const peakRate = Math.max(0, ...series.map((p) => p.rate));
  const figure = card.querySelector('figure.chart');
  figure.querySelector('svg')?.remove();
  figure.prepend(chartSvg(series, peakRate || 1, peakMean || 1));
  const last = series[series.length - 1];
  field(card, 'chart-caption').textContent = last
    ? `Last ${series.length} updates: mean TTFT peak ${formatMs(peakMean)}, ` +
      `peak ${peakRate.toFixed(1)} turns/s, now ${last.rate.toFixed(1)} turns/s`
    : 'Collecting: the chart starts with the next update.';
}

/** Bars for turns per second, a line for mean TTFT, newest on the right. */
function chartSvg(series, maxRate, maxMean) {
  const [width, height] = [300, 70];
  const step = width / CHART_POINTS;
  const offset = (CHART_POINTS - series.length) * step;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', 'aria-hidden': 'true' });
  series.forEach((p, i) => {
    const h = (p.rate / maxRate) * (height - 4);
    chart.append(svg('rect', { class: 'bar', x: offset + i * step, y: height - h, width: step * 0.8, height: h }));
  });
  const points = series
    .map((p, i) => (p.mean === null ? null : [offset + (i + 0.4) * step, height - 2 - (p.mean / maxMean) * (height - 8)]))
    .filter(Boolean)
    .map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`);
  if (points.length) chart.append(svg('polyline', { class: 'line', points: points.join(' ') }));
  return chart;
}

function renderCauses(causes) {
  const body = byId('errors-table').tBodies[0];
  body.replaceChildren(
    ...causes.map((c) =>
      el(
        'tr',
        { 'data-gateway': c.gateway, 'data-cause': c.cause },
        el('td', { text: c.gateway || '(host)' }),
        el('td', { text: c.cause }),
        el('td', { 'data-value': c.count, text: c.count }),
      ),
    ),
  );
  if (!causes.length) body.append(el('tr', {}, el('td', { colspan: 3, class: 'empty', text: 'No errors.' })));
}

function renderProfiles() {
  const body = byId('profiles-table').tBodies[0];
  body.replaceChildren(
    ...state.profiles.map((p) =>
      el(
        'tr',
        { 'data-profile': p.id },
        el('td', { text: p.id }),
        el('td', { text: p.name || '' }),
        el('td', { text: p.gateway_id }),
        el('td', { text: p.fallbacks.join(', ') || '–' }),
        el('td', { text: p.model || '(gateway default)' }),
      ),
    ),
  );
}
