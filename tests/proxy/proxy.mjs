// safetake behind the real nginx, as dist/nginx.conf deploys it, on loopback: a WebSocket client
// records through the proxy (acks, the WAV byte for byte), the Host and Origin rules hold through
// it (a foreign name and a foreign origin refused; the deployment's name and its other origin
// allowed, as --allowed-host and --allowed-origin set them), a Range download answers 206 with
// the right bytes, and the recorder page records in Chromium through the proxy under the
// deployment's name. Prints `N passed, M failed` last.

import http from 'node:http';
import { createRequire } from 'node:module';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  ROOT, Scope, assert, freePort, getSession, launchBrowser, sleep, startProcess, startServer, waitFor, withTimeout,
} from '../browser/lib/harness.mjs';
import { assertHoldsTones, parseWav, toneReport } from '../browser/lib/audio.mjs';
import { pageOffset, startRecording, stopRecording, writeTestTones } from '../browser/lib/pages.mjs';

// The browser suite's packages (tests/browser/node_modules) serve this test too.
const WebSocket = createRequire(path.join(ROOT, 'tests/browser/package.json'))('ws');

const NGINX = process.env.NGINX ?? '/usr/sbin/nginx';
const CADDY = process.env.CADDY ?? '/usr/bin/caddy';
const NAME = 'rec.example.test'; // the deployment's public name
const OTHER_ORIGIN = 'https://studio.example.test'; // a second site the deployment allows
const FOREIGN_NAME = 'rebound.example.net';
const FOREIGN_ORIGIN = 'http://evil.example.net';

/** dist/nginx.conf with its `# test:` lines swapped for loopback, inside a minimal main config. */
async function nginxConfig(dir, logs, listenPort, upstreamPort) {
  const site = (await readFile(path.join(ROOT, 'dist/nginx.conf'), 'utf8'))
    .split('\n')
    .flatMap((line) => {
      const mark = line.match(/#\s*test:\s*(\w+)\s*$/)?.[1];
      if (!mark) return [line];
      const indent = line.match(/^\s*/)[0];
      switch (mark) {
        case 'listen':
          return [`${indent}listen 127.0.0.1:${listenPort};`];
        case 'name':
          return [`${indent}server_name ${NAME};`];
        case 'upstream':
          return [`${indent}proxy_pass http://127.0.0.1:${upstreamPort};`];
        case 'tls':
          return [];
        default:
          throw new Error(`dist/nginx.conf: unknown test mark ${mark}`);
      }
    })
    .join('\n');
  const directives = site.split('\n').filter((line) => !line.trim().startsWith('#'));
  assert(!directives.some((line) => /:8080|\b443\b|example\.org/.test(line)), 'every deployment-specific line of dist/nginx.conf is marked');
  await writeFile(path.join(dir, 'safetake.conf'), site);
  const main = [
    'daemon off;',
    'worker_processes 1;',
    // As root (a CI container), workers would run as nobody and could not reach the temp dir.
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
    `pid ${dir}/nginx.pid;`,
    `error_log ${logs}/nginx-error.log info;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${logs}/nginx-access.log;`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${dir}/${kind}-temp;`),
    `  include ${dir}/safetake.conf;`,
    '}',
    '',
  ].join('\n');
  await writeFile(path.join(dir, 'nginx.conf'), main);
  return path.join(dir, 'nginx.conf');
}

async function startNginx(scope, dir, upstreamPort) {
  const port = await freePort();
  const config = await nginxConfig(dir, scope.artifacts, port, upstreamPort);
  const nginx = startProcess(scope, NGINX, ['-p', dir, '-c', config, '-e', scope.log('nginx-error.log')], scope.log('nginx.log'));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (!nginx.alive()) throw new Error(`nginx exited; see ${scope.log('nginx-error.log')}`);
      return (await fetch(`${url}/healthz`)).ok;
    },
    { timeout: 10_000, what: 'nginx to proxy /healthz' },
  );
  return { ...nginx, url, port };
}

/** dist/Caddyfile with its `# test:` lines swapped: any name on a loopback port, plain HTTP. */
async function caddyConfig(dir, listenPort, upstreamPort) {
  const site = (await readFile(path.join(ROOT, 'dist/Caddyfile'), 'utf8'))
    .split('\n')
    .map((line) => {
      const mark = line.match(/#\s*test:\s*(\w+)\s*$/)?.[1];
      if (!mark) return line;
      const indent = line.match(/^\s*/)[0];
      if (mark === 'site') return `${indent}http://127.0.0.1:${listenPort}, http://:${listenPort} {`;
      if (mark === 'upstream') return `${indent}reverse_proxy 127.0.0.1:${upstreamPort} {`;
      throw new Error(`dist/Caddyfile: unknown test mark ${mark}`);
    })
    .join('\n');
  const directives = site.split('\n').filter((line) => !line.trim().startsWith('#'));
  assert(!directives.some((line) => /:8080|example\.org/.test(line)), 'every deployment-specific line of dist/Caddyfile is marked');
  // No admin endpoint (it would bind :2019), no certificates, nothing kept outside the temp dir.
  const file = path.join(dir, 'Caddyfile');
  await writeFile(file, `{\n\tadmin off\n\tauto_https off\n}\n\n${site}`);
  return file;
}

async function startCaddy(scope, dir, upstreamPort) {
  const port = await freePort();
  const config = await caddyConfig(dir, port, upstreamPort);
  const env = { ...process.env, HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'config'), XDG_DATA_HOME: path.join(dir, 'data') };
  const caddy = startProcess(scope, CADDY, ['run', '--config', config, '--adapter', 'caddyfile'], scope.log('caddy.log'), { env });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (!caddy.alive()) throw new Error(`caddy exited; see ${scope.log('caddy.log')}`);
      return (await fetch(`${url}/healthz`)).ok;
    },
    { timeout: 10_000, what: 'caddy to proxy /healthz' },
  );
  return { ...caddy, url, port };
}

/** A request with the headers a test chooses, `Host` included (fetch would not send ours). */
function request(port, { method = 'GET', path: target, headers = {}, body }) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method, path: target, headers }, (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    }),
    10_000,
    `${method} ${target}`,
  );
}

const json = (response) => JSON.parse(response.body.toString('utf8'));

/** A socket through the proxy; resolves once open, or with the refusal's status and body. */
function openSocket(port, target, headers) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const socket = new WebSocket(`ws://127.0.0.1:${port}${target}`, { headers, handshakeTimeout: 10_000 });
      const messages = [];
      const waiters = [];
      socket.on('message', (data, isBinary) => {
        if (isBinary) return;
        messages.push(JSON.parse(data.toString('utf8')));
        for (const waiter of waiters.splice(0)) waiter();
      });
      socket.once('open', () =>
        resolve({
          socket,
          messages,
          /** The first message (from `from` on) that `match` accepts. */
          async next(match, what, from = 0, timeout = 10_000) {
            return withTimeout(
              new Promise((done) => {
                const look = () => {
                  const found = messages.slice(from).find(match);
                  if (found) done(found);
                  else waiters.push(look);
                };
                look();
              }),
              timeout,
              what,
            );
          },
          closed: new Promise((done) => socket.once('close', (code) => done(code))),
        }),
      );
      socket.once('unexpected-response', (_req, res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => resolve({ refused: res.statusCode, body: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') }));
      });
      socket.once('error', reject);
    }),
    15_000,
    `a socket to ${target}`,
  );
}

/** Three seconds of 48 kHz mono s16le that no two frames share: a ramp of pseudo-random noise. */
function testAudio(seconds = 3) {
  const audio = Buffer.alloc(48_000 * 2 * seconds);
  let state = 12345;
  for (let i = 0; i < audio.length; i += 2) {
    state = (state * 1103515245 + 12345) >>> 0;
    audio.writeInt16LE((state >>> 16) - 32768, i);
  }
  return audio;
}

/** A refusal as the contract words it: 403 and the error code, through the proxy untouched. */
function assertRefused(status, body, code, what) {
  assert(status === 403 && body?.error === code, `${what} is refused with 403 ${code} (${status} ${JSON.stringify(body)})`);
}

const deployment = (port) => ({ host: `${NAME}:${port}`, origin: `http://${NAME}:${port}` });

async function hostAndOriginRules(scope, { proxy }) {
  const { host, origin } = deployment(proxy.port);
  const list = (headers) => request(proxy.port, { path: '/api/sessions', headers });
  const create = (headers) =>
    request(proxy.port, { method: 'POST', path: '/api/sessions', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });

  const foreignHost = await list({ host: `${FOREIGN_NAME}:${proxy.port}` });
  assertRefused(foreignHost.status, json(foreignHost), 'forbidden_host', 'a foreign Host');
  const page = await request(proxy.port, { path: '/record', headers: { host: FOREIGN_NAME } });
  assert(page.status === 403, `a foreign Host gets no page either (${page.status})`);
  const ours = await list({ host });
  assert(ours.status === 200, `the deployment's name (--allowed-host) is served (${ours.status} ${ours.body})`);

  const foreign = await create({ host, origin: FOREIGN_ORIGIN });
  assertRefused(foreign.status, json(foreign), 'forbidden_origin', 'a change from a foreign Origin');
  const sameSite = await create({ host, origin });
  assert(sameSite.status === 201, `the deployment's own origin creates a session (${sameSite.status} ${sameSite.body})`);
  const other = await create({ host, origin: OTHER_ORIGIN });
  assert(other.status === 201, `an --allowed-origin creates a session (${other.status} ${other.body})`);
  const id = json(sameSite).id;

  const target = `/api/session/${id}/ws?track=mic`;
  const refused = await openSocket(proxy.port, target, { host, origin: FOREIGN_ORIGIN });
  assertRefused(refused.refused, refused.body, 'forbidden_origin', 'a socket from a foreign Origin');
  const rebound = await openSocket(proxy.port, target, { host: FOREIGN_NAME, origin: `http://${FOREIGN_NAME}` });
  assertRefused(rebound.refused, rebound.body, 'forbidden_host', 'a socket on a foreign Host');
  const allowed = await openSocket(proxy.port, target, { host, origin: OTHER_ORIGIN });
  assert(allowed.socket, `a socket from an --allowed-origin opens (${JSON.stringify(allowed.refused ? allowed : 'open')})`);
  await allowed.next((m) => m.type === 'ready', 'ready');
  allowed.socket.close(1000);
  await withTimeout(allowed.closed, 5_000, 'the socket to close');
  return 'forbidden_host, forbidden_origin (REST and socket), allowed name and origins';
}

async function recordThroughProxy(scope, { proxy, server }) {
  const { host, origin } = deployment(proxy.port);
  const created = await request(proxy.port, {
    method: 'POST', path: '/api/sessions', headers: { host, origin, 'content-type': 'application/json' }, body: '{"title":"through nginx"}',
  });
  assert(created.status === 201, `a session is created through the proxy (${created.status})`);
  const id = json(created).id;
  const client = await openSocket(proxy.port, `/api/session/${id}/ws?track=mic&sampleRate=48000&channels=1&format=s16le`, { host, origin });
  assert(client.socket, `the socket opens through the proxy (${JSON.stringify(client)})`);
  const ready = await client.next((m) => m.type === 'ready', 'ready');
  assert(ready.offset === 0 && ready.sampleRate === 48_000, `ready for a new track (${JSON.stringify(ready)})`);

  const audio = testAudio();
  const frameBytes = 9_600; // 100 ms
  for (let at = 0; at < audio.length; at += frameBytes) {
    const header = Buffer.alloc(8);
    header.writeBigUInt64LE(BigInt(at));
    client.socket.send(Buffer.concat([header, audio.subarray(at, at + frameBytes)]));
    await sleep(10);
  }
  // Acks come by themselves (every --sync-interval); a flush asks for one at once.
  await client.next((m) => m.type === 'ack' && m.offset > 0, 'a first ack');
  const flushAt = client.messages.length;
  client.socket.send(JSON.stringify({ type: 'flush' }));
  const ack = await client.next((m) => m.type === 'ack' && m.offset === audio.length, 'the ack of every byte', flushAt);
  const acks = client.messages.filter((m) => m.type === 'ack').map((m) => m.offset);
  assert(acks.every((o, i) => i === 0 || o >= acks[i - 1]), `acks only grow (${acks})`);
  client.socket.send(JSON.stringify({ type: 'finish' }));
  await client.next((m) => m.type === 'finished', 'finished');
  const code = await withTimeout(client.closed, 5_000, 'the socket to close after finish');
  assert(code === 1000, `the server closes with 1000 after finish (${code})`);
  assert((await getSession(server, id)).status === 'completed', 'the session is completed');

  const wav = await request(proxy.port, { path: `/api/session/${id}/tracks/mic.wav`, headers: { host } });
  assert(wav.status === 200 && wav.headers['content-type'] === 'audio/wav', `the track downloads through the proxy (${wav.status})`);
  const parsed = parseWav(wav.body);
  const dataStart = wav.body.length - parsed.dataBytes;
  assert(parsed.dataBytes === audio.length, `the WAV header says ${parsed.dataBytes} bytes, ${audio.length} were sent`);
  assert(wav.body.subarray(dataStart).equals(audio), 'the WAV holds byte for byte what was sent');

  const [from, to] = [dataStart + 1_000, dataStart + 50_999];
  const range = await request(proxy.port, { path: `/api/session/${id}/tracks/mic.wav`, headers: { host, range: `bytes=${from}-${to}` } });
  assert(range.status === 206, `a Range request answers 206 through the proxy (${range.status})`);
  assert(range.headers['content-range'] === `bytes ${from}-${to}/${wav.body.length}`, `Content-Range (${range.headers['content-range']})`);
  assert(range.body.equals(wav.body.subarray(from, to + 1)), 'the range holds the right bytes');
  const suffix = await request(proxy.port, { path: `/api/session/${id}/tracks/mic.wav`, headers: { host, range: 'bytes=-4096' } });
  assert(suffix.status === 206 && suffix.body.equals(audio.subarray(audio.length - 4096)), 'a suffix range is the last bytes');
  return `${audio.length} bytes in ${acks.length} acks (last ${ack.offset}); WAV identical; Range 206 right`;
}

async function recorderPageThroughProxy(scope, { proxy, server, dir }) {
  const wav = await writeTestTones(dir);
  const { origin } = deployment(proxy.port);
  // The browser reaches the deployment's name on loopback; plain HTTP counts as secure there,
  // as it would be behind TLS (the microphone needs a secure page).
  const browser = await launchBrowser(scope, {
    userDataDir: path.join(dir, 'profile'),
    wav,
    extraFlags: [`--host-resolver-rules=MAP ${NAME} 127.0.0.1`, `--unsafely-treat-insecure-origin-as-secure=${origin}`],
  });
  const page = await browser.newPage();
  await page.goto(`${origin}/record`);
  const id = await startRecording(page);
  await sleep(3_000);
  await stopRecording(page);
  const session = await getSession(server, id);
  assert(session.status === 'completed', `the session is completed (${session.status})`);
  const mic = session.tracks.find((t) => t.name === 'mic');
  assert(mic.dataBytes === (await pageOffset(page)), 'the server holds exactly the bytes the page numbered');
  const seconds = mic.dataBytes / (mic.sampleRate * 2);
  assert(seconds > 2.9 && seconds < 5, `the take lasts about 3 s (${seconds.toFixed(2)} s)`);
  const response = await fetch(`${proxy.url}/api/session/${id}/tracks/mic.wav`);
  const audio = parseWav(Buffer.from(await response.arrayBuffer()));
  assert(audio.dataBytes === mic.dataBytes, 'the WAV header matches the track');
  const tones = assertHoldsTones(toneReport(audio.samples, audio.sampleRate), 'the mic track');
  assert(browser.pageErrors.length === 0, `no script error (${browser.pageErrors.join('; ')})`);
  return `${seconds.toFixed(2)} s through ${NAME}; tones ${tones}`;
}

/** Each proxy and what is checked through it; the browser once, through nginx. */
const PROXIES = [
  { name: 'nginx', start: startNginx, checks: [hostAndOriginRules, recordThroughProxy, recorderPageThroughProxy] },
  { name: 'caddy', start: startCaddy, checks: [hostAndOriginRules, recordThroughProxy] },
];

const scope = new Scope('proxy');
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    await scope.close();
    process.exit(130);
  });
}
let passed = 0;
let failed = 0;
try {
  await mkdir(scope.artifacts, { recursive: true });
  const dir = await scope.tempDir('proxy');
  const server = await startServer(scope, {
    port: await freePort(),
    dataDir: path.join(dir, 'data'),
    extraArgs: ['--allowed-host', NAME, '--allowed-origin', OTHER_ORIGIN],
  });
  for (const { name, start, checks } of PROXIES) {
    const proxyDir = path.join(dir, name);
    await mkdir(proxyDir);
    const proxy = await start(scope, proxyDir, server.port);
    // The API through the proxy, as the checks read sessions (an IP literal Host is always allowed).
    const viaProxy = { ...server, url: proxy.url };
    for (const check of checks) {
      const started = performance.now();
      try {
        const detail = await withTimeout(check(scope, { proxy, server: viaProxy, dir: proxyDir }), 60_000, check.name);
        console.log(`ok   ${name}-${check.name} (${((performance.now() - started) / 1000).toFixed(1)} s): ${detail}`);
        passed += 1;
      } catch (error) {
        console.log(`FAIL ${name}-${check.name}: ${error.stack ?? error}`);
        console.log(`     logs: ${scope.artifacts}`);
        await scope.keepEvidence();
        failed += 1;
      }
    }
  }
} catch (error) {
  console.log(`FAIL proxy-setup: ${error.stack ?? error}`);
  failed += 1;
} finally {
  await scope.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
