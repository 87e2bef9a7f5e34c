// Reading the host's `/metrics` (Prometheus / OpenMetrics text) into what the overview shows.
// Pure functions: no DOM, no fetch.

const PREFIX = 'gateway_host_';

/** Every sample of a Prometheus text exposition: `{name, labels, value}`. */
export function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    samples.push({ name: match[1], labels: parseLabels(match[2] || ''), value: parseValue(match[3]) });
  }
  return samples;
}

function parseLabels(text) {
  const labels = {};
  for (const [, name, raw] of text.matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
    labels[name] = raw.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
  }
  return labels;
}

function parseValue(text) {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

function gatewayEntry(gateways, id) {
  if (!gateways.has(id)) {
    gateways.set(id, { requests: 0, errors: 0, ttft: { count: 0, sum: 0, buckets: [] } });
  }
  return gateways.get(id);
}

/**
 * The overview's numbers: totals, errors by cause and, per gateway, turns, errors and the TTFT
 * histogram (`buckets` sorted by `le`, cumulative counts, seconds).
 */
export function summarize(samples) {
  const summary = { requests: 0, errors: 0, inFlight: 0, fallbacks: 0, retries: 0, causes: [], gateways: new Map() };
  for (const { name, labels, value } of samples) {
    const metric = name.startsWith(PREFIX) ? name.slice(PREFIX.length) : null;
    if (metric === 'requests_total') {
      summary.requests += value;
      gatewayEntry(summary.gateways, labels.gateway).requests += value;
    } else if (metric === 'errors_total') {
      summary.errors += value;
      summary.causes.push({ gateway: labels.gateway || '', cause: labels.cause, count: value });
      if (labels.gateway) gatewayEntry(summary.gateways, labels.gateway).errors += value;
    } else if (metric === 'in_flight_streams') {
      summary.inFlight = value;
    } else if (metric === 'fallbacks_total') {
      summary.fallbacks += value;
    } else if (metric === 'retries_total') {
      summary.retries += value;
    } else if (metric?.startsWith('ttft_seconds_')) {
      addTtft(gatewayEntry(summary.gateways, labels.gateway).ttft, metric, labels, value);
    }
  }
  for (const entry of summary.gateways.values()) entry.ttft.buckets.sort((a, b) => a.le - b.le);
  summary.causes.sort((a, b) => b.count - a.count || a.cause.localeCompare(b.cause));
  return summary;
}

function addTtft(ttft, metric, labels, value) {
  if (metric === 'ttft_seconds_count') ttft.count = value;
  else if (metric === 'ttft_seconds_sum') ttft.sum = value;
  else if (metric === 'ttft_seconds_bucket') ttft.buckets.push({ le: parseValue(labels.le), count: value });
}

/** Mean TTFT in milliseconds, or null without samples. */
export function meanMs(ttft) {
  return ttft.count > 0 ? (ttft.sum / ttft.count) * 1000 : null;
}

/**
 * The bucket the `q` quantile falls in: `{le}` in seconds (Infinity when above every finite
 * bound), or null without samples. Exact, unlike an interpolated estimate.
 */
export function quantileBucket(ttft, q) {
  if (ttft.count <= 0) return null;
  const rank = q * ttft.count;
  const bucket = ttft.buckets.find((b) => b.count >= rank);
  return { le: bucket ? bucket.le : Infinity };
}

/** The largest finite bucket bound, for "above" labels. */
export function largestBound(ttft) {
  const finite = ttft.buckets.filter((b) => Number.isFinite(b.le));
  return finite.length ? finite[finite.length - 1].le : 0;
}
