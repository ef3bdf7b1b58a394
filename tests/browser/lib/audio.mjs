// The test's own audio: a WAV of known tones for the fake microphone, and the checks that a
// recorded WAV holds those tones (by frequency, not just by length).

/** 16-bit mono PCM in a plain WAV file. */
export function wavFile(samples, sampleRate) {
  const data = Buffer.alloc(samples.length * 2);
  samples.forEach((sample, i) => data.writeInt16LE(sample, i * 2));
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(sampleRate, 24);
  header.writeUInt32LE(sampleRate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

/**
 * Tones one after the other, each a whole number of cycles long so the joins are smooth:
 * `[{ hz: 440, seconds: 1 }, { hz: 880, seconds: 1 }]`.
 */
export function tones(parts, sampleRate = 48_000, amplitude = 0.5) {
  const samples = [];
  for (const { hz, seconds } of parts) {
    const count = Math.round(seconds * sampleRate);
    for (let n = 0; n < count; n++) samples.push(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * hz * n) / sampleRate)));
  }
  return samples;
}

/** Walks the chunks of a WAV (the contract puts `data` last) into its format and samples. */
export function parseWav(buffer) {
  if (buffer.toString('ascii', 0, 4) !== 'RIFF' || buffer.toString('ascii', 8, 12) !== 'WAVE') throw new Error('not a WAV file');
  let format;
  for (let at = 12; at + 8 <= buffer.length; ) {
    const id = buffer.toString('ascii', at, at + 4);
    const size = buffer.readUInt32LE(at + 4);
    if (id === 'fmt ') {
      format = {
        code: buffer.readUInt16LE(at + 8),
        channels: buffer.readUInt16LE(at + 10),
        sampleRate: buffer.readUInt32LE(at + 12),
        bits: buffer.readUInt16LE(at + 22),
      };
    } else if (id === 'data') {
      if (!format) throw new Error('a data chunk before fmt');
      const end = at + 8 + size;
      if (end !== buffer.length) throw new Error(`the data chunk says ${size} bytes, the file holds ${buffer.length - at - 8}`);
      const samples = new Int16Array(size / 2);
      for (let i = 0; i < samples.length; i++) samples[i] = buffer.readInt16LE(at + 8 + i * 2);
      return { ...format, dataBytes: size, samples };
    }
    at += 8 + size + (size % 2);
  }
  throw new Error('no data chunk');
}

/** The share of a window's energy at `hz` (1 for a pure tone there), by Goertzel. */
function toneShare(window, hz, sampleRate) {
  const coefficient = 2 * Math.cos((2 * Math.PI * hz) / sampleRate);
  let previous = 0;
  let beforePrevious = 0;
  let energy = 0;
  for (const sample of window) {
    const current = sample + coefficient * previous - beforePrevious;
    beforePrevious = previous;
    previous = current;
    energy += sample * sample;
  }
  const power = previous * previous + beforePrevious * beforePrevious - coefficient * previous * beforePrevious;
  return energy === 0 ? 0 : power / ((energy * window.length) / 2);
}

/**
 * Cuts the samples into windows of `windowMs` and names each by the tone that holds most of
 * its energy: `{ windows, counts: { 440: n, 880: n, silent: n, unclear: n } }`.
 */
export function toneReport(samples, sampleRate, frequencies = [440, 880], windowMs = 100) {
  const size = Math.round((sampleRate * windowMs) / 1000);
  const counts = { silent: 0, unclear: 0, ...Object.fromEntries(frequencies.map((hz) => [hz, 0])) };
  const windows = [];
  for (let start = 0; start + size <= samples.length; start += size) {
    const window = samples.subarray(start, start + size);
    const rms = Math.sqrt(window.reduce((sum, s) => sum + s * s, 0) / size) / 32768;
    let label = 'unclear';
    if (rms < 0.01) label = 'silent';
    else {
      for (const hz of frequencies) if (toneShare(window, hz, sampleRate) > 0.6) label = hz;
    }
    counts[label] += 1;
    windows.push(label);
  }
  return { windows, counts };
}

/** The recording is the test tones throughout: both present, hardly anything else. */
export function assertHoldsTones(report, what) {
  const total = report.windows.length;
  const other = report.counts.silent + report.counts.unclear;
  const summary = JSON.stringify(report.counts);
  if (total === 0) throw new Error(`${what}: no audio at all`);
  if (report.counts[440] < total * 0.2 || report.counts[880] < total * 0.2) {
    throw new Error(`${what}: the test tones are not both there: ${summary}`);
  }
  // Windows that straddle a change of tone are neither; a gap would be silent or unclear.
  if (other > total * 0.2) throw new Error(`${what}: too much that is not a test tone: ${summary}`);
  return summary;
}

/**
 * Where a steady sine at `hz` jumps: the sample indices at which a sample departs from what the
 * two before it predict (a pure sine obeys s[n] = 2 cos(w) s[n-1] - s[n-2]) by more than a tenth
 * of the tone's peak, one index per jump. Audio dropped or repeated between two chunks shows as
 * a jump; audio the browser never produced (a late audio thread) does not.
 */
export function sineJumps(samples, hz, sampleRate) {
  const coefficient = 2 * Math.cos((2 * Math.PI * hz) / sampleRate);
  let peak = 0;
  for (const sample of samples) peak = Math.max(peak, Math.abs(sample));
  const jumps = [];
  for (let n = 2; n < samples.length; n++) {
    const residual = samples[n] - coefficient * samples[n - 1] + samples[n - 2];
    if (Math.abs(residual) > peak * 0.1 && (jumps.length === 0 || n - jumps.at(-1) > 2)) jumps.push(n);
  }
  return jumps;
}
