// The guest's page, `/join/<token>`: pick a microphone, see its level, Join. From then on the
// guest's track records with every promise of the host's recorder, through the same modules:
// capture.js (the microphone as PCM), uplink.js (offsets, acks, reconnect and resend) and
// spool.js (a copy of every unacked byte in this browser). Reopening the link after a crash
// sends what the browser kept. The host's Stop ends it: the page sends the rest, says `done`,
// and says when everything is saved. If the session ended before everything was sent, the page
// says how much and offers it as a WAV file.
//
// The server's shell gives what the page needs as data attributes (on the element with
// `data-session-id`): `data-session-id`, `data-track`, `data-name`, `data-title`, and `data-state`
// (`ended` for a revoked or unknown link or an ended session). The invite's cookie, set with
// the page, authenticates every request and socket the page makes.

import * as api from './api.js';
import { Capture, inputDevices, microphone, openAudioContext } from './capture.js';
import * as spool from './spool.js';
import { element, formatClock, levelMeter, meterValue } from './ui.js';
import { TrackUplink } from './uplink.js';
import { wavBlob } from './wav.js';

const RENDER_MS = 200;
const ENDED_STATES = new Set(['ended', 'revoked', 'unknown', 'invalid', 'completed', 'gone']);

const config = readConfig();

const guest = {
  /** ready | recording | saving | saved | ended */
  state: 'ready',
  context: null,
  capture: null,
  uplink: null,
  /** Seconds captured since the last Join. */
  seconds: 0,
  /** The host stopped the recording: no more joining. */
  stopped: false,
  /** Leave or Stop ran while recording: `done` is on its way. */
  leaving: false,
};

function readConfig() {
  const holders = [document.querySelector('[data-session-id]'), document.querySelector('main'), document.body];
  const data = Object.assign({}, ...holders.filter(Boolean).reverse().map((node) => ({ ...node.dataset })));
  return {
    session: data.sessionId ?? data.session ?? '',
    track: data.track ?? '',
    name: data.name ?? data.participant ?? data.guestName ?? '',
    title: data.title ?? data.sessionTitle ?? '',
    state: data.state ?? data.status ?? '',
  };
}

// ---- the page ----

const root = document.querySelector('[data-session-id]') ?? document.querySelector('main') ?? document.body;

const ui = {
  title: element('h1', { className: 'guest-title' }),
  lead: element('p', { className: 'lead' }),
  about: element('p', {
    className: 'muted',
    textContent:
      'Your voice is recorded here, in this browser, and sent to the host as you speak. If the ' +
      'connection drops, nothing is lost: this page keeps a copy and sends it once it is back. ' +
      'Keep this page open until it says Saved.',
  }),
  mic: element('select', { id: 'guest-mic' }, [element('option', { value: '', textContent: 'Default microphone' })]),
  test: element('button', { type: 'button', textContent: 'Test microphone' }),
  meter: levelMeter(),
  join: element('button', { type: 'button', className: 'primary big', textContent: 'Join' }),
  leave: element('button', { type: 'button', textContent: 'Leave', disabled: true }),
  state: element('dd', { textContent: 'ready' }),
  elapsed: element('dd', { textContent: '0:00.0' }),
  connection: element('dd', { textContent: 'not connected' }),
  unsaved: element('dd', { textContent: '0.0 s' }),
  message: element('p', { className: 'message', role: 'status', ariaLive: 'polite' }),
  rescue: element('section', { className: 'notice rescue', hidden: true }),
};
ui.join.dataset.testid = 'join';
ui.leave.dataset.testid = 'leave';
ui.state.dataset.testid = 'guest-state';
ui.connection.dataset.testid = 'connection';
ui.unsaved.dataset.testid = 'unacked';
ui.elapsed.dataset.testid = 'elapsed';

const stat = (label, value) => element('div', {}, [element('dt', { textContent: label }), value]);
const setup = element('div', { className: 'guest-setup' }, [
  element('label', {}, ['Microphone', ui.mic]),
  element('div', { className: 'level-row' }, [ui.meter, ui.test]),
]);
const controls = element('div', { className: 'controls' }, [ui.join, ui.leave]);
/** What this page recorded and sent: nothing to show on an ended page that never recorded. */
const activity = [stat('Recorded', ui.elapsed), stat('Connection', ui.connection), stat('Not yet saved', ui.unsaved)];
const stats = element('dl', { className: 'stats' }, [stat('Status', ui.state), ...activity]);
// The shell's own markup is what shows without script; the page replaces it with its own.
root.classList.add('card', 'guest-page');
root.replaceChildren(ui.title, ui.lead, ui.about, setup, controls, stats, ui.message, ui.rescue);
ui.title.textContent = config.title || 'Recording';
ui.lead.textContent = config.name ? `Hello ${config.name}, you are invited to record.` : 'You are invited to record.';
document.title = `${config.title || 'Join'} · safetake`;

function say(text, kind = 'info') {
  ui.message.textContent = text;
  ui.message.dataset.kind = kind;
}

function setState(state) {
  guest.state = state;
  keepScreenOn(state === 'recording' || state === 'saving');
  document.body.dataset.guestState = state;
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  const over = state === 'ended';
  ui.join.disabled = over || guest.stopped || state === 'recording' || state === 'saving';
  ui.join.textContent = state === 'saved' || (state === 'ready' && guest.uplink?.acked > 0) ? 'Join again' : 'Join';
  ui.leave.disabled = state !== 'recording';
  ui.mic.disabled = ui.test.disabled = over || guest.stopped || state === 'saving';
  // An ended page offers nothing to do but what it says (and the rescue, if any).
  show(setup, !over);
  show(controls, !over);
  show(ui.about, !over);
  for (const row of activity) show(row, !over || guest.uplink !== null);
  if (over) ui.lead.textContent = 'This recording has ended.';
}

/** `hidden` alone loses to a stylesheet's `display` (the controls are a flex row). */
function show(node, visible) {
  node.hidden = !visible;
  node.style.display = visible ? '' : 'none';
}

/** A phone that locks its screen may stop the page: while it records, the screen stays on. */
let wakeLock = null;
async function keepScreenOn(on) {
  if (!on) {
    wakeLock?.release().catch(() => {});
    wakeLock = null;
  } else if (!wakeLock && document.visibilityState === 'visible') {
    wakeLock = await navigator.wakeLock?.request('screen').catch(() => null);
    wakeLock?.addEventListener('release', () => (wakeLock = null));
  }
}

// ---- the microphone ----

/** Opens the chosen microphone and shows its level; nothing is recorded until Join. */
async function preview() {
  await releaseMicrophone();
  const stream = await microphone(ui.mic.value);
  try {
    guest.context ??= await openAudioContext(guest.uplink?.sampleRate);
    guest.capture = new Capture(guest.context, stream, {
      onChunk: () => {},
      onEnded: () => say('The microphone stopped (unplugged?). Pick it again, or another one.', 'warn'),
    });
    await guest.capture.started();
  } catch (error) {
    await releaseMicrophone();
    stream.getTracks().forEach((track) => track.stop());
    throw error;
  }
  refreshDevices();
}

async function releaseMicrophone() {
  const capture = guest.capture;
  guest.capture = null;
  await capture?.stop();
}

async function testMicrophone() {
  ui.test.disabled = true;
  try {
    await preview();
    say('The bar moves when you speak. Press Join when you are ready.');
  } catch (error) {
    say(`The microphone does not work yet: ${error.message}`, 'error');
  } finally {
    ui.test.disabled = guest.state === 'ended' || guest.stopped;
  }
}

async function changeMicrophone() {
  if (guest.state === 'recording') {
    const uplink = guest.uplink;
    try {
      await preview();
      guest.capture.attach((pcm, frames) => record(uplink, pcm, frames));
    } catch (error) {
      say(`Could not switch the microphone: ${error.message}`, 'error');
    }
  } else if (guest.capture) {
    await testMicrophone();
  }
}

async function refreshDevices() {
  const inputs = await inputDevices();
  const chosen = ui.mic.value;
  const options = [['', 'Default microphone'], ...inputs.map((d, i) => [d.deviceId, d.label || `Microphone ${i + 1}`])];
  ui.mic.replaceChildren(...options.map(([value, label]) => element('option', { value, textContent: label })));
  ui.mic.value = options.some(([value]) => value === chosen) ? chosen : '';
}

// ---- recording ----

function uplinkFor(sampleRate) {
  if (guest.uplink) return guest.uplink;
  const uplink = new TrackUplink({ session: config.session, track: config.track, sampleRate });
  uplink.addEventListener('notice', (event) => say(event.detail, 'warn'));
  uplink.addEventListener('stop', () => onHostStop());
  uplink.addEventListener('done', () => onDone());
  uplink.addEventListener('ended', () => onEnded(uplink));
  guest.uplink = uplink;
  return uplink;
}

function record(uplink, pcm, frames) {
  uplink.push(pcm);
  guest.seconds += frames / uplink.sampleRate;
}

async function join() {
  if (guest.stopped || guest.state === 'ended') return;
  ui.join.disabled = true;
  navigator.storage?.persist?.().catch(() => {});
  say('Starting…');
  try {
    if (!guest.capture) await preview();
    const uplink = uplinkFor(guest.context.sampleRate);
    await uplink.begin();
    if (guest.stopped || guest.state === 'ended') return; // the host stopped while we connected
    guest.seconds = 0;
    guest.leaving = false;
    guest.capture.attach((pcm, frames) => record(uplink, pcm, frames));
    setState('recording');
    say('You are recording. Speak as you normally would.');
  } catch (error) {
    setState(guest.state === 'recording' ? 'recording' : 'ready');
    say(`Could not join: ${error.message}`, 'error');
  }
}

/** Stops capturing and sends the rest; `done` goes once the server has every byte. */
async function finishRecording() {
  guest.leaving = true;
  setState('saving');
  await releaseMicrophone();
  guest.uplink?.end({ done: true });
}

async function leave() {
  say('Saving what is left…');
  await finishRecording();
}

async function onHostStop() {
  guest.stopped = true;
  say('The host stopped the recording. Sending the rest of your audio…');
  if (guest.state === 'ended') return;
  await finishRecording();
}

function onDone() {
  if (guest.state === 'ended') return;
  setState('saved');
  say(
    guest.stopped
      ? 'Thank you! Everything you recorded is saved with the host. You can close this page.'
      : 'Everything you recorded is saved with the host. Join again to record more, or close this page.',
  );
}

/** The server takes no more of this track: finished, revoked, deleted, or full. */
async function onEnded(uplink) {
  await releaseMicrophone();
  const kept = uplink.queue.map((chunk) => ({ ...chunk }));
  const savedAll = kept.length === 0 && (guest.state === 'saved' || uplink.doneSent);
  if (savedAll) {
    setState('saved');
    say('Thank you! Everything you recorded is saved with the host. You can close this page.');
    return;
  }
  setState('ended');
  say(uplink.state === 'finished' ? 'The host has ended the recording.' : `The recording has ended for this link: ${uplink.reason}.`);
  offerRescue(kept, uplink.sampleRate);
}

/** What never reached the server, as a WAV file built from what this browser kept. */
function offerRescue(chunks, sampleRate) {
  const bytes = chunks.reduce((sum, chunk) => sum + chunk.pcm.byteLength, 0);
  if (bytes === 0) return;
  const seconds = bytes / (sampleRate * 2);
  const from = chunks[0].offset / (sampleRate * 2);
  const url = URL.createObjectURL(wavBlob(chunks.map((chunk) => chunk.pcm), sampleRate));
  const file = `${config.track || 'recording'}-from-${Math.floor(from)}s.wav`;
  const link = element('a', { className: 'button primary', href: url, download: file, textContent: 'Download the rest (WAV)' });
  link.dataset.testid = 'download-rest';
  ui.rescue.dataset.seconds = seconds.toFixed(3);
  ui.rescue.dataset.offset = chunks[0].offset;
  ui.rescue.replaceChildren(
    element('h2', { textContent: `${seconds.toFixed(1)} s of your recording did not reach the host` }),
    element('p', {
      textContent:
        `The session ended before your browser could send everything. This browser kept it: ` +
        `download it and send the file to the host. It starts ${formatClock(from)} into your recording.`,
    }),
    link,
  );
  ui.rescue.hidden = false;
}

// ---- what the page shows ----

function connectionText(uplink) {
  if (!uplink) return ['idle', 'not connected'];
  switch (uplink.state) {
    case 'connected':
      return ['connected', 'connected'];
    case 'connecting':
      return ['connecting', 'connecting'];
    case 'retrying': {
      const wait = Math.max(0, (uplink.retryAt - Date.now()) / 1000);
      return ['retrying', `reconnecting in ${wait.toFixed(1)} s (${uplink.reason}); your audio is kept`];
    }
    case 'idle':
      return ['idle', 'not connected'];
    default:
      return [uplink.state, 'ended'];
  }
}

function render() {
  ui.meter.value = meterValue(guest.capture?.level ?? 0);
  ui.elapsed.textContent = formatClock(guest.seconds);
  const unsaved = guest.uplink?.unackedSeconds() ?? 0;
  ui.unsaved.textContent = `${unsaved.toFixed(1)} s`;
  const [state, text] = connectionText(guest.uplink);
  ui.connection.dataset.state = state;
  ui.connection.textContent = text;
  if (guest.uplink) {
    ui.state.dataset.offset = guest.uplink.nextOffset;
    ui.state.dataset.acked = guest.uplink.acked;
  }
}

// ---- starting the page ----

async function keptChunks() {
  const kept = await spool.loadSession(config.session).catch(() => []);
  return kept.find(({ meta }) => meta.track === config.track) ?? null;
}

/**
 * An ended link: says so, and still offers whatever this browser kept of it (the server's
 * ended page for a real invite gives its session and track, so reopening the link after the
 * host finished still finds the audio this browser holds).
 */
async function showEnded(text) {
  setState('ended');
  say(text);
  const kept = config.session && config.track ? await keptChunks() : null;
  if (kept?.chunks.length) {
    say('This recording has ended, but this browser still holds audio of yours the host did not get.', 'warn');
    offerRescue(kept.chunks, kept.meta.sampleRate);
  }
}

async function open() {
  if (ENDED_STATES.has(config.state) || !config.session || !config.track) {
    return showEnded('This recording has ended, or this link no longer works. Ask the host for a new link if you need one.');
  }
  let session;
  try {
    session = await api.getSession(config.session);
  } catch (error) {
    if (error.status === 401 || error.status === 403 || error.status === 404) {
      return showEnded('This link no longer works: the host revoked it, or the recording ended.');
    }
    say('The server cannot be reached right now. Your microphone still works; Join once it is back.', 'warn');
  }
  if (session?.status === 'completed') return showEnded('This recording has ended. Thank you!');
  if (session?.stopRequestedAt) guest.stopped = true;

  const stored = session?.tracks?.find((track) => track.name === config.track);
  const kept = await keptChunks();
  const sampleRate = stored?.sampleRate ?? kept?.meta.sampleRate;
  if (sampleRate && (stored || kept?.chunks.length)) {
    // Back after a crash or a reload: send what this browser kept, and stay attached so the
    // host's Stop reaches this page even if the guest does not join again.
    const uplink = uplinkFor(sampleRate);
    if (kept?.chunks.length) {
      uplink.restore(kept.chunks);
      setState('saving');
      say(`Sending ${uplink.unackedSeconds().toFixed(1)} s of audio this browser kept from before…`);
      uplink.drained().then(() => {
        if (guest.state !== 'saving' || guest.leaving) return;
        setState('ready');
        say('Everything you recorded before is saved. Press Join to record again.');
      });
    }
    uplink.hold();
  }
  setState(guest.state);
  if (guest.stopped && guest.state === 'ready') say('The host has stopped the recording.');
  // The microphone was allowed before: show its level at once.
  let permission = null;
  try {
    permission = await navigator.permissions?.query({ name: 'microphone' });
  } catch {
    // Not every browser can be asked (the name is unknown to some): the guest tests it by hand.
  }
  if (permission?.state === 'granted' && !guest.stopped) testMicrophone();
  else refreshDevices();
}

ui.join.addEventListener('click', join);
ui.leave.addEventListener('click', leave);
ui.test.addEventListener('click', testMicrophone);
ui.mic.addEventListener('change', changeMicrophone);
navigator.mediaDevices?.addEventListener('devicechange', refreshDevices);
window.addEventListener('online', () => guest.uplink?.retryNow());
// The lock goes when the page is hidden; it comes back with the page.
document.addEventListener('visibilitychange', () => keepScreenOn(guest.state === 'recording' || guest.state === 'saving'));
// Closing the page while audio is on its way: the browser keeps it, but the guest should know.
window.addEventListener('beforeunload', (event) => {
  if (guest.state === 'recording' || (guest.uplink?.unackedBytes() ?? 0) > 0) event.preventDefault();
});
setInterval(render, RENDER_MS);
setState('ready');
open();
