// Calls to the daemon's REST API under /api/v1, with the bearer token.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * `api(token, 'GET', '/rooms')` → parsed JSON (or null for 204).
 * Errors carry the HTTP status and the server's message when it sent one
 * (`{"error": {"code": "...", "message": "..."}}`).
 */
export async function api(token, method, path, body) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch (err) {
    throw new ApiError(0, `The box did not answer (${err.message}).`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch { /* not JSON */ }
  if (!res.ok) {
    const e = json && json.error;
    const msg = (e && (e.message || e.code)) || text || res.statusText;
    throw new ApiError(res.status, `${res.status}: ${typeof msg === 'string' ? msg : JSON.stringify(msg)}`);
  }
  return json;
}
