// Scenario 7: the guest pages as people see them, saved to docs/screenshots/: the host's
// recorder with its roster (a guest connected, another invited), and the guest's page while it
// records, on a phone-sized screen; neither scrolls sideways on a phone. Then Sam leaves,
// joins again, and the host revokes Sam's link while Sam records.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { assert, freePort, launchBrowser, ROOT, sleep, startServer } from '../lib/harness.mjs';
import { inviteGuest, joinAsGuest, openRecorder, participant, startRecording, writeTone } from '../lib/pages.mjs';

export const name = 'screenshots-of-the-guest-pages';

const SCREENSHOTS = path.join(ROOT, 'docs/screenshots');
const LAPTOP = { width: 1100, height: 1000 };
const PHONE = { width: 375, height: 740 };

export async function run(scope) {
  const dir = await scope.tempDir('guest-shots');
  const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data') });
  const hostBrowser = await launchBrowser(scope, { userDataDir: path.join(dir, 'host'), wav: await writeTone(dir, 440), label: 'host' });
  const samBrowser = await launchBrowser(scope, { userDataDir: path.join(dir, 'sam'), wav: await writeTone(dir, 660), label: 'sam' });
  await mkdir(SCREENSHOTS, { recursive: true });

  const host = await openRecorder(hostBrowser, `${server.url}/record`);
  await host.setViewportSize(LAPTOP);
  await host.locator('#title').fill('Episode 14: Sam from the other side of town');
  await startRecording(host);
  const samUrl = await inviteGuest(host, 'Sam');
  await inviteGuest(host, 'Alex Müller');

  const sam = await samBrowser.newPage();
  await sam.setViewportSize(PHONE);
  await sam.goto(samUrl);
  await joinAsGuest(sam);
  await host.locator('[data-testid=participant][data-track=sam][data-connected=true]').waitFor();
  await sleep(2_500);
  await host.screenshot({ path: path.join(SCREENSHOTS, 'roster.png'), fullPage: true });
  await sam.screenshot({ path: path.join(SCREENSHOTS, 'guest.png'), fullPage: true });

  // Sam leaves: the page sends the rest and says `done`; the roster shows Sam gone, all saved.
  await sam.getByTestId('leave').click();
  await sam.getByTestId('guest-state').filter({ hasText: /^saved$/ }).waitFor();
  await host.locator('[data-testid=participant][data-track=sam][data-connected=false][data-done=true]').waitFor();
  // Sam joins again into the same track; the host revokes the link: the socket closes with 4403
  // and Sam's page says the recording ended for it.
  await sam.getByTestId('join').filter({ hasText: 'Join again' }).click();
  await sam.getByTestId('guest-state').filter({ hasText: /^recording$/ }).waitFor();
  await host.locator('[data-testid=participant][data-track=sam][data-connected=true]').waitFor();
  await participant(host, 'sam').getByTestId('revoke').click();
  await sam.getByTestId('guest-state').filter({ hasText: /^ended$/ }).waitFor();
  const said = await sam.locator('.message').textContent();
  assert(/revoked/.test(said), `Sam's page says the link was revoked (${said})`);

  for (const page of [host, sam]) {
    await page.setViewportSize(PHONE);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `${page.url()} fits a phone's width (${overflow} px too wide)`);
  }
  const errors = [...hostBrowser.pageErrors, ...samBrowser.pageErrors];
  assert(errors.length === 0, `no script error (${errors.join('; ')})`);
  return `${path.relative(ROOT, SCREENSHOTS)}/roster.png and guest.png`;
}
