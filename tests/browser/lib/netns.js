// A network namespace of a test's own, for browser tests that need a non-loopback address (Firefox never
// pairs with a loopback candidate) and, later, tests that block UDP, add loss or run a TURN server.
//
// The namespace holds a veth pair with BOTH ends inside it: `a` = 198.51.100.1/24 and `b` = 198.51.100.2/24
// (TEST-NET-2, RFC 5737), `lo` up, a default route via `b` (without a default route Firefox gathers no
// candidate at all) and net.ipv4.ip_forward=0, so nothing it sends can leave. Needs root (tests run as root
// here) and iproute2.
//
// Processes run inside with `ip netns exec` (see `command`/`spawn`). The test process itself stays outside:
// it reaches TCP services inside (a server's HTTP port, Firefox's Marionette port) through `forward`, a small
// relay running inside the namespace that listens on a Unix socket (a file, visible from both sides).
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const IP = process.env.IP_BIN || 'ip';

/** The namespaces created by this process and not yet removed, removed on exit whatever happens. */
const live = new Set();
let exitHookInstalled = false;

function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const name of live) spawnSync(IP, ['netns', 'del', name], { stdio: 'ignore' });
  });
  for (const sig of /** @type {NodeJS.Signals[]} */ (['SIGINT', 'SIGTERM'])) {
    process.once(sig, () => {
      for (const name of live) spawnSync(IP, ['netns', 'del', name], { stdio: 'ignore' });
      process.kill(process.pid, sig);
    });
  }
}

/**
 * Run a command to completion; throw with its output when it fails.
 * @param {string} cmd
 * @param {string[]} args
 * @returns {string} stdout
 */
function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/**
 * @typedef {object} Netns
 * @property {string} name                 the namespace's name (`ip netns list`)
 * @property {string} addrA                198.51.100.1: where servers bind
 * @property {string} addrB                198.51.100.2: the other end, the default route's gateway
 * @property {(cmd: string, args?: string[]) => string[]} command
 *   the argv that runs `cmd args` inside the namespace (for spawn, or for a wrapper script)
 * @property {(cmd: string, args?: string[], opts?: import('node:child_process').SpawnOptions) =>
 *   import('node:child_process').ChildProcess} spawn   spawn `cmd args` inside the namespace
 * @property {(cmd: string, args?: string[]) => string} run   run `cmd args` inside the namespace to completion
 * @property {(prog: string, dir: string) => string} wrapper
 *   write an executable script `dir/<basename>-in-netns` that runs `prog "$@"` inside the namespace (for
 *   launchers that take an executable path, e.g. playwright's `executablePath`); returns its path
 * @property {(host: string, port: number) => Promise<string>} forward
 *   a Unix socket path (in a temp dir of the namespace) whose connections are relayed to host:port inside
 * @property {(url: string, timeoutMs?: number) => Promise<{status: number, body: string}>} httpGet
 *   GET an http:// URL inside the namespace (through `forward`)
 * @property {() => Promise<void>} destroy  stop the relays and delete the namespace (idempotent)
 */

/**
 * Wait until the links just brought up in namespace `name` hold no tentative address. Each veth gets an IPv6
 * link-local address that stays tentative for about a second (duplicate address detection); when it turns
 * valid, a browser started meanwhile sees the network change and fails what it is loading
 * (`net::ERR_NETWORK_CHANGED`: once, the demo page's script, so the page never joined).
 * @param {string} name
 */
async function settled(name) {
  const deadline = Date.now() + 10000;
  while (run(IP, ['-n', name, '-6', 'addr', 'show', 'tentative']).trim() !== '') {
    if (Date.now() > deadline) throw new Error(`addresses in ${name} still tentative after 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Create a namespace as described at the top of this file.
 * @param {{prefix?: string}} [opts]
 * @returns {Promise<Netns>}
 */
export async function createNetns(opts = {}) {
  installExitHook();
  const name = `${opts.prefix || 'chorus'}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  const addrA = '198.51.100.1';
  const addrB = '198.51.100.2';
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`));
  run(IP, ['netns', 'add', name]);
  live.add(name);
  /** @type {import('node:child_process').ChildProcess[]} */
  const relays = [];
  /** @type {Map<string, string>} */
  const forwards = new Map();
  let destroyed = false;

  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    await Promise.all(relays.map((p) => stopProcess(p)));
    spawnSync(IP, ['netns', 'del', name], { stdio: 'ignore' });
    live.delete(name);
    fs.rmSync(tmp, { recursive: true, force: true });
  };

  try {
    run(IP, ['-n', name, 'link', 'add', 'veth-a', 'type', 'veth', 'peer', 'name', 'veth-b']);
    run(IP, ['-n', name, 'addr', 'add', `${addrA}/24`, 'dev', 'veth-a']);
    run(IP, ['-n', name, 'addr', 'add', `${addrB}/24`, 'dev', 'veth-b']);
    for (const dev of ['lo', 'veth-a', 'veth-b']) run(IP, ['-n', name, 'link', 'set', dev, 'up']);
    run(IP, ['-n', name, 'route', 'add', 'default', 'via', addrB, 'dev', 'veth-a']);
    run(IP, ['netns', 'exec', name, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
    await settled(name);
  } catch (e) {
    await destroy();
    throw e;
  }

  /** @type {Netns['command']} */
  const command = (cmd, args = []) => [IP, 'netns', 'exec', name, cmd, ...args];

  /** @type {Netns['forward']} */
  const forward = async (host, port) => {
    const key = `${host}:${port}`;
    const known = forwards.get(key);
    if (known) return known;
    const sock = path.join(tmp, `fwd-${host}-${port}.sock`);
    const [cmd, ...args] = command(process.execPath, [path.join(here, 'netns-relay.js'), sock, host, String(port)]);
    const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    relays.push(proc);
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`relay to ${key} in ${name} did not start`)), 10000);
      proc.once('exit', (code) => { clearTimeout(t); reject(new Error(`relay to ${key} exited ${code}`)); });
      /** @type {NodeJS.ReadableStream} */ (proc.stdout).once('data', () => { clearTimeout(t); resolve(undefined); });
    });
    forwards.set(key, sock);
    return sock;
  };

  return {
    name,
    addrA,
    addrB,
    command,
    spawn: (cmd, args = [], spawnOpts = {}) => {
      const [c, ...a] = command(cmd, args);
      return spawn(c, a, spawnOpts);
    },
    run: (cmd, args = []) => run(IP, ['netns', 'exec', name, cmd, ...args]),
    wrapper: (prog, dir) => {
      const file = path.join(dir, `${path.basename(prog)}-in-netns`);
      fs.writeFileSync(file, `#!/bin/sh\nexec ${command(prog).map(shellQuote).join(' ')} "$@"\n`, { mode: 0o755 });
      return file;
    },
    forward,
    httpGet: async (url, timeoutMs = 2000) => {
      const u = new URL(url);
      const socketPath = await forward(u.hostname, Number(u.port || 80));
      return new Promise((resolve, reject) => {
        const req = http.get({ socketPath, path: `${u.pathname}${u.search}`, headers: { host: u.host },
          timeout: timeoutMs }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d) => { body += d; });
          res.on('end', () => resolve({ status: res.statusCode || 0, body }));
        });
        req.on('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)));
        req.on('error', reject);
      });
    },
    destroy,
  };
}

/**
 * SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited.
 * @param {import('node:child_process').ChildProcess} proc
 * @param {number} [graceMs]
 * @returns {Promise<void>}
 */
export async function stopProcess(proc, graceMs = 3000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', () => resolve(undefined)));
  proc.kill('SIGTERM');
  const t = setTimeout(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); }, graceMs);
  await exited;
  clearTimeout(t);
}

/** @param {string} s */
function shellQuote(s) {
  return /^[A-Za-z0-9_./:=@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * nft commands that drop `percent` % (at random) of the namespace's outgoing datagrams that `match` selects
 * (nft match tokens, e.g. `['udp', 'sport', '5000']`), counted, in table `inet <table>` (made here).
 * @param {string} table @param {string[]} match @param {number} percent
 * @returns {string[][]}
 */
export function nftRandomDrop(table, match, percent) {
  return [
    ['add', 'table', 'inet', table],
    ['add', 'chain', 'inet', table, 'output', '{ type filter hook output priority 0; policy accept; }'],
    ['add', 'rule', 'inet', table, 'output', ...match, 'numgen', 'random', 'mod', '100', '<', String(percent),
      'counter', 'drop'],
  ];
}

/**
 * Starts lib/netns-jitter.js in `ns` in front of a server's media port and waits for it to listen: clients
 * send to `listenHost`:`port` (what the server advertises), the proxy relays to `serverHost`:`port`, delays
 * what the server sends by `minMs`–`maxMs` each, and with `stallMs` holds the clients' uplinks that long on
 * each SIGUSR1. Stop it with `stopProcess`.
 * @param {Netns} ns
 * @param {{listenHost: string, serverHost: string, port: number, minMs: number, maxMs: number, stallMs?: number}} o
 * @returns {Promise<import('node:child_process').ChildProcess>}
 */
export async function startJitterProxy(ns, o) {
  const script = path.join(here, 'netns-jitter.js');
  const args = [script, o.listenHost, String(o.port), o.serverHost, String(o.port), String(o.minMs), String(o.maxMs)];
  if (o.stallMs !== undefined) args.push(String(o.stallMs));
  const proxy = ns.spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the jitter proxy did not start')), 10000);
    proxy.once('exit', (code) => { clearTimeout(t); reject(new Error(`the jitter proxy exited ${code}`)); });
    /** @type {NodeJS.ReadableStream} */ (proxy.stdout).once('data', () => { clearTimeout(t); resolve(undefined); });
  });
  return proxy;
}
