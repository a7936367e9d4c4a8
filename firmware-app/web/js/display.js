// `/display`: the muted full-screen view on the room's TV.
//
// Link: /display#room=R&display=CREDENTIAL (the admin page's "TV link": a
// durable credential exchanged for 15-minute tokens until it is revoked; kept
// in localStorage, so the TV comes back after a reload or a power cut), or
// /display#room=R&token=T with a subscribe-only token (an invite is
// exchanged, joining as "Room display", which the grids do not show). Only video is
// subscribed (the box's speakers play the remote people; the TV must not, or
// the room hears them twice). It never gives up: after a refusal it tries
// again every 30 s, so the TV recovers on its own after a reboot of the box.
// Double-click (or Enter) for full screen; the pointer hides when idle.

import { readJoinLink, TokenKeeper, describeAuthError } from './auth.js';
import { RoomSession } from './session.js';
import { Grid, DISPLAY_NAME } from './grid.js';
import { showStatus } from './ui.js';

const RETRY_AFTER_REFUSAL_MS = 30000;
const $ = (s) => document.querySelector(s);

const DISPLAY_KEY = 'roombox.display';
const link = readJoinLink();
try {
  // The TV's credential outlives the tab: keep it for the next start of the browser.
  if (link.display && link.room) localStorage.setItem(DISPLAY_KEY, JSON.stringify({ room: link.room, display: link.display }));
  else if (!link.token) Object.assign(link, JSON.parse(localStorage.getItem(DISPLAY_KEY) || '{}'));
} catch { /* storage disabled */ }
if (!(link.token || link.display) || !link.room) {
  showStatus('Open this page with the display link (the admin page\'s "TV link"): /display#room=ROOM&display=CREDENTIAL', 'error');
} else {
  run();
}

async function run() {
  const keeper = TokenKeeper.fromLink(link, { name: DISPLAY_NAME });
  for (;;) {
    try {
      await keeper.ready();
      break;
    } catch (err) {
      showStatus(`${describeAuthError(err)} Trying again in ${RETRY_AFTER_REFUSAL_MS / 1000} s.`, 'error');
      await new Promise((r) => setTimeout(r, RETRY_AFTER_REFUSAL_MS));
    }
  }
  const session = new RoomSession({
    room: link.room,
    token: () => keeper.current(),
    autoSubscribe: false,
    wantTrack: (t) => t.kind === 'video',
  });
  const grid = new Grid($('#grid'), session, { audio: false, showParticipant: (identity) => identity !== 'roombox-recorder' });
  // the people in the room see that they are recorded, as the remote ones do
  session.addEventListener('recording', ({ detail }) => {
    $('#rec-banner').hidden = !detail.recording;
  });
  window.roombox = { session, grid, keeper };
  $('#idle-room').textContent = link.room;
  document.title = `${link.room} — roombox display`;

  const idle = () => {
    const empty = grid.tiles.size === 0;
    $('#idle').hidden = !empty;
    $('#grid').hidden = empty;
  };
  session.addEventListener('participants', idle);
  session.addEventListener('state', ({ detail }) => {
    document.body.dataset.state = detail.state;
    if (detail.state === 'connected') showStatus('');
    else if (detail.state === 'reconnecting') showStatus('Reconnecting…', 'warn');
    else if (detail.state === 'closed' && detail.error) {
      showStatus(`${detail.error.message} Trying again in ${RETRY_AFTER_REFUSAL_MS / 1000} s.`, 'error');
      setTimeout(() => session.start(), RETRY_AFTER_REFUSAL_MS);
    }
    idle();
  });
  session.start();
  idle();

  const clock = () => ($('#idle-clock').textContent = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  clock();
  setInterval(clock, 10000);

  const fullscreen = () => {
    if (!document.fullscreenElement) document.documentElement.requestFullscreen().catch(() => {});
  };
  document.addEventListener('dblclick', fullscreen);
  document.addEventListener('keydown', (e) => e.key === 'Enter' && fullscreen());
  let hideTimer = null;
  document.addEventListener('pointermove', () => {
    document.body.classList.remove('no-cursor');
    clearTimeout(hideTimer);
    hideTimer = setTimeout(() => document.body.classList.add('no-cursor'), 3000);
  });
  document.body.classList.add('no-cursor');
}
