// A TCP relay on 127.0.0.1 that a test can cut abruptly: every connection through it is reset at once (RST
// both ways, no WebSocket close frame), while new connections are still relayed. For breaking only a page's
// signaling socket (its page and WebSocket go through the relay; its media goes straight to the server).
import net from 'node:net';

/**
 * @param {number} targetPort  the port on 127.0.0.1 to relay to
 * @returns {Promise<{port: number, cut: () => number, close: () => Promise<void>}>}
 */
export async function startCuttableRelay(targetPort) {
  /** @type {Set<net.Socket>} */
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('the relay has no TCP address');
  return {
    port: address.port,
    // Reset every relayed connection; returns how many sockets were cut.
    cut: () => {
      const n = sockets.size;
      for (const s of [...sockets]) s.resetAndDestroy();
      return n;
    },
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve(undefined));
    }),
  };
}
