// Listener streams (docs/broadcast.md): Chromium's own <audio> element plays a room's mount,
// /live/{room}.opus (Ogg/Opus over plain HTTP, no WebRTC), while a participant talks a 440 Hz tone in the
// mixed room. The page analyses what the element plays (Web Audio, same origin) and times its first audio.
// Chromium hands a progressive download to its demuxer in 32 KB blocks, so <audio> starts once 32 KB have
// come: ≈ 5.5 s at the mix's 48 kb/s, and plays that far behind live (docs/broadcast.md, "Browsers").
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, launchParticipant, makeTempDir, openDemo, waitConnected,
} from './lib/browser.js';
import { startServer } from './lib/server.js';

const ROOM = 'radio';
const TONE = 440;
const OTHERS = [660, 880];

describe('a room mix played by <audio> from its listener mount', { timeout: 120000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  const tmp = makeTempDir();

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    const config = path.join(tmp.dir, 'broadcast.toml');
    fs.writeFileSync(config, '[broadcast]\npublic = true\n');
    server = await startServer({ workers: 1, extraArgs: ['--room-mode', 'mix', '--config', config] });
    all = await Promise.all([
      launchParticipant({ name: 'Ann', freq: TONE, amplitude: 0.3, tmpDir: tmp.dir }),
      launchParticipant({ name: 'Radio', freq: 1000, amplitude: 0.3, tmpDir: tmp.dir }),
    ]);
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    tmp.cleanup();
  });

  it('Ann talks in the mixed room', () => withDiagnostics(async () => {
    await openDemo(all[0], server.url, ROOM);
    await waitConnected(all[0], 30000);
  }));

  it('<audio> plays the mount: Ann\'s tone, nothing else, without a stall', () => withDiagnostics(async () => {
    const radio = all[1];
    // The demo page's origin (not joined): the mount is same-origin, so Web Audio may analyse it.
    await radio.page.goto(`${server.url}/healthz`, { waitUntil: 'load', timeout: 15000 });
    const r = await radio.page.evaluate(async ({ room, freqs }) => {
      const audio = new Audio(`/live/${room}.opus`);
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 16384;
      ctx.createMediaElementSource(audio).connect(analyser);
      analyser.connect(ctx.destination);
      const t0 = performance.now();
      await audio.play();
      while (audio.currentTime === 0 && performance.now() - t0 < 10000) {
        await new Promise((res) => setTimeout(res, 10));
      }
      const firstAudioMs = performance.now() - t0;
      const startTime = audio.currentTime;
      await new Promise((res) => setTimeout(res, 3000));
      const bins = new Float32Array(analyser.frequencyBinCount);
      analyser.getFloatFrequencyData(bins);
      const hz = ctx.sampleRate / analyser.fftSize;
      /** @param {number} f */
      const at = (f) => Math.max(...[-2, -1, 0, 1, 2].map((d) => bins[Math.round(f / hz) + d]));
      const powerAt = Object.fromEntries(freqs.map((f) => [f, at(f)]));
      const played = audio.currentTime - startTime;
      audio.pause();
      return { firstAudioMs, played, powerAt, error: audio.error && audio.error.message };
    }, { room: ROOM, freqs: [TONE, ...OTHERS] });
    console.log(`<audio> on the mount: ${JSON.stringify(r)}`);
    assert.equal(r.error, null);
    assert.ok(r.firstAudioMs < 9000, `first audio after ${r.firstAudioMs} ms (32 KB at 48 kb/s: 5.5 s)`);
    assert.ok(r.played > 2.5, `played ${r.played} s in 3 s`);
    assert.ok(r.powerAt[TONE] > -60, `the tone is heard: ${JSON.stringify(r.powerAt)}`);
    for (const f of OTHERS) {
      assert.ok(r.powerAt[TONE] - r.powerAt[f] > 30, `${f} Hz is absent: ${JSON.stringify(r.powerAt)}`);
    }
  }));
});
