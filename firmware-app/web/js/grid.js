// The grid of tiles: one per participant (camera, or the room's camera for
// the box itself), one per shared screen, the active speaker highlighted.
// Remote audio plays through hidden <audio> elements, one per audio track.
//
// Tiles report their size to the session so the server forwards the
// simulcast layer that fits (ResizeObserver, coalesced).

import { canPickSpeaker } from './media.js';

const VIDEO_SOURCES = new Set(['camera', 'room_camera']);

/** The name the room's TV (`/display`) joins with; it is not shown as a person. */
export const DISPLAY_NAME = 'Room display';

/** Initials for a tile without video. */
function initials(name) {
  const parts = String(name).replace(/[^\p{L}\p{N} ]/gu, ' ').trim().split(/\s+/);
  return ((parts[0] || '?')[0] + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
}

export class Grid {
  /**
   * @param {HTMLElement} container
   * @param {import('./session.js').RoomSession} session
   * @param {object} [opts]
   * @param {() => MediaStreamTrack|null} [opts.selfVideo]  our camera for the self view (none: no self tile)
   * @param {boolean} [opts.audio=true]  play remote audio
   * @param {(identity: string, p: object) => boolean} [opts.showParticipant]
   * @param {string} [opts.speakerId]  audio output device
   */
  constructor(container, session, opts = {}) {
    this.el = container;
    this.session = session;
    this.opts = opts;
    this.tiles = new Map(); // key -> {el, video, trackId}
    this.audios = new Map(); // trackId -> <audio>
    this.audioBox = document.createElement('div');
    this.audioBox.hidden = true;
    container.after(this.audioBox);
    this.speakerId = opts.speakerId || '';
    this.resize = new ResizeObserver((entries) => {
      for (const e of entries) {
        const trackId = e.target.dataset.track;
        if (!trackId || e.target.dataset.self) continue;
        const { width, height } = e.contentRect;
        if (width > 0 && height > 0) {
          this.session.setTileSize(trackId, width * devicePixelRatio, height * devicePixelRatio);
        }
      }
    });
    const rerender = () => this.render();
    for (const ev of ['participants', 'track', 'speaker', 'local-tracks', 'joined']) session.addEventListener(ev, rerender);
    session.addEventListener('layer', (e) => {
      for (const t of this.tiles.values()) if (t.trackId === e.detail.trackId) t.el.dataset.layer = e.detail.rid ?? '';
    });
  }

  /** The tiles we want, in order: the room first, then people by name, screens last. */
  _wanted() {
    const s = this.session;
    const me = s.you ? s.you.identity : null;
    const out = [];
    if (this.opts.selfVideo && me) {
      const mic = s.local.get('mic');
      out.push({
        key: 'self', identity: me, name: 'You', self: true, source: 'camera', trackId: null,
        track: this.opts.selfVideo(), micMuted: !mic || mic.muted,
      });
    }
    const people = [...s.participants.values()]
      .filter((p) => p.identity !== me)
      .filter((p) => !this.opts.showParticipant || this.opts.showParticipant(p.identity, p))
      .sort((a, b) => (b.local - a.local) || (a.name || a.identity).localeCompare(b.name || b.identity));
    const screens = [];
    for (const p of people) {
      const tracks = [...p.tracks.values()];
      const cam = tracks.find((t) => t.kind === 'video' && VIDEO_SOURCES.has(t.source));
      const audio = tracks.filter((t) => t.kind === 'audio');
      if (!tracks.length && (p.name === DISPLAY_NAME || /^display/.test(p.identity))) continue; // the TV is not a person
      out.push({
        key: `p:${p.identity}`, identity: p.identity, name: p.name || (p.local ? 'Room' : p.identity),
        source: cam ? cam.source : 'camera', trackId: cam ? cam.id : null,
        track: cam && !cam.muted ? s.remoteTrack(cam.id) : null,
        micMuted: audio.length === 0 || audio.every((t) => t.muted),
      });
      for (const t of tracks) {
        if (t.kind === 'video' && t.source === 'screen') {
          screens.push({
            key: `s:${t.id}`, identity: p.identity, name: `${p.name || p.identity} (screen)`, source: 'screen',
            trackId: t.id, track: s.remoteTrack(t.id), micMuted: true,
          });
        }
      }
    }
    return [...out, ...screens];
  }

  render() {
    const wanted = this._wanted();
    const keys = new Set(wanted.map((w) => w.key));
    for (const [key, t] of this.tiles) {
      if (!keys.has(key)) {
        this.resize.unobserve(t.el);
        t.el.remove();
        this.tiles.delete(key);
      }
    }
    for (const w of wanted) {
      let t = this.tiles.get(w.key);
      if (!t) {
        t = this._makeTile(w);
        this.tiles.set(w.key, t);
      }
      this._updateTile(t, w);
      this.el.appendChild(t.el); // keeps the wanted order
    }
    const n = wanted.length;
    const cols = n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : 4;
    this.el.style.setProperty('--cols', cols);
    this.el.dataset.count = n;
    this._renderAudio();
  }

  _makeTile(w) {
    const el = document.createElement('figure');
    el.className = 'tile';
    el.tabIndex = 0;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // sound comes from the <audio> elements
    const avatar = document.createElement('div');
    avatar.className = 'avatar';
    avatar.setAttribute('aria-hidden', 'true');
    const cap = document.createElement('figcaption');
    const name = document.createElement('span');
    name.className = 'name';
    const mic = document.createElement('span');
    mic.className = 'mic-off';
    mic.textContent = 'muted';
    cap.append(name, mic);
    el.append(video, avatar, cap);
    return { el, video, avatar, name, mic, trackId: null, track: null };
  }

  _updateTile(t, w) {
    const { el } = t;
    el.dataset.identity = w.identity;
    el.dataset.source = w.source;
    if (w.self) el.dataset.self = 'true';
    if (w.trackId) {
      if (t.trackId !== w.trackId) {
        if (t.trackId) this.resize.unobserve(el);
        el.dataset.track = w.trackId;
        this.resize.observe(el);
      }
    } else {
      delete el.dataset.track;
    }
    t.trackId = w.trackId;
    if (t.track !== w.track) {
      t.track = w.track;
      t.video.srcObject = w.track ? new MediaStream([w.track]) : null;
      if (w.track) t.video.play().catch(() => {});
    }
    el.classList.toggle('has-video', !!w.track);
    el.classList.toggle('self', !!w.self);
    el.classList.toggle('screen', w.source === 'screen');
    el.classList.toggle('speaking', w.source !== 'screen' && this.session.activeSpeaker === w.identity);
    t.name.textContent = w.name;
    t.avatar.textContent = initials(w.name);
    t.mic.hidden = !w.micMuted || w.source === 'screen';
    const bits = [w.name];
    if (w.source === 'room_camera') bits.push('room camera');
    if (w.micMuted && w.source !== 'screen') bits.push('microphone muted');
    if (el.classList.contains('speaking')) bits.push('speaking');
    el.setAttribute('aria-label', bits.join(', '));
  }

  _renderAudio() {
    if (this.opts.audio === false) return;
    const s = this.session;
    const want = new Map();
    for (const p of s.participants.values()) {
      if (s.you && p.identity === s.you.identity) continue;
      for (const t of p.tracks.values()) {
        if (t.kind !== 'audio') continue;
        const track = s.remoteTrack(t.id);
        if (track) want.set(t.id, track);
      }
    }
    for (const [id, el] of this.audios) {
      if (!want.has(id)) {
        el.srcObject = null;
        el.remove();
        this.audios.delete(id);
      }
    }
    for (const [id, track] of want) {
      let el = this.audios.get(id);
      if (!el) {
        el = document.createElement('audio');
        el.autoplay = true;
        el.dataset.track = id;
        this.audioBox.append(el);
        this.audios.set(id, el);
        if (canPickSpeaker && this.speakerId) el.setSinkId(this.speakerId).catch(() => {});
      }
      if (!el.srcObject || el.srcObject.getTracks()[0] !== track) {
        el.srcObject = new MediaStream([track]);
        el.play().catch(() => {});
      }
    }
  }

  /** Every element that plays sound (for the speaker picker). */
  audioElements() {
    return [...this.audios.values()];
  }

  setSpeaker(deviceId) {
    this.speakerId = deviceId;
    if (!canPickSpeaker) return;
    for (const el of this.audios.values()) el.setSinkId(deviceId || '').catch(() => {});
  }
}
