// A mixed room: the server decodes, mixes and re-encodes, so each page receives one Opus stream carrying
// everyone else. Three pages send 440, 660 and 880 Hz; each must hear the other two tones and not its own,
// and the mixed stream's contributing sources (CSRCs) must name the other two participants.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, launchParticipant, makeTempDir, measure, openDemo, pollUntil, snapshot,
  waitConnected,
} from './lib/browser.js';
import { startServer } from './lib/server.js';

const ROOM = 'mixed-trio';
const SPEC = [
  { name: 'Ann', freq: 440, amplitude: 0.3 },
  { name: 'Ben', freq: 660, amplitude: 0.3 },
  { name: 'Cat', freq: 880, amplitude: 0.3 },
];
const FREQS = SPEC.map((s) => s.freq);
/** The other two tones are heard within this many dB of each other (equal levels were sent). */
const HEARD_DB = 6;
/** One's own tone must be at least this far below the others (an echo would be ~0 dB). */
const ABSENT_DB = 30;

describe('three participants in a mixed room', { timeout: 150000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  const tmp = makeTempDir();

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    server = await startServer({ workers: 1, extraArgs: ['--room-mode', 'mix'] });
    all = await Promise.all(SPEC.map((s) => launchParticipant({ ...s, tmpDir: tmp.dir })));
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    tmp.cleanup();
  });

  it('all three join and connect', () => withDiagnostics(async () => {
    await Promise.all(all.map((p) => openDemo(p, server.url, ROOM)));
    await Promise.all(all.map((p) => waitConnected(p, 30000)));
  }));

  for (const me of SPEC) {
    const others = SPEC.filter((s) => s !== me);
    it(`${me.name} hears ${others.map((o) => o.name).join(' and ')} in the mix and not itself`, () => withDiagnostics(async () => {
      const p = /** @type {import('./lib/browser.js').Participant} */ (all.find((x) => x.name === me.name));
      const m = await pollUntil(`${me.name} to hear the other two tones`, async () => {
        const r = await measure(p, 1200, FREQS);
        const levels = others.map((o) => r.powerAt[o.freq]);
        const strongest = Math.max(...levels);
        const heard = levels.every((l) => l >= strongest - HEARD_DB) && strongest > -30;
        const absent = r.powerAt[me.freq] <= strongest - ABSENT_DB;
        return { ok: heard && absent, strongest, ...r };
      }, { timeoutMs: 25000, intervalMs: 0 });
      console.log(`${me.name} (mix) powerAt ${JSON.stringify(m.powerAt)}`);
      const top2 = m.peaks.slice(0, 2).map((x) => x.freqHz);
      for (const o of others) {
        assert.ok(top2.some((f) => Math.abs(f - o.freq) <= 15), `${o.freq} Hz among the 2 strongest peaks ${JSON.stringify(m.peaks)}`);
      }
    }));
  }

  it('the mixed stream names the other two participants as contributing sources', () => withDiagnostics(async () => {
    const micSsrc = new Map();
    for (const p of all) {
      const out = await p.page.evaluate(() => /** @type {any} */ (window).chorusDemo.outboundAudioStats());
      assert.equal(out.length, 1, `${p.name} sends one stream: ${JSON.stringify(out)}`);
      micSsrc.set(p.name, out[0].ssrc);
    }
    for (const p of all) {
      const expected = all.filter((q) => q !== p).map((q) => micSsrc.get(q.name)).sort();
      const r = await pollUntil(`${p.name}'s contributing sources`, async () => {
        const s = await snapshot(p);
        const csrcs = [...new Set(s.slots[0].csrcs)].sort();
        return { ok: JSON.stringify(csrcs) === JSON.stringify(expected), csrcs, expected };
      }, { timeoutMs: 5000 });
      assert.ok(!r.csrcs.includes(micSsrc.get(p.name)), 'never one\'s own SSRC');
      // RFC 6465 levels, when the browser negotiated the extension.
      const sources = await p.page.evaluate(() => {
        const room = /** @type {any} */ (window).chorusDemo.room;
        const receiver = room.slots[0].transceiver.receiver;
        const offer = room.pc.localDescription ? room.pc.localDescription.sdp : '';
        return {
          negotiated: /csrc-audio-level/.test(room.pc.remoteDescription ? room.pc.remoteDescription.sdp : ''),
          offered: /csrc-audio-level/.test(offer),
          sources: receiver.getContributingSources().map((/** @type {any} */ c) => ({ source: c.source, audioLevel: c.audioLevel })),
        };
      });
      console.log(`${p.name} contributing sources ${JSON.stringify(sources)}`);
      if (sources.negotiated) {
        assert.ok(sources.sources.every((/** @type {any} */ c) => typeof c.audioLevel === 'number' && c.audioLevel > 0.01),
          `levels for every contributor: ${JSON.stringify(sources.sources)}`);
      }
    }
  }));
});
