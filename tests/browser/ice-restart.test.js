// ICE restart (issue 12 item 4): in a network namespace of the test's own (lib/netns.js), Alice's media path
// is cut with nftables (every path to the media port but Bob's, UDP and ICE-TCP) while her signaling socket
// stays up, for longer than her SDK needs to notice (her connectivity checks go unanswered); then it is
// restored. Her SDK restarts ICE on the same peer connection and session (new
// ICE credentials, answered by the server on the same peer): `reconnected` with `how: resumed` and
// `iceRestarted: true`, the same sid, Bob's page sees no one leave or join, and both hear each other again.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  launchAliceAndBob, hearsTone, makeTempDir, openDemo, pollUntil, snapshot, waitConnected,
  withDiagnostics as runWithDiagnostics, selectedPair,
} from './lib/browser.js';
import { createNetns } from './lib/netns.js';
import { startServer } from './lib/server.js';

const ROOM = 'ice-restart';
/** The server's HTTP port inside the namespace (fixed: Chromium's insecure-origin flag names it). */
const HTTP_PORT = 7880;
/** How long Alice's media path stays cut: past Chromium's `disconnected` and the SDK's restart delay. */
const CUT_MS = 9000;

describe('ICE restart after the media path died', { timeout: 150000 }, () => {
  /** @type {import('./lib/netns.js').Netns|null} */
  let ns = null;
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('./lib/browser.js').Participant} */ let alice;
  /** @type {import('./lib/browser.js').Participant} */ let bob;
  const tmp = makeTempDir('chorus-ice-restart-');

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    ns = await createNetns({ prefix: 'chorus-icer' });
    server = await startServer({ netns: /** @type {any} */ (ns), httpPort: HTTP_PORT, workers: 1, slots: 3 });
    [alice, bob] = await launchAliceAndBob({ tmpDir: tmp.dir, netns: ns, serverUrl: server.url });
    all = [alice, bob];
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    if (ns) await ns.destroy();
    tmp.cleanup();
  });

  /**
   * @param {import('./lib/browser.js').Participant} listener
   * @param {number} freq
   * @param {number} own
   * @param {number} [timeoutMs]
   */
  const hears = (listener, freq, own, timeoutMs = 20000) => hearsTone(listener, freq, own, { timeoutMs });

  /** @param {import('./lib/browser.js').Participant} p @returns {Promise<string[]>} */
  const demoLog = (p) => p.page.evaluate(() => /** @type {any} */ (window).chorusDemo.log.slice());

  it('both talk', () => withDiagnostics(async () => {
    await Promise.all(all.map((p) => openDemo(p, /** @type {any} */ (server).url, ROOM)));
    await Promise.all(all.map((p) => waitConnected(p, 30000)));
    await hears(bob, 440, 660);
    await hears(alice, 660, 440);
  }));

  it('a dead media path is restarted on the same peer and session', () => withDiagnostics(async () => {
    const netns = /** @type {import('./lib/netns.js').Netns} */ (ns);
    const srv = /** @type {import('./lib/server.js').ChorusServer} */ (server);
    const sid = (await snapshot(alice)).local.sid;
    const pair = await selectedPair(alice);
    assert.equal(pair.local.protocol, 'udp', JSON.stringify(pair));
    const bobLogBefore = (await demoLog(bob)).length;
    // Every path to and from the media port but Bob's: Alice's browser finds no other pair that works (it
    // has candidates on both of the namespace's addresses), her signaling (the HTTP port) is untouched.
    const bobPair = await selectedPair(bob);
    const m = String(srv.mediaPort);
    const b = String(bobPair.local.port);
    const rules = [
      ['add', 'table', 'inet', 'alice_media'],
      ['add', 'chain', 'inet', 'alice_media', 'output', '{ type filter hook output priority 0; policy accept; }'],
      ['add', 'rule', 'inet', 'alice_media', 'output', 'udp', 'dport', m, 'udp', 'sport', '!=', b, 'counter', 'drop'],
      ['add', 'rule', 'inet', 'alice_media', 'output', 'udp', 'sport', m, 'udp', 'dport', '!=', b, 'counter', 'drop'],
      ['add', 'rule', 'inet', 'alice_media', 'output', 'tcp', 'dport', m, 'counter', 'drop'],
      ['add', 'rule', 'inet', 'alice_media', 'output', 'tcp', 'sport', m, 'counter', 'drop'],
    ];
    for (const args of rules) netns.run('nft', args);
    const cutAt = Date.now();
    console.log(`cut Alice's media: ${JSON.stringify(pair)} (Bob: ${JSON.stringify(bobPair)})`);
    await pollUntil('Alice\'s SDK to notice', async () => {
      const log = await demoLog(alice);
      return { ok: log.some((l) => / reconnecting /.test(l)), tail: log.slice(-4) };
    }, { timeoutMs: CUT_MS });
    console.log(`Alice started reconnecting ${Date.now() - cutAt} ms after the cut`);
    await new Promise((r) => setTimeout(r, Math.max(0, CUT_MS - (Date.now() - cutAt))));
    const during = await demoLog(alice);
    assert.ok(!during.some((l) => / reconnected /.test(l)), `not reconnected while cut:\n${during.slice(-6).join('\n')}`);
    assert.equal((await snapshot(alice)).connectionState, 'reconnecting');
    netns.run('nft', ['delete', 'table', 'inet', 'alice_media']);
    const done = await pollUntil('Alice to log reconnected', async () => {
      const log = await demoLog(alice);
      const line = log.find((l) => / reconnected /.test(l));
      return { ok: !!line, line, tail: log.slice(-6) };
    }, { timeoutMs: 15000 });
    console.log(`Alice: ${done.line}`);
    assert.match(done.line ?? '', /"how":"resumed"/);
    assert.match(done.line ?? '', /"iceRestarted":true/);
    const s = await snapshot(alice);
    assert.equal(s.local.sid, sid, 'the same participant');
    await hears(bob, 440, 660);
    await hears(alice, 660, 440);
    const bobLog = (await demoLog(bob)).slice(bobLogBefore);
    assert.ok(!bobLog.some((l) => / participant (left|joined) /.test(l)), `Bob saw nobody leave or join:\n${bobLog.join('\n')}`);
    const metrics = (await netns.httpGet(`${srv.url}/metrics`)).body;
    const restarts = metrics.split('\n').find((l) => l.startsWith('chorus_ice_restarts_total '));
    assert.ok(restarts && Number(restarts.split(' ')[1]) >= 1, `ICE restarts counted: ${restarts}`);
  }));
});

