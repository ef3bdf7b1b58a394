// How far this browser's clock is from the server's. The client clock is `clientNow()`:
// performance.now() (monotonic, sub-millisecond) from the page's time origin, so a time kept in
// the spool by an earlier page still means the same moment. A `clock` exchange gives one
// estimate, `serverTime - (sent + received) / 2`, off by at most half its round trip; those with
// the shortest round trips are trusted.

/** Exchanges kept: a few rounds, so one congested round does not spoil the estimate. */
const KEPT = 15;
/** The estimate is the median of the offsets of this many shortest round trips. */
const TRUSTED = 3;

/** Milliseconds, on the same scale as the epoch, from the monotonic clock of this page. */
export function clientNow() {
  return performance.timeOrigin + performance.now();
}

export class ClockEstimator {
  #samples = [];

  /** One exchange: sent at client time `sent`, answered with `serverTime`, heard at `received`. */
  add(sent, serverTime, received) {
    const roundTrip = received - sent;
    if (![sent, serverTime, received].every(Number.isFinite) || roundTrip < 0) return;
    this.#samples.push({ roundTrip, offset: serverTime - (sent + received) / 2 });
    if (this.#samples.length > KEPT) this.#samples.shift();
  }

  /** Server time minus client time, in ms; null until an exchange came back. */
  offset() {
    if (this.#samples.length === 0) return null;
    const best = [...this.#samples].sort((a, b) => a.roundTrip - b.roundTrip).slice(0, TRUSTED);
    const offsets = best.map((s) => s.offset).sort((a, b) => a - b);
    return offsets[Math.floor(offsets.length / 2)];
  }

  /** How many exchanges the estimate rests on (at most the last few). */
  exchanges() {
    return this.#samples.length;
  }

  /** The round trip of the best exchange, for display and tests; null without one. */
  bestRoundTrip() {
    return this.#samples.length ? Math.min(...this.#samples.map((s) => s.roundTrip)) : null;
  }

  /** Server time of a client time, or null without an estimate. */
  toServer(clientTime) {
    const offset = this.offset();
    return offset === null ? null : clientTime + offset;
  }
}

/** One estimator for the page: every socket of it talks to the same server from the same clock. */
export const clock = new ClockEstimator();
