// The recorder and history pages as a person uses them, through the contract's data-testid
// hooks, plus reading what the page itself counts (each track row's `data-offset`).

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tones, wavFile, parseWav } from './audio.mjs';
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
  const response = await fetch(`${server.url}/api/session/${id}/tracks/${track}.wav`);
  assert(response.ok, `GET ${track}.wav answers ${response.status}`);
  assert(response.headers.get('content-type') === 'audio/wav', 'a track is served as audio/wav');
  return parseWav(Buffer.from(await response.arrayBuffer()));
}

/** A session element of the history page, found by its id. */
export const sessionCard = (page, id) => page.locator(`[data-testid=session][data-session-id="${id}"]`);
