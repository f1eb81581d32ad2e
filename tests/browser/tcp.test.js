// ICE-TCP (issue 12 item 1): in a network namespace of the test's own where nftables drops all UDP, chorus
// (the README's default start: 127.0.0.1:7880, media port 7882 on UDP and TCP) and headless Chromium run
// inside it; two pages join through the demo page, each hears the other's tone, and getStats shows the
// selected candidate pair on TCP at both ends.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CHORUS_BIN } from './lib/server.js';
import { createUdpBlockedNetns, netnsUnavailable } from './lib/netns-udp-blocked.js';

const ROOM = 'tcp-only';
const FREQS = [440, 660];
const URL = 'http://127.0.0.1:7880';

describe('ICE-TCP where UDP is dropped', { timeout: 120000 }, () => {
  /** @type {import('./lib/netns-udp-blocked.js').UdpBlockedNetns|null} */
  let ns = null;
  /** @type {{tail: (n?: number) => string, stop: () => Promise<void>}|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('./lib/browser.js').Participant} */ let alice;
  /** @type {import('./lib/browser.js').Participant} */ let bob;
  /** @type {typeof import('./lib/browser.js')} */
  let browser;
  /** @type {{dir: string, cleanup: () => void}} */
  let tmp;

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => browser.withDiagnostics(() => all, () => server, fn);

  before(async () => {
    const why = netnsUnavailable();
    if (why) throw new Error(`this test needs its own network namespace, and cannot make one: ${why}`);
    ns = createUdpBlockedNetns(`chorus-tcp-${process.pid}`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-tcp-'));
    tmp = { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
    // Chromium runs inside the namespace through a wrapper; lib/browser.js reads $CHROMIUM when loaded.
    process.env.CHROMIUM = ns.wrapper(process.env.CHROMIUM || '/usr/bin/chromium', tmp.dir);
    browser = await import('./lib/browser.js');
    server = await startInNetns(ns);
    [alice, bob] = await Promise.all([
      browser.launchParticipant({ name: 'Alice', freq: 440, amplitude: 0.5, tmpDir: tmp.dir }),
      browser.launchParticipant({ name: 'Bob', freq: 660, amplitude: 0.5, tmpDir: tmp.dir }),
    ]);
    all = [alice, bob];
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    if (ns) ns.remove();
    if (tmp) tmp.cleanup();
  });

  it('both join through the demo page and connect over TCP', () => withDiagnostics(async () => {
    await Promise.all(all.map((p) => browser.openDemo(p, URL, ROOM)));
    await Promise.all(all.map((p) => browser.waitConnected(p, 30000)));
    for (const p of all) {
      const pair = await selectedPair(p);
      console.log(`${p.name} selected pair: ${JSON.stringify(pair)}`);
      assert.equal(pair.local.protocol, 'tcp', `${p.name}'s local candidate: ${JSON.stringify(pair)}`);
      assert.equal(pair.remote.protocol, 'tcp', `${p.name}'s remote candidate: ${JSON.stringify(pair)}`);
      assert.equal(pair.remote.port, 7882, 'the worker\'s ICE-TCP port (the UDP port\'s number)');
    }
    // UDP really was tried and dropped inside the namespace.
    const counters = ns ? ns.counters() : '';
    assert.match(counters, /counter packets [1-9]/, counters);
  }));

  /**
   * Wait until `listener` hears `freq` clearly and not its own tone `own`.
   * @param {import('./lib/browser.js').Participant} listener
   * @param {number} freq
   * @param {number} own
   */
  const hears = async (listener, freq, own) => {
    const m = await browser.pollUntil(`${listener.name} to hear ${freq} Hz`, async () => {
      const r = await browser.measure(listener, 1000, FREQS);
      const top = r.peaks[0];
      const ok = !!top && Math.abs(top.freqHz - freq) <= 15 &&
        r.powerAt[freq] > -35 && r.powerAt[freq] - r.powerAt[own] >= 30;
      return { ok, ...r };
    }, { timeoutMs: 20000, intervalMs: 0 });
    console.log(`${listener.name} hears: peaks ${JSON.stringify(m.peaks.slice(0, 4))} powerAt ${JSON.stringify(m.powerAt)}`);
    const stats = await browser.inboundAudioStats(listener);
    const opus = stats.filter((s) => s.packetsReceived > 0 && /^audio\/opus$/i.test(s.mimeType || ''));
    assert.ok(opus.length >= 1, `inbound Opus packets at ${listener.name}: ${JSON.stringify(stats)}`);
  };

  it('Bob hears Alice (440 Hz) over TCP', () => withDiagnostics(async () => {
    await hears(bob, 440, 660);
  }));

  it('Alice hears Bob (660 Hz) over TCP', () => withDiagnostics(async () => {
    await hears(alice, 660, 440);
  }));
});

/**
 * The selected candidate pair of a page's peer connection, with both candidates.
 * @param {import('./lib/browser.js').Participant} p
 * @returns {Promise<{state: string, local: any, remote: any}>}
 */
async function selectedPair(p) {
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
      candidateType: c.candidateType, tcpType: c.tcpType } : {});
    return { state: pair.state, local: pick(byId.get(pair.localCandidateId)), remote: pick(byId.get(pair.remoteCandidateId)) };
  });
}

/**
 * Start chorus inside the namespace on the README's defaults (development mode, one worker) and wait for
 * its ready banner.
 * @param {import('./lib/netns-udp-blocked.js').UdpBlockedNetns} ns
 */
async function startInNetns(ns) {
  const [cmd, ...args] = ns.command(CHORUS_BIN, ['--workers', '1', '--room-slots', '3']);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  /** @type {string[]} */
  const lines = [];
  let ready = false;
  const keep = (/** @type {Buffer} */ chunk) => {
    for (const l of chunk.toString('utf8').split('\n')) {
      if (!l) continue;
      lines.push(l);
      if (/chorus .* ready/.test(l)) ready = true;
    }
    if (lines.length > 400) lines.splice(0, lines.length - 400);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  /** @type {{code: number|null, signal: string|null}|null} */
  let exited = null;
  const exitPromise = new Promise((resolve) => proc.once('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  const tail = (n = 60) => lines.slice(-n).join('\n');
  const deadline = Date.now() + 20000;
  while (!ready) {
    if (exited) throw new Error(`chorus exited during startup (${JSON.stringify(exited)}):\n${tail()}`);
    if (Date.now() > deadline) throw new Error(`chorus did not print its banner:\n${tail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(lines.join('\n'), /media TCP\s+127\.0\.0\.1:7882/, 'the banner names the ICE-TCP port');
  return {
    tail,
    stop: async () => {
      if (exited) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => { if (!exited) proc.kill('SIGKILL'); }, 5000);
      await exitPromise;
      clearTimeout(t);
    },
  };
}
