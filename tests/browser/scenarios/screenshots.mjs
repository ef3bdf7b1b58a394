// Scenario 4: both pages as a person sees them, saved to docs/screenshots/, with sessions in
// every state; and on a phone-sized screen neither page scrolls sideways.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { assert, freePort, launchBrowser, ROOT, sleep, startServer, waitForStatus } from '../lib/harness.mjs';
import { openRecorder, startRecording, timedTake, writeTestTones } from '../lib/pages.mjs';

export const name = 'screenshots-of-both-pages';

const SCREENSHOTS = path.join(ROOT, 'docs/screenshots');
const LAPTOP = { width: 1100, height: 860 };
const PHONE = { width: 375, height: 740 };

export async function run(scope) {
  const dir = await scope.tempDir('shots');
  const wav = await writeTestTones(dir);
  const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data') });
  const browser = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile'), wav });
  await mkdir(SCREENSHOTS, { recursive: true });

  const finished = await openRecorder(browser, `${server.url}/record`);
  await finished.locator('#title').fill('Episode 12: Never lose a take');
  await timedTake(finished, async () => {
    await finished.locator('#second-source option', { hasText: 'Fake Audio Input 1' }).waitFor({ state: 'attached' });
    await finished.locator('#second-source').selectOption({ label: 'Fake Audio Input 1' });
    await sleep(2_000);
  });

  const interrupted = await openRecorder(browser, `${server.url}/record`);
  await interrupted.locator('#title').fill('Interview with Sam');
  const interruptedId = await startRecording(interrupted);
  await sleep(1_500);
  await interrupted.close(); // a closed tab: the session times out as incomplete
  await waitForStatus(server, interruptedId, 'incomplete');

  const recorder = await openRecorder(browser, `${server.url}/record`);
  await recorder.setViewportSize(LAPTOP);
  await recorder.locator('#title').fill('Episode 13: Live from the garage');
  await startRecording(recorder);
  await recorder.locator('#second-source option', { hasText: 'Fake Audio Input 2' }).waitFor({ state: 'attached' });
  await recorder.locator('#second-source').selectOption({ label: 'Fake Audio Input 2' });
  await recorder.locator('[data-testid=track][data-track=guest][data-state=connected]').waitFor();
  await sleep(1_500);
  await recorder.screenshot({ path: path.join(SCREENSHOTS, 'record.png') });

  const history = await browser.newPage();
  await history.setViewportSize(LAPTOP);
  await history.goto(server.url);
  await history.locator('[data-testid=session][data-status=completed] summary').click();
  await history.screenshot({ path: path.join(SCREENSHOTS, 'history.png'), fullPage: true });

  for (const page of [recorder, history]) {
    await page.setViewportSize(PHONE);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `${page.url()} fits a phone's width (${overflow} px too wide)`);
  }
  assert(browser.pageErrors.length === 0, `no script error (${browser.pageErrors.join('; ')})`);
  return `${path.relative(ROOT, SCREENSHOTS)}/record.png and history.png`;
}
