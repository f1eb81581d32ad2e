// RED (RFC 2198): the SDK puts `audio/red` before Opus, Chromium offers it first, the server answers it, so
// the microphone sends RED; audio still flows both ways. In a forward room the server passes RED through to
// a subscriber that negotiated it; in a mixed room it repairs losses with it and sends the mix as Opus.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, inboundAudioStats, launchParticipant, makeTempDir, measure, openDemo,
  pollUntil, waitConnected,
} from './lib/browser.js';
import { metricValue, startServer } from './lib/server.js';

const SPEC = [
  { name: 'Ann', freq: 440, amplitude: 0.3 },
  { name: 'Ben', freq: 660, amplitude: 0.3 },
];
const FREQS = SPEC.map((s) => s.freq);
/** One's own tone must be at least this far below the other's (an echo would be ~0 dB). */
const ABSENT_DB = 30;

/** @param {import('./lib/browser.js').Participant} p */
async function sdps(p) {
  return p.page.evaluate(() => {
    const pc = /** @type {any} */ (window).chorusDemo.room.pc;
    return { offer: pc.localDescription.sdp, answer: pc.remoteDescription.sdp };
  });
}

/**
 * The server's RTP counters from /metrics.
 * @param {string} url
 */
async function metrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (/** @type {string} */ name) => metricValue(text, name) ?? 0;
  return {
    received: value('chorus_rtp_packets_received_total'),
    red: value('chorus_rtp_red_packets_received_total'),
    forwarded: value('chorus_rtp_packets_forwarded_total'),
    redForwarded: value('chorus_rtp_red_packets_forwarded_total'),
  };
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
        // The negotiated send codec (RED first); Chromium's stats name the primary (Opus) even for RED.
        const codecs = await p.page.evaluate(() => /** @type {any} */ (window).chorusDemo.room.micTransceiver
          .sender.getParameters().codecs.map((/** @type {any} */ c) => c.mimeType));
        assert.equal(codecs[0], 'audio/red', `${p.name} sends ${JSON.stringify(codecs)}`);
      }
      // And the server receives RED packets (its counter of microphone packets that arrived as RED).
      const r = await pollUntil('the server to receive RED', async () => {
        const m = await metrics(server.url);
        return { ok: m.red > 200 && m.red >= m.received * 0.9, ...m };
      }, { timeoutMs: 15000 });
      console.log(`${mode}: server metrics ${JSON.stringify(r)}`);
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

    it(mode === 'forward' ? 'a RED subscriber receives RED' : 'the mix is sent as Opus', () => withDiagnostics(async () => {
      const r = await pollUntil('the server to forward', async () => {
        const m = await metrics(server.url);
        const ok = mode === 'forward'
          ? m.redForwarded > 200 && m.redForwarded >= m.forwarded * 0.9
          : m.forwarded === 0 && m.redForwarded === 0;
        return { ok, ...m };
      }, { timeoutMs: 15000 });
      console.log(`${mode}: server metrics ${JSON.stringify(r)}`);
      for (const p of all) {
        // RED packets carry the previous frame too: about twice the bytes of plain Opus per packet.
        const inbound = (await inboundAudioStats(p)).filter((s) => s.packetsReceived > 50);
        assert.equal(inbound.length, 1, JSON.stringify(inbound));
        const perPacket = inbound[0].bytesReceived / inbound[0].packetsReceived;
        console.log(`${p.name} (${mode}) inbound ${perPacket.toFixed(0)} bytes/packet`);
      }
    }));
  });
}
