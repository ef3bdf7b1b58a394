// Audio sources as raw 16-bit PCM. An AudioWorklet hands over the samples themselves:
// MediaRecorder would hand over a compressed stream that cannot be resumed byte for byte.
// Every step that waits on the browser is bounded: a step that never answers (Firefox can leave
// `AudioContext.resume()` pending forever) becomes an error that says what did not start.

const CHUNK_MS = 50;
/** A suspended audio context never answers "stop"; the partial chunk is then given up. */
const STOP_TIMEOUT_MS = 1000;
/** Loading the worklet and starting the audio engine take well under a second when they work. */
const ENGINE_TIMEOUT_MS = 5000;
/** A permission prompt is a person deciding: give them time, but not forever. */
const DEVICE_TIMEOUT_MS = 60_000;
/** A running engine hands over its first chunk within a few render quanta. */
const FIRST_AUDIO_TIMEOUT_MS = 4000;
/** A podcast wants the voice as it is: no echo cancelling, no noise gate, no gain riding. */
const RAW = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

/** Rejects with `message` if `promise` has not settled after `ms`. */
export function bounded(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One context for every source, so all tracks share one sample clock and one rate. */
export async function openAudioContext(sampleRate) {
  const context = new AudioContext(sampleRate ? { sampleRate } : undefined);
  try {
    await bounded(
      context.audioWorklet.addModule('/static/pcm-worklet.js'),
      ENGINE_TIMEOUT_MS,
      'the browser did not load its audio recorder; reload the page and try again',
    );
    await bounded(
      context.resume(),
      ENGINE_TIMEOUT_MS,
      'the browser did not start its audio engine (Firefox sometimes leaves it stuck): ' +
        'close other tabs that use sound, reload the page and try again, or use another browser',
    );
  } catch (error) {
    context.close().catch(() => {});
    throw error;
  }
  return context;
}

/** Opens a device with a bound; a stream granted after the bound is released, not leaked. */
async function device(open, what) {
  const request = open();
  try {
    return await bounded(request, DEVICE_TIMEOUT_MS, `the browser did not give access to ${what} (a question left unanswered, or the device is busy)`);
  } catch (error) {
    request.then((stream) => stream.getTracks().forEach((track) => track.stop()), () => {});
    throw plainDeviceError(error, what);
  }
}

/** The browser's device errors in words a person can act on. */
function plainDeviceError(error, what) {
  const reasons = {
    NotAllowedError: `access to ${what} was refused: allow it in the browser's address bar and try again`,
    NotFoundError: `no ${what} was found: plug one in and try again`,
    NotReadableError: `${what} is in use by another program or cannot be read`,
    OverconstrainedError: `the chosen ${what} is gone: pick another`,
    SecurityError: `this page may not use ${what}: it needs HTTPS (or localhost)`,
  };
  return reasons[error.name] ? new Error(reasons[error.name]) : error;
}

export function microphone(deviceId) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return Promise.reject(new Error('this browser gives no microphone to this page: it needs HTTPS (or localhost)'));
  }
  const choice = deviceId ? { deviceId: { exact: deviceId } } : {};
  return device(() => navigator.mediaDevices.getUserMedia({ audio: { ...RAW, channelCount: 1, ...choice } }), 'the microphone');
}

/** A tab's or the screen's sound. Chrome only shares audio along with video, which we ignore. */
export async function tabAudio() {
  const stream = await device(
    () => navigator.mediaDevices.getDisplayMedia({ video: true, audio: RAW, systemAudio: 'include' }),
    'the tab or screen',
  );
  if (stream.getAudioTracks().length === 0) {
    stream.getTracks().forEach((track) => track.stop());
    throw new Error('the shared tab or screen has no sound: tick "Share audio" when picking it');
  }
  return stream;
}

/** Input devices with ids (before the microphone is allowed, browsers hide them). */
export async function inputDevices() {
  const devices = (await navigator.mediaDevices?.enumerateDevices().catch(() => [])) ?? [];
  return devices.filter((d) => d.kind === 'audioinput' && d.deviceId);
}

/** Readings of the audio clock against the page's kept: about two seconds of chunks. */
const CLOCK_READINGS = 40;

/**
 * Maps the audio clock to client time (`clientNow()`). `currentTime` (where the worklet works,
 * which is where input arrives) is read together with performance.now() for every chunk; the
 * browser updates `currentTime` once per audio callback, so a reading can only be late: the
 * smallest difference of the last two seconds is the truest, and, read afresh all the time, it
 * follows a sound card that runs fast or slow. (`getOutputTimestamp` lags by an output latency
 * that browsers only learn once sound plays.)
 */
class AudioClock {
  #readings = [];

  constructor(context) {
    this.context = context;
  }

  /** The client time at which the audio clock was at `frame`. */
  timeOf(frame) {
    const difference = performance.timeOrigin + performance.now() - this.context.currentTime * 1000;
    this.#readings.push(difference);
    if (this.#readings.length > CLOCK_READINGS) this.#readings.shift();
    return Math.min(...this.#readings) + (frame / this.context.sampleRate) * 1000;
  }
}

export class Capture {
  #stopped;
  #stopping;
  #started;
  #onChunk;
  /** Chunks captured before anyone took them (`attach`): none is lost while a session is made. */
  #held = [];

  /**
   * Starts at once: each chunk, as little-endian 16-bit bytes, goes to `onChunk(pcm, frames)`,
   * or is held until `attach` names where it goes. `pcm.capturedAt` is the client time
   * (`clientNow()`) of its first sample, from the audio clock.
   */
  constructor(context, stream, { onChunk, onEnded } = {}) {
    this.stream = stream;
    this.sampleRate = context.sampleRate;
    this.level = 0;
    this.#onChunk = onChunk;
    this.source = new MediaStreamAudioSourceNode(context, { mediaStream: stream });
    // Web Audio mixes any input down to the one channel each track stores.
    this.node = new AudioWorkletNode(context, 'pcm-capture', {
      channelCount: 1,
      channelCountMode: 'explicit',
      channelInterpretation: 'speakers',
      processorOptions: { chunkFrames: Math.round((context.sampleRate * CHUNK_MS) / 1000) },
    });
    // A node is only processed while it leads to the destination; silence gets there.
    this.mute = new GainNode(context, { gain: 0 });
    const audioClock = new AudioClock(context);
    let firstAudio;
    this.#started = new Promise((resolve) => (firstAudio = resolve));
    this.#stopped = new Promise((resolve) => {
      this.node.port.onmessage = ({ data }) => {
        this.level = data.peak;
        if (data.frames > 0) {
          firstAudio();
          const pcm = new Uint8Array(data.pcm);
          if (Number.isFinite(data.startFrame)) pcm.capturedAt = audioClock.timeOf(data.startFrame);
          if (this.#onChunk) this.#onChunk(pcm, data.frames);
          else this.#held.push([pcm, data.frames]);
        }
        if (data.last) resolve();
      };
    });
    this.source.connect(this.node).connect(this.mute).connect(context.destination);
    if (onEnded) stream.getAudioTracks().forEach((track) => track.addEventListener('ended', onEnded));
  }

  /** Resolves once audio flows; rejects, saying so, when the engine hands over nothing. */
  started() {
    return bounded(
      this.#started,
      FIRST_AUDIO_TIMEOUT_MS,
      'no sound reaches the recorder: the browser opened the microphone but its audio engine does not run; reload the page and try again',
    );
  }

  /** From now on chunks go to `onChunk`, starting with those held so far. */
  attach(onChunk) {
    for (const [pcm, frames] of this.#held.splice(0)) onChunk(pcm, frames);
    this.#onChunk = onChunk;
  }

  /** Hands over the last partial chunk, then releases the device. Once; later calls wait for it. */
  stop() {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop() {
    this.node.port.postMessage('stop');
    await Promise.race([this.#stopped, new Promise((resolve) => setTimeout(resolve, STOP_TIMEOUT_MS))]);
    this.node.port.onmessage = null;
    this.source.disconnect();
    this.node.disconnect();
    this.mute.disconnect();
    this.stream.getTracks().forEach((track) => track.stop());
    this.level = 0;
  }
}
