// Scenario 1b: the server goes away while the page records, so audio piles up unacked in the
// browser; then the browser dies too. When both come back, Resume uploads from IndexedDB what
// the server never got, and the track has the tones all through: nothing of the outage lost.

import path from 'node:path';
import { assertHoldsTones, toneReport } from '../lib/audio.mjs';
import { assert, freePort, getSession, launchBrowser, sleep, startServer, trackOf, waitFor, waitForStatus } from '../lib/harness.mjs';
import { downloadTrack, openRecorder, pageOffset, startRecording, timedTake, writeTestTones } from '../lib/pages.mjs';

export const name = 'outage-then-browser-crash-keeps-audio-in-indexeddb';

const TITLE = 'Outage, then a crash';

export async function run(scope) {
  const dir = await scope.tempDir('outage');
  const wav = await writeTestTones(dir);
  const profile = path.join(dir, 'profile');
  const port = await freePort();
  const dataDir = path.join(dir, 'data');
  const server = await startServer(scope, { port, dataDir });

  const first = await launchBrowser(scope, { userDataDir: profile, wav, label: 'browser-1' });
  const recorder = await openRecorder(first, `${server.url}/record`);
  await recorder.locator('#title').fill(TITLE);
  const id = await startRecording(recorder);
  await sleep(1_500);
  assert((await server.signal('SIGTERM')).code === 0, 'the server stops cleanly on SIGTERM');
  await recorder.getByTestId('connection').filter({ hasText: /^reconnecting in/ }).waitFor({ timeout: 5_000 });
  await sleep(2_000);
  const numbered = await pageOffset(recorder);
  const unacked = Number.parseFloat(await recorder.getByTestId('unacked').textContent());
  assert(unacked >= 1.5, `the page shows the audio the server has not acked (${unacked} s)`);
  await first.kill();

  const again = await startServer(scope, { port, dataDir, label: 'server-2' });
  await waitForStatus(again, id, 'incomplete');
  const onServer = (await trackOf(again, id, 'mic')).dataBytes;
  assert(onServer < numbered, `the server lacks the outage's audio (${onServer} < ${numbered})`);

  const second = await launchBrowser(scope, { userDataDir: profile, wav, label: 'browser-2' });
  const page = await openRecorder(second, `${again.url}/record`);
  const offer = page.locator('#recovery li', { hasText: TITLE });
  await offer.waitFor();
  assert(/kept in this browser/.test(await offer.textContent()), 'the recorder says this browser holds audio of it');
  await offer.getByTestId('resume').click(); // the contract's hook (a link with role=button since the server renders the banner)
  await page.waitForURL(`**/record?session=${id}`);
  await waitFor(async () => (await trackOf(again, id, 'mic')).dataBytes >= numbered, {
    timeout: 10_000,
    what: 'the kept audio to reach the server',
  });
  await page.getByTestId('connection').filter({ hasText: /^idle$/ }).waitFor();

  await timedTake(page, () => sleep(1_000));
  const session = await getSession(again, id);
  assert(session.status === 'completed', `the session is completed (${session.status})`);
  const mic = session.tracks.find((t) => t.name === 'mic');
  assert(mic.dataBytes === (await pageOffset(page)), 'the server holds exactly the bytes the page numbered');
  const audio = await downloadTrack(again, id, 'mic');
  const report = toneReport(audio.samples, audio.sampleRate);
  const tones = assertHoldsTones(report, 'the mic track');
  assert(report.counts.silent === 0, 'no silent stretch where the outage was');
  assert(second.pageErrors.length === 0, `no script error (${second.pageErrors.join('; ')})`);
  const recovered = ((numbered - onServer) / (mic.sampleRate * 2)).toFixed(2);
  return `${recovered} s came back from IndexedDB; tones ${tones}`;
}
