// Run inside a network namespace (lib/netns.js has no netem: this kernel lacks it): a UDP proxy that
// delays what the server sends by a uniform random time, each datagram on its own (so they also arrive
// out of order), as a jittery downlink does. Clients send to LISTEN_HOST:LISTEN_PORT (the server
// advertises that address as its candidate); each client gets a socket of its own towards the server
// (the client's address as the server sees it, like a NAT's), and what the server sends to that socket
// goes back to the client after the delay. The uplink is not delayed.
//
// Usage: node netns-jitter.js LISTEN_HOST LISTEN_PORT SERVER_HOST SERVER_PORT MIN_MS MAX_MS
// Prints "ready" once listening; on SIGTERM prints one JSON line of counters and exits.
import dgram from 'node:dgram';

const [listenHost, listenPort, serverHost, serverPort, minMs, maxMs] = process.argv.slice(2);
if (!maxMs) {
  console.error('usage: node netns-jitter.js LISTEN_HOST LISTEN_PORT SERVER_HOST SERVER_PORT MIN_MS MAX_MS');
  process.exit(2);
}
const [min, max] = [Number(minMs), Number(maxMs)];
const counters = { up: 0, down: 0, clients: 0 };

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
  counters.up += 1;
  sock.send(msg, Number(serverPort), serverHost);
});
front.bind(Number(listenPort), listenHost, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => {
  process.stdout.write(`${JSON.stringify(counters)}\n`);
  process.exit(0);
});
