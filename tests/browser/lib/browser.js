// Headless Chromium participants for the browser tests: one browser process per participant, because the
// fake microphone file (--use-file-for-fake-audio-capture) is per process.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { writeSineWav } from './wav.js';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Same flags as shared/peers/chromium/smoke.js. */
export const CHROME_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // WebRTC ignores the loopback interface unless told otherwise:
  '--allow-loopback-in-peer-connection',
  // no mDNS (.local) host candidates -> real 127.0.0.1 candidates, no multicast traffic
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/** A temp dir for one test file's WAVs and browser profiles; removed by `cleanup()`. */
export function makeTempDir(prefix = 'chorus-browser-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * @typedef {object} Participant
 * @property {string} name
 * @property {number} freq
 * @property {number} amplitude
 * @property {import('playwright-core').BrowserContext} context
 * @property {import('playwright-core').Page} page
 * @property {string[]} logs     console output of the page
 * @property {() => Promise<void>} close
 */

/**
 * Launch a browser whose fake microphone plays a sine tone (or loops the WAV file `wav`), and open a page in it.
 * `executablePath` replaces Chromium (e.g. a lib/netns.js wrapper running it in a namespace), `extraArgs`
 * are appended to the flags.
 * @param {{name: string, freq: number, amplitude?: number, tmpDir: string, wav?: string, executablePath?: string,
 *   extraArgs?: string[]}} opts
 * @returns {Promise<Participant>}
 */
export async function launchParticipant({ name, freq, amplitude = 0.5, tmpDir, wav: micWav, executablePath, extraArgs = [] }) {
  const wav = micWav ?? writeSineWav(path.join(tmpDir, `${name}-${freq}hz.wav`), { freq, amplitude, seconds: 10 });
  const userDataDir = fs.mkdtempSync(path.join(tmpDir, `profile-${name}-`));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: executablePath ?? CHROMIUM,
    headless: true,
    args: [...CHROME_ARGS, `--use-file-for-fake-audio-capture=${wav}`, ...extraArgs],
    timeout: 60000,
  });
  const page = context.pages()[0] || await context.newPage();
  /** @type {string[]} */
  const logs = [];
  const push = (/** @type {string} */ l) => { logs.push(l); if (logs.length > 300) logs.shift(); };
  page.on('console', (m) => push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => push(`pageerror: ${e.stack || e.message}`));
  page.on('requestfailed', (r) => push(`requestfailed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  return {
    name, freq, amplitude, context, page, logs,
    close: async () => { await context.close().catch(() => {}); },
  };
}

/**
 * Open the demo page with autojoin and processing off.
 * @param {Participant} p
 * @param {string} baseUrl
 * @param {string} room
 * @param {Record<string, string>} [extra]  more query parameters (demo.js lists them)
 */
export async function openDemo(p, baseUrl, room, extra = {}) {
  const q = new URLSearchParams({ room, name: p.name, autojoin: '1', processing: '0', ...extra });
  await p.page.goto(`${baseUrl}/?${q}`, { waitUntil: 'load', timeout: 15000 });
}

/**
 * Wait until the demo page is joined and the combined connection state is `connected`.
 * @param {Participant} p
 * @param {number} [timeoutMs]
 */
export async function waitConnected(p, timeoutMs = 20000) {
  try {
    await p.page.waitForFunction(() => {
      const d = /** @type {any} */ (window).chorusDemo;
      return !!d && d.status === 'joined' && !!d.room && d.room.connectionState === 'connected';
    }, null, { timeout: timeoutMs, polling: 100 });
  } catch (e) {
    const { log, ...snap } = await snapshot(p);
    throw new Error(`${p.name} did not reach 'connected' within ${timeoutMs} ms: ${JSON.stringify(snap)}\n${
      (log || []).join('\n')}`);
  }
}

/**
 * @param {Participant} p
 * @returns {Promise<any>}
 */
export async function snapshot(p) {
  return p.page.evaluate(() => {
    const d = /** @type {any} */ (window).chorusDemo;
    return d ? d.snapshot() : { status: 'no window.chorusDemo' };
  }).catch((e) => ({ error: String(e) }));
}

/**
 * Analyse what the participant receives for `ms` milliseconds.
 * @param {Participant} p
 * @param {number} ms
 * @param {number[]} freqs
 * @returns {Promise<{peaks: {freqHz: number, db: number}[], rms: number, rmsDb: number,
 *   powerAt: Record<string, number>, noiseFloorDb: number, tracks: number}>}
 */
export async function measure(p, ms, freqs) {
  return p.page.evaluate(([m, f]) => /** @type {any} */ (window).chorusDemo.measure(m, { freqs: f }), [ms, freqs]);
}

/**
 * @param {Participant} p
 * @returns {Promise<any[]>}
 */
export async function inboundAudioStats(p) {
  return p.page.evaluate(() => /** @type {any} */ (window).chorusDemo.inboundAudioStats());
}

/**
 * The selected candidate pair of a page's peer connection, with both candidates (the pair Chromium
 * nominated when its transport names none).
 * @param {Participant} p
 * @returns {Promise<{state: string, local: any, remote: any}>}
 */
export async function selectedPair(p) {
  return p.page.evaluate(async () => {
    const room = /** @type {any} */ (window).chorusDemo.room;
    const report = await room.getStats();
    /** @type {Map<string, any>} */
    const byId = new Map();
    report.forEach((/** @type {any} */ s) => byId.set(s.id, s));
    const transport = [...byId.values()].find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = transport
      ? byId.get(transport.selectedCandidatePairId)
      : [...byId.values()].find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    if (!pair) return { state: 'none', local: {}, remote: {} };
    const pick = (/** @type {any} */ c) => (c ? { protocol: c.protocol, address: c.address, port: c.port,
      candidateType: c.candidateType, tcpType: c.tcpType, relayProtocol: c.relayProtocol } : {});
    return { state: pair.state, local: pick(byId.get(pair.localCandidateId)), remote: pick(byId.get(pair.remoteCandidateId)) };
  });
}

/**
 * The two-party set-up most tests use: Alice with a 440 Hz tone and Bob with 660 Hz (amplitude 0.5). With
 * `netns` (lib/netns.js) both browsers run inside that namespace, and `serverUrl` (http://198.51.100.1:PORT,
 * not a secure context) is allowed getUserMedia.
 * @param {{tmpDir: string, netns?: {wrapper: (exe: string, dir: string) => string}, serverUrl?: string}} opts
 * @returns {Promise<[Participant, Participant]>}
 */
export async function launchAliceAndBob({ tmpDir, netns, serverUrl }) {
  const inNs = netns ? {
    executablePath: netns.wrapper(CHROMIUM, tmpDir),
    extraArgs: serverUrl ? [`--unsafely-treat-insecure-origin-as-secure=${serverUrl}`] : [],
  } : {};
  const [alice, bob] = await Promise.all([
    launchParticipant({ name: 'Alice', freq: 440, amplitude: 0.5, tmpDir, ...inNs }),
    launchParticipant({ name: 'Bob', freq: 660, amplitude: 0.5, tmpDir, ...inNs }),
  ]);
  return [alice, bob];
}

/**
 * Wait until `listener` hears the tone `freq` clearly (the strongest peak within 15 Hz of it, above −35 dB)
 * and its own tone `own` at least 30 dB below it, measuring 1 s (`windowMs`) at a time; then check that Opus
 * packets arrive. Logs what was heard and returns the last measurement.
 * @param {Participant} listener
 * @param {number} freq
 * @param {number} own
 * @param {{timeoutMs?: number, windowMs?: number}} [opts]
 */
export async function hearsTone(listener, freq, own, opts = {}) {
  const freqs = [freq, own];
  const m = await pollUntil(`${listener.name} to hear ${freq} Hz`, async () => {
    const r = await measure(listener, opts.windowMs ?? 1000, freqs);
    const top = r.peaks[0];
    const ok = !!top && Math.abs(top.freqHz - freq) <= 15 &&
      r.powerAt[freq] > -35 && r.powerAt[freq] - r.powerAt[own] >= 30;
    return { ok, ...r };
  }, { timeoutMs: opts.timeoutMs ?? 20000, intervalMs: 0 });
  console.log(`${listener.name} hears: peaks ${JSON.stringify(m.peaks.slice(0, 4))} powerAt ${JSON.stringify(m.powerAt)}`);
  const stats = await inboundAudioStats(listener);
  const opus = stats.filter((x) => x.packetsReceived > 0 && /^audio\/opus$/i.test(x.mimeType || ''));
  if (opus.length < 1) throw new Error(`no inbound Opus packets at ${listener.name}: ${JSON.stringify(stats)}`);
  return { ...m, stats };
}

/**
 * Evaluate `fn` repeatedly until its result has `ok: true`, or throw after `timeoutMs` with the last result.
 * @template T
 * @param {string} what
 * @param {() => Promise<T & {ok: boolean}>} fn
 * @param {{timeoutMs?: number, intervalMs?: number}} [opts]
 * @returns {Promise<T & {ok: boolean}>}
 */
export async function pollUntil(what, fn, opts = {}) {
  const deadline = Date.now() + (opts.timeoutMs ?? 15000);
  /** @type {any} */
  let last;
  for (;;) {
    last = await fn();
    if (last.ok) return last;
    if (Date.now() > deadline) {
      const err = new Error(`timed out waiting for ${what}; last observation: ${JSON.stringify(last)}`);
      /** @type {any} */ (err).last = last;
      throw err;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
}

/**
 * Everything useful after a failure: each page's state and console, and the server's output.
 * @param {Participant[]} participants
 * @param {{tail: (n?: number) => string}|null} server
 * @returns {Promise<string>}
 */
export async function diagnostics(participants, server) {
  const parts = [];
  for (const p of participants) {
    const { log, ...state } = await snapshot(p);
    parts.push(`--- ${p.name} (${p.freq} Hz, amplitude ${p.amplitude}) state: ${JSON.stringify(state)}`);
    parts.push(`--- ${p.name} console (last 30):\n${p.logs.slice(-30).join('\n')}`);
  }
  if (server) parts.push(`--- server output (tail):\n${server.tail(80)}`);
  return parts.join('\n');
}

/**
 * Run `fn`; on failure print the pages' and the server's state (read when the failure happens), then rethrow.
 * @param {() => Participant[]} participants
 * @param {() => ({tail: (n?: number) => string}|null)} server
 * @param {() => Promise<void>} fn
 */
export async function withDiagnostics(participants, server, fn) {
  try {
    await fn();
  } catch (e) {
    console.error(await diagnostics(participants(), server()));
    throw e;
  }
}
