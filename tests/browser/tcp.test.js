// ICE-TCP (issue 12 item 1): in a network namespace of the test's own (lib/netns.js) where nftables drops all
// UDP, chorus and headless Chromium run inside it; two pages join through the demo page, each hears the
// other's tone, and getStats shows the selected candidate pair on TCP at both ends, the server's end on the
// worker's ICE-TCP port (the UDP port's number).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  launchAliceAndBob, hearsTone, makeTempDir, openDemo, pollUntil, waitConnected,
  withDiagnostics as runWithDiagnostics, selectedPair,
} from './lib/browser.js';
import { createNetns } from './lib/netns.js';
import { startServer } from './lib/server.js';

const ROOM = 'tcp-only';
/** The server's HTTP port inside the namespace (fixed: Chromium's insecure-origin flag names it). */
const HTTP_PORT = 7880;

/** nftables rules inside the namespace: UDP dropped on the way out and in, everything else passes. */
const DROP_UDP = [
  ['add', 'table', 'inet', 'udp_blocked'],
  ['add', 'chain', 'inet', 'udp_blocked', 'output', '{ type filter hook output priority 0; policy accept; }'],
  ['add', 'chain', 'inet', 'udp_blocked', 'input', '{ type filter hook input priority 0; policy accept; }'],
  ['add', 'rule', 'inet', 'udp_blocked', 'output', 'meta', 'l4proto', 'udp', 'counter', 'drop'],
  ['add', 'rule', 'inet', 'udp_blocked', 'input', 'meta', 'l4proto', 'udp', 'counter', 'drop'],
];

describe('ICE-TCP where UDP is dropped', { timeout: 120000 }, () => {
  /** @type {import('./lib/netns.js').Netns|null} */
  let ns = null;
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('./lib/browser.js').Participant} */ let alice;
  /** @type {import('./lib/browser.js').Participant} */ let bob;
  const tmp = makeTempDir('chorus-tcp-');

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, fn);

  before(async () => {
    ns = await createNetns({ prefix: 'chorus-tcp' });
    for (const args of DROP_UDP) ns.run('nft', args);
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

  it('both join through the demo page and connect over TCP', () => withDiagnostics(async () => {
    await Promise.all(all.map((p) => openDemo(p, /** @type {any} */ (server).url, ROOM)));
    await Promise.all(all.map((p) => waitConnected(p, 30000)));
    for (const p of all) {
      const pair = await selectedPair(p);
      console.log(`${p.name} selected pair: ${JSON.stringify(pair)}`);
      assert.equal(pair.local.protocol, 'tcp', `${p.name}'s local candidate: ${JSON.stringify(pair)}`);
      assert.equal(pair.remote.protocol, 'tcp', `${p.name}'s remote candidate: ${JSON.stringify(pair)}`);
      assert.equal(pair.remote.port, /** @type {any} */ (server).mediaPort,
        'the worker\'s ICE-TCP port (the UDP port\'s number)');
    }
    // UDP really was tried and dropped inside the namespace.
    const counters = /** @type {any} */ (ns).run('nft', ['list', 'table', 'inet', 'udp_blocked']);
    assert.match(counters, /counter packets [1-9]/, counters);
  }));


  it('Bob hears Alice (440 Hz) over TCP', () => withDiagnostics(async () => {
    await hearsTone(bob, 440, 660);
  }));

  it('Alice hears Bob (660 Hz) over TCP', () => withDiagnostics(async () => {
    await hearsTone(alice, 660, 440);
  }));
});

