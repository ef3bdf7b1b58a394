// Scenario 2: the server restarts twice while the page records, once gracefully (SIGTERM) and
// once killed (SIGKILL). The page reconnects by itself and resends from `ready.offset`; the WAV
// has no gap and no duplicate: exactly the bytes the page numbered, as long as the take lasted.

import path from 'node:path';
import { assertHoldsTones, toneReport } from '../lib/audio.mjs';
import { assert, freePort, getSession, launchBrowser, sleep, startServer } from '../lib/harness.mjs';
import { assertWithin, downloadTrack, openRecorder, pageOffset, timedTake, waitConnected, writeTestTones } from '../lib/pages.mjs';

export const name = 'server-restarts-while-recording';

export async function run(scope) {
  const dir = await scope.tempDir('restart');
  const wav = await writeTestTones(dir);
  const port = await freePort();
  const dataDir = path.join(dir, 'data');
  let server = await startServer(scope, { port, dataDir });
  const browser = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile'), wav });
  const page = await openRecorder(browser, `${server.url}/record`);

  const restart = async (signal, label) => {
    const ended = await server.signal(signal);
    if (signal === 'SIGTERM') assert(ended.code === 0, `the server exits 0 on SIGTERM (${JSON.stringify(ended)})`);
    await page.getByTestId('connection').filter({ hasText: /^reconnecting in/ }).waitFor({ timeout: 5_000 });
    await sleep(500); // the page goes on recording while nothing answers
    server = await startServer(scope, { port, dataDir, label });
    await waitConnected(page);
  };
  const take = await timedTake(page, async () => {
    await sleep(2_000);
    await restart('SIGTERM', 'server-2');
    await sleep(2_000);
    await restart('SIGKILL', 'server-3');
    await sleep(2_000);
  });

  const id = take.id;
  const session = await getSession(server, id);
  assert(session.status === 'completed', `the session is completed (${session.status})`);
  const mic = session.tracks.find((t) => t.name === 'mic');
  assert(mic.dataBytes === (await pageOffset(page)), `no gap, no duplicate: the server holds exactly the bytes the page numbered`);
  const offsets = mic.segments.map((segment) => segment.offset);
  assert(offsets.length >= 3, `a segment per connection (${JSON.stringify(offsets)})`);
  assert(offsets[0] === 0 && offsets.every((o, i) => i === 0 || o > offsets[i - 1]), `the reconnections continue the track (${offsets})`);
  const seconds = mic.dataBytes / (mic.sampleRate * 2);
  assertWithin(seconds, take, 'the mic track');

  const audio = await downloadTrack(server, id, 'mic');
  assert(audio.dataBytes === mic.dataBytes, 'the WAV header matches the track');
  const report = toneReport(audio.samples, audio.sampleRate);
  const tones = assertHoldsTones(report, 'the mic track');
  assert(report.counts.silent === 0, 'no silent stretch where the server was away');
  assert(browser.pageErrors.length === 0, `no script error (${browser.pageErrors.join('; ')})`);
  return `${seconds.toFixed(2)} s in ${offsets.length} segments at ${offsets.join(', ')}; tones ${tones}`;
}
