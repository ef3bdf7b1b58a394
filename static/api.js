// The REST calls of the contract. A refusal becomes an ApiError that carries the server's
// status and code; a network failure stays a plain error (no status), so callers can tell
// "the server said no" from "the server could not be reached".

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? 'http_error', data?.message ?? response.statusText);
  }
  return data;
}

const sessionPath = (id) => `/api/session/${encodeURIComponent(id)}`;

export const createSession = (title) => call('POST', '/api/sessions', title ? { title } : undefined);
export const getSession = (id) => call('GET', sessionPath(id));
export const listSessions = (status) => call('GET', `/api/sessions?status=${encodeURIComponent(status)}`);
export const finishSession = (id) => call('POST', `${sessionPath(id)}/finish`);
export const deleteSession = (id) => call('DELETE', sessionPath(id));
export const stopSession = (id) => call('POST', `${sessionPath(id)}/stop`);
export const createInvite = (id, invite) => call('POST', `${sessionPath(id)}/invites`, invite);
export const listInvites = (id) => call('GET', `${sessionPath(id)}/invites`);
export const revokeInvite = (id, inviteId) => call('DELETE', `${sessionPath(id)}/invites/${encodeURIComponent(inviteId)}`);
export const trackUrl = (id, track) => `${sessionPath(id)}/tracks/${encodeURIComponent(track)}.wav`;

export function socketUrl(id, query) {
  const url = new URL(`${sessionPath(id)}/ws`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = new URLSearchParams(query).toString();
  return url.href;
}
