//! WebRTC statistics from inside the page.
//!
//! [`STATS_JS`] runs at the start of every document a test tab loads. It wraps
//! `RTCPeerConnection` so every connection the page makes is remembered (the
//! page under test needs no hooks), and defines `window.__rbx`:
//!
//! * `allStats()` — a compact summary of `getStats()` per open connection,
//!   deserialized here as [`PcStats`];
//! * `startWatch()` / `watchReport()` — a 100 ms sampler in the page that
//!   records, per received video stream, the longest gap between two increases
//!   of `framesDecoded` and every change of `frameWidth` ([`WatchedVideo`]).
//!   Sampling in the page keeps DevTools latency out of the measurement.

use serde::Deserialize;

/// Installed in every test tab before the page's own scripts.
pub const STATS_JS: &str = r#"
(() => {
  if (window.__rbx) return;
  const pcs = [];
  const Orig = window.RTCPeerConnection;
  if (Orig) {
    const Wrapped = function (...args) {
      const pc = new Orig(...args);
      pcs.push(pc);
      return pc;
    };
    Wrapped.prototype = Orig.prototype;
    Object.setPrototypeOf(Wrapped, Orig);
    window.RTCPeerConnection = Wrapped;
  }
  const num = (v) => (typeof v === 'number' ? v : 0);
  async function stats(pc) {
    const r = await pc.getStats();
    const codecs = {};
    let selectedPair = null;
    r.forEach((s) => {
      if (s.type === 'codec') codecs[s.id] = s.mimeType;
      if (s.type === 'transport' && s.selectedCandidatePairId) selectedPair = s.selectedCandidatePairId;
    });
    const out = { state: pc.connectionState, inbound: [], outbound: [], pair: null };
    r.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        out.inbound.push({
          kind: s.kind, mid: s.mid ?? null, ssrc: s.ssrc, trackIdentifier: s.trackIdentifier ?? null,
          codec: codecs[s.codecId] ?? null,
          packetsReceived: num(s.packetsReceived), bytesReceived: num(s.bytesReceived),
          packetsLost: num(s.packetsLost), framesDecoded: num(s.framesDecoded),
          keyFramesDecoded: num(s.keyFramesDecoded),
          frameWidth: num(s.frameWidth), frameHeight: num(s.frameHeight),
          framesPerSecond: num(s.framesPerSecond), freezeCount: num(s.freezeCount),
          totalFreezesDuration: num(s.totalFreezesDuration), audioLevel: num(s.audioLevel),
          nackCount: num(s.nackCount), pliCount: num(s.pliCount),
        });
      } else if (s.type === 'outbound-rtp') {
        out.outbound.push({
          kind: s.kind, mid: s.mid ?? null, ssrc: s.ssrc, rid: s.rid ?? null,
          codec: codecs[s.codecId] ?? null,
          packetsSent: num(s.packetsSent), bytesSent: num(s.bytesSent),
          framesEncoded: num(s.framesEncoded), frameWidth: num(s.frameWidth),
          frameHeight: num(s.frameHeight), targetBitrate: num(s.targetBitrate),
          qualityLimitationReason: s.qualityLimitationReason ?? null,
          active: s.active ?? true,
        });
      } else if (s.type === 'candidate-pair' && s.id === selectedPair) {
        out.pair = {
          state: s.state,
          currentRoundTripTime: num(s.currentRoundTripTime),
          availableOutgoingBitrate: num(s.availableOutgoingBitrate),
          bytesReceived: num(s.bytesReceived), bytesSent: num(s.bytesSent),
        };
      }
    });
    return out;
  }
  const watch = { timer: null, busy: false, videos: {} };
  function startWatch(intervalMs = 100) {
    if (watch.timer) return true;
    watch.timer = setInterval(async () => {
      if (watch.busy) return;
      watch.busy = true;
      try {
        for (const [i, pc] of pcs.entries()) {
          if (pc.connectionState === 'closed') continue;
          const r = await pc.getStats();
          const now = performance.now();
          r.forEach((s) => {
            if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
            const key = `${i}/${s.mid ?? s.ssrc}`;
            let v = watch.videos[key];
            if (!v) {
              v = watch.videos[key] = { pc: i, mid: s.mid ?? null, framesDecoded: 0, firstFrameAt: null,
                lastFrameAt: null, maxStallMs: 0, widths: [], stalls: [] };
            }
            const f = num(s.framesDecoded);
            if (f > v.framesDecoded) {
              if (v.lastFrameAt !== null) {
                const gap = now - v.lastFrameAt;
                v.maxStallMs = Math.max(v.maxStallMs, gap);
                if (gap >= 400) v.stalls.push({ fromMs: Math.round(v.lastFrameAt), ms: Math.round(gap) });
              } else {
                v.firstFrameAt = now;
              }
              v.lastFrameAt = now;
              v.framesDecoded = f;
            }
            const w = num(s.frameWidth);
            const last = v.widths[v.widths.length - 1];
            if (w && (!last || last.width !== w)) v.widths.push({ atMs: Math.round(now), width: w });
          });
        }
      } finally {
        watch.busy = false;
      }
    }, intervalMs);
    return true;
  }
  function watchReport() {
    const now = performance.now();
    return Object.values(watch.videos).map((v) => ({
      ...v,
      // A stall still going on counts too.
      maxStallMs: Math.round(Math.max(v.maxStallMs, v.lastFrameAt === null ? 0 : now - v.lastFrameAt)),
      firstFrameAt: v.firstFrameAt === null ? null : Math.round(v.firstFrameAt),
      lastFrameAt: v.lastFrameAt === null ? null : Math.round(v.lastFrameAt),
      nowMs: Math.round(now),
    }));
  }
  function resetWatch() {
    for (const v of Object.values(watch.videos)) {
      v.maxStallMs = 0;
      v.stalls = [];
      v.widths = v.widths.slice(-1);
    }
    return true;
  }
  window.__rbx = {
    pcs,
    stats,
    allStats: async () => Promise.all(pcs.filter((pc) => pc.connectionState !== 'closed').map(stats)),
    startWatch,
    watchReport,
    resetWatch,
  };
})();
"#;

/// A fake microphone for a test tab: `getUserMedia`'s audio is replaced by a
/// 440 Hz oscillator whose gain the test sets (`window.__rbxAudio.set(0.8)`),
/// so one tab can "speak" while the others are silent. The fake device's own
/// beeps are the same in every tab and would make them all speak at once.
pub fn fake_mic_script(initial_gain: f32) -> String {
    format!(
        r#"
(() => {{
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) return;
  const orig = md.getUserMedia.bind(md);
  let ctx = null, gain = null;
  window.__rbxAudio = {{
    level: {initial_gain},
    set(v) {{ this.level = v; if (gain) gain.gain.value = v; return true; }},
  }};
  md.getUserMedia = async (c) => {{
    const s = await orig(c);
    if (!c || !c.audio) return s;
    if (!ctx) {{
      ctx = new AudioContext();
      gain = ctx.createGain();
      gain.gain.value = window.__rbxAudio.level;
      const osc = ctx.createOscillator();
      osc.frequency.value = 440;
      osc.connect(gain);
      osc.start();
    }}
    await ctx.resume();
    const dst = ctx.createMediaStreamDestination();
    gain.connect(dst);
    for (const t of s.getAudioTracks()) {{ s.removeTrack(t); t.stop(); }}
    s.addTrack(dst.stream.getAudioTracks()[0]);
    return s;
  }};
}})();
"#
    )
}

/// One `RTCPeerConnection`'s statistics.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PcStats {
    pub state: String,
    pub inbound: Vec<Inbound>,
    pub outbound: Vec<Outbound>,
    pub pair: Option<Pair>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbound {
    pub kind: String,
    pub mid: Option<String>,
    pub ssrc: u32,
    pub track_identifier: Option<String>,
    pub codec: Option<String>,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_lost: i64,
    pub frames_decoded: u64,
    pub key_frames_decoded: u64,
    pub frame_width: u32,
    pub frame_height: u32,
    pub frames_per_second: f64,
    pub freeze_count: u64,
    pub total_freezes_duration: f64,
    pub audio_level: f64,
    pub nack_count: u64,
    pub pli_count: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    pub kind: String,
    pub mid: Option<String>,
    pub ssrc: u32,
    pub rid: Option<String>,
    pub codec: Option<String>,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub frames_encoded: u64,
    pub frame_width: u32,
    pub frame_height: u32,
    pub target_bitrate: f64,
    pub quality_limitation_reason: Option<String>,
    pub active: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pair {
    pub state: String,
    pub current_round_trip_time: f64,
    pub available_outgoing_bitrate: f64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// What the in-page sampler saw of one received video stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedVideo {
    pub pc: usize,
    pub mid: Option<String>,
    pub frames_decoded: u64,
    pub first_frame_at: Option<u64>,
    pub last_frame_at: Option<u64>,
    /// Longest time between two increases of `framesDecoded` (100 ms resolution).
    pub max_stall_ms: u64,
    /// Every change of `frameWidth`, in order.
    pub widths: Vec<WidthChange>,
    /// Every gap of 400 ms or more between decoded frames.
    pub stalls: Vec<Stall>,
    pub now_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stall {
    /// Page time (ms) of the last frame before the gap.
    pub from_ms: u64,
    pub ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WidthChange {
    pub at_ms: u64,
    pub width: u32,
}

impl PcStats {
    /// Received streams of `kind` (`"audio"`/`"video"`).
    pub fn inbound_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Inbound> + 'a {
        self.inbound.iter().filter(move |i| i.kind == kind)
    }
}

/// Sum of a counter over every connection's received streams of `kind`.
pub fn total_inbound(all: &[PcStats], kind: &str, f: impl Fn(&Inbound) -> u64) -> u64 {
    all.iter().flat_map(|p| p.inbound_of(kind)).map(f).sum()
}

/// Bit rate of a growing byte counter over a sliding window.
#[derive(Debug, Clone)]
pub struct RateMeter {
    window: std::time::Duration,
    samples: std::collections::VecDeque<(std::time::Instant, u64)>,
}

impl RateMeter {
    pub fn new(window: std::time::Duration) -> Self {
        RateMeter { window, samples: std::collections::VecDeque::new() }
    }

    /// Add a reading of the counter; the rate in bits/s over the last
    /// `window`, once the readings span at least that long.
    pub fn push(&mut self, at: std::time::Instant, bytes: u64) -> Option<f64> {
        self.samples.push_back((at, bytes));
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= self.window {
            self.samples.pop_front();
        }
        let (t0, b0) = *self.samples.front()?;
        let span = at.duration_since(t0);
        (span >= self.window).then(|| bytes.saturating_sub(b0) as f64 * 8.0 / span.as_secs_f64())
    }

    /// Forget the readings (after a change of conditions).
    pub fn reset(&mut self) {
        self.samples.clear();
    }
}
