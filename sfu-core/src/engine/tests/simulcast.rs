//! Simulcast under a squeezed downlink, on virtual time: a str0m WHIP
//! publisher sends three VP8 layers (sizes like Chrome's 1280x720 simulcast)
//! and answers keyframe requests; a room-protocol subscriber sits behind a
//! bottleneck that the test squeezes and lifts, and "decodes" what it gets
//! (a frame plays when all its packets are there and the frame before it
//! played, or it is a keyframe; a broken chain asks for a keyframe, as a
//! browser does). The tests look at what a person would see: how long the
//! picture stood still, which layer played when, how often it changed.

use std::collections::BTreeMap;

use str0m::media::KeyframeRequestKind;

use super::*;

/// Layer bitrates of the simulated camera (q, h, f), bits/s of payload.
const LAYER_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];
const FPS: u32 = 30;
/// A keyframe is this many times a delta frame.
const KEY_FACTOR: u64 = 5;
const MAX_PAYLOAD: usize = 1100;

/// The simulated camera: per layer, a frame counter and an RTP sequence.
struct Camera {
    ci: usize,
    video: Mid,
    audio: Mid,
    frame: u32,
    seq: [u64; 3],
    audio_seq: u64,
    key_pending: bool,
    keyframes_sent: u32,
    next_frame: Instant,
    next_audio: Instant,
}

/// Payload of one packet: a 1-byte VP8 descriptor (S=1 on the first packet),
/// the VP8 payload header byte (P=0 on a keyframe), then layer, frame number,
/// packet index and count, so the subscriber can rebuild frames.
fn frame_packet(first: bool, key: bool, layer: u8, frame: u32, idx: u8, count: u8, len: usize) -> Vec<u8> {
    let mut v = vec![if first { 0x10 } else { 0x00 }, if key && first { 0x00 } else { 0x01 }, layer];
    v.extend_from_slice(&frame.to_be_bytes());
    v.push(idx);
    v.push(count);
    v.resize(len.max(v.len()), 0x5a);
    v
}

impl Camera {
    fn join(sim: &mut Sim) -> Camera {
        let ci = sim.add_client();
        let mut sc = Simulcast::new();
        for r in ["q", "h", "f"] {
            sc.add_send_layer(SimulcastLayer::new(r));
        }
        let mids = sim
            .join_http(
                ci,
                "cam",
                PeerRole::Whip,
                &[
                    (MediaKind::Audio, Direction::SendOnly, None),
                    (MediaKind::Video, Direction::SendOnly, Some(sc)),
                ],
            )
            .unwrap();
        Camera {
            ci,
            audio: mids[0],
            video: mids[1],
            frame: 0,
            seq: [1, 1, 1],
            audio_seq: 1,
            key_pending: true,
            keyframes_sent: 0,
            next_frame: sim.now,
            next_audio: sim.now,
        }
    }

    /// Send what is due at `sim.now`: a frame on every layer every 1/30 s
    /// (a keyframe on all of them when one was asked for, as libvpx's
    /// simulcast encoder does), Opus every 20 ms.
    fn tick(&mut self, sim: &mut Sim) {
        let asked = sim.clients[self.ci].events.iter().any(|e| matches!(e, Event::KeyframeRequest(_)));
        if asked {
            sim.clients[self.ci].events.retain(|e| !matches!(e, Event::KeyframeRequest(_)));
            self.key_pending = true;
        }
        while sim.now >= self.next_audio {
            let ts = self.audio_seq as u32 * 960;
            sim.write(self.ci, self.audio, None, Codec::Opus, self.audio_seq, ts, false, vec![0xfc; 80]);
            self.audio_seq += 1;
            self.next_audio += Duration::from_millis(20);
        }
        if sim.now < self.next_frame {
            return;
        }
        self.next_frame += Duration::from_micros(1_000_000 / u64::from(FPS));
        let key = std::mem::take(&mut self.key_pending);
        if key {
            self.keyframes_sent += 1;
        }
        let ts = self.frame * (90_000 / FPS);
        for (l, rid) in ["q", "h", "f"].iter().enumerate() {
            let mut bytes = (LAYER_BPS[l] / 8 / u64::from(FPS)) as usize;
            if key {
                bytes *= KEY_FACTOR as usize;
            }
            let count = bytes.div_ceil(MAX_PAYLOAD).max(1);
            let len = bytes / count;
            for i in 0..count {
                let p = frame_packet(i == 0, key, l as u8, self.frame, i as u8, count as u8, len);
                sim.write(self.ci, self.video, Some(rid), Codec::Vp8, self.seq[l], ts, i + 1 == count, p);
                self.seq[l] += 1;
            }
        }
        self.frame += 1;
    }
}

/// One frame as the subscriber reassembles it (keyed by its first outgoing sequence number).
struct Frame {
    layer: u8,
    count: u8,
    got: u64,
    key: bool,
}

/// The subscriber's "decoder": frames play in sequence order; a frame plays
/// when complete and either a keyframe or the successor of the last played
/// frame. A broken chain (a later frame is complete but the next one is not
/// coming) asks for a keyframe, throttled like a browser.
#[derive(Default)]
struct Player {
    frames: BTreeMap<u64, Frame>,
    next: Option<u64>,
    played: Vec<(Instant, u8)>,
    stuck_since: Option<Instant>,
    last_pli: Option<Instant>,
    plis: u32,
}

impl Player {
    fn packet(&mut self, seq: u64, payload: &[u8]) {
        if payload.len() < 9 {
            return;
        }
        let (layer, idx, count) = (payload[2], payload[7], payload[8]);
        if count == 0 || idx >= count || u64::from(idx) > seq {
            return;
        }
        let first = seq - u64::from(idx);
        if self.next.is_some_and(|n| first < n) {
            return; // a frame already skipped or played
        }
        let f = self.frames.entry(first).or_insert(Frame { layer, count, got: 0, key: false });
        f.got |= 1 << idx;
        if idx == 0 {
            f.key = payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0;
        }
    }

    fn complete(f: &Frame) -> bool {
        f.got.count_ones() == u32::from(f.count)
    }

    /// Play what can be played at `now`; returns whether a keyframe should be asked for.
    fn play(&mut self, now: Instant) -> bool {
        loop {
            if let Some(n) = self.next
                && let Some(f) = self.frames.get(&n).filter(|f| Self::complete(f))
            {
                self.played.push((now, f.layer));
                self.next = Some(n + u64::from(f.count));
                self.frames.remove(&n);
                continue;
            }
            let from = self.next.unwrap_or(0);
            let key = self.frames.range(from..).find(|(_, f)| f.key && Self::complete(f)).map(|(s, _)| *s);
            let Some(s) = key else { break };
            let f = self.frames.remove(&s).expect("found");
            self.played.push((now, f.layer));
            self.next = Some(s + u64::from(f.count));
            self.frames = self.frames.split_off(&(s + u64::from(f.count)));
        }
        // stuck: something later is complete, the next frame is not
        let from = self.next.unwrap_or(0);
        let later = self.frames.range(from..).any(|(s, f)| Some(*s) != self.next && Self::complete(f));
        if !later {
            self.stuck_since = None;
            return false;
        }
        let since = *self.stuck_since.get_or_insert(now);
        let due = now.saturating_duration_since(since) >= Duration::from_millis(300)
            && self.last_pli.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(500));
        if due {
            self.last_pli = Some(now);
            self.plis += 1;
        }
        due
    }

    /// Longest time without a new picture in `[from, to]`.
    fn longest_stall(&self, from: Instant, to: Instant) -> (Duration, Instant) {
        let mut last = from;
        let mut worst = (Duration::ZERO, from);
        for (t, _) in self.played.iter().filter(|(t, _)| *t >= from && *t <= to) {
            if t.saturating_duration_since(last) > worst.0 {
                worst = (t.saturating_duration_since(last), last);
            }
            last = *t;
        }
        if to.saturating_duration_since(last) > worst.0 {
            worst = (to.saturating_duration_since(last), last);
        }
        worst
    }

    /// The layer played over time, as (first time, layer) runs.
    fn runs(&self) -> Vec<(Instant, u8)> {
        let mut v: Vec<(Instant, u8)> = Vec::new();
        for (t, l) in &self.played {
            if v.last().is_none_or(|x| x.1 != *l) {
                v.push((*t, *l));
            }
        }
        v
    }

    fn layer_at(&self, t: Instant) -> Option<u8> {
        self.played.iter().take_while(|(x, _)| *x <= t).last().map(|x| x.1)
    }
}

struct Squeezed {
    sim: Sim,
    cam: Camera,
    sub: usize,
    player: Player,
    video_ssrc: Option<str0m::rtp::Ssrc>,
    /// The subscriber answers server offers (as a browser does at once).
    answer: bool,
}

impl Squeezed {
    fn start() -> Squeezed {
        Squeezed::start_with(SfuConfig::default())
    }

    fn start_with(config: SfuConfig) -> Squeezed {
        let mut sim = Sim::new(config);
        let cam = Camera::join(&mut sim);
        let sub = sim.add_client();
        ws_join(&mut sim, sub, "sub");
        let mut s = Squeezed { sim, cam, sub, player: Player::default(), video_ssrc: None, answer: true };
        s.run(Duration::from_secs(1));
        s
    }

    /// The subscriber is there first; when the camera's video is announced
    /// it asks for a tile of `width` x `height` right away — while the
    /// server's offers for the camera's tracks are still unanswered.
    fn watching_a_tile(width: u32, height: u32) -> Squeezed {
        let mut sim = Sim::new(SfuConfig::default());
        let sub = sim.add_client();
        ws_join(&mut sim, sub, "sub");
        let cam = Camera::join(&mut sim);
        let mut s = Squeezed { sim, cam, sub, player: Player::default(), video_ssrc: None, answer: false };
        let video = |s: &Squeezed| {
            s.sim.clients[s.sub].signals.iter().find_map(|m| match m {
                ServerMessage::TrackPublished { track } if track.kind == TrackKind::Video => {
                    Some(track.id.clone())
                }
                _ => None,
            })
        };
        while video(&s).is_none() {
            s.run(Duration::from_millis(10));
            assert!(
                s.sim.now.saturating_duration_since(s.cam.next_audio) < Duration::from_secs(10),
                "no video published"
            );
        }
        let id = s.sim.clients[sub].id.unwrap();
        let track = video(&s).unwrap();
        s.sim.engine.client_message(
            s.sim.now,
            id,
            ClientMessage::Subscribe { track, width: Some(width), height: Some(height) },
        );
        s.sim.drain_engine();
        s.answer = true;
        s
    }

    /// Advance `d` in 1 ms steps: the camera sends, the subscriber answers
    /// offers, plays what it got and asks for keyframes.
    fn run(&mut self, d: Duration) {
        let end = self.sim.now + d;
        while self.sim.now < end {
            self.sim.now += Duration::from_millis(1);
            self.cam.tick(&mut self.sim);
            self.sim.step();
            if self.answer {
                answer_server_offers(&mut self.sim, self.sub);
            }
            let events = std::mem::take(&mut self.sim.clients[self.sub].events);
            for e in events {
                if let Event::RtpPacket(p) = e
                    && p.payload.len() >= 9
                    && p.payload.len() != 80
                {
                    self.video_ssrc = Some(p.header.ssrc);
                    self.player.packet(*p.seq_no, &p.payload);
                }
            }
            if self.player.play(self.sim.now)
                && let Some(ssrc) = self.video_ssrc
            {
                let now = self.sim.now;
                let c = &mut self.sim.clients[self.sub];
                if let Some(rx) = c.rtc.direct_api().stream_rx(&ssrc) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                }
                let _ = now;
                self.sim.drain_client(self.sub);
            }
        }
    }

    fn layer_messages(&self) -> Vec<Option<String>> {
        self.sim.clients[self.sub]
            .signals
            .iter()
            .filter_map(|m| if let ServerMessage::Layer { rid, .. } = m { Some(rid.clone()) } else { None })
            .collect()
    }

    fn describe(&self, t0: Instant) -> String {
        let runs: Vec<String> = self
            .player
            .runs()
            .iter()
            .map(|(t, l)| {
                format!(
                    "{}@{:+.2}s",
                    ["q", "h", "f"][*l as usize],
                    t.saturating_duration_since(t0).as_secs_f64()
                )
            })
            .collect();
        format!(
            "layers played {runs:?}; {} frames; {} PLIs from the subscriber; {} keyframes from the camera; layer messages {:?}; {} dropped by the bottleneck",
            self.player.played.len(),
            self.player.plis,
            self.cam.keyframes_sent,
            self.layer_messages(),
            self.sim.link_dropped + self.sim.links.iter().map(|l| l.dropped).sum::<u64>(),
        )
    }
}

/// Squeeze to `kbit` with a 50 ms queue for 15 s, then lift, and check what
/// the subscriber saw.
fn squeeze_and_lift(kbit: u64) {
    let mut s = Squeezed::start();
    let t0 = s.sim.now;
    s.run(Duration::from_secs(9));
    let before = s.player.layer_at(s.sim.now);
    assert_eq!(before, Some(2), "the full layer plays on a free link: {}", s.describe(t0));

    let squeezed = s.sim.now;
    s.sim.squeeze(s.sub, Some(kbit * 1000), Duration::from_millis(50));
    s.run(Duration::from_secs(15));
    let lifted = s.sim.now;
    s.sim.squeeze(s.sub, None, Duration::ZERO);
    s.run(Duration::from_secs(25));
    let end = s.sim.now;
    let report = s.describe(squeezed);

    let mut problems = Vec::new();
    // reacted within about a second: a lower layer plays
    let low = s.player.played.iter().find(|(t, l)| *t > squeezed && *l < 2).map(|x| x.0);
    let react = low.map(|t| t.saturating_duration_since(squeezed));
    if react.is_none_or(|r| r > Duration::from_millis(1500)) {
        problems.push(format!("reaction {react:?}"));
    }
    // never back to f while squeezed (after the reaction)
    let low = low.unwrap_or(lifted);
    if s.player.played.iter().any(|(t, l)| *t > low && *t < lifted && *l == 2) {
        problems.push("the full layer came back while squeezed".to_string());
    }
    // the full layer comes back after the lift
    if s.player.layer_at(end) != Some(2) {
        problems.push("the full layer is not back".to_string());
    }
    // no stall over a second, anywhere
    let (stall, at) = s.player.longest_stall(t0 + Duration::from_secs(2), end);
    let at =
        at.saturating_duration_since(t0).as_secs_f64() - squeezed.saturating_duration_since(t0).as_secs_f64();
    if stall > Duration::from_secs(1) {
        problems.push(format!("the picture stood still {stall:?} from {at:+.2} s"));
    }
    // no flapping: at most two steps down while squeezed, only up after the lift
    let during: Vec<u8> =
        s.player.runs().iter().filter(|(t, _)| *t > squeezed && *t < lifted).map(|x| x.1).collect();
    if during.len() > 2 || during.windows(2).any(|w| w[1] > w[0]) {
        problems.push(format!("switches while squeezed {during:?}"));
    }
    let after: Vec<u8> = s.player.runs().iter().filter(|(t, _)| *t > lifted).map(|x| x.1).collect();
    if after.windows(2).any(|w| w[1] < w[0]) {
        problems.push(format!("after the lift the layer went down {after:?}"));
    }
    println!(
        "squeezed to {kbit} kbit/s: reaction {react:?}, longest stall {stall:?} (from {at:+.2} s), lifted at {:+.2} s\n  {report}",
        lifted.saturating_duration_since(squeezed).as_secs_f64()
    );
    assert!(problems.is_empty(), "{problems:?}\n{report}");
}

#[test]
fn a_squeeze_to_400_kbit_drops_fast_holds_and_climbs_back_without_a_stall() {
    squeeze_and_lift(400);
}

#[test]
fn a_squeeze_to_700_kbit_drops_fast_holds_and_climbs_back_without_a_stall() {
    squeeze_and_lift(700);
}

/// A 628x298 tile (just under the 640 px of `h`) on a free link: the layer
/// for that size is chosen once and kept — no `layer` messages back and
/// forth — even though the size was asked for while the subscription was
/// still being negotiated.
#[test]
fn a_tile_just_under_a_layers_width_gets_that_layer_and_keeps_it() {
    let mut s = Squeezed::watching_a_tile(628, 298);
    let t0 = s.sim.now;
    s.run(Duration::from_secs(20));
    let report = s.describe(t0);
    let layers: Vec<u8> = s.player.runs().iter().map(|x| x.1).collect();
    assert_eq!(layers.last(), Some(&1), "h plays: {report}");
    assert!(!layers.contains(&2), "never f for a 628 px tile: {report}");
    let messages = s.layer_messages();
    assert!(messages.len() <= 2, "the layer is chosen once (q first is allowed): {report}");
    // the same size again changes nothing
    let id = s.sim.clients[s.sub].id.unwrap();
    let track = s.sim.engine.tracks.values().find(|t| t.kind == TrackKind::Video).unwrap().id.to_string();
    for w in [628, 630, 640, 650, 628] {
        s.sim.engine.client_message(
            s.sim.now,
            id,
            ClientMessage::Subscribe { track: track.clone(), width: Some(w), height: Some(298) },
        );
        s.run(Duration::from_secs(1));
    }
    assert_eq!(
        s.layer_messages(),
        messages,
        "a few pixels around the threshold keep the layer: {}",
        s.describe(t0)
    );
}

/// `[media] pin_layer` (benchmarks): the pinned layer plays on a free link
/// where the estimate would choose `f`, and a small tile does not move it.
#[test]
fn a_pinned_layer_plays_whatever_the_estimate_and_the_tile() {
    let mut config = SfuConfig::default();
    config.media.pin_layer = Some(1);
    let mut s = Squeezed::start_with(config);
    let t0 = s.sim.now;
    s.run(Duration::from_secs(6));
    let id = s.sim.clients[s.sub].id.unwrap();
    let track = s.sim.engine.tracks.values().find(|t| t.kind == TrackKind::Video).unwrap().id.to_string();
    s.sim.engine.client_message(
        s.sim.now,
        id,
        ClientMessage::Subscribe { track, width: Some(160), height: Some(90) },
    );
    s.run(Duration::from_secs(6));
    let report = s.describe(t0);
    let layers: Vec<u8> = s.player.runs().iter().map(|x| x.1).collect();
    assert_eq!(layers.last(), Some(&1), "the pinned h plays: {report}");
    assert!(!layers.contains(&2), "never f: {report}");
    assert!(s.player.played.len() > 250, "it plays on: {report}");
    let (stall, _) = s.player.longest_stall(t0 + Duration::from_secs(2), s.sim.now);
    assert!(stall < Duration::from_secs(1), "no stall ({stall:?}): {report}");
}
