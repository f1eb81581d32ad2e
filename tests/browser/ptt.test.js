// Push-to-talk and a move through the SDK in Chromium: Alice turns push-to-talk on (room.setPtt) and Bob stops
// hearing her; while her key is down (room.keyDown) he hears her 440 Hz, after room.keyUp he does not. Then an
// operator moves both to another room (admin API): each SDK gets `moved`, renegotiates, and Bob hears Alice
// there.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, hearsTone, launchAliceAndBob, makeTempDir, measure, openDemo, pollUntil, snapshot,
  waitConnected,
} from './lib/browser.js';
import { adminToken, startServer } from './lib/server.js';

const ROOM = 'ptt';
const FREQS = [440, 660];

describe('push-to-talk and move', { timeout: 180000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('./lib/browser.js').Participant} */ let alice;
  /** @type {import('./lib/browser.js').Participant} */ let bob;
  const tmp = makeTempDir();

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  /**
   * @param {import('./lib/browser.js').Participant} p
   * @param {string} call   a method of the SDK's Room, called without arguments or with `true`
   * @param {boolean} [arg]
   */
  const roomCall = (p, call, arg) => p.page.evaluate(([c, a]) => {
    const room = /** @type {any} */ (window).chorusDemo.room;
    return a === undefined ? room[c]() : room[c](a);
  }, /** @type {[string, boolean|undefined]} */ ([call, arg]));

  /** @param {string} why */
  const aliceSilentAtBob = (why) => pollUntil(`Alice's tone to stop at Bob (${why})`, async () => {
    const r = await measure(bob, 700, FREQS);
    return { ok: r.powerAt[440] < -60, ...r };
  }, { timeoutMs: 10000, intervalMs: 0 });

  before(async () => {
    server = await startServer({ workers: 1, slots: 3 });
    [alice, bob] = await launchAliceAndBob({ tmpDir: tmp.dir });
    all = [alice, bob];
    await Promise.all(all.map((p) => openDemo(p, /** @type {any} */ (server).url, ROOM)));
    await Promise.all(all.map((p) => waitConnected(p, 20000)));
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    tmp.cleanup();
  });

  it('Bob hears Alice only while her push-to-talk key is down', () => withDiagnostics(async () => {
    await hearsTone(bob, 440, 660);
    const aliceSid = (await snapshot(alice)).local.sid;
    await roomCall(alice, 'setPtt', true);
    await pollUntil('Bob to see Alice on push-to-talk', async () => {
      const p = await bob.page.evaluate((sid) => {
        const q = /** @type {any} */ (window).chorusDemo.room.participant(sid);
        return q ? { ptt: q.ptt } : null;
      }, aliceSid);
      return { ok: !!p && p.ptt === true, p };
    }, { timeoutMs: 5000 });
    await aliceSilentAtBob('key up');
    for (let press = 0; press < 2; press++) {
      await roomCall(alice, 'keyDown');
      await hearsTone(bob, 440, 660, { timeoutMs: 10000 });
      await roomCall(alice, 'keyUp');
      await aliceSilentAtBob(`key up after press ${press}`);
    }
  }));

  it('an operator moves both to another room; the SDK re-offers and Bob hears Alice there', () => withDiagnostics(async () => {
    const token = await adminToken();
    const srv = /** @type {any} */ (server);
    for (const p of [bob, alice]) {
      const sid = (await snapshot(p)).local.sid;
      const res = await fetch(`${srv.url}/admin/v1/rooms/${ROOM}/participants/${sid}/move`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ room: 'ptt-breakout' }),
      });
      assert.equal(res.status, 202, await res.text());
    }
    for (const p of all) {
      await pollUntil(`${p.name}'s SDK to be in the new room and connected`, async () => {
        const s = await p.page.evaluate(() => {
          const room = /** @type {any} */ (window).chorusDemo.room;
          return { name: room.name, state: room.connectionState, ptt: room.ptt };
        });
        return { ok: s.name === 'ptt-breakout' && s.state === 'connected', ...s };
      }, { timeoutMs: 20000 });
    }
    // A new participant there: push-to-talk is off, so Alice is heard without her key.
    await hearsTone(bob, 440, 660);
  }));
});
