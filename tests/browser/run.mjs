// Runs the browser scenarios, each with its own server, browser and temp directories, each
// bounded in time; prints `N passed, M failed` last. BROWSERS (default `chromium firefox webkit`)
// chooses the browsers; each browser's scenarios run one after the other, and with
// BROWSER_JOBS=2 or more that many browsers run side by side. `node run.mjs NAME...` runs only
// the scenarios whose names contain one of the NAMEs.

import { mkdir, rm } from 'node:fs/promises';
import { WEBDRIVER_BROWSERS } from './lib/webdriver.mjs';
import { scenariosFor } from './scenarios/other-browsers.mjs';
import { ARTIFACTS, Scope, withTimeout } from './lib/harness.mjs';
import * as alignedExport from './scenarios/aligned-export.mjs';
import * as clockMarks from './scenarios/clock-marks.mjs';
import * as crashResume from './scenarios/crash-resume.mjs';
import * as guestCrashAndStop from './scenarios/guest-crash-and-stop.mjs';
import * as guestOffline from './scenarios/guest-offline.mjs';
import * as guestOverTls from './scenarios/guest-over-tls.mjs';
import * as guestReopenEnded from './scenarios/guest-reopen-ended.mjs';
import * as guestScreenshots from './scenarios/guest-screenshots.mjs';
import * as outageThenCrash from './scenarios/outage-then-crash.mjs';
import * as rollover from './scenarios/rollover.mjs';
import * as reloadMidRecording from './scenarios/reload-mid-recording.mjs';
import * as screenshots from './scenarios/screenshots.mjs';
import * as stuckAudioEngine from './scenarios/stuck-audio-engine.mjs';
import * as serverRestart from './scenarios/server-restart.mjs';
import * as twoTracksAndHistory from './scenarios/two-tracks-and-history.mjs';

const SCENARIOS = [
  clockMarks.recording,
  clockMarks.outage,
  alignedExport,
  crashResume,
  outageThenCrash,
  reloadMidRecording,
  serverRestart,
  twoTracksAndHistory,
  screenshots,
  guestCrashAndStop,
  guestOffline,
  guestOverTls,
  guestReopenEnded,
  guestScreenshots,
  rollover,
  stuckAudioEngine,
];
const SCENARIO_TIMEOUT_MS = 90_000;

const browsers = (process.env.BROWSERS ?? 'chromium firefox webkit').split(/[\s,]+/).filter(Boolean);
for (const browser of browsers) {
  if (browser !== 'chromium' && !WEBDRIVER_BROWSERS.includes(browser)) {
    console.log(`unknown browser in BROWSERS: ${browser} (chromium, firefox, webkit)`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
}
const jobs = Math.max(1, Number(process.env.BROWSER_JOBS ?? 1) || 1);

const running = new Set();
// Interrupted: still clean up what the running scenarios started.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    await Promise.all([...running].map((scope) => scope.close()));
    process.exit(130);
  });
}

async function runOne(scenario) {
  const scope = new Scope(scenario.name);
  running.add(scope);
  const started = performance.now();
  const took = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
  await mkdir(scope.artifacts, { recursive: true });
  try {
    const detail = await withTimeout(scenario.run(scope), scenario.timeoutMs ?? SCENARIO_TIMEOUT_MS, scenario.name);
    if (detail?.skipped) {
      console.log(`skip ${scenario.name}: ${detail.skipped}`);
      return null;
    }
    console.log(`ok   ${scenario.name} (${took()})${detail ? `: ${detail}` : ''}`);
    return true;
  } catch (error) {
    console.log(`FAIL ${scenario.name} (${took()}): ${error.stack ?? error}`);
    console.log(`     logs and screenshots: ${scope.artifacts}`);
    await scope.keepEvidence();
    return false;
  } finally {
    await scope.close();
    running.delete(scope);
  }
}

const filters = process.argv.slice(2);
const chosen = (list) => list.filter((s) => filters.length === 0 || filters.some((f) => s.name.includes(f)));
const groups = browsers
  .map((browser) => chosen(browser === 'chromium' ? SCENARIOS : scenariosFor(browser)))
  .filter((group) => group.length > 0);
await rm(ARTIFACTS, { recursive: true, force: true });
let passed = 0;
let failed = 0;
const queue = [...groups];
async function worker() {
  for (let group = queue.shift(); group; group = queue.shift()) {
    for (const scenario of group) {
      const outcome = await runOne(scenario);
      if (outcome) passed += 1;
      else if (outcome === false) failed += 1;
    }
  }
}
await Promise.all(Array.from({ length: Math.min(jobs, groups.length) }, worker));
const total = passed + failed;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || total === 0 ? 1 : 0);
