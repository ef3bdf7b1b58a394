// Small pieces every page's script shares: building elements, and numbers in words for people.

export function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

/** `m:ss.t`, as a recording clock reads. */
export function formatClock(seconds) {
  const whole = Math.floor(seconds);
  const minutes = Math.floor(whole / 60);
  const tenths = Math.floor((seconds - whole) * 10);
  return `${minutes}:${String(whole % 60).padStart(2, '0')}.${tenths}`;
}

export function localTime(rfc3339) {
  return new Date(rfc3339).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** A peak level (0..1) as the value of a `<meter min=-60 max=0>`. */
export function meterValue(peak) {
  return peak > 0 ? Math.max(-60, 20 * Math.log10(peak)) : -60;
}

/** The level meter every page shows. */
export const levelMeter = () => element('meter', { min: -60, max: 0, low: -18, high: -3, optimum: -12, value: -60 });

/** Bytes per second of a track as the API describes it. */
export function byteRate(track) {
  return track.sampleRate * track.channels * (track.format === 'f32le' ? 4 : 2);
}

/** Copies text; where the clipboard is not allowed, selects it so the person can copy it. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    input?.select();
    return false;
  }
}
