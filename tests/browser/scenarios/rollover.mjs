// Scenario 8: a track reaches 4 GiB while the recorder records. The file is made nearly full
// without writing it (a sparse file, repaired when the track is next opened, as the API test
// of 4413 does); the resumed take fills the last second, the server refuses the next frame
// with 4413, and the recorder goes on in `mic-2` at once: the take's audio is all there, in
// the two tracks together, with no silence where one ends and the other begins.

import { open } from 'node:fs/promises';
import path from 'node:path';
import { assertHoldsTones, toneReport } from '../lib/audio.mjs';
import { assert, freePort, getSession, launchBrowser, sleep, startServer, trackOf, waitForStatus } from '../lib/harness.mjs';
import { assertWithin, downloadTrack, openRecorder, startRecording, timedTake, writeTestTones } from '../lib/pages.mjs';

export const name = 'full-track-rolls-over-to-mic-2';
export const timeoutMs = 120_000;

/** The most PCM a WAV's 32-bit size fields allow, as the server counts it. */
const MAX_DATA = 2 ** 32 - 1 - 36 - 1;

export async function run(scope) {
  const dir = await scope.tempDir('rollover');
  const wav = await writeTestTones(dir);
  const dataDir = path.join(dir, 'data');
  const server = await startServer(scope, { port: await freePort(), dataDir });

  const first = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile-1'), wav, label: 'browser-1' });
  const page = await openRecorder(first, `${server.url}/record`);
  const id = await startRecording(page);
  await sleep(1_000);
  await first.kill();
  await waitForStatus(server, id, 'incomplete');

  // One second of room left in the track.
  const mic = await trackOf(server, id, 'mic');
  const byteRate = mic.sampleRate * 2;
  const roomLeft = byteRate;
  const file = await open(path.join(dataDir, mic.path), 'r+');
  await file.truncate(44 + MAX_DATA - roomLeft);
  await file.close();

  // A fresh profile: nothing kept in the browser, so the take starts where the file ends.
  const second = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile-2'), wav, label: 'browser-2' });
  const resumed = await openRecorder(second, `${server.url}/record?session=${id}`);
  await resumed.getByTestId('session-id').filter({ hasText: id }).waitFor();
  const take = await timedTake(resumed, async () => {
    await resumed.locator('[data-testid=track][data-track="mic-2"][data-state=connected]').waitFor({ timeout: 10_000 });
    await sleep(2_000);
  });

  const session = await getSession(server, id);
  assert(session.status === 'completed', `the session is completed (${session.status})`);
  const full = session.tracks.find((t) => t.name === 'mic');
  const next = session.tracks.find((t) => t.name === 'mic-2');
  assert(next, `the recorder went on in mic-2 (${session.tracks.map((t) => t.name)})`);
  const inFull = full.dataBytes - (MAX_DATA - roomLeft);
  assert(inFull > 0 && full.dataBytes <= MAX_DATA, `mic took the last of its room (${inFull} bytes, ${full.dataBytes} in all)`);
  assert(MAX_DATA - full.dataBytes < byteRate * 0.1, `mic is full: less than one chunk short of 4 GiB (${MAX_DATA - full.dataBytes} bytes)`);
  assertWithin((inFull + next.dataBytes) / byteRate, take, 'the take across mic and mic-2');
  const audio = await downloadTrack(server, id, 'mic-2');
  assert(audio.dataBytes === next.dataBytes, 'the mic-2 WAV header matches its data');
  const report = toneReport(audio.samples, audio.sampleRate);
  const tones = assertHoldsTones(report, 'mic-2');
  assert(report.windows[0] !== 'silent', 'mic-2 begins with sound, not a gap');
  assert(second.pageErrors.length === 0, `no script error (${second.pageErrors.join('; ')})`);
  return `${(inFull / byteRate).toFixed(2)} s filled mic to the brim, mic-2 holds ${(next.dataBytes / byteRate).toFixed(2)} s (${tones})`;
}
