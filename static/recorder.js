// The recorder page: opens the sources, feeds each track's uplink, shows what is going on and
// who else records (the roster, with invites). Its Stop stops everyone: the server tells each
// browser, each sends what it holds and says `done`, and the session completes by itself.
// `/record?session=ID` resumes a session: what this browser kept of it is uploaded at once,
// and new audio is appended after everything the server and the browser hold.

import * as api from './api.js';
import { Capture, microphone, openAudioContext, tabAudio, inputDevices } from './capture.js';
import { Roster, trackNameFor } from './roster.js';
import * as spool from './spool.js';
import { element, formatClock, levelMeter, localTime, meterValue } from './ui.js';
import { TrackUplink } from './uplink.js';

const MIC = 'mic';
const RENDER_MS = 200;
const START_LABELS = { starting: 'Starting…', recording: 'Recording…', saving: 'Finishing…', finished: 'New recording' };
/** How often Stop looks whether the session has completed. */
const STOP_POLL_MS = 500;

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
  /** Source name (`mic`, or the second source's first track) -> Capture, recording now. */
  captures: new Map(),
  /** Source name -> the track it records into now: `mic`, or `mic-2` after a rollover. */
  feeds: new Map(),
  /** Track name -> TrackUplink, for every track this page sends or has sent. */
  uplinks: new Map(),
  /** Seconds of microphone audio captured since Start. */
  takeSeconds: 0,
};

const roster = new Roster(ui.tracks.parentElement, ui.message, { local: () => recorder.uplinks, say });
// Completed elsewhere (another tab's Stop, Mark complete on the history page) while this page waits.
roster.addEventListener('session', ({ detail: session }) => {
  if (session.status === 'completed' && recorder.phase === 'idle') showResult(session);
});

// ---- starting and stopping ----

async function start() {
  if (recorder.phase === 'finished') return location.assign('/record');
  setPhase('starting');
  say('');
  // Asks the browser not to evict the spool when storage runs low; no prompt in Chrome.
  navigator.storage?.persist?.().catch(() => {});
  const streams = [];
  const opened = new Map();
  try {
    // Sharing a tab needs the click's user activation: ask for it before anything waits.
    const second = await openSecondSource();
    if (second) streams.push(second);
    const mic = await microphone(ui.micSource.value);
    streams.push(mic);
    recorder.context ??= await openAudioContext(trackRate(recorder.feeds.get(MIC) ?? latestOf(MIC)));
    opened.set(MIC, capture(MIC, mic));
    if (second) opened.set(secondTrackName(), capture('second source', second));
    // The session is made only once sound flows: a browser that cannot record leaves nothing behind.
    await Promise.all([...opened.values()].map((c) => c.started()));
    if (!recorder.session) adopt(await api.createSession(ui.title.value.trim() || undefined));
    recorder.takeSeconds = 0;
    for (const [source, c] of opened) await feed(source, c);
    setPhase('recording');
    refreshDevices();
  } catch (error) {
    await Promise.all([...opened.values()].map((c) => c.stop()));
    await stopCaptures();
    streams.forEach(release);
    setPhase('idle');
    say(`Could not start: ${error.message}`, 'error');
  }
}

/** Stops everyone: the server asks each browser to send the rest; the session completes by itself. */
async function stop() {
  if (recorder.phase !== 'recording') return;
  setPhase('saving');
  // Each track says `done` as soon as the server has all of it: no hanging up in between.
  await stopCaptures({ done: true });
  const id = recorder.session.id;
  say('Stopping: every browser sends what it still holds…');
  try {
    await whenReachable(() => api.stopSession(id));
  } catch (error) {
    if (error.code !== 'invalid_transition') {
      setPhase('idle');
      return say(`Could not stop the recording: ${error.message}. Every track is still safe.`, 'error');
    }
  }
  await closeOutOwnTracks(id);
  const session = await completed(id);
  const kept = [...recorder.uplinks.values()].reduce((sum, uplink) => sum + uplink.unackedSeconds(), 0);
  if (kept === 0) await spool.forgetSession(id).catch(() => {});
  await recorder.context?.close();
  recorder.context = null;
  showResult(session);
  if (kept > 0) say(`The session was marked complete before ${kept.toFixed(1)} s of this browser's audio reached the server.`, 'warn');
}

/** Says `done` for every track of this host: its own uplinks, and tracks of earlier takes. */
async function closeOutOwnTracks(id) {
  for (const uplink of recorder.uplinks.values()) if (!uplink.isOver()) uplink.end({ done: true });
  const session = await api.getSession(id).catch(() => null);
  for (const track of session?.tracks ?? []) {
    const mine = recorder.uplinks.get(track.name);
    if (track.participant || track.done || track.connected || (mine && !mine.isOver())) continue;
    // A track no source of this page feeds (an earlier take's, or a full one): it is complete.
    const closer = new TrackUplink({ session: id, track: track.name, sampleRate: track.sampleRate });
    closer.end({ done: true });
  }
}

/** Resolves with the session once it is completed (every track done, or Mark complete). */
async function completed(id) {
  for (;;) {
    const session = roster.session?.status === 'completed' ? roster.session : await roster.refresh();
    if (session?.status === 'completed') return session;
    const failed = [...recorder.uplinks.values()].find((uplink) => uplink.state === 'failed');
    if (failed) say(`${failed.track}: ${failed.reason}. The browser keeps its audio.`, 'error');
    await new Promise((resolve) => setTimeout(resolve, STOP_POLL_MS));
  }
}

function capture(source, stream) {
  return new Capture(recorder.context, stream, {
    onEnded: () => say(`The ${source === MIC ? 'microphone' : source} stopped (unplugged, or sharing ended).`, 'warn'),
  });
}

/**
 * Opens the source's track uplink, waits for the server's `ready`, then hands the capture's
 * audio (held since it started) to it. On failure the capture is still the caller's to stop.
 */
async function feed(source, capture) {
  const track = recorder.feeds.get(source) ?? latestOf(source);
  const uplink = uplinkFor(track, recorder.context.sampleRate);
  try {
    await uplink.begin();
  } catch (error) {
    uplink.end();
    throw error;
  }
  recorder.feeds.set(source, track);
  recorder.captures.set(source, capture);
  capture.attach((pcm, frames) => {
    recorder.uplinks.get(recorder.feeds.get(source)).push(pcm);
    if (source === MIC) recorder.takeSeconds += frames / capture.sampleRate;
  });
}

async function stopCaptures({ done = false } = {}) {
  const captures = [...recorder.captures];
  recorder.captures.clear();
  await Promise.all(captures.map(([, capture]) => capture.stop()));
  for (const [source] of captures) recorder.uplinks.get(recorder.feeds.get(source))?.end({ done });
}

/**
 * A track is full (4 GiB): its source goes on in the next track of its name (`mic-2`, ...),
 * starting with the audio the full one did not store, so not a sample is lost or repeated.
 * Until the switch, captured audio waits in the full track's queue, in order.
 */
async function rollOver(full) {
  const session = await api.getSession(full.session).catch(() => null);
  const stored = session?.tracks?.find((track) => track.name === full.track)?.dataBytes;
  const source = [...recorder.feeds].find(([, track]) => track === full.track)?.[0];
  const next = nextTrackName(full.track, session);
  const uplink = uplinkFor(next, full.sampleRate);
  uplink.begin().catch((error) => say(`${next}: ${error.message}`, 'error'));
  uplink.adopt(full.takeRest(stored));
  if (source) recorder.feeds.set(source, next);
  if (!source || !recorder.captures.has(source)) uplink.end({ done: recorder.phase === 'saving' });
  say(`${full.track} is full (4 GiB): recording goes on in ${next} without a gap.`, 'warn');
}

/** `mic` -> `mic-2`, `mic-2` -> `mic-3`, skipping names the session or this page already has. */
function nextTrackName(track, session) {
  const [, base, number] = /^(.*?)(?:-(\d+))?$/.exec(track);
  const known = [...(session?.tracks ?? []), ...(roster.session?.tracks ?? [])].map((t) => t.name);
  const taken = new Set([...known, ...recorder.uplinks.keys(), ...roster.invites.map((invite) => invite.track)]);
  for (let n = Number(number ?? 1) + 1; ; n += 1) if (!taken.has(`${base}-${n}`)) return `${base}-${n}`;
}

/** Switches a source while recording; its track goes on where it was. */
async function changeSource(source, openStream) {
  if (recorder.phase !== 'recording') return;
  const old = recorder.captures.get(source);
  recorder.captures.delete(source);
  await old?.stop();
  recorder.uplinks.get(recorder.feeds.get(source))?.end();
  let stream;
  let next;
  try {
    stream = await openStream();
    if (!stream) return;
    next = capture(source, stream);
    await next.started();
    await feed(source, next);
  } catch (error) {
    if (next) await next.stop();
    else if (stream) release(stream);
    say(`Could not switch ${source}: ${error.message}`, 'error');
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

/**
 * The second source keeps the host's existing second track (not a guest's), else names a new
 * one; after a rollover (`guest-2`) it is still the source `guest`.
 */
function secondTrackName() {
  const guests = new Set([
    ...roster.invites.map((invite) => invite.track),
    ...(recorder.session?.tracks ?? []).filter((t) => t.participant).map((t) => t.name),
  ]);
  const names = [...(recorder.session?.tracks ?? []).map((t) => t.name), ...recorder.uplinks.keys()];
  const existing = names.find((name) => !guests.has(name) && !isChainOf(MIC, name));
  if (existing) return existing.replace(/-\d+$/, '');
  return trackNameFor(ui.secondSource.value === 'tab' ? 'system' : 'guest', new Set([...names, ...guests]));
}

/** `mic`, `mic-2`, `mic-3`, ...: the tracks one source went through. */
function isChainOf(source, name) {
  return name === source || (name.startsWith(`${source}-`) && /^\d+$/.test(name.slice(source.length + 1)));
}

/** The latest track of a source's chain that the session or this page has. */
function latestOf(source) {
  const names = [...(recorder.session?.tracks ?? []).map((t) => t.name), ...recorder.uplinks.keys()];
  const number = (name) => (name === source ? 1 : Number(name.slice(source.length + 1)));
  return names.filter((name) => isChainOf(source, name)).sort((a, b) => number(b) - number(a))[0] ?? source;
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
    // The host pressed Stop (in another tab, or before this page was reloaded): a recording
    // stops; a track that only uploads what the browser kept says `done` once it is sent.
    uplink.addEventListener('stop', () => {
      if (recorder.phase === 'recording') stop();
      else if (!uplink.live) uplink.end({ done: true });
    });
    recorder.uplinks.set(track, uplink);
  }
  return uplink;
}

/** The server will take no more of a track: the session was finished or deleted elsewhere. */
async function onTrackEnded(uplink) {
  if (uplink.state === 'full') return rollOver(uplink);
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

/** Runs an API call, waiting out a server that is down; a refusal is the caller's. */
async function whenReachable(call) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await call();
    } catch (error) {
      if (error.status) throw error;
      say('Waiting for the server to answer…');
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
  roster.follow(session);
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

/**
 * The server renders the interrupted sessions into the banner (the same markup as the history
 * page); this adds what only this browser knows: how much audio it still holds of each, and the
 * sessions it holds audio of that are not interrupted yet, from the banner's item template.
 */
async function offerRecovery() {
  const kept = await spool.keptSeconds().catch(() => new Map());
  for (const [id, seconds] of kept) {
    let item = recoveryItemOf(id);
    if (!item) {
      // undefined: the server could not be asked; null: it has no such session.
      const session = await api.getSession(id).catch((error) => (error.status === 404 ? null : undefined));
      if (session === null || session?.status === 'completed') {
        // The server takes no more audio for it: nothing is left to do with the copy.
        await spool.forgetSession(id).catch(() => {});
        continue;
      }
      if (!session) continue;
      item = newRecoveryItem(session);
    }
    if (seconds > 0) {
      const note = item.querySelector('.recovery-kept');
      note.textContent = `${seconds.toFixed(1)} s kept in this browser: Resume uploads what the server lacks`;
      note.hidden = false;
    }
  }
  const count = ui.recoveryList.children.length;
  ui.recovery.querySelector('h2').textContent = `${count} interrupted recording${count === 1 ? '' : 's'}`;
  for (const time of ui.recoveryList.querySelectorAll('time[datetime]')) {
    if (time.dateTime) time.textContent = localTime(time.dateTime);
  }
  ui.recovery.hidden = ui.recoveryList.children.length === 0;
}

function recoveryItemOf(id) {
  return [...ui.recoveryList.children].find((item) => item.dataset.sessionId === id);
}

/** An item for a session the server did not list, from the template the server rendered. */
function newRecoveryItem(session) {
  const item = $('recovery-item').content.firstElementChild.cloneNode(true);
  item.dataset.sessionId = session.id;
  item.querySelector('.recovery-title').textContent = session.title;
  item.querySelector('time').dateTime = session.lastHeartbeat;
  item.querySelector('[data-testid="resume"]').href = `/record?session=${encodeURIComponent(session.id)}`;
  item.querySelector('[data-action="finish"]').dataset.sessionId = session.id;
  ui.recoveryList.append(item);
  return item;
}

/** Mark complete, from the banner: the session ends and this browser forgets its copy. */
async function finishFromBanner(event) {
  const button = event.target.closest('button[data-action="finish"]');
  if (!button || button.disabled) return;
  const item = button.closest('li');
  button.disabled = true;
  try {
    await api.finishSession(button.dataset.sessionId);
    await spool.forgetSession(button.dataset.sessionId).catch(() => {});
    item.remove();
    ui.recovery.hidden = ui.recoveryList.children.length === 0;
  } catch (error) {
    button.disabled = false;
    say(`Could not mark it complete: ${error.message}`, 'error');
  }
}

function showResult(session) {
  recorder.session = session;
  roster.session = session;
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
  roster.setPhase(phase);
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
  const busy = uplinks.filter((uplink) => !['idle', 'finished', 'full'].includes(uplink.state));
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
      levelMeter(),
      element('span', { className: 'muted' }),
    ]);
    row.dataset.testid = 'track';
    row.dataset.track = uplink.track;
    ui.tracks.append(row);
  }
  const source = [...recorder.feeds].find(([, track]) => track === uplink.track)?.[0];
  const level = recorder.captures.get(source)?.level ?? 0;
  row.querySelector('meter').value = meterValue(level);
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
  // Before the microphone is allowed, devices come without ids; only the defaults apply then.
  const inputs = await inputDevices();
  fillSelect(ui.micSource, inputs, [['', 'Default microphone']], []);
  fillSelect(ui.secondSource, inputs, [['', 'None']], [['tab', 'Tab or screen audio']]);
}

function fillSelect(select, devices, before, after) {
  const chosen = select.value;
  const options = [...before, ...devices.map((d, i) => [d.deviceId, d.label || `Input ${i + 1}`]), ...after];
  select.replaceChildren(...options.map(([value, label]) => element('option', { value, textContent: label })));
  select.value = options.some(([value]) => value === chosen) ? chosen : '';
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
ui.recoveryList.addEventListener('click', finishFromBanner);
