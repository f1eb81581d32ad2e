// Speech, not tones, between two Chromium pages: one page's fake microphone loops a spoken passage
// (espeak-ng, with real pauses: scripts/speech-passage.sh), the other records what it receives for long
// enough to hold one whole passage, and PESQ-WB (ITU-T P.862.2, scripts/pesq_score.py in .venv) scores the
// recording against the passage. In a forward room Chorus passes Chromium's own Opus packets through, so the
// score is Chromium's encoder and jitter buffer alone; in a mixed room the server's decode, mix and re-encode
// adds a second codec pass, and its gate edges (every pause, every stop consonant) must not damage the speech
// (issue 9: 1.5 before the fix).
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, inboundAudioStats, launchParticipant, makeTempDir, openDemo,
  waitConnected,
} from './lib/browser.js';
import { startServer } from './lib/server.js';
import { passageWav, pesq, receiveSide, writePcmWav } from './lib/speech.js';

/** Seconds of silence after the passage before the fake microphone loops it. */
const TAIL_S = 3;
/** Seconds recorded: at least one whole loop (passage ≈ 12 s + tail) wherever the recording starts. */
const RECORD_S = 32;

for (const mode of /** @type {const} */ (['forward', 'mix'])) {
  describe(`spoken passage through a ${mode} room between two Chromium pages`, { timeout: 150000 }, () => {
    /** @type {import('./lib/server.js').ChorusServer|null} */
    let server = null;
    /** @type {import('./lib/browser.js').Participant[]} */
    let all = [];
    const tmp = makeTempDir();
    let wav = '';
    /** @param {() => Promise<void>} fn */
    const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

    before(async () => {
      wav = passageWav(tmp.dir, TAIL_S);
      server = await startServer({ workers: 1, extraArgs: ['--room-mode', mode] });
      const speaker = await launchParticipant({ name: 'Speaker', freq: 0, tmpDir: tmp.dir, wav });
      // The listener's own microphone is silent (a 0-amplitude tone: DTX).
      const listener = await launchParticipant({ name: 'Listener', freq: 440, amplitude: 0, tmpDir: tmp.dir });
      all = [speaker, listener];
    });

    after(async () => {
      await Promise.all(all.map((p) => p.close()));
      if (server) await server.stop();
      tmp.cleanup();
    });

    it('the listener hears the passage with PESQ-WB to spare', () => withDiagnostics(async () => {
      await Promise.all(all.map((p) => openDemo(p, server.url, `speech-${mode}`)));
      await Promise.all(all.map((p) => waitConnected(p, 30000)));
      const listener = all[1];
      const rec = await listener.page.evaluate((ms) => /** @type {any} */ (window).chorusDemo.record(ms), RECORD_S * 1000);
      assert.equal(rec.samples, RECORD_S * rec.sampleRate);
      const received = path.join(tmp.dir, `received-${mode}.wav`);
      writePcmWav(received, rec.pcm16, rec.sampleRate);
      const s = pesq(wav, received, RECORD_S);
      console.log(`${mode}: PESQ-WB ${s.mos_lqo.toFixed(2)} (correlation ${s.correlation.toFixed(2)}, passage found `
        + `${(s.delay_ms / 1000).toFixed(1)} s into the recording)`);
      // Where damage came from, should the score fall: the listener's receive side (packets lost on the way,
      // samples its jitter buffer concealed) against the speaker's send side. Losses and concealment near 0
      // with a low score point upstream of the server (the speaker's capture or encoder starved on a loaded
      // machine); one forward run in a CI rehearsal scored 3.14 once and 3.89–3.93 when rerun. In a mixed
      // room the concealed share includes the mix's DTX pauses (about a third of this passage).
      console.log(`${mode}: listener receive side ${JSON.stringify(receiveSide(await inboundAudioStats(listener)))}`);
      // Scored against the passage itself, so Chromium's own encode and jitter buffer count too. Measured on
      // this 2-core VM (with other work running): forward 3.88–3.99, mix 3.42–3.83 (in virtual time with
      // libopus clients: 4.04 and 3.79 against the passage); the mix before the gate fix scored 1.5, and
      // 2.94–3.36 while an idle mixer's grid moves put the listeners' timestamps ahead of the clock
      // (Chromium then time-compressed 100–175 ms of speech per recording, `acceleratedMs`; 40–101 after).
      // The floors leave room for a loaded machine's scheduling.
      if (mode === 'mix') {
        // The mixer's grid moves (each brings the listener's packets sooner) and late ticks, beside the
        // listener's acceleration above.
        const text = await (await fetch(`${/** @type {any} */ (server).url}/metrics`)).text();
        console.log(`mix: ${text.split('\n').filter((l) => /^chorus_mixer_(ticks_total|ticks_late_total|grid_moves_total) /.test(l)).join(', ')}`);
      }
      const floor = mode === 'forward' ? 3.3 : 2.5;
      assert.ok(s.mos_lqo >= floor, `${mode}: PESQ-WB ${s.mos_lqo.toFixed(2)} < ${floor}`);
    }));
  });
}
