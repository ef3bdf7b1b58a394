// Audio sources as raw 16-bit PCM. An AudioWorklet hands over the samples themselves:
// MediaRecorder would hand over a compressed stream that cannot be resumed byte for byte.

const CHUNK_MS = 50;
/** A suspended audio context never answers "stop"; the partial chunk is then given up. */
const STOP_TIMEOUT_MS = 1000;
/** A podcast wants the voice as it is: no echo cancelling, no noise gate, no gain riding. */
const RAW = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

/** One context for every source, so all tracks share one sample clock and one rate. */
export async function openAudioContext(sampleRate) {
  const context = new AudioContext(sampleRate ? { sampleRate } : undefined);
  await context.audioWorklet.addModule('/static/pcm-worklet.js');
  await context.resume();
  return context;
}

export function microphone(deviceId) {
  const device = deviceId ? { deviceId: { exact: deviceId } } : {};
  return navigator.mediaDevices.getUserMedia({ audio: { ...RAW, channelCount: 1, ...device } });
}

/** A tab's or the screen's sound. Chrome only shares audio along with video, which we ignore. */
export async function tabAudio() {
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: RAW, systemAudio: 'include' });
  if (stream.getAudioTracks().length === 0) {
    stream.getTracks().forEach((track) => track.stop());
    throw new Error('the shared tab or screen has no sound: tick "Share audio" when picking it');
  }
  return stream;
}

export class Capture {
  #stopped;

  /** Starts at once: `onChunk(pcm, frames)` gets each chunk as little-endian 16-bit bytes. */
  constructor(context, stream, { onChunk, onEnded }) {
    this.stream = stream;
    this.level = 0;
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
    this.#stopped = new Promise((resolve) => {
      this.node.port.onmessage = ({ data }) => {
        this.level = data.peak;
        if (data.frames > 0) onChunk(new Uint8Array(data.pcm), data.frames);
        if (data.last) resolve();
      };
    });
    this.source.connect(this.node).connect(this.mute).connect(context.destination);
    stream.getAudioTracks().forEach((track) => track.addEventListener('ended', onEnded));
  }

  /** Hands over the last partial chunk, then releases the device. */
  async stop() {
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
