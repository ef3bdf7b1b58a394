// What every scenario stands on: the real server binary, a real Chromium, temp directories,
// and bounded waits. Everything a scenario starts is registered in its Scope and undone when
// the scenario ends, pass or fail: processes are killed by process group, directories removed.

import { execFile, spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const ARTIFACTS = path.join(ROOT, 'tests/browser/artifacts');
const SERVER_BIN = path.resolve(process.env.SAFETAKE_BIN ?? path.join(ROOT, 'target/release/safetake'));
const CHROMIUM = '/usr/bin/chromium';

/** The flags of the brief: no network of its own, fake devices, the test's WAV as the microphone. */
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
];

/** Short timeouts, so a crash turns a session `incomplete` within seconds. */
const SERVER_FLAGS = ['--session-timeout', '2s', '--sweep-interval', '500ms', '--sync-interval', '200ms'];

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` until it returns a truthy value (which it returns), failing after `timeout` ms. */
export async function waitFor(probe, { timeout = 10_000, interval = 100, what }) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ''}`);
    }
    await sleep(interval);
  }
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

/** A port the OS just handed out; the server binds it a moment later. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** What one scenario owns; `close` undoes it all, last first. */
export class Scope {
  #cleanups = [];

  constructor(name) {
    this.name = name;
    this.artifacts = path.join(ARTIFACTS, name);
    this.pages = [];
  }

  defer(cleanup) {
    this.#cleanups.push(cleanup);
  }

  async tempDir(label) {
    const dir = await mkdtemp(path.join(os.tmpdir(), `safetake-${label}-`));
    this.defer(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  log(file) {
    return path.join(this.artifacts, file);
  }

  /** Screenshots of every page still open, to see what a failure looked like. */
  async keepEvidence() {
    for (const [index, page] of this.pages.entries()) {
      if (!page.isClosed()) await page.screenshot({ path: this.log(`failure-${index}.png`), fullPage: true }).catch(() => {});
    }
  }

  async close() {
    for (const cleanup of this.#cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch (error) {
        console.error(`  cleanup in ${this.name}: ${error.message}`);
      }
    }
  }
}

/**
 * Starts a command as the leader of its own process group (a browser's helpers join it),
 * its output appended to `logFile` (`extraPipe` opens fd 3 as `child.stdio[3]`, for Xvfb's
 * `-displayfd`). The scope kills the group when it closes.
 */
export function startProcess(scope, command, args, logFile, { env, extraPipe = false } = {}) {
  const stdio = ['ignore', 'pipe', 'pipe', ...(extraPipe ? ['pipe'] : [])];
  const child = spawn(command, args, { stdio, detached: true, env: env ?? process.env });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const handle = {
    child,
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    /** Signals the whole group while its leader lives; resolves with how the leader ended. */
    async signal(name, timeout = 10_000) {
      if (handle.alive()) process.kill(-child.pid, name);
      return withTimeout(exited, timeout, `${path.basename(command)} to exit on ${name}`);
    },
  };
  scope.defer(async () => {
    await handle.signal('SIGTERM', 5_000).catch(() => handle.signal('SIGKILL', 5_000));
    await reapGroup(child.pid);
  });
  return handle;
}

/** Waits until no process of the group is left (a browser's helpers trail their leader). */
async function reapGroup(pgid) {
  const exists = () => {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch {
      return false;
    }
  };
  // While a member lives, the id cannot name another group: signalling it stays safe.
  for (const [grace, signal] of [[3_000, 'SIGKILL'], [3_000, null]]) {
    const deadline = Date.now() + grace;
    while (exists() && Date.now() < deadline) await sleep(50);
    if (!exists()) return;
    if (signal) process.kill(-pgid, signal);
  }
  throw new Error(`processes of group ${pgid} outlived SIGKILL`);
}

/**
 * The server binary on 127.0.0.1:`port`, answering /healthz; `restart` reuses port and data.
 * With `tls` (from `selfSignedCert`) it serves HTTPS and WSS: `url` is `https://`, and
 * `server.fetch` is a fetch that trusts that certificate (and nothing else).
 */
export async function startServer(scope, { port, dataDir, label = 'server', extraArgs = [], tls }) {
  await mkdir(scope.artifacts, { recursive: true });
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const tlsArgs = tls ? ['--tls-cert', tls.certFile, '--tls-key', tls.keyFile] : [];
  const args = ['--bind', `127.0.0.1:${port}`, '--data-dir', dataDir, ...SERVER_FLAGS, ...tlsArgs, ...extraArgs];
  const server = startProcess(scope, SERVER_BIN, args, scope.log(`${label}.log`));
  const serverFetch = tls ? fetchTrusting(tls.cert) : fetch;
  await waitFor(
    async () => {
      if (!server.alive()) throw new Error(`the server exited; see ${scope.log(`${label}.log`)}`);
      return (await serverFetch(`${url}/healthz`)).ok;
    },
    { timeout: 10_000, what: 'the server to answer /healthz' },
  );
  return { ...server, url, port, dataDir, fetch: serverFetch };
}

/**
 * A self-signed certificate for 127.0.0.1 and localhost, made by Debian's openssl in `dir`:
 * its PEM files, the PEM text, and `spki`, the base64 SHA-256 of its public key (what
 * Chromium's `--ignore-certificate-errors-spki-list` trusts).
 */
export async function selfSignedCert(dir) {
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  await new Promise((resolve, reject) => {
    execFile('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', '/CN=safetake test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout', keyFile, '-out', certFile,
    ], { timeout: 10_000 }, (error, _stdout, stderr) => (error ? reject(new Error(`openssl: ${stderr || error.message}`)) : resolve()));
  });
  const cert = await readFile(certFile, 'utf8');
  const publicKey = new X509Certificate(cert).publicKey.export({ type: 'spki', format: 'der' });
  return { certFile, keyFile, cert, spki: createHash('sha256').update(publicKey).digest('base64') };
}

/** `fetch` over node:https that trusts only `ca` (Node's own fetch takes no CA). */
function fetchTrusting(ca) {
  return (url, { method = 'GET', headers = {}, body } = {}) =>
    new Promise((resolve, reject) => {
      const request = https.request(url, { method, headers, ca, timeout: 10_000 }, (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          const status = response.statusCode;
          const head = new Headers();
          for (const [key, value] of Object.entries(response.headers)) head.set(key, [value].flat().join(', '));
          const empty = status === 204 || status === 304 || method === 'HEAD';
          resolve(new Response(empty ? null : Buffer.concat(chunks), { status, headers: head }));
        });
      });
      request.on('timeout', () => request.destroy(new Error(`${method} ${url}: timed out`)));
      request.on('error', reject);
      request.end(body);
    });
}

/** The JSON of an API call, failing on any non-2xx. */
export async function api(server, method, apiPath, body) {
  const response = await (server.fetch ?? fetch)(`${server.url}${apiPath}`, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw new Error(`${method} ${apiPath}: ${response.status} ${await response.text()}`);
  return response.status === 204 ? null : response.json();
}

export const getSession = (server, id) => api(server, 'GET', `/api/session/${id}`);

export async function waitForStatus(server, id, status, timeout = 10_000) {
  return waitFor(async () => (await getSession(server, id)).status === status, {
    timeout,
    what: `session ${id} to turn ${status}`,
  });
}

export async function trackOf(server, id, name) {
  const track = (await getSession(server, id)).tracks.find((t) => t.name === name);
  assert(track, `session ${id} has a track ${name}`);
  return track;
}

/**
 * Chromium with a profile in `userDataDir` (reuse it to come back after a crash) and `wav` as
 * every fake microphone. Driven over CDP, so the test owns the process and can SIGKILL it.
 */
export async function launchBrowser(scope, { userDataDir, wav, label = 'browser', extraFlags = [] }) {
  await mkdir(scope.artifacts, { recursive: true });
  const portFile = path.join(userDataDir, 'DevToolsActivePort');
  await rm(portFile, { force: true }); // a killed browser leaves its old one behind
  const args = [
    ...CHROMIUM_FLAGS,
    ...extraFlags,
    `--use-file-for-fake-audio-capture=${wav}`,
    `--user-data-dir=${userDataDir}`,
    '--remote-debugging-port=0',
    'about:blank',
  ];
  // Its sockets and temp files beside the profile, removed with it (a killed Chromium leaves them).
  const env = { ...process.env, TMPDIR: path.dirname(userDataDir) };
  const proc = startProcess(scope, CHROMIUM, args, scope.log(`${label}.log`), { env });
  const [port, wsPath] = await waitFor(
    async () => {
      if (!proc.alive()) throw new Error(`chromium exited; see ${scope.log(`${label}.log`)}`);
      const lines = (await readFile(portFile, 'utf8')).trim().split('\n');
      return lines.length === 2 && lines;
    },
    { timeout: 20_000, what: 'chromium to open its DevTools port' },
  );
  const browser = await chromium.connectOverCDP(`ws://127.0.0.1:${port}${wsPath}`, { timeout: 15_000 });
  scope.defer(() => browser.close().catch(() => {}));
  const context = browser.contexts()[0];
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(15_000);
  const pageErrors = [];
  const sockets = [];
  return {
    proc,
    context,
    pageErrors,
    /** The URL of every WebSocket its pages opened. */
    sockets,
    /** A new tab whose console and uncaught errors go to the scenario's artifacts. */
    async newPage() {
      const page = await context.newPage();
      const console = createWriteStream(scope.log(`${label}-console.log`), { flags: 'a' });
      page.on('console', (message) => console.write(`[${message.type()}] ${message.text()}\n`));
      page.on('pageerror', (error) => {
        pageErrors.push(error);
        console.write(`[pageerror] ${error.stack}\n`);
      });
      page.on('websocket', (socket) => sockets.push(socket.url()));
      scope.pages.push(page);
      return page;
    },
    /** The crash of the brief: SIGKILL to the browser and all its helpers at once. */
    kill: () => proc.signal('SIGKILL'),
  };
}
