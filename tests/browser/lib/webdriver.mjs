// Firefox ESR and WebKitGTK (Safari's engine), both Debian's, driven over W3C WebDriver
// (selenium-webdriver against geckodriver and WebKitWebDriver, which the test starts itself).
// Each gets what its fake microphone needs: Firefox a private PulseAudio null sink as its audio
// output, WebKit's MiniBrowser a private Xvfb display and its mock capture devices. The scope
// owns every process; `kill` is the crash of the brief: SIGKILL to the browser and its helpers.

import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Builder, By } from 'selenium-webdriver';
import { assert, freePort, sleep, startProcess, waitFor, withTimeout } from './harness.mjs';

const FIREFOX = '/usr/bin/firefox-esr';
const GECKODRIVER = process.env.GECKODRIVER ?? path.join(os.homedir(), '.cargo/bin/geckodriver');
const WEBKIT_DRIVER = '/usr/bin/WebKitWebDriver';
const MINIBROWSER = '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';

export const WEBDRIVER_BROWSERS = ['firefox', 'webkit'];

/** The fake microphone's prefs, and no network or first-run chatter of its own. */
const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.autoplay.default': 0,
  'browser.shell.checkDefaultBrowser': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.reportingpolicy.firstRun': false,
  'app.update.enabled': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
};

/** The live pids of a process group but its leader (the driver): the browser and its helpers. */
async function groupMembers(pgid) {
  const members = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === pgid) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid pgrp ...: comm may hold spaces, so count from its closing paren.
      // A zombie (state Z) is dead already, waiting for its parent to reap it.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') members.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return members;
}

/** A private PulseAudio daemon with one null sink, for Firefox's audio output; its socket. */
async function startPulse(scope, dir) {
  const runtime = path.join(dir, 'pulse');
  await mkdir(runtime, { recursive: true, mode: 0o700 });
  const socket = path.join(runtime, 'native');
  const env = { ...process.env, HOME: dir, XDG_RUNTIME_DIR: runtime, PULSE_RUNTIME_PATH: runtime, PULSE_STATE_PATH: runtime };
  const args = [
    '-n', // no default.pa: only the modules below
    '--daemonize=no',
    '--use-pid-file=no',
    '--exit-idle-time=-1',
    '--disable-shm=yes',
    '--log-target=stderr',
    '-L', `module-native-protocol-unix socket=${socket} auth-anonymous=1`,
    '-L', 'module-null-sink sink_name=safetake_test',
    '-L', 'module-always-sink',
  ];
  const pulse = startProcess(scope, '/usr/bin/pulseaudio', args, scope.log('pulseaudio.log'), { env });
  await waitFor(
    async () => {
      if (!pulse.alive()) throw new Error(`pulseaudio exited; see ${scope.log('pulseaudio.log')}`);
      await readdir(runtime).then((names) => names.includes('native') || Promise.reject(new Error('no socket yet')));
      return true;
    },
    { timeout: 10_000, what: 'pulseaudio to open its socket' },
  );
  return `unix:${socket}`;
}

/** A private X display (`-displayfd` picks a free one); its name. */
async function startXvfb(scope) {
  const xvfb = startProcess(scope, '/usr/bin/Xvfb', ['-displayfd', '3', '-screen', '0', '1280x900x24', '-nolisten', 'tcp'], scope.log('xvfb.log'), {
    extraPipe: true,
  });
  let text = '';
  xvfb.child.stdio[3].on('data', (chunk) => {
    text += chunk;
  });
  const display = await waitFor(
    () => {
      if (!xvfb.alive()) throw new Error(`Xvfb exited; see ${scope.log('xvfb.log')}`);
      return text.includes('\n') && `:${text.trim()}`;
    },
    { timeout: 10_000, what: 'Xvfb to open a display' },
  );
  return display;
}

/**
 * The environment of a browser of this kind, started once per scenario and kept for a relaunch.
 * `audioOutput: false` leaves Firefox without any output device (the defect of issue 12).
 */
export async function browserEnvironment(scope, kind, dir, { audioOutput = true } = {}) {
  // Caches, settings and sockets in the scenario's temp dir, not the machine's home or /tmp.
  const env = {
    ...process.env,
    HOME: dir,
    TMPDIR: dir,
    XDG_CACHE_HOME: path.join(dir, 'cache'),
    XDG_CONFIG_HOME: path.join(dir, 'config'),
    XDG_DATA_HOME: path.join(dir, 'share'),
    XDG_RUNTIME_DIR: path.join(dir, 'runtime'),
  };
  await mkdir(env.XDG_RUNTIME_DIR, { recursive: true, mode: 0o700 });
  if (kind === 'firefox') {
    env.PULSE_SERVER = audioOutput ? await startPulse(scope, dir) : `unix:${path.join(dir, 'no-pulse-here')}`;
    env.MOZ_CRASHREPORTER_DISABLE = '1';
  } else {
    env.DISPLAY = await startXvfb(scope);
    // No session bus for the accessibility bridge here; and in a container (root, maybe no
    // user namespaces) WebKit's bubblewrap sandbox may not start: the page is the test's own.
    env.NO_AT_BRIDGE = '1';
    env.WEBKIT_DISABLE_SANDBOX_THIS_IS_DANGEROUS = '1';
  }
  return env;
}

function capabilities(kind, profileDir) {
  if (kind === 'firefox') {
    return {
      browserName: 'firefox',
      acceptInsecureCerts: false,
      'moz:firefoxOptions': { binary: FIREFOX, args: ['-headless', '-profile', profileDir], prefs: FIREFOX_PREFS },
    };
  }
  return {
    browserName: 'MiniBrowser',
    'webkitgtk:browserOptions': {
      binary: MINIBROWSER,
      args: ['--automation', '--enable-media-stream=true', '--enable-mock-capture-devices=true'],
    },
  };
}

/** Collects what would otherwise go unseen: uncaught errors and rejections of the page. */
const WATCH_ERRORS = `
  if (!window.__testErrors) {
    window.__testErrors = [];
    addEventListener('error', (e) => window.__testErrors.push(String(e.message)));
    addEventListener('unhandledrejection', (e) => window.__testErrors.push(String(e.reason && (e.reason.stack || e.reason))));
  }`;

/**
 * Firefox or WebKit on `profileDir` (Firefox reuses it after a crash; MiniBrowser's automation
 * sessions keep nothing), through its driver on a free port. What the scenarios call is
 * selector-based and bounded: `waitText`, `text`, `attr`, `click`, `goto`, `reload`, `url`.
 */
export async function launchWebDriverBrowser(scope, { kind, env, profileDir, label = 'browser' }) {
  assert(WEBDRIVER_BROWSERS.includes(kind), `a browser this suite drives over WebDriver (${kind})`);
  await mkdir(profileDir, { recursive: true });
  const port = await freePort();
  const driverProc =
    kind === 'firefox'
      ? startProcess(scope, GECKODRIVER, ['--host', '127.0.0.1', '--port', String(port), '--log', 'info'], scope.log(`${label}.log`), { env })
      : startProcess(scope, WEBKIT_DRIVER, [`--port=${port}`, '--host=127.0.0.1'], scope.log(`${label}.log`), { env });
  const server = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (!driverProc.alive()) throw new Error(`the ${kind} driver exited; see ${scope.log(`${label}.log`)}`);
      return (await fetch(`${server}/status`)).ok;
    },
    { timeout: 10_000, what: `the ${kind} driver to answer` },
  );
  const driver = await withTimeout(
    new Builder().usingServer(server).withCapabilities(capabilities(kind, profileDir)).build(),
    45_000,
    `${kind} to start a WebDriver session`,
  );
  let crashed = false;
  scope.defer(() => (crashed ? undefined : withTimeout(driver.quit(), 10_000, `${kind} to quit`).catch(() => {})));
  await driver.manage().setTimeouts({ script: 10_000, pageLoad: 20_000, implicit: 0 });
  // What a failure looked like, as Scope.keepEvidence takes it from Playwright's pages.
  scope.pages.push({
    isClosed: () => crashed,
    screenshot: async ({ path: file }) => writeFile(file, await withTimeout(driver.takeScreenshot(), 10_000, 'a screenshot'), 'base64'),
  });

  const run = (script, ...args) => withTimeout(driver.executeScript(script, ...args), 15_000, `a script in ${kind}`);
  const browser = {
    kind,
    driver,
    async goto(url) {
      await withTimeout(driver.get(url), 25_000, `${kind} to load ${url}`);
      await run(WATCH_ERRORS);
    },
    async reload() {
      await withTimeout(driver.navigate().refresh(), 25_000, `${kind} to reload`);
      await run(WATCH_ERRORS);
    },
    url: () => driver.getCurrentUrl(),
    /** The trimmed text of the first element matching `selector`, or null. */
    text: (selector) => run('const e = document.querySelector(arguments[0]); return e && e.textContent.trim();', selector),
    attr: (selector, name) => run('const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1]);', selector, name),
    visible: (selector) =>
      run('const e = document.querySelector(arguments[0]); return !!e && !e.hidden && e.getClientRects().length > 0;', selector),
    /** Waits until the element's text matches `pattern`; returns the text. */
    async waitText(selector, pattern, timeout = 15_000) {
      let last;
      try {
        return await waitFor(
          async () => {
            last = await browser.text(selector);
            return last !== null && pattern.test(last) && last;
          },
          { timeout, interval: 100, what: `${selector} to read ${pattern}` },
        );
      } catch (error) {
        throw new Error(`${error.message}; it reads ${JSON.stringify(last)}`);
      }
    },
    async waitVisible(selector, timeout = 15_000) {
      await waitFor(() => browser.visible(selector), { timeout, what: `${selector} to show` });
    },
    /**
     * A real click through the driver (the user gesture that lets an AudioContext start), once
     * the element shows and is enabled, as Playwright waits; a disabled button would swallow it.
     */
    async click(selector) {
      await waitFor(
        () => run('const e = document.querySelector(arguments[0]); return !!e && !e.disabled && e.getClientRects().length > 0;', selector),
        { timeout: 10_000, what: `${selector} to be enabled` },
      );
      const element = await withTimeout(driver.findElement(By.css(selector)), 10_000, `${selector} to exist`);
      await withTimeout(element.click(), 10_000, `a click on ${selector}`);
    },
    /** Uncaught errors of the page since it loaded. */
    errors: () => run('return window.__testErrors || [];'),
    /** SIGKILL to the browser and every helper of it at once; the driver stays for cleanup. */
    async kill() {
      const pids = await groupMembers(driverProc.child.pid);
      assert(pids.length > 0, `${kind} has processes to kill`);
      crashed = true;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await waitFor(async () => (await groupMembers(driverProc.child.pid)).every((pid) => !pids.includes(pid)), {
        timeout: 5_000,
        what: `${kind}'s processes to die`,
      });
      await driverProc.signal('SIGKILL');
    },
  };
  return browser;
}

/** Removes what a killed Firefox leaves so the next start does not see a running one. */
export async function clearStaleLock(profileDir) {
  for (const name of ['lock', '.parentlock']) await rm(path.join(profileDir, name), { force: true });
}
