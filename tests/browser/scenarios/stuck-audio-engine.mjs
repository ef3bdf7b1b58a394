// Scenario 9: the Firefox defect, staged in Chromium: `AudioContext.resume()` never settles
// (as Firefox sometimes leaves it). Start must not hang: within seconds the page says plainly
// why recording cannot start, and no empty session is left behind on the server.

import path from 'node:path';
import { api, assert, freePort, launchBrowser, startServer } from '../lib/harness.mjs';
import { openRecorder, writeTestTones } from '../lib/pages.mjs';

export const name = 'stuck-audio-engine-says-why-and-leaves-no-session';

export async function run(scope) {
  const dir = await scope.tempDir('stuck');
  const wav = await writeTestTones(dir);
  const server = await startServer(scope, { port: await freePort(), dataDir: path.join(dir, 'data') });
  const browser = await launchBrowser(scope, { userDataDir: path.join(dir, 'profile'), wav });
  await browser.context.addInitScript(() => {
    AudioContext.prototype.resume = () => new Promise(() => {});
  });
  const page = await openRecorder(browser, `${server.url}/record`);
  const clicked = performance.now();
  await page.getByTestId('start').click();
  const message = page.locator('#message[data-kind=error]');
  await message.waitFor({ timeout: 12_000 });
  const took = (performance.now() - clicked) / 1000;
  const text = await message.textContent();
  assert(/audio engine/.test(text), `the page says the audio engine did not start (${text})`);
  assert(!(await page.getByTestId('start').isDisabled()), 'Start can be pressed again');
  const { total } = await api(server, 'GET', '/api/sessions');
  assert(total === 0, `no session was created (${total})`);
  return `said why after ${took.toFixed(1)} s: "${text}"`;
}
