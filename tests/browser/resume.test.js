// Resuming a dropped signaling session (issue 12 item 4): Alice's page and WebSocket go through a TCP relay
// that the test resets (no close frame), her media goes straight to the server. Her SDK resumes the same
// session on a new socket: the same sid, `reconnected` with `how: resumed`, Bob's page sees no one leave or
// join, and both keep hearing each other.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, launchAliceAndBob, hearsTone, makeTempDir, openDemo, pollUntil, snapshot,
  waitConnected,
} from './lib/browser.js';
import { metricValue, startServer } from './lib/server.js';
import { startCuttableRelay } from './lib/tcp-cut.js';

const ROOM = 'resume';

describe('signaling resume', { timeout: 120000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {Awaited<ReturnType<typeof startCuttableRelay>>|null} */
  let relay = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('./lib/browser.js').Participant} */ let alice;
  /** @type {import('./lib/browser.js').Participant} */ let bob;
  const tmp = makeTempDir();

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    server = await startServer({ workers: 1, slots: 3 });
    relay = await startCuttableRelay(server.httpPort);
    [alice, bob] = await launchAliceAndBob({ tmpDir: tmp.dir });
    all = [alice, bob];
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (relay) await relay.close();
    if (server) await server.stop();
    tmp.cleanup();
  });

  /**
   * @param {import('./lib/browser.js').Participant} listener
   * @param {number} freq
   * @param {number} own
   * @param {number} [timeoutMs]
   */
  const hears = (listener, freq, own, timeoutMs = 20000) => hearsTone(listener, freq, own, { timeoutMs });

  /** @param {import('./lib/browser.js').Participant} p @returns {Promise<string[]>} */
  const demoLog = (p) => p.page.evaluate(() => /** @type {any} */ (window).chorusDemo.log.slice());

  /** @param {string} name @returns {Promise<number>} */
  const metric = async (name) => {
    const text = await (await fetch(`${server?.url}/metrics`)).text();
    return metricValue(text, name) ?? NaN;
  };

  it('both talk, Alice through the relay', () => withDiagnostics(async () => {
    await openDemo(alice, `http://127.0.0.1:${relay?.port}`, ROOM);
    await openDemo(bob, server?.url ?? '', ROOM);
    await Promise.all(all.map((p) => waitConnected(p, 20000)));
    await hears(bob, 440, 660);
    await hears(alice, 660, 440);
  }));

  it('a reset signaling socket is resumed: same sid, nobody told, audio goes on', () => withDiagnostics(async () => {
    const sid = (await snapshot(alice)).local.sid;
    const bobLogBefore = (await demoLog(bob)).length;
    const cut = relay?.cut() ?? 0;
    assert.ok(cut >= 2, `the relay carried Alice's WebSocket (${cut} sockets cut)`);
    const cutAt = Date.now();
    // Bob keeps hearing Alice while her signaling is down and coming back: her media never stopped.
    await hears(bob, 440, 660, 3000);
    const resumed = await pollUntil('Alice to log reconnected', async () => {
      const log = await demoLog(alice);
      const line = log.find((l) => / reconnected /.test(l));
      return { ok: !!line, line, tail: log.slice(-5) };
    }, { timeoutMs: 10000 });
    console.log(`Alice: ${resumed.line} (${Date.now() - cutAt} ms after the cut)`);
    assert.match(resumed.line ?? '', /"how":"resumed"/);
    assert.match(resumed.line ?? '', /"iceRestarted":false/);
    const s = await snapshot(alice);
    assert.equal(s.local.sid, sid, 'the same participant');
    assert.equal(s.connectionState, 'connected');
    await hears(bob, 440, 660, 5000);
    await hears(alice, 660, 440, 5000);
    const bobLog = (await demoLog(bob)).slice(bobLogBefore);
    assert.ok(!bobLog.some((l) => / participant (left|joined) /.test(l)), `Bob saw nobody leave or join:\n${bobLog.join('\n')}`);
    const bobSnap = await snapshot(bob);
    assert.deepEqual(bobSnap.participants.filter((/** @type {any} */ p) => p.name === 'Alice').map((/** @type {any} */ p) => p.sid), [sid]);
    assert.equal(await metric('chorus_sessions_resumed_total'), 1);
    assert.equal(await metric('chorus_sessions_suspended'), 0);
  }));
});
