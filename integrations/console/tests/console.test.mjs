// The console in a real headless Chromium against the real host and a scripted upstream.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  launchBrowser, metricSum, openPage, screenshot, startHost, startUpstream, ttftBucket, UPSTREAM_KEY,
} from './support.mjs';

/** Wait until the page's turn list has a last turn in `state`; returns that turn's locator. */
async function lastTurnIn(page, state) {
  const turn = page.locator('#turns > li.turn').last();
  await page.waitForFunction(
    (s) => document.querySelector('#turns > li.turn:last-child')?.dataset.state === s,
    state,
  );
  return turn;
}

async function send(page, message, profile = 'default') {
  await page.selectOption('#profile', profile);
  await page.fill('#message', message);
  await page.press('#message', 'Enter');
}

/** A few turns between each of the overview's next `rounds` updates, so its charts have data. */
async function trafficOverUpdates(page, host, rounds) {
  for (let round = 1; round <= rounds; round += 1) {
    const seen = Number(await page.getAttribute('#view-overview', 'data-updates'));
    await Promise.all(Array.from({ length: round + 1 }, (_, i) => host.turn({ message: `load ${round}.${i}` })));
    await page.waitForFunction((n) => Number(document.querySelector('#view-overview').dataset.updates) > n, seen);
  }
}

async function assertNoSecret(page) {
  assert.ok(!(await page.content()).includes(UPSTREAM_KEY), 'the upstream key reached the page');
}

describe('console, auth off', () => {
  let upstream;
  let host;
  let browser;
  let page;
  let errors;

  before(async () => {
    upstream = await startUpstream();
    host = await startHost(upstream);
    browser = await launchBrowser();
    ({ page, errors } = await openPage(browser, host.url));
  });

  after(async () => {
    upstream?.release();
    await browser?.close();
    await host?.stop();
    await upstream?.close();
  });

  test('loads with every profile, the session history and no console error', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#profile option').length === 3);
    await page.locator('#history li').first().waitFor();
    assert.deepEqual(errors, []);
    assert.equal(await page.getAttribute('#tab-playground', 'aria-selected'), 'true');
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('input, select, textarea, button')]
        .filter((e) => !e.hidden && !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
        .map((e) => e.id),
    );
    assert.deepEqual(unlabelled, []);
    await assertNoSecret(page);
  });

  test('a turn streams: the text grows before the turn ends, then TTFT, total and gateway show', async () => {
    await send(page, '[hold] tell me something');
    const turn = await lastTurnIn(page, 'streaming');
    await page.waitForFunction(() => document.querySelector('#turns > li:last-child .answer').textContent === 'Streaming ');
    // The first token is on screen, its TTFT shown, and the answer is not finished yet.
    assert.equal(await turn.getAttribute('data-state'), 'streaming');
    assert.match(await turn.locator('[data-field="ttft"]').textContent(), /\d+(\.\d)? ms/);
    assert.equal(await turn.locator('[data-field="gateway"]').textContent(), 'mock');
    assert.equal(await page.isEnabled('#stop'), true);
    assert.equal(await page.isEnabled('#send'), false);
    upstream.release();
    await lastTurnIn(page, 'done');
    assert.equal(await turn.locator('.answer').textContent(), 'Streaming works fine.');
    assert.match(await turn.locator('[data-field="total"]').textContent(), /\d/);
    assert.equal(await turn.locator('[data-field="finish"]').textContent(), 'stop');
    assert.match(await turn.locator('[data-field="browser"]').textContent(), /\d/);
    // The session history shows the stored turn.
    await page.waitForFunction(() => document.querySelectorAll('#history li.message').length === 2);
    assert.equal(await page.locator('#history li.assistant p').textContent(), 'Streaming works fine.');
    assert.deepEqual(errors, []);
  });

  test('Stop cuts a slow answer and the host stores only what was shown', async () => {
    await page.click('#history-clear');
    await page.waitForFunction(() => document.querySelector('#history li')?.classList.contains('empty'));
    await send(page, '[slow] count for me');
    const turn = await lastTurnIn(page, 'streaming');
    await page.waitForFunction(() => document.querySelector('#turns > li:last-child .answer').textContent.includes('Three.'));
    const shown = await turn.locator('.answer').textContent();
    await page.click('#stop');
    await lastTurnIn(page, 'interrupted');
    await upstream.closes.at(-1); // the host hung up on the upstream
    assert.equal(await turn.locator('.answer').textContent(), shown);
    assert.equal(await turn.locator('[data-field="finish"]').textContent(), 'interrupted');
    const key = await page.inputValue('#session-key');
    const session = await host.get(`/v1/sessions/${key}`);
    assert.deepEqual(session.messages, [
      { role: 'user', content: '[slow] count for me' },
      { role: 'assistant', content: shown.trimEnd() }, // stored without trailing whitespace
    ]);
    assert.equal(session.in_flight, false);
    await page.waitForFunction((text) => document.querySelector('#history li.assistant p')?.textContent === text, shown.trimEnd());
    assert.deepEqual(errors, []);
  });

  test('a failing gateway shows a clear error in the turn', async () => {
    await send(page, 'hello?', 'broken');
    const refused = await lastTurnIn(page, 'error');
    assert.match(await refused.locator('.error').textContent(), /cannot connect to upstream 127\.0\.0\.1:\d+: .*refused/i);
    assert.equal(await refused.locator('.error').isVisible(), true);
    await send(page, '[fail] please', 'default');
    const failed = await lastTurnIn(page, 'error');
    assert.match(await failed.locator('.error').textContent(), /HTTP 500.*The model is overloaded/);
    await screenshot(page, 'playground-light');
    await assertNoSecret(page);
    assert.deepEqual(errors, []);
  });

  test('tool actions show as a timeline inside the turn', async () => {
    // The host passes `action` events through, but no built-in gateway emits them yet: this
    // replays the SSE bytes the host sends for a turn with a tool call.
    const tool = { type: 'tool', name: 'clock', toolCallId: 'call_1' };
    const events = [
      { type: 'handshake', ms: 40, gateway: 'mock' },
      { type: 'action', action: { ...tool, phase: 'start', input: { zone: 'UTC' }, ts: 1700000000000 } },
      { type: 'action', action: { ...tool, phase: 'result', result: '12:00', ts: 1700000000250 } },
      { type: 'delta', text: 'It is noon.' },
      { type: 'text_done', response: 'It is noon.', actions: [], timing: { ttft_ms: 40, total_ms: 300 }, finish_reason: 'stop' },
    ];
    const body = events.map((e) => `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`).join('');
    await page.route('**/v1/conversation', (route) => route.fulfill({ status: 200, contentType: 'text/event-stream', body }));
    try {
      await send(page, 'what time is it?');
      const turn = await lastTurnIn(page, 'done');
      const rows = turn.locator('.timeline li');
      assert.equal(await rows.count(), 1);
      assert.equal(await rows.first().getAttribute('data-phase'), 'result');
      assert.equal(await rows.first().locator('.tool').textContent(), 'clock');
      assert.equal(await rows.first().locator('.took').textContent(), '250 ms');
      assert.equal(await rows.first().locator('code').textContent(), '12:00');
      assert.equal(await turn.locator('.answer').textContent(), 'It is noon.');
    } finally {
      await page.unroute('**/v1/conversation');
    }
    assert.deepEqual(errors, []);
  });

  test('the overview matches /metrics, live', async () => {
    await send(page, 'saved by the fallback', 'rescued');
    await lastTurnIn(page, 'done');
    // One turn held open by a client other than the page: the overview must show it in flight.
    const held = host.turn({ profile: 'default', message: '[hold] in flight' });
    await page.click('#tab-overview');
    await page.waitForFunction(() => document.querySelector('#stat-inflight').dataset.value === '1');
    upstream.release();
    await held;
    const expected = await host.get('/metrics', 'text');
    const turns = metricSum(expected, 'gateway_host_requests_total');
    await page.waitForFunction(
      (n) => document.querySelector('#stat-turns').dataset.value === String(n)
        && document.querySelector('#stat-inflight').dataset.value === '0',
      turns,
    );
    const stat = (id) => page.getAttribute(id, 'data-value');
    assert.equal(await stat('#stat-errors'), String(metricSum(expected, 'gateway_host_errors_total')));
    assert.equal(await stat('#stat-fallbacks'), String(metricSum(expected, 'gateway_host_fallbacks_total')));
    assert.equal(await stat('#stat-retries'), String(metricSum(expected, 'gateway_host_retries_total')));
    assert.ok(Number(await stat('#stat-fallbacks')) >= 1);
    for (const gateway of ['mock', 'down']) {
      const card = page.locator(`article.gateway[data-gateway="${gateway}"]`);
      const value = (name) => card.locator(`[data-stat="${name}"]`).getAttribute('data-value');
      assert.equal(await value('turns'), String(metricSum(expected, 'gateway_host_requests_total', { gateway })));
      assert.equal(await value('errors'), String(metricSum(expected, 'gateway_host_errors_total', { gateway })));
      const count = metricSum(expected, 'gateway_host_ttft_seconds_count', { gateway });
      assert.equal(await value('ttft-count'), String(count));
      if (count > 0) {
        const mean = (metricSum(expected, 'gateway_host_ttft_seconds_sum', { gateway }) / count) * 1000;
        assert.ok(Math.abs(Number(await value('ttft-mean')) - mean) < 1e-6, `${gateway} mean`);
        for (const [name, q] of [['ttft-p50', 0.5], ['ttft-p95', 0.95], ['ttft-p99', 0.99]]) {
          assert.equal(await value(name), String(ttftBucket(expected, gateway, q)), `${gateway} ${name}`);
        }
      }
    }
    const mockCard = page.locator('article.gateway[data-gateway="mock"]');
    assert.equal(await mockCard.locator('[data-field="health"]').textContent(), 'healthy');
    assert.match(await mockCard.locator('[data-field="uses"]').textContent(), /Answers: default.*Fallback for: rescued/);
    const downCard = page.locator('article.gateway[data-gateway="down"]');
    assert.equal(await downCard.locator('[data-field="health"]').textContent(), 'down');
    for (const row of await page.locator('#errors-table tbody tr[data-cause]').all()) {
      const [gateway, cause] = [await row.getAttribute('data-gateway'), await row.getAttribute('data-cause')];
      const count = metricSum(expected, 'gateway_host_errors_total', { gateway, cause });
      assert.equal(await row.locator('td[data-value]').getAttribute('data-value'), String(count), `${gateway}/${cause}`);
    }
    assert.ok((await page.locator('#errors-table tbody tr[data-cause]').count()) >= 2);
    await page.locator('#profiles-table tr[data-profile="rescued"]').waitFor();
    // A later update adds a point to the chart without a reload.
    const updates = Number(await page.getAttribute('#view-overview', 'data-updates'));
    await page.waitForFunction((n) => Number(document.querySelector('#view-overview').dataset.updates) > n, updates);
    assert.ok((await mockCard.locator('svg rect').count()) >= 1);
    await trafficOverUpdates(page, host, 6);
    await screenshot(page, 'overview-light');
    await page.emulateMedia({ colorScheme: 'dark' });
    await screenshot(page, 'overview-dark');
    await page.click('#tab-playground');
    await screenshot(page, 'playground-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    await assertNoSecret(page);
    assert.deepEqual(errors, []);
  });

  test('the sessions view looks a session up and deletes it', async () => {
    const key = await page.inputValue('#session-key');
    await page.click('#tab-sessions');
    await page.fill('#lookup-key', key);
    await page.press('#lookup-key', 'Enter');
    await page.locator('#session-view').waitFor();
    assert.equal(await page.textContent('#session-inflight'), 'no');
    const stored = Number(await page.textContent('#session-count'));
    assert.ok(stored >= 2);
    page.once('dialog', (d) => d.accept());
    await page.click('#session-delete');
    await page.waitForFunction(() => document.querySelector('#session-count').textContent === '0');
    assert.deepEqual((await host.get(`/v1/sessions/${key}`)).messages, []);
    assert.deepEqual(errors, []);
  });

  test('keyboard, theme toggle and phone width', async () => {
    await page.focus('#tab-sessions');
    await page.keyboard.press('ArrowLeft');
    assert.equal(await page.getAttribute('#tab-overview', 'aria-selected'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-overview');
    await page.keyboard.press('Home');
    assert.equal(await page.getAttribute('#tab-playground', 'aria-selected'), 'true');
    await page.selectOption('#theme', 'dark');
    const dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.selectOption('#theme', 'light');
    const light = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(dark, light);
    await page.setViewportSize({ width: 390, height: 844 });
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scroll');
    const sticksOut = await page.evaluate(() =>
      [...document.querySelectorAll('#view-playground *')]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
        .map((e) => e.id || e.className || e.tagName),
    );
    assert.deepEqual(sticksOut, [], 'everything fits the phone width');
    await screenshot(page, 'playground-phone');
    await page.click('#tab-overview');
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scroll');
    await screenshot(page, 'overview-phone');
    await page.setViewportSize({ width: 1280, height: 900 });
    assert.deepEqual(errors, []);
  });
});

describe('console, auth on', () => {
  const TOKEN = 'console-test-token-8c2e';
  let upstream;
  let host;
  let browser;

  before(async () => {
    upstream = await startUpstream();
    host = await startHost(upstream, { tokens: [TOKEN] });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await host?.stop();
    await upstream?.close();
  });

  test('asks for a token, refuses a wrong one cleanly and works with the right one', async () => {
    const { page, errors } = await openPage(browser, host.url);
    await page.locator('#token-dialog[open]').waitFor();
    assert.deepEqual(errors, [], 'no console error on load');
    assert.equal(await page.locator('#profile option').count(), 0);

    await page.fill('#token-input', 'not-the-token');
    await page.press('#token-input', 'Enter');
    await page.locator('#token-error:not([hidden])').waitFor();
    assert.match(await page.textContent('#token-error'), /refused.*invalid bearer token/);
    assert.equal(await page.locator('#profile option').count(), 0);
    assert.equal(await page.locator('#token-dialog[open]').count(), 1);

    await page.fill('#token-input', TOKEN);
    await page.press('#token-input', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#profile option').length === 3);
    assert.equal(await page.locator('#token-dialog[open]').count(), 0);
    await send(page, 'hello with a token');
    const turn = await lastTurnIn(page, 'done');
    assert.equal(await turn.locator('.answer').textContent(), 'You said: hello with a token.');
    assert.equal(await turn.locator('[data-field="tokens"]').textContent(), '21 in, 7 out');
    await page.click('#tab-overview');
    await page.waitForFunction(() => Number(document.querySelector('#stat-turns').dataset.value) >= 1);
    const html = await page.content();
    assert.ok(!html.includes(TOKEN) && !html.includes(UPSTREAM_KEY), 'a secret reached the page');
    // Only the wrong token's 401 was reported by the browser.
    assert.ok(errors.every((e) => /401/.test(e)), errors.join('\n'));
    await page.close();
  });
});
