// A NAT that can rebind, for a browser inside a network namespace of the test's own (lib/netns.js): an nft
// rule in the namespace sends every UDP datagram for the server's media port to a relay (this file, run
// inside the namespace), which forwards each client's datagrams from a socket of its own and the replies
// back (conntrack makes them come from the server's address, as before). `rebind` gives every client a new
// source port, as a NAT that drops its mapping does: the server's datagrams to the old port go nowhere.
// The relay's own sockets use ports 61000-61999, above Linux's ephemeral range (32768-60999) that browsers'
// sockets come from, so the rule tells them apart.
//
// Run as a script inside the namespace: node udp-rebind.js LISTEN_PORT SERVER_HOST SERVER_PORT. Prints
// "ready"; on a line "rebind" on stdin it rebinds and prints "rebound <client> <old port> <new port>" per
// client, then "rebind done".
import dgram from 'node:dgram';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const FIRST_PORT = 61000;
const LAST_PORT = 61999;
/** The relay's listening port (above the ephemeral range too). */
export const RELAY_PORT = 62000;

/**
 * Put the rebinding NAT in front of the server's media port in `ns`: the nft rule and the relay.
 * @param {import('./netns.js').Netns} ns
 * @param {number} mediaPort
 * @returns {Promise<{rebind: () => Promise<string[]>, stop: () => void}>}
 */
export async function startRebindingNat(ns, mediaPort) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const proc = ns.spawn(process.execPath, [path.join(here, 'udp-rebind.js'), String(RELAY_PORT), ns.addrA,
    String(mediaPort)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: /** @type {NodeJS.ReadableStream} */ (proc.stdout) });
  /** @type {((line: string) => void)[]} */
  const waiting = [];
  lines.on('line', (l) => { const w = waiting.shift(); if (w) w(l); });
  const nextLine = () => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the rebinding relay did not answer')), 5000);
    waiting.push((l) => { clearTimeout(t); resolve(l); });
  });
  const ready = await nextLine();
  if (ready !== 'ready') throw new Error(`rebinding relay: ${ready}`);
  const rules = `table ip chorus_rebind {
  chain out {
    type nat hook output priority -100; policy accept;
    ip daddr ${ns.addrA} udp dport ${mediaPort} udp sport != ${FIRST_PORT}-${LAST_PORT} dnat to ${ns.addrA}:${RELAY_PORT}
  }
}
`;
  const fs = await import('node:fs');
  const os = await import('node:os');
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-nft-')), 'rebind.nft');
  fs.writeFileSync(file, rules);
  ns.run('nft', ['-f', file]);
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  return {
    rebind: async () => {
      /** @type {string[]} */
      const out = [];
      const done = new Promise((resolve) => {
        const collect = (/** @type {string} */ l) => {
          if (l === 'rebind done') resolve(undefined);
          else { out.push(l); waiting.unshift(collect); }
        };
        waiting.push(collect);
      });
      /** @type {NodeJS.WritableStream} */ (proc.stdin).write('rebind\n');
      await done;
      return out;
    },
    stop: () => {
      try { ns.run('nft', ['delete', 'table', 'ip', 'chorus_rebind']); } catch { /* the namespace is gone */ }
      proc.kill('SIGTERM');
    },
  };
}

/** The relay itself. */
function relay() {
  const [listenPort, host, port] = process.argv.slice(2);
  const listen = dgram.createSocket('udp4');
  let nextPort = FIRST_PORT;
  /** @type {Map<string, {sock: dgram.Socket, port: number, client: {address: string, port: number}}>} */
  const clients = new Map();
  /** A socket for `client` on the next free relay port. */
  const open = async (/** @type {{address: string, port: number}} */ client) => {
    for (;;) {
      const p = nextPort;
      nextPort = nextPort === LAST_PORT ? FIRST_PORT : nextPort + 1;
      const sock = dgram.createSocket('udp4');
      const ok = await new Promise((resolve) => {
        sock.once('error', () => resolve(false));
        sock.bind(p, () => resolve(true));
      });
      if (!ok) { sock.close(); continue; }
      sock.on('message', (msg) => listen.send(msg, client.port, client.address));
      sock.on('error', () => {});
      return { sock, port: p, client };
    }
  };
  /** @type {Map<string, Promise<unknown>>} */
  const opening = new Map();
  listen.on('message', async (msg, rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    let c = clients.get(key);
    if (!c) {
      if (!opening.has(key)) {
        opening.set(key, open({ address: rinfo.address, port: rinfo.port }).then((x) => clients.set(key, x)));
      }
      await opening.get(key);
      c = clients.get(key);
    }
    c?.sock.send(msg, Number(port), host);
  });
  listen.bind(Number(listenPort), () => process.stdout.write('ready\n'));
  readline.createInterface({ input: process.stdin }).on('line', async (l) => {
    if (l.trim() !== 'rebind') return;
    for (const [key, c] of clients) {
      const fresh = await open(c.client);
      c.sock.close();
      clients.set(key, fresh);
      process.stdout.write(`rebound ${key} ${c.port} ${fresh.port}\n`);
    }
    process.stdout.write('rebind done\n');
  });
  process.on('SIGTERM', () => process.exit(0));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) relay();
