// Firefox (Debian firefox-esr, driven over Marionette) and Chromium in one call, in a forward and in a mixed
// room. Firefox never pairs with a loopback candidate, so everything runs in a network namespace of the
// test's own (lib/netns.js) where the server binds and advertises 198.51.100.1. Firefox's microphone is a
// real one, a private PulseAudio's source into which the test plays a sine of FOX.freq; Chromium's fake one
// plays a WAV sine of CHROME.freq; each must hear the other's pitch (AnalyserNode on the received audio,
// inbound-rtp packets) and not its own.
// Then the README's loopback start: Firefox's call fails, and the page explains why. Last, a NAT rebinding:
// Firefox nominates its path only once, so only its consent checks from the new port can bring its audio back.
// In each room Firefox and a Chromium page then both speak the spoken passage and each records the
// other's, scored with PESQ-WB: the median over three loops, since Firefox's own playout here
// time-compresses a spurt now and then. Firefox's encoder and packets through our forwarder and mixer, and
// what we send through Firefox's jitter buffer and decoder.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CHROMIUM, diagnostics, launchParticipant, makeTempDir, measure, inboundAudioStats, openDemo, pollUntil,
  waitConnected,
} from './lib/browser.js';
import { launchFirefox, startPulse } from './lib/firefox.js';
import { createNetns } from './lib/netns.js';
import { startServer } from './lib/server.js';
import { startRebindingNat } from './lib/udp-rebind.js';
import { describeLoop, passageWav, pesqLoops, receiveSide, wavSeconds, writePcmWav } from './lib/speech.js';

const FOX = { name: 'Fox', freq: 750, amplitude: 0.3 };
const CHROME = { name: 'Chrome', freq: 440, amplitude: 0.3 };
const FREQS = [FOX.freq, CHROME.freq];
/** The other's tone must reach at least this band power (dB re full scale; 0.3 amplitude reads -10.5). */
const HEARD_DB = -30;
/** The server's HTTP port inside the namespace (fixed: Chromium's insecure-origin flag names it). */
const HTTP_PORT = 7880;
/** One's own tone must be at least this far below the other's (an echo would be ~0 dB). */
const ABSENT_DB = 30;
/** Seconds of silence after the passage before the speaker's fake microphone loops it. */
const SPEECH_TAIL_S = 1;
/**
 * Whole loops of the passage each records, wherever the recording starts (one more loop's time): five in the
 * mixed room, where Firefox's own playout dips single loops most (a rehearsal's median of three was 2.76:
 * loops 1.83, 2.76, 3.38), three forwarded.
 * @param {string} mode
 */
const speechLoops = (mode) => (mode === 'mix' ? 5 : 3);
/** The mixer's figures the mixed room's speech logs: ticks, late ticks, grid moves, its inputs' jitter buffers. */
const MIX_FIGURES = /^chorus_(mixer_(ticks_total|ticks_late_total|grid_moves_total)|jitter_buffer_(delay_peaks_total|lost_frames_total|concealed_frames_total|discarded_packets_total|delay_seconds_(sum|count)))[ {]/;

describe('Firefox and Chromium in a network namespace', { timeout: 360000 }, () => {
  /** @type {import('./lib/netns.js').Netns|null} */
  let ns = null;
  /** @type {import('./lib/firefox.js').Pulse|null} */
  let pulse = null;
  /** @type {import('./lib/firefox.js').FirefoxParticipant|null} */
  let fox = null;
  /** @type {import('./lib/browser.js').Participant|null} */
  let chrome = null;
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {{rebind: () => Promise<string[]>, stop: () => void}|null} */
  let nat = null;
  /** What plays into Firefox's microphone. @type {{stop: () => Promise<void>}|null} */
  let foxMic = null;
  const foxTone = () => /** @type {import('./lib/firefox.js').Pulse} */ (pulse).play(['-n'],
    ['synth', '3600', 'sine', String(FOX.freq), 'vol', String(FOX.amplitude)]);
  const tmp = makeTempDir('chorus-firefox-');
  const t0 = Date.now();

  /** @param {string} expr @param {number} [timeoutMs] Marionette's script timeout (its default 30 s) */
  const foxEval = (expr, timeoutMs) => /** @type {import('./lib/firefox.js').FirefoxParticipant} */ (fox).m.evaluate(expr, timeoutMs);

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = async (fn) => {
    try {
      await fn();
    } catch (e) {
      const parts = [];
      if (fox) {
        const snap = await foxEval('window.chorusDemo ? chorusDemo.snapshot() : null').catch((err) => String(err));
        parts.push(`--- Firefox (${FOX.freq} Hz) state: ${JSON.stringify(snap)}`);
        parts.push(`--- Firefox output (last 40):\n${fox.logs.slice(-40).join('\n')}`);
      }
      if (pulse) parts.push(`--- pulseaudio:\n${pulse.tail()}`);
      parts.push(await diagnostics(chrome ? [chrome] : [], server));
      console.error(parts.join('\n'));
      throw e;
    }
  };

  before(async () => {
    ns = await createNetns({ prefix: 'chorus-ff' });
    pulse = await startPulse(path.join(tmp.dir, 'pulse'), { mic: true });
    foxMic = foxTone();
    const [f, c] = await Promise.all([
      launchFirefox({ name: FOX.name, freq: null, tmpDir: tmp.dir, pulseServer: pulse.server, netns: ns }),
      launchParticipant({
        ...CHROME, tmpDir: tmp.dir, executablePath: ns.wrapper(CHROMIUM, tmp.dir),
        // the page is served from http://198.51.100.1:PORT, not a secure context: allow getUserMedia there
        extraArgs: [`--unsafely-treat-insecure-origin-as-secure=http://${ns.addrA}:${HTTP_PORT}`],
      }),
    ]);
    fox = f;
    chrome = c;
    console.log(`netns ${ns.name}, Firefox and Chromium up after ${Date.now() - t0} ms`);
  });

  after(async () => {
    if (nat) nat.stop();
    if (fox) await fox.close();
    if (chrome) await chrome.close();
    if (server) await server.stop();
    if (foxMic) await foxMic.stop();
    if (pulse) await pulse.stop();
    if (ns) await ns.destroy();
    tmp.cleanup();
    console.log(`Firefox test took ${Date.now() - t0} ms`);
  });

  for (const mode of ['forward', 'mix']) {
    const room = `firefox-${mode}`;

    it(`${mode}: Firefox and Chromium join and connect`, () => withDiagnostics(async () => {
      if (server) await server.stop();
      server = null;
      server = await startServer({ netns: /** @type {any} */ (ns), httpPort: HTTP_PORT, workers: 1, slots: 3,
        extraArgs: ['--room-mode', mode] });
      const c = /** @type {import('./lib/browser.js').Participant} */ (chrome);
      const q = new URLSearchParams({ room, name: FOX.name, autojoin: '1', processing: '0' });
      await Promise.all([
        /** @type {import('./lib/firefox.js').FirefoxParticipant} */ (fox).m.navigate(`${server.url}/?${q}`),
        openDemo(c, server.url, room),
      ]);
      const r = await pollUntil('Firefox to connect', async () => {
        const s = await foxEval(`window.chorusDemo ? { status: chorusDemo.status, lastError: chorusDemo.lastError,
          state: chorusDemo.room && chorusDemo.room.connectionState } : { status: 'no chorusDemo' }`);
        return { ok: s.status === 'joined' && s.state === 'connected', ...s };
      }, { timeoutMs: 30000, intervalMs: 250 });
      assert.equal(r.lastError, null, 'Firefox published its microphone');
      await waitConnected(c, 30000);
      console.log(`${mode}: both connected after ${Date.now() - t0} ms`);
    }));

    it(`${mode}: Firefox hears Chromium's ${CHROME.freq} Hz and not its own ${FOX.freq} Hz`, () => withDiagnostics(async () => {
      // the tone in a whole measurement window, and more than a second of its packets
      const m = await pollUntil(`Firefox to hear ${CHROME.freq} Hz`, async () => {
        const r = await foxEval(`chorusDemo.measure(1200, { freqs: ${JSON.stringify(FREQS)} })`);
        const heard = r.powerAt[CHROME.freq];
        const stats = await foxEval('chorusDemo.inboundAudioStats()');
        const packets = stats.reduce((/** @type {number} */ a, /** @type {any} */ x) => a + x.packetsReceived, 0);
        return { ok: heard > HEARD_DB && r.powerAt[FOX.freq] <= heard - ABSENT_DB && packets > 50, packets, ...r };
      }, { timeoutMs: 25000, intervalMs: 0 });
      const inbound = await foxEval('chorusDemo.inboundAudioStats()');
      console.log(`${mode}: Firefox hears powerAt ${JSON.stringify(m.powerAt)} peaks ${JSON.stringify(m.peaks.slice(0, 3))
      } rmsDb ${m.rmsDb}; inbound ${JSON.stringify(inbound.map((/** @type {any} */ s) => [s.mid, s.packetsReceived, s.mimeType]))}`);
      assert.ok(Math.abs(m.peaks[0].freqHz - CHROME.freq) <= 15, `strongest peak at ${CHROME.freq} Hz: ${JSON.stringify(m.peaks)}`);
      const packets = inbound.reduce((/** @type {number} */ a, /** @type {any} */ s) => a + s.packetsReceived, 0);
      assert.ok(packets > 50, `Firefox received audio packets (${packets})`);
    }));

    it(`${mode}: Chromium hears Firefox's ${FOX.freq} Hz and not its own ${CHROME.freq} Hz`, () => withDiagnostics(async () => {
      const c = /** @type {import('./lib/browser.js').Participant} */ (chrome);
      // the tone in a whole measurement window, and more than a second of its packets: Firefox's capture of
      // its PulseAudio source starts a second or two after its call connects
      const m = await pollUntil(`Chromium to hear ${FOX.freq} Hz`, async () => {
        const r = await measure(c, 1200, FREQS);
        const heard = r.powerAt[FOX.freq];
        const packets = (await inboundAudioStats(c)).reduce((a, x) => a + /** @type {any} */ (x).packetsReceived, 0);
        return { ok: heard > HEARD_DB && r.powerAt[CHROME.freq] <= heard - ABSENT_DB && packets > 50, packets, ...r };
      }, { timeoutMs: 25000, intervalMs: 0 });
      const inbound = await inboundAudioStats(c);
      console.log(`${mode}: Chromium hears powerAt ${JSON.stringify(m.powerAt)} peaks ${JSON.stringify(m.peaks.slice(0, 3))
      } rmsDb ${m.rmsDb}`);
      assert.ok(Math.abs(m.peaks[0].freqHz - FOX.freq) <= 15, `strongest peak at ${FOX.freq} Hz: ${JSON.stringify(m.peaks)}`);
      const packets = inbound.reduce((a, s) => a + /** @type {any} */ (s).packetsReceived, 0);
      assert.ok(packets > 50, `Chromium received audio packets (${packets})`);
    }));

    it(`${mode}: both leave`, () => withDiagnostics(async () => {
      await foxEval('chorusDemo.leave().then(() => chorusDemo.status)');
      await /** @type {import('./lib/browser.js').Participant} */ (chrome).page.evaluate(
        () => /** @type {any} */ (window).chorusDemo.leave());
      assert.equal(await foxEval('chorusDemo.status'), 'left');
    }));

    // Speech, not tones, both ways (the server of this round): a Chromium page and Firefox's microphone both
    // loop the espeak-ng passage; each hears the other alone and records it, and PESQ-WB scores each whole
    // loop of the passage in each recording. Forwarded, Firefox's packets (its DTX, its timing) go through our
    // slots and header rewriting to Chromium; mixed, our jitter buffer and decoder take them in and Firefox's
    // jitter buffer and decoder play our mix. The median of the loops (five mixed, three forwarded) is asserted: Firefox's jitter buffer
    // in this VM, with 0 packets lost and the machine half idle, stretches and compresses time in 10 ms steps
    // all the time, in both modes (each loop's `playout` range, from scripts/pesq_score.py: 10–30 ms wide
    // for Firefox, 0 for Chromium; Firefox's own inbound-rtp figures, logged, claim 2.3–3.2 s removed by
    // acceleration per recording, which the loops' spacing does not bear out), which costs one loop up to a
    // whole point (single loops measured 2.45–3.89 through the mix, 2.70–3.94 forwarded); a fault of ours
    // that damages the stream damages every loop. A late first spurt (`first` over 90 ms; the loop 1.9–2.7)
    // came in 1 of 2 runs before 2026-12-07's changes to the mixer's grid, 4 of 4 while the grid was held at
    // past talkers' phases, 3 of 9 since (docs/architecture.md, "Mixer tick"). It is Firefox's playout, not
    // the server's stream: captured in 13 runs, the mix carried that spurt 10–33 ms after Chromium's packet
    // arrived, within 4 ms of the next loop's in the same run, and the late runs were exactly those in
    // which the grid moved in the call's first seconds (6 of 6; none of the 7 on time); since the first
    // packet sets the grid's phase right (no early move), 1 of the 2 runs after was late all the same
    // (`first` 150 ms). Firefox's own statistics show why: it plays nothing for about 3 s after its first
    // packets arrive, then plays with seconds buffered and accelerates them away over 5–12 s; a first loop
    // in that catch-up is late, and its speakers (the null sink's monitor) hear the same as its
    // AudioContext, and Chromium sending straight to Firefox, peer to peer, shows the same start
    // (docs/architecture.md, "Mixer tick"). The floors: speech.test.js's (Chromium to Chromium)
    // mixed one, 2.5, for both modes. Found here: Firefox's RTP timestamps do not advance over the 2 s before
    // its capture of the PulseAudio source starts; forwarded as they were, Chromium took the packets after
    // that gap for 2 s late and its first loop of Firefox's speech scored 1.2–1.4 in three runs of four (4.0
    // after). The forwarder now re-times such a source (docs/architecture.md, "Rewriting"): the median would
    // not see a first-loop fault, so Chromium's every loop of the forwarded speech must reach 2.5 as well
    // (re-timed: 4.00–4.05; Firefox's own playout dips single loops to 2.2, so its loops are only logged).
    // Measured medians, forward: Firefox heard 3.06–3.88, Chromium 3.90–4.04; mix: 2.66–3.66, 3.19–3.71
    // (2026-12-07, the mixer's changes above: 3.27 and 3.51, Chromium 3.69 and 3.64).
    it(`${mode}: Firefox and Chromium each hear the other speak`, () => withDiagnostics(async () => {
      const srv = /** @type {import('./lib/server.js').ChorusServer} */ (server);
      const wav = passageWav(tmp.dir, SPEECH_TAIL_S);
      const loopS = wavSeconds(wav);
      const wholeLoops = speechLoops(mode);
      const recordS = Math.ceil((wholeLoops + 1) * loopS);
      const speaker = await launchParticipant({
        name: 'Speaker', freq: 0, tmpDir: tmp.dir, wav, executablePath: /** @type {any} */ (ns).wrapper(CHROMIUM, tmp.dir),
        extraArgs: [`--unsafely-treat-insecure-origin-as-secure=http://${/** @type {any} */ (ns).addrA}:${HTTP_PORT}`],
      });
      if (foxMic) await foxMic.stop();
      // the passage back to back for longer than the call lasts (connects, then the recordings)
      foxMic = /** @type {import('./lib/firefox.js').Pulse} */ (pulse).play([wav], ['repeat', String(Math.ceil((recordS + 60) / loopS))]);
      try {
        const room = `firefox-speech-${mode}`;
        const q = new URLSearchParams({ room, name: FOX.name, autojoin: '1', processing: '0' });
        await Promise.all([
          /** @type {import('./lib/firefox.js').FirefoxParticipant} */ (fox).m.navigate(`${srv.url}/?${q}`),
          openDemo(speaker, srv.url, room),
        ]);
        await pollUntil('Firefox to connect', async () => {
          const st = await foxEval('window.chorusDemo ? { status: chorusDemo.status, state: chorusDemo.room && chorusDemo.room.connectionState } : {}');
          return { ok: st.status === 'joined' && st.state === 'connected', ...st };
        }, { timeoutMs: 30000, intervalMs: 250 });
        await waitConnected(speaker, 30000);
        const receiving = async () => ({ Firefox: await foxEval('chorusDemo.inboundAudioStats()'),
          Chromium: await inboundAudioStats(speaker) });
        // the mixer's figures when the recordings start, beside those at their end (below)
        const mixFigures = async () => {
          const { body: text } = await /** @type {any} */ (ns).httpGet(`${srv.url}/metrics`);
          return text.split('\n').filter((l) => MIX_FIGURES.test(l)).join(', ');
        };
        const mixAtStart = mode === 'mix' ? await mixFigures() : '';
        const start = await receiving();
        const [foxRec, chromeRec] = await Promise.all([
          foxEval(`chorusDemo.record(${recordS * 1000})`, (recordS + 20) * 1000),
          speaker.page.evaluate((ms) => /** @type {any} */ (window).chorusDemo.record(ms), recordS * 1000),
        ]);
        const end = await receiving();
        /** @type {string[]} */
        const failures = [];
        for (const [who, rec] of /** @type {const} */ ([['Firefox', foxRec], ['Chromium', chromeRec]])) {
          assert.equal(rec.samples, recordS * rec.sampleRate, `${who} recorded the whole time`);
          const received = path.join(tmp.dir, `${mode}-${who}-heard.wav`);
          writePcmWav(received, rec.pcm16, rec.sampleRate);
          const s = pesqLoops(wav, received);
          const loops = s.loops.map(describeLoop).join(', ');
          console.log(`${mode}: ${who} heard the passage at PESQ-WB ${s.mos_lqo.toFixed(2)}, the median of ${loops}`);
          // what its jitter buffer did meanwhile (a dip with acceleration and no loss is the browser's playout)
          console.log(`${mode}: ${who}'s receive side while recording ${JSON.stringify(receiveSide(end[who], start[who]))}`);
          if (s.loops.length < wholeLoops) failures.push(`${who}: ${wholeLoops} whole loops in ${recordS} s: ${loops}`);
          if (s.mos_lqo < 2.5) failures.push(`${who} heard the passage at PESQ-WB ${s.mos_lqo.toFixed(2)} (loops ${loops})`);
          // Chromium's playout of a forwarded stream is steady: every loop, the first included (the re-timing)
          if (mode === 'forward' && who === 'Chromium' && s.loops.some((l) => l.mos_lqo < 2.5)) {
            failures.push(`Chromium heard a loop of Firefox's forwarded speech below PESQ-WB 2.5: ${loops}`);
          }
          // ...and clean: forwarding is bit-exact, so the median holds what Chromium plays of Firefox's
          // speech (3.97 to 4.05 a loop). The server's RED for this RED subscriber once carried Firefox's
          // frames across its DTX gaps, which garbled Chromium's playout at 2.85 while every loop stayed
          // above 2.5 (red::History).
          if (mode === 'forward' && who === 'Chromium' && s.mos_lqo < 3.5) {
            failures.push(`Chromium heard Firefox's forwarded speech at PESQ-WB ${s.mos_lqo.toFixed(2)} < 3.5: ${loops}`);
          }
        }
        if (mode === 'mix') {
          // the mixer's late ticks, grid moves and its inputs' jitter buffers, beside the browsers' receive sides
          console.log(`mix: when the recordings started: ${mixAtStart}`);
          console.log(`mix: when they ended: ${await mixFigures()}`);
        }
        assert.deepEqual(failures, []);
        await foxEval('chorusDemo.leave().then(() => chorusDemo.status)');
      } finally {
        await speaker.close();
        if (foxMic) await foxMic.stop();
        foxMic = foxTone();
      }
    }));
  }

  // Media advertised on 127.0.0.1 alone (--public-ip 127.0.0.1, or a machine without a non-loopback
  // address). Firefox pairs with no loopback candidate, so its call cannot connect; the page must say why and
  // how to start the server instead.
  it('loopback media: Firefox\'s call fails with an explanation naming the loopback address', () => withDiagnostics(async () => {
    if (server) await server.stop();
    server = null;
    server = await startServer({ netns: /** @type {any} */ (ns), httpPort: HTTP_PORT, mediaBindIp: '127.0.0.1',
      publicIp: '127.0.0.1' });
    const started = Date.now();
    const q = new URLSearchParams({ room: 'firefox-loopback', name: FOX.name, autojoin: '1', processing: '0' });
    await /** @type {import('./lib/firefox.js').FirefoxParticipant} */ (fox).m.navigate(`${server.url}/?${q}`);
    const r = await pollUntil('Firefox\'s call to fail', async () => {
      const snap = await foxEval('chorusDemo.snapshot()');
      return { ok: snap.status === 'failed', ...snap };
    }, { timeoutMs: 40000, intervalMs: 250 });
    const failedAfterMs = Date.now() - started;
    await new Promise((res) => setTimeout(res, 2000));
    const later = await foxEval('chorusDemo.snapshot()');
    const pill = await foxEval('document.getElementById("conn-state").textContent');
    console.log(`loopback: Firefox failed after ${failedAfterMs} ms: ${JSON.stringify(later.lastError)}`);
    for (const snap of [r, later]) {
      assert.equal(snap.status, 'failed');
      assert.equal(snap.connectionState, 'failed');
      assert.equal(snap.view, 'call', 'stays on the call view');
    }
    assert.equal(later.lastError.code, 'connection_failed');
    assert.match(later.lastError.message, /^could not reach the media server at 127\.0\.0\.1 UDP port \d+: /);
    assert.match(later.lastError.message, /loopback address 127\.0\.0\.1, which some browsers \(Firefox\) never use: start it with --media-bind-ip and --public-ip/);
    assert.ok(later.connDetail.includes(later.lastError.message), 'shown next to the pill');
    assert.equal(pill, 'failed');
  }));

  // The README's default start: development mode, media bound to 127.0.0.1, no public IP. Development mode
  // then also offers a UDP candidate on the machine's first non-loopback address (here the namespace's), so
  // Firefox connects and hears Chromium (issue 12 item 3).
  it('README default start: Firefox connects through development mode\'s non-loopback candidate', () => withDiagnostics(async () => {
    if (server) await server.stop();
    server = null;
    // publicIp '' keeps startServer from passing --public-ip (its netns default)
    server = await startServer({ netns: /** @type {any} */ (ns), httpPort: HTTP_PORT, mediaBindIp: '127.0.0.1',
      publicIp: '' });
    assert.match(server.tail(200), /development mode: media also on a non-loopback interface/);
    const room = 'firefox-default-start';
    const c = /** @type {import('./lib/browser.js').Participant} */ (chrome);
    const q = new URLSearchParams({ room, name: FOX.name, autojoin: '1', processing: '0' });
    await Promise.all([
      /** @type {import('./lib/firefox.js').FirefoxParticipant} */ (fox).m.navigate(`${server.url}/?${q}`),
      openDemo(c, server.url, room),
    ]);
    const r = await pollUntil('Firefox to connect', async () => {
      const st = await foxEval(`window.chorusDemo ? { status: chorusDemo.status, lastError: chorusDemo.lastError,
        state: chorusDemo.room && chorusDemo.room.connectionState } : { status: 'no chorusDemo' }`);
      return { ok: st.status === 'joined' && st.state === 'connected', ...st };
    }, { timeoutMs: 30000, intervalMs: 250 });
    assert.equal(r.lastError, null);
    await waitConnected(c, 30000);
    const m = await pollUntil(`Firefox to hear ${CHROME.freq} Hz`, async () => {
      const x = await foxEval(`chorusDemo.measure(1200, { freqs: ${JSON.stringify(FREQS)} })`);
      const heard = x.powerAt[CHROME.freq];
      return { ok: heard > HEARD_DB && x.powerAt[FOX.freq] <= heard - ABSENT_DB, ...x };
    }, { timeoutMs: 25000, intervalMs: 0 });
    console.log(`default start: Firefox hears powerAt ${JSON.stringify(m.powerAt)}`);
  }));

  // Issue 12 item 5: Firefox puts USE-CANDIDATE on its checks only until it connects, so after its NAT maps
  // it to a new port only its plain consent checks come from there. The server moves the media to them once
  // nothing has arrived over the old path for 2 s (chorus_media_path_moves_total{cause="silence"}).
  it('forward: after its NAT maps it to a new port, Firefox hears Chromium again', () => withDiagnostics(async () => {
    if (server) await server.stop();
    server = null;
    server = await startServer({ netns: /** @type {any} */ (ns), httpPort: HTTP_PORT, workers: 1, slots: 3,
      extraArgs: ['--room-mode', 'forward'] });
    const n = /** @type {import('./lib/netns.js').Netns} */ (ns);
    nat = await startRebindingNat(n, server.mediaPort);
    const room = 'firefox-rebinding';
    const c = /** @type {import('./lib/browser.js').Participant} */ (chrome);
    const q = new URLSearchParams({ room, name: FOX.name, autojoin: '1', processing: '0' });
    await Promise.all([
      /** @type {import('./lib/firefox.js').FirefoxParticipant} */ (fox).m.navigate(`${server.url}/?${q}`),
      openDemo(c, server.url, room),
    ]);
    await pollUntil('Firefox to connect', async () => {
      const st = await foxEval(`window.chorusDemo ? { status: chorusDemo.status,
        state: chorusDemo.room && chorusDemo.room.connectionState } : { status: 'no chorusDemo' }`);
      return { ok: st.status === 'joined' && st.state === 'connected', ...st };
    }, { timeoutMs: 30000, intervalMs: 250 });
    await waitConnected(c, 30000);
    const hearsChrome = async (/** @type {string} */ what) => pollUntil(what, async () => {
      const x = await foxEval(`chorusDemo.measure(1200, { freqs: ${JSON.stringify(FREQS)} })`);
      const heard = x.powerAt[CHROME.freq];
      return { ok: heard > HEARD_DB && x.powerAt[FOX.freq] <= heard - ABSENT_DB, ...x };
    }, { timeoutMs: 25000, intervalMs: 0 });
    await hearsChrome(`Firefox to hear ${CHROME.freq} Hz through the NAT`);
    const srv = /** @type {import('./lib/server.js').ChorusServer} */ (server);
    const moves = async (/** @type {string} */ cause) => {
      const { body } = await n.httpGet(`${srv.url}/metrics`);
      const m = body.match(new RegExp(`^chorus_media_path_moves_total\\{cause="${cause}"\\} (\\S+)$`, 'm'));
      assert.ok(m, `chorus_media_path_moves_total{cause="${cause}"} is exported`);
      return Number(m[1]);
    };
    const packets = async () => (await foxEval('chorusDemo.inboundAudioStats()'))
      .reduce((/** @type {number} */ a, /** @type {any} */ s) => a + s.packetsReceived, 0);
    const silenceBefore = await moves('silence');

    const rebound = await /** @type {any} */ (nat).rebind();
    const t = Date.now();
    await new Promise((res) => setTimeout(res, 300));
    const p0 = await packets();
    await new Promise((res) => setTimeout(res, 1000));
    const p1 = await packets();
    const moved = await pollUntil('the server to move Firefox\'s media to its new port', async () => {
      const silence = await moves('silence');
      return { ok: silence > silenceBefore, silence };
    }, { timeoutMs: 15000, intervalMs: 100 });
    const movedAfterMs = Date.now() - t;
    await hearsChrome(`Firefox to hear ${CHROME.freq} Hz again`);
    const hearsAfterMs = Date.now() - t;
    console.log(`rebinding ${JSON.stringify(rebound)}: Firefox received ${p1 - p0} packets in the second after ` +
      `it; media moved after ${movedAfterMs} ms (silence moves ${silenceBefore} -> ${moved.silence}), Firefox ` +
      `hears ${CHROME.freq} Hz again ${hearsAfterMs} ms after the rebinding (including a 1.2 s measurement)`);
    assert.ok(rebound.length >= 1, 'the NAT had Firefox\'s mapping to rebind');
    assert.ok(p1 - p0 < 10, `the old port is dead: ${p1 - p0} packets in the second after the rebinding`);
    // Firefox checks consent every ~5 s: the first check at least 2 s after the rebinding moves the media.
    assert.ok(movedAfterMs < 9000, `media moved ${movedAfterMs} ms after the rebinding`);
    const st = await foxEval('chorusDemo.room && chorusDemo.room.connectionState');
    assert.equal(st, 'connected', 'Firefox stayed connected');
    nat.stop();
    nat = null;
  }));
});
