// RED (RFC 2198): the SDK puts `audio/red` before Opus, Chromium offers it first, the server answers it, so
// the microphone sends RED; audio still flows both ways. In a forward room the server passes RED through to
// a subscriber that negotiated it; in a mixed room it repairs losses with it and sends the mix as Opus.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, inboundAudioStats, launchParticipant, makeTempDir, measure, openDemo,
  pollUntil, waitConnected,
} from './lib/browser.js';
import { startServer } from './lib/server.js';

const SPEC = [
  { name: 'Ann', freq: 440, amplitude: 0.3 },
  { name: 'Ben', freq: 660, amplitude: 0.3 },
];
const FREQS = SPEC.map((s) => s.freq);
/** One's own tone must be at least this far below the other's (an echo would be ~0 dB). */
const ABSENT_DB = 30;

/** @param {import('./lib/browser.js').Participant} p */
async function outbound(p) {
  return p.page.evaluate(() => /** @type {any} */ (window).chorusDemo.outboundAudioStats());
}

/** @param {import('./lib/browser.js').Participant} p */
async function sdps(p) {
  return p.page.evaluate(() => {
    const pc = /** @type {any} */ (window).chorusDemo.room.pc;
    return { offer: pc.localDescription.sdp, answer: pc.remoteDescription.sdp };
  });
}

for (const mode of ['forward', 'mix']) {
  describe(`RED in a ${mode} room`, { timeout: 120000 }, () => {
    /** @type {import('./lib/server.js').ChorusServer|null} */
    let server = null;
    /** @type {import('./lib/browser.js').Participant[]} */
    let all = [];
    const tmp = makeTempDir();

    /** @param {() => Promise<void>} fn */
    const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

    before(async () => {
      server = await startServer({ workers: 1, extraArgs: ['--room-mode', mode] });
      all = await Promise.all(SPEC.map((s) => launchParticipant({ ...s, tmpDir: tmp.dir })));
    });

    after(async () => {
      await Promise.all(all.map((p) => p.close()));
      if (server) await server.stop();
      tmp.cleanup();
    });

    it('both join, offer RED first and have it answered first on every m-line', () => withDiagnostics(async () => {
      await Promise.all(all.map((p) => openDemo(p, server.url, `red-${mode}`)));
      await Promise.all(all.map((p) => waitConnected(p, 30000)));
      for (const p of all) {
        const { offer, answer } = await sdps(p);
        const red = /a=rtpmap:(\d+) red\/48000\/2/.exec(offer);
        assert.ok(red, `${p.name} offers RED:\n${offer}`);
        const mlines = answer.split('\r\n').filter((l) => l.startsWith('m=audio'));
        assert.ok(mlines.length >= 2, answer);
        for (const m of mlines) {
          assert.equal(m.split(' ')[3], red[1], `RED answered first: ${m}\n${answer}`);
        }
      }
    }));

    it('the microphone sends RED', () => withDiagnostics(async () => {
      for (const p of all) {
        const r = await pollUntil(`${p.name}'s uplink codec`, async () => {
          const out = await outbound(p);
          const sending = out.filter((s) => s.packetsSent > 50);
          return { ok: sending.length === 1 && sending[0].mimeType === 'audio/red', out };
        }, { timeoutMs: 15000 });
        console.log(`${p.name} (${mode}) outbound ${JSON.stringify(r.out)}`);
      }
    }));

    it('audio flows both ways', () => withDiagnostics(async () => {
      for (const me of SPEC) {
        const other = /** @type {typeof SPEC[0]} */ (SPEC.find((s) => s !== me));
        const p = /** @type {import('./lib/browser.js').Participant} */ (all.find((x) => x.name === me.name));
        const m = await pollUntil(`${me.name} to hear ${other.name}`, async () => {
          const r = await measure(p, 1200, FREQS);
          const heard = r.powerAt[other.freq] > -30;
          const absent = r.powerAt[me.freq] <= r.powerAt[other.freq] - ABSENT_DB;
          return { ok: heard && absent, ...r };
        }, { timeoutMs: 25000, intervalMs: 0 });
        console.log(`${me.name} (${mode}) powerAt ${JSON.stringify(m.powerAt)}`);
        const top = m.peaks[0];
        assert.ok(Math.abs(top.freqHz - other.freq) <= 15, `${other.freq} Hz is the strongest peak ${JSON.stringify(m.peaks)}`);
      }
    }));

    it(mode === 'forward' ? 'a RED subscriber receives RED' : 'the mix arrives as Opus', () => withDiagnostics(async () => {
      const expected = mode === 'forward' ? 'audio/red' : 'audio/opus';
      for (const p of all) {
        const r = await pollUntil(`${p.name}'s downlink codec`, async () => {
          const inbound = (await inboundAudioStats(p)).filter((s) => s.packetsReceived > 50);
          return { ok: inbound.length === 1 && inbound[0].mimeType === expected, inbound };
        }, { timeoutMs: 15000 });
        console.log(`${p.name} (${mode}) inbound ${JSON.stringify(r.inbound)}`);
      }
    }));
  });
}
