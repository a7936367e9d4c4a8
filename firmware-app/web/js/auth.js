// Access tokens: read from the join link, kept fresh before they expire.
//
// A join link is `/?room=R&token=ACCESS` (optionally `&refresh=REFRESH`); the
// same keys are accepted in the fragment (`/#room=R&token=…`), which browsers
// never send to servers or write to logs. The token is removed from the
// address bar once read, so a screenshot or a shared screen does not leak it.
//
// `refreshAccessToken` is the only place that knows the daemon's refresh
// endpoint: change it there.

const REFRESH_ENDPOINT = '/api/v1/auth/refresh';
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

/** Read `room`, `token`, `refresh` (and `name`) from the query and the fragment; strip the secrets from the URL. */
export function readJoinLink(loc = location) {
  const q = new URLSearchParams(loc.search);
  const f = new URLSearchParams(loc.hash.replace(/^#/, ''));
  const get = (k) => f.get(k) ?? q.get(k);
  const link = { room: get('room'), token: get('token'), refresh: get('refresh'), name: get('name') };
  if (q.has('token') || q.has('refresh') || f.has('token') || f.has('refresh')) {
    q.delete('token');
    q.delete('refresh');
    const keep = q.toString();
    history.replaceState(null, '', loc.pathname + (keep ? '?' + keep : ''));
  }
  if (!link.room && link.token) link.room = jwtClaims(link.token)?.room ?? null;
  return link;
}

/**
 * Get a new access token. With a refresh token: `POST {refresh_token}`;
 * without one (a guest link): `POST` with the still-valid access token as
 * bearer, which the daemon may refuse. Resolves to
 * `{access_token, refresh_token?, expires_in?}`; rejects with an Error whose
 * `status` is the HTTP status.
 */
export async function refreshAccessToken({ access, refresh }) {
  const headers = { 'Content-Type': 'application/json' };
  if (!refresh && access) headers.Authorization = `Bearer ${access}`;
  const res = await fetch(REFRESH_ENDPOINT, {
    method: 'POST',
    headers,
    body: JSON.stringify(refresh ? { refresh_token: refresh } : {}),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  if (!res.ok) {
    const err = new Error(`refresh refused (${res.status})`);
    err.status = res.status;
    throw err;
  }
  const body = await res.json();
  if (typeof body.access_token !== 'string') throw new Error('refresh answer has no access_token');
  return body;
}

/** Holds the current tokens and refreshes them ahead of expiry. Emits `refreshed` and `expired`. */
export class TokenKeeper extends EventTarget {
  constructor({ access, refresh = null }) {
    super();
    this.access = access;
    this.refresh = refresh;
    this.timer = null;
    this.failures = 0;
    this._schedule();
  }

  get claims() {
    return jwtClaims(this.access) || {};
  }

  /** Seconds until the access token expires (negative when it has). */
  secondsLeft(now = Date.now() / 1000) {
    const exp = this.claims.exp;
    return typeof exp === 'number' ? exp - now : Infinity;
  }

  /** The access token, refreshed first when it is (nearly) expired. */
  async current() {
    if (this.secondsLeft() < 30) {
      try {
        await this.refreshNow();
      } catch (err) {
        if (this.secondsLeft() <= 0) {
          throw new Error('Your access link has expired. Ask for a new one.');
        }
      }
    }
    return this.access;
  }

  async refreshNow() {
    try {
      const r = await refreshAccessToken({ access: this.access, refresh: this.refresh });
      this.access = r.access_token;
      if (r.refresh_token) this.refresh = r.refresh_token;
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
    clearTimeout(this.timer);
  }

  _schedule() {
    clearTimeout(this.timer);
    const c = this.claims;
    if (typeof c.exp !== 'number') return;
    const life = typeof c.iat === 'number' ? c.exp - c.iat : 900;
    const margin = Math.min(REFRESH_MARGIN_S, life / 4);
    // After a failure, try again sooner (but not in a tight loop).
    const wait = this.failures ? Math.min(30, 5 * this.failures) : this.secondsLeft() - margin;
    this.timer = setTimeout(() => this.refreshNow().catch(() => {}), Math.max(5, wait) * 1000);
  }
}
