// Positional voice through chorus.js in Chromium: in a spatial forwarding room (admin API) Alice (440 Hz) and
// Bob (660 Hz) call room.setPosition 5 apart and hear each other, and Alice's `positions` event names Bob where he
// stands; Bob walks away (setPosition every 50 ms, paced by the SDK) until he is 100 away: they stop hearing
// each other and Alice's positions become empty. A position that is not finite is refused in the page.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, hearsTone, launchAliceAndBob, makeTempDir, measure, openDemo, pollUntil,
  snapshot, waitConnected,
} from './lib/browser.js';
import { adminToken, startServer } from './lib/server.js';

const ROOM = 'arena';
const FREQS = [440, 660];

describe('positional voice', { timeout: 180000 }, () => {
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
   * Call the page's Room.setPosition; returns the ChorusError's code if it threw.
   * @param {import('./lib/browser.js').Participant} p
   * @param {number[]} args
   * @returns {Promise<string|null>}
   */
  const setPosition = (p, args) => p.page.evaluate((a) => {
    try {
      /** @type {any} */ (window).chorusDemo.room.setPosition(...a);
      return null;
    } catch (e) {
      return /** @type {any} */ (e).code;
    }
  }, args);

  /** @param {import('./lib/browser.js').Participant} p @returns {Promise<any[]>} */
  const positionsAt = (p) => p.page.evaluate(() => /** @type {any} */ (window).chorusDemo.room.positions
    .map((/** @type {any} */ q) => ({ sid: q.sid, x: q.x, y: q.y, z: q.z, yawDeg: q.yawDeg })));

  /**
   * @param {import('./lib/browser.js').Participant} listener
   * @param {number} freq
   * @param {string} why
   */
  const silentAt = (listener, freq, why) => pollUntil(`${freq} Hz to stop at ${listener.name} (${why})`, async () => {
    const r = await measure(listener, 700, FREQS);
    return { ok: r.powerAt[freq] < -60, ...r };
  }, { timeoutMs: 10000, intervalMs: 0 });

  before(async () => {
    server = await startServer({ workers: 1, slots: 3 });
    const res = await fetch(`${server.url}/admin/v1/rooms`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${await adminToken()}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: ROOM, mode: 'forward', slots: 2,
        spatial: { audible_distance: 20, conversational_distance: 1, fade_model: 'linear' } }),
    });
    assert.equal(res.status, 201, await res.text());
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

  it('refuses a position that is not finite, in the page', () => withDiagnostics(async () => {
    assert.equal(await setPosition(alice, [NaN, 0, 0]), 'bad_position');
    assert.equal(await setPosition(alice, [0, 0, 2e6]), 'bad_position');
  }));

  it('two SDK clients 5 apart hear each other, then walk apart and stop', () => withDiagnostics(async () => {
    assert.equal(await setPosition(alice, [0, 0, 0, 0]), null);
    assert.equal(await setPosition(bob, [5, 0, 0, 0]), null);
    await hearsTone(bob, 440, 660);
    await hearsTone(alice, 660, 440);
    const bobSid = (await snapshot(bob)).local.sid;
    await pollUntil('Alice\'s positions to name Bob', async () => {
      const positions = await positionsAt(alice);
      return { ok: positions.length === 1 && positions[0].sid === bobSid && positions[0].x === 5, positions };
    }, { timeoutMs: 5000 });

    // Bob walks east at 2 units per 50 ms (a game's per-frame updates), from 5 to 105.
    await bob.page.evaluate(async () => {
      const room = /** @type {any} */ (window).chorusDemo.room;
      for (let x = 7; x <= 105; x += 2) {
        room.setPosition(x, 0, 0, 0);
        await new Promise((r) => setTimeout(r, 50));
      }
    });
    await silentAt(alice, 660, 'Bob is 105 away');
    await silentAt(bob, 440, 'Alice is 105 away');
    await pollUntil('Alice\'s positions to be empty', async () => {
      const positions = await positionsAt(alice);
      return { ok: positions.length === 0, positions };
    }, { timeoutMs: 5000 });
  }));
});
