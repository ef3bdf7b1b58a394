// One track's way to the server. Every captured byte gets its offset here, once; it is kept in
// memory and in the spool until the server acks it, and after any drop the socket comes back by
// itself and resends from the server's `ready.offset`. So the track on disk has no gap and no
// duplicate, whatever happens to the connection. It tells the server how much it still holds
// (`backlog`), hears the host's `stop`, and says `done` once the server has all of it.
// It keeps the page's clock estimate fresh (`clock` exchanges when a socket is ready and every
// half minute) and tells the server when its audio was captured (`mark`): for the first chunk a
// socket sends and every few seconds of audio after, from the chunk's own capture time, so audio
// resent after an outage keeps the moment it was captured.

import { getSession, socketUrl } from './api.js';
import { clientNow, clock } from './clock.js';
import * as spool from './spool.js';

const HEADER_BYTES = 8;
/** What the recorder sends: one channel of 16-bit little-endian samples. */
const CHANNELS = 1;
const FORMAT = 's16le';
const BYTES_PER_FRAME = CHANNELS * 2;
/** Backoff after a drop; each delay is spread by ±20 % so many recorders do not return at once. */
const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000];
/** A socket that has not said `ready` by then is given up (a half-open network) and retried. */
const READY_TIMEOUT_MS = 8000;
/** How often the server hears how much this browser still holds (the host's roster shows it). */
const BACKLOG_INTERVAL_MS = 2000;
/** Clock exchanges: a round of a few, spaced out, when a socket is ready and every half minute. */
const CLOCK_ROUND = 5;
const CLOCK_SPACING_MS = 100;
const CLOCK_INTERVAL_MS = 30_000;
/** A mark goes with the first chunk a socket sends and then once per this much audio. */
const MARK_EVERY_SECONDS = 5;
const CLOSE_REASONS = new Map([
  [1001, 'server restarting'],
  [1006, 'connection lost'],
  [1011, 'server could not store audio'],
  [4001, 'replaced by another recorder'],
  [4009, 'gap, resending'],
  [4408, 'timed out'],
]);

const chunkEnd = (chunk) => chunk.offset + chunk.pcm.byteLength;

/**
 * A mark waits for a round of clock exchanges: the first exchange comes back just as the page
 * is busiest (capture starting, the held chunks going out), and an answer heard late skews a
 * lone estimate by half the delay, which every later mark would then disagree with. The
 * shortest round trips of a whole round are right to a few milliseconds. (The first mark's
 * known offset against the later ones is the audio clock's, not this: see the README.)
 */
const clockSettled = () => clock.exchanges() >= CLOCK_ROUND;

/**
 * States: `idle` (no socket needed), `connecting`, `connected` (ready received), `retrying`
 * (waiting out a backoff), and the ends: `finished` (the session was finished), `full` (the
 * track holds 4 GiB: the owner goes on in a new track with what is left in `queue`) and
 * `failed` (the track can take no more: deleted session, revoked invite).
 *
 * Events: `notice` (detail: a sentence for the user), `ended` (the track reached an end),
 * `stop` (the host stopped the recording for everyone), `done` (the server has every byte and
 * was told so).
 */
export class TrackUplink extends EventTarget {
  #socket = null;
  #sawReady = false;
  #finishedByServer = false;
  #spoolWarned = false;
  #attempt = 0;
  #retryTimer = 0;
  #readyTimer = 0;
  #backlogTimer = 0;
  #clockTimers = [];
  #clockInterval = 0;
  /** The offset of the last mark sent; the server ignores any mark not past it. */
  #lastMark = -1;
  /** This socket still owes the mark of the first chunk it sent. */
  #markDue = false;
  /** That mark, waiting for the clock's first estimate. */
  #pendingMark = null;
  /** `done` is to be sent once every byte is acked. */
  #owesDone = false;
  #drainWaiters = [];
  #firstReady;
  #resolveFirstReady;

  constructor({ session, track, sampleRate }) {
    super();
    Object.assign(this, { session, track, sampleRate });
    this.byteRate = sampleRate * BYTES_PER_FRAME;
    /**
     * Chunks not acked yet, `{offset, pcm, capturedAt}` in offset order; `capturedAt` is the
     * client time (clock.js) of the chunk's first sample, unknown for silence and old spools.
     */
    this.queue = [];
    this.queuedBytes = 0;
    /** The offset the next captured byte gets; known for sure once the server said `ready`. */
    this.nextOffset = 0;
    this.based = false;
    this.acked = 0;
    /** A source is feeding this track: the socket stays up even with nothing to send. */
    this.live = false;
    /** Keep a socket up with nothing to send, to hear the host's `stop` (a guest's open page). */
    this.standby = false;
    /** The host asked everyone to stop (a `stop` message came). */
    this.stopRequested = false;
    /** `done` was sent, and no audio has come since. */
    this.doneSent = false;
    this.state = 'idle';
    this.reason = '';
    this.retryAt = 0;
    this.#firstReady = new Promise((resolve) => (this.#resolveFirstReady = resolve));
  }

  /** Takes back what an earlier page kept in the spool, and sends it. */
  restore(chunks) {
    for (const chunk of chunks) this.#enqueue(chunk);
    this.nextOffset = chunks.length ? chunkEnd(chunks[chunks.length - 1]) : 0;
    this.#wake();
  }

  /** Takes chunks that another track could not store (a rollover): kept and sent from here. */
  adopt(pcms) {
    for (const pcm of pcms) this.push(pcm);
  }

  /** Keeps a socket attached while nothing is sent, so the host's `stop` reaches this page. */
  hold() {
    this.standby = true;
    this.#wake();
  }

  /** Starts feeding: resolves once the server has said where the track ends. */
  async begin() {
    this.live = true;
    this.doneSent = false;
    await spool.saveTrack(this).catch((error) => this.#spoolFailed(error));
    this.#wake();
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('the server did not answer')), 2 * READY_TIMEOUT_MS);
    });
    try {
      await Promise.race([this.#firstReady, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Numbers a chunk of captured PCM, keeps it, and sends it if the socket is up. `capturedAt`:
   * the client time of its first sample (Capture gives it as `pcm.capturedAt`).
   */
  push(pcm, capturedAt = pcm.capturedAt) {
    this.doneSent = false;
    const chunk = { offset: this.nextOffset, pcm };
    if (Number.isFinite(capturedAt)) chunk.capturedAt = capturedAt;
    this.nextOffset += pcm.byteLength;
    this.#enqueue(chunk);
    this.#keep([chunk]);
    if (this.state === 'connected') this.#send(chunk);
  }

  /**
   * No more capture: asks for an ack at once; the socket closes when all is acked. With `done`
   * the server is told, once it has every byte, that this track is complete (the host's Stop
   * waits for that), reconnecting for it if need be.
   */
  end({ done = false } = {}) {
    this.live = false;
    if (done) {
      // Said already, and nothing captured since: once is enough.
      if (!this.doneSent) this.#owesDone = true;
      this.standby = false;
    }
    if (this.state === 'connected') this.#socket.send(JSON.stringify({ type: 'flush' }));
    this.#settle();
    this.#wake();
  }

  /** Resolves when every byte is acked, or when the track has reached an end. */
  drained() {
    if (this.queue.length === 0 || this.isOver()) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /**
   * A full track's audio that the server did not store (it stores up to `stored`, its
   * `dataBytes`), in order, to go on in a new track; this track's spool forgets it (the new
   * track keeps it from now on).
   */
  takeRest(stored = this.acked) {
    const rest = [];
    for (const { offset, pcm, capturedAt } of this.queue.splice(0)) {
      if (offset + pcm.byteLength <= stored) continue;
      const skipped = Math.max(0, stored - offset);
      const part = skipped ? pcm.subarray(skipped) : pcm;
      // Keeps its capture time along to the next track (`adopt` reads it back).
      if (Number.isFinite(capturedAt)) part.capturedAt = capturedAt + (skipped / this.byteRate) * 1000;
      rest.push(part);
    }
    this.queuedBytes = 0;
    spool.replaceTrack(this.session, this.track, []).catch((error) => this.#spoolFailed(error));
    return rest;
  }

  /** The network is back: no need to wait out the backoff. */
  retryNow() {
    if (this.state === 'retrying' && this.retryAt > 0) this.#connect();
  }

  isOver() {
    return this.state === 'finished' || this.state === 'failed' || this.state === 'full';
  }

  wanted() {
    return (this.live || this.standby || this.#owesDone || this.queue.length > 0) && !this.isOver();
  }

  /** Bytes of it this browser holds that the server has not acked. */
  unackedBytes() {
    return this.queuedBytes;
  }

  unackedSeconds() {
    return this.queuedBytes / this.byteRate;
  }

  #wake() {
    if (this.wanted() && !this.#socket && this.state !== 'retrying') this.#connect();
  }

  #connect() {
    clearTimeout(this.#retryTimer);
    const socket = new WebSocket(
      socketUrl(this.session, {
        track: this.track,
        sampleRate: this.sampleRate,
        channels: CHANNELS,
        format: FORMAT,
      }),
    );
    socket.binaryType = 'arraybuffer';
    socket.onmessage = (event) => socket === this.#socket && this.#onMessage(event.data);
    socket.onclose = (event) => socket === this.#socket && this.#onClose(event.code);
    this.#socket = socket;
    this.#sawReady = false;
    this.state = 'connecting';
    this.#readyTimer = setTimeout(() => this.#sawReady || socket.close(), READY_TIMEOUT_MS);
  }

  #sendBacklog() {
    if (this.state !== 'connected') return;
    this.#socket.send(JSON.stringify({ type: 'backlog', bytes: this.queuedBytes }));
  }

  #onMessage(data) {
    if (typeof data !== 'string') return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    switch (message.type) {
      case 'ready':
        return this.#onReady(message.offset);
      case 'ack':
        return this.#onAck(message.offset);
      case 'clock':
        return this.#onClock(message);
      case 'finished':
        this.#finishedByServer = true;
        return;
      case 'stop':
        if (this.stopRequested) return;
        this.stopRequested = true;
        this.dispatchEvent(new CustomEvent('stop'));
        return;
      case 'error':
        console.warn(`track ${this.track}: server error`, message);
    }
  }

  #onReady(stored) {
    clearTimeout(this.#readyTimer);
    this.#sawReady = true;
    this.#attempt = 0;
    if (!this.based) {
      // The first word from the server: new audio goes after all it holds and all we hold.
      this.nextOffset = Math.max(this.nextOffset, stored);
      this.based = true;
      this.#resolveFirstReady();
    }
    this.#realign(stored);
    this.state = 'connected';
    this.reason = '';
    this.#onAck(stored); // ready.offset is on stable storage: as good as an ack
    if (this.state !== 'connected') return; // settled and hung up: nothing was left to send
    this.#startClock();
    this.#markDue = true;
    this.#pendingMark = null;
    for (const chunk of this.queue) this.#send(chunk);
    this.#sendBacklog();
    clearInterval(this.#backlogTimer);
    this.#backlogTimer = setInterval(() => this.#sendBacklog(), BACKLOG_INTERVAL_MS);
  }

  /** Makes what we hold start exactly where the server's track ends, losing no audio. */
  #realign(stored) {
    const holdsFrom = this.queue.length ? this.queue[0].offset : this.nextOffset;
    if (stored < holdsFrom) {
      // The server lacks audio we no longer hold (the spool lost it): silence keeps every
      // later byte at its place, in line with the other tracks.
      const silence = { offset: stored, pcm: new Uint8Array(holdsFrom - stored) };
      this.queue.unshift(silence);
      this.queuedBytes += silence.pcm.byteLength;
      this.#keep([silence]);
      this.#notice(`${this.#seconds(silence.pcm.byteLength)} s of ${this.track} never reached the server; filled with silence`);
    } else if (stored > this.nextOffset) {
      // Another recorder wrote past us: our audio goes after its, rather than being taken
      // for a resend of bytes the server already has.
      const shift = stored - holdsFrom;
      for (const chunk of this.queue) chunk.offset += shift;
      this.nextOffset += shift;
      spool.replaceTrack(this.session, this.track, this.queue).catch((error) => this.#spoolFailed(error));
      this.#notice(`another recorder wrote to ${this.track}; this browser's audio follows it`);
    }
  }

  #onAck(offset) {
    this.acked = Math.max(this.acked, offset);
    let lastDropped = null;
    while (this.queue.length && chunkEnd(this.queue[0]) <= offset) {
      lastDropped = this.queue.shift();
      this.queuedBytes -= lastDropped.pcm.byteLength;
    }
    if (lastDropped) {
      spool.dropThrough(this.session, this.track, lastDropped.offset).catch((error) => this.#spoolFailed(error));
    }
    this.#settle();
  }

  /**
   * When nothing is left to send: wakes whoever waits, says `done` if it is owed, and hangs up
   * if no source feeds us and no one waits for a `stop`.
   */
  #settle() {
    if (this.queue.length > 0) return;
    this.#drainWaiters.splice(0).forEach((resolve) => resolve());
    if (this.live || this.state !== 'connected') return;
    if (this.#owesDone) {
      this.#owesDone = false;
      this.doneSent = true;
      this.#socket.send(JSON.stringify({ type: 'done' }));
      this.dispatchEvent(new CustomEvent('done'));
    } else if (this.standby) {
      return;
    }
    const socket = this.#socket;
    this.#socket = null;
    clearInterval(this.#backlogTimer);
    this.#stopClock();
    this.state = 'idle';
    socket.close(1000);
  }

  #onClose(code) {
    clearTimeout(this.#readyTimer);
    clearInterval(this.#backlogTimer);
    this.#stopClock();
    this.#socket = null;
    if (code === 1000 || this.#finishedByServer) return this.#end('finished', 'the session was finished');
    if (code === 4413) return this.#end('full', 'the track is full (4 GiB, about 12 hours)');
    if (code === 4403) return this.#end('failed', 'the invite was revoked or the session deleted');
    if (!this.wanted()) {
      this.state = 'idle';
      return;
    }
    const reason = CLOSE_REASONS.get(code) ?? `closed (${code})`;
    // Another recorder took the track: come back, but only after the longest wait, so two
    // recorders of one track do not take it from each other four times a second.
    if (code === 4001) this.#attempt = RETRY_DELAYS_MS.length - 1;
    if (this.#sawReady) return this.#retryLater(reason);
    // Refused before the upgrade, and a browser cannot see why: ask the API whether it is worth it.
    this.#probe(reason);
  }

  async #probe(reason) {
    this.state = 'retrying';
    this.retryAt = 0;
    try {
      const session = await getSession(this.session);
      if (session.status === 'completed') return this.#end('finished', 'the session was finished');
      const stored = session.tracks.find((track) => track.name === this.track);
      if (stored && (stored.sampleRate !== this.sampleRate || stored.channels !== CHANNELS || stored.format !== FORMAT)) {
        return this.#end('failed', `the server's ${this.track} track has another format`);
      }
    } catch (error) {
      if (error.status === 404) return this.#end('failed', 'the session was deleted');
      // A guest's link that no longer works (revoked, or its session ended and forgotten).
      if (error.status === 401 || error.status === 403) return this.#end('failed', 'this link no longer works');
    }
    this.#retryLater(reason);
  }

  #retryLater(reason) {
    const base = RETRY_DELAYS_MS[Math.min(this.#attempt, RETRY_DELAYS_MS.length - 1)];
    const delay = base * (0.8 + Math.random() * 0.4);
    this.#attempt += 1;
    this.state = 'retrying';
    this.reason = reason;
    this.retryAt = Date.now() + delay;
    this.#retryTimer = setTimeout(() => {
      if (this.wanted()) this.#connect();
      else this.state = 'idle';
    }, delay);
  }

  #end(state, reason) {
    clearTimeout(this.#retryTimer);
    this.state = state;
    this.reason = reason;
    this.live = false;
    this.#drainWaiters.splice(0).forEach((resolve) => resolve());
    this.dispatchEvent(new CustomEvent('ended', { detail: reason }));
  }

  #enqueue(chunk) {
    this.queue.push(chunk);
    this.queuedBytes += chunk.pcm.byteLength;
  }

  #send(chunk) {
    const { offset, pcm } = chunk;
    const frame = new Uint8Array(HEADER_BYTES + pcm.byteLength);
    new DataView(frame.buffer).setBigUint64(0, BigInt(offset), true);
    frame.set(pcm, HEADER_BYTES);
    this.#socket.send(frame);
    this.#markIfDue(chunk);
  }

  #startClock() {
    this.#stopClock();
    const round = () => {
      for (let i = 0; i < CLOCK_ROUND; i += 1) {
        this.#clockTimers.push(setTimeout(() => this.#sendClock(), i * CLOCK_SPACING_MS));
      }
    };
    round();
    this.#clockInterval = setInterval(() => {
      this.#clockTimers.splice(0).forEach(clearTimeout);
      round();
    }, CLOCK_INTERVAL_MS);
  }

  #stopClock() {
    this.#clockTimers.splice(0).forEach(clearTimeout);
    clearInterval(this.#clockInterval);
  }

  #sendClock() {
    if (this.state !== 'connected' || !this.#socket) return;
    this.#socket.send(JSON.stringify({ type: 'clock', clientTime: clientNow() }));
  }

  #onClock({ clientTime, serverTime }) {
    clock.add(clientTime, serverTime, clientNow());
    const pending = this.#pendingMark;
    if (pending && clockSettled()) {
      this.#pendingMark = null;
      this.#sendMark(pending);
    }
  }

  /**
   * The first chunk a socket sends, and then one every few seconds of audio, is marked with the
   * server time of its capture; a mark waits for the clock's first estimate, and one not past the
   * last mark is not sent (a resend of audio marked already): the next chunk takes its turn.
   */
  #markIfDue(chunk) {
    if (!Number.isFinite(chunk.capturedAt) || chunk.offset <= this.#lastMark) return;
    const due = this.#markDue || chunk.offset >= this.#lastMark + MARK_EVERY_SECONDS * this.byteRate;
    if (!due) return;
    this.#markDue = false;
    if (!clockSettled()) {
      this.#pendingMark ??= chunk;
      return;
    }
    this.#sendMark(chunk);
  }

  #sendMark({ offset, capturedAt }) {
    if (offset <= this.#lastMark || this.state !== 'connected') return;
    const serverTime = clock.toServer(capturedAt);
    this.#lastMark = offset;
    this.#socket.send(JSON.stringify({ type: 'mark', offset, capturedAt: serverTime }));
  }

  #keep(chunks) {
    spool.saveChunks(this.session, this.track, chunks).catch((error) => this.#spoolFailed(error));
  }

  /** Said once: the audio still goes to the server, only the crash insurance is gone. */
  #spoolFailed(error) {
    if (this.#spoolWarned) return;
    this.#spoolWarned = true;
    this.#notice(`this browser could not keep a copy of ${this.track} (${error.message}); it is still sent`);
  }

  #notice(text) {
    this.dispatchEvent(new CustomEvent('notice', { detail: text }));
  }

  #seconds(bytes) {
    return (bytes / this.byteRate).toFixed(1);
  }
}
