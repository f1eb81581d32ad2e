// A media server nobody can reach, for real: inside a network namespace of the test's own (lib/netns.js) the
// server advertises 198.51.100.99, an address no one answers on (ip_forward=0: the checks die there), so ICE
// never completes; the server's connect timeout (media.connect_timeout_ms, short here) ends the session.
// The SDK must call that `failed` (final, never followed by `closed`) after an `error` event explaining it,
// and the demo page must show the explanation and stay on the call view with Retry / Back.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CHROMIUM, withDiagnostics as runWithDiagnostics, launchParticipant, makeTempDir, pollUntil, snapshot,
} from './lib/browser.js';
import { createNetns } from './lib/netns.js';
import { startServer } from './lib/server.js';

const HTTP_PORT = 7880;
const UNREACHABLE = '198.51.100.99';
/** The server drops a peer that has not connected this long after its offer. */
const CONNECT_TIMEOUT_MS = 3000;

describe('an unreachable media server', { timeout: 90000 }, () => {
  /** @type {import('./lib/netns.js').Netns|null} */
  let ns = null;
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant|null} */
  let p = null;
  const tmp = makeTempDir('chorus-failure-');

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => (p ? [p] : []), () => server, fn);
  const participant = () => /** @type {import('./lib/browser.js').Participant} */ (p);
  const page = () => participant().page;

  before(async () => {
    ns = await createNetns({ prefix: 'chorus-fail' });
    const config = path.join(tmp.dir, 'chorus.toml');
    fs.writeFileSync(config, `[media]\nconnect_timeout_ms = ${CONNECT_TIMEOUT_MS}\n`);
    server = await startServer({ netns: ns, httpPort: HTTP_PORT, publicIp: UNREACHABLE, extraArgs: ['--config', config] });
    p = await launchParticipant({
      name: 'Lost', freq: 440, amplitude: 0.3, tmpDir: tmp.dir, executablePath: ns.wrapper(CHROMIUM, tmp.dir),
      extraArgs: [`--unsafely-treat-insecure-origin-as-secure=http://${ns.addrA}:${HTTP_PORT}`],
    });
  });

  after(async () => {
    if (p) await p.close();
    if (server) await server.stop();
    if (ns) await ns.destroy();
    tmp.cleanup();
  });

  it('the SDK: an error event explains it, then the state is failed and stays failed', () => withDiagnostics(async () => {
    const s = /** @type {import('./lib/server.js').ChorusServer} */ (server);
    await page().goto(`${s.url}/`, { waitUntil: 'load' });
    const r = await page().evaluate(async () => {
      const { connect, sameOriginWsUrl, ChorusError } = await import('/chorus.js');
      const { token } = await (await fetch('/api/dev-token?room=nowhere&identity=sdk')).json();
      /** @type {string[]} */
      const states = [];
      /** @type {any[]} */
      const errors = [];
      /** @type {string[]} */
      const order = [];
      const t0 = performance.now();
      const room = await connect(sameOriginWsUrl(), token, {
        microphone: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      room.on('connectionstate', (/** @type {any} */ d) => { states.push(d.state); order.push(`state:${d.state}`); });
      room.on('error', (/** @type {any} */ d) => {
        errors.push({ code: d.code, message: d.message, fatal: d.fatal, isChorusError: d.error instanceof ChorusError,
          errorCode: d.error && d.error.code, errorMessage: d.error && d.error.message });
        order.push(`error:${d.code}`);
      });
      const closed = new Promise((res) => room.on('closed', (/** @type {any} */ d) => { order.push('closed'); res(d); }));
      const closedDetail = await Promise.race([closed, new Promise((res) => setTimeout(() => res(null), 30000))]);
      const failedAfterMs = Math.round(performance.now() - t0);
      await new Promise((res) => setTimeout(res, 2000));
      await room.leave(); // a no-op on a failed room: the state stays failed
      return { states, errors, order, closedDetail, failedAfterMs, final: room.connectionState };
    });
    console.log(JSON.stringify(r));
    assert.ok(r.closedDetail, 'the session ended');
    assert.equal(r.final, 'failed', 'failed is final');
    assert.equal(r.states.at(-1), 'failed');
    assert.ok(!r.states.includes('closed'), `never closed after failed: ${JSON.stringify(r.states)}`);
    assert.equal(r.errors.length, 1, JSON.stringify(r.errors));
    const e = r.errors[0];
    assert.equal(e.code, 'connection_failed');
    assert.equal(e.fatal, true);
    assert.equal(e.isChorusError, true, 'the event carries a ChorusError');
    assert.equal(e.errorCode, 'connection_failed');
    assert.equal(e.errorMessage, e.message);
    assert.match(e.message, new RegExp(`^could not reach the media server at ${UNREACHABLE.replace(/\./g, '\\.')} UDP port \\d+: `));
    assert.match(e.message, /a firewall may block UDP port \d+/);
    assert.deepEqual(r.order.slice(-3), ['error:connection_failed', 'state:failed', 'closed'],
      'the error comes first, then failed, then closed');
  }));

  it('the demo page shows the explanation and stays on the call view with Retry and Back', () => withDiagnostics(async () => {
    const s = /** @type {import('./lib/server.js').ChorusServer} */ (server);
    const q = new URLSearchParams({ room: 'nowhere', name: 'Lost', autojoin: '1', processing: '0' });
    await page().goto(`${s.url}/?${q}`, { waitUntil: 'load' });
    const failed = await pollUntil('the page to show the failure', async () => {
      const snap = await snapshot(participant());
      return { ok: snap.status === 'failed', ...snap };
    }, { timeoutMs: 30000, intervalMs: 200 });
    // Still there a while later: no silent return to the join form.
    await new Promise((res) => setTimeout(res, 3000));
    const later = await snapshot(participant());
    const ui = await page().evaluate(() => {
      const text = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
      const shown = (/** @type {string} */ id) => !text(id).hidden && text(id).offsetParent !== null;
      return {
        pill: text('conn-state').textContent,
        detail: text('conn-detail').textContent,
        detailShown: shown('conn-detail'),
        failureText: text('failure-text').textContent,
        retry: shown('retry-button'),
        back: shown('back-button'),
        leave: shown('leave-button'),
        roomCard: shown('room-card'),
        joinCard: shown('join-card'),
      };
    });
    console.log(JSON.stringify({ lastError: later.lastError, ui }));
    for (const snap of [failed, later]) {
      assert.equal(snap.status, 'failed');
      assert.equal(snap.connectionState, 'failed');
      assert.equal(snap.view, 'call');
      assert.equal(snap.lastError.code, 'connection_failed');
    }
    assert.match(later.lastError.message, /^could not reach the media server at .*a firewall may block UDP port \d+/);
    assert.ok(later.log.some((/** @type {string} */ l) => / error .*connection_failed/.test(l)), 'an error event was logged');
    assert.ok(!later.log.some((/** @type {string} */ l) => /-> closed/.test(l)), 'the state never went to closed');
    assert.equal(ui.pill, 'failed');
    assert.ok(ui.detailShown && ui.detail.includes(later.lastError.message), `explanation next to the pill: ${ui.detail}`);
    assert.ok(ui.failureText.includes(later.lastError.message));
    assert.deepEqual([ui.roomCard, ui.joinCard, ui.retry, ui.back, ui.leave], [true, false, true, true, false]);

    // Retry joins again (the same room and name) and fails again the same way.
    const sidBefore = later.local && later.local.sid;
    await page().click('#retry-button');
    const again = await pollUntil('the retried call to fail again', async () => {
      const snap = await snapshot(participant());
      return { ok: snap.status === 'failed' && !!snap.local && snap.local.sid !== sidBefore, ...snap };
    }, { timeoutMs: 30000, intervalMs: 200 });
    assert.equal(again.view, 'call');
    assert.equal(again.lastError.code, 'connection_failed');
    assert.equal(again.local.name, 'Lost');

    // Back returns to the form, the explanation gone.
    await page().click('#back-button');
    const back = await snapshot(participant());
    assert.equal(back.view, 'form');
    assert.equal(back.connDetail, null);
  }));
});
