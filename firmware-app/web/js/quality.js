// The connection-quality badge: our own measurements (round-trip time, loss,
// whether the encoder is held back by bandwidth) combined with the server's
// `connection_quality` score; the worse of the two is shown.

const LABELS = ['Lost', 'Poor', 'Fair', 'Good'];

/** Score 0..3 from measurements; exported for tests. */
export function scoreFrom({ connected, rttMs, lossFraction, bandwidthLimited }) {
  if (!connected) return 0;
  if (rttMs < 150 && lossFraction < 0.02 && !bandwidthLimited) return 3;
  if (rttMs < 400 && lossFraction < 0.08) return 2;
  return 1;
}

export class QualityBadge {
  /** @param {HTMLElement} el  @param {import('./session.js').RoomSession} session */
  constructor(el, session, everyMs = 2000) {
    this.el = el;
    this.session = session;
    this.prev = null;
    this.local = null;
    session.addEventListener('quality', () => this.show());
    session.addEventListener('state', () => this.show());
    this.timer = setInterval(() => this.measure().catch(() => {}), everyMs);
    this.show();
  }

  async measure() {
    const pc = this.session.pc;
    if (!pc) {
      this.local = null;
      this.show();
      return;
    }
    const stats = await pc.getStats();
    let rtt = 0, received = 0, lost = 0, limited = false, pairId = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.id === pairId) rtt = (s.currentRoundTripTime || 0) * 1000;
      if (s.type === 'inbound-rtp') {
        received += s.packetsReceived || 0;
        lost += Math.max(0, s.packetsLost || 0);
      }
      if (s.type === 'outbound-rtp' && s.qualityLimitationReason === 'bandwidth') limited = true;
    });
    const prev = this.prev;
    this.prev = { received, lost };
    const dr = prev ? received - prev.received : 0;
    const dl = prev ? lost - prev.lost : 0;
    const lossFraction = dr + dl > 0 ? dl / (dr + dl) : 0;
    this.local = {
      score: scoreFrom({ connected: pc.connectionState === 'connected', rttMs: rtt, lossFraction, bandwidthLimited: limited }),
      rttMs: Math.round(rtt),
      lossPct: Math.round(lossFraction * 1000) / 10,
      limited,
    };
    this.show();
  }

  show() {
    const srv = this.session.serverQuality;
    const connected = this.session.state === 'connected';
    let score = connected ? 3 : 0;
    if (this.local) score = Math.min(score, this.local.score);
    if (srv && connected) score = Math.min(score, srv.score);
    this.el.dataset.score = score;
    this.el.textContent = LABELS[score];
    const detail = [];
    if (this.local) detail.push(`round trip ${this.local.rttMs} ms`, `loss ${this.local.lossPct}%`);
    if (this.local && this.local.limited) detail.push('sending less video: bandwidth');
    if (srv) detail.push(`server sees ${Math.round(srv.bitrate_bps / 1000)} kbit/s, loss ${srv.loss_permille / 10}%`);
    const text = `Connection: ${LABELS[score]}${detail.length ? ' (' + detail.join(', ') + ')' : ''}`;
    this.el.title = text;
    this.el.setAttribute('aria-label', text);
  }

  stop() {
    clearInterval(this.timer);
  }
}
