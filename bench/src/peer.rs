//! One synthetic WebRTC client: a str0m `Rtc` in RTP mode, its own UDP socket,
//! and a role — a publisher driving a [`media::Source`], or a subscriber
//! measuring what arrives.
//!
//! Signaling (offer/answer) happens before the peer is handed to a
//! [`crate::host::Host`], which then owns it and drives its socket and timers.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::channel::ChannelId;
use str0m::{Candidate, Event, Rtc, RtcConfig};

use crate::media::{self, Kind, Profile, Source};
use crate::stamp;

fn crypto() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(str0m::crypto::from_feature_flags())).clone()
}

/// The client configuration every synthetic peer uses: RTP mode, Opus + VP8,
/// str0m's default header extensions (mid, rid, abs-send-time, TWCC, audio level).
pub fn client_config() -> RtcConfig {
    RtcConfig::new()
        .set_crypto_provider(crypto())
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_stats_interval(None)
}

/// Publisher state.
#[derive(Debug)]
pub struct Publisher {
    pub source: Source,
    pub audio_mid: Mid,
    pub video_mid: Mid,
    pub pub_id: u32,
    audio_pt: Option<Pt>,
    video_pt: Option<Pt>,
    rids: Vec<Rid>,
    out: Vec<media::Packet>,
    pub sent: u64,
    pub keyframe_requests: u64,
}

/// Per received SSRC: sequence accounting for loss.
#[derive(Debug, Clone, Copy, Default)]
struct SeqTrack {
    first: u64,
    max: u64,
    received: u64,
}

/// Subscriber state.
#[derive(Debug, Default)]
pub struct Subscriber {
    pub first_rtp: Option<Instant>,
    streams: HashMap<u32, SeqTrack>,
    /// RTP packets in the current window.
    pub received: u64,
    pub received_total: u64,
    /// Packets whose stamp was missing (not from our publishers).
    pub unstamped: u64,
}

impl Subscriber {
    /// Lost in the window: sequence gaps per SSRC.
    pub fn lost(&self) -> u64 {
        self.streams.values().map(|t| (t.max - t.first + 1).saturating_sub(t.received)).sum()
    }

    pub fn reset_window(&mut self) {
        self.streams.clear();
        self.received = 0;
        self.unstamped = 0;
    }
}

#[derive(Debug)]
pub enum Role {
    Publisher(Box<Publisher>),
    Subscriber(Subscriber),
}

/// Chat over the `"chat"` data channel (the room protocol's), for soaks: one
/// message every [`Chat::EVERY`] once the channel is open.
#[derive(Debug, Default)]
pub struct Chat {
    id: Option<ChannelId>,
    next: Option<Instant>,
    pub sent: u64,
    pub received: u64,
}

impl Chat {
    pub const EVERY: Duration = Duration::from_secs(5);
}

/// A synthetic client.
pub struct Peer {
    pub label: String,
    pub rtc: Rtc,
    pub sock: UdpSocket,
    pub local: SocketAddr,
    pub role: Role,
    /// When signaling for this peer started (join time is measured from here).
    pub started: Instant,
    pub connected_at: Option<Instant>,
    pub next_timeout: Instant,
    pub errors: u64,
    pub bytes_in: u64,
    /// Some when the peer opened a chat channel (soak publishers).
    pub chat: Option<Chat>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("label", &self.label).field("local", &self.local).finish()
    }
}

fn new_rtc_and_socket(bind_ip: std::net::IpAddr) -> anyhow::Result<(Rtc, UdpSocket, SocketAddr)> {
    let sock = crate::net::udp_socket(SocketAddr::new(bind_ip, 0))?;
    let local = sock.local_addr()?;
    let mut rtc = client_config().build(Instant::now());
    let cand = Candidate::host(local, "udp").map_err(|e| anyhow!("candidate {local}: {e}"))?;
    rtc.add_local_candidate(cand);
    Ok((rtc, sock, local))
}

/// A publisher whose offer is ready; finish with [`PendingPeer::accept_answer`].
pub struct PendingPeer {
    peer: Peer,
    pending: SdpPendingOffer,
    pub offer: String,
}

impl PendingPeer {
    pub fn accept_answer(mut self, answer_sdp: &str) -> anyhow::Result<Peer> {
        let answer = SdpAnswer::from_sdp_string(answer_sdp).context("parsing the SDP answer")?;
        self.peer.rtc.sdp_api().accept_answer(self.pending, answer).context("applying the SDP answer")?;
        self.peer.resolve_pts();
        Ok(self.peer)
    }
}

impl Peer {
    /// A publisher offering Opus audio and VP8 video in 3-layer simulcast (rids of `profile`).
    pub fn publisher(
        label: String,
        bind_ip: std::net::IpAddr,
        profile: Profile,
        pub_id: u32,
    ) -> anyhow::Result<PendingPeer> {
        Self::publisher_with(label, bind_ip, profile, pub_id, false)
    }

    /// [`Peer::publisher`], also opening the `"chat"` data channel and chatting
    /// every [`Chat::EVERY`] when `chat`.
    pub fn publisher_with(
        label: String,
        bind_ip: std::net::IpAddr,
        profile: Profile,
        pub_id: u32,
        chat: bool,
    ) -> anyhow::Result<PendingPeer> {
        let started = Instant::now();
        let (mut rtc, sock, local) = new_rtc_and_socket(bind_ip)?;
        let rids: Vec<Rid> = profile.layers.iter().map(|l| Rid::from(l.rid)).collect();
        let mut api = rtc.sdp_api();
        let stream = Some(format!("pub{pub_id}"));
        let audio_mid =
            api.add_media(MediaKind::Audio, Direction::SendOnly, stream.clone(), Some("mic".into()), None);
        let mut sim = Simulcast::new();
        for l in &profile.layers {
            sim.add_send_layer(SimulcastLayer::new(l.rid));
        }
        let video_mid =
            api.add_media(MediaKind::Video, Direction::SendOnly, stream, Some("cam".into()), Some(sim));
        if chat {
            api.add_channel("chat".into());
        }
        let (offer, pending) = api.apply().ok_or_else(|| anyhow!("no SDP changes to offer"))?;
        let source = Source::new(profile, started, pub_id as u16);
        let peer = Peer {
            label,
            rtc,
            sock,
            local,
            role: Role::Publisher(Box::new(Publisher {
                source,
                audio_mid,
                video_mid,
                pub_id,
                audio_pt: None,
                video_pt: None,
                rids,
                out: Vec::new(),
                sent: 0,
                keyframe_requests: 0,
            })),
            started,
            connected_at: None,
            next_timeout: started,
            errors: 0,
            bytes_in: 0,
            chat: chat.then(Chat::default),
        };
        Ok(PendingPeer { peer, pending, offer: offer.to_sdp_string() })
    }

    /// A subscriber offering to receive one audio and one video track (WHEP style).
    pub fn subscriber_offer(label: String, bind_ip: std::net::IpAddr) -> anyhow::Result<PendingPeer> {
        let started = Instant::now();
        let (mut rtc, sock, local) = new_rtc_and_socket(bind_ip)?;
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().ok_or_else(|| anyhow!("no SDP changes to offer"))?;
        let peer = Peer::subscriber(label, rtc, sock, local, started);
        Ok(PendingPeer { peer, pending, offer: offer.to_sdp_string() })
    }

    /// A subscriber answering a server's offer (Janus style). Returns the peer and its answer.
    pub fn subscriber_answer(
        label: String,
        bind_ip: std::net::IpAddr,
        offer_sdp: &str,
        started: Instant,
    ) -> anyhow::Result<(Peer, String)> {
        let (mut rtc, sock, local) = new_rtc_and_socket(bind_ip)?;
        let offer = SdpOffer::from_sdp_string(offer_sdp).context("parsing the server's SDP offer")?;
        let answer = rtc.sdp_api().accept_offer(offer).context("answering the server's offer")?;
        Ok((Peer::subscriber(label, rtc, sock, local, started), answer.to_sdp_string()))
    }

    fn subscriber(label: String, rtc: Rtc, sock: UdpSocket, local: SocketAddr, started: Instant) -> Peer {
        Peer {
            label,
            rtc,
            sock,
            local,
            role: Role::Subscriber(Subscriber::default()),
            started,
            connected_at: None,
            next_timeout: started,
            errors: 0,
            bytes_in: 0,
            chat: None,
        }
    }

    fn resolve_pts(&mut self) {
        let Role::Publisher(p) = &mut self.role else { return };
        let find = |rtc: &Rtc, mid: Mid, codec: Codec| -> Option<Pt> {
            let media = rtc.media(mid)?;
            let remote = media.remote_pts();
            rtc.codec_config()
                .params()
                .iter()
                .find(|pp| pp.spec().codec == codec && (remote.is_empty() || remote.contains(&pp.pt())))
                .map(|pp| pp.pt())
        };
        p.audio_pt = find(&self.rtc, p.audio_mid, Codec::Opus);
        p.video_pt = find(&self.rtc, p.video_mid, Codec::Vp8);
    }

    /// When this peer next needs attention (str0m timeout or media due).
    pub fn deadline(&self) -> Instant {
        match &self.role {
            Role::Publisher(p) if self.connected_at.is_some() => self.next_timeout.min(p.source.next_due()),
            _ => self.next_timeout,
        }
    }

    /// Write whatever media is due at `now` (publishers, once connected).
    pub fn send_due_media(&mut self, now: Instant) {
        if self.connected_at.is_none() {
            return;
        }
        if let Some(c) = &mut self.chat
            && let Some(id) = c.id
            && c.next.is_none_or(|t| t <= now)
        {
            c.next = Some(now + Chat::EVERY);
            let text = format!("{{\"text\":\"{} says hello #{}\"}}", self.label, c.sent);
            if let Some(mut ch) = self.rtc.channel(id)
                && ch.write(false, text.as_bytes()).is_ok()
            {
                c.sent += 1;
            }
        }
        let Role::Publisher(p) = &mut self.role else { return };
        if p.source.next_due() > now {
            return;
        }
        let mut out = std::mem::take(&mut p.out);
        p.source.poll(now, &mut out);
        let mut api = self.rtc.direct_api();
        for mut pkt in out.drain(..) {
            let (mid, rid, pt) = match pkt.kind {
                Kind::Audio => (p.audio_mid, None, p.audio_pt),
                Kind::Video => (p.video_mid, p.rids.get(pkt.layer).copied(), p.video_pt),
            };
            let Some(pt) = pt else { continue };
            let Some(tx) = api.stream_tx_by_mid(mid, rid) else { continue };
            let stream_id = (p.pub_id << 8) | ((pkt.kind == Kind::Video) as u32) << 4 | pkt.layer as u32;
            stamp::write(&mut pkt.payload, stamp::realtime_ns(), stream_id);
            let ext = match pkt.kind {
                Kind::Audio => ExtensionValues {
                    audio_level: Some(-30),
                    voice_activity: Some(true),
                    ..Default::default()
                },
                Kind::Video => ExtensionValues::default(),
            };
            tx.write_rtp(
                RtpWrite::new(pt, pkt.seq.into(), pkt.ts, now, pkt.payload)
                    .marker(pkt.marker)
                    .ext_vals(ext)
                    .nackable(true),
            );
            p.sent += 1;
        }
        p.out = out;
    }

    /// React to one str0m event; `rx_ns` is the kernel receive time of the
    /// datagram that produced it (0 when it came from a timeout).
    pub fn on_event(
        &mut self,
        ev: Event,
        now: Instant,
        rx_ns: u64,
        latency: &mut hdrhistogram::Histogram<u64>,
    ) {
        match ev {
            Event::Connected => {
                self.connected_at.get_or_insert(now);
            }
            Event::ChannelOpen(id, label) if label == "chat" => {
                if let Some(c) = &mut self.chat {
                    c.id = Some(id);
                }
            }
            Event::ChannelData(_) => {
                if let Some(c) = &mut self.chat {
                    c.received += 1;
                }
            }
            Event::KeyframeRequest(_) => {
                if let Role::Publisher(p) = &mut self.role {
                    p.keyframe_requests += 1;
                    p.source.request_keyframe();
                }
            }
            Event::RtpPacket(pkt) => {
                let Role::Subscriber(s) = &mut self.role else { return };
                s.first_rtp.get_or_insert(now);
                s.received += 1;
                s.received_total += 1;
                let seq = *pkt.seq_no;
                let t = s.streams.entry(*pkt.header.ssrc).or_insert(SeqTrack {
                    first: seq,
                    max: seq,
                    received: 0,
                });
                t.received += 1;
                t.first = t.first.min(seq);
                t.max = t.max.max(seq);
                match stamp::read(&pkt.payload) {
                    Some((sent_ns, _)) if rx_ns > 0 => {
                        let us = rx_ns.saturating_sub(sent_ns) / 1000;
                        let _ = latency.record(us.max(1));
                    }
                    Some(_) => {}
                    None => s.unstamped += 1,
                }
            }
            _ => {}
        }
    }

    /// Join time: signaling start → first media (subscribers) or → connected (publishers).
    pub fn join_time(&self) -> Option<Duration> {
        match &self.role {
            Role::Subscriber(s) => s.first_rtp.map(|t| t.duration_since(self.started)),
            Role::Publisher(_) => self.connected_at.map(|t| t.duration_since(self.started)),
        }
    }
}
