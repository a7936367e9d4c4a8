// The meeting client at `/`: join by link, grid, controls, chat, devices.
//
// Link: /?room=R&token=ACCESS[&refresh=REFRESH][&autojoin=1]
// (`autojoin=1` skips the device preview, for kiosks and tests.)
// For diagnostics, `window.roombox` holds the session and the local media.

import { readJoinLink, TokenKeeper, jwtClaims, isInvite, describeAuthError } from './auth.js';
import { RoomSession } from './session.js';
import { LocalMedia, listDevices, canPickSpeaker, canShareScreen } from './media.js';
import { Grid } from './grid.js';
import { ChatPanel } from './chat.js';
import { QualityBadge } from './quality.js';
import { registerServiceWorker, showStatus, show } from './ui.js';
import { api } from './api.js';

const $ = (sel) => document.querySelector(sel);
const NAME_KEY = 'roombox.name';

const link = readJoinLink();
const media = new LocalMedia();
let session = null;
let grid = null;
let keeper = null;
window.roombox = { media, link: { room: link.room } };

registerServiceWorker();

if (!link.token || !link.room) {
  startScreen();
} else if (link.autojoin) {
  media.start().then((errors) => join(errors));
} else {
  prejoin();
}

function startScreen() {
  show('start');
  if (link.room && !link.token) showStatus('This link has no access token. Ask for a complete join link.', 'error');
  $('#start-form').addEventListener('submit', (e) => {
    e.preventDefault();
    try {
      const url = new URL($('#start-link').value.trim(), location.href);
      if (url.origin !== location.origin) throw new Error('other origin');
      location.href = url.href;
    } catch {
      showStatus('That does not look like a join link for this box.', 'error');
    }
  });
}

async function prejoin() {
  show('prejoin');
  const claims = jwtClaims(link.token) || {};
  $('#prejoin-room').textContent = link.room;
  document.title = `Join ${link.room} — roombox`;
  if (isInvite(link.token)) {
    // An invite: the name is ours to choose (remembered for next time).
    $('#name-row').hidden = false;
    $('#display-name').value = link.name || localStorage.getItem(NAME_KEY) || '';
  } else {
    $('#prejoin-who').textContent = claims.sub ? `as ${claims.name || claims.sub}` : '';
  }
  const errors = await media.start();
  showErrors(errors);
  $('#preview').srcObject = media.video ? new MediaStream([media.video]) : null;
  $('#prejoin-settings').addEventListener('click', openSettings);
  $('#join').addEventListener('click', () => {
    const name = $('#display-name').value.trim();
    if (name) localStorage.setItem(NAME_KEY, name);
    join([], name || null);
  }, { once: true });
  $('#join').focus();
}

function showErrors(errors) {
  const ul = $('#prejoin-errors');
  ul.replaceChildren(...errors.map((t) => Object.assign(document.createElement('li'), { textContent: t })));
}

async function join(startErrors, name = null) {
  show('meeting');
  for (const e of startErrors) showStatus(e, 'error');
  $('#room-name').textContent = link.room;
  document.title = `${link.room} — roombox`;

  keeper = TokenKeeper.fromLink(link, { name: name || link.name });
  try {
    showStatus('Joining…');
    await keeper.ready();
  } catch (err) {
    ended('Could not join', describeAuthError(err));
    return;
  }
  keeper.addEventListener('expired', () => showStatus('Your access has expired; you stay in this meeting until you leave.', 'warn'));
  session = new RoomSession({ room: link.room, token: () => keeper.current() });
  if (media.audio) session.publish('mic', media.audio, { source: 'microphone' });
  if (media.video) session.publish('camera', media.video, { source: 'camera', simulcast: true });

  grid = new Grid($('#grid'), session, {
    selfVideo: () => media.video,
    speakerId: media.prefs.speakerId,
    // the box's recorder is a participant with nothing to show (the banner says it is there)
    showParticipant: (identity) => identity !== 'roombox-recorder',
  });
  new QualityBadge($('#quality'), session);
  const chat = new ChatPanel($('#chat'), session, (n) => {
    $('#unread').hidden = n === 0;
    $('#unread').textContent = n;
  });
  Object.assign(window.roombox, { session, grid, keeper });

  session.addEventListener('state', ({ detail }) => onState(detail));
  session.addEventListener('muted-by-admin', ({ detail }) => {
    showStatus(detail.muted ? `An organiser muted your ${detail.kind === 'audio' ? 'microphone' : 'camera'}.` : 'An organiser unmuted you.', 'warn');
    updateButtons();
  });
  session.addEventListener('local-tracks', updateButtons);
  session.addEventListener('recording', ({ detail }) => {
    $('#rec-banner').hidden = !detail.recording;
    const b = $('#btn-record');
    b.setAttribute('aria-pressed', String(detail.recording));
    b.textContent = detail.recording ? 'Stop recording' : 'Record';
  });
  // host control: whoever holds the record grant starts and stops the recording
  const grants = (jwtClaims(keeper.current()) || {}).grants || {};
  $('#btn-record').hidden = !grants.record;
  $('#btn-record').addEventListener('click', async () => {
    const path = `/rooms/${encodeURIComponent(link.room)}/recording`;
    try {
      await api(keeper.current(), session.recording ? 'DELETE' : 'POST', path);
    } catch (err) {
      showStatus(`Recording: ${err.message}`, 'error');
    }
  });
  session.addEventListener('error', ({ detail }) => showStatus(detail.message, 'error'));
  media.addEventListener('screen-ended', () => {
    session.unpublish('screen');
    updateButtons();
  });

  $('#btn-mic').addEventListener('click', toggleMic);
  $('#btn-cam').addEventListener('click', toggleCamera);
  $('#btn-share').addEventListener('click', toggleShare);
  $('#btn-share').hidden = !canShareScreen;
  $('#btn-chat').addEventListener('click', () => {
    const panel = $('#chat');
    panel.hidden = !panel.hidden;
    $('#btn-chat').setAttribute('aria-pressed', String(!panel.hidden));
    if (!panel.hidden) chat.opened();
  });
  $('#btn-settings').addEventListener('click', openSettings);
  $('#btn-leave').addEventListener('click', leave);
  document.addEventListener('keydown', onKey);
  updateButtons();
  session.start();
}

function onState({ state, error }) {
  document.body.dataset.state = state;
  if (state === 'connected') showStatus('');
  else if (state === 'connecting') showStatus('Connecting…');
  else if (state === 'reconnecting') showStatus(error && error.message ? `${error.message} Trying again…` : 'Reconnecting…', 'warn');
  else if (state === 'closed' && error) ended('You are not in the meeting', error.message);
}

function ended(title, text) {
  media.stopAll();
  if (keeper) keeper.stop();
  show('ended');
  showStatus('');
  $('#ended-title').textContent = title;
  $('#ended-text').textContent = text || '';
  $('#rejoin').onclick = () => location.reload();
}

function leave() {
  session.close();
  ended('You left the meeting', 'Your camera and microphone are off.');
}

function toggleMic() {
  const e = session.local.get('mic');
  if (!e) {
    showStatus('No microphone is in use. Pick one in Devices.', 'warn');
    return;
  }
  session.setMuted('mic', !e.muted);
}

async function toggleCamera() {
  const e = session.local.get('camera');
  try {
    if (e && !e.muted) {
      media.cameraOff();
      await session.replaceTrack('camera', null);
      session.setMuted('camera', true);
    } else {
      const track = await media.cameraOn();
      if (e) {
        await session.replaceTrack('camera', track);
        session.setMuted('camera', false);
      } else {
        session.publish('camera', track, { source: 'camera', simulcast: true });
      }
    }
  } catch (err) {
    showStatus(err.message || String(err), 'error');
  }
  updateButtons();
}

async function toggleShare() {
  if (media.screen) {
    session.unpublish('screen');
    media.stopScreen();
  } else {
    try {
      const track = await media.startScreen();
      if (track) session.publish('screen', track, { source: 'screen' });
    } catch (err) {
      showStatus(err.message, 'error');
    }
  }
  updateButtons();
}

function updateButtons() {
  const mic = session && session.local.get('mic');
  const cam = session && session.local.get('camera');
  const micOff = !mic || mic.muted;
  const camOff = !cam || cam.muted || !media.video;
  const set = (id, pressed, label, title) => {
    const b = $(id);
    b.setAttribute('aria-pressed', String(pressed));
    b.textContent = label;
    if (title) b.title = title;
  };
  set('#btn-mic', micOff, micOff ? 'Unmute' : 'Mute', micOff ? 'Unmute microphone (M)' : 'Mute microphone (M)');
  set('#btn-cam', camOff, camOff ? 'Camera on' : 'Camera off', camOff ? 'Turn camera on (V)' : 'Turn camera off (V)');
  set('#btn-share', !!media.screen, media.screen ? 'Stop sharing' : 'Share screen');
  if (grid) grid.render();
}

function onKey(e) {
  if (e.target.closest('input, textarea, select, dialog') || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  if (k === 'm') toggleMic();
  else if (k === 'v') toggleCamera();
  else if (k === 'c') $('#btn-chat').click();
  else return;
  e.preventDefault();
}

async function openSettings() {
  const dlg = $('#settings');
  const { cameras, mics, speakers } = await listDevices();
  const fill = (sel, list, current) => {
    sel.replaceChildren(...list.map((d) => new Option(d.label, d.id, false, d.id === current)));
    sel.disabled = list.length === 0;
  };
  fill($('#pick-camera'), cameras, media.video && media.video.getSettings().deviceId);
  fill($('#pick-mic'), mics, media.audio && media.audio.getSettings().deviceId);
  fill($('#pick-speaker'), speakers, media.prefs.speakerId);
  $('#pick-speaker').disabled = !canPickSpeaker || speakers.length === 0;
  $('#speaker-note').hidden = canPickSpeaker;
  $('#pick-camera').onchange = async (e) => {
    try {
      const t = await media.useCamera(e.target.value);
      if (session && session.local.get('camera')) await session.replaceTrack('camera', t);
      $('#preview').srcObject = new MediaStream([t]);
    } catch (err) {
      showStatus(err.message || String(err), 'error');
    }
  };
  $('#pick-mic').onchange = async (e) => {
    try {
      const t = await media.useMic(e.target.value);
      if (session && session.local.get('mic')) await session.replaceTrack('mic', t);
    } catch (err) {
      showStatus(err.message || String(err), 'error');
    }
  };
  $('#pick-speaker').onchange = (e) => {
    media.useSpeaker(e.target.value);
    if (grid) grid.setSpeaker(e.target.value);
  };
  dlg.showModal();
}
