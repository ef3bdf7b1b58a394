// The host's view of everyone in the session: one row per track (who, connected or not, time
// recorded, seconds not yet saved on the server), kept at most 2 s stale by polling the API,
// and the invites: create one per guest, copy its link, revoke it.

import * as api from './api.js';
import { byteRate, copyText, element, formatClock } from './ui.js';

const POLL_MS = 1500;
/** Links are only shown at creation; the tab remembers them across a reload. */
const LINKS_KEY = 'safetake-invite-links';

/** A track name from a person's name: lower case, `[a-z0-9_-]`, unique among `taken`. */
export function trackNameFor(name, taken) {
  const base =
    name
      .normalize('NFKD')
      .replace(/[\u0300-\u036f]/g, '')
      .toLowerCase()
      .replace(/[^a-z0-9_-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 56) || 'guest';
  if (!taken.has(base)) return base;
  for (let n = 2; ; n += 1) if (!taken.has(`${base}-${n}`)) return `${base}-${n}`;
}

function rememberedLinks() {
  try {
    return new Map(JSON.parse(sessionStorage.getItem(LINKS_KEY) ?? '[]'));
  } catch {
    return new Map();
  }
}

export class Roster extends EventTarget {
  #timer = 0;
  #links = rememberedLinks();
  #busy = false;
  /** Each invite's buttons, made once: a poll that redraws the rows never swaps a button mid-click. */
  #actions = new Map();

  /**
   * `local()` gives the page's own uplinks by track (their backlog is known exactly here);
   * `say(text, kind)` shows a message. Events: `session` (detail: the Session just fetched).
   */
  constructor(parent, before, { local, say }) {
    super();
    this.local = local;
    this.say = say;
    this.session = null;
    this.invites = [];
    this.phase = 'idle';
    this.list = element('ul', { className: 'roster-list' });
    this.name = element('input', { type: 'text', maxLength: 100, placeholder: 'Guest name', autocomplete: 'off' });
    this.name.dataset.testid = 'invite-name';
    this.inviteButton = element('button', { type: 'submit', textContent: 'Invite' });
    this.inviteButton.dataset.testid = 'invite';
    this.link = element('input', { type: 'text', readOnly: true, className: 'invite-link' });
    this.link.dataset.testid = 'invite-link';
    const copy = element('button', { type: 'button', textContent: 'Copy link' });
    copy.addEventListener('click', async () => {
      const copied = await copyText(this.link.value, this.link);
      copy.textContent = copied ? 'Copied' : 'Press Ctrl+C';
      setTimeout(() => (copy.textContent = 'Copy link'), 2000);
    });
    this.linkBox = element('div', { className: 'invite-result', hidden: true }, [
      element('p', { className: 'invite-for' }),
      element('div', { className: 'copy-row' }, [this.link, copy]),
    ]);
    const form = element('form', { className: 'invite-form' }, [
      element('label', {}, ['Invite a guest', this.name]),
      this.inviteButton,
    ]);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#invite();
    });
    this.waiting = element('div', { className: 'stop-wait', hidden: true }, [
      element('p', { className: 'muted' }),
    ]);
    this.finishButton = element('button', { type: 'button', className: 'danger', textContent: 'Mark complete' });
    this.finishButton.dataset.testid = 'mark-complete';
    this.finishButton.addEventListener('click', () => this.#finish());
    this.waiting.append(this.finishButton);
    this.root = element('section', { className: 'roster', hidden: true, ariaLabel: 'Participants' }, [
      element('h2', { textContent: 'Participants' }),
      this.list,
      this.waiting,
      form,
      this.linkBox,
    ]);
    parent.insertBefore(this.root, before);
  }

  /** Follows a session: polls it until it is completed. */
  follow(session) {
    this.session = session;
    this.root.hidden = false;
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.refresh(), POLL_MS);
    this.refresh();
  }

  setPhase(phase) {
    this.phase = phase;
    this.render();
  }

  async refresh() {
    if (!this.session || this.#busy) return this.session;
    this.#busy = true;
    try {
      const id = this.session.id;
      const [session, invites] = await Promise.all([
        api.getSession(id),
        api.listInvites(id).then((page) => page.invites, () => this.invites),
      ]);
      this.session = session;
      this.invites = invites;
      if (session.status === 'completed') clearInterval(this.#timer);
      this.dispatchEvent(new CustomEvent('session', { detail: session }));
    } catch {
      // The server is unreachable for a moment: the rows stay as they were, the next poll retries.
    } finally {
      this.#busy = false;
    }
    this.render();
    return this.session;
  }

  /** Every track name in use or held by an invite, so a new guest gets a name of their own. */
  takenNames() {
    return new Set([
      ...(this.session?.tracks ?? []).map((t) => t.name),
      ...this.invites.filter((i) => !i.revokedAt).map((i) => i.track),
      ...this.local().keys(),
    ]);
  }

  async #invite() {
    const name = this.name.value.trim();
    if (!name || !this.session) return this.name.focus();
    this.inviteButton.disabled = true;
    try {
      let invite;
      const taken = this.takenNames();
      for (let attempt = 0; !invite && attempt < 5; attempt += 1) {
        const track = trackNameFor(name, taken);
        try {
          invite = await api.createInvite(this.session.id, { track, name });
        } catch (error) {
          if (error.code !== 'track_taken') throw error;
          taken.add(track);
        }
      }
      if (!invite) throw new Error('every track name for that guest is taken');
      this.#links.set(invite.id, invite.url);
      sessionStorage.setItem(LINKS_KEY, JSON.stringify([...this.#links]));
      this.invites = [...this.invites, invite];
      this.name.value = '';
      this.#showLink(invite);
      this.render();
    } catch (error) {
      this.say(`Could not invite ${name}: ${error.message}`, 'error');
    } finally {
      this.inviteButton.disabled = false;
    }
  }

  #showLink(invite) {
    this.link.value = this.#links.get(invite.id) ?? '';
    this.linkBox.querySelector('.invite-for').textContent =
      `Send this link to ${invite.name}. It records into the track ${invite.track}, and only that.`;
    this.linkBox.hidden = !this.link.value;
  }

  async #revoke(invite) {
    try {
      await api.revokeInvite(this.session.id, invite.id);
      this.#links.delete(invite.id);
      if (this.linkBox.querySelector('.invite-for').textContent.includes(` track ${invite.track},`)) this.linkBox.hidden = true;
      await this.refresh();
    } catch (error) {
      this.say(`Could not revoke ${invite.name}'s link: ${error.message}`, 'error');
    }
  }

  async #finish() {
    this.finishButton.disabled = true;
    try {
      await api.finishSession(this.session.id);
    } catch (error) {
      if (error.code !== 'invalid_transition') this.say(`Could not mark it complete: ${error.message}`, 'error');
    } finally {
      this.finishButton.disabled = false;
    }
    await this.refresh();
  }

  render() {
    const session = this.session;
    if (!session) return;
    const tracks = session.tracks ?? [];
    const live = this.invites.filter((invite) => !invite.revokedAt);
    const rows = tracks.map((track) => this.#trackRow(track, live.find((i) => i.track === track.name)));
    // Invited, not joined yet: a row of its own, so the host sees who is still to come.
    for (const invite of live) {
      if (!tracks.some((t) => t.name === invite.track)) rows.push(this.#inviteRow(invite));
    }
    if (rows.length === 0) rows.push(element('li', { className: 'muted', textContent: 'No track yet.' }));
    this.list.replaceChildren(...rows);

    const stopping = this.phase === 'saving' && session.status !== 'completed';
    const pending = tracks.filter((t) => !t.done);
    const gone = pending.filter((t) => !t.connected);
    this.waiting.hidden = !stopping;
    this.waiting.querySelector('p').textContent = gone.length
      ? `Waiting for ${gone.map((t) => t.participant ?? t.name).join(', ')}: their browser is not connected. ` +
        'The session completes when they come back (reopen their link) and send the rest, or Mark complete now.'
      : `Saving: ${pending.length} of ${tracks.length} tracks still sending what their browser holds.`;
    this.root.querySelector('.invite-form').hidden = session.status === 'completed' || this.phase === 'saving';
  }

  #trackRow(track, invite) {
    const own = this.local().get(track.name);
    const rate = byteRate(track);
    const backlog = own ? own.unackedSeconds() : (track.clientBacklogBytes ?? 0) / rate;
    const who = track.participant ?? (own ? `${track.name} (this browser)` : track.name);
    let state = track.connected ? 'connected' : 'not connected';
    if (this.session.status === 'completed') state = track.done ? 'saved' : 'ended';
    else if (this.phase === 'saving') state = track.done ? 'saved' : track.connected ? 'saving…' : 'waiting for their browser';
    else if (track.done && !track.connected) state = 'left, all saved';
    const row = element('li', { className: 'participant' }, [
      element('span', { className: 'who' }, [
        element('span', { className: 'dot', ariaHidden: 'true' }),
        element('strong', { textContent: who }),
        track.participant ? element('span', { className: 'muted', textContent: ` ${track.name}` }) : '',
      ]),
      element('span', { className: 'state', textContent: state }),
      element('span', { className: 'recorded', textContent: `${formatClock(track.durationMs / 1000)} recorded` }),
      element('span', { className: 'backlog', textContent: `${backlog.toFixed(1)} s not yet saved` }),
    ]);
    Object.assign(row.dataset, {
      testid: 'participant',
      track: track.name,
      connected: String(track.connected),
      done: String(track.done),
      backlog: backlog.toFixed(1),
    });
    if (invite) row.append(this.#inviteActions(invite));
    return row;
  }

  #inviteRow(invite) {
    const row = element('li', { className: 'participant' }, [
      element('span', { className: 'who' }, [
        element('span', { className: 'dot', ariaHidden: 'true' }),
        element('strong', { textContent: invite.name }),
        element('span', { className: 'muted', textContent: ` ${invite.track}` }),
      ]),
      element('span', { className: 'state', textContent: 'invited, not joined yet' }),
    ]);
    Object.assign(row.dataset, { testid: 'participant', track: invite.track, connected: 'false', done: 'false' });
    row.append(this.#inviteActions(invite));
    return row;
  }

  #inviteActions(invite) {
    const shape = `${this.#links.has(invite.id)}/${this.session.status === 'completed'}`;
    const cached = this.#actions.get(invite.id);
    if (cached?.shape === shape) return cached.actions;
    const actions = element('span', { className: 'actions' });
    this.#actions.set(invite.id, { shape, actions });
    if (this.#links.has(invite.id)) {
      const show = element('button', { type: 'button', textContent: 'Link' });
      show.addEventListener('click', () => this.#showLink(invite));
      actions.append(show);
    }
    if (this.session.status !== 'completed') {
      const revoke = element('button', { type: 'button', className: 'danger', textContent: 'Revoke' });
      revoke.dataset.testid = 'revoke';
      revoke.addEventListener('click', () => this.#revoke(invite));
      actions.append(revoke);
    }
    return actions;
  }
}
