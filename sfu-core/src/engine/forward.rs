//! The hot path: a publisher's packet to every subscriber's down-track, plus
//! layer allocation, keyframe requests and speaker following.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use super::*;
use crate::local::{LocalPacket, ReceivedPacket};
use crate::media::forwarder::{Decision, LayerTuning};
use crate::media::keyframe::is_keyframe;
use crate::media::speaker::amplitude;
use crate::media::vp8::Vp8Fields;
use str0m::rtp::Vp8Descriptor;

/// One video down-track in a subscriber's allocation: its layers' rates,
/// the layer its size allows and what its lowest flowing layer costs.
struct Plan {
    idx: usize,
    rates: SmallVec<[u64; 3]>,
    max: usize,
    min: u64,
}

/// One incoming packet, from a remote publisher or a local one.
pub(super) struct InPacket {
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    /// Known keyframe (local publishers say so); `None`: inspect the payload.
    pub keyframe: Option<bool>,
}

/// Assumed layer bitrates until measured (q, h, f), bits/s.
const DEFAULT_LAYER_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];
/// Downlink reserved for each audio down-track.
const AUDIO_BPS: u64 = 64_000;
/// Loss towards a subscriber (TWCC, last second) that means congestion:
/// straight to the lowest layer.
const CONGESTION_LOSS: f32 = 0.10;
/// ... or over the last statistics interval alone.
const CONGESTION_RECENT_LOSS: f32 = 0.15;
/// A video packet waiting this long in str0m's pacer (which paces at the
/// estimate) means the link carries less than flows: congestion too.
const CONGESTION_QUEUE: Duration = Duration::from_millis(150);
/// str0m's defaults for a video stream's retransmission cache, set again
/// (which empties it) on an urgent step down.
const RTX_CACHE_PACKETS: usize = 1000;
const RTX_CACHE_AGE: Duration = Duration::from_secs(3);
const RTX_RATIO_CAP: Option<f32> = Some(0.15);
/// Per packet on the wire besides the payload (RTP, SRTP tag, UDP, IPv4).
pub(super) const PACKET_OVERHEAD: usize = 12 + 10 + 8 + 20;
/// The most packets one subscriber stream's send queue may hold; past it,
/// new packets for that stream are dropped (and counted), not queued.
/// str0m's pacer queue is a plain `VecDeque` that paces at the bandwidth
/// estimate; its only limit is to raise the pacing rate (past the estimate,
/// past the link) once packets wait 2 s on average, and only while the
/// driver keeps up polling it. This bound holds regardless. Measured with
/// `roombox-bench run --family room --n 24|32` (release, shared 2-core box,
/// one run each, bound vs the same build with it disabled): RSS 141 vs
/// 1646 MB (24x24) and 271 vs 1450 MB (32x32); forwarded 6814 vs 1836 and
/// 4881 vs 2314 packets/s; median latency 2.4 vs 31.9 s and 5.3 vs 14.2 s.
pub const SEND_QUEUE_MAX_PACKETS: usize = 512;
/// ... or when its oldest unsent packet has waited this long: media later
/// than this is not worth queueing more behind (what is queued still drains
/// at the pacer's rate, so the oldest may wait a little longer than this).
pub const SEND_QUEUE_MAX_AGE: Duration = Duration::from_secs(1);

/// Whether the send queue of the stream on `mid` is at its bound.
#[inline]
fn send_queue_full(rtc: &mut Rtc, mid: Mid, now: Instant) -> bool {
    let mut api = rtc.direct_api();
    let Some(q) = api.stream_tx_by_mid(mid, None).and_then(|tx| tx.queue_info()) else { return false };
    q.packet_count() >= SEND_QUEUE_MAX_PACKETS
        || q.first_unsent().is_some_and(|t| now.saturating_duration_since(t) >= SEND_QUEUE_MAX_AGE)
}

fn source_id(tk: TrackKey, layer: usize, generation: u32) -> u64 {
    (tk << 24) ^ ((layer as u64) << 20) ^ u64::from(generation)
}

fn video_format(codec: Codec) -> VideoFormat {
    match codec {
        Codec::Vp8 => VideoFormat::Vp8,
        Codec::Vp9 => VideoFormat::Vp9,
        Codec::H264 => VideoFormat::H264,
        Codec::Av1 => VideoFormat::Av1,
        _ => VideoFormat::Other,
    }
}

fn codec_label(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "opus",
        Codec::Vp8 => "VP8",
        Codec::Vp9 => "VP9",
        Codec::H264 => "H264",
        Codec::Av1 => "AV1",
        _ => "other",
    }
}

/// The subscriber's payload type for a source codec: same codec, and for
/// H.264 the same packetization mode and (preferably) profile.
pub(super) fn resolve_pt(rtc: &Rtc, mid: Mid, codec: Codec, format: &FormatParams) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let remote = media.remote_pts();
    let mut best: Option<(i32, Pt)> = None;
    for p in rtc.codec_config().params() {
        if !remote.contains(&p.pt()) || p.spec().codec != codec {
            continue;
        }
        let f = p.spec().format;
        let mut score = 0;
        if codec == Codec::H264 {
            let pm = |x: Option<u8>| x.unwrap_or(0);
            if pm(f.packetization_mode) != pm(format.packetization_mode) {
                continue;
            }
            let (a, b) =
                (f.profile_level_id.unwrap_or(0x42001f), format.profile_level_id.unwrap_or(0x42e01f));
            if a >> 8 == b >> 8 {
                score += 4;
            } else if a >> 16 == b >> 16 {
                score += 2;
            }
        }
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, p.pt()));
        }
    }
    best.map(|b| b.1)
}

impl Engine {
    pub(super) fn on_rtp(&mut self, now: Instant, id: ParticipantId, pkt: RtpPacket) {
        let ssrc = pkt.header.ssrc;
        let Some(p) = self.participants.get_mut(&id) else { return };
        let found = p.rx.iter().find(|e| e.0 == ssrc).map(|e| (e.1, e.2 as usize));
        let (tk, layer) = match found {
            Some(x) => x,
            None => {
                // a new incoming stream: which track/layer is it?
                let Some(rtc) = p.rtc.as_mut() else { return };
                let mut api = rtc.direct_api();
                let Some(rx) = api.stream_rx(&ssrc) else { return };
                let (mid, rid) = (rx.mid(), rx.rid());
                let hit = p.published.iter().find_map(|tk| {
                    let t = self.tracks.get(tk)?;
                    if t.mid != Some(mid) {
                        return None;
                    }
                    let l =
                        if t.layers.len() == 1 { 0 } else { t.layers.iter().position(|l| l.rid == rid)? };
                    Some((*tk, l))
                });
                let Some((tk, l)) = hit else {
                    self.counters.dropped_packets += 1;
                    return;
                };
                p.rx.retain(|e| !(e.1 == tk && e.2 as usize == l));
                p.rx.push((ssrc, tk, l as u8));
                if let Some(t) = self.tracks.get_mut(&tk) {
                    let layer = &mut t.layers[l];
                    if layer.ssrc.is_some() && layer.ssrc != Some(ssrc) {
                        // publisher restarted this layer: a new source for every down-track
                        layer.generation = layer.generation.wrapping_add(1);
                    }
                    layer.ssrc = Some(ssrc);
                }
                self.request_keyframes_for_track(now, tk);
                (tk, l)
            }
        };
        let Some(p) = self.participants.get_mut(&id) else { return };
        p.publish_bytes.add(now, pkt.payload.len());
        // codec by payload type (first packet, or a codec change)
        let pt = pkt.header.payload_type;
        if let Some(t) = self.tracks.get_mut(&tk)
            && t.last_pt != Some(pt)
        {
            t.last_pt = Some(pt);
            let spec = p
                .rtc
                .as_ref()
                .and_then(|r| r.codec_config().params().iter().find(|x| x.pt() == pt).map(|x| x.spec()));
            if let Some(spec) = spec
                && (t.codec != Some(spec.codec) || t.format != spec.format)
            {
                t.codec = Some(spec.codec);
                t.codec_name = Arc::from(codec_label(spec.codec));
                t.format = spec.format;
                t.clock_rate = spec.clock_rate.get();
                t.video_format = video_format(spec.codec);
                for s in t.subscribers.iter() {
                    if let Some(sp) = self.participants.get_mut(s) {
                        for d in sp.downtracks.iter_mut().filter(|d| d.source == Some(tk)) {
                            d.pt = None;
                            d.rewriter.set_clock_rate(t.clock_rate);
                        }
                    }
                }
            }
        }
        let inp = InPacket {
            seq: *pkt.seq_no,
            ts: pkt.header.timestamp,
            marker: pkt.header.marker,
            payload: pkt.payload,
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            keyframe: None,
        };
        self.forward(now, tk, layer, inp);
    }

    /// A packet from a local publisher.
    pub fn local_packet(&mut self, now: Instant, id: ParticipantId, pkt: LocalPacket) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        let Some(&tk) = p.published.get(pkt.track) else {
            self.counters.dropped_packets += 1;
            return;
        };
        p.publish_bytes.add(now, pkt.payload.len());
        let Some(t) = self.tracks.get_mut(&tk) else { return };
        let Some(layer) = t.layers.get_mut(pkt.layer) else {
            self.counters.dropped_packets += 1;
            return;
        };
        let seq = layer.seq.extend(pkt.seq);
        let inp = InPacket {
            seq,
            ts: pkt.timestamp,
            marker: pkt.marker,
            // one copy per local packet (not per subscriber): Bytes -> Arc<[u8]> for str0m
            payload: Arc::from(&pkt.payload[..]),
            audio_level: pkt.audio_level.map(|l| -(l.min(127) as i8)),
            voice_activity: None,
            keyframe: Some(pkt.keyframe),
        };
        self.forward(now, tk, pkt.layer, inp);
        self.process(now);
    }

    /// Forward one packet of `tk`/`layer` to every subscriber.
    ///
    /// The hot path: per packet one track lookup, per subscriber one
    /// participant lookup (both by numeric id), no allocation, no string
    /// hashing; room-level work (speaker levels, counters) is accumulated on
    /// the track and folded on the tick.
    pub(super) fn forward(&mut self, now: Instant, tk: TrackKey, layer: usize, pkt: InPacket) {
        if now > self.touched_at {
            self.touched_at = now;
        }
        let Engine { tracks, participants, out, counters, touched, .. } = self;
        let Some(t) = tracks.get_mut(&tk) else { return };
        let Some(l) = t.layers.get_mut(layer) else { return };
        l.meter.add(now, pkt.payload.len() + PACKET_OVERHEAD);
        let generation = l.generation;
        if t.muted || t.admin_muted {
            return;
        }
        if let Some(level) = pkt.audio_level.filter(|_| t.kind == TrackKind::Audio) {
            t.level_sum += amplitude(level.unsigned_abs().min(127));
            t.level_n += 1;
        }
        let video = t.kind == TrackKind::Video;
        let keyframe = video && pkt.keyframe.unwrap_or_else(|| is_keyframe(t.video_format, &pkt.payload));
        // VP8: the descriptor's numbering, rewritten per down-track below
        let vp8 = if t.video_format == VideoFormat::Vp8 { Vp8Fields::parse(&pkt.payload) } else { None };
        // str0m's own parse of it, made once per packet and only when a down-track needs a patch
        let mut vp8_desc: Option<Option<Vp8Descriptor>> = None;
        let src = source_id(tk, layer, generation);
        let len = pkt.payload.len() as u64;
        let mut sent = 0u64;
        let simulcast = t.layers.len() > 1;
        for sid in t.subscribers.iter() {
            let Some(s) = participants.get_mut(sid) else { continue };
            let room_client = s.is_room_client();
            let Some(d) = s.downtracks.iter_mut().find(|d| d.source == Some(tk)) else { continue };
            if !d.ready {
                continue;
            }
            // a link slower than what flows: drop rather than let the queue grow;
            // video then restarts at a keyframe (asked for at the next tick),
            // so the subscriber never decodes across the hole
            if let (Some(rtc), Some(mid)) = (s.rtc.as_mut(), d.mid)
                && send_queue_full(rtc, mid, now)
            {
                counters.send_queue_full += 1;
                if video {
                    d.selector.reset();
                }
                continue;
            }
            // decide
            let decision = if video {
                let before = d.selector.current();
                let decision = match d.selector.decide(layer, keyframe, pkt.marker) {
                    Decision::Forward if d.rewriter.source() != Some(src) => {
                        // same layer, new source (publisher restart): restart at a keyframe
                        if keyframe {
                            Decision::Switch
                        } else {
                            d.selector.reset();
                            Decision::Drop
                        }
                    }
                    x => x,
                };
                let now_layer = d.selector.current();
                if decision == Decision::Switch && before.is_none_or(|b| layer > b) {
                    d.climbed_at = Some(now);
                }
                if simulcast && room_client && now_layer != before {
                    // `layer` tells what is forwarded now: a new layer, or null when video paused
                    let shown = if now_layer.is_some() || d.selector.target().is_none() {
                        Some(now_layer)
                    } else {
                        None
                    };
                    if let Some(l) = shown.filter(|l| d.last_layer_sent != Some(*l)) {
                        d.last_layer_sent = Some(l);
                        out.push_back(Output::Signal(
                            *sid,
                            ServerMessage::Layer {
                                track: t.id.to_string(),
                                rid: l.and_then(|l| t.rids.get(l).cloned()),
                            },
                        ));
                    }
                }
                decision
            } else if layer != 0 {
                Decision::Drop
            } else if d.rewriter.source() != Some(src) {
                Decision::Switch
            } else {
                Decision::Forward
            };
            let (w, vp8_values) = match decision {
                Decision::Drop => continue,
                Decision::Forward => match d.rewriter.rewrite(src, pkt.seq, pkt.ts, now) {
                    Some(w) => (w, vp8.as_ref().map(|f| d.vp8.rewrite(f))),
                    None => continue,
                },
                Decision::Switch => {
                    (d.rewriter.switch_to(src, pkt.seq, pkt.ts, now), vp8.as_ref().map(|f| d.vp8.switch(f)))
                }
            };
            let vp8_patched = vp8_values.filter(|_| !d.vp8.is_identity());
            match (&mut s.rtc, d.mid) {
                (Some(rtc), Some(mid)) => {
                    if d.pt.is_none()
                        && let Some(codec) = t.codec
                    {
                        d.pt = resolve_pt(rtc, mid, codec, &t.format);
                    }
                    let Some(pt) = d.pt else {
                        counters.dropped_packets += 1;
                        continue;
                    };
                    let mut api = rtc.direct_api();
                    let Some(tx) = api.stream_tx_by_mid(mid, None) else { continue };
                    let ext = ExtensionValues {
                        audio_level: pkt.audio_level,
                        voice_activity: pkt.voice_activity,
                        ..Default::default()
                    };
                    let mut write = RtpWrite::new(pt, w.seq.into(), w.timestamp, now, pkt.payload.clone())
                        .marker(pkt.marker)
                        .ext_vals(ext)
                        .nackable(video);
                    if let Some(v) = vp8_patched {
                        // str0m applies the patch while it serializes: no copy of the payload
                        let desc = vp8_desc.get_or_insert_with(|| Vp8Descriptor::parse(&pkt.payload).ok());
                        if let Some(desc) = desc {
                            let mut b = desc.patch();
                            if let Some(p) = v.picture_id {
                                b = b.picture_id(p);
                            }
                            if let Some(x) = v.tl0_pic_idx {
                                b = b.tl0_pic_idx(x);
                            }
                            if let Some(k) = v.key_idx {
                                b = b.key_idx(k);
                            }
                            if let Ok(patch) = b.build() {
                                write = write.vp8_patch(patch);
                            }
                        }
                    }
                    tx.write_rtp(write);
                    // no drain here: it would find nothing to send (the pacer
                    // releases the packet on a timeout) and recompute every
                    // timeout of the peer; one timeout + drain per touched
                    // peer before the next `Output::Timeout` (flush_touched)
                    if !s.touched {
                        s.touched = true;
                        touched.push(*sid);
                    }
                }
                (None, _) => {
                    let payload = match (vp8_patched, &vp8) {
                        (Some(v), Some(f)) => {
                            // an in-process subscriber gets its own patched copy
                            let mut copy = pkt.payload.to_vec();
                            f.apply(&v, &mut copy);
                            bytes::Bytes::from(copy)
                        }
                        _ => bytes::Bytes::from_owner(ArcBytes(pkt.payload.clone())),
                    };
                    out.push_back(Output::Local(
                        *sid,
                        LocalEvent::Rtp(ReceivedPacket {
                            track: t.id.clone(),
                            from: t.owner_identity.clone(),
                            kind: t.kind,
                            codec: t.codec_name.clone(),
                            seq: w.seq as u16,
                            timestamp: w.timestamp,
                            marker: pkt.marker,
                            audio_level: pkt.audio_level.map(|l| l.unsigned_abs().min(127)),
                            payload,
                        }),
                    ));
                }
                _ => continue,
            }
            sent += 1;
        }
        counters.forwarded_packets += sent;
        counters.forwarded_bytes += sent * len;
        t.fwd_packets += sent;
        t.fwd_bytes += sent * len;
    }

    // ------------------------------------------------------- subscriptions

    /// Subscribe `sid` to track `tk` (room protocol: negotiated in the next server offer).
    pub(super) fn subscribe(&mut self, now: Instant, sid: ParticipantId, tk: TrackKey, width: Option<u32>) {
        let Some(t) = self.tracks.get(&tk) else { return };
        let kind = t.kind;
        let clock = t.clock_rate;
        let Some(s) = self.participants.get_mut(&sid) else { return };
        if let Some(d) = s.downtracks.iter_mut().find(|d| d.source == Some(tk)) {
            d.want_width = width;
            return;
        }
        if let Some(w) = s.neg.wanted.iter_mut().find(|w| w.0 == tk) {
            // still waiting for its offer: the size goes with it
            w.1 = width;
            return;
        }
        if s.neg.has_pending(tk) {
            return;
        }
        if s.is_local() {
            let d = new_downtrack(sid, tk, kind, clock, Bind::Track, None, None, true, width);
            s.downtracks.push(d);
            if let Some(t) = self.tracks.get_mut(&tk) {
                t.subscribers.push(sid);
            }
            self.allocate_one(now, sid);
            self.request_keyframes_for_track(now, tk);
        } else if s.is_room_client() {
            s.neg.wanted.push((tk, width));
            self.maybe_offer(now, sid);
        }
    }

    pub(super) fn unsubscribe(&mut self, now: Instant, sid: ParticipantId, tk: TrackKey) {
        let Some(s) = self.participants.get_mut(&sid) else { return };
        s.neg.wanted.retain(|x| x.0 != tk);
        if let Some(i) = s.downtracks.iter().position(|d| d.source == Some(tk)) {
            let d = s.downtracks.remove(i);
            s.neg.park(d);
            if let Some(t) = self.tracks.get_mut(&tk) {
                t.subscribers.retain(|x| *x != sid);
            }
            self.maybe_offer(now, sid);
        }
    }

    /// Point down-track `idx` of `sid` at another source track.
    pub(super) fn bind_downtrack(
        &mut self,
        now: Instant,
        sid: ParticipantId,
        idx: usize,
        tk: Option<TrackKey>,
    ) {
        let Some(s) = self.participants.get_mut(&sid) else { return };
        let Some(d) = s.downtracks.get_mut(idx) else { return };
        if d.source == tk {
            return;
        }
        let old = d.source;
        d.source = tk;
        d.pt = None;
        d.selector.reset();
        d.policy.reset();
        d.last_layer_sent = None;
        d.rewriter.detach();
        if let Some(t) = tk.and_then(|tk| self.tracks.get(&tk)) {
            d.rewriter.set_clock_rate(t.clock_rate);
        }
        if let Some(o) = old.and_then(|o| self.tracks.get_mut(&o)) {
            o.subscribers.retain(|x| *x != sid);
        }
        if let Some(tk) = tk {
            if let Some(t) = self.tracks.get_mut(&tk)
                && !t.subscribers.contains(&sid)
            {
                t.subscribers.push(sid);
            }
            self.allocate_one(now, sid);
            self.request_keyframes_for_track(now, tk);
        }
    }

    /// The active speaker changed: tell the room, move the speaker views.
    pub(super) fn speaker_changed(&mut self, now: Instant, room: &str, speaker: Option<ParticipantId>) {
        let identity = speaker.and_then(|s| self.participants.get(&s)).map(|p| p.identity.to_string());
        self.out.push_back(Output::Room(RoomEvent::ActiveSpeaker {
            room: room.to_string(),
            identity: identity.clone(),
        }));
        self.broadcast(room, ServerMessage::ActiveSpeaker { identity }, None);
        self.rebind_speaker_views(now, room);
    }

    pub(super) fn rebind_speaker_views(&mut self, now: Instant, room: &str) {
        let Some(r) = self.rooms.get(room) else { return };
        let speaker = r.active_speaker;
        let members = r.participants.clone();
        let room_tracks = r.tracks.clone();
        for sid in members {
            let Some(s) = self.participants.get(&sid) else { continue };
            let binds: Vec<(usize, TrackKind, Option<TrackKey>)> = s
                .downtracks
                .iter()
                .enumerate()
                .filter(|(_, d)| d.bind == Bind::Speaker)
                .map(|(i, d)| (i, d.kind, d.source))
                .collect();
            for (i, kind, current) in binds {
                let of = |owner: Option<ParticipantId>| {
                    room_tracks.iter().copied().find(|tk| {
                        self.tracks
                            .get(tk)
                            .is_some_and(|t| t.kind == kind && Some(t.owner) == owner && t.owner != sid)
                    })
                };
                // the speaker's track; else keep the current one; else anyone's
                let next = of(speaker).or(current.filter(|c| self.tracks.contains_key(c))).or_else(|| {
                    room_tracks
                        .iter()
                        .copied()
                        .find(|tk| self.tracks.get(tk).is_some_and(|t| t.kind == kind && t.owner != sid))
                });
                if next != current {
                    self.bind_downtrack(now, sid, i, next);
                }
            }
        }
    }

    // ------------------------------------------------------------ keyframes

    /// Ask the publisher of `tk` for a keyframe on `layer`, throttled.
    pub(super) fn request_keyframe(&mut self, now: Instant, tk: TrackKey, layer: usize) {
        let interval = Duration::from_millis(self.config.media.keyframe_request_interval_ms);
        let Some(t) = self.tracks.get_mut(&tk) else { return };
        if t.kind != TrackKind::Video {
            return;
        }
        let owner = t.owner;
        let remote = self.participants.get(&owner).is_some_and(|p| p.rtc.is_some());
        let Some(l) = t.layers.get_mut(layer) else { return };
        if remote && l.ssrc.is_none() {
            return; // nothing received yet: asked again when the stream shows up
        }
        if !l.kf_throttle.allow(now, interval) {
            return;
        }
        let ssrc = l.ssrc;
        if let Some(m) = self.rooms.get(&t.room).and_then(|r| r.metrics.as_ref()) {
            m.plis.inc();
        }
        let Some(p) = self.participants.get_mut(&owner) else { return };
        match (&mut p.rtc, ssrc) {
            (None, _) => {
                let idx = p.published.iter().position(|x| *x == tk).unwrap_or(0);
                self.out.push_back(Output::Local(owner, LocalEvent::KeyframeRequest { track: idx }));
            }
            (Some(rtc), Some(ssrc)) => {
                if let Some(rx) = rtc.direct_api().stream_rx(&ssrc) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                }
                self.drain(owner);
            }
            (Some(_), None) => {}
        }
    }

    pub(super) fn request_keyframes_for_track(&mut self, now: Instant, tk: TrackKey) {
        let n = self.tracks.get(&tk).map(|t| t.layers.len()).unwrap_or(0);
        let wanted: Vec<usize> = self
            .tracks
            .get(&tk)
            .map(|t| {
                t.subscribers
                    .iter()
                    .filter_map(|s| self.participants.get(s))
                    .flat_map(|s| s.downtracks.iter().filter(|d| d.source == Some(tk)))
                    .filter_map(|d| d.selector.wants_keyframe().or(d.selector.current()))
                    .collect()
            })
            .unwrap_or_default();
        for l in 0..n {
            if wanted.contains(&l) || (n == 1 && !wanted.is_empty()) {
                self.request_keyframe(now, tk, l);
            }
        }
    }

    pub(super) fn request_keyframes_for_subscriber(&mut self, now: Instant, sid: ParticipantId) {
        let Some(s) = self.participants.get(&sid) else { return };
        let reqs: Vec<(TrackKey, usize)> = s
            .downtracks
            .iter()
            .filter(|d| d.kind == TrackKind::Video)
            .filter_map(|d| Some((d.source?, d.selector.wants_keyframe().or(d.selector.current())?)))
            .collect();
        for (tk, l) in reqs {
            self.request_keyframe(now, tk, l);
        }
    }

    /// A subscriber lost a picture (PLI/FIR on its m-line).
    pub(super) fn on_subscriber_keyframe_request(&mut self, now: Instant, sid: ParticipantId, mid: Mid) {
        let Some(s) = self.participants.get(&sid) else { return };
        let Some(d) = s.downtracks.iter().find(|d| d.mid == Some(mid)) else { return };
        let (Some(tk), Some(l)) = (d.source, d.selector.current().or(d.selector.target())) else { return };
        self.request_keyframe(now, tk, l);
    }

    /// Keyframes for pending layer switches (re-asked at the throttle's pace).
    pub(super) fn pending_keyframes(&mut self, now: Instant) {
        let mut reqs: Vec<(TrackKey, usize)> = Vec::new();
        for s in self.participants.values() {
            for d in &s.downtracks {
                if !d.ready || d.kind != TrackKind::Video {
                    continue;
                }
                if let (Some(tk), Some(l)) = (d.source, d.selector.wants_keyframe())
                    && !reqs.contains(&(tk, l))
                {
                    reqs.push((tk, l));
                }
            }
        }
        for (tk, l) in reqs {
            self.request_keyframe(now, tk, l);
        }
    }

    // ----------------------------------------------------------- allocation

    /// Choose every subscriber's layers from its bandwidth estimate and wanted sizes.
    pub(super) fn allocate(&mut self, now: Instant) {
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in ids {
            self.allocate_one(now, id);
        }
        // tell local publishers what the room can take
        let mut targets: Vec<(ParticipantId, usize, usize, u64)> = Vec::new();
        for t in self.tracks.values() {
            let Some(owner) = self.participants.get(&t.owner) else { continue };
            if !owner.is_local() || t.kind != TrackKind::Video {
                continue;
            }
            let idx = owner
                .published
                .iter()
                .position(|x| self.tracks.get(x).is_some_and(|y| Arc::ptr_eq(&y.id, &t.id)));
            let Some(idx) = idx else { continue };
            for (li, _) in t.layers.iter().enumerate() {
                let bps = t
                    .subscribers
                    .iter()
                    .filter_map(|s| self.participants.get(s))
                    .flat_map(|s| {
                        s.downtracks.iter().filter(|d| d.source.is_some() && d.selector.target() == Some(li))
                    })
                    .filter(|d| {
                        d.source.and_then(|k| self.tracks.get(&k)).is_some_and(|x| Arc::ptr_eq(&x.id, &t.id))
                    })
                    .map(|d| d.alloc_bps)
                    .max()
                    .unwrap_or(0);
                if bps > 0 {
                    targets.push((t.owner, idx, li, bps));
                }
            }
        }
        for (owner, track, layer, bps) in targets {
            let cap = self.config.limits.max_publish_bitrate_bps;
            self.out.push_back(Output::Local(
                owner,
                LocalEvent::TargetBitrate { track, layer, bps: bps.min(cap) },
            ));
        }
    }

    /// Choose one subscriber's layers from its downlink budget, the measured
    /// layer rates and the sizes it asked for (see [`crate::media::forwarder`]):
    /// every video first gets its lowest layer that flows, what is left is
    /// shared for upgrades; each track's policy adds the hysteresis. A new
    /// target's keyframe is asked for at once. str0m's estimator is told
    /// what to probe towards (`desired`) and, once a track may climb, to keep
    /// the link filled up to the next layer (`minimum`, padding).
    pub(super) fn allocate_one(&mut self, now: Instant, id: ParticipantId) {
        let tuning = LayerTuning::default();
        let pin = self.config.media.pin_layer;
        let mut keyframes: SmallVec<[(TrackKey, usize); 4]> = SmallVec::new();
        {
            let Engine { participants, tracks, out, work, deadlines, .. } = self;
            let Some(s) = participants.get_mut(&id) else { return };
            let audio =
                s.downtracks.iter().filter(|d| d.kind == TrackKind::Audio && d.source.is_some()).count()
                    as u64;
            let videos =
                s.downtracks.iter().filter(|d| d.kind == TrackKind::Video && d.source.is_some()).count();
            if videos == 0 {
                return;
            }
            let budget = s.link.budget(now).saturating_sub(audio * AUDIO_BPS);
            let lossy =
                s.link.loss(now) >= CONGESTION_LOSS || s.link.recent_loss(now) >= CONGESTION_RECENT_LOSS;
            let Participant { downtracks, rtc, .. } = &mut *s;
            // pass 1: every video's lowest flowing layer within its size cap
            let mut plans: SmallVec<[Plan; 8]> = SmallVec::new();
            let mut left = budget;
            for (i, d) in downtracks.iter_mut().enumerate().filter(|(_, d)| d.kind == TrackKind::Video) {
                let Some(t) = d.source.and_then(|tk| tracks.get(&tk)) else { continue };
                let n = t.layers.len();
                let rates: SmallVec<[u64; 3]> =
                    t.layers
                        .iter()
                        .enumerate()
                        .map(|(i, l)| {
                            if l.meter.bps() > 0 {
                                l.meter.bps()
                            } else if l.meter.last_packet().is_some_and(|p| {
                                now.saturating_duration_since(p) < Duration::from_millis(1500)
                            }) {
                                DEFAULT_LAYER_BPS[i.min(2)]
                            } else {
                                0
                            }
                        })
                        .collect();
                let max = if n > 1 { d.policy.size_cap(n, d.want_width) } else { 0 };
                let min = (0..=max).map(|l| rates[l]).find(|r| *r > 0).unwrap_or(0);
                left = left.saturating_sub(min);
                plans.push(Plan { idx: i, rates, max, min });
            }
            // pass 2: share what is left, with each track's hysteresis
            let mut remaining = plans.len() as u64;
            let mut desired = 0u64;
            let mut allocated = 0u64;
            let mut probe_step = 0u64;
            for Plan { idx, rates, max, min } in plans {
                let d = &mut downtracks[idx];
                let Some(tk) = d.source else { continue };
                let share = min + left / remaining.max(1);
                remaining = remaining.saturating_sub(1);
                let target = if rates.len() <= 1 {
                    d.selector.set_target(Some(0));
                    Some(0)
                } else {
                    // the pacer's queue towards this subscriber backs up: the link carries less than flows
                    let queued = match (rtc.as_mut(), d.mid) {
                        (Some(rtc), Some(mid)) => rtc
                            .direct_api()
                            .stream_tx_by_mid(mid, None)
                            .and_then(|tx| tx.queue_info().and_then(|q| q.first_unsent()))
                            .map(|first| now.saturating_duration_since(first)),
                        _ => None,
                    };
                    // a climb just done started with a keyframe: a burst that may
                    // queue and lose a little; the estimate alone judges it
                    let climbing =
                        d.climbed_at.is_some_and(|t| now.saturating_duration_since(t) < tuning.climb_grace);
                    let congested = !climbing && (lossy || queued.is_some_and(|q| q >= CONGESTION_QUEUE));
                    let c = match pin {
                        // benchmarks: one layer whatever the link does
                        Some(l) => crate::media::forwarder::Choice {
                            target: Some(usize::from(l).min(rates.len() - 1)),
                            urgent: false,
                            probe_for: None,
                        },
                        None => d.policy.choose(now, &tuning, &rates, max, share, congested),
                    };
                    if c.target != d.selector.target() {
                        tracing::debug!(
                            participant = id, track = tk, from = ?d.selector.target(), to = ?c.target, urgent = c.urgent,
                            share, budget, rates = ?&rates[..], queued_ms = ?queued.map(|q| q.as_millis()), lossy,
                            "layer target"
                        );
                        if c.urgent {
                            d.selector.set_target_urgent(c.target);
                            // the layer left behind is not worth resending: drop its
                            // retransmission cache, so NACKs for it queue nothing
                            // ahead of the new layer's keyframe
                            if let (Some(rtc), Some(mid)) = (rtc.as_mut(), d.mid)
                                && let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None)
                            {
                                tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, RTX_RATIO_CAP);
                            }
                        } else {
                            d.selector.set_target(c.target);
                        }
                        if let Some(l) = c.target.filter(|l| d.selector.current() != Some(*l)) {
                            keyframes.push((tk, l));
                        }
                    }
                    if let (Some(up), 0) = (c.probe_for, probe_step) {
                        // what the climb will ask of the link, margin included
                        let now_at = c.target.map(|l| rates[l]).unwrap_or(0);
                        probe_step = ((rates[up] as f64 * tuning.up_margin) as u64).saturating_sub(now_at);
                    }
                    c.target
                };
                let used = target.and_then(|l| rates.get(l).copied()).unwrap_or(0);
                left = (left + min).saturating_sub(used);
                allocated += used;
                d.alloc_bps = used.max(share.min(DEFAULT_LAYER_BPS[2]));
                desired +=
                    rates.get(max).copied().filter(|r| *r > 0).unwrap_or(DEFAULT_LAYER_BPS[max.min(2)]);
            }
            // let str0m probe towards what the subscriber could use, and pad
            // up to the next layer once a track may climb
            let desired = desired + audio * AUDIO_BPS;
            let minimum = if probe_step > 0 { allocated + audio * AUDIO_BPS + probe_step } else { 0 };
            if let Some(rtc) = s.rtc.as_mut() {
                let moved = |a: u64, b: u64| a.abs_diff(b) > a.max(b) / 10;
                if moved(desired, s.last_desired_bps) || moved(minimum, s.last_minimum_bps) {
                    s.last_desired_bps = desired;
                    s.last_minimum_bps = minimum;
                    rtc.bwe().set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
                }
            }
            if s.rtc.is_some() {
                drain_rtc(s, out, work, deadlines);
            }
        }
        for (tk, l) in keyframes {
            self.request_keyframe(now, tk, l);
        }
    }

    /// Cap publishers above `max_publish_bitrate_bps` (REMB to remote ones).
    pub(super) fn publisher_limits(&mut self, now: Instant) {
        let cap = self.config.limits.max_publish_bitrate_bps;
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in ids {
            let Some(p) = self.participants.get_mut(&id) else { continue };
            let bps = p.publish_bytes.roll(now);
            if p.rtc.is_none() || bps <= cap || p.rx.is_empty() {
                continue;
            }
            tracing::info!(participant = id, bps, cap, "publisher over its bitrate cap");
            if let Some(m) = &self.metrics {
                m.dropped.with_label_values(&["publish_over_cap"]).inc();
            }
            let per = cap / p.rx.len() as u64;
            let ssrcs: SmallVec<[Ssrc; 6]> = p.rx.iter().map(|e| e.0).collect();
            if let Some(rtc) = p.rtc.as_mut() {
                for ssrc in ssrcs {
                    if let Some(rx) = rtc.direct_api().stream_rx(&ssrc) {
                        rx.request_remb(Bitrate::bps(per));
                    }
                }
            }
            self.drain(id);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn new_downtrack(
    sid: ParticipantId,
    tk: TrackKey,
    kind: TrackKind,
    clock: u32,
    bind: Bind,
    follow: Option<Arc<str>>,
    mid: Option<Mid>,
    ready: bool,
    width: Option<u32>,
) -> DownTrack {
    // deterministic but spread initial numbering
    let h = (sid.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ tk.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)) >> 16;
    DownTrack {
        kind,
        bind,
        follow,
        source: if bind == Bind::Track { Some(tk) } else { None },
        mid,
        ready,
        negotiated: false,
        pt: None,
        rewriter: Rewriter::new(clock, (h as u16) & 0x7fff, (h >> 16) as u32),
        vp8: Vp8Munger::default(),
        selector: LayerSelector::default(),
        policy: LayerPolicy::default(),
        want_width: width,
        last_layer_sent: None,
        climbed_at: None,
        alloc_bps: 0,
    }
}

/// `Arc<[u8]>` as an owner for `Bytes` (no copy of the payload).
struct ArcBytes(Arc<[u8]>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
