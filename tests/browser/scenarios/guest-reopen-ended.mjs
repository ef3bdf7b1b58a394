// Scenario: a guest comes back to an ended link. Sam records while offline (a relay cuts Sam's
// connections only), the host stops and marks the session complete without Sam's last seconds,
// and Sam's browser dies (SIGKILL) before it could learn. Sam reopens the link in a new browser
// with the same profile: the page says the recording ended, says how much of Sam's audio this
// browser still holds, and offers it as a WAV file, which holds Sam's tone and, with what the
// server got, everything Sam recorded.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseWav } from '../lib/audio.mjs';
import { assert, freePort, getSession, launchBrowser, sleep, startServer } from '../lib/harness.mjs';
import {
  assertOnlyTone, guestOffset, inviteGuest, joinAsGuest, openRecorder, startRecording, waitGuestState, writeTone,
} from '../lib/pages.mjs';
import { startRelay } from '../lib/proxy.mjs';

export const name = 'guest-reopens-an-ended-link-and-downloads-the-rest';
export const timeoutMs = 120_000;

export async function run(scope) {
  const dir = await scope.tempDir('reopen-ended');
  const hostTone = await writeTone(dir, 440);
  const guestTone = await writeTone(dir, 660);
  const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data') });
  const relay = await startRelay(scope, server.port);
  const samProfile = path.join(dir, 'sam');
  const hostBrowser = await launchBrowser(scope, { userDataDir: path.join(dir, 'host'), wav: hostTone, label: 'host' });
  const samBrowser = await launchBrowser(scope, { userDataDir: samProfile, wav: guestTone, label: 'sam-1' });

  const host = await openRecorder(hostBrowser, `${server.url}/record`);
  const id = await startRecording(host);
  // Sam's link through the relay: the same origin (and so the same spool) when Sam comes back.
  const url = relay.via(await inviteGuest(host, 'Sam'));
  const sam = await samBrowser.newPage();
  await sam.goto(url);
  await joinAsGuest(sam);
  await sleep(1_500);
  relay.cut();
  await sleep(3_000);
  const held = Number.parseFloat(await sam.getByTestId('unacked').textContent());
  assert(held >= 2.5, `Sam's page holds the audio the server has not got (${held} s)`);

  // The host ends it without Sam's last seconds; then Sam's browser dies.
  await host.getByTestId('stop').click();
  await host.getByTestId('mark-complete').click();
  await host.getByTestId('result').waitFor({ state: 'visible', timeout: 15_000 });
  const numbered = await guestOffset(sam);
  await samBrowser.kill();
  const session = await getSession(server, id);
  assert(session.status === 'completed', `the host completed the session (${session.status})`);
  const onServer = session.tracks.find((t) => t.name === 'sam');
  assert(onServer && onServer.dataBytes > 0, 'what Sam sent before the cut is on the server');

  // Sam reopens the link, network back, in a new browser with the same profile.
  relay.restore();
  const samAgainBrowser = await launchBrowser(scope, { userDataDir: samProfile, wav: guestTone, label: 'sam-2' });
  const again = await samAgainBrowser.newPage();
  const response = await again.goto(url);
  assert(response.status() === 410, `the link of a completed session answers 410 (${response.status()})`);
  const rescue = again.getByTestId('download-rest');
  await rescue.waitFor({ timeout: 10_000 });
  await waitGuestState(again, 'ended');
  const said = await again.locator('.rescue').textContent();
  const offered = Number(await again.locator('.rescue').getAttribute('data-seconds'));
  assert(new RegExp(`${offered.toFixed(1)} s of your recording did not reach the host`).test(said), `the page says how much (${said})`);
  assert(await again.getByTestId('join').isHidden(), 'an ended page offers no Join');

  const [download] = await Promise.all([again.waitForEvent('download'), rescue.click()]);
  const file = path.join(dir, 'rest.wav');
  await download.saveAs(file);
  const rest = parseWav(await readFile(file)); // fails unless the header matches the data
  assert(rest.channels === 1 && rest.bits === 16 && rest.sampleRate === onServer.sampleRate, "the file has the track's format");
  const restSeconds = rest.dataBytes / (rest.sampleRate * 2);
  assert(Math.abs(restSeconds - offered) < 0.01, `the file holds what the page said (${restSeconds} vs ${offered} s)`);
  assert(restSeconds >= 2.5, `the file holds the offline seconds (${restSeconds.toFixed(2)} s)`);
  const tones = assertOnlyTone(rest, 660, 440, 'the downloaded rest');
  // The file begins where the server's track ends: no gap (an ack lost to the cut may let the
  // two share a chunk, never more); with it nothing Sam recorded is missing (a crash may lose
  // the last chunk or two before they reached IndexedDB; the page's counter lags up to 200 ms
  // and Sam recorded on until the kill, so more than `numbered` is allowed by as much).
  const bytesPerSecond = rest.sampleRate * 2;
  const startsAt = Number(await again.locator('.rescue').getAttribute('data-offset'));
  const overlap = (onServer.dataBytes - startsAt) / bytesPerSecond;
  assert(overlap >= 0 && overlap <= 0.25, `the file starts where the server's track ends (at ${startsAt}, the server has ${onServer.dataBytes} bytes)`);
  const together = (startsAt + rest.dataBytes) / bytesPerSecond;
  const recorded = numbered / bytesPerSecond;
  assert(
    together >= recorded - 0.3 && together <= recorded + 0.4,
    `server ${(startsAt / bytesPerSecond).toFixed(2)} s + file ${restSeconds.toFixed(2)} s = ${together.toFixed(2)} s of the ${recorded.toFixed(2)} s Sam recorded`,
  );
  const name = download.suggestedFilename();
  const from = Math.floor(startsAt / bytesPerSecond);
  assert(name === `sam-from-${from}s.wav`, `the file is named for where it starts (${name}, it starts at ${from} s)`);

  const errors = [...hostBrowser.pageErrors, ...samAgainBrowser.pageErrors];
  assert(errors.length === 0, `no script error (${errors.join('; ')})`);
  return `the reopened ended link offered ${restSeconds.toFixed(2)} s (${tones}); server + file = ${together.toFixed(2)} of ${recorded.toFixed(2)} s, overlap ${overlap.toFixed(3)} s`;
}
