// Scenario 6: a guest whose network goes away (a relay in front of the server cuts Sam's
// connections only). Stop while Sam is offline: the session waits, the roster says for whom;
// Sam comes back and the session completes by itself. Then a second session is marked complete
// while Sam still holds audio: Sam's page says how much and offers it as a WAV download, which
// holds Sam's tone. A revoked invite's link, and a completed session's, show the ended page.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseWav } from '../lib/audio.mjs';
import { assert, freePort, getSession, launchBrowser, sleep, startServer } from '../lib/harness.mjs';
import {
  assertOnlyTone, downloadTrack, inviteGuest, joinAsGuest, openRecorder, participant, startRecording,
  waitGuestState, writeTone,
} from '../lib/pages.mjs';
import { startRelay } from '../lib/proxy.mjs';

export const name = 'guest-offline-stop-waits-and-finish-offers-the-rest';
export const timeoutMs = 150_000;

export async function run(scope) {
  const dir = await scope.tempDir('offline');
  const hostTone = await writeTone(dir, 440);
  const guestTone = await writeTone(dir, 660);
  const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data') });
  const relay = await startRelay(scope, server.port);
  const hostBrowser = await launchBrowser(scope, { userDataDir: path.join(dir, 'host'), wav: hostTone, label: 'host' });
  const samBrowser = await launchBrowser(scope, { userDataDir: path.join(dir, 'sam'), wav: guestTone, label: 'sam' });

  // 1. Stop while Sam is offline: the session waits for Sam, and completes when Sam is back.
  const host = await openRecorder(hostBrowser, `${server.url}/record`);
  const first = await startRecording(host);
  const sam = await samBrowser.newPage();
  const pendingUrl = await inviteGuest(host, 'Sam');
  await sam.goto(relay.via(pendingUrl));
  await joinAsGuest(sam);
  await sleep(2_000);
  relay.cut();
  await host.locator('[data-testid=participant][data-track=sam][data-connected=false]').waitFor({ timeout: 10_000 });
  await sleep(2_000);
  const held = Number.parseFloat(await sam.getByTestId('unacked').textContent());
  assert(held >= 1.5, `Sam's page holds the audio the server has not got (${held} s)`);
  await host.getByTestId('stop').click();
  const waiting = host.locator('.stop-wait');
  await waiting.waitFor({ state: 'visible' });
  await sleep(2_000);
  const text = await waiting.textContent();
  assert(/Waiting for Sam/.test(text), `the roster says the session waits for Sam (${text})`);
  const pending = await getSession(server, first);
  assert(pending.status !== 'completed' && pending.stopRequestedAt, `the session waits, stop pending (${pending.status})`);
  const cameBack = performance.now();
  relay.restore();
  await host.getByTestId('result').waitFor({ state: 'visible', timeout: 30_000 });
  const completedAfter = (performance.now() - cameBack) / 1000;
  await waitGuestState(sam, 'saved');
  const done = await getSession(server, first);
  assert(done.status === 'completed', `the session completed by itself once Sam was back (${done.status})`);
  const samAudio = await downloadTrack(server, first, 'sam');
  const samTones = assertOnlyTone(samAudio, 660, 440, "Sam's track");
  assert(samAudio.dataBytes / (samAudio.sampleRate * 2) > 3.5, 'the offline audio reached the server');
  await sam.close();
  const samUrl = relay.via(pendingUrl);
  const ended = await samBrowser.newPage();
  await ended.goto(samUrl);
  await waitGuestState(ended, 'ended');
  await ended.close();

  // 2. Mark complete while Sam still holds audio: the page offers the rest as a WAV file.
  await host.goto(`${server.url}/record`);
  const second = await startRecording(host);
  // Alex's invite, revoked before Alex came: the link shows the ended page.
  const alexUrl = await inviteGuest(host, 'Alex');
  await participant(host, 'alex').getByTestId('revoke').click();
  await participant(host, 'alex').waitFor({ state: 'detached' });
  const alex = await samBrowser.newPage();
  await alex.goto(alexUrl);
  await waitGuestState(alex, 'ended');
  await alex.close();
  const samAgain = await samBrowser.newPage();
  await samAgain.goto(relay.via(await inviteGuest(host, 'Sam')));
  await joinAsGuest(samAgain);
  await sleep(1_500);
  relay.cut();
  await sleep(2_000);
  await host.getByTestId('stop').click();
  await host.getByTestId('mark-complete').click();
  await host.getByTestId('result').waitFor({ state: 'visible', timeout: 15_000 });
  relay.restore();
  await waitGuestState(samAgain, 'ended', 20_000);
  const rescue = samAgain.getByTestId('download-rest');
  await rescue.waitFor();
  const said = await samAgain.locator('.rescue').textContent();
  const [download] = await Promise.all([samAgain.waitForEvent('download'), rescue.click()]);
  const file = path.join(dir, 'rest.wav');
  await download.saveAs(file);
  const rest = parseWav(await readFile(file));
  const restSeconds = rest.dataBytes / (rest.sampleRate * 2);
  const offered = Number(await samAgain.locator('.rescue').getAttribute('data-seconds'));
  assert(Math.abs(restSeconds - offered) < 0.01, `the file holds what the page said (${restSeconds} vs ${offered} s: ${said})`);
  assert(restSeconds >= 1.5, `the rest holds the offline audio (${restSeconds.toFixed(2)} s)`);
  const restTones = assertOnlyTone(rest, 660, 440, 'the downloaded rest');
  const onServer = (await getSession(server, second)).tracks.find((t) => t.name === 'sam');
  assert(onServer && onServer.dataBytes > 0, 'what Sam sent before the cut is on the server');

  const errors = [...hostBrowser.pageErrors, ...samBrowser.pageErrors];
  assert(errors.length === 0, `no script error (${errors.join('; ')})`);
  return `stop waited for Sam and completed ${completedAfter.toFixed(1)} s after Sam was back (${samTones}); ` +
    `the rest offered was ${restSeconds.toFixed(2)} s of ${restTones}`;
}
