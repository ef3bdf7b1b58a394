// Scenario 5: a remote guest. Two browsers with their own profiles and microphones (440 Hz for
// the host, 660 Hz for the guest): the host starts and invites Sam, Sam joins from the link;
// Sam's browser is killed (SIGKILL) and the roster shows Sam gone; Sam reopens the link in a
// new browser with the same profile and the page uploads what it kept; the host's Stop stops
// everyone and the session completes by itself. Each track holds only its own voice, for as
// long as each recorded. `guestScenario` is the same with options: guest-over-tls runs it over
// HTTPS and WSS.

import path from 'node:path';
import {
  assert, freePort, getSession, launchBrowser, selfSignedCert, sleep, startServer, waitFor,
} from '../lib/harness.mjs';
import {
  assertOnlyTone, downloadTrack, inviteGuest, joinAsGuest, openRecorder, participant, startRecording,
  waitConnected, waitGuestState, writeTone,
} from '../lib/pages.mjs';

export const name = 'guest-crash-reopen-and-stop-for-everyone';
export const timeoutMs = 120_000;

/** The brief's bound: each track lasts the time its person recorded, within half a second. */
const WITHIN_S = 0.5;

export async function run(scope) {
  return (await guestScenario(scope)).detail;
}

/**
 * The scenario; with `tls`, the server serves a self-signed certificate made here, which the
 * browsers trust by its key. Returns `{ detail, server, browsers }` (every browser it started).
 */
export async function guestScenario(scope, { tls = false } = {}) {
  const dir = await scope.tempDir('guest');
  const hostTone = await writeTone(dir, 440);
  const guestTone = await writeTone(dir, 660);
  const cert = tls ? await selfSignedCert(dir) : null;
  const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data'), tls: cert });
  const extraFlags = cert ? [`--ignore-certificate-errors-spki-list=${cert.spki}`] : [];
  const launch = (options) => launchBrowser(scope, { ...options, extraFlags });
  const hostBrowser = await launch({ userDataDir: path.join(dir, 'host'), wav: hostTone, label: 'host' });
  const samProfile = path.join(dir, 'sam');

  const host = await openRecorder(hostBrowser, `${server.url}/record`);
  await host.locator('#title').fill('Interview with Sam');
  const hostClicked = performance.now();
  const id = await startRecording(host);
  const hostConnected = performance.now();
  const url = await inviteGuest(host, 'Sam');
  await participant(host, 'sam').waitFor();

  // Sam's first browser: joins, records 5 s, then dies.
  const samBrowser = await launch({ userDataDir: samProfile, wav: guestTone, label: 'sam-1' });
  const sam = await samBrowser.newPage();
  await sam.goto(url);
  const title = await sam.locator('h1').textContent();
  assert(title.includes('Interview with Sam'), `the guest page names the session (${title})`);
  const joined = await joinAsGuest(sam);
  await host.locator('[data-testid=participant][data-track=sam][data-connected=true]').waitFor();
  await sleep(5_000);
  await samBrowser.kill();
  const killed = performance.now();
  await host.locator('[data-testid=participant][data-track=sam][data-connected=false]').waitFor({ timeout: 10_000 });
  const gone = await participant(host, 'sam').textContent();
  assert(/Sam/.test(gone), `the roster names Sam (${gone})`);

  // 5 s later, the same link in a new browser process with the same profile.
  await sleep(5_000);
  const samAgainBrowser = await launch({ userDataDir: samProfile, wav: guestTone, label: 'sam-2' });
  const samAgain = await samAgainBrowser.newPage();
  await samAgain.goto(url);
  await waitConnected(samAgain);
  await host.locator('[data-testid=participant][data-track=sam][data-connected=true]').waitFor();
  // Sam's audio began between the Join click and "recording"; the last chunk or two before
  // the kill may not have reached IndexedDB.
  const samRecordedMin = (killed - joined.recording) / 1000 - 0.2;
  const samRecordedMax = (killed - joined.clicked) / 1000;
  // The page resends what the crash left unacked; the roster then shows nothing left unsaved.
  await waitFor(async () => {
    const sam = (await getSession(server, id)).tracks.find((t) => t.name === 'sam');
    return sam && sam.durationMs / 1000 >= samRecordedMin - WITHIN_S;
  }, { timeout: 10_000, what: "Sam's kept audio to reach the server" });
  await waitGuestState(samAgain, 'ready');

  // The host stops everyone.
  const beforeStop = performance.now();
  await host.getByTestId('stop').click();
  const afterStop = performance.now();
  await host.getByTestId('result').waitFor({ state: 'visible', timeout: 20_000 });
  const stopTook = (performance.now() - afterStop) / 1000;
  await waitGuestState(samAgain, 'saved');

  const session = await getSession(server, id);
  assert(session.status === 'completed', `the session completed by itself (${session.status})`);
  const names = session.tracks.map((t) => t.name).sort().join(',');
  assert(names === 'mic,sam', `the session holds mic and sam (${names})`);
  const samTrack = session.tracks.find((t) => t.name === 'sam');
  assert(samTrack.participant === 'Sam', `sam's track is Sam's (${samTrack.participant})`);
  assert(session.tracks.every((t) => t.done), 'every track is done');

  const result = {};
  for (const [track, hz, other] of [['mic', 440, 660], ['sam', 660, 440]]) {
    const stored = session.tracks.find((t) => t.name === track);
    const audio = await downloadTrack(server, id, track);
    assert(audio.dataBytes === stored.dataBytes, `${track}: the WAV header matches the data (${audio.dataBytes} vs ${stored.dataBytes})`);
    assert(audio.sampleRate === stored.sampleRate && audio.channels === 1 && audio.bits === 16, `${track}: the header has the track's format`);
    result[track] = { seconds: audio.dataBytes / (audio.sampleRate * 2), tones: assertOnlyTone(audio, hz, other, `the ${track} track`) };
  }
  // The host's audio flows from the moment the microphone runs (before "connected") to Stop.
  const mic = result.mic.seconds;
  const micMin = (beforeStop - hostConnected) / 1000;
  const micMax = (afterStop - hostClicked) / 1000;
  assert(mic >= micMin - WITHIN_S && mic <= micMax + WITHIN_S, `mic lasts ${mic.toFixed(2)} s, the host recorded ${micMin.toFixed(2)}..${micMax.toFixed(2)} s`);
  const samSeconds = result.sam.seconds;
  assert(
    samSeconds >= samRecordedMin - WITHIN_S && samSeconds <= samRecordedMax + WITHIN_S,
    `sam lasts ${samSeconds.toFixed(2)} s, Sam recorded ${samRecordedMin.toFixed(2)}..${samRecordedMax.toFixed(2)} s`,
  );
  const errors = [...hostBrowser.pageErrors, ...samAgainBrowser.pageErrors];
  assert(errors.length === 0, `no script error (${errors.join('; ')})`);
  const detail = `mic ${mic.toFixed(2)} s ${result.mic.tones}, sam ${samSeconds.toFixed(2)} s ${result.sam.tones}; Stop completed the session in ${stopTook.toFixed(1)} s`;
  return { detail, server, browsers: [hostBrowser, samBrowser, samAgainBrowser] };
}
