// HLS (docs/broadcast.md, "HLS"): hls.js (npm) in Chromium plays a room's /hls/{room}/index.m3u8 — fMP4
// segments with Opus, through Media Source Extensions — in an <audio> element while a participant talks a
// 440 Hz tone in the mixed room. The page analyses what the element plays (Web Audio, same origin) and
// reports how far behind live it plays (hls.js's playingDate, from EXT-X-PROGRAM-DATE-TIME). hls.js's
// low-latency mode loads the LL-HLS parts (500 ms, the default) and plays about three parts behind live.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, launchParticipant, makeTempDir, openDemo, waitConnected,
} from './lib/browser.js';
import { startServer } from './lib/server.js';

const ROOM = 'stage';
const TONE = 440;
const OTHERS = [660, 880];
const HLS_JS = createRequire(import.meta.url).resolve('hls.js/dist/hls.min.js');

describe('a room mix played by hls.js from its HLS playlist', { timeout: 120000 }, () => {
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  const tmp = makeTempDir();

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    const config = path.join(tmp.dir, 'hls.toml');
    // 1 s segments: the player starts sooner (a test's time), as a deployment may choose.
    fs.writeFileSync(config, '[broadcast]\npublic = true\n[hls]\nsegment_ms = 1000\nwindow_segments = 4\n');
    server = await startServer({ workers: 1, extraArgs: ['--room-mode', 'mix', '--config', config] });
    all = await Promise.all([
      launchParticipant({ name: 'Ann', freq: TONE, amplitude: 0.3, tmpDir: tmp.dir }),
      launchParticipant({ name: 'Viewer', freq: 1000, amplitude: 0.3, tmpDir: tmp.dir }),
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

  it('hls.js plays the playlist in <audio>: Ann\'s tone, nothing else, without a stall', () => withDiagnostics(async () => {
    const viewer = all[1];
    // The server's origin (not joined): the stream is same-origin, so Web Audio may analyse it.
    await viewer.page.goto(`${server.url}/healthz`, { waitUntil: 'load', timeout: 15000 });
    await viewer.page.addScriptTag({ path: HLS_JS });
    const r = await viewer.page.evaluate(async ({ room, freqs }) => {
      // @ts-ignore -- the global the script tag defines
      const Hls = window.Hls;
      if (!Hls.isSupported()) return { error: 'hls.js: no Media Source Extensions' };
      const audio = new Audio();
      const hls = new Hls();
      /** @type {string[]} */
      const errors = [];
      hls.on(Hls.Events.ERROR, (/** @type {any} */ _e, /** @type {any} */ d) => errors.push(`${d.type}/${d.details}${d.fatal ? ' (fatal)' : ''}`));
      let codec = '';
      let parts = 0;
      hls.on(Hls.Events.FRAG_LOADED, (/** @type {any} */ _e, /** @type {any} */ d) => { if (d.part) parts += 1; });
      hls.on(Hls.Events.BUFFER_CODECS, (/** @type {any} */ _e, /** @type {any} */ d) => { codec = d.audio?.codec ?? ''; });
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 16384;
      ctx.createMediaElementSource(audio).connect(analyser);
      analyser.connect(ctx.destination);
      const t0 = performance.now();
      hls.loadSource(`/hls/${room}/index.m3u8`);
      hls.attachMedia(audio);
      await new Promise((res) => hls.on(Hls.Events.MANIFEST_PARSED, res));
      await audio.play();
      while (audio.currentTime === 0 && performance.now() - t0 < 15000) {
        await new Promise((res) => setTimeout(res, 10));
      }
      const firstAudioMs = performance.now() - t0;
      const startTime = audio.currentTime;
      let waiting = 0;
      audio.addEventListener('waiting', () => { waiting += 1; });
      await new Promise((res) => setTimeout(res, 4000));
      const bins = new Float32Array(analyser.frequencyBinCount);
      analyser.getFloatFrequencyData(bins);
      const hz = ctx.sampleRate / analyser.fftSize;
      /** @param {number} f */
      const at = (f) => Math.max(...[-2, -1, 0, 1, 2].map((d) => bins[Math.round(f / hz) + d]));
      const powerAt = Object.fromEntries(freqs.map((f) => [f, at(f)]));
      const played = audio.currentTime - startTime;
      const behindLiveMs = hls.playingDate ? Date.now() - hls.playingDate.getTime() : null;
      audio.pause();
      hls.destroy();
      return { firstAudioMs, played, waiting, powerAt, codec, parts, behindLiveMs, errors, error: audio.error && audio.error.message };
    }, { room: ROOM, freqs: [TONE, ...OTHERS] });
    console.log(`hls.js on the playlist: ${JSON.stringify(r)}`);
    assert.equal(r.error, null);
    assert.deepEqual(r.errors.filter((e) => e.includes('fatal')), [], `hls.js errors: ${r.errors}`);
    assert.match(r.codec, /opus/i, 'hls.js took the init segment\'s Opus sample entry');
    assert.ok(r.parts > 0, 'hls.js (low-latency mode) loads LL-HLS parts');
    assert.ok(r.firstAudioMs < 12000, `first audio after ${r.firstAudioMs} ms`);
    assert.ok(r.played > 3.5, `played ${r.played} s in 4 s`);
    assert.equal(r.waiting, 0, 'no stall while playing');
    assert.ok(r.powerAt[TONE] > -60, `the tone is heard: ${JSON.stringify(r.powerAt)}`);
    for (const f of OTHERS) {
      assert.ok(r.powerAt[TONE] - r.powerAt[f] > 30, `${f} Hz is absent: ${JSON.stringify(r.powerAt)}`);
    }
    assert.ok(r.behindLiveMs !== null && r.behindLiveMs < 10000, `plays ${r.behindLiveMs} ms behind live`);
  }));
});
