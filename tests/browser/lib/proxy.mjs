// A TCP relay in front of the server, for one browser: `cut()` drops its connections and
// refuses new ones (the guest's network is gone, while the host's is fine), `restore()` lets
// them through again. It relays bytes untouched, so pages, cookies and sockets work as direct.

import net from 'node:net';
import { freePort } from './harness.mjs';

export async function startRelay(scope, targetPort) {
  const port = await freePort();
  const pairs = new Set();
  let cut = false;
  const server = net.createServer((client) => {
    if (cut) return client.destroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = [client, upstream];
    pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const socket of pair) socket.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const dropAll = () => {
    for (const pair of pairs) pair.forEach((socket) => socket.destroy());
    pairs.clear();
  };
  scope.defer(() => {
    dropAll();
    return new Promise((resolve) => server.close(() => resolve()));
  });
  return {
    port,
    /** The same URL, through the relay. */
    via(url) {
      const relayed = new URL(url);
      relayed.port = String(port);
      return relayed.href;
    },
    cut() {
      cut = true;
      dropAll();
    },
    restore() {
      cut = false;
    },
  };
}
