// Scenario 1c: the person reloads the page mid-take. The reloaded page is back on the same
// session (its address says so), uploads whatever it kept that the server lacks, and the next
// take continues the track after every byte of the first: nothing lost, nothing twice.

import path from 'node:path';
import { assertHoldsTones, toneReport } from '../lib/audio.mjs';
import { assert, freePort, getSession, launchBrowser, sleep, startServer, trackOf } from '../lib/harness.mjs';
import { downloadTrack, openRecorder, pageOffset, startRecording, stopRecording, writeTestTones } from '../lib/pages.mjs';

export const name = 'reload-mid-recording-resumes-the-session';

export async function run(scope) {
  const dir = await scope.tempDir('reload');
  const wav = await writeTestTones(dir);
  const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data') });
  const browser = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile'), wav });

  const page = await openRecorder(browser, `${server.url}/record`);
  const id = await startRecording(page);
  await sleep(2_000);
  const numbered = await pageOffset(page);
  await page.reload();
  assert(page.url().endsWith(`/record?session=${id}`), `the reloaded page is on the session (${page.url()})`);
  assert((await page.getByTestId('session-id').textContent()) === id, 'the page shows the same session');
  await page.getByTestId('connection').filter({ hasText: /^idle$/ }).waitFor();
  const kept = (await trackOf(server, id, 'mic')).dataBytes;
  assert(kept >= numbered, `everything numbered before the reload is on the server (${kept} >= ${numbered})`);

  assert((await startRecording(page)) === id, 'Continue records into the same session');
  await sleep(1_000);
  await stopRecording(page);
  const mic = (await getSession(server, id)).tracks.find((t) => t.name === 'mic');
  assert(mic.dataBytes === (await pageOffset(page)), 'the server holds exactly the bytes the page numbered');
  assert(mic.segments.at(-1).offset === kept, `the new take starts where the track ended (${kept}; segments ${JSON.stringify(mic.segments)})`);
  const audio = await downloadTrack(server, id, 'mic');
  const report = toneReport(audio.samples, audio.sampleRate);
  const tones = assertHoldsTones(report, 'the mic track');
  assert(report.counts.silent === 0, 'no silent stretch where the reload was');
  assert(browser.pageErrors.length === 0, `no script error (${browser.pageErrors.join('; ')})`);
  return `${(mic.durationMs / 1000).toFixed(2)} s; tones ${tones}`;
}
