// Server restart (issue 12 item 6): two participants talk through the demo page, the server is killed with
// SIGKILL (no drain, no close frames: the browsers' sockets just break) and started again on the same HTTP
// port. Both pages must rejoin on their own within 10 s of the server being back, each hearing the other
// again, listed once (no duplicate participants), with the SDK's `reconnecting` / `reconnected` events.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, launchAliceAndBob, hearsTone, makeTempDir, openDemo, pollUntil, snapshot,
  waitConnected,
} from './lib/browser.js';
import { freeTcpPort, startServer } from './lib/server.js';

const ROOM = 'restart';
/** The bound: every client rejoins within 10 s of the server being back. */
const REJOIN_WITHIN_MS = 10000;

describe('server restart', { timeout: 150000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('./lib/browser.js').Participant} */ let alice;
  /** @type {import('./lib/browser.js').Participant} */ let bob;
  const tmp = makeTempDir();
  /** @type {number} */ let httpPort;

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    httpPort = await freeTcpPort();
    server = await startServer({ workers: 1, slots: 3, httpPort });
    [alice, bob] = await launchAliceAndBob({ tmpDir: tmp.dir });
    all = [alice, bob];
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    tmp.cleanup();
  });

  it('both talk before the restart', () => withDiagnostics(async () => {
    await Promise.all(all.map((p) => openDemo(p, server.url, ROOM)));
    await Promise.all(all.map((p) => waitConnected(p, 20000)));
    await hearsTone(bob, 440, 660);
    await hearsTone(alice, 660, 440);
  }));

  it('after kill -9 and a restart both rejoin within 10 s and hear each other again', () => withDiagnostics(async () => {
    const sidsBefore = await Promise.all(all.map(async (p) => (await snapshot(p)).local.sid));
    const killed = server;
    server = null;
    killed.proc.kill('SIGKILL');
    await new Promise((r) => killed.proc.once('exit', r));
    for (const p of all) {
      await pollUntil(`${p.name}'s SDK to notice and start reconnecting`, async () => {
        const s = await snapshot(p);
        return { ok: s.connectionState === 'reconnecting' && s.view === 'call', s: { state: s.connectionState, view: s.view } };
      }, { timeoutMs: 10000 });
    }
    // Down for a while: attempts fail (connection refused) and back off.
    await new Promise((r) => setTimeout(r, 3000));
    server = await startServer({ workers: 1, slots: 3, httpPort });
    const back = Date.now();
    await Promise.all(all.map((p) => waitConnected(p, REJOIN_WITHIN_MS)));
    const rejoinMs = Date.now() - back;
    console.log(`both rejoined ${rejoinMs} ms after the server answered /healthz`);
    assert.ok(rejoinMs <= REJOIN_WITHIN_MS);

    for (const [i, p] of all.entries()) {
      const s = await snapshot(p);
      assert.notEqual(s.local.sid, sidsBefore[i], `${p.name} has a new session on the new server`);
      const other = p === alice ? bob : alice;
      await pollUntil(`${p.name} to list ${other.name} exactly once`, async () => {
        const q = await snapshot(p);
        const named = q.participants.filter((/** @type {any} */ x) => x.name === other.name);
        return { ok: named.length === 1, participants: q.participants.map((/** @type {any} */ x) => x.name) };
      }, { timeoutMs: 5000 });
      /** @type {string[]} */
      const log = await p.page.evaluate(() => /** @type {any} */ (window).chorusDemo.log.slice());
      assert.ok(log.some((l) => / reconnecting /.test(l)), `${p.name} logged reconnecting: ${log.join('\n')}`);
      assert.ok(log.some((l) => / reconnected /.test(l)), `${p.name} logged reconnected: ${log.join('\n')}`);
      assert.equal(s.status, 'joined', `${p.name} stayed in the call view`);
    }
    await hearsTone(bob, 440, 660);
    await hearsTone(alice, 660, 440);
  }));
});
