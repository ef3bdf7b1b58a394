// One timeline, end to end: a host and a guest in two Chromium instances (440 Hz and 660 Hz
// fake microphones). The guest clicks Join 3 s after the host's first captured sample, records
// ~5 s, crashes (SIGKILL), comes back 5 s later through the same link and joins again; the host
// stops everyone. The aligned export's guest track begins with the silence its capture times
// give (within 30 ms; that lead itself lies between 3 s and 3 s plus the guest page's start-up
// from the Join click), is silent from the crash to the second Join and holds the guest's tone
// where it recorded; both tracks have one length. The export as recorded holds every track
// byte for byte as stored.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseWav, toneReport } from '../lib/audio.mjs';
import { assert, freePort, getSession, launchBrowser, sleep, startServer, waitFor } from '../lib/harness.mjs';
import {
  inviteGuest, joinAsGuest, openRecorder, participant, startRecording, waitConnected, waitGuestState, writeTone,
} from '../lib/pages.mjs';

export const name = 'aligned-export-of-a-late-guest-who-crashed';
export const timeoutMs = 120_000;

const TOLERANCE_MS = 30;
const JOIN_AFTER_MS = 3_000;

/** The test's clock as the server's (one machine): performance.now() moments as epoch ms. */
const wallOf = (moment) => Date.now() - (performance.now() - moment);

/** The entries of a ZIP as `{ name: Buffer }`, by its central directory (stored entries only). */
function unzip(buffer) {
  let end = buffer.length - 22;
  while (end >= 0 && buffer.readUInt32LE(end) !== 0x06054b50) end -= 1;
  assert(end >= 0, 'the export is a ZIP (no end of central directory)');
  const count = buffer.readUInt16LE(end + 10);
  let at = buffer.readUInt32LE(end + 16);
  const entries = {};
  for (let i = 0; i < count; i += 1) {
    assert(buffer.readUInt32LE(at) === 0x02014b50, 'a central directory entry');
    const method = buffer.readUInt16LE(at + 10);
    const size = buffer.readUInt32LE(at + 20);
    const nameLength = buffer.readUInt16LE(at + 28);
    const extraLength = buffer.readUInt16LE(at + 30);
    const commentLength = buffer.readUInt16LE(at + 32);
    const local = buffer.readUInt32LE(at + 42);
    const entryName = buffer.toString('utf8', at + 46, at + 46 + nameLength);
    assert(method === 0, `${entryName} is stored`);
    const dataAt = local + 30 + buffer.readUInt16LE(local + 26) + buffer.readUInt16LE(local + 28);
    entries[entryName] = buffer.subarray(dataAt, dataAt + size);
    at += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

async function download(server, id, query) {
  const response = await fetch(`${server.url}/api/session/${id}/export.zip${query}`);
  assert(response.ok, `export.zip${query} answers ${response.status}`);
  return unzip(Buffer.from(await response.arrayBuffer()));
}

async function marksOf(server, id, track) {
  const response = await fetch(`${server.url}/api/session/${id}/tracks/${track}/marks`);
  return response.ok ? (await response.json()).marks : [];
}

/** When a track's first sample was captured, by its first mark (mono s16 at `rate`). */
const firstSampleAt = (marks, rate) => marks[0].capturedAt - (marks[0].offset / 2 / rate) * 1000;

/** Samples `fromMs..toMs` of a mono track at `rate` are all zero. */
function silentBetween({ samples, sampleRate }, fromMs, toMs) {
  const perMs = sampleRate / 1000;
  const from = Math.max(0, Math.ceil(fromMs * perMs));
  const to = Math.min(samples.length, Math.floor(toMs * perMs));
  for (let i = from; i < to; i += 1) if (samples[i] !== 0) return { silent: false, at: i / perMs };
  return { silent: true };
}

/** The share of 100 ms windows in `fromMs..toMs` that hold `hz`. */
function toneShare({ samples, sampleRate }, hz, fromMs, toMs) {
  const perMs = sampleRate / 1000;
  const part = samples.subarray(Math.round(fromMs * perMs), Math.round(toMs * perMs));
  const report = toneReport(part, sampleRate, [hz]);
  return report.windows.length ? report.counts[hz] / report.windows.length : 0;
}

export async function run(scope) {
  const dir = await scope.tempDir('aligned');
  const hostTone = await writeTone(dir, 440);
  const guestTone = await writeTone(dir, 660);
  const dataDir = path.join(dir, 'data');
  const server = await startServer(scope, { port: await freePort(), dataDir });
  const hostBrowser = await launchBrowser(scope, { userDataDir: path.join(dir, 'host'), wav: hostTone, label: 'host' });
  const samProfile = path.join(dir, 'sam');

  const host = await openRecorder(hostBrowser, `${server.url}/record`);
  const id = await startRecording(host);
  const url = await inviteGuest(host, 'Sam');
  await participant(host, 'sam').waitFor();
  const hostMarks = await waitFor(async () => {
    const marks = await marksOf(server, id, 'mic');
    return marks.length > 0 && marks;
  }, { timeout: 10_000, what: "the host's first mark" });
  const hostRate = (await getSession(server, id)).tracks.find((t) => t.name === 'mic').sampleRate;
  const hostStart = firstSampleAt(hostMarks, hostRate);

  const samBrowser = await launchBrowser(scope, { userDataDir: samProfile, wav: guestTone, label: 'sam-1' });
  const sam = await samBrowser.newPage();
  await sam.goto(url);
  await waitGuestState(sam, 'ready');
  const wait = hostStart + JOIN_AFTER_MS - Date.now();
  assert(wait > 0, `the guest page was ready within 3 s of the host's start (${(-wait).toFixed(0)} ms late)`);
  await sleep(wait);
  const joined = await joinAsGuest(sam);
  const [joinClicked, joinRecording] = [wallOf(joined.clicked), wallOf(joined.recording)];
  await host.locator('[data-testid=participant][data-track=sam][data-connected=true]').waitFor();
  await sleep(5_000);
  await samBrowser.kill();
  const killed = Date.now();
  await host.locator('[data-testid=participant][data-track=sam][data-connected=false]').waitFor({ timeout: 10_000 });

  await sleep(5_000);
  const samAgainBrowser = await launchBrowser(scope, { userDataDir: samProfile, wav: guestTone, label: 'sam-2' });
  const samAgain = await samAgainBrowser.newPage();
  await samAgain.goto(url);
  await waitConnected(samAgain);
  await waitGuestState(samAgain, 'ready');
  const rejoined = await joinAsGuest(samAgain);
  const [rejoinClicked, rejoinRecording] = [wallOf(rejoined.clicked), wallOf(rejoined.recording)];
  await sleep(3_000);
  const beforeStop = Date.now();
  await host.getByTestId('stop').click();
  await host.getByTestId('result').waitFor({ state: 'visible', timeout: 20_000 });
  await waitGuestState(samAgain, 'saved');
  const session = await getSession(server, id);
  assert(session.status === 'completed', `the session completed (${session.status})`);

  // As recorded: every track byte for byte as stored.
  const asRecorded = await download(server, id, '');
  for (const track of session.tracks) {
    const stored = await readFile(path.join(dataDir, track.path));
    const exported = asRecorded[`${track.name}.wav`];
    assert(exported && exported.equals(stored), `${track.name}.wav in export.zip is the stored file (${exported?.length} vs ${stored.length} bytes)`);
  }

  // Aligned.
  const aligned = await download(server, id, '?aligned=true');
  const timeline = JSON.parse(aligned['session.json'].toString('utf8')).timeline;
  const mic = parseWav(aligned['mic.wav']);
  const guest = parseWav(aligned['sam.wav']);
  for (const [track, audio] of [['mic', mic], ['sam', guest]]) {
    const stored = session.tracks.find((t) => t.name === track);
    assert(audio.sampleRate === stored.sampleRate && audio.channels === 1 && audio.bits === 16, `${track} keeps its format (${audio.sampleRate} Hz)`);
  }
  const seconds = (audio) => audio.samples.length / audio.sampleRate;
  assert(
    Math.abs(seconds(mic) - seconds(guest)) <= 1 / Math.min(mic.sampleRate, guest.sampleRate),
    `one length (${seconds(mic)} s vs ${seconds(guest)} s)`,
  );
  const start = timeline.startMs;
  const samMarks = await marksOf(server, id, 'sam');
  assert(samMarks.length >= 3, `the guest's pages marked their audio (${samMarks.length} marks)`);
  const expectedLead = firstSampleAt(samMarks, guest.sampleRate) - start;
  const firstSound = (guest.samples.findIndex((s) => s !== 0) / guest.sampleRate) * 1000;
  assert(
    Math.abs(firstSound - expectedLead) <= TOLERANCE_MS,
    `the guest track begins after ${firstSound.toFixed(1)} ms of silence; its first sample was captured ${expectedLead.toFixed(1)} ms after the session's first (±${TOLERANCE_MS})`,
  );
  const leadMin = joinClicked - start - TOLERANCE_MS;
  const leadMax = joinRecording - start + TOLERANCE_MS;
  assert(
    firstSound >= leadMin && firstSound <= leadMax,
    `the guest clicked Join ${(joinClicked - start).toFixed(0)} ms after the host's first sample and recorded from ${(joinRecording - start).toFixed(0)} ms; its track begins at ${firstSound.toFixed(0)} ms`,
  );
  // Nothing from the crash to the second Join, the guest's tone before and after.
  const gap = silentBetween(guest, killed - start + 50, rejoinClicked - start - 50);
  assert(gap.silent, `the guest track is silent from the crash to the second Join (sound at ${gap.at?.toFixed(0)} ms; crash at ${(killed - start).toFixed(0)}, rejoin at ${(rejoinClicked - start).toFixed(0)})`);
  const before = toneShare(guest, 660, joinRecording - start + 300, killed - start - 1_000);
  const after = toneShare(guest, 660, rejoinRecording - start + 300, beforeStop - start - 300);
  assert(before >= 0.9 && after >= 0.9, `the guest's tone where it recorded (${(before * 100).toFixed(0)} % before the crash, ${(after * 100).toFixed(0)} % after)`);
  const hostShare = toneShare(mic, 440, 500, beforeStop - start - 300);
  assert(hostShare >= 0.9, `the host's tone throughout (${(hostShare * 100).toFixed(0)} %)`);
  const errors = [...hostBrowser.pageErrors, ...samAgainBrowser.pageErrors];
  assert(errors.length === 0, `no script error (${errors.join('; ')})`);
  return `guest track begins after ${firstSound.toFixed(1)} ms of silence (marks say ${expectedLead.toFixed(1)}, Join clicked at ${(joinClicked - start).toFixed(0)} ms), silent ${((rejoinClicked - killed) / 1000).toFixed(1)} s across the crash; ${seconds(mic).toFixed(3)} s each at ${mic.sampleRate} Hz; export as recorded byte-identical`;
}
