// The browser's own copy of every chunk the server has not acked yet, in IndexedDB: a reload
// or a crash of the browser loses nothing that got here. One record per chunk, keyed by
// [session, track, offset], so a range of keys is a stretch of one track in order; a second
// store keeps each track's sample rate, needed to reopen its socket from a fresh page. The
// audio is always one channel of 16-bit samples. A chunk keeps `capturedAt`, the client time
// (clock.js) of its first sample, so audio kept through an outage or a reload keeps the moment it
// was captured; chunks an older page kept have none.

const DATABASE = 'safetake';
const CHUNKS = 'chunks';
const TRACKS = 'tracks';

let database;

function open() {
  database ??= new Promise((resolve, reject) => {
    const request = indexedDB.open(DATABASE, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(CHUNKS, { keyPath: ['session', 'track', 'offset'] });
      request.result.createObjectStore(TRACKS, { keyPath: ['session', 'track'] });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return database;
}

function committed(transaction) {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = transaction.onabort = () =>
      reject(transaction.error ?? new Error('the browser storage refused the write'));
  });
}

/**
 * Runs `work` on the named stores in one transaction. Read-write transactions on the same store
 * run in the order they were opened, so a chunk's put always lands before its delete.
 */
async function transact(names, mode, work) {
  const transaction = (await open()).transaction(names, mode);
  const requests = work(...names.map((name) => transaction.objectStore(name)));
  await committed(transaction);
  return requests?.map((request) => request.result);
}

// Arrays sort after strings, so [session, []] is past every [session, track, offset].
const sessionKeys = (session) => IDBKeyRange.bound([session], [session, []]);
const trackKeys = (session, track, lastOffset = Infinity) =>
  IDBKeyRange.bound([session, track, 0], [session, track, lastOffset]);

export function saveTrack({ session, track, sampleRate }) {
  return transact([TRACKS], 'readwrite', (tracks) => {
    tracks.put({ session, track, sampleRate });
  });
}

export function saveChunks(session, track, chunks) {
  return transact([CHUNKS], 'readwrite', (store) => {
    for (const { offset, pcm, capturedAt } of chunks) store.put({ session, track, offset, pcm, capturedAt });
  });
}

/** Forgets the chunks of a track that start at or before `lastOffset`: they are acked. */
export function dropThrough(session, track, lastOffset) {
  return transact([CHUNKS], 'readwrite', (store) => {
    store.delete(trackKeys(session, track, lastOffset));
  });
}

/** Replaces a track's chunks, when they had to move to other offsets. */
export function replaceTrack(session, track, chunks) {
  return transact([CHUNKS], 'readwrite', (store) => {
    store.delete(trackKeys(session, track));
    for (const { offset, pcm, capturedAt } of chunks) store.put({ session, track, offset, pcm, capturedAt });
  });
}

export function forgetSession(session) {
  return transact([CHUNKS, TRACKS], 'readwrite', (chunks, tracks) => {
    chunks.delete(sessionKeys(session));
    tracks.delete(sessionKeys(session));
  });
}

/** Each kept track of a session with its chunks, in offset order. */
export async function loadSession(session) {
  const [tracks, chunks] = await transact([TRACKS, CHUNKS], 'readonly', (trackStore, chunkStore) => [
    trackStore.getAll(sessionKeys(session)),
    chunkStore.getAll(sessionKeys(session)),
  ]);
  return tracks.map((meta) => ({ meta, chunks: chunks.filter((chunk) => chunk.track === meta.track) }));
}

/** Seconds of kept audio per session, for every session this browser still holds audio of. */
export async function keptSeconds() {
  const [tracks, chunks] = await transact([TRACKS, CHUNKS], 'readonly', (trackStore, chunkStore) => [
    trackStore.getAll(),
    chunkStore.getAll(),
  ]);
  const byteRates = new Map(tracks.map((t) => [`${t.session}/${t.track}`, t.sampleRate * 2]));
  const seconds = new Map();
  for (const { session, track, pcm } of chunks) {
    const rate = byteRates.get(`${session}/${track}`);
    if (rate) seconds.set(session, (seconds.get(session) ?? 0) + pcm.byteLength / rate);
  }
  return seconds;
}
