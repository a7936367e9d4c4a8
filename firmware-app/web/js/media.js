// Local camera, microphone, speaker and screen.
//
// Device choices are remembered in localStorage. Errors from getUserMedia are
// turned into sentences a person can act on.

const PREFS_KEY = 'roombox.devices';

export const canPickSpeaker = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;
export const canShareScreen = !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);

export function loadPrefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS_KEY)) || {};
  } catch {
    return {};
  }
}

function savePrefs(prefs) {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch { /* private mode */ }
}

/** A sentence for a getUserMedia/getDisplayMedia failure. */
export function describeMediaError(err, what = 'camera and microphone') {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `The browser blocked the ${what}. Allow access in the address bar, then try again.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} was found. Check that it is plugged in, or pick another in Settings.`;
    case 'NotReadableError':
    case 'AbortError':
      return `The ${what} is in use by another program or could not start.`;
    case 'TypeError':
      return `The ${what} needs a secure page (https). Open the link the box printed.`;
    default:
      return `Could not start the ${what}: ${err && err.message ? err.message : err}`;
  }
}

/** Cameras, microphones and speakers (labels appear once permission is granted). */
export async function listDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return { cameras: [], mics: [], speakers: [] };
  const all = await navigator.mediaDevices.enumerateDevices();
  const pick = (kind, word) =>
    all.filter((d) => d.kind === kind).map((d, i) => ({ id: d.deviceId, label: d.label || `${word} ${i + 1}` }));
  return { cameras: pick('videoinput', 'Camera'), mics: pick('audioinput', 'Microphone'), speakers: pick('audiooutput', 'Speaker') };
}

/** Route every element's sound to the speaker `deviceId` where the browser allows it. */
export async function setSpeaker(elements, deviceId) {
  if (!canPickSpeaker) return false;
  await Promise.all([...elements].map((el) => el.setSinkId(deviceId || '').catch(() => {})));
  return true;
}

/** The user's camera and microphone, as separate tracks that can be swapped. */
export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.prefs = loadPrefs();
    this.audio = null;
    this.video = null;
    this.screen = null;
  }

  _videoConstraints() {
    const c = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
    if (this.prefs.cameraId) c.deviceId = { ideal: this.prefs.cameraId };
    return c;
  }

  _audioConstraints() {
    const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (this.prefs.micId) c.deviceId = { ideal: this.prefs.micId };
    return c;
  }

  /**
   * Start what is asked for. If both fail together, try each alone so a
   * missing camera still lets the person talk. Returns the errors (sentences).
   */
  async start({ audio = true, video = true } = {}) {
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) return [describeMediaError({ name: 'TypeError' })];
    const errors = [];
    try {
      const s = await md.getUserMedia({ audio: audio && this._audioConstraints(), video: video && this._videoConstraints() });
      this.audio = s.getAudioTracks()[0] || null;
      this.video = s.getVideoTracks()[0] || null;
    } catch (err) {
      if (audio && video) {
        for (const kind of ['audio', 'video']) {
          try {
            const s = await md.getUserMedia({ [kind]: kind === 'audio' ? this._audioConstraints() : this._videoConstraints() });
            this[kind] = s.getTracks()[0];
          } catch (e) {
            errors.push(describeMediaError(e, kind === 'audio' ? 'microphone' : 'camera'));
          }
        }
      } else {
        errors.push(describeMediaError(err, audio ? 'microphone' : 'camera'));
      }
    }
    return errors;
  }

  /** Stop the camera (its light goes off). */
  cameraOff() {
    if (this.video) this.video.stop();
    this.video = null;
  }

  /** Start the camera again (or with another device). */
  async cameraOn() {
    const s = await navigator.mediaDevices.getUserMedia({ video: this._videoConstraints() });
    if (this.video) this.video.stop();
    this.video = s.getVideoTracks()[0];
    return this.video;
  }

  async useCamera(deviceId) {
    this.prefs.cameraId = deviceId;
    savePrefs(this.prefs);
    return this.cameraOn();
  }

  async useMic(deviceId) {
    this.prefs.micId = deviceId;
    savePrefs(this.prefs);
    const s = await navigator.mediaDevices.getUserMedia({ audio: this._audioConstraints() });
    const enabled = this.audio ? this.audio.enabled : true;
    if (this.audio) this.audio.stop();
    this.audio = s.getAudioTracks()[0];
    this.audio.enabled = enabled;
    return this.audio;
  }

  useSpeaker(deviceId) {
    this.prefs.speakerId = deviceId;
    savePrefs(this.prefs);
  }

  /** Share a screen or window; resolves to the track, or null if the person cancelled. */
  async startScreen() {
    try {
      const s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
      this.screen = s.getVideoTracks()[0];
      this.screen.contentHint = 'detail';
      this.screen.addEventListener('ended', () => {
        this.screen = null;
        this.dispatchEvent(new CustomEvent('screen-ended'));
      });
      return this.screen;
    } catch (err) {
      if (err && err.name === 'NotAllowedError') return null;
      throw new Error(describeMediaError(err, 'screen share'));
    }
  }

  stopScreen() {
    if (this.screen) this.screen.stop();
    this.screen = null;
  }

  stopAll() {
    for (const t of [this.audio, this.video, this.screen]) if (t) t.stop();
    this.audio = this.video = this.screen = null;
  }
}
