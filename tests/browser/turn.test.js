// TURN with a real coturn (Debian `coturn`, started here on 127.0.0.1 with `use-auth-secret`): the server
// hands out TURN REST credentials in `joined`, the SDK passes them to RTCPeerConnection, and two Chromium
// pages forced to relay only (`/?relay=1`: iceTransportPolicy "relay") hear each other's tone through coturn;
// getStats shows a relay local candidate on the selected pair, and coturn's log shows their allocations. With
// a server whose turn.secret differs from coturn's, coturn refuses the allocation (401) and the page explains
// the failure.
//
// Loopback: coturn needs `allow-loopback-peers` (the media server is at 127.0.0.1) and a `relay-ip`; Chromium
// needs --allow-loopback-in-peer-connection (lib/browser.js). coturn gets its own ports and files; it is
// stopped by PID and waited for.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  withDiagnostics as runWithDiagnostics, hearsTone, launchAliceAndBob, makeTempDir, pollUntil, snapshot,
  waitConnected, selectedPair,
} from './lib/browser.js';
import { freeUdpPorts, startServer } from './lib/server.js';

const TURNSERVER = process.env.TURNSERVER || '/usr/bin/turnserver';
const SECRET = 'chorus-turn-test-shared-secret';
const WRONG_SECRET = 'not-the-secret-coturn-was-given';
const ROOM = 'relayed';
/** Relay ports coturn may allocate (a block of free ones). */
const RELAY_PORTS = 40;

/**
 * @typedef {object} Coturn
 * @property {number} port
 * @property {() => string} output    everything coturn logged so far
 * @property {() => Promise<void>} stop
 */

/**
 * Start coturn on 127.0.0.1 with `use-auth-secret` and wait until it listens.
 * @param {string} dir
 * @returns {Promise<Coturn>}
 */
async function startCoturn(dir) {
  if (!fs.existsSync(TURNSERVER)) {
    throw new Error(`${TURNSERVER} not found: apt-get install coturn (or set TURNSERVER)`);
  }
  const port = await freeUdpPorts(1);
  const relayStart = await freeUdpPorts(RELAY_PORTS);
  const conf = path.join(dir, 'turnserver.conf');
  fs.writeFileSync(conf, [
    'listening-ip=127.0.0.1',
    'relay-ip=127.0.0.1',
    `listening-port=${port}`,
    `min-port=${relayStart}`,
    `max-port=${relayStart + RELAY_PORTS - 1}`,
    'realm=chorus.test',
    'use-auth-secret',
    `static-auth-secret=${SECRET}`,
    'fingerprint',
    'no-tls',
    'no-dtls',
    'no-cli',
    'no-multicast-peers',
    // the media server is on loopback here; in production loopback peers stay denied (docs/operations.md)
    'allow-loopback-peers',
    'no-software-attribute',
    `pidfile=${path.join(dir, 'turnserver.pid')}`,
    `userdb=${path.join(dir, 'turndb')}`,
    'log-file=stdout',
    'simple-log',
    'verbose',
    '',
  ].join('\n'));
  const proc = spawn(TURNSERVER, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  /** @type {{code: number|null, signal: string|null}|null} */
  let exited = null;
  const exit = new Promise((resolve) => proc.once('exit', (code, signal) => { exited = { code, signal }; resolve(exited); }));
  proc.once('error', (e) => { out += `spawn error: ${e.message}\n`; });
  const stop = async () => {
    if (exited) return;
    proc.kill('SIGTERM');
    const t = setTimeout(() => { if (!exited) proc.kill('SIGKILL'); }, 5000);
    await exit;
    clearTimeout(t);
  };
  const deadline = Date.now() + 10000;
  // coturn logs its listeners once they are bound.
  while (!/Total General servers|IPv4\. UDP listener opened on : 127\.0\.0\.1/.test(out)) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(`coturn did not start (${JSON.stringify(exited)}):\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { port, output: () => out, stop };
}

describe('TURN relay only, through a real coturn', { timeout: 90000 }, () => {
  /** @type {Coturn|null} */
  let coturn = null;
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let server = null;
  /** @type {import('./lib/server.js').ChorusServer|null} */
  let wrongServer = null;
  /** @type {import('./lib/browser.js').Participant[]} */
  let all = [];
  /** @type {import('./lib/browser.js').Participant} */ let alice;
  /** @type {import('./lib/browser.js').Participant} */ let bob;
  const tmp = makeTempDir('chorus-turn-');

  /** @param {() => Promise<void>} fn */
  const withDiagnostics = (fn) => runWithDiagnostics(() => all, () => server, async () => {
    try {
      await fn();
    } catch (e) {
      console.error(`--- coturn output (tail):\n${(coturn ? coturn.output() : '').split('\n').slice(-60).join('\n')}`);
      if (wrongServer) console.error(`--- wrong-secret server output (tail):\n${wrongServer.tail(40)}`);
      throw e;
    }
  });

  /**
   * A chorus config with coturn's URLs and `secret`.
   * @param {string} name
   * @param {string} secret
   */
  const config = (name, secret) => {
    const file = path.join(tmp.dir, name);
    const c = /** @type {Coturn} */ (coturn);
    fs.writeFileSync(file, [
      '[media]',
      'connect_timeout_ms = 4000',
      '[turn]',
      `urls = ["turn:127.0.0.1:${c.port}?transport=udp", "turn:127.0.0.1:${c.port}?transport=tcp"]`,
      `secret = "${secret}"`,
      'credential_ttl_s = 600',
      '',
    ].join('\n'));
    return file;
  };

  before(async () => {
    coturn = await startCoturn(tmp.dir);
    [server, wrongServer] = await Promise.all([
      startServer({ workers: 1, slots: 3, extraArgs: ['--config', config('chorus.toml', SECRET)] }),
      startServer({ workers: 1, slots: 3, extraArgs: ['--config', config('wrong.toml', WRONG_SECRET)] }),
    ]);
    [alice, bob] = await launchAliceAndBob({ tmpDir: tmp.dir });
    all = [alice, bob];
  });

  after(async () => {
    await Promise.all(all.map((p) => p.close()));
    if (server) await server.stop();
    if (wrongServer) await wrongServer.stop();
    if (coturn) await coturn.stop();
    tmp.cleanup();
  });

  it('joined carries TURN credentials; both pages connect through relay candidates only', () => withDiagnostics(async () => {
    const s = /** @type {import('./lib/server.js').ChorusServer} */ (server);
    const c = /** @type {Coturn} */ (coturn);
    await Promise.all(all.map((p) => p.page.goto(
      `${s.url}/?${new URLSearchParams({ room: ROOM, name: p.name, autojoin: '1', processing: '0', relay: '1' })}`,
      { waitUntil: 'load', timeout: 15000 },
    )));
    await Promise.all(all.map((p) => waitConnected(p, 20000)));
    for (const p of all) {
      const cfg = await p.page.evaluate(() => {
        const room = /** @type {any} */ (window).chorusDemo.room;
        const conf = room.pc.getConfiguration();
        return { policy: conf.iceTransportPolicy, servers: conf.iceServers, sid: room.localParticipant.sid };
      });
      assert.equal(cfg.policy, 'relay', `${p.name}: iceTransportPolicy`);
      assert.equal(cfg.servers.length, 1, JSON.stringify(cfg.servers));
      assert.deepEqual(cfg.servers[0].urls,
        [`turn:127.0.0.1:${c.port}?transport=udp`, `turn:127.0.0.1:${c.port}?transport=tcp`]);
      const [expiry, user] = cfg.servers[0].username.split(':');
      assert.equal(user, cfg.sid, 'username = expiry:sid');
      const ttl = Number(expiry) - Date.now() / 1000;
      assert.ok(ttl > 590 && ttl <= 601, `credential valid for credential_ttl_s: ${ttl}`);
      // The TURN REST credential, computed here independently (and accepted by coturn below).
      assert.equal(cfg.servers[0].credential,
        crypto.createHmac('sha1', SECRET).update(cfg.servers[0].username).digest('base64'));
      // coturn allocated a relay for exactly this credential.
      assert.match(c.output(), new RegExp(`user <${expiry}:${cfg.sid}>: incoming packet ALLOCATE processed, success`));
      const pair = await selectedPair(p);
      console.log(`${p.name}: selected pair ${JSON.stringify(pair)}`);
      assert.equal(pair.local.candidateType, 'relay', `${p.name}: the local candidate of the selected pair is a relay`);
      assert.equal(pair.remote.candidateType, 'host', `${p.name}: the server's host candidate`);
    }
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    const issued = Number((/^chorus_turn_credentials_issued_total (\d+)/m.exec(metrics) || [])[1]);
    assert.ok(issued >= 2, `chorus_turn_credentials_issued_total ${issued}`);
  }));

  /**
   * Wait until `listener` hears `freq` clearly and not its own tone `own`, still through the relay.
   * @param {import('./lib/browser.js').Participant} listener
   * @param {number} freq
   * @param {number} own
   */
  const hears = async (listener, freq, own) => {
    await hearsTone(listener, freq, own, { timeoutMs: 15000 });
    assert.equal((await selectedPair(listener)).local.candidateType, 'relay', 'still relayed');
  };

  it('Bob hears Alice (440 Hz) and Alice hears Bob (660 Hz), relayed', () => withDiagnostics(async () => {
    await hears(bob, 440, 660);
    await hears(alice, 660, 440);
  }));

  it('a server whose turn.secret is not coturn\'s: coturn refuses (401) and the page explains it', () => withDiagnostics(async () => {
    const w = /** @type {import('./lib/server.js').ChorusServer} */ (wrongServer);
    const c = /** @type {Coturn} */ (coturn);
    await alice.page.goto(`${w.url}/?${new URLSearchParams({
      room: 'refused', name: 'Alice', autojoin: '1', processing: '0', relay: '1',
    })}`, { waitUntil: 'load', timeout: 15000 });
    const failed = await pollUntil('the page to show the failure', async () => {
      const snap = await snapshot(alice);
      return { ok: snap.status === 'failed', ...snap };
    }, { timeoutMs: 20000, intervalMs: 200 });
    console.log(JSON.stringify({ lastError: failed.lastError, connDetail: failed.connDetail }));
    assert.equal(failed.view, 'call');
    assert.equal(failed.lastError.code, 'connection_failed');
    assert.match(failed.lastError.message,
      new RegExp(`the TURN server turn:127\\.0\\.0\\.1:${c.port}\\?transport=(udp|tcp) refused the relay allocation \\(401`));
    assert.match(failed.lastError.message, /static-auth-secret differs from the server's turn\.secret/);
    assert.ok(failed.connDetail && failed.connDetail.includes(failed.lastError.message), 'shown next to the pill');
    // coturn refused this participant's credential (every client first gets a 401 challenge without a user
    // name; this is the answer to the credential itself) and allocated nothing for it.
    const sid = failed.local.sid;
    assert.match(c.output(), new RegExp(`user <\\d+:${sid}>: incoming packet message processed, error 401`),
      'coturn refused the credential with 401');
    assert.doesNotMatch(c.output(), new RegExp(`user <\\d+:${sid}>: incoming packet ALLOCATE processed, success`));
  }));
});
