// Two participants join one room through the demo page; each hears the other's tone and not its own.
// Then mute (enforced by the server), slots/speakers events and leave.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, hearsTone, launchAliceAndBob, makeTempDir, measure, openDemo, pollUntil, snapshot,
  waitConnected,
} from './lib/browser.js';
import { startServer } from './lib/server.js';

const ROOM = 'duo';
const FREQS = [440, 660];

describe('two participants', { timeout: 120000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('./lib/browser.js').Participant} */ let alice;
  /** @type {import('./lib/browser.js').Participant} */ let bob;
  const tmp = makeTempDir();

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    server = await startServer({ workers: 1, slots: 3 });
    [alice, bob] = await launchAliceAndBob({ tmpDir: tmp.dir });
    all = [alice, bob];
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    tmp.cleanup();
  });

  it('both join through the demo page and connect', () => withDiagnostics(async () => {
    await Promise.all(all.map((p) => openDemo(p, server.url, ROOM)));
    await Promise.all(all.map((p) => waitConnected(p, 20000)));
    for (const p of all) {
      const other = p === alice ? bob : alice;
      await pollUntil(`${p.name} to list ${other.name}`, async () => {
        const s = await snapshot(p);
        return { ok: s.participants.some((/** @type {any} */ q) => q.name === other.name), s };
      }, { timeoutMs: 5000 });
      const s = await snapshot(p);
      assert.equal(s.slots.length, 3, 'three slot m-lines (server default --room-slots 3)');
    }
  }));

  /**
   * Wait until `listener` hears `freq` clearly and not its own tone `own`, one inbound stream per slot at most.
   * @param {import('./lib/browser.js').Participant} listener
   * @param {number} freq
   * @param {number} own
   */
  const hears = async (listener, freq, own) => {
    const m = await hearsTone(listener, freq, own);
    assert.ok(m.stats.length <= 3, `at most one inbound stream per slot: ${JSON.stringify(m.stats)}`);
    return m;
  };

  it('Bob hears Alice (440 Hz) and not himself', () => withDiagnostics(async () => {
    await hears(bob, 440, 660);
  }));

  it('Alice hears Bob (660 Hz) and not herself', () => withDiagnostics(async () => {
    await hears(alice, 660, 440);
  }));

  it('slots and speakers name the other participant', () => withDiagnostics(async () => {
    for (const [listener, speaker] of [[bob, alice], [alice, bob]]) {
      const sid = (await snapshot(speaker)).local.sid;
      const speakerSsrc = (await speaker.page.evaluate(() => /** @type {any} */ (window).chorusDemo.outboundAudioStats()))[0].ssrc;
      await pollUntil(`${listener.name}'s slots to carry ${speaker.name} (sid, ssrc and CSRC)`, async () => {
        const s = await snapshot(listener);
        const slot = s.slots.find((/** @type {any} */ x) => x.sid === sid);
        return {
          ok: !!slot && slot.mid !== null && slot.ssrc === speakerSsrc && slot.csrcs.includes(speakerSsrc),
          speakerSsrc, slots: s.slots,
        };
      }, { timeoutMs: 5000 });
      await pollUntil(`${listener.name} to see ${speaker.name} speaking`, async () => {
        const s = await snapshot(listener);
        const p = s.participants.find((/** @type {any} */ x) => x.sid === sid);
        return { ok: !!p && p.speaking && p.level > 0, p };
      }, { timeoutMs: 5000 });
    }
  }));

  it('mute stops Alice\'s audio at Bob and unmute brings it back', () => withDiagnostics(async () => {
    const aliceSid = (await snapshot(alice)).local.sid;
    await alice.page.click('#mute-button');
    await pollUntil('Bob to see Alice muted', async () => {
      const s = await snapshot(bob);
      const p = s.participants.find((/** @type {any} */ x) => x.sid === aliceSid);
      return { ok: !!p && p.muted === true, p };
    }, { timeoutMs: 5000 });
    await pollUntil('Alice\'s tone to stop at Bob', async () => {
      const r = await measure(bob, 700, FREQS);
      return { ok: r.powerAt[440] < -60, ...r };
    }, { timeoutMs: 10000, intervalMs: 0 });
    await alice.page.click('#mute-button');
    await pollUntil('Bob to see Alice unmuted', async () => {
      const s = await snapshot(bob);
      const p = s.participants.find((/** @type {any} */ x) => x.sid === aliceSid);
      return { ok: !!p && p.muted === false, p };
    }, { timeoutMs: 5000 });
    await hears(bob, 440, 660);
  }));

  it('leave removes Alice from Bob\'s list', () => withDiagnostics(async () => {
    await alice.page.click('#leave-button');
    await pollUntil('Alice\'s page to leave', async () => {
      const s = await snapshot(alice);
      return { ok: s.status === 'left', s };
    }, { timeoutMs: 5000 });
    await pollUntil('Bob to drop Alice', async () => {
      const s = await snapshot(bob);
      return { ok: s.participants.length === 0, participants: s.participants };
    }, { timeoutMs: 5000 });
  }));
});
