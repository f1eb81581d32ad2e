// Five participants, K = 3 slots: everyone receives the 3 loudest *other* speakers. At the two quietest
// participants' pages the three loud tones are heard and the other quiet participant's tone is not.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, inboundAudioStats, launchParticipant, makeTempDir, measure, openDemo, pollUntil, snapshot,
  waitConnected,
} from './lib/browser.js';
import { startServer } from './lib/server.js';

const ROOM = 'quintet';
// Frequencies well apart, none a harmonic of another, and every 2nd/3rd-order intermodulation product at
// least 70 Hz away from every tone. Levels: three loud, two clearly quieter.
const SPEC = [
  { name: 'Loud1', freq: 450, amplitude: 0.9 },
  { name: 'Loud2', freq: 680, amplitude: 0.6 },
  { name: 'Loud3', freq: 790, amplitude: 0.4 },
  { name: 'Quiet1', freq: 980, amplitude: 0.08 },
  { name: 'Quiet2', freq: 1060, amplitude: 0.05 },
];
const FREQS = SPEC.map((s) => s.freq);
/** A tone counts as heard within this many dB of the strongest one (the loud ones differ by 7 dB). */
const HEARD_DB = 20;
/** A tone counts as absent this many dB below the strongest (a forwarded quiet tone would be ~25 dB). */
const ABSENT_DB = 35;

describe('five participants, three slots', { timeout: 150000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  const tmp = makeTempDir();

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    server = await startServer({ workers: 1, slots: 3 });
    all = await Promise.all(SPEC.map((s) => launchParticipant({ ...s, tmpDir: tmp.dir })));
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    tmp.cleanup();
  });

  it('all five join and connect', () => withDiagnostics(async () => {
    await Promise.all(all.map((p) => openDemo(p, server.url, ROOM)));
    await Promise.all(all.map((p) => waitConnected(p, 30000)));
    for (const p of all) {
      await pollUntil(`${p.name} to list the other four`, async () => {
        const s = await snapshot(p);
        return { ok: s.participants.length === 4, participants: s.participants.map((/** @type {any} */ q) => q.name) };
      }, { timeoutMs: 10000 });
    }
  }));

  for (const quiet of SPEC.slice(3)) {
    const other = SPEC.slice(3).find((s) => s !== quiet);
    const loud = SPEC.slice(0, 3);
    it(`${quiet.name} hears the three loud tones and not ${other.name}`, () => withDiagnostics(async () => {
      const p = /** @type {import('./lib/browser.js').Participant} */ (all.find((x) => x.name === quiet.name));
      const m = await pollUntil(`${quiet.name} to hear exactly the loud tones`, async () => {
        const r = await measure(p, 1200, FREQS);
        const strongest = Math.max(...loud.map((s) => r.powerAt[s.freq]));
        const heard = loud.every((s) => r.powerAt[s.freq] >= strongest - HEARD_DB);
        const absent = r.powerAt[other.freq] <= strongest - ABSENT_DB;
        return { ok: heard && absent && strongest > -30, strongest, ...r };
      }, { timeoutMs: 25000, intervalMs: 0 });
      console.log(`${quiet.name} powerAt ${JSON.stringify(m.powerAt)} peaks ${JSON.stringify(m.peaks.slice(0, 5))}`);
      const top3 = m.peaks.slice(0, 3).map((x) => x.freqHz);
      for (const s of loud) {
        assert.ok(top3.some((f) => Math.abs(f - s.freq) <= 15), `${s.freq} Hz among the 3 strongest peaks ${JSON.stringify(m.peaks)}`);
      }
      const stats = await inboundAudioStats(p);
      assert.equal(stats.length, 3, `three inbound slot streams: ${JSON.stringify(stats)}`);
      assert.ok(stats.every((s) => s.packetsReceived > 0 && /^audio\/opus$/i.test(s.mimeType || '')),
        `Opus packets on every slot: ${JSON.stringify(stats)}`);
    }));
  }

  it('the slots of the quiet participants carry the three loud participants', () => withDiagnostics(async () => {
    const sidOf = new Map();
    for (const p of all) sidOf.set((await snapshot(p)).local.sid, p.name);
    for (const quiet of all.slice(3)) {
      await pollUntil(`${quiet.name}'s slots to be the loud three`, async () => {
        const s = await snapshot(quiet);
        const names = s.slots.map((/** @type {any} */ x) => sidOf.get(x.sid) ?? x.sid).sort();
        return { ok: JSON.stringify(names) === JSON.stringify(['Loud1', 'Loud2', 'Loud3']), names };
      }, { timeoutMs: 5000 });
    }
  }));
});
