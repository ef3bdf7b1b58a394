// The audio thread's part of the recorder: turns every render quantum of the (mono) input into
// 16-bit samples and hands them over in chunks of `chunkFrames`, with each chunk's peak for the
// level meter, and the audio clock's frame of its first sample (`startFrame`, from the global
// `currentFrame`), so the page knows when it was captured however late it is sent. Typed arrays
// use the platform's byte order, little-endian wherever browsers run.

class PcmCapture extends AudioWorkletProcessor {
  constructor({ processorOptions }) {
    super();
    this.chunkFrames = processorOptions.chunkFrames;
    this.open = true;
    this.startChunk();
    // The only message is "stop": hand over the partial chunk, then let the node go.
    this.port.onmessage = () => {
      this.post(true);
      this.open = false;
    };
  }

  startChunk() {
    this.samples = new Int16Array(this.chunkFrames);
    this.filled = 0;
    this.peak = 0;
    this.startFrame = null;
  }

  process([input]) {
    if (!this.open) return false;
    const mono = input[0];
    if (mono) for (let i = 0; i < mono.length; i += 1) this.add(mono[i], currentFrame + i);
    return true;
  }

  add(sample, frame) {
    if (this.filled === 0) this.startFrame = frame;
    const clamped = Math.max(-1, Math.min(1, sample));
    this.samples[this.filled++] = Math.round(clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff);
    this.peak = Math.max(this.peak, Math.abs(clamped));
    if (this.filled === this.chunkFrames) this.post(false);
  }

  post(last) {
    const samples = this.filled === this.chunkFrames ? this.samples : this.samples.slice(0, this.filled);
    this.port.postMessage({ pcm: samples.buffer, frames: this.filled, startFrame: this.startFrame, peak: this.peak, last }, [samples.buffer]);
    this.startChunk();
  }
}

registerProcessor('pcm-capture', PcmCapture);
