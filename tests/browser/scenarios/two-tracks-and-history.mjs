// Scenario 3: a second source records as a second track of the same session; the history page
// shows both with players and downloads, marks a session complete and deletes one, and shows a
// hostile title as text.

import { access } from 'node:fs/promises';
import path from 'node:path';
import { assertHoldsTones, toneReport } from '../lib/audio.mjs';
import { api, assert, freePort, getSession, launchBrowser, sleep, startServer, waitForStatus } from '../lib/harness.mjs';
import {
  assertWithin, downloadTrack, openRecorder, pageOffset, sessionCard, timedTake, writeTestTones,
} from '../lib/pages.mjs';

export const name = 'two-tracks-and-history-actions';

const HOSTILE = '<script>alert(1)</script>';

export async function run(scope) {
  const dir = await scope.tempDir('history');
  const wav = await writeTestTones(dir);
  const dataDir = path.join(dir, 'data');
  const server = await startServer(scope, { port: await freePort(), dataDir });
  const browser = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile'), wav });

  const recorder = await openRecorder(browser, `${server.url}/record`);
  await recorder.locator('#title').fill('Two voices');
  let guestRecorded;
  const micTake = await timedTake(recorder, async () => {
    // The devices have names once the microphone is allowed, that is after Start.
    await recorder.locator('#second-source option', { hasText: 'Fake Audio Input 1' }).waitFor({ state: 'attached' });
    await recorder.locator('#second-source').selectOption({ label: 'Fake Audio Input 1' });
    await recorder.locator('[data-testid=track][data-track=guest][data-state=connected]').waitFor();
    const guestConnected = performance.now();
    await sleep(2_500);
    guestRecorded = (performance.now() - guestConnected) / 1000;
  });
  const id = micTake.id;
  const recorded = await getSession(server, id);
  assert(recorded.status === 'completed', 'the two-track session is completed');
  const names = recorded.tracks.map((t) => t.name).sort();
  assert(JSON.stringify(names) === '["guest","mic"]', `the session has tracks mic and guest (${names})`);
  for (const track of recorded.tracks) {
    assert(track.dataBytes === (await pageOffset(recorder, track.name)), `${track.name}: the server holds what the page numbered`);
    const audio = await downloadTrack(server, id, track.name);
    assertHoldsTones(toneReport(audio.samples, audio.sampleRate), `track ${track.name}`);
  }
  const [guest, mic] = ['guest', 'mic'].map((name) => recorded.tracks.find((t) => t.name === name));
  assertWithin(mic.dataBytes / (mic.sampleRate * 2), micTake, 'the mic track');
  // The guest joined mid-take: it lasts from its "connected" to Stop, and less than the mic.
  assertWithin(guest.dataBytes / (guest.sampleRate * 2), { min: guestRecorded, max: micTake.max }, 'the guest track');
  assert(guest.dataBytes < mic.dataBytes, 'the guest track is shorter than the mic track');

  const hostile = await api(server, 'POST', '/api/sessions', { title: HOSTILE });
  await waitForStatus(server, hostile.id, 'incomplete');

  const history = await browser.newPage();
  const dialogs = [];
  history.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  await history.goto(server.url);
  const banner = history.getByTestId('recovery-banner');
  assert((await banner.textContent()).includes('1 interrupted recording'), 'the banner counts the interrupted session');
  const hostileCard = sessionCard(history, hostile.id);
  assert((await hostileCard.locator('.session-title').textContent()) === HOSTILE, 'the hostile title shows as text');
  assert((await history.locator('script').count()) === 1, 'the title added no script to the page');

  const card = sessionCard(history, id);
  assert((await card.getAttribute('data-status')) === 'completed', 'the recorded session shows as completed');
  assert((await card.getByTestId('finish').count()) === 0, 'a completed session cannot be marked complete again');
  await card.locator('summary').click();
  for (const track of recorded.tracks) {
    const item = card.locator(`.track[data-track="${track.name}"]`);
    const playable = await item.locator('audio').evaluate(loadedDuration);
    assert(Math.abs(playable - track.durationMs / 1000) < 0.05, `${track.name}'s player reads ${playable} s`);
    const href = await item.getByRole('link', { name: 'Download' }).getAttribute('href');
    const response = await history.request.get(`${server.url}${href}`);
    assert(response.ok() && (await response.body()).length === track.sizeBytes, `${track.name} downloads whole`);
  }

  await hostileCard.getByTestId('finish').click();
  await history.locator(`[data-testid=session][data-session-id="${hostile.id}"][data-status=completed]`).waitFor();
  assert((await history.getByTestId('recovery-banner').count()) === 0, 'no interrupted session left: no banner');

  const remove = sessionCard(history, id).getByTestId('delete');
  await remove.click();
  assert((await remove.textContent()).includes('again'), 'Delete asks for a second click');
  await remove.click();
  await sessionCard(history, id).waitFor({ state: 'detached' });
  const gone = await fetch(`${server.url}/api/session/${id}`);
  assert(gone.status === 404, `the deleted session is gone (${gone.status})`);
  const dirGone = await access(path.join(dataDir, 'sessions', id)).then(() => false, () => true);
  assert(dirGone, 'its files are gone');

  assert(dialogs.length === 0, `no dialog opened (${dialogs})`);
  assert(browser.pageErrors.length === 0, `no script error (${browser.pageErrors.join('; ')})`);
  return `mic ${mic.durationMs} ms, guest ${guest.durationMs} ms`;
}

/** In the page: makes a `preload="none"` player fetch its header, and reads its duration. */
function loadedDuration(audio) {
  return new Promise((resolve, reject) => {
    audio.addEventListener('loadedmetadata', () => resolve(audio.duration), { once: true });
    audio.addEventListener('error', () => reject(new Error(`the player failed: ${audio.error?.message}`)), { once: true });
    audio.preload = 'metadata';
    audio.load();
  });
}
