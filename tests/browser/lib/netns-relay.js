// Run inside a network namespace by lib/netns.js: relay each connection on a Unix socket to host:port
// (reachable only from inside). Usage: node netns-relay.js SOCKET HOST PORT. Prints "ready" once listening.
import fs from 'node:fs';
import net from 'node:net';

const [sock, host, port] = process.argv.slice(2);
if (!sock || !host || !port) {
  console.error('usage: node netns-relay.js SOCKET HOST PORT');
  process.exit(2);
}
fs.rmSync(sock, { force: true });
const server = net.createServer((client) => {
  const upstream = net.connect(Number(port), host);
  client.pipe(upstream);
  upstream.pipe(client);
  const end = () => { client.destroy(); upstream.destroy(); };
  client.on('error', end);
  upstream.on('error', end);
  client.on('close', end);
  upstream.on('close', end);
});
server.listen(sock, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => { server.close(); process.exit(0); });
