// Scenario 1: the browser dies mid-take. The session turns incomplete, the history page offers
// it, Resume continues the same track, and the finished WAV is both takes with the test tones.

import path from 'node:path';
import { assertHoldsTones, toneReport } from '../lib/audio.mjs';
import { assert, freePort, getSession, launchBrowser, sleep, startServer, trackOf, waitForStatus } from '../lib/harness.mjs';
import {
  assertWithin, downloadTrack, openRecorder, pageOffset, sessionCard, startRecording, timedTake, writeTestTones,
} from '../lib/pages.mjs';

export const name = 'browser-crash-then-resume';

export async function run(scope) {
  const dir = await scope.tempDir('crash');
  const wav = await writeTestTones(dir);
  const profile = path.join(dir, 'profile');
  const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data') });

  const first = await launchBrowser(scope, { userDataDir: profile, wav, label: 'browser-1' });
  const recorder = await openRecorder(first, `${server.url}/record`);
  const clickedStart = performance.now();
  const id = await startRecording(recorder);
  await sleep(5_000);
  const numberedBeforeCrash = await pageOffset(recorder);
  await first.kill();
  const firstTakeAtMost = (performance.now() - clickedStart) / 1000;
  await waitForStatus(server, id, 'incomplete');

  // The same profile, as when the person opens the browser again.
  const second = await launchBrowser(scope, { userDataDir: profile, wav, label: 'browser-2' });
  const page = await second.newPage();
  await page.goto(server.url);
  const banner = page.getByTestId('recovery-banner');
  await banner.waitFor();
  assert((await banner.textContent()).includes('1 interrupted recording'), 'the banner counts one interrupted session');
  assert((await sessionCard(page, id).getAttribute('data-status')) === 'incomplete', 'the session shows as incomplete');
  await banner.locator(`[data-testid=resume][href$="${id}"]`).click();
  await page.waitForURL(`**/record?session=${id}`);
  assert((await page.getByTestId('session-id').textContent()) === id, 'the recorder opened the session');
  // Whatever the crashed page kept goes up first; then the page is idle again.
  await page.getByTestId('connection').filter({ hasText: /^idle$/ }).waitFor();
  const mic = await trackOf(server, id, 'mic');
  const byteRate = mic.sampleRate * 2;
  const resumedFrom = mic.dataBytes;
  assertWithin(resumedFrom / byteRate, { min: numberedBeforeCrash / byteRate, max: firstTakeAtMost }, 'the first take');

  const take = await timedTake(page, () => sleep(3_000));
  const session = await getSession(server, id);
  assert(session.status === 'completed', `the session is completed (${session.status})`);
  const final = session.tracks.find((t) => t.name === 'mic');
  assert(final.dataBytes === (await pageOffset(page)), 'the server holds exactly the bytes the page numbered');
  assert(final.segments.at(-1).offset === resumedFrom, 'the second take was appended where the track ended');
  assertWithin((final.dataBytes - resumedFrom) / byteRate, take, 'the second take');

  const audio = await downloadTrack(server, id, 'mic');
  assert(audio.dataBytes === final.dataBytes && audio.sampleRate === final.sampleRate, 'the WAV header matches the track');
  const seconds = audio.dataBytes / byteRate;
  // 5 s and 3 s of sleep, plus what clicking and waiting add on a busy machine.
  assert(seconds > 7.9 && seconds < 10.5, `the mic track is about 8 s (${seconds.toFixed(2)} s)`);
  const tones = assertHoldsTones(toneReport(audio.samples, audio.sampleRate), 'the mic track');
  assert(second.pageErrors.length === 0, `no script error on the pages (${second.pageErrors.join('; ')})`);
  return `${seconds.toFixed(2)} s of tones ${tones}`;
}
