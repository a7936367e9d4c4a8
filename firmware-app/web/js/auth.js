// Access tokens: read from the join link, exchanged, kept fresh before expiry.
//
// A join link is `/#room=R&token=T` (the fragment never reaches servers or
// their logs); `/?room=R&token=T` works too. The token is removed from the
// address bar once read, so a screenshot or a shared screen does not leak it.
//
// Four kinds of credential arrive here:
//  * an **invite** (identity `invite`, e.g. the demo's link): exchanged at
//    `POST /api/v1/rooms/{room}/join` for a personal token with a unique guest
//    identity; renewed by the same call naming that identity;
//  * an access token with a **refresh token** (admin sign-in): renewed at
//    `POST /api/v1/auth/refresh`, which rotates the refresh token;
//  * a plain access token (`roomboxd token …`): used until it expires;
//  * a **display credential** (`/display#room=R&display=rbd_…`, the admin
//    page's "TV link"): never expires; exchanged at `POST /api/v1/displays/token`
//    for short subscribe-only tokens until an admin revokes it.
//
// `refreshAccessToken` is the one function that knows these endpoints.

const INVITE_IDENTITY = 'invite';
const LINK_KEY = 'roombox.link';
/** Refresh this long before expiry (or at 3/4 of a short lifetime). */
const REFRESH_MARGIN_S = 120;

/** Decode a JWT's payload without verifying it (the server verifies). */
export function jwtClaims(token) {
  try {
    const part = token.split('.')[1];
    const bin = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

/** Read `room`, `token`, `refresh`, `name` from the fragment and the query; strip the secrets from the URL. */
export function readJoinLink(loc = location, { remember = true } = {}) {
  const q = new URLSearchParams(loc.search);
  const f = new URLSearchParams(loc.hash.replace(/^#/, ''));
  const get = (k) => f.get(k) ?? q.get(k);
  const link = { room: get('room'), token: get('token'), refresh: get('refresh'), display: get('display'), name: get('name'), autojoin: get('autojoin') === '1' };
  if (['token', 'refresh', 'display'].some((k) => q.has(k) || f.has(k))) {
    q.delete('token');
    q.delete('refresh');
    q.delete('display');
    if (!q.has('room') && link.room) q.set('room', link.room);
    const keep = q.toString();
    history.replaceState(null, '', loc.pathname + (keep ? '?' + keep : ''));
  }
  if (!link.room && link.token) link.room = jwtClaims(link.token)?.room ?? null;
  // A reload of this tab rejoins with the same link (sessionStorage dies with the tab).
  if (!remember) return link;
  try {
    if (link.token || link.display) {
      sessionStorage.setItem(LINK_KEY, JSON.stringify(link));
    } else {
      const saved = JSON.parse(sessionStorage.getItem(LINK_KEY) || 'null');
      if (saved && (saved.token || saved.display) && (!link.room || link.room === saved.room)) {
        return { ...saved, name: link.name ?? saved.name, autojoin: link.autojoin || saved.autojoin };
      }
    }
  } catch { /* storage disabled */ }
  return link;
}

/** True when `token` is an invite that must be exchanged before joining. */
export function isInvite(token) {
  return jwtClaims(token)?.sub === INVITE_IDENTITY;
}

async function postJson(path, body, bearer) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const res = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body), cache: 'no-store' });
  let json = null;
  try {
    json = await res.json();
  } catch { /* no body */ }
  if (!res.ok) {
    const err = new Error((json && json.error && json.error.message) || `${path} answered ${res.status}`);
    err.status = res.status;
    err.code = json && json.error && json.error.code;
    throw err;
  }
  return json || {};
}

/**
 * Get a (new) access token for the holder described by `t`
 * (`{room, invite?, identity?, name?, refresh?}`). Resolves to
 * `{access, refresh?, identity?}`; rejects with an Error whose `status` is
 * the HTTP status (401: the invite or refresh token is no longer valid).
 */
export async function refreshAccessToken(t) {
  if (t.display) {
    const r = await postJson('/api/v1/displays/token', { credential: t.display });
    return { access: r.token, identity: r.identity };
  }
  if (t.invite) {
    const body = {};
    if (t.name) body.name = t.name;
    if (t.identity) body.identity = t.identity;
    const r = await postJson(`/api/v1/rooms/${encodeURIComponent(t.room)}/join`, body, t.invite);
    return { access: r.token, identity: r.identity };
  }
  if (t.refresh) {
    const r = await postJson('/api/v1/auth/refresh', { refresh_token: t.refresh });
    return { access: r.access_token, refresh: r.refresh_token, identity: r.identity };
  }
  const err = new Error('This access token cannot be renewed; ask for a new link when it expires.');
  err.status = 0;
  throw err;
}

/** A sentence for a failed exchange or refresh. */
export function describeAuthError(err) {
  if (err.status === 401) return 'This link has expired or was revoked. Ask for a new one.';
  if (err.status === 403) return 'This link does not allow joining this room.';
  if (err.status === 0 || err.status === undefined) return err.message || 'The box did not answer.';
  return `The box refused the link (${err.message}).`;
}

/** Holds the current tokens and renews them ahead of expiry. Emits `refreshed` and `expired`. */
export class TokenKeeper extends EventTarget {
  /** `{room, access?, invite?, refresh?, identity?, name?}`. Call `ready()` before `current()`. */
  constructor(t) {
    super();
    this.t = { ...t };
    this.timer = null;
    this.failures = 0;
    this.stopped = false;
  }

  /** From a join link: an invite is kept aside and exchanged; anything else is the access token. */
  static fromLink(link, { name } = {}) {
    const t = { room: link.room, name: name || link.name || null, refresh: link.refresh || null };
    if (link.display) t.display = link.display;
    else if (isInvite(link.token)) t.invite = link.token;
    else t.access = link.token;
    return new TokenKeeper(t);
  }

  /** Exchange an invite if needed; resolves once an access token is held. */
  async ready() {
    if (!this.t.access) await this.refreshNow();
    this._schedule();
    return this;
  }

  get access() {
    return this.t.access;
  }

  get refresh() {
    return this.t.refresh;
  }

  get claims() {
    return jwtClaims(this.t.access || '') || {};
  }

  /** Seconds until the access token expires (negative when it has). */
  secondsLeft(now = Date.now() / 1000) {
    const exp = this.claims.exp;
    return typeof exp === 'number' ? exp - now : Infinity;
  }

  /** The access token, renewed first when it is (nearly) expired. */
  async current() {
    if (!this.t.access || this.secondsLeft() < 30) {
      try {
        await this.refreshNow();
      } catch (err) {
        if (!this.t.access || this.secondsLeft() <= 0) throw new Error(describeAuthError(err));
      }
    }
    return this.t.access;
  }

  async refreshNow() {
    try {
      const r = await refreshAccessToken(this.t);
      this.t.access = r.access;
      if (r.refresh) this.t.refresh = r.refresh;
      if (r.identity) this.t.identity = r.identity;
      this.failures = 0;
      this.dispatchEvent(new CustomEvent('refreshed', { detail: { exp: this.claims.exp } }));
    } catch (err) {
      this.failures += 1;
      if (this.secondsLeft() <= 0) this.dispatchEvent(new CustomEvent('expired', { detail: { error: err } }));
      throw err;
    } finally {
      this._schedule();
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  _schedule() {
    clearTimeout(this.timer);
    const c = this.claims;
    if (this.stopped || typeof c.exp !== 'number' || !(this.t.invite || this.t.refresh || this.t.display)) return;
    const life = typeof c.iat === 'number' ? c.exp - c.iat : 900;
    const margin = Math.min(REFRESH_MARGIN_S, life / 4);
    // After a failure, try again sooner (but not in a tight loop).
    const wait = this.failures ? Math.min(30, 5 * this.failures) : this.secondsLeft() - margin;
    this.timer = setTimeout(() => this.refreshNow().catch(() => {}), Math.max(5, wait) * 1000);
  }
}
