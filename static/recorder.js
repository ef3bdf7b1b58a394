// The recorder page: opens the sources, feeds each track's uplink, shows what is going on, and
// on Stop waits until the server has acked every byte before it finishes the session.
// `/record?session=ID` resumes a session: what this browser kept of it is uploaded at once,
// and new audio is appended after everything the server and the browser hold.

import * as api from './api.js';
import { Capture, microphone, openAudioContext, tabAudio } from './capture.js';
import * as spool from './spool.js';
import { TrackUplink } from './uplink.js';

const MIC = 'mic';
const RENDER_MS = 200;
const START_LABELS = { starting: 'Starting…', recording: 'Recording…', saving: 'Finishing…', finished: 'New recording' };

const $ = (id) => document.getElementById(id);
const ui = {
  heading: $('recorder-heading'),
  sessionId: $('session-id'),
  sessionLine: $('session-line'),
  title: $('title'),
  micSource: $('mic-source'),
  secondSource: $('second-source'),
  start: $('start'),
  stop: $('stop'),
  elapsed: $('elapsed'),
  connection: $('connection'),
  unacked: $('unacked'),
  tracks: $('tracks'),
  message: $('message'),
  result: $('result'),
  resultFiles: $('result-files'),
  recovery: $('recovery'),
  recoveryList: $('recovery-list'),
};

const recorder = {
  /** The session from the API, once there is one. */
  session: null,
  /** idle | starting | recording | saving | finished */
  phase: 'idle',
  context: null,
  /** Track name -> Capture, for the sources being recorded now. */
  captures: new Map(),
  /** Track name -> TrackUplink, for every track this page sends or has sent. */
  uplinks: new Map(),
  /** Seconds of microphone audio captured since Start. */
  takeSeconds: 0,
};

// ---- starting and stopping ----

async function start() {
  if (recorder.phase === 'finished') return location.assign('/record');
  setPhase('starting');
  say('');
  // Asks the browser not to evict the spool when storage runs low; no prompt in Chrome.
  navigator.storage?.persist?.().catch(() => {});
  const streams = [];
  try {
    // Sharing a tab needs the click's user activation: ask for it before anything waits.
    const second = await openSecondSource();
    if (second) streams.push(second);
    const mic = await microphone(ui.micSource.value);
    streams.push(mic);
    if (!recorder.session) adopt(await api.createSession(ui.title.value.trim() || undefined));
    recorder.context ??= await openAudioContext(trackRate(MIC));
    recorder.takeSeconds = 0;
    await feed(MIC, mic);
    if (second) await feed(secondTrackName(), second);
    setPhase('recording');
    refreshDevices();
  } catch (error) {
    await stopCaptures();
    streams.forEach(release);
    setPhase('idle');
    say(`Could not start: ${error.message}`, 'error');
  }
}

async function stop() {
  setPhase('saving');
  await stopCaptures();
  const uplinks = [...recorder.uplinks.values()];
  say('Waiting until the server has every byte…');
  await Promise.all(uplinks.map((uplink) => uplink.drained()));
  const failed = uplinks.find((uplink) => uplink.state === 'failed');
  if (failed) {
    setPhase('idle');
    return say(`Not finished: ${failed.track}: ${failed.reason}. The browser keeps its audio.`, 'error');
  }
  try {
    const { id } = await finishWhenReachable(recorder.session.id);
    await spool.forgetSession(id).catch(() => {});
    await recorder.context?.close();
    recorder.context = null;
    showResult(await api.getSession(id));
  } catch (error) {
    setPhase('idle');
    say(`Every byte is saved, but the session could not be finished: ${error.message}`, 'error');
  }
}

/**
 * Opens a track's uplink, waits for the server's `ready`, then starts the source on it. On
 * failure the stream is still the caller's to release.
 */
async function feed(track, stream) {
  const uplink = uplinkFor(track, recorder.context.sampleRate);
  try {
    await uplink.begin();
  } catch (error) {
    uplink.end();
    throw error;
  }
  const capture = new Capture(recorder.context, stream, {
    onChunk: (pcm, frames) => {
      uplink.push(pcm);
      if (track === MIC) recorder.takeSeconds += frames / recorder.context.sampleRate;
    },
    onEnded: () => say(`The source of ${track} stopped (unplugged, or sharing ended).`, 'warn'),
  });
  recorder.captures.set(track, capture);
}

async function stopCaptures() {
  const captures = [...recorder.captures];
  recorder.captures.clear();
  await Promise.all(captures.map(([, capture]) => capture.stop()));
  for (const [track] of captures) recorder.uplinks.get(track)?.end();
}

/** Switches a source while recording; its track goes on where it was. */
async function changeSource(track, openStream) {
  if (recorder.phase !== 'recording') return;
  const capture = recorder.captures.get(track);
  recorder.captures.delete(track);
  await capture?.stop();
  recorder.uplinks.get(track)?.end();
  let stream;
  try {
    stream = await openStream();
    if (stream) await feed(track, stream);
  } catch (error) {
    if (stream) release(stream);
    say(`Could not switch ${track}: ${error.message}`, 'error');
  }
}

function release(stream) {
  stream.getTracks().forEach((track) => track.stop());
}

function openSecondSource() {
  const choice = ui.secondSource.value;
  if (!choice) return null;
  return choice === 'tab' ? tabAudio() : microphone(choice);
}

/** The second source keeps the session's existing second track, else names a new one. */
function secondTrackName() {
  const names = new Set([...(recorder.session?.tracks ?? []).map((t) => t.name), ...recorder.uplinks.keys()]);
  const existing = [...names].find((name) => name !== MIC);
  return existing ?? (ui.secondSource.value === 'tab' ? 'system' : 'guest');
}

/** A resumed track keeps its rate (a track's format is fixed); a new session takes the device's. */
function trackRate(track) {
  const stored = recorder.session?.tracks?.find((t) => t.name === track);
  return stored?.sampleRate ?? recorder.uplinks.get(track)?.sampleRate;
}

function uplinkFor(track, sampleRate) {
  let uplink = recorder.uplinks.get(track);
  if (!uplink) {
    uplink = new TrackUplink({ session: recorder.session.id, track, sampleRate });
    uplink.addEventListener('notice', (event) => say(event.detail, 'warn'));
    uplink.addEventListener('ended', () => onTrackEnded(uplink));
    recorder.uplinks.set(track, uplink);
  }
  return uplink;
}

/** The server will take no more of a track: the session was finished or deleted elsewhere. */
async function onTrackEnded(uplink) {
  if (recorder.phase === 'saving') return; // Stop's own wait sees it
  await stopCaptures();
  if (uplink.state === 'finished') {
    showResult(await api.getSession(recorder.session.id).catch(() => recorder.session));
    say('The session was finished elsewhere: recording stopped.', 'warn');
  } else {
    setPhase('idle');
    say(`Recording stopped: ${uplink.reason}.`, 'error');
  }
}

/** Finishes the session, waiting out a server that is down; finished already is fine too. */
async function finishWhenReachable(id) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await api.finishSession(id);
    } catch (error) {
      if (error.code === 'invalid_transition') return api.getSession(id);
      if (error.status) throw error;
      say('Every byte is saved; waiting for the server to finish the session…');
      await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000)));
    }
  }
}

// ---- the session this page works on ----

function adopt(session) {
  recorder.session = session;
  showSessionId(session.id);
  ui.heading.textContent = session.title;
  ui.title.value = session.title;
  ui.title.disabled = true;
  ui.recovery.hidden = true;
  // A reload comes back to this session.
  history.replaceState(null, '', `/record?session=${encodeURIComponent(session.id)}`);
}

async function openSession(id) {
  let session;
  try {
    session = await api.getSession(id);
  } catch (error) {
    if (error.status !== 404) return say(`Could not load the session: ${error.message}. Reload to try again.`, 'error');
    history.replaceState(null, '', '/record');
    say('There is no recording with that id: start a new one.', 'warn');
    return offerRecovery();
  }
  if (session.status === 'completed') {
    showSessionId(session.id);
    return showResult(session);
  }
  adopt(session);
  await uploadKept(session.id);
}

/** Sends what an earlier page (reloaded, crashed) kept of this session and the server lacks. */
async function uploadKept(id) {
  const kept = await spool.loadSession(id).catch(() => []);
  let seconds = 0;
  for (const { meta, chunks } of kept) {
    if (chunks.length === 0) continue;
    const uplink = uplinkFor(meta.track, meta.sampleRate);
    uplink.restore(chunks);
    seconds += uplink.unackedSeconds();
  }
  if (seconds > 0) say(`Uploading ${seconds.toFixed(1)} s of audio this browser kept…`);
}

/** Lists the interrupted sessions, and those this browser still holds audio of. */
async function offerRecovery() {
  const [listed, kept] = await Promise.all([
    api.listSessions('incomplete').then((page) => page.sessions, () => []),
    spool.keptSeconds().catch(() => new Map()),
  ]);
  const sessions = new Map(listed.map((session) => [session.id, session]));
  for (const id of kept.keys()) {
    if (sessions.has(id)) continue;
    // undefined: the server could not be asked; null: it has no such session.
    const session = await api.getSession(id).catch((error) => (error.status === 404 ? null : undefined));
    if (session === null || session?.status === 'completed') {
      // The server takes no more audio for it: nothing is left to do with the copy.
      await spool.forgetSession(id).catch(() => {});
    } else if (session) {
      sessions.set(id, session);
    }
  }
  ui.recoveryList.replaceChildren(...[...sessions.values()].map((s) => recoveryItem(s, kept.get(s.id) ?? 0)));
  ui.recovery.hidden = sessions.size === 0;
}

function recoveryItem(session, keptSeconds) {
  const item = element('li', {}, [
    element('span', { className: 'recovery-title', textContent: session.title }),
    ' ',
    element('span', { className: 'muted', textContent: `${session.status}, last heard ${localTime(session.lastHeartbeat)}` }),
  ]);
  if (keptSeconds > 0) {
    const text = `${keptSeconds.toFixed(1)} s kept in this browser: Resume uploads what the server lacks`;
    item.append(' ', element('strong', { textContent: text }));
  }
  const resume = element('a', { className: 'button', href: `/record?session=${encodeURIComponent(session.id)}`, textContent: 'Resume' });
  const finish = element('button', { type: 'button', textContent: 'Mark complete' });
  finish.addEventListener('click', async () => {
    finish.disabled = true;
    try {
      await api.finishSession(session.id);
      await spool.forgetSession(session.id).catch(() => {});
      item.remove();
      ui.recovery.hidden = ui.recoveryList.children.length === 0;
    } catch (error) {
      finish.disabled = false;
      say(`Could not mark it complete: ${error.message}`, 'error');
    }
  });
  item.append(element('span', { className: 'actions' }, [resume, finish]));
  return item;
}

function showResult(session) {
  recorder.session = session;
  setPhase('finished');
  ui.heading.textContent = session.title;
  ui.resultFiles.replaceChildren(
    ...(session.tracks ?? []).map((track) =>
      element('li', {}, [
        element('code', { textContent: track.path }),
        ` ${formatClock(track.durationMs / 1000)}, ${(track.sizeBytes / 1e6).toFixed(1)} MB `,
        element('a', { href: api.trackUrl(session.id, track.name), download: `${track.name}.wav`, textContent: 'Download' }),
      ]),
    ),
  );
  ui.result.hidden = false;
  say('');
  render(); // the final numbers now, not at the next tick
  history.replaceState(null, '', '/record');
}

// ---- what the page shows ----

function showSessionId(id) {
  ui.sessionId.textContent = id;
  ui.sessionLine.hidden = false;
}

function setPhase(phase) {
  recorder.phase = phase;
  document.body.dataset.phase = phase;
  ui.start.disabled = phase !== 'idle' && phase !== 'finished';
  ui.stop.disabled = phase !== 'recording';
  ui.stop.textContent = 'Stop';
  ui.micSource.disabled = ui.secondSource.disabled = phase === 'starting' || phase === 'saving';
  ui.start.textContent = START_LABELS[phase] ?? (recorder.session ? 'Continue recording' : 'Start recording');
}

function render() {
  const uplinks = [...recorder.uplinks.values()];
  const unacked = uplinks.reduce((sum, uplink) => sum + uplink.unackedSeconds(), 0);
  ui.elapsed.textContent = formatClock(recorder.takeSeconds);
  ui.unacked.textContent = `${unacked.toFixed(1)} s`;
  const [state, text] = connection(uplinks);
  ui.connection.dataset.state = state;
  ui.connection.textContent = text;
  if (recorder.phase === 'saving') ui.stop.textContent = `Saving… ${unacked.toFixed(1)} s left`;
  uplinks.forEach(renderTrack);
}

/** One word for all tracks; `connected` only while every busy track streams. */
function connection(uplinks) {
  const busy = uplinks.filter((uplink) => uplink.state !== 'idle' && uplink.state !== 'finished');
  const failed = busy.find((uplink) => uplink.state === 'failed');
  if (failed) return ['failed', `stopped: ${failed.reason}`];
  const retrying = busy.find((uplink) => uplink.state === 'retrying');
  if (retrying) {
    const wait = Math.max(0, (retrying.retryAt - Date.now()) / 1000);
    return ['retrying', `reconnecting in ${wait.toFixed(1)} s (${retrying.reason})`];
  }
  if (busy.some((uplink) => uplink.state === 'connecting')) return ['connecting', 'connecting'];
  if (busy.length > 0) return ['connected', 'connected'];
  return recorder.phase === 'finished' ? ['finished', 'finished'] : ['idle', 'idle'];
}

function renderTrack(uplink) {
  let row = ui.tracks.querySelector(`[data-track="${uplink.track}"]`);
  if (!row) {
    row = element('li', { className: 'live-track' }, [
      element('strong', { textContent: uplink.track }),
      element('meter', { min: -60, max: 0, low: -18, high: -3, optimum: -12, value: -60 }),
      element('span', { className: 'muted' }),
    ]);
    row.dataset.testid = 'track';
    row.dataset.track = uplink.track;
    ui.tracks.append(row);
  }
  const level = recorder.captures.get(uplink.track)?.level ?? 0;
  row.querySelector('meter').value = level > 0 ? Math.max(-60, 20 * Math.log10(level)) : -60;
  row.querySelector('meter').title = level > 0 ? `peak ${(20 * Math.log10(level)).toFixed(0)} dBFS` : 'silent';
  row.querySelector('span').textContent =
    `${formatClock(uplink.nextOffset / uplink.byteRate)} recorded · ` +
    `${uplink.unackedSeconds().toFixed(1)} s not yet saved · ${uplink.state}`;
  row.dataset.offset = uplink.nextOffset;
  row.dataset.acked = uplink.acked;
  row.dataset.state = uplink.state;
}

function say(text, kind = 'info') {
  ui.message.textContent = text;
  ui.message.dataset.kind = kind;
}

async function refreshDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  // Before the microphone is allowed, devices come without ids; only the defaults apply then.
  const inputs = devices.filter((device) => device.kind === 'audioinput' && device.deviceId);
  fillSelect(ui.micSource, inputs, [['', 'Default microphone']], []);
  fillSelect(ui.secondSource, inputs, [['', 'None']], [['tab', 'Tab or screen audio']]);
}

function fillSelect(select, devices, before, after) {
  const chosen = select.value;
  const options = [...before, ...devices.map((d, i) => [d.deviceId, d.label || `Input ${i + 1}`]), ...after];
  select.replaceChildren(...options.map(([value, label]) => element('option', { value, textContent: label })));
  select.value = options.some(([value]) => value === chosen) ? chosen : '';
}

function element(tag, properties, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

function formatClock(seconds) {
  const whole = Math.floor(seconds);
  const minutes = Math.floor(whole / 60);
  const tenths = Math.floor((seconds - whole) * 10);
  return `${minutes}:${String(whole % 60).padStart(2, '0')}.${tenths}`;
}

function localTime(rfc3339) {
  return new Date(rfc3339).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

// ---- wiring ----

ui.start.addEventListener('click', start);
ui.stop.addEventListener('click', stop);
ui.micSource.addEventListener('change', () => changeSource(MIC, () => microphone(ui.micSource.value)));
ui.secondSource.addEventListener('change', () => changeSource(secondTrackName(), openSecondSource));
navigator.mediaDevices?.addEventListener('devicechange', refreshDevices);
// The network is back: reconnect now rather than at the end of the backoff.
window.addEventListener('online', () => recorder.uplinks.forEach((uplink) => uplink.retryNow()));
setInterval(render, RENDER_MS);
setPhase('idle');
refreshDevices();

const resumeId = new URLSearchParams(location.search).get('session');
if (resumeId) openSession(resumeId);
else offerRecovery();
