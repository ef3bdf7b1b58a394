// The recorder and history pages as a person uses them, through the contract's data-testid
// hooks, plus reading what the page itself counts (each track row's `data-offset`).

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseWav, toneReport, tones, wavFile } from './audio.mjs';
import { assert } from './harness.mjs';

/** The fake microphone: 440 Hz and 880 Hz by turns, a second each (Chromium loops it). */
export async function writeTestTones(dir) {
  const file = path.join(dir, 'tones.wav');
  await writeFile(file, wavFile(tones([{ hz: 440, seconds: 1 }, { hz: 880, seconds: 1 }]), 48_000));
  return file;
}

export async function openRecorder(browser, url) {
  const page = await browser.newPage();
  await page.goto(url);
  return page;
}

export async function waitConnected(page, timeout = 15_000) {
  await page.getByTestId('connection').filter({ hasText: /^connected$/ }).waitFor({ timeout });
}

/** Clicks Start and waits until the page streams; returns the session id. */
export async function startRecording(page) {
  await page.getByTestId('start').click();
  await waitConnected(page);
  const id = (await page.getByTestId('session-id').textContent()).trim();
  assert(/^[0-9a-f-]{36}$/.test(id), `the page shows a session id (${id})`);
  return id;
}

/** Clicks Stop and waits for the page to say every byte is saved and the session finished. */
export async function stopRecording(page, timeout = 20_000) {
  await page.getByTestId('stop').click();
  await page.getByTestId('result').waitFor({ state: 'visible', timeout });
}

/**
 * Times a take on the test's clock: `during` runs while it records. The audio captured must
 * last at least from "connected" to the Stop click, and at most from the Start click to just
 * after the Stop click (the last partial chunk): `{ id, min, max }` in seconds.
 */
export async function timedTake(page, during) {
  const clickedStart = performance.now();
  const id = await startRecording(page);
  const connected = performance.now();
  await during(id);
  const beforeStop = performance.now();
  await page.getByTestId('stop').click();
  const afterStop = performance.now();
  await page.getByTestId('result').waitFor({ state: 'visible', timeout: 20_000 });
  return { id, min: (beforeStop - connected) / 1000, max: (afterStop - clickedStart) / 1000 + STOP_SLACK_S };
}

/** After the Stop click, the worklet still hands over up to one chunk (50 ms) and its tail. */
const STOP_SLACK_S = 0.15;

/** `seconds` is within a take's bounds; 0.1 s below `min` is allowed: audio starts flowing a moment after "connected". */
export function assertWithin(seconds, { min, max }, what) {
  assert(seconds >= min - 0.1 && seconds <= max, `${what} lasts ${seconds.toFixed(2)} s, between ${min.toFixed(2)} and ${max.toFixed(2)} s`);
}

/** The offset the page's counter of `track` has reached: every byte it numbered. */
export async function pageOffset(page, track = 'mic') {
  return Number(await page.locator(`[data-testid=track][data-track="${track}"]`).getAttribute('data-offset'));
}

/** The track as the server serves it, parsed; its header must match its size. */
export async function downloadTrack(server, id, track) {
  const response = await (server.fetch ?? fetch)(`${server.url}/api/session/${id}/tracks/${track}.wav`);
  assert(response.ok, `GET ${track}.wav answers ${response.status}`);
  assert(response.headers.get('content-type') === 'audio/wav', 'a track is served as audio/wav');
  return parseWav(Buffer.from(await response.arrayBuffer()));
}

/** A session element of the history page, found by its id. */
export const sessionCard = (page, id) => page.locator(`[data-testid=session][data-session-id="${id}"]`);

// ---- guests ----

/** A fake microphone playing one steady tone, 10 s long: Chromium jumps where the file loops. */
export async function writeTone(dir, hz) {
  const file = path.join(dir, `tone-${hz}.wav`);
  await writeFile(file, wavFile(tones([{ hz, seconds: 10 }]), 48_000));
  return file;
}

/** Invites a guest from the recorder; returns the join URL the page shows. */
export async function inviteGuest(page, name) {
  const link = page.getByTestId('invite-link');
  const before = await link.inputValue().catch(() => '');
  await page.getByTestId('invite-name').fill(name);
  await page.getByTestId('invite').click();
  await waitForValue(link, (value) => value && value !== before, `the link of ${name}'s invite`);
  const url = await link.inputValue();
  assert(/^https?:\/\/[^/]+\/join\/[A-Za-z0-9_-]{22,}$/.test(url), `the invite link is an absolute join URL (${url})`);
  return url;
}

async function waitForValue(locator, accept, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await locator.inputValue().catch(() => '');
    if (accept(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The roster's element for a track. */
export const participant = (page, track) => page.locator(`[data-testid=participant][data-track="${track}"]`);

export async function waitGuestState(page, state, timeout = 15_000) {
  await page.getByTestId('guest-state').filter({ hasText: new RegExp(`^${state}$`) }).waitFor({ timeout });
}

/**
 * Clicks Join on a guest page and waits until it records and streams: returns the test's
 * clock at the click and once recording, the bounds of when the guest's audio began.
 */
export async function joinAsGuest(page) {
  await waitGuestState(page, 'ready');
  const clicked = performance.now();
  await page.getByTestId('join').click();
  await waitGuestState(page, 'recording');
  await waitConnected(page);
  return { clicked, recording: performance.now() };
}

/** The number of bytes the guest page numbered (every byte it captured into its track). */
export async function guestOffset(page) {
  return Number(await page.getByTestId('guest-state').getAttribute('data-offset'));
}

/** A recording holds one tone and nothing of the other: `{ seconds, counts }`. */
export function assertOnlyTone(audio, hz, other, what) {
  const report = toneReport(audio.samples, audio.sampleRate, [hz, other]);
  const total = report.windows.length;
  const odd = report.windows.flatMap((label, i) => (label === hz ? [] : [`${(i / 10).toFixed(1)}s:${label}`]));
  const summary = `${JSON.stringify(report.counts)}${odd.length ? ` others at ${odd.slice(0, 12).join(' ')}` : ''}`;
  assert(total > 0, `${what}: some audio`);
  assert(report.counts[other] === 0, `${what} holds none of ${other} Hz: ${summary}`);
  assert(report.counts[hz] >= total * 0.9, `${what} is ${hz} Hz throughout: ${summary}`);
  return summary;
}
