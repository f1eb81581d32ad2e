// Starts a `chorus` server for a test on free loopback ports and stops it afterwards.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The server binary: $CHORUS_BIN, else target/debug/chorus of this workspace. */
export const CHORUS_BIN = process.env.CHORUS_BIN
  ? path.resolve(process.env.CHORUS_BIN)
  : path.resolve(here, '../../../target/debug/chorus');

/** @returns {Promise<number>} a TCP port that was free on 127.0.0.1 a moment ago */
export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A UDP port `p` such that p .. p+count-1 were all free on 127.0.0.1 a moment ago. With `tcp`, the same
 * numbers were free for TCP too (the server listens for ICE-TCP on its UDP port numbers by default) and none
 * is in `avoid` (a TCP port picked but not held, such as the HTTP port).
 * @param {number} [count]
 * @param {{tcp?: boolean, avoid?: number[]}} [opts]
 * @returns {Promise<number>}
 */
export async function freeUdpPorts(count = 1, opts = {}) {
  const avoid = new Set(opts.avoid || []);
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = await bindUdp(0);
    const base = first.port;
    /** @type {{close: (cb: () => void) => void}[]} */
    const held = [first.sock];
    let ok = base + count - 1 <= 65535;
    for (let i = 0; i < count && ok; i++) {
      if (avoid.has(base + i)) { ok = false; break; }
      try {
        if (i > 0) held.push((await bindUdp(base + i)).sock);
        if (opts.tcp) held.push(await listenTcp(base + i));
      } catch { ok = false; }
    }
    await Promise.all(held.map((s) => new Promise((r) => s.close(() => r(undefined)))));
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free UDP${opts.tcp ? '+TCP' : ''} ports found`);
}

/**
 * @param {number} port
 * @returns {Promise<net.Server>}
 */
function listenTcp(port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
}

/**
 * @param {number} port
 * @returns {Promise<{sock: dgram.Socket, port: number}>}
 */
function bindUdp(port) {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    sock.once('error', reject);
    sock.bind(port, '127.0.0.1', () => resolve({ sock, port: sock.address().port }));
  });
}

/**
 * @typedef {object} ChorusServer
 * @property {string} url          http://127.0.0.1:PORT (http://198.51.100.1:PORT in a netns)
 * @property {number} httpPort
 * @property {number} mediaPort    first media UDP port
 * @property {import('node:child_process').ChildProcess} proc
 * @property {() => string} tail   the last lines of the server's stdout+stderr
 * @property {() => Promise<void>} stop
 */

/**
 * Start the server and wait for GET /healthz. With `netns` (lib/netns.js) it runs inside that network
 * namespace, HTTP and media bound to (and media advertised on) the namespace's 198.51.100.1, development
 * mode allowed on that address; `url` is then reachable only from inside the namespace.
 * `httpPort` fixes the HTTP port (default: a free one); `mediaBindIp` and `publicIp` replace the media
 * addresses (in a netns, both default to 198.51.100.1).
 * @param {{workers?: number, slots?: number, extraArgs?: string[], timeoutMs?: number, env?: Record<string,string>,
 *   netns?: import('./netns.js').Netns, httpPort?: number, mediaBindIp?: string, publicIp?: string}} [opts]
 * @returns {Promise<ChorusServer>}
 */
export async function startServer(opts = {}) {
  const workers = opts.workers ?? 1;
  const slots = opts.slots ?? 3;
  if (!fs.existsSync(CHORUS_BIN)) {
    throw new Error(`chorus binary not found at ${CHORUS_BIN}: build it with 'cargo build' or set CHORUS_BIN`);
  }
  const httpPort = opts.httpPort ?? await freeTcpPort();
  // ICE-TCP listens on the same numbers unless the arguments turn it off or move it.
  const mediaPort = await freeUdpPorts(workers, { tcp: true, avoid: [httpPort] });
  const ns = opts.netns;
  const host = ns ? ns.addrA : '127.0.0.1';
  const mediaBindIp = opts.mediaBindIp ?? (ns ? host : null);
  const publicIp = opts.publicIp ?? (ns ? host : null);
  const args = [
    '--http-listen', `${host}:${httpPort}`,
    ...(ns ? ['--unsafe-dev-mode-on-network'] : []),
    // Outside a namespace of the test's own: loopback only, no candidate on the machine's own interfaces
    // (development mode offers one for Firefox; firefox.test.js checks that inside its namespace).
    ...(ns ? [] : ['--media-dev-lan-candidate', 'false']),
    ...(mediaBindIp ? ['--media-bind-ip', mediaBindIp] : []),
    ...(publicIp ? ['--public-ip', publicIp] : []),
    '--media-port-start', String(mediaPort),
    '--workers', String(workers),
    '--room-slots', String(slots),
    ...(opts.extraArgs || []),
  ];
  /** @type {string[]} */
  const lines = [];
  const keep = (/** @type {Buffer} */ chunk) => {
    // eslint-disable-next-line no-control-regex
    for (const l of chunk.toString('utf8').replace(/\x1b\[[0-9;]*m/g, '').split('\n')) if (l) lines.push(l);
    if (lines.length > 400) lines.splice(0, lines.length - 400);
  };
  const [cmd, ...cmdArgs] = ns ? ns.command(CHORUS_BIN, args) : [CHORUS_BIN, ...args];
  const proc = spawn(cmd, cmdArgs, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', ...(opts.env || {}) },
  });
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  /** @type {{code: number|null, signal: string|null}|null} */
  let exited = null;
  const exitPromise = new Promise((resolve) => proc.once('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  proc.once('error', (e) => { lines.push(`spawn error: ${e.message}`); });

  const url = `http://${host}:${httpPort}`;
  const tail = (n = 60) => lines.slice(-n).join('\n');
  const stop = async () => {
    if (exited) return;
    proc.kill('SIGTERM');
    const t = setTimeout(() => { if (!exited) proc.kill('SIGKILL'); }, 5000);
    await exitPromise;
    clearTimeout(t);
  };

  const deadline = Date.now() + (opts.timeoutMs ?? 20000);
  for (;;) {
    if (exited) {
      throw new Error(`chorus exited during startup (${JSON.stringify(exited)}): ${CHORUS_BIN} ${args.join(' ')}\n${tail()}`);
    }
    try {
      if (ns) {
        if ((await ns.httpGet(`${url}/healthz`, 1000)).status === 200) break;
      } else {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.ok) break;
      }
    } catch { /* not up yet */ }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`chorus did not answer ${url}/healthz in time: ${args.join(' ')}\n${tail()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, httpPort, mediaPort, proc, tail, stop };
}

/**
 * Mint an access token with `chorus token create` (the embedded default configuration's development key,
 * which is also what a server started without --config verifies).
 * @param {{room: string, identity: string, name?: string, publish?: boolean, subscribe?: boolean, ttl?: string}} opts
 * @returns {Promise<string>}
 */
export function createToken(opts) {
  const args = ['token', 'create', '--room', opts.room, '--identity', opts.identity, '--ttl', opts.ttl || '10m'];
  if (opts.name) args.push('--name', opts.name);
  if (opts.publish === false) args.push('--no-publish');
  if (opts.subscribe === false) args.push('--no-subscribe');
  return mintToken(args);
}

/** @returns {Promise<string>} an admin token from `chorus token create --admin` (for the admin API) */
export function adminToken() {
  return mintToken(['token', 'create', '--admin', '--identity', 'browser-test', '--ttl', '10m']);
}

/**
 * Run `chorus token create ...` and return the token it prints.
 * @param {string[]} args
 * @returns {Promise<string>}
 */
function mintToken(args) {
  return new Promise((resolve, reject) => {
    const proc = spawn(CHORUS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; });
    proc.once('error', reject);
    proc.once('exit', (code) => {
      const token = out.trim().split(/\s+/).pop() || '';
      if (code === 0 && token.split('.').length === 3) resolve(token);
      else reject(new Error(`chorus ${args.join(' ')} exited ${code}: ${out}${err}`));
    });
  });
}

/**
 * The value of an unlabelled sample in a Prometheus text exposition (`/metrics`), or null when absent.
 * @param {string} text @param {string} name
 * @returns {number|null}
 */
export function metricValue(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : null;
}

/**
 * How two counters of the server's `/metrics` grew over the next `ms`, fetched through `ns` (the server in a
 * network namespace): `total` and `part` (a share of it, e.g. the packets with FEC), and `part / total`.
 * @param {{httpGet: (url: string) => Promise<{body: string}>}} ns @param {string} url
 * @param {string} total @param {string} part @param {number} ms
 * @returns {Promise<{total: number, part: number, share: number}>}
 */
export async function counterShare(ns, url, total, part, ms) {
  const read = async () => {
    const { body } = await ns.httpGet(`${url}/metrics`);
    return { total: metricValue(body, total) ?? 0, part: metricValue(body, part) ?? 0 };
  };
  const a = await read();
  await new Promise((r) => setTimeout(r, ms));
  const b = await read();
  const grown = { total: b.total - a.total, part: b.part - a.part };
  return { ...grown, share: grown.total > 0 ? grown.part / grown.total : 0 };
}
