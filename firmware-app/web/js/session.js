// A room session: one WebSocket to /ws/{room}, one RTCPeerConnection.
//
// The room protocol is in docs/protocol.md (source of truth:
// sfu-core/src/protocol.rs). Negotiation is "perfect negotiation" with the
// server as the polite peer: this client is impolite, so when the server's
// offer collides with one of ours we ignore it — the server rolls back,
// answers ours, and offers again.
//
// The session keeps a model of the room (participants, their tracks, which
// remote track arrives on which transceiver) and reports changes as events:
//
//   state           {state: 'connecting'|'connected'|'reconnecting'|'closed', error?}
//   joined          {you, participants}
//   participants    {}                      the participant list changed
//   track           {trackId, track, info}  a remote track is playable (or ended: track=null)
//   speaker         {identity}
//   layer           {trackId, rid}
//   quality         {score, bitrate_bps, loss_permille}   the server's view
//   chat            {from, text, ts}
//   muted-by-admin  {kind, muted}
//   local-tracks    {}                      our published tracks changed
//
// Reconnects: when the socket or the connection drops, the session rejoins
// with backoff (0.5 s doubling to 15 s, with jitter) and republishes what it
// was publishing. It stops for good on kick, on a refused token, or close().

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 10000;
/** No `joined` this long after the socket opened: give up on this attempt. */
const JOIN_TIMEOUT_MS = 10000;
const PONG_TIMEOUT_MS = 25000;

/** Errors after which retrying cannot help. */
const FATAL_CODES = new Set(['unauthorized', 'forbidden']);

export class RoomSession extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.room
   * @param {() => Promise<string>|string} opts.token  current access token (called at every (re)join)
   * @param {boolean} [opts.autoSubscribe=true]
   * @param {(info) => boolean} [opts.wantTrack]  with autoSubscribe=false: which tracks to subscribe
   * @param {string} [opts.baseUrl]  defaults to this page's origin
   */
  constructor(opts) {
    super();
    this.room = opts.room;
    this.tokenSource = opts.token;
    this.autoSubscribe = opts.autoSubscribe !== false;
    this.wantTrack = opts.wantTrack || (() => true);
    this.baseUrl = opts.baseUrl || location.origin;
    /** Log every signaling message (also: localStorage['roombox.debug'] = '1'). */
    this.debug = !!opts.debug || globalThis.localStorage?.getItem('roombox.debug') === '1';

    this.state = 'idle';
    this.you = null;
    /** identity -> {identity, name, local, tracks: Map(trackId -> TrackInfo)} */
    this.participants = new Map();
    this.activeSpeaker = null;
    /** mid -> trackId (from `subscribed`) and mid -> MediaStreamTrack (from `ontrack`) */
    this.midToTrackId = new Map();
    this.midToTrack = new Map();
    /** trackId -> mid, for the tracks we receive */
    this.subscribed = new Map();
    /** trackId -> {width, height} last asked */
    this.sizes = new Map();
    /** What we publish: key -> {track, kind, source, simulcast, transceiver, announced, trackId, muted} */
    this.local = new Map();
    this.layers = new Map();
    this.serverQuality = null;

    this.ws = null;
    this.pc = null;
    this.chat = null;
    this.seq = 0; // our offers
    this.pendingOfferSeq = null;
    this.makingOffer = false;
    this.closedByUs = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.joinTimer = null;
    this.pingTimer = null;
    this.lastPong = 0;
    this.inbox = Promise.resolve();
    /** A retryable refusal (room full) to report instead of the close that follows. */
    this.refusal = null;
  }

  // ---- public API ---------------------------------------------------------

  /** Connect (and keep reconnecting until close()). */
  start() {
    this.closedByUs = false;
    this._connect();
  }

  /** Leave the room for good. */
  close() {
    this.closedByUs = true;
    clearTimeout(this.retryTimer);
    this._send({ type: 'leave' });
    this._teardown();
    this._setState('closed');
  }

  /**
   * Publish a local track. `key` names it for later calls ('camera', 'mic', 'screen').
   * `source` is the protocol's track source. With `simulcast`, video is sent
   * as three layers q/h/f (quarter, half, full size).
   */
  publish(key, track, { source, simulcast = false } = {}) {
    const entry = {
      key, track, kind: track.kind, source: source || (track.kind === 'audio' ? 'microphone' : 'camera'),
      simulcast, transceiver: null, announced: false, trackId: null, muted: false,
    };
    this.local.set(key, entry);
    if (this.pc) this._addTransceiver(entry);
    this._emit('local-tracks', {});
  }

  /** Swap the track behind a publication (device change, camera back on) without renegotiating. */
  async replaceTrack(key, track) {
    const e = this.local.get(key);
    if (!e) return;
    e.track = track;
    if (e.transceiver) await e.transceiver.sender.replaceTrack(track);
    this._emit('local-tracks', {});
  }

  /** Stop publishing `key` (e.g. screen share ended). */
  unpublish(key) {
    const e = this.local.get(key);
    if (!e) return;
    this.local.delete(key);
    if (e.transceiver && this.pc && this.pc.signalingState !== 'closed') {
      try {
        e.transceiver.sender.replaceTrack(null);
        e.transceiver.stop();
      } catch { /* connection already gone */ }
    }
    this._emit('local-tracks', {});
  }

  /** Mute/unmute a publication: the track sends silence/black and the room is told. */
  setMuted(key, muted) {
    const e = this.local.get(key);
    if (!e) return;
    e.muted = muted;
    if (e.track) e.track.enabled = !muted;
    if (e.trackId) this._send({ type: 'mute', track: e.trackId, muted });
    this._emit('local-tracks', {});
  }

  /** Tell the server how large a remote video is shown, so it forwards the layer that fits. */
  setTileSize(trackId, width, height) {
    width = Math.round(width);
    height = Math.round(height);
    const last = this.sizes.get(trackId);
    if (last && Math.abs(last.width - width) < 16 && Math.abs(last.height - height) < 16) return;
    this.sizes.set(trackId, { width, height });
    if (this.subscribed.has(trackId) || this.autoSubscribe) {
      this._send({ type: 'subscribe', track: trackId, width, height });
    }
  }

  subscribe(trackId) {
    const size = this.sizes.get(trackId) || {};
    this._send({ type: 'subscribe', track: trackId, ...size });
  }

  unsubscribe(trackId) {
    this._send({ type: 'unsubscribe', track: trackId });
  }

  /** Send a chat line over the data channel; false when it is not open. */
  sendChat(text) {
    if (!this.chat || this.chat.readyState !== 'open') return false;
    this.chat.send(JSON.stringify({ text }));
    return true;
  }

  /** The remote MediaStreamTrack for a track id, once it plays. */
  remoteTrack(trackId) {
    const mid = this.subscribed.get(trackId);
    return mid === undefined ? null : this.midToTrack.get(mid) || null;
  }

  /** A published track's info by id. */
  trackInfo(trackId) {
    for (const p of this.participants.values()) {
      const t = p.tracks.get(trackId);
      if (t) return t;
    }
    return null;
  }

  // ---- connection ---------------------------------------------------------

  async _connect() {
    this._teardown();
    this._setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let token;
    try {
      token = await this.tokenSource();
    } catch (err) {
      this._fatal({ code: 'unauthorized', message: `Could not get an access token: ${err.message || err}` });
      return;
    }
    const url = new URL(`/ws/${encodeURIComponent(this.room)}`, this.baseUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url);
    this.ws = ws;
    // A fresh queue per socket: an operation on a closed RTCPeerConnection
    // never settles, and must not hold up the next connection's messages.
    this.inbox = Promise.resolve();
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'join', token, auto_subscribe: this.autoSubscribe }));
      clearTimeout(this.joinTimer);
      this.joinTimer = setTimeout(() => {
        if (this.ws === ws && !this.pc) this._lost('no answer to join');
      }, JOIN_TIMEOUT_MS);
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn('room: ignoring a message that is not JSON');
        return;
      }
      // One message at a time, in order: an answer must be applied before the
      // offer that follows it is judged for glare.
      this.inbox = this.inbox
        .then(() => (this.ws === ws ? this._onMessage(msg) : undefined))
        .catch((err) => console.error('room: handling', msg.type, err));
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this._lost(`the signaling connection closed (${ev.code}${ev.reason ? ': ' + ev.reason : ''})`);
    };
  }

  _lost(why) {
    if (this.closedByUs || this.state === 'closed') return;
    console.warn('room: connection lost:', why);
    this._retry('The connection to the box was lost.', 0);
  }

  /**
   * Tear down and rejoin after a backoff (0.5 s doubling to 15 s, with
   * jitter), at least `minDelayMs`. A refusal seen just before (room full)
   * is what the person is told, rather than the socket closing after it.
   */
  _retry(why, minDelayMs) {
    this._teardown();
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.max(minDelayMs, base / 2 + Math.random() * base / 2);
    this.attempt += 1;
    const message = this.refusal ? this.refusal.message : why;
    this._setState('reconnecting', { code: this.refusal ? this.refusal.code : 'lost', message, retryInMs: Math.round(delay) });
    this.refusal = null;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._connect(), delay);
  }

  _fatal(error) {
    this.closedByUs = true;
    this._teardown();
    this._setState('closed', error);
  }

  _teardown() {
    clearTimeout(this.joinTimer);
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onopen = null;
      try { ws.close(); } catch { /* already closed */ }
    }
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = pc.onconnectionstatechange = null;
      pc.close();
    }
    this.chat = null;
    for (const e of this.local.values()) {
      e.transceiver = null;
      e.announced = false;
      e.trackId = null;
    }
    const hadTracks = this.midToTrack.size > 0;
    this.midToTrack.clear();
    this.midToTrackId.clear();
    this.subscribed.clear();
    this.layers.clear();
    this.pendingOfferSeq = null;
    this.makingOffer = false;
    if (hadTracks) this._emit('participants', {});
  }

  _setState(state, error) {
    this.state = state;
    this._emit('state', { state, error });
  }

  _send(msg) {
    if (this.debug) console.debug(`room -> ${Math.round(performance.now())}`, msg.type, JSON.stringify(msg).slice(0, 300));
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---- messages -----------------------------------------------------------

  async _onMessage(msg) {
    if (this.debug) console.debug(`room <- ${Math.round(performance.now())}`, msg.type, JSON.stringify(msg).slice(0, 300));
    switch (msg.type) {
      case 'joined': return this._onJoined(msg);
      case 'participant_joined':
        this._upsertParticipant(msg.participant);
        this._emit('participants', {});
        return;
      case 'participant_left':
        this.participants.delete(msg.identity);
        if (this.activeSpeaker === msg.identity) this._setSpeaker(null);
        this._emit('participants', {});
        return;
      case 'track_published': return this._onTrackPublished(msg.track);
      case 'track_unpublished': return this._onTrackUnpublished(msg.track);
      case 'track_muted': {
        const t = this.trackInfo(msg.track);
        if (t) t.muted = msg.muted;
        this._emit('participants', {});
        return;
      }
      case 'offer': return this._onServerOffer(msg);
      case 'answer': return this._onServerAnswer(msg);
      case 'subscribed':
        this.subscribed.set(msg.track, msg.mid);
        this.midToTrackId.set(msg.mid, msg.track);
        this._maybeTrackReady(msg.mid);
        return;
      case 'unsubscribed': {
        const mid = this.subscribed.get(msg.track);
        this.subscribed.delete(msg.track);
        if (mid !== undefined) this.midToTrackId.delete(mid);
        this._emit('track', { trackId: msg.track, track: null, info: this.trackInfo(msg.track) });
        return;
      }
      case 'layer':
        this.layers.set(msg.track, msg.rid);
        this._emit('layer', { trackId: msg.track, rid: msg.rid });
        return;
      case 'active_speaker': return this._setSpeaker(msg.identity ?? null);
      case 'connection_quality':
        this.serverQuality = { score: msg.score, bitrate_bps: msg.bitrate_bps, loss_permille: msg.loss_permille };
        this._emit('quality', this.serverQuality);
        return;
      case 'muted_by_admin': return this._onMutedByAdmin(msg);
      case 'recording':
        this.recording = !!msg.recording;
        this._emit('recording', { recording: this.recording });
        return;
      case 'pong':
        this.lastPong = Date.now();
        return;
      case 'error': return this._onError(msg);
      case 'kicked':
        this._fatal({ code: 'kicked', message: `You were removed from the meeting${msg.reason ? ': ' + msg.reason : ''}.` });
        return;
      case 'closing':
        this._retry(`The room is closing (${msg.reason}).`, msg.retry_after_ms ?? 2000);
        return;
      default:
        console.debug('room: unknown message', msg.type);
    }
  }

  _onJoined(msg) {
    this.attempt = 0;
    this.refusal = null;
    this.you = msg.you;
    this.participants.clear();
    for (const p of msg.participants) this._upsertParticipant(p);
    this.activeSpeaker = msg.active_speaker ?? null;
    // consent: the banner shows from the first moment of a recorded meeting
    this.recording = !!msg.recording;
    this._emit('recording', { recording: this.recording });

    const pc = new RTCPeerConnection({
      iceServers: (msg.ice_servers || []).map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })),
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc = pc;
    pc.onicecandidate = (e) => {
      if (this.pc !== pc) return;
      this._send({ type: 'candidate', candidate: e.candidate ? e.candidate.candidate : null, sdpMid: e.candidate ? e.candidate.sdpMid : null });
    };
    pc.ontrack = (e) => {
      const mid = e.transceiver.mid;
      this.midToTrack.set(mid, e.track);
      e.track.addEventListener('ended', () => this.midToTrack.delete(mid));
      this._maybeTrackReady(mid);
    };
    pc.onconnectionstatechange = () => {
      if (this.pc !== pc) return;
      if (pc.connectionState === 'connected') this._setState('connected');
      if (pc.connectionState === 'failed') this._lost('the media connection failed');
    };
    pc.ondatachannel = (e) => {
      if (e.channel.label === 'chat') this._useChat(e.channel);
    };
    pc.onnegotiationneeded = () => this._negotiate();

    this._useChat(pc.createDataChannel('chat'));
    for (const e of this.local.values()) this._addTransceiver(e);

    this.lastPong = Date.now();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastPong > PONG_TIMEOUT_MS) {
        this._lost('the server stopped answering pings');
        return;
      }
      this._send({ type: 'ping', id: Date.now() });
    }, PING_EVERY_MS);

    this._setState(pc.connectionState === 'connected' ? 'connected' : 'connecting');
    this._emit('joined', { you: this.you, participants: [...this.participants.values()] });
    this._emit('participants', {});
    this._emit('speaker', { identity: this.activeSpeaker });
  }

  _useChat(channel) {
    if (this.chat && this.chat !== channel && this.chat.readyState === 'open') return;
    this.chat = channel;
    channel.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (typeof m.text === 'string') this._emit('chat', { from: m.from ?? null, text: m.text, ts: m.ts ?? Date.now() });
    };
  }

  _upsertParticipant(p) {
    const tracks = new Map((p.tracks || []).map((t) => [t.id, { ...t }]));
    this.participants.set(p.identity, { identity: p.identity, name: p.name || null, local: !!p.local, tracks });
    if (this.you && p.identity === this.you.identity) this._claimOwnTracks();
    if (!this.autoSubscribe) for (const t of tracks.values()) this._maybeSubscribe(t);
  }

  _onTrackPublished(info) {
    let p = this.participants.get(info.participant);
    if (!p) {
      p = { identity: info.participant, name: null, local: false, tracks: new Map() };
      this.participants.set(info.participant, p);
    }
    p.tracks.set(info.id, { ...info });
    if (this.you && info.participant === this.you.identity) this._claimOwnTracks();
    else if (!this.autoSubscribe) this._maybeSubscribe(info);
    this._emit('participants', {});
  }

  _onTrackUnpublished(trackId) {
    for (const p of this.participants.values()) p.tracks.delete(trackId);
    this._emit('track', { trackId, track: null, info: null });
    this._emit('participants', {});
  }

  _maybeSubscribe(info) {
    if (this.you && info.participant === this.you.identity) return;
    if (this.wantTrack(info)) this.subscribe(info.id);
  }

  /** Match the server's ids for our own tracks by kind and source. */
  _claimOwnTracks() {
    const me = this.participants.get(this.you.identity);
    if (!me) return;
    for (const info of me.tracks.values()) {
      const e = [...this.local.values()].find((l) => !l.trackId && l.kind === info.kind && l.source === info.source);
      if (!e) continue;
      e.trackId = info.id;
      if (e.muted) this._send({ type: 'mute', track: info.id, muted: true });
    }
    this._emit('local-tracks', {});
  }

  _maybeTrackReady(mid) {
    const trackId = this.midToTrackId.get(mid);
    const track = this.midToTrack.get(mid);
    if (trackId === undefined || !track) return;
    this._emit('track', { trackId, track, info: this.trackInfo(trackId) });
    this._emit('participants', {});
  }

  _setSpeaker(identity) {
    this.activeSpeaker = identity;
    this._emit('speaker', { identity });
  }

  _onMutedByAdmin(msg) {
    for (const e of this.local.values()) {
      if (e.trackId === msg.track) {
        e.muted = msg.muted;
        if (e.track) e.track.enabled = !msg.muted;
        this._emit('muted-by-admin', { key: e.key, kind: e.kind, muted: msg.muted });
      }
    }
    this._emit('local-tracks', {});
  }

  _onError(msg) {
    console.warn('room: server error', msg.code, msg.message);
    const human = {
      unauthorized: 'Your access link is not valid any more (expired or revoked). Ask for a new link.',
      forbidden: 'This link does not allow joining this room.',
      room_full: 'The room is full.',
      too_many_rooms: 'The box is hosting as many meetings as it can.',
      overloaded: 'The box is busy.',
      too_many_tracks: 'You are already sharing as much as the room allows.',
    }[msg.code];
    const error = { code: msg.code, message: human || msg.message };
    if (FATAL_CODES.has(msg.code)) {
      this._fatal(error);
    } else if (['room_full', 'too_many_rooms', 'overloaded'].includes(msg.code) && !this.pc) {
      // Refused at join: the server closes (or sends `closing`); retry patiently.
      this.attempt = Math.max(this.attempt, 3);
      this.refusal = error;
    } else {
      this._emit('error', error);
    }
  }

  // ---- negotiation (client impolite) --------------------------------------

  _addTransceiver(e) {
    const init = { direction: 'sendonly', streams: [] };
    if (e.kind === 'video' && e.simulcast) {
      init.sendEncodings = [
        { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
        { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
        { rid: 'f', maxBitrate: 1_500_000 },
      ];
    }
    e.transceiver = this.pc.addTransceiver(e.track || e.kind, init);
    e.announced = false;
    if (e.track) e.track.enabled = !e.muted;
  }

  async _negotiate() {
    const pc = this.pc;
    if (!pc) return;
    try {
      this.makingOffer = true;
      await pc.setLocalDescription();
      if (this.pc !== pc || pc.signalingState !== 'have-local-offer') return;
      // Name our new sending transceivers (mids exist now) before the offer goes out.
      const tracks = [];
      for (const e of this.local.values()) {
        if (e.transceiver && !e.announced && e.transceiver.mid !== null) {
          tracks.push({ mid: e.transceiver.mid, kind: e.kind, source: e.source });
          e.announced = true;
        }
      }
      if (tracks.length) this._send({ type: 'publish', tracks });
      this.seq += 1;
      this.pendingOfferSeq = this.seq;
      this._send({ type: 'offer', sdp: pc.localDescription.sdp, seq: this.seq });
    } catch (err) {
      console.error('room: making an offer failed', err);
    } finally {
      this.makingOffer = false;
    }
  }

  async _onServerOffer(msg) {
    const pc = this.pc;
    if (!pc) return;
    const collision = this.makingOffer || pc.signalingState !== 'stable';
    if (collision) {
      // Impolite: keep our offer; the server rolls back and answers it.
      console.debug('room: ignoring a colliding server offer', msg.seq);
      return;
    }
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    await pc.setLocalDescription();
    if (this.pc !== pc) return;
    this._send({ type: 'answer', sdp: pc.localDescription.sdp, seq: msg.seq });
    for (const [mid] of this.midToTrackId) this._maybeTrackReady(mid);
  }

  async _onServerAnswer(msg) {
    const pc = this.pc;
    if (!pc) return;
    if (msg.seq !== this.pendingOfferSeq || pc.signalingState !== 'have-local-offer') {
      console.debug('room: dropping a stale answer', msg.seq, 'waiting for', this.pendingOfferSeq);
      return;
    }
    this.pendingOfferSeq = null;
    await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
  }
}
