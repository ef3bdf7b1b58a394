// One timeline: the recorder tells the server when its audio was captured. It runs `clock`
// exchanges and sends `mark`s (the byte offset of a chunk and the server time of its capture,
// from the audio clock): the marks keep the audio's pace (the first within 250 ms, the rest
// within 25 ms of each other), and the first byte's capture lies
// before the first segment's `startedAt` by at most the time from Start to connected (100 ms
// allowed either way). Through an outage (the server away for ~3 s) the audio captured
// meanwhile keeps its capture time: the reconnected socket's first mark is earlier than that
// socket's segment.

import path from 'node:path';
import { assert, freePort, getSession, launchBrowser, sleep, startServer } from '../lib/harness.mjs';
import { timedTake, waitConnected, writeTestTones } from '../lib/pages.mjs';

const TOLERANCE_MS = 100;
/**
 * Marks after the first against each other: the audio clock read together with the page's
 * clock. They agree within a ms or two (seen: never more than 1 ms apart).
 */
const STEADY_MS = 25;
/**
 * The first mark against the rest. Its chunk is stamped as the audio engine starts, from the
 * first reading of the audio clock, and on this machine it sits early by the same amount for
 * every later mark: 0-30 ms usually, 90, 101 and 121 ms seen under load (an outage's server
 * restart beside two browsers on 2 cores). A known defect (see the README); what this bound
 * still catches is a mark stamped when it was sent (seconds off) or misplaced in a resend.
 */
const FIRST_MARK_MS = 250;

/** A recorder page whose sent `mark`s are noted per socket, in order: `[[mark, ...], ...]`. */
async function recorderNotingMarks(browser, url) {
  const page = await browser.newPage();
  const sockets = [];
  page.on('websocket', (socket) => {
    if (!/track=mic(&|$)/.test(socket.url())) return;
    const marks = [];
    sockets.push(marks);
    socket.on('framesent', ({ payload }) => {
      if (typeof payload !== 'string') return;
      try {
        const message = JSON.parse(payload);
        if (message.type === 'mark') marks.push({ offset: message.offset, capturedAt: message.capturedAt });
      } catch {
        // not ours to judge
      }
    });
  });
  await page.goto(url);
  return { page, sockets };
}

/** The server's marks of `mic`, or null where the server does not serve them yet. */
async function serverMarks(server, id) {
  const response = await fetch(`${server.url}/api/session/${id}/tracks/mic/marks`);
  if (response.status === 404) return null;
  assert(response.ok, `GET .../tracks/mic/marks answers ${response.status}`);
  return (await response.json()).marks;
}

/** Checks the marks against the first segment; returns them and a line for the report. */
async function checkMarks(server, id, sent, startup) {
  const session = await getSession(server, id);
  assert(session.status === 'completed', `the session is completed (${session.status})`);
  const mic = session.tracks.find((t) => t.name === 'mic');
  const bytesPerSecond = mic.sampleRate * mic.channels * 2;
  const stored = await serverMarks(server, id);
  const marks = stored ?? sent.flat();
  const source = stored ? 'stored' : 'sent (the server serves no marks yet)';
  assert(marks.length >= 2, `at least 2 marks ${source} (${marks.length})`);
  for (let i = 1; i < marks.length; i += 1) {
    assert(marks[i].offset > marks[i - 1].offset, `marks increase in offset (${JSON.stringify(marks.slice(i - 1, i + 1))})`);
    assert(marks[i].capturedAt > marks[i - 1].capturedAt, `marks increase in time (${JSON.stringify(marks.slice(i - 1, i + 1))})`);
  }
  if (stored) {
    const sentOffsets = new Set(sent.flat().map((m) => m.offset));
    assert(stored.every((m) => sentOffsets.has(m.offset)), 'the server stores the marks the page sent');
  }
  // The audio clock keeps time: between any two marks, as much time as audio (the sound card's
  // own rate; a few ms of jitter from reading the clocks). The first mark is the odd one out.
  const [anchor] = marks;
  let worst = 0;
  const errors = [];
  for (const mark of marks) {
    assert(mark.offset % 2 === 0, `a mark is block-aligned (${mark.offset})`);
    const error = mark.capturedAt - anchor.capturedAt - ((mark.offset - anchor.offset) / bytesPerSecond) * 1000;
    worst = Math.max(worst, Math.abs(error));
    errors.push(error);
    assert(Math.abs(error) <= FIRST_MARK_MS, `mark at ${mark.offset} sits ${error.toFixed(1)} ms off the first mark's timeline (${FIRST_MARK_MS} ms allowed)`);
  }
  assert(marks.length >= 3, `at least 3 marks, to compare two after the first (${marks.length})`);
  for (let i = 2; i < marks.length; i += 1) {
    const apart = errors[i] - errors[1];
    assert(Math.abs(apart) <= STEADY_MS, `mark at ${marks[i].offset} sits ${apart.toFixed(1)} ms off the second mark's timeline (${STEADY_MS} ms allowed)`);
  }
  // And on the server's clock: the first byte was captured when Start was clicked, so before the
  // socket attached (the session is made and the socket opened meanwhile), by no more than that took.
  const attached = Date.parse(mic.segments[0].startedAt);
  const startAt = anchor.capturedAt - (anchor.offset / bytesPerSecond) * 1000;
  const lead = attached - startAt;
  assert(anchor.offset === 0, `the first socket marks its first chunk (${anchor.offset})`);
  assert(
    lead >= -TOLERANCE_MS && lead <= startup + TOLERANCE_MS,
    `the first byte was captured ${lead.toFixed(1)} ms before the socket attached, within the ${startup.toFixed(0)} ms from Start to connected (±${TOLERANCE_MS} ms)`,
  );
  const line = `${marks.length} marks ${source}, within ${worst.toFixed(1)} ms of the audio (${errors.map((e) => e.toFixed(0)).join(' ')}); first byte ${lead.toFixed(0)} ms before the socket attached`;
  return { mic, marks, line };
}

export const recording = {
  name: 'clock-marks-line-up-with-the-segment',
  async run(scope) {
    const dir = await scope.tempDir('clock');
    const wav = await writeTestTones(dir);
    const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data') });
    const browser = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile'), wav });
    const { page, sockets } = await recorderNotingMarks(browser, `${server.url}/record`);
    const clicked = performance.now();
    let startup = 0;
    const take = await timedTake(page, () => {
      startup = performance.now() - clicked;
      return sleep(11_500); // marks at 0, 5 and 10 s of audio
    });
    const { line } = await checkMarks(server, take.id, sockets, startup);
    assert(browser.pageErrors.length === 0, `no script error (${browser.pageErrors.join('; ')})`);
    return line;
  },
};

export const outage = {
  name: 'clock-marks-keep-capture-time-through-an-outage',
  async run(scope) {
    const dir = await scope.tempDir('clock-outage');
    const wav = await writeTestTones(dir);
    const port = await freePort();
    const dataDir = path.join(dir, 'data');
    let server = await startServer(scope, { port, dataDir });
    const browser = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile'), wav });
    const { page, sockets } = await recorderNotingMarks(browser, `${server.url}/record`);
    const clicked = performance.now();
    let startup = 0;
    const take = await timedTake(page, async () => {
      startup = performance.now() - clicked;
      await sleep(2_000);
      const ended = await server.signal('SIGTERM');
      assert(ended.code === 0, `the server exits 0 on SIGTERM (${JSON.stringify(ended)})`);
      await page.getByTestId('connection').filter({ hasText: /^reconnecting in/ }).waitFor({ timeout: 5_000 });
      await sleep(3_000); // the page records while nothing answers
      server = await startServer(scope, { port, dataDir, label: 'server-2' });
      await waitConnected(page);
      await sleep(2_000);
    });
    const { mic, line } = await checkMarks(server, take.id, sockets, startup);
    assert(mic.segments.length >= 2, `the reconnect made a segment (${mic.segments.length})`);
    const reconnected = sockets.slice(1).find((marks) => marks.length > 0);
    assert(reconnected, `a socket after the outage sent marks (${sockets.length} sockets)`);
    const first = reconnected[0];
    const attached = Date.parse(mic.segments[mic.segments.length - 1].startedAt);
    assert(
      first.capturedAt < attached - 1_000,
      `the reconnect's first mark keeps the time its audio was captured (${(attached - first.capturedAt).toFixed(0)} ms before the socket attached)`,
    );
    return `${line}; the resent audio was captured ${((attached - first.capturedAt) / 1000).toFixed(2)} s before the reconnect`;
  },
};
