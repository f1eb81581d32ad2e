// Run inside a network namespace (lib/netns.js has no netem: this kernel lacks it): a UDP proxy that
// delays what the server sends by a uniform random time, each datagram on its own (so they also arrive
// out of order), as a jittery downlink does. Clients send to LISTEN_HOST:LISTEN_PORT (the server
// advertises that address as its candidate); each client gets a socket of its own towards the server
// (the client's address as the server sees it, like a NAT's), and what the server sends to that socket
// goes back to the client after the delay. The uplink is not delayed, except in a stall: with STALL_MS,
// each SIGUSR1 holds what the clients send for STALL_MS, then passes it on at once, in order (a Wi-Fi
// hand-over or a radio reconnection on their uplinks).
//
// Usage: node netns-jitter.js LISTEN_HOST LISTEN_PORT SERVER_HOST SERVER_PORT MIN_MS MAX_MS [STALL_MS]
// Prints "ready" once listening; on SIGTERM prints one JSON line of counters and exits.
import dgram from 'node:dgram';

const [listenHost, listenPort, serverHost, serverPort, minMs, maxMs, stallMs] = process.argv.slice(2);
if (!maxMs) {
  console.error('usage: node netns-jitter.js LISTEN_HOST LISTEN_PORT SERVER_HOST SERVER_PORT MIN_MS MAX_MS');
  process.exit(2);
}
const [min, max] = [Number(minMs), Number(maxMs)];
const counters = { up: 0, down: 0, clients: 0, stalls: 0, held: 0 };
/** Uplink datagrams held by the current stall, in arrival order; null while not stalled. */
/** @type {Array<() => void>|null} */
let held = null;
if (stallMs) {
  process.on('SIGUSR1', () => {
    if (held) return;
    held = [];
    counters.stalls += 1;
    setTimeout(() => {
      const release = /** @type {Array<() => void>} */ (held);
      held = null;
      for (const send of release) send();
    }, Number(stallMs));
  });
}

const front = dgram.createSocket('udp4');
/** @type {Map<string, dgram.Socket>} */
const toServer = new Map();

front.on('message', (msg, rinfo) => {
  const key = `${rinfo.address}:${rinfo.port}`;
  let sock = toServer.get(key);
  if (!sock) {
    const s = dgram.createSocket('udp4');
    s.on('message', (reply) => {
      const delay = min + Math.random() * (max - min);
      setTimeout(() => {
        counters.down += 1;
        front.send(reply, rinfo.port, rinfo.address);
      }, delay);
    });
    s.bind(0, serverHost);
    toServer.set(key, s);
    counters.clients += 1;
    sock = s;
  }
  const out = sock;
  const send = () => {
    counters.up += 1;
    out.send(msg, Number(serverPort), serverHost);
  };
  if (held) {
    counters.held += 1;
    held.push(send);
  } else {
    send();
  }
});
front.bind(Number(listenPort), listenHost, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => {
  process.stdout.write(`${JSON.stringify(counters)}\n`);
  process.exit(0);
});
