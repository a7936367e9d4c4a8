// `/admin`: rooms, live meetings (kick, mute), device health, TV displays
// (links that last until revoked), and the buttons and LEDs (simulated ones
// can be pressed from here).
//
// Sign in with a user name and password, or open /admin?token=ADMIN_JWT
// (e.g. from `roomboxd token --room '*' --identity admin --admin`).
// The tokens live in sessionStorage: closing the tab signs out.
// The endpoints used are listed in docs/web-client.md.

import { api, ApiError } from './api.js';
import { readJoinLink, TokenKeeper, jwtClaims } from './auth.js';
import { h, show, showStatus } from './ui.js';

const STORE = 'roombox.admin';
const LIVE_EVERY_MS = 2000;
const DEVICE_EVERY_MS = 5000;
const $ = (s) => document.querySelector(s);

let keeper = null;
const timers = [];
/** The box has no GPIO endpoint: stop asking every 2 s. */
let gpioMissing = false;

const link = readJoinLink(location, { remember: false });
const saved = JSON.parse(sessionStorage.getItem(STORE) || 'null');
if (link.token) start({ access: link.token, refresh: link.refresh });
else if (saved && saved.access) start(saved);
else login();

function login() {
  show('login');
  $('#login-form').onsubmit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    try {
      const r = await api(null, 'POST', '/auth/login', { username: form.get('username'), password: form.get('password') });
      start({ access: r.access_token, refresh: r.refresh_token });
    } catch (err) {
      showStatus(err.status === 401 ? 'Wrong user name or password.' : err.status === 429 ? 'Too many attempts; wait a minute.' : err.message, 'error');
    }
  };
}

async function start(tokens) {
  const claims = jwtClaims(tokens.access) || {};
  if (!claims.grants || !claims.grants.admin) {
    showStatus('This token does not grant admin rights.', 'error');
    login();
    return;
  }
  keeper = new TokenKeeper({ room: claims.room || '*', access: tokens.access, refresh: tokens.refresh || null });
  await keeper.ready();
  const persist = () => sessionStorage.setItem(STORE, JSON.stringify({ access: keeper.access, refresh: keeper.refresh }));
  persist();
  keeper.addEventListener('refreshed', persist);
  keeper.addEventListener('expired', signOut);
  window.roombox = { keeper };
  show('console');
  $('#logout').onclick = signOut;
  $('#room-form').onsubmit = addRoom;
  $('#link-copy').onclick = () => navigator.clipboard.writeText($('#link-text').value).then(() => showStatus('Copied.'));
  refreshLive();
  refreshDevice();
  refreshFleet();
  refreshDisplays();
  refreshRecordings();
  $('#rec-form').onsubmit = (e) => { e.preventDefault(); recording('POST'); };
  $('#rec-stop').onclick = () => recording('DELETE');
  timers.push(setInterval(refreshRecordings, LIVE_EVERY_MS));
  timers.push(setInterval(refreshLive, LIVE_EVERY_MS), setInterval(refreshDevice, DEVICE_EVERY_MS));
  timers.push(setInterval(refreshFleet, DEVICE_EVERY_MS));
}

function signOut() {
  timers.forEach(clearInterval);
  if (keeper) {
    api(keeper.access, 'POST', '/auth/logout', { refresh_token: keeper.refresh }).catch(() => {});
    keeper.stop();
  }
  sessionStorage.removeItem(STORE);
  location.href = '/admin';
}

async function call(method, path, body) {
  return api(await keeper.current(), method, path, body);
}

/** Render `fn`'s result into `el`, or a sentence saying why not. */
async function section(el, fn) {
  try {
    await fn();
    delete el.dataset.error;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      showStatus('Your admin session has ended; sign in again.', 'error');
      signOut();
      return;
    }
    el.dataset.error = 'true';
    const why = err.status === 404 ? 'Not available on this box.' : err.message;
    el.replaceChildren(h('p', { class: 'muted' }, why));
  }
}

// ---- rooms and live meetings ----------------------------------------------

async function refreshLive() {
  let rooms = [];
  await section($('#rooms'), async () => {
    rooms = (await call('GET', '/rooms')) || [];
    $('#rooms').replaceChildren(roomsTable(rooms));
  });
  await section($('#live'), async () => {
    const live = rooms.filter((r) => (r.participants ?? 0) > 0 || r.live);
    if (!live.length) {
      $('#live').replaceChildren(h('p', { class: 'muted' }, 'No meeting is going on.'));
      return;
    }
    const blocks = [];
    for (const r of live) {
      const people = (await call('GET', `/rooms/${encodeURIComponent(r.name)}/participants`)) || [];
      blocks.push(liveRoom(r.name, people));
    }
    $('#live').replaceChildren(...blocks);
  });
  if (!gpioMissing) await section($('#gpio'), refreshGpio);
}

function roomsTable(rooms) {
  if (!rooms.length) return h('p', { class: 'muted' }, 'No rooms yet.');
  return h('table', {},
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Room'), h('th', { scope: 'col' }, 'People'), h('th', { scope: 'col' }, 'Links'))),
    h('tbody', {}, rooms.map((r) => h('tr', {},
      h('th', { scope: 'row' }, r.name),
      h('td', {}, String(r.participants ?? 0)),
      h('td', {},
        h('button', { type: 'button', onclick: () => makeLink(r.name, 'join') }, 'Join link'),
        ' ',
        h('button', { type: 'button', onclick: () => makeLink(r.name, 'display') }, 'TV link'),
      ),
    ))),
  );
}

function liveRoom(room, people) {
  return h('div', { class: 'live-room' },
    h('h3', {}, room),
    h('ul', { class: 'people' }, people.map((p) => {
      const tracks = p.tracks || [];
      const audio = tracks.filter((t) => t.kind === 'audio');
      const video = tracks.filter((t) => t.kind === 'video' && t.source !== 'screen');
      const label = (t) => (t.source || t.kind).replace(/_/g, ' ');
      const audioMuted = audio.length > 0 && audio.every((t) => t.muted);
      const videoMuted = video.length > 0 && video.every((t) => t.muted);
      const who = p.name || p.identity;
      return h('li', {},
        h('span', { class: 'who' }, who, p.local ? h('span', { class: 'tag' }, 'room') : null),
        h('span', { class: 'tracks muted' }, tracks.map((t) => `${label(t)}${t.muted ? ' (muted)' : ''}`).join(', ') || 'watching'),
        p.local ? null : h('span', { class: 'actions' },
          audio.length ? h('button', { type: 'button', 'aria-label': `${audioMuted ? 'Unmute' : 'Mute'} ${who}`, onclick: () => mute(room, p.identity, 'audio', !audioMuted) }, audioMuted ? 'Unmute' : 'Mute') : null,
          video.length ? h('button', { type: 'button', 'aria-label': `${videoMuted ? 'Allow video of' : 'Stop video of'} ${who}`, onclick: () => mute(room, p.identity, 'video', !videoMuted) }, videoMuted ? 'Video on' : 'Video off') : null,
          h('button', { type: 'button', class: 'danger', 'aria-label': `Remove ${who}`, onclick: () => kick(room, p.identity, who) }, 'Remove'),
        ),
      );
    })),
  );
}

async function mute(room, identity, kind, muted) {
  try {
    await call('POST', `/rooms/${encodeURIComponent(room)}/participants/${encodeURIComponent(identity)}/mute`, { kind, muted });
    refreshLive();
  } catch (err) {
    showStatus(err.message, 'error');
  }
}

async function kick(room, identity, who) {
  if (!confirm(`Remove ${who} from ${room}?`)) return;
  try {
    await call('POST', `/rooms/${encodeURIComponent(room)}/participants/${encodeURIComponent(identity)}/kick`, { reason: 'removed by an organiser' });
    showStatus(`${who} was removed.`);
    refreshLive();
  } catch (err) {
    showStatus(err.message, 'error');
  }
}

async function addRoom(e) {
  e.preventDefault();
  const name = new FormData(e.target).get('name');
  try {
    await call('POST', '/rooms', { name });
    e.target.reset();
    refreshLive();
  } catch (err) {
    showStatus(err.message, 'error');
  }
}

/**
 * Ask the box for a link and show it. Guests: an invite to publish and
 * subscribe for 12 h (each person who opens it gets their own identity). The
 * TV: a display credential that does not expire (it is exchanged for short
 * subscribe-only tokens) until it is revoked below.
 */
async function makeLink(room, kind) {
  const display = kind === 'display';
  try {
    let url, until = '';
    if (display) {
      const r = await call('POST', '/displays', { room, name: `TV of ${room}` });
      url = `${location.origin}${r.path}`;
      until = ' (valid until revoked)';
      refreshDisplays();
    } else {
      const body = { room, identity: 'invite', grants: { publish: true, subscribe: true }, ttl_secs: 12 * 3600 };
      let r;
      try {
        r = await call('POST', '/tokens', body);
      } catch (err) {
        if (err.status !== 400) throw err;
        delete body.ttl_secs; // the box allows less: take its default
        r = await call('POST', '/tokens', body);
      }
      url = `${location.origin}/#room=${encodeURIComponent(room)}&token=${encodeURIComponent(r.token)}`;
      if (r.expires_at) until = ` (valid until ${new Date(r.expires_at * 1000).toLocaleString()})`;
    }
    $('#link-label').textContent = `${display ? 'TV link' : 'Join link'} for ${room}${until}`;
    $('#link-text').value = url;
    $('#link-out').hidden = false;
    $('#link-text').select();
  } catch (err) {
    showStatus(err.message, 'error');
  }
}

// ---- TV displays -------------------------------------------------------------

function refreshDisplays() {
  return section($('#displays'), async () => {
    const list = ((await call('GET', '/displays')) || []).filter((d) => !d.revoked_at);
    if (!list.length) {
      $('#displays').replaceChildren(h('p', { class: 'muted' }, 'No TV links. Make one with "TV link" above.'));
      return;
    }
    const when = (t) => (t ? new Date(t * 1000).toLocaleString() : 'never');
    $('#displays').replaceChildren(h('ul', { class: 'people' }, list.map((d) => h('li', {},
      h('span', { class: 'who' }, d.name),
      h('span', { class: 'tracks muted' }, `${d.room} · last used ${when(d.last_used_at)}`),
      h('span', { class: 'actions' }, h('button', {
        type: 'button', class: 'danger', 'aria-label': `Revoke ${d.name}`,
        onclick: () => revokeDisplay(d),
      }, 'Revoke')),
    ))));
  });
}

async function revokeDisplay(d) {
  if (!confirm(`Revoke ${d.name}? That TV leaves the room and needs a new link.`)) return;
  try {
    await call('DELETE', `/displays/${d.id}`);
    showStatus(`${d.name} was revoked.`);
  } catch (err) {
    showStatus(err.message, 'error');
  }
  refreshDisplays();
}

// ---- recordings --------------------------------------------------------------

async function recording(method) {
  const room = $('#rec-room').value.trim();
  if (!room) return;
  try {
    const r = await call(method, `/rooms/${encodeURIComponent(room)}/recording`);
    showStatus(method === 'POST' ? `Recording ${room} (recording ${r.id}).` : `Recording ${r.id} stopped: ${r.files.length} file(s).`);
  } catch (err) {
    showStatus(err.message, 'error');
  }
  refreshRecordings();
}

function refreshRecordings() {
  return section($('#recordings'), async () => {
    const list = (await call('GET', '/recordings?limit=20')) || [];
    if (!$('#rec-room').value) {
      const rooms = (await call('GET', '/rooms')) || [];
      if (rooms.length) $('#rec-room').value = rooms[0].name;
    }
    if (!list.length) {
      $('#recordings').replaceChildren(h('p', { class: 'muted' }, 'No recordings yet.'));
      return;
    }
    const when = (t) => (t ? new Date(t * 1000).toLocaleString() : '…');
    const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
    $('#recordings').replaceChildren(h('table', {},
      h('thead', {}, h('tr', {}, ['#', 'Room', 'State', 'Started', 'Ended', 'Size', 'Upload'].map((c) => h('th', {}, c)))),
      h('tbody', {}, list.map((r) => h('tr', {},
        h('td', {}, String(r.id)), h('td', {}, r.room), h('td', {}, r.state),
        h('td', {}, when(r.started_at)), h('td', {}, when(r.ended_at)), h('td', {}, mib(r.bytes)),
        h('td', {}, r.upload || '—'),
      )))));
  });
}

// ---- device ----------------------------------------------------------------

function refreshDevice() {
  return section($('#device'), async () => {
    const d = (await call('GET', '/device')) || {};
    const items = flatten(d).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]);
    const toggles = [];
    if (typeof d.mic_muted === 'boolean') {
      toggles.push(h('button', { type: 'button', 'aria-pressed': String(d.mic_muted), onclick: () => patchDevice({ mic_muted: !d.mic_muted }) },
        d.mic_muted ? 'Unmute room microphone' : 'Mute room microphone'));
    }
    if (typeof d.camera_off === 'boolean') {
      toggles.push(h('button', { type: 'button', 'aria-pressed': String(d.camera_off), onclick: () => patchDevice({ camera_off: !d.camera_off }) },
        d.camera_off ? 'Turn room camera on' : 'Turn room camera off'));
    }
    $('#device').replaceChildren(...items, h('dt', { class: 'visually-hidden' }, 'switches'), h('dd', { class: 'row' }, toggles));
  });
}

// ---- fleet link (MQTT) -----------------------------------------------------

function refreshFleet() {
  return section($('#fleet'), async () => {
    const f = ((await call('GET', '/status')) || {}).fleet || {};
    if (!f.enabled) {
      $('#fleet').replaceChildren(h('p', { class: 'muted' }, 'Off: no [cloud.fleet] in the config (air-gapped default).'));
      return;
    }
    const rows = [
      ['state', f.state], ['broker', f.broker], ['device id', f.device_id],
      ['connected since', f.connected_at ? new Date(f.connected_at * 1000).toLocaleString() : '—'],
      ['messages in / out', `${f.messages_in} / ${f.messages_out}`], ['reconnects', f.reconnects],
      ['buffered while offline', f.buffered], ['desired config', f.config_version || '—'],
      ['refused commands', Object.entries(f.refused || {}).map(([k, v]) => `${k.replace(/_/g, ' ')}: ${v}`).join(', ') || 'none'],
    ];
    if (f.last_error) rows.push(['last error', f.last_error]);
    $('#fleet').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v ?? '—'))]));
  });
}

async function patchDevice(change) {
  try {
    await call('PATCH', '/device', change);
  } catch (err) {
    showStatus(err.message, 'error');
  }
  refreshDevice();
}

/** {camera: {state: 'ok'}} → [['camera state', 'ok']], with units for the usual keys. */
function flatten(obj, prefix = '') {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = `${prefix}${k.replace(/_/g, ' ')}`;
    if (v && typeof v === 'object' && !Array.isArray(v)) out.push(...flatten(v, key + ' '));
    else out.push([key, pretty(k, v)]);
  }
  return out;
}

function pretty(key, v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'number') {
    if (/bytes$/.test(key)) return `${(v / 1048576).toFixed(1)} MiB`;
    if (/secs?$|seconds$/.test(key)) return duration(v);
    if (/percent$/.test(key)) return `${v.toFixed(1)} %`;
    if (/_c$|celsius/.test(key)) return `${v.toFixed(1)} °C`;
  }
  return Array.isArray(v) ? v.join(', ') : String(v);
}

function duration(s) {
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d} d ${hr} h` : hr ? `${hr} h ${m} min` : `${m} min ${Math.floor(s % 60)} s`;
}

// ---- GPIO --------------------------------------------------------------------

async function refreshGpio() {
  let g;
  try {
    g = (await call('GET', '/device/gpio')) || {};
  } catch (err) {
    if (err.status === 404) gpioMissing = true;
    throw err;
  }
  $('#gpio-kind').textContent = g.simulated
    ? 'Simulated: this box has no GPIO lines, so the buttons below stand in for the real ones.'
    : 'The box\'s real buttons and LEDs.';
  const leds = (g.leds || []).map((l) =>
    h('div', { class: 'led', 'data-on': String(!!l.on), style: l.color ? `--led:${l.color}` : null, role: 'img', 'aria-label': `${l.name} LED ${l.on ? 'on' : 'off'}` },
      h('span', { class: 'dot', 'aria-hidden': 'true' }), l.name));
  const buttons = (g.buttons || []).map((b) => {
    const name = encodeURIComponent(b.name);
    const press = (action) => call('POST', `/device/gpio/buttons/${name}`, { action }).then(refreshGpio).catch((err) => showStatus(err.message, 'error'));
    return h('button', {
      type: 'button', class: 'gpio-button', disabled: !g.simulated, 'aria-pressed': String(!!b.pressed),
      // A mouse or finger holds it; the keyboard clicks it.
      onpointerdown: (e) => { e.preventDefault(); press('press'); },
      onpointerup: () => press('release'),
      onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); press('click'); } },
    }, b.name);
  });
  $('#gpio').replaceChildren(h('div', { class: 'leds' }, leds), h('div', { class: 'buttons' }, buttons));
}
