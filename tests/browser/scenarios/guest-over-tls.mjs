// Scenario 5 over TLS: a self-signed certificate made in the test, the server started with
// --tls-cert/--tls-key, both browsers trusting that certificate's key only. The whole guest
// scenario (invite, join, crash, reopen, Stop for everyone, one clean track each) passes through
// https:// and wss://: every socket the pages opened was wss://, and the TLS port refuses
// plain HTTP and plain ws:// alike.

import net from 'node:net';
import { assert, withTimeout } from '../lib/harness.mjs';
import { guestScenario } from './guest-crash-and-stop.mjs';

export const name = 'guest-scenario-over-https-and-wss';
export const timeoutMs = 120_000;

export async function run(scope) {
  const { detail, server, browsers } = await guestScenario(scope, { tls: true });
  assert(server.url.startsWith('https://'), `the server serves HTTPS (${server.url})`);
  const sockets = browsers.flatMap((browser) => browser.sockets);
  // The host's socket, Sam's first and Sam's second browser each opened at least one.
  assert(browsers.every((browser) => browser.sockets.length > 0), `every browser opened a socket (${sockets.join(', ')})`);
  const plain = sockets.filter((url) => !url.startsWith('wss://'));
  assert(plain.length === 0, `every socket was wss:// (not: ${plain.join(', ')})`);

  // The same port spoken to in plain: an HTTP request and a ws:// upgrade get no answer of the app.
  const insecure = `http://127.0.0.1:${server.port}`;
  const http = await fetch(`${insecure}/healthz`, { signal: AbortSignal.timeout(5_000) }).then(
    (response) => `answered ${response.status}`,
    () => 'refused',
  );
  assert(http === 'refused', `plain HTTP to the TLS port is refused (${http})`);
  const ws = await withTimeout(plainUpgrade(server.port), 5_000, 'a plain ws:// upgrade to the TLS port');
  assert(!/^HTTP\/1\.1 101/.test(ws), `a plain ws:// upgrade to the TLS port is not accepted (${JSON.stringify(ws.slice(0, 40))})`);
  return `${detail}; ${sockets.length} sockets, all wss://`;
}

/** What the port answers to a plain-text WebSocket upgrade, until it closes. */
function plainUpgrade(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.on('connect', () => {
      socket.write(
        'GET /api/session/00000000-0000-0000-0000-000000000000/ws?track=mic HTTP/1.1\r\n' +
          `Host: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    socket.on('data', (data) => {
      answer += data.toString('latin1');
    });
    socket.on('close', () => resolve(answer));
    socket.on('error', () => {});
    socket.setTimeout(4_000, () => socket.destroy());
  });
}
