//! The floor: a minimal SFU relay — what any SFU must at least spend.
//!
//! Per peer it lets str0m do the once-per-connection work (ICE-lite answers,
//! the DTLS handshake, RTCP), tapping the exported SRTP keys ([`crate::tap`]).
//! Every RTP packet it then handles itself, on one thread, the way a lean
//! forwarder must: `recvmmsg` a batch, find the sender by address and the
//! stream by SSRC, decrypt (the same aws-lc-rs cipher str0m negotiated), and
//! for each subscriber of that stream write a fresh 12-byte RTP header (SSRC,
//! sequence number, payload type), encrypt with the subscriber's key into a
//! `sendmmsg` slot; flush the batch. No bandwidth estimation, no NACK/RTX, no
//! layer switching (each subscriber gets the layer it asked for), no per-packet
//! allocation.
//!
//! Signaling is WHIP/WHEP-shaped so the same synthetic clients connect to it:
//! `POST /whip/{room}` and `POST /whep/{room}/{identity}?layer=f`.

pub mod srtp;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use str0m::change::SdpOffer;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};

use crate::net::{Epoll, RecvBatch, SendBatch, Waker};
use crate::sdp;
use crate::tap::{self, KeySlot};
use srtp::Srtp;

/// Where the floor listens.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    pub http: SocketAddr,
    pub udp: SocketAddr,
    /// Datagrams per `recvmmsg`/`sendmmsg` call.
    pub batch: usize,
}

/// Counters, served at `GET /stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub forwarded_packets: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    pub received_rtp: AtomicU64,
    pub undecryptable: AtomicU64,
    pub send_calls: AtomicU64,
    pub send_dropped: AtomicU64,
}

struct OutTrack {
    ssrc: u32,
    pt: u8,
    /// out index = in index + offset, fixed at the first forwarded packet.
    offset: Option<i64>,
}

enum Role {
    Publisher { ext_rid: Option<u8>, audio_pts: Vec<u8>, video_pts: Vec<u8>, subs: Vec<usize> },
    Subscriber { publisher: usize, layer: String, audio: Option<OutTrack>, video: Option<OutTrack> },
}

struct FPeer {
    rtc: Rtc,
    slot: KeySlot,
    srtp: Option<Srtp>,
    addr: Option<SocketAddr>,
    role: Role,
    next_timeout: Instant,
}

struct InStream {
    peer: usize,
    video: bool,
    layer: String,
    max_index: Option<u64>,
}

enum Cmd {
    Add(Box<FPeer>),
}

struct Shared {
    tx: Mutex<mpsc::Sender<Cmd>>,
    waker: Arc<Waker>,
    /// (room, identity) of publishers registered so far → their index in the relay.
    publishers: Mutex<HashMap<(String, String), usize>>,
    next_index: AtomicU64,
    udp: SocketAddr,
    counters: Arc<Counters>,
}

fn floor_rtc() -> RtcConfig {
    RtcConfig::new()
        .set_crypto_provider(tap::tapping_provider())
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_stats_interval(None)
}

/// Run the floor: an HTTP signaling thread and the relay loop on this thread.
/// Prints `floor http=ADDR udp=ADDR` on stdout once both are bound.
pub fn run(cfg: FloorConfig) -> anyhow::Result<()> {
    crate::net::raise_nofile();
    let sock = crate::net::udp_socket(cfg.udp).context("binding the floor's UDP socket")?;
    let udp = sock.local_addr()?;
    let listener = std::net::TcpListener::bind(cfg.http).context("binding the floor's HTTP port")?;
    listener.set_nonblocking(true)?;
    let http = listener.local_addr()?;
    let (tx, rx) = mpsc::channel();
    let waker = Arc::new(Waker::new()?);
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        tx: Mutex::new(tx),
        waker: waker.clone(),
        publishers: Mutex::new(HashMap::new()),
        next_index: AtomicU64::new(0),
        udp,
        counters: counters.clone(),
    });
    std::thread::Builder::new().name("floor-http".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("floor: no runtime: {e}");
                return;
            }
        };
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/whip/{room}", post(whip))
                .route("/whep/{room}/{identity}", post(whep))
                .route("/stats", get(stats))
                .with_state(shared);
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    let _ = axum::serve(l, app).await;
                }
                Err(e) => eprintln!("floor: listener: {e}"),
            }
        });
    })?;
    println!("floor http={http} udp={udp}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    relay(sock, rx, waker, counters, cfg.batch.max(1))
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, msg.to_string()).into_response()
}

fn created(location: String, answer: String) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, "application/sdp".parse().expect("static header"));
    if let Ok(v) = location.parse() {
        h.insert(header::LOCATION, v);
    }
    (StatusCode::CREATED, h, answer).into_response()
}

/// Build an answering Rtc for `offer` with its key tap.
fn answer(shared: &Shared, offer: &str) -> anyhow::Result<(Rtc, KeySlot, String)> {
    let slot: KeySlot = Arc::default();
    let mut rtc = tap::with_slot(&slot, || floor_rtc().build(Instant::now()));
    let cand = Candidate::host(shared.udp, "udp").map_err(|e| anyhow!("candidate: {e}"))?;
    rtc.add_local_candidate(cand);
    let offer = SdpOffer::from_sdp_string(offer).context("bad SDP offer")?;
    let ans = rtc.sdp_api().accept_offer(offer).context("cannot answer the offer")?;
    Ok((rtc, slot, ans.to_sdp_string()))
}

/// Hand a peer to the relay; its index there is the order of submission, so
/// numbering and sending happen under one lock.
fn submit(shared: &Shared, peer: FPeer) -> usize {
    let tx = shared.tx.lock().unwrap_or_else(|e| e.into_inner());
    let idx = shared.next_index.fetch_add(1, Ordering::SeqCst) as usize;
    let _ = tx.send(Cmd::Add(Box::new(peer)));
    drop(tx);
    shared.waker.wake();
    idx
}

async fn whip(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let identity =
        identity_from(&headers).unwrap_or_else(|| format!("p{}", shared.next_index.load(Ordering::SeqCst)));
    let (rtc, slot, answer) = match answer(&shared, &body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    };
    let s = sdp::summarize(&body);
    let pts = |kind: &str| -> Vec<u8> {
        s.mlines.iter().filter(|m| m.kind == kind).flat_map(|m| m.rtpmap.iter().map(|(pt, _)| *pt)).collect()
    };
    let peer = FPeer {
        rtc,
        slot,
        srtp: None,
        addr: None,
        role: Role::Publisher {
            ext_rid: s.ext_rid,
            audio_pts: pts("audio"),
            video_pts: pts("video"),
            subs: Vec::new(),
        },
        next_timeout: Instant::now(),
    };
    let key = (room.clone(), identity.clone());
    let mut pubs = shared.publishers.lock().unwrap_or_else(|e| e.into_inner());
    let idx = submit(&shared, peer);
    pubs.insert(key, idx);
    created(format!("/whip/{room}/{identity}"), answer)
}

#[derive(serde::Deserialize)]
struct WhepQuery {
    layer: Option<String>,
}

async fn whep(
    State(shared): State<Arc<Shared>>,
    Path((room, identity)): Path<(String, String)>,
    Query(q): Query<WhepQuery>,
    body: String,
) -> Response {
    let Some(publisher) = shared
        .publishers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(room.clone(), identity.clone()))
        .copied()
    else {
        return error(StatusCode::NOT_FOUND, format!("nobody publishes as {identity:?} in {room:?}"));
    };
    let (mut rtc, slot, answer) = match answer(&shared, &body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    };
    let s = sdp::summarize(&answer);
    let mut audio = None;
    let mut video = None;
    for m in &s.mlines {
        let mid: Mid = m.mid.as_str().into();
        let Some(ssrc) = rtc.direct_api().stream_tx_by_mid(mid, None).map(|t| *t.ssrc()) else { continue };
        if m.kind == "audio" {
            audio = m.pt_of("opus").map(|pt| OutTrack { ssrc, pt, offset: None });
        } else if m.kind == "video" {
            video = m.pt_of("VP8").map(|pt| OutTrack { ssrc, pt, offset: None });
        }
    }
    let peer = FPeer {
        rtc,
        slot,
        srtp: None,
        addr: None,
        role: Role::Subscriber { publisher, layer: q.layer.unwrap_or_else(|| "f".into()), audio, video },
        next_timeout: Instant::now(),
    };
    let n = submit(&shared, peer);
    created(format!("/whep/{room}/{identity}/{n}"), answer)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let c = &shared.counters;
    let v = serde_json::json!({
        "forwarded_packets": c.forwarded_packets.load(Ordering::Relaxed),
        "forwarded_bytes": c.forwarded_bytes.load(Ordering::Relaxed),
        "received_rtp": c.received_rtp.load(Ordering::Relaxed),
        "undecryptable": c.undecryptable.load(Ordering::Relaxed),
        "send_calls": c.send_calls.load(Ordering::Relaxed),
        "send_dropped": c.send_dropped.load(Ordering::Relaxed),
    });
    axum::Json(v).into_response()
}

fn identity_from(h: &HeaderMap) -> Option<String> {
    h.get("x-identity").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Extended sequence number (SRTP index) from a 16-bit one, RFC 3711 appendix A style.
fn extend(max: &mut Option<u64>, seq: u16) -> u64 {
    let v = match *max {
        None => seq as u64,
        Some(m) => {
            let roc = m >> 16;
            let cand = |r: u64| (r << 16) | seq as u64;
            [roc.saturating_sub(1), roc, roc + 1]
                .into_iter()
                .map(cand)
                .min_by_key(|v| v.abs_diff(m))
                .unwrap_or(seq as u64)
        }
    };
    if max.is_none_or(|m| v > m) {
        *max = Some(v);
    }
    v
}

struct Relay {
    sock: UdpSocket,
    local: SocketAddr,
    peers: Vec<Option<FPeer>>,
    by_addr: HashMap<SocketAddr, usize>,
    streams: HashMap<u32, InStream>,
    send: SendBatch,
    plain: Vec<u8>,
    counters: Arc<Counters>,
    crypto: Arc<str0m::crypto::CryptoProvider>,
}

fn relay(
    sock: UdpSocket,
    rx: mpsc::Receiver<Cmd>,
    waker: Arc<Waker>,
    counters: Arc<Counters>,
    batch: usize,
) -> anyhow::Result<()> {
    let mut ep = Epoll::new()?;
    ep.add(sock.as_raw_fd(), 0)?;
    ep.add(waker.fd(), 1)?;
    let mut recv = RecvBatch::new(batch, 2048);
    let local = sock.local_addr()?;
    let mut r = Relay {
        sock,
        local,
        peers: Vec::new(),
        by_addr: HashMap::new(),
        streams: HashMap::new(),
        send: SendBatch::new(batch.max(64), 1600),
        plain: vec![0u8; 2048],
        counters,
        crypto: tap::tapping_provider(),
    };
    let mut ready = Vec::new();
    let mut next_deadline = Instant::now() + Duration::from_millis(50);
    loop {
        let wait = next_deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
        ep.wait(wait, &mut ready)?;
        for &tok in &ready {
            if tok == 1 {
                waker.drain();
                while let Ok(Cmd::Add(peer)) = rx.try_recv() {
                    let idx = r.peers.len();
                    if let Role::Subscriber { publisher, .. } = &peer.role
                        && let Some(Some(FPeer { role: Role::Publisher { subs, .. }, .. })) =
                            r.peers.get_mut(*publisher)
                    {
                        subs.push(idx);
                    }
                    r.peers.push(Some(*peer));
                    r.drive(idx, Instant::now());
                }
            } else {
                loop {
                    let n = recv.recv(&r.sock)?;
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    for i in 0..n {
                        if let Some((data, from)) = recv.get(i) {
                            r.datagram(data, from, now);
                        }
                    }
                    r.flush();
                    if n < batch {
                        break;
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= next_deadline {
            let mut next = now + Duration::from_millis(50);
            for i in 0..r.peers.len() {
                if r.peers[i].as_ref().is_some_and(|p| p.next_timeout <= now) {
                    if let Some(p) = r.peers[i].as_mut() {
                        let _ = p.rtc.handle_input(Input::Timeout(now));
                    }
                    r.drive(i, now);
                }
                if let Some(p) = &r.peers[i] {
                    next = next.min(p.next_timeout);
                }
            }
            next_deadline = next;
            r.flush();
        } else {
            for p in r.peers.iter().flatten() {
                next_deadline = next_deadline.min(p.next_timeout);
            }
        }
    }
}

impl Relay {
    fn flush(&mut self) {
        self.send.flush(&self.sock);
        self.counters.send_calls.store(self.send.calls, Ordering::Relaxed);
        self.counters.send_dropped.store(self.send.dropped, Ordering::Relaxed);
    }

    /// Drain a peer's str0m output; pick up its SRTP keys once the handshake exported them.
    fn drive(&mut self, idx: usize, now: Instant) {
        let Some(p) = self.peers.get_mut(idx).and_then(Option::as_mut) else { return };
        loop {
            match p.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    p.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => {
                    p.next_timeout = now + Duration::from_millis(10);
                    break;
                }
            }
        }
        if p.srtp.is_none() {
            let keys = p.slot.lock().ok().and_then(|k| k.clone());
            if let Some(k) = keys {
                p.srtp = Srtp::new(&self.crypto, &k);
            }
        }
    }

    fn datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        let idx = match self.by_addr.get(&from) {
            Some(&i) => i,
            None => {
                // A new address: the peer whose ICE credentials its STUN request carries.
                let Ok(recv) = Receive::new(Protocol::Udp, from, self.local, data) else { return };
                let input = Input::Receive(now, recv);
                let Some(i) =
                    self.peers.iter().position(|p| p.as_ref().is_some_and(|p| p.rtc.accepts(&input)))
                else {
                    return;
                };
                self.by_addr.insert(from, i);
                if let Some(p) = self.peers[i].as_mut() {
                    p.addr = Some(from);
                }
                i
            }
        };
        let is_rtp = data.len() >= 12 && (128..192).contains(&data[0]) && !(192..224).contains(&data[1]);
        if is_rtp {
            self.rtp(idx, data);
            return;
        }
        let Some(p) = self.peers[idx].as_mut() else { return };
        if let Ok(recv) = Receive::new(Protocol::Udp, from, self.local, data) {
            let _ = p.rtc.handle_input(Input::Receive(now, recv));
        }
        self.drive(idx, now);
    }

    fn rtp(&mut self, from: usize, pkt: &[u8]) {
        self.counters.received_rtp.fetch_add(1, Ordering::Relaxed);
        let cc = (pkt[0] & 0x0f) as usize;
        let mut hlen = 12 + 4 * cc;
        let mut ext: Option<(&[u8], bool)> = None;
        if pkt[0] & 0x10 != 0 {
            if pkt.len() < hlen + 4 {
                return;
            }
            let profile = u16::from_be_bytes([pkt[hlen], pkt[hlen + 1]]);
            let words = u16::from_be_bytes([pkt[hlen + 2], pkt[hlen + 3]]) as usize;
            let start = hlen + 4;
            hlen = start + 4 * words;
            if pkt.len() < hlen {
                return;
            }
            ext = Some((&pkt[start..hlen], profile & 0xfff0 == 0x1000));
        }
        let marker_pt = pkt[1];
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ts = [pkt[4], pkt[5], pkt[6], pkt[7]];
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);

        if !self.streams.contains_key(&ssrc) {
            let Some(Some(FPeer { role: Role::Publisher { ext_rid, audio_pts, video_pts, .. }, .. })) =
                self.peers.get(from)
            else {
                return;
            };
            let pt = marker_pt & 0x7f;
            let video = if audio_pts.contains(&pt) {
                false
            } else if video_pts.contains(&pt) {
                true
            } else {
                return;
            };
            let layer = if video {
                let rid = ext.zip(*ext_rid).and_then(|((e, two), id)| sdp::find_ext(e, two, id));
                match rid {
                    Some(r) => String::from_utf8_lossy(r).into_owned(),
                    // Until a packet names its layer we cannot place it.
                    None => return,
                }
            } else {
                String::new()
            };
            self.streams.insert(ssrc, InStream { peer: from, video, layer, max_index: None });
        }
        let Some(st) = self.streams.get_mut(&ssrc) else { return };
        if st.peer != from {
            return;
        }
        let index = extend(&mut st.max_index, seq);
        let video = st.video;
        let Some(Some(src)) = self.peers.get_mut(from) else { return };
        let Some(srtp) = src.srtp.as_mut() else { return };
        let Some(n) = srtp.unprotect(pkt, hlen, ssrc, index, &mut self.plain) else {
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Role::Publisher { subs, .. } = &src.role else { return };
        // Indices are stable (peers are never removed during a run), so clone the small list.
        let subs = subs.clone();
        let layer = &self.streams[&ssrc].layer;
        let mut header = [0u8; 12];
        header[0] = 0x80;
        header[4..8].copy_from_slice(&ts);
        let mut forwarded = 0u64;
        let mut bytes = 0u64;
        for s in subs {
            let Some(Some(sub)) = self.peers.get_mut(s) else { continue };
            let (Some(addr), Some(tx)) = (sub.addr, sub.srtp.as_mut()) else { continue };
            let Role::Subscriber { layer: want, audio, video: vtrack, .. } = &mut sub.role else { continue };
            let track = if video {
                if want != layer {
                    continue;
                }
                vtrack.as_mut()
            } else {
                audio.as_mut()
            };
            let Some(track) = track else { continue };
            let off = *track.offset.get_or_insert(1 - index as i64);
            let out_index = (index as i64 + off).max(0) as u64;
            header[1] = (marker_pt & 0x80) | track.pt;
            header[2..4].copy_from_slice(&(out_index as u16).to_be_bytes());
            header[8..12].copy_from_slice(&track.ssrc.to_be_bytes());
            if self.send.is_full() {
                self.send.flush(&self.sock);
            }
            let slot = self.send.slot();
            if let Some(len) = tx.protect(&header, &self.plain[..n], track.ssrc, out_index, slot) {
                self.send.commit(len, addr);
                forwarded += 1;
                bytes += len as u64;
            }
        }
        self.counters.forwarded_packets.fetch_add(forwarded, Ordering::Relaxed);
        self.counters.forwarded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::extend;

    #[test]
    fn sequence_numbers_extend_across_wraps_and_reordering() {
        let mut m = None;
        assert_eq!(extend(&mut m, 65_534), 65_534);
        assert_eq!(extend(&mut m, 65_535), 65_535);
        assert_eq!(extend(&mut m, 1), 65_537);
        assert_eq!(extend(&mut m, 65_533), 65_533, "late packet before the wrap");
        assert_eq!(extend(&mut m, 2), 65_538);
        assert_eq!(m, Some(65_538));
    }
}
