// Runs the browser scenarios one after the other, each with its own server, browser and temp
// directories, each bounded in time; prints `N passed, M failed` last. `node run.mjs NAME...`
// runs only the scenarios whose names contain one of the NAMEs.

import { mkdir, rm } from 'node:fs/promises';
import { ARTIFACTS, Scope, withTimeout } from './lib/harness.mjs';
import * as crashResume from './scenarios/crash-resume.mjs';
import * as guestCrashAndStop from './scenarios/guest-crash-and-stop.mjs';
import * as guestOffline from './scenarios/guest-offline.mjs';
import * as guestScreenshots from './scenarios/guest-screenshots.mjs';
import * as outageThenCrash from './scenarios/outage-then-crash.mjs';
import * as rollover from './scenarios/rollover.mjs';
import * as reloadMidRecording from './scenarios/reload-mid-recording.mjs';
import * as screenshots from './scenarios/screenshots.mjs';
import * as stuckAudioEngine from './scenarios/stuck-audio-engine.mjs';
import * as serverRestart from './scenarios/server-restart.mjs';
import * as twoTracksAndHistory from './scenarios/two-tracks-and-history.mjs';

const SCENARIOS = [
  crashResume,
  outageThenCrash,
  reloadMidRecording,
  serverRestart,
  twoTracksAndHistory,
  screenshots,
  guestCrashAndStop,
  guestOffline,
  guestScreenshots,
  rollover,
  stuckAudioEngine,
];
const SCENARIO_TIMEOUT_MS = 90_000;

let current;
// Interrupted: still clean up what the running scenario started.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    await current?.close();
    process.exit(130);
  });
}

async function runOne(scenario) {
  const scope = new Scope(scenario.name);
  current = scope;
  const started = performance.now();
  const took = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
  await mkdir(scope.artifacts, { recursive: true });
  try {
    const detail = await withTimeout(scenario.run(scope), scenario.timeoutMs ?? SCENARIO_TIMEOUT_MS, scenario.name);
    console.log(`ok   ${scenario.name} (${took()})${detail ? `: ${detail}` : ''}`);
    return true;
  } catch (error) {
    console.log(`FAIL ${scenario.name} (${took()}): ${error.stack ?? error}`);
    console.log(`     logs and screenshots: ${scope.artifacts}`);
    await scope.keepEvidence();
    return false;
  } finally {
    await scope.close();
    current = undefined;
  }
}

const filters = process.argv.slice(2);
const chosen = SCENARIOS.filter((s) => filters.length === 0 || filters.some((f) => s.name.includes(f)));
await rm(ARTIFACTS, { recursive: true, force: true });
let passed = 0;
let failed = 0;
for (const scenario of chosen) {
  if (await runOne(scenario)) passed += 1;
  else failed += 1;
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || chosen.length === 0 ? 1 : 0);
