//! The sans-IO room engine.
//!
//! [`Engine`] owns every remote participant's [`str0m::Rtc`] (RTP mode), the
//! in-process (local) participants, rooms, tracks and subscriptions. It is fed
//! with `now` passed in — a datagram ([`Engine::handle_receive`]), a timeout
//! ([`Engine::handle_timeout`]), joins, leaves, room-protocol messages, local
//! packets — and every consequence is drained with [`Engine::poll_output`]
//! (transmits, signaling to one participant, local events, room events, and
//! finally the next [`Output::Timeout`]). It never reads the clock and never
//! touches a socket.
//!
//! str0m's invariant holds everywhere: after any mutation of an `Rtc` the
//! engine drains that `Rtc`'s `poll_output` until `Timeout` before touching it
//! again. Events found while draining are queued and handled after the drain,
//! so no `Rtc` is ever borrowed twice.
//!
//! Demultiplexing: a datagram goes to the participant that owns its remote
//! address; STUN from an unknown address goes by the local ICE ufrag in its
//! USERNAME, and the address is learnt then. The server side is **ICE-lite**:
//! the SFU has only host candidates and answers connectivity checks, so it
//! needs no candidate gathering, pairing or check pacing of its own.

mod deadlines;
mod dtls;
mod forward;
mod signaling;
pub mod stats;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use smallvec::SmallVec;
use str0m::bwe::Bitrate;
use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Mid, Rid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event, Input, Rtc, RtcConfig};

use crate::auth::Grants;
use crate::config::{CodecName, SfuConfig};
use crate::error::SfuError;
use crate::local::{LocalCodec, LocalEvent, LocalJoin, LocalSubscription};
use crate::media::forwarder::{LayerPolicy, LayerSelector, LinkEstimate};
use crate::media::keyframe::VideoFormat;
use crate::media::rewrite::{Rewriter, SeqExtender};
use crate::media::speaker::{SpeakerDetector, SpeakerParams};
use crate::media::vp8::Vp8Munger;
use crate::media::{RateMeter, Throttle};
use crate::metrics::{Metrics, RoomMetrics};
use crate::protocol::{ParticipantInfo, PublishTrack, ServerMessage, TrackInfo, TrackKind, TrackSource};
use crate::server::{LeaveReason, RoomEvent, RoomSnapshot, SfuStats};

/// A participant session, unique for the engine's life.
pub type ParticipantId = u64;

type TrackKey = u64;

/// Hasher for the engine's own numeric ids (participants, tracks): they are
/// assigned here, not chosen by peers, so a multiplicative hash is enough and
/// much cheaper than SipHash on the per-packet lookups. Maps keyed by
/// anything a peer controls (addresses, ufrags) keep the default hasher.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// How often the engine's own housekeeping runs (speaker, layers, limits).
pub const TICK: Duration = Duration::from_millis(200);
/// str0m's statistics per peer this often: the raw bandwidth estimate and
/// loss (a squeeze is seen within one interval), and the per-room metrics.
pub const STATS_INTERVAL: Duration = Duration::from_millis(200);
/// A peer that has not connected this long after joining is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A connected peer whose ICE stays disconnected this long is dropped.
pub const DISCONNECT_GRACE: Duration = Duration::from_secs(15);

/// What kind of remote peer joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRole {
    /// WHIP publisher: one offer, media in.
    Whip,
    /// WHEP viewer of one participant (`Some(identity)`) or of the active speaker (`None`).
    Whep { target: Option<String> },
    /// Room-protocol client over WebSocket: publishes and subscribes, renegotiates.
    Room { auto_subscribe: bool },
}

/// A remote participant joining.
#[derive(Debug, Clone)]
pub struct RemoteJoin {
    pub room: String,
    pub identity: String,
    pub name: Option<String>,
    pub grants: Grants,
    pub role: PeerRole,
    /// The SDP offer (WHIP/WHEP); `None` for the room protocol.
    pub offer: Option<String>,
    /// Opaque resource id for the HTTP resource URL (WHIP/WHEP), chosen by the edge.
    pub resource: Option<String>,
}

/// A successful remote join.
#[derive(Debug, Clone)]
pub struct Joined {
    pub id: ParticipantId,
    /// The SDP answer (WHIP/WHEP).
    pub answer: Option<String>,
}

/// What the engine asks its driver to do.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram (UDP) or frame (TCP, RFC 4571) to a peer.
    Transmit(Transmit),
    /// A room-protocol message to one WebSocket client.
    Signal(ParticipantId, ServerMessage),
    /// An event for one in-process participant.
    Local(ParticipantId, LocalEvent),
    /// A room lifecycle event.
    Room(RoomEvent),
    /// The participant is gone: close its WebSocket / forget its resource.
    Gone(ParticipantId, LeaveReason),
    /// Nothing more to do until this instant (or until new input).
    Timeout(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bind {
    /// A fixed track (room-protocol subscription, local subscription).
    Track,
    /// WHEP of one identity: follows that participant's track of this kind across republishing.
    Identity,
    /// WHEP of the room: follows the active speaker's track of this kind.
    Speaker,
}

/// One subscriber's outgoing stream of one track (the down-track).
struct DownTrack {
    kind: TrackKind,
    bind: Bind,
    /// The identity followed (Bind::Identity).
    follow: Option<Arc<str>>,
    /// The track currently forwarded.
    source: Option<TrackKey>,
    /// The subscriber's m-line (None for a local subscriber).
    mid: Option<Mid>,
    /// Negotiated (room protocol: after the answer).
    ready: bool,
    /// The m-line is known to both sides (an answer covered it): it can be
    /// set inactive and later reused for another subscription.
    negotiated: bool,
    /// Payload type on the subscriber's side, resolved against the source's codec.
    pt: Option<str0m::media::Pt>,
    rewriter: Rewriter,
    /// VP8 PictureID/TL0PICIDX continuity across source switches.
    vp8: Vp8Munger,
    selector: LayerSelector,
    /// Hysteresis and hold times behind the selector's target.
    policy: LayerPolicy,
    want_width: Option<u32>,
    last_layer_sent: Option<Option<usize>>,
    /// When the forwarded layer last went up (its keyframe is a burst).
    climbed_at: Option<Instant>,
    alloc_bps: u64,
}

struct Layer {
    rid: Option<Rid>,
    ssrc: Option<Ssrc>,
    /// Bumped when the publisher restarts the layer with a new SSRC.
    generation: u32,
    meter: RateMeter,
    kf_throttle: Throttle,
    seq: SeqExtender,
}

struct Track {
    id: Arc<str>,
    room: Arc<str>,
    owner: ParticipantId,
    owner_identity: Arc<str>,
    kind: TrackKind,
    source: TrackSource,
    codec: Option<Codec>,
    codec_name: Arc<str>,
    format: FormatParams,
    clock_rate: u32,
    video_format: VideoFormat,
    last_pt: Option<str0m::media::Pt>,
    mid: Option<Mid>,
    layers: SmallVec<[Layer; 3]>,
    rids: Vec<String>,
    muted: bool,
    admin_muted: bool,
    subscribers: Vec<ParticipantId>,
    /// Audio levels seen since the last tick (summed linear amplitude, count),
    /// folded into the room's speaker detector on the tick: the hot path never
    /// looks the room up.
    level_sum: f32,
    level_n: u32,
    /// Forwarded since the last tick, folded into the room's counters then.
    fwd_packets: u64,
    fwd_bytes: u64,
}

#[derive(Default)]
struct Negotiation {
    server_seq: u64,
    pending: Option<PendingOffer>,
    /// Tracks to add in the next server offer (with the tile width asked for).
    wanted: Vec<(TrackKey, Option<u32>)>,
    /// m-lines to deactivate in the next server offer.
    removals: Vec<Mid>,
    /// Down-tracks whose m-line carries nothing (inactive, or about to be):
    /// a new subscription of the same kind reuses one instead of adding an
    /// m-line, so a long meeting with join/leave churn keeps a bounded SDP.
    /// Each keeps its rewriter, so the m-line's SSRC continues its numbering.
    parked: Vec<DownTrack>,
}

impl Negotiation {
    /// A room-protocol down-track stops carrying a subscription: its m-line
    /// goes inactive in the next offer (once negotiated) and waits for reuse.
    fn park(&mut self, mut d: DownTrack) {
        let Some(mid) = d.mid else { return };
        d.source = None;
        d.ready = false;
        d.pt = None;
        d.rewriter.detach();
        if d.negotiated && !self.removals.contains(&mid) {
            self.removals.push(mid);
        }
        self.parked.push(d);
    }

    /// Is `tk` being subscribed already (waiting, or in the outstanding offer)?
    fn has_pending(&self, tk: TrackKey) -> bool {
        self.wanted.iter().any(|w| w.0 == tk)
            || self.pending.as_ref().is_some_and(|p| p.added.iter().any(|a| a.0 == tk))
    }
}

struct PendingOffer {
    seq: u64,
    pending: SdpPendingOffer,
    /// Subscriptions this offer carries, with their m-lines (new or reused).
    added: Vec<(TrackKey, Mid)>,
}

enum Kind {
    Remote { role: PeerRole },
    Local { subscribe: LocalSubscription },
}

struct Participant {
    id: ParticipantId,
    room: Arc<str>,
    identity: Arc<str>,
    name: Option<String>,
    grants: Grants,
    kind: Kind,
    rtc: Option<Box<Rtc>>,
    /// When the `Rtc` wants its next timeout.
    timeout: Instant,
    /// `timeout` has a live entry in the engine's [`deadlines::Deadlines`].
    armed: bool,
    /// Packets were written to its `Rtc` since its last drain (it is in
    /// the engine's `touched` list).
    touched: bool,
    joined_at: Instant,
    ufrag: Option<String>,
    resource: Option<String>,
    addrs: Vec<(Protocol, SocketAddr)>,
    connected: bool,
    disconnected_at: Option<Instant>,
    published: Vec<TrackKey>,
    /// ssrc -> (track, layer) of incoming streams (remote publishers).
    rx: SmallVec<[(Ssrc, TrackKey, u8); 6]>,
    downtracks: Vec<DownTrack>,
    /// The downlink towards this participant (str0m's send-side estimate).
    link: LinkEstimate,
    last_desired_bps: u64,
    last_minimum_bps: u64,
    neg: Negotiation,
    pending_publish: Vec<PublishTrack>,
    chat: Option<ChannelId>,
    failed: bool,
    /// What the participant sends us (all tracks), for the publish cap and quality.
    publish_bytes: RateMeter,
    /// str0m's cumulative stats seen so far, and the last quality sent.
    stats: stats::StatsState,
}

impl Participant {
    fn is_room_client(&self) -> bool {
        matches!(self.kind, Kind::Remote { role: PeerRole::Room { .. } })
    }
    fn is_local(&self) -> bool {
        matches!(self.kind, Kind::Local { .. })
    }
    fn role(&self) -> Option<&PeerRole> {
        match &self.kind {
            Kind::Remote { role } => Some(role),
            Kind::Local { .. } => None,
        }
    }
}

struct Room {
    name: Arc<str>,
    participants: Vec<ParticipantId>,
    tracks: Vec<TrackKey>,
    speaker: SpeakerDetector,
    active_speaker: Option<ParticipantId>,
    opened_at: Instant,
    metrics: Option<RoomMetrics>,
    forwarded_packets: u64,
    forwarded_bytes: u64,
    flushed_packets: u64,
    flushed_bytes: u64,
    next_track_no: u64,
    /// Someone records this room (consent banner for every participant).
    recording: bool,
}

/// Counters of the engine's life (see [`SfuStats`]).
#[derive(Debug, Default, Clone)]
struct Counters {
    forwarded_packets: u64,
    forwarded_bytes: u64,
    dropped_packets: u64,
    garbage: u64,
    unknown_peer: u64,
    /// Packets not queued towards a subscriber whose send queue was at its
    /// bound (see [`forward::SEND_QUEUE_MAX_PACKETS`]); counted per packet,
    /// flushed to `sfu_dropped_total{reason="send_queue_full"}` each tick.
    send_queue_full: u64,
    send_queue_full_flushed: u64,
    /// When the last warning about full send queues was logged.
    send_queue_full_logged: Option<(Instant, u64)>,
}

/// Full send queues are logged at most this often (with the count since).
const SEND_QUEUE_LOG_EVERY: Duration = Duration::from_secs(10);

/// The room engine. See the module docs.
pub struct Engine {
    config: Arc<SfuConfig>,
    candidates: Vec<Candidate>,
    start: Instant,
    wall_start: SystemTime,
    participants: IdMap<Participant>,
    rooms: HashMap<Arc<str>, Room>,
    tracks: IdMap<Track>,
    by_addr: HashMap<(Protocol, SocketAddr), ParticipantId>,
    by_ufrag: HashMap<String, ParticipantId>,
    by_resource: HashMap<String, ParticipantId>,
    out: VecDeque<Output>,
    work: VecDeque<(ParticipantId, Event)>,
    /// Every `Rtc`'s next timeout, earliest first.
    deadlines: deadlines::Deadlines,
    /// Scratch for [`Engine::handle_timeout`]: the peers that are due.
    due: Vec<ParticipantId>,
    /// Subscribers whose `Rtc` got packets (`write_rtp`) and was not
    /// drained since: each gets one timeout and one drain before the engine
    /// reports its next `Output::Timeout`, however many packets it got.
    touched: Vec<ParticipantId>,
    /// The latest `now` a packet was forwarded at (the touched peers' timeout).
    touched_at: Instant,
    to_remove: Vec<(ParticipantId, LeaveReason)>,
    next_id: ParticipantId,
    next_track: TrackKey,
    next_tick: Instant,
    join_tokens: f64,
    join_tokens_at: Instant,
    counters: Counters,
    metrics: Option<Metrics>,
    speaker_params: SpeakerParams,
    /// One DTLS certificate for every peer (its fingerprint goes in each
    /// answer): the process's ([`process_dtls_cert`]), taken at the first
    /// remote join instead of a key pair and a signature per join, which a
    /// join flood on a small ARM board would feel.
    dtls_cert: Option<str0m::config::DtlsCert>,
}

/// The process's DTLS certificate, generated on first use and shared by every
/// engine in the process (as a browser-facing SFU keeps one per process): its
/// fingerprint stays the same for the life of the process. The daemon runs
/// one engine, so this changes nothing there; tests, benches and fuzz
/// harnesses that build an engine per case stop paying for an EC key pair
/// and a self-signed certificate each. `None` (the provider could not make
/// one) leaves str0m to generate one per session, as before.
fn process_dtls_cert() -> Option<str0m::config::DtlsCert> {
    static CERT: std::sync::OnceLock<Option<str0m::config::DtlsCert>> = std::sync::OnceLock::new();
    CERT.get_or_init(|| str0m::crypto::from_feature_flags().dtls_provider.generate_certificate()).clone()
}

impl Engine {
    /// A new engine. `candidates` are the local ICE candidates every peer gets
    /// (host UDP on the one port, passive TCP); `wall` is the wall-clock time at
    /// `now`, used only to stamp room events and chat.
    pub fn new(config: SfuConfig, candidates: Vec<Candidate>, now: Instant, wall: SystemTime) -> Engine {
        let burst = f64::from(config.limits.max_joins_per_second.max(1));
        Engine {
            config: Arc::new(config),
            candidates,
            start: now,
            wall_start: wall,
            participants: IdMap::default(),
            rooms: HashMap::new(),
            tracks: IdMap::default(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_resource: HashMap::new(),
            out: VecDeque::new(),
            work: VecDeque::new(),
            deadlines: deadlines::Deadlines::default(),
            due: Vec::new(),
            touched: Vec::new(),
            touched_at: now,
            to_remove: Vec::new(),
            next_id: 1,
            next_track: 1,
            next_tick: now + TICK,
            join_tokens: burst,
            join_tokens_at: now,
            counters: Counters::default(),
            metrics: None,
            speaker_params: SpeakerParams::default(),
            dtls_cert: None,
        }
    }

    /// Report into these metric families.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = Some(metrics);
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Tune the active-speaker detector (tests use shorter hysteresis).
    pub fn set_speaker_params(&mut self, params: SpeakerParams) {
        self.speaker_params = params;
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.wall_start + now.saturating_duration_since(self.start)
    }

    // ---------------------------------------------------------------- output

    /// The next thing to do. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        if !self.touched.is_empty() {
            self.flush_touched();
            if let Some(o) = self.out.pop_front() {
                return o;
            }
        }
        let participants = &self.participants;
        let t = match self.deadlines.next(|id, at| is_live(participants, id, at)) {
            Some(d) => d.min(self.next_tick),
            None => self.next_tick,
        };
        Output::Timeout(t)
    }

    // ----------------------------------------------------------------- input

    /// A datagram (or a de-framed ICE-TCP packet) arrived.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) {
        let is_stun = buf.first().is_some_and(|b| *b < 2);
        let mut pid = None;
        if is_stun && let Some(u) = wire::stun_local_ufrag(buf) {
            pid = self.by_ufrag.get(u).copied();
        }
        if pid.is_none() {
            pid = self.by_addr.get(&(proto, source)).copied();
        }
        let Some(pid) = pid else {
            self.counters.unknown_peer += 1;
            if let Some(m) = &self.metrics {
                // STUN naming no ufrag of ours (a scan, a flood) apart from
                // media from an address that never did ICE with us
                if is_stun { m.dropped_unknown_ufrag.inc() } else { m.dropped_unknown_peer.inc() }
            }
            return;
        };
        let Ok(recv) = Receive::new(proto, source, destination, buf) else {
            self.counters.garbage += 1;
            if let Some(m) = &self.metrics {
                m.dropped_garbage.inc();
            }
            return;
        };
        let Some(p) = self.participants.get_mut(&pid) else { return };
        let Some(rtc) = p.rtc.as_mut() else { return };
        let input = Input::Receive(now, recv);
        if is_stun && !rtc.accepts(&input) {
            self.counters.unknown_peer += 1;
            if let Some(m) = &self.metrics {
                m.dropped_unknown_peer.inc();
            }
            return;
        }
        if let Err(e) = rtc.handle_input(input) {
            tracing::debug!(participant = pid, error = %e, "input refused");
            self.counters.garbage += 1;
            if let Some(m) = &self.metrics {
                m.dropped_garbage.inc();
            }
        }
        if is_stun && !p.addrs.contains(&(proto, source)) && p.addrs.len() < 16 {
            p.addrs.push((proto, source));
            if let Some(old) = self.by_addr.insert((proto, source), pid)
                && old != pid
                && let Some(o) = self.participants.get_mut(&old)
            {
                o.addrs.retain(|a| *a != (proto, source));
            }
        }
        self.drain(pid);
        self.process(now);
    }

    /// Time passed: drive every `Rtc` whose timeout is due and the engine's tick.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        let participants = &self.participants;
        self.deadlines.pop_due(now, |id, at| is_live(participants, id, at), &mut due);
        for &pid in &due {
            if let Some(p) = self.participants.get_mut(&pid) {
                // its entry is consumed: the drain below schedules the next one
                p.armed = false;
                if let Some(rtc) = p.rtc.as_mut() {
                    if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!(participant = pid, error = %e, "timeout refused");
                    }
                    self.drain(pid);
                }
            }
        }
        self.due = due;
        // stale entries (deadlines that moved, peers that left) past the live ones: start again
        if self.deadlines.len() > 4 * self.participants.len() + 1024 {
            self.deadlines.rebuild(
                self.participants.values().filter(|p| p.rtc.is_some() && p.armed).map(|p| (p.id, p.timeout)),
            );
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
        self.process(now);
    }

    // ------------------------------------------------------------ lifecycle

    fn admit(&mut self, now: Instant, room: &str) -> Result<(), SfuError> {
        let rate = f64::from(self.config.limits.max_joins_per_second.max(1));
        let dt = now.saturating_duration_since(self.join_tokens_at).as_secs_f64();
        self.join_tokens = (self.join_tokens + dt * rate).min(rate);
        self.join_tokens_at = now;
        if self.join_tokens < 1.0 {
            return Err(SfuError::Overloaded { retry_after_secs: 1 });
        }
        if !self.rooms.contains_key(room) && self.rooms.len() >= self.config.limits.max_rooms {
            return Err(SfuError::TooManyRooms { max: self.config.limits.max_rooms });
        }
        let max = self
            .config
            .rooms
            .get(room)
            .and_then(|r| r.max_participants)
            .unwrap_or(self.config.limits.max_participants_per_room);
        if let Some(r) = self.rooms.get(room)
            && r.participants.len() >= max
        {
            return Err(SfuError::RoomFull { room: room.to_string(), max });
        }
        self.join_tokens -= 1.0;
        Ok(())
    }

    fn open_room(&mut self, now: Instant, name: &str) -> Arc<str> {
        if let Some((k, _)) = self.rooms.get_key_value(name) {
            return k.clone();
        }
        let key: Arc<str> = Arc::from(name);
        let room = Room {
            name: key.clone(),
            participants: Vec::new(),
            tracks: Vec::new(),
            speaker: SpeakerDetector::new(self.speaker_params),
            active_speaker: None,
            opened_at: now,
            metrics: self.metrics.as_ref().map(|m| m.room(name)),
            forwarded_packets: 0,
            forwarded_bytes: 0,
            flushed_packets: 0,
            flushed_bytes: 0,
            next_track_no: 1,
            recording: false,
        };
        self.rooms.insert(key.clone(), room);
        if let Some(m) = &self.metrics {
            m.rooms.set(self.rooms.len() as i64);
        }
        self.out
            .push_back(Output::Room(RoomEvent::RoomOpened { room: name.to_string(), at: self.wall(now) }));
        key
    }

    fn rtc_config(&self, room: &str) -> RtcConfig {
        let codecs = self.config.room_codecs(room);
        let has = |c| codecs.contains(&c);
        let config = RtcConfig::new().set_crypto_provider(dtls::crypto_provider());
        let config = match &self.dtls_cert {
            Some(cert) => config.set_dtls_cert(cert.clone()),
            None => config,
        };
        config
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(has(CodecName::Opus), false)
            .enable_vp8(has(CodecName::Vp8))
            .enable_h264(has(CodecName::H264))
            .enable_vp9(has(CodecName::Vp9))
            .enable_av1(has(CodecName::Av1))
            .enable_bwe(Some(Bitrate::bps(self.config.media.initial_bitrate_bps)))
            .set_stats_interval(Some(STATS_INTERVAL))
    }

    /// A remote participant joins (WHIP, WHEP or the room protocol). Grants
    /// come from a verified token; the engine enforces them.
    pub fn join(&mut self, now: Instant, join: RemoteJoin) -> Result<Joined, SfuError> {
        match &join.role {
            PeerRole::Whip if !join.grants.publish => {
                return Err(SfuError::Auth(crate::auth::AuthError::MissingGrant("publish")));
            }
            PeerRole::Whep { .. } if !join.grants.subscribe => {
                return Err(SfuError::Auth(crate::auth::AuthError::MissingGrant("subscribe")));
            }
            _ => {}
        }
        let offer = match (&join.role, &join.offer) {
            (PeerRole::Room { .. }, _) => None,
            (_, Some(sdp)) => {
                if sdp.len() > self.config.limits.max_body_bytes {
                    return Err(SfuError::BadSdp("offer too large".into()));
                }
                wire::check_codecs(&wire::scan_sdp(sdp), self.config.room_codecs(&join.room))
                    .map_err(SfuError::CodecNotAllowed)?;
                wire::check_payload_types(sdp).map_err(SfuError::BadSdp)?;
                let offer = str0m::change::SdpOffer::from_sdp_string(sdp)
                    .map_err(|e| SfuError::BadSdp(e.to_string()))?;
                Some(offer)
            }
            (_, None) => return Err(SfuError::BadSdp("an SDP offer is required".into())),
        };
        if let PeerRole::Whep { target: Some(t) } = &join.role {
            let present = self.rooms.get(join.room.as_str()).is_some_and(|r| {
                r.participants.iter().any(|p| self.participants.get(p).is_some_and(|p| &*p.identity == t))
            });
            if !present {
                return Err(SfuError::NoSuchParticipant { room: join.room.clone(), identity: t.clone() });
            }
        }
        self.admit(now, &join.room)?;

        if self.dtls_cert.is_none() {
            self.dtls_cert = process_dtls_cert();
        }
        let mut rtc = self.rtc_config(&join.room).build(now);
        for c in &self.candidates {
            rtc.add_local_candidate(c.clone());
        }
        let answer = match offer {
            Some(offer) => {
                let a = rtc.sdp_api().accept_offer(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
                Some(a.to_sdp_string())
            }
            None => None,
        };
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;

        // A second room-protocol or WHIP session of the same identity replaces the first
        // (a reloaded page); viewers may share an identity.
        if !matches!(join.role, PeerRole::Whep { .. }) {
            let old: Vec<ParticipantId> = self
                .participants
                .values()
                .filter(|p| {
                    &*p.room == join.room.as_str()
                        && &*p.identity == join.identity.as_str()
                        && !matches!(p.role(), Some(PeerRole::Whep { .. }))
                })
                .map(|p| p.id)
                .collect();
            for o in old {
                if self.participants.get(&o).is_some_and(|p| p.is_room_client()) {
                    self.out.push_back(Output::Signal(
                        o,
                        ServerMessage::Kicked { reason: "replaced by a new session".into() },
                    ));
                }
                self.remove_participant(now, o, LeaveReason::Kicked);
            }
        }

        let room = self.open_room(now, &join.room);
        let id = self.next_id;
        self.next_id += 1;
        let p = Participant {
            id,
            room: room.clone(),
            identity: Arc::from(join.identity.as_str()),
            name: join.name.clone(),
            grants: join.grants,
            kind: Kind::Remote { role: join.role.clone() },
            rtc: Some(Box::new(rtc)),
            timeout: now,
            armed: false,
            touched: false,
            joined_at: now,
            ufrag: Some(ufrag.clone()),
            resource: join.resource.clone(),
            addrs: Vec::new(),
            connected: false,
            disconnected_at: None,
            published: Vec::new(),
            rx: SmallVec::new(),
            downtracks: Vec::new(),
            link: LinkEstimate::new(self.config.media.initial_bitrate_bps),
            last_desired_bps: 0,
            last_minimum_bps: 0,
            neg: Negotiation::default(),
            pending_publish: Vec::new(),
            chat: None,
            failed: false,
            publish_bytes: RateMeter::default(),
            stats: stats::StatsState::default(),
        };
        self.participants.insert(id, p);
        self.by_ufrag.insert(ufrag, id);
        if let Some(r) = &join.resource {
            self.by_resource.insert(r.clone(), id);
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.participants.push(id);
        }
        self.announce_join(now, id);
        if let PeerRole::Room { auto_subscribe } = join.role {
            self.send_joined(id);
            if auto_subscribe {
                self.subscribe_all(now, id);
            }
        }
        self.drain(id);
        self.process(now);
        Ok(Joined { id, answer })
    }

    /// An in-process participant joins (room camera, recorder, cascade).
    pub fn join_local(&mut self, now: Instant, join: LocalJoin) -> Result<ParticipantId, SfuError> {
        if join.publish.len() > self.config.limits.max_tracks_per_participant {
            return Err(SfuError::TooManyTracks { max: self.config.limits.max_tracks_per_participant });
        }
        let allowed = self.config.room_codecs(&join.room).to_vec();
        for t in &join.publish {
            let c = match t.codec {
                LocalCodec::Opus => CodecName::Opus,
                LocalCodec::H264 { .. } => CodecName::H264,
                LocalCodec::Vp8 => CodecName::Vp8,
            };
            if !allowed.contains(&c) {
                return Err(SfuError::CodecNotAllowed(format!("{c:?} in room {}", join.room)));
            }
            if t.layers.len() > crate::media::forwarder::MAX_LAYERS {
                return Err(SfuError::Config(format!("track {}: at most 3 simulcast layers", t.name)));
            }
        }
        self.admit(now, &join.room)?;
        let old: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| &*p.room == join.room.as_str() && &*p.identity == join.identity.as_str())
            .map(|p| p.id)
            .collect();
        for o in old {
            self.remove_participant(now, o, LeaveReason::Kicked);
        }
        let room = self.open_room(now, &join.room);
        let id = self.next_id;
        self.next_id += 1;
        let p = Participant {
            id,
            room: room.clone(),
            identity: Arc::from(join.identity.as_str()),
            name: join.name.clone(),
            grants: Grants { publish: true, subscribe: true, record: false, admin: false },
            kind: Kind::Local { subscribe: join.subscribe },
            rtc: None,
            timeout: now,
            armed: false,
            touched: false,
            joined_at: now,
            ufrag: None,
            resource: None,
            addrs: Vec::new(),
            connected: true,
            disconnected_at: None,
            published: Vec::new(),
            rx: SmallVec::new(),
            downtracks: Vec::new(),
            link: LinkEstimate::new(u64::MAX / 4),
            last_desired_bps: 0,
            last_minimum_bps: 0,
            neg: Negotiation::default(),
            pending_publish: Vec::new(),
            chat: None,
            failed: false,
            publish_bytes: RateMeter::default(),
            stats: stats::StatsState::default(),
        };
        self.participants.insert(id, p);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.participants.push(id);
        }
        self.announce_join(now, id);
        for spec in &join.publish {
            let (codec, name, format, clock, vf) = match &spec.codec {
                LocalCodec::Opus => {
                    (Codec::Opus, "opus", FormatParams::default(), 48_000, VideoFormat::Other)
                }
                LocalCodec::Vp8 => (Codec::Vp8, "VP8", FormatParams::default(), 90_000, VideoFormat::Vp8),
                LocalCodec::H264 { profile_level_id } => {
                    let f = FormatParams {
                        packetization_mode: Some(1),
                        level_asymmetry_allowed: Some(true),
                        profile_level_id: u32::from_str_radix(profile_level_id, 16).ok().or(Some(0x42e01f)),
                        ..Default::default()
                    };
                    (Codec::H264, "H264", f, 90_000, VideoFormat::H264)
                }
            };
            let rids: Vec<Option<Rid>> = if spec.layers.is_empty() {
                vec![None]
            } else {
                spec.layers.iter().map(|r| Some(Rid::from(r.as_str()))).collect()
            };
            let tk = self.new_track(
                id,
                spec.kind,
                spec.source,
                None,
                rids,
                spec.layers.clone(),
                Some((codec, name, format, clock, vf)),
            );
            self.publish_track(now, tk);
        }
        self.subscribe_all(now, id);
        let joined = self.joined_message(id);
        self.out.push_back(Output::Local(id, LocalEvent::Signal(joined)));
        self.process(now);
        Ok(id)
    }

    /// A participant leaves (WS `leave`, HTTP `DELETE`, local drop).
    pub fn leave(&mut self, now: Instant, id: ParticipantId, reason: LeaveReason) {
        self.remove_participant(now, id, reason);
        self.process(now);
    }

    /// The participant behind a WHIP/WHEP resource id.
    pub fn participant_by_resource(&self, resource: &str) -> Option<ParticipantId> {
        self.by_resource.get(resource).copied()
    }

    /// Room and identity of a participant.
    pub fn participant_identity(&self, id: ParticipantId) -> Option<(&str, &str)> {
        self.participants.get(&id).map(|p| (&*p.room, &*p.identity))
    }

    /// Remove a participant by identity; it is told why.
    pub fn kick(&mut self, now: Instant, room: &str, identity: &str, reason: &str) -> Result<(), SfuError> {
        let ids = self.find(room, identity)?;
        for id in ids {
            match self.participants.get(&id).map(|p| p.is_local()) {
                Some(false) => self
                    .out
                    .push_back(Output::Signal(id, ServerMessage::Kicked { reason: reason.to_string() })),
                Some(true) => self.out.push_back(Output::Local(
                    id,
                    LocalEvent::Signal(ServerMessage::Kicked { reason: reason.to_string() }),
                )),
                None => {}
            }
            self.remove_participant(now, id, LeaveReason::Kicked);
        }
        self.process(now);
        Ok(())
    }

    fn find(&self, room: &str, identity: &str) -> Result<Vec<ParticipantId>, SfuError> {
        let r = self.rooms.get(room).ok_or_else(|| SfuError::NoSuchRoom(room.to_string()))?;
        let ids: Vec<_> = r
            .participants
            .iter()
            .copied()
            .filter(|p| self.participants.get(p).is_some_and(|p| &*p.identity == identity))
            .collect();
        if ids.is_empty() {
            return Err(SfuError::NoSuchParticipant { room: room.into(), identity: identity.into() });
        }
        Ok(ids)
    }

    /// Set the room's `recording` flag and tell everyone in it when it changes.
    pub fn set_recording(&mut self, room: &str, recording: bool) -> Result<(), SfuError> {
        let r = self.rooms.get_mut(room).ok_or_else(|| SfuError::NoSuchRoom(room.to_string()))?;
        if std::mem::replace(&mut r.recording, recording) != recording {
            self.broadcast(room, ServerMessage::Recording { recording }, None);
        }
        Ok(())
    }

    /// Server-side mute of a participant's tracks of `kind`.
    pub fn admin_mute(
        &mut self,
        now: Instant,
        room: &str,
        identity: &str,
        kind: TrackKind,
        muted: bool,
    ) -> Result<(), SfuError> {
        let ids = self.find(room, identity)?;
        for id in ids {
            let tracks: Vec<TrackKey> =
                self.participants.get(&id).map(|p| p.published.clone()).unwrap_or_default();
            for tk in tracks {
                let Some(t) = self.tracks.get_mut(&tk) else { continue };
                if t.kind != kind || t.admin_muted == muted {
                    continue;
                }
                t.admin_muted = muted;
                let track_id = t.id.to_string();
                let msg = ServerMessage::MutedByAdmin { track: track_id.clone(), muted };
                if self.participants.get(&id).is_some_and(|p| p.is_local()) {
                    self.out.push_back(Output::Local(id, LocalEvent::Signal(msg)));
                } else {
                    self.out.push_back(Output::Signal(id, msg));
                }
                self.track_muted_changed(now, tk);
            }
        }
        self.process(now);
        Ok(())
    }

    /// A local participant (un)muted one of its tracks.
    pub fn set_local_muted(
        &mut self,
        now: Instant,
        id: ParticipantId,
        track: usize,
        muted: bool,
    ) -> Result<(), SfuError> {
        let tk = self
            .participants
            .get(&id)
            .and_then(|p| p.published.get(track).copied())
            .ok_or_else(|| SfuError::NoSuchTrack(format!("local track {track}")))?;
        if let Some(t) = self.tracks.get_mut(&tk)
            && t.muted != muted
        {
            t.muted = muted;
            self.track_muted_changed(now, tk);
        }
        self.process(now);
        Ok(())
    }

    fn track_muted_changed(&mut self, now: Instant, tk: TrackKey) {
        let Some(t) = self.tracks.get(&tk) else { return };
        let muted = t.muted || t.admin_muted;
        let room = t.room.clone();
        let msg = ServerMessage::TrackMuted { track: t.id.to_string(), muted };
        self.out.push_back(Output::Room(RoomEvent::TrackMuted {
            room: room.to_string(),
            track: t.id.to_string(),
            muted,
        }));
        // resume cleanly after a mute: restart numbering at the next keyframe
        let subs = t.subscribers.clone();
        for s in subs {
            if let Some(p) = self.participants.get_mut(&s) {
                for d in p.downtracks.iter_mut().filter(|d| d.source == Some(tk)) {
                    d.selector.reset();
                    d.rewriter.detach();
                }
            }
        }
        self.broadcast(&room, msg, None);
        if !muted {
            self.request_keyframes_for_track(now, tk);
        }
    }

    /// Every participant goes: each is told `closing` — and nothing after it
    /// (not the others leaving, their tracks going, unsubscriptions) — every
    /// WebRTC peer is sent RTCP BYE and a DTLS close_notify, then all is removed.
    pub fn shutdown(&mut self, now: Instant) {
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for &id in &ids {
            let msg =
                ServerMessage::Closing { reason: "server shutting down".into(), retry_after_ms: Some(5000) };
            match self.participants.get(&id) {
                Some(p) if p.is_local() => self.out.push_back(Output::Local(id, LocalEvent::Signal(msg))),
                Some(p) if p.is_room_client() => self.out.push_back(Output::Signal(id, msg)),
                _ => {}
            }
        }
        let told = self.out.len();
        for id in ids {
            if let Some(rtc) = self.participants.get_mut(&id).and_then(|p| p.rtc.as_mut()) {
                if let Err(e) = rtc.close() {
                    tracing::debug!(participant = id, error = %e, "close");
                }
                self.drain(id);
            }
            self.remove_participant(now, id, LeaveReason::Shutdown);
        }
        self.process(now);
        let after = self.out.split_off(told);
        self.out.extend(
            after
                .into_iter()
                .filter(|o| !matches!(o, Output::Signal(..) | Output::Local(_, LocalEvent::Signal(_)))),
        );
    }

    fn remove_participant(&mut self, now: Instant, id: ParticipantId, reason: LeaveReason) {
        let Some(mut p) = self.participants.remove(&id) else { return };
        // its subscriptions
        for d in p.downtracks.drain(..) {
            if let Some(tk) = d.source
                && let Some(t) = self.tracks.get_mut(&tk)
            {
                t.subscribers.retain(|s| *s != id);
            }
        }
        // its publications
        for tk in std::mem::take(&mut p.published) {
            self.unpublish_track(now, tk);
        }
        for a in &p.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        if let Some(u) = &p.ufrag {
            self.by_ufrag.remove(u);
        }
        if let Some(r) = &p.resource {
            self.by_resource.remove(r);
        }
        let room_name = p.room.clone();
        let mut close_room = false;
        let mut speaker_change = None;
        if let Some(room) = self.rooms.get_mut(&room_name) {
            room.participants.retain(|x| *x != id);
            if let Some(change) = room.speaker.remove(id) {
                room.active_speaker = change;
                speaker_change = Some(change);
            }
            close_room = room.participants.is_empty();
        }
        self.out.push_back(Output::Gone(id, reason));
        self.out.push_back(Output::Room(RoomEvent::ParticipantLeft {
            room: room_name.to_string(),
            identity: p.identity.to_string(),
            session: id,
            reason,
            duration: now.saturating_duration_since(p.joined_at),
            at: self.wall(now),
        }));
        if let Some(m) = &self.metrics {
            m.participants.set(self.participants.len() as i64);
        }
        if close_room {
            if let Some(room) = self.rooms.remove(&room_name) {
                self.flush_room_metrics_of(&room);
            }
            if let Some(m) = &self.metrics {
                m.remove_room(&room_name);
                m.rooms.set(self.rooms.len() as i64);
            }
            self.out.push_back(Output::Room(RoomEvent::RoomClosed {
                room: room_name.to_string(),
                at: self.wall(now),
            }));
        } else {
            self.broadcast(
                &room_name,
                ServerMessage::ParticipantLeft { identity: p.identity.to_string() },
                None,
            );
            if let Some(change) = speaker_change {
                self.speaker_changed(now, &room_name, change);
            }
        }
    }

    fn announce_join(&mut self, now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else { return };
        let info = ParticipantInfo {
            identity: p.identity.to_string(),
            name: p.name.clone(),
            tracks: Vec::new(),
            local: p.is_local(),
        };
        let room = p.room.clone();
        let ev = RoomEvent::ParticipantJoined {
            room: room.to_string(),
            identity: p.identity.to_string(),
            session: id,
            local: p.is_local(),
            at: self.wall(now),
        };
        // WHEP viewers are not room members others need to see
        let visible = !matches!(p.role(), Some(PeerRole::Whep { .. }));
        self.out.push_back(Output::Room(ev));
        if visible {
            self.broadcast(&room, ServerMessage::ParticipantJoined { participant: info }, Some(id));
        }
        if let Some(m) = &self.metrics {
            m.participants.set(self.participants.len() as i64);
        }
    }

    fn participant_info(&self, id: ParticipantId) -> Option<ParticipantInfo> {
        let p = self.participants.get(&id)?;
        Some(ParticipantInfo {
            identity: p.identity.to_string(),
            name: p.name.clone(),
            tracks: p.published.iter().filter_map(|tk| self.track_info(*tk)).collect(),
            local: p.is_local(),
        })
    }

    fn track_info(&self, tk: TrackKey) -> Option<TrackInfo> {
        let t = self.tracks.get(&tk)?;
        Some(TrackInfo {
            id: t.id.to_string(),
            participant: t.owner_identity.to_string(),
            kind: t.kind,
            source: t.source,
            codec: t.codec_name.to_string(),
            layers: t.rids.clone(),
            muted: t.muted || t.admin_muted,
        })
    }

    fn joined_message(&self, id: ParticipantId) -> ServerMessage {
        let p = &self.participants[&id];
        let room = self.rooms.get(&p.room);
        let others = room
            .map(|r| {
                r.participants
                    .iter()
                    .filter(|x| **x != id)
                    .filter(|x| {
                        self.participants
                            .get(x)
                            .is_some_and(|o| !matches!(o.role(), Some(PeerRole::Whep { .. })))
                    })
                    .filter_map(|x| self.participant_info(*x))
                    .collect()
            })
            .unwrap_or_default();
        let active = room
            .and_then(|r| r.active_speaker)
            .and_then(|s| self.participants.get(&s))
            .map(|s| s.identity.to_string());
        ServerMessage::Joined {
            room: p.room.to_string(),
            you: self.participant_info(id).unwrap_or(ParticipantInfo {
                identity: p.identity.to_string(),
                name: p.name.clone(),
                tracks: vec![],
                local: p.is_local(),
            }),
            participants: others,
            ice_servers: self.config.ice_servers.clone(),
            active_speaker: active,
            recording: room.is_some_and(|r| r.recording),
        }
    }

    fn send_joined(&mut self, id: ParticipantId) {
        let m = self.joined_message(id);
        self.out.push_back(Output::Signal(id, m));
    }

    /// Send `msg` to every room-protocol client and local participant of `room`.
    fn broadcast(&mut self, room: &str, msg: ServerMessage, except: Option<ParticipantId>) {
        let Some(r) = self.rooms.get(room) else { return };
        for id in &r.participants {
            if Some(*id) == except {
                continue;
            }
            let Some(p) = self.participants.get(id) else { continue };
            if p.is_room_client() {
                self.out.push_back(Output::Signal(*id, msg.clone()));
            } else if p.is_local() {
                self.out.push_back(Output::Local(*id, LocalEvent::Signal(msg.clone())));
            }
        }
    }

    // --------------------------------------------------------------- tracks

    #[allow(clippy::too_many_arguments)]
    fn new_track(
        &mut self,
        owner: ParticipantId,
        kind: TrackKind,
        source: TrackSource,
        mid: Option<Mid>,
        rids: Vec<Option<Rid>>,
        rid_names: Vec<String>,
        codec: Option<(Codec, &str, FormatParams, u32, VideoFormat)>,
    ) -> TrackKey {
        let tk = self.next_track;
        self.next_track += 1;
        let p = &self.participants[&owner];
        let room = p.room.clone();
        let n = self.rooms.get_mut(&room).map(|r| {
            r.next_track_no += 1;
            r.next_track_no - 1
        });
        let id: Arc<str> = Arc::from(format!("{}/{}", p.identity, n.unwrap_or(tk)).as_str());
        let (codec, codec_name, format, clock_rate, video_format) = match codec {
            Some((c, name, f, clock, vf)) => (Some(c), Arc::from(name), f, clock, vf),
            None => (
                None,
                Arc::from(""),
                FormatParams::default(),
                if kind == TrackKind::Audio { 48_000 } else { 90_000 },
                VideoFormat::Other,
            ),
        };
        let layers = rids
            .into_iter()
            .map(|rid| Layer {
                rid,
                ssrc: None,
                generation: 0,
                meter: RateMeter::default(),
                kf_throttle: Throttle::default(),
                seq: SeqExtender::default(),
            })
            .collect();
        let t = Track {
            id,
            room: room.clone(),
            owner,
            owner_identity: p.identity.clone(),
            kind,
            source,
            codec,
            codec_name,
            format,
            clock_rate,
            video_format,
            last_pt: None,
            mid,
            layers,
            rids: rid_names,
            muted: false,
            admin_muted: false,
            subscribers: Vec::new(),
            level_sum: 0.0,
            level_n: 0,
            fwd_packets: 0,
            fwd_bytes: 0,
        };
        self.tracks.insert(tk, t);
        if let Some(p) = self.participants.get_mut(&owner) {
            p.published.push(tk);
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.tracks.push(tk);
        }
        tk
    }

    /// Announce a new track and subscribe whoever wants it.
    fn publish_track(&mut self, now: Instant, tk: TrackKey) {
        let Some(info) = self.track_info(tk) else { return };
        let t = &self.tracks[&tk];
        let room = t.room.clone();
        let owner = t.owner;
        let owner_identity = t.owner_identity.clone();
        let kind = t.kind;
        self.out.push_back(Output::Room(RoomEvent::TrackPublished {
            room: room.to_string(),
            track: info.clone(),
        }));
        self.broadcast(&room, ServerMessage::TrackPublished { track: info }, None);
        let members: Vec<ParticipantId> =
            self.rooms.get(&room).map(|r| r.participants.clone()).unwrap_or_default();
        for sid in members {
            if sid == owner {
                continue;
            }
            let Some(s) = self.participants.get_mut(&sid) else { continue };
            match &s.kind {
                Kind::Remote { role: PeerRole::Room { auto_subscribe: true } } if s.grants.subscribe => {
                    self.subscribe(now, sid, tk, None);
                }
                Kind::Remote { role: PeerRole::Whep { target } } => {
                    // bind idle WHEP down-tracks following this identity (or anyone, for the speaker view)
                    let follows = match target {
                        Some(t) => **t == *owner_identity,
                        None => true,
                    };
                    if !follows {
                        continue;
                    }
                    let speaker = self.rooms.get(&room).and_then(|r| r.active_speaker);
                    let idx = s.downtracks.iter().position(|d| {
                        d.kind == kind
                            && d.source.is_none()
                            && match d.bind {
                                Bind::Identity => d.follow.as_deref() == Some(&*owner_identity),
                                Bind::Speaker => speaker.is_none() || speaker == Some(owner),
                                Bind::Track => false,
                            }
                    });
                    if let Some(i) = idx {
                        self.bind_downtrack(now, sid, i, Some(tk));
                    }
                }
                Kind::Local { subscribe } => {
                    let want = match subscribe {
                        LocalSubscription::None => false,
                        LocalSubscription::AllAudio => kind == TrackKind::Audio,
                        LocalSubscription::All => true,
                    };
                    if want {
                        self.subscribe(now, sid, tk, None);
                    }
                }
                _ => {}
            }
        }
    }

    fn unpublish_track(&mut self, now: Instant, tk: TrackKey) {
        let Some(t) = self.tracks.remove(&tk) else { return };
        if let Some(r) = self.rooms.get_mut(&t.room) {
            r.tracks.retain(|x| *x != tk);
            r.forwarded_packets += t.fwd_packets;
            r.forwarded_bytes += t.fwd_bytes;
        }
        if let Some(p) = self.participants.get_mut(&t.owner) {
            p.published.retain(|x| *x != tk);
            p.rx.retain(|e| e.1 != tk);
        }
        for sid in &t.subscribers {
            let Some(s) = self.participants.get_mut(sid) else { continue };
            let Some(i) = s.downtracks.iter().position(|d| d.source == Some(tk)) else { continue };
            match s.downtracks[i].bind {
                Bind::Track => {
                    let d = s.downtracks.remove(i);
                    if s.is_room_client() {
                        s.neg.park(d);
                        self.out.push_back(Output::Signal(
                            *sid,
                            ServerMessage::Unsubscribed { track: t.id.to_string() },
                        ));
                    }
                }
                Bind::Identity | Bind::Speaker => {
                    let d = &mut s.downtracks[i];
                    d.source = None;
                    d.pt = None;
                    d.selector.reset();
                    d.policy.reset();
                    d.last_layer_sent = None;
                    d.rewriter.detach();
                }
            }
        }
        let subs = t.subscribers.clone();
        for sid in subs {
            self.maybe_offer(now, sid);
        }
        self.out.push_back(Output::Room(RoomEvent::TrackUnpublished {
            room: t.room.to_string(),
            track: t.id.to_string(),
        }));
        self.broadcast(&t.room, ServerMessage::TrackUnpublished { track: t.id.to_string() }, Some(t.owner));
        // a speaker-following viewer may now bind to another track of the speaker
        self.rebind_speaker_views(now, &t.room);
    }

    // ------------------------------------------------------------- queries

    /// Snapshots of every room.
    pub fn rooms(&self) -> Vec<RoomSnapshot> {
        let mut v: Vec<RoomSnapshot> = self
            .rooms
            .values()
            .map(|r| RoomSnapshot {
                name: r.name.to_string(),
                participants: r
                    .participants
                    .iter()
                    .filter(|x| {
                        self.participants
                            .get(x)
                            .is_some_and(|o| !matches!(o.role(), Some(PeerRole::Whep { .. })))
                    })
                    .filter_map(|x| self.participant_info(*x))
                    .collect(),
                active_speaker: r
                    .active_speaker
                    .and_then(|s| self.participants.get(&s))
                    .map(|s| s.identity.to_string()),
                opened_at: self.wall(r.opened_at),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Traffic counters.
    pub fn stats(&self) -> SfuStats {
        SfuStats {
            rooms: self.rooms.len(),
            participants: self.participants.len(),
            forwarded_packets: self.counters.forwarded_packets,
            forwarded_bytes: self.counters.forwarded_bytes,
            dropped_packets: self.counters.dropped_packets
                + self.counters.garbage
                + self.counters.unknown_peer
                + self.counters.send_queue_full,
        }
    }

    /// Whether a participant's transport is connected (ICE + DTLS).
    pub fn is_connected(&self, id: ParticipantId) -> bool {
        self.participants.get(&id).is_some_and(|p| p.connected)
    }

    /// A room-protocol client was dropped because its signaling queue was full.
    pub fn count_drop_signaling_backlog(&self) {
        if let Some(m) = &self.metrics {
            m.dropped_signaling_backlog.inc();
        }
    }

    fn count_drop(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.dropped.with_label_values(&[reason]).inc();
        }
    }

    // -------------------------------------------------------- drain/process

    /// Drain one `Rtc` until `Timeout` (str0m's invariant). Transmits go out,
    /// events are queued for [`Engine::process`].
    fn drain(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.get_mut(&id) else { return };
        drain_rtc(p, &mut self.out, &mut self.work, &mut self.deadlines);
        if p.failed && !self.to_remove.iter().any(|x| x.0 == id) {
            self.to_remove.push((id, LeaveReason::ConnectionLost));
        }
    }

    /// One timeout and one drain for every `Rtc` packets were written to
    /// since it was last drained: str0m's pacer hands out what `write_rtp`
    /// queued on a timeout, and a drain after every write (as before) found
    /// nothing to send but recomputed every timeout of the peer each time.
    fn flush_touched(&mut self) {
        let now = self.touched_at;
        while !self.touched.is_empty() {
            let mut ids = std::mem::take(&mut self.touched);
            for &id in &ids {
                let Some(p) = self.participants.get_mut(&id) else { continue };
                p.touched = false;
                let Some(rtc) = p.rtc.as_mut() else { continue };
                if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(participant = id, error = %e, "timeout refused");
                }
                self.drain(id);
            }
            ids.clear();
            // events found while draining may forward more (and touch more)
            self.process(now);
            // keep the list's allocation, with whatever the events touched
            ids.append(&mut self.touched);
            self.touched = ids;
        }
    }

    /// Handle queued events until none is left.
    fn process(&mut self, now: Instant) {
        loop {
            while let Some((id, ev)) = self.work.pop_front() {
                self.handle_event(now, id, ev);
            }
            if self.to_remove.is_empty() {
                break;
            }
            for (id, reason) in std::mem::take(&mut self.to_remove) {
                self.remove_participant(now, id, reason);
            }
        }
    }

    fn handle_event(&mut self, now: Instant, id: ParticipantId, ev: Event) {
        match ev {
            Event::RtpPacket(pkt) => self.on_rtp(now, id, pkt),
            Event::Connected => {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.connected = true;
                    p.disconnected_at = None;
                }
                self.request_keyframes_for_subscriber(now, id);
            }
            Event::IceConnectionStateChange(s) => {
                use str0m::IceConnectionState as S;
                if let Some(p) = self.participants.get_mut(&id) {
                    match s {
                        S::Disconnected if p.disconnected_at.is_none() => {
                            p.disconnected_at = Some(now);
                        }
                        S::Connected | S::Completed => p.disconnected_at = None,
                        _ => {}
                    }
                }
                if s == S::Disconnected {
                    self.quality_lost(now, id);
                }
            }
            Event::MediaAdded(m) => self.on_media_added(now, id, m),
            Event::KeyframeRequest(r) => self.on_subscriber_keyframe_request(now, id, r.mid),
            Event::EgressBitrateEstimate(b) => {
                let est = match b {
                    str0m::bwe::BweKind::Twcc { estimate, .. } => Some(estimate),
                    str0m::bwe::BweKind::Remb { estimate, .. } => Some(estimate),
                    _ => None,
                };
                if let (Some(e), Some(p)) = (est, self.participants.get_mut(&id)) {
                    p.link.on_estimate(e.as_u64());
                }
            }
            Event::ChannelOpen(ch, label) => {
                if label == "chat"
                    && let Some(p) = self.participants.get_mut(&id)
                {
                    p.chat = Some(ch);
                }
            }
            Event::ChannelData(d) => self.on_chat(now, id, d),
            Event::ChannelClose(ch) => {
                if let Some(p) = self.participants.get_mut(&id)
                    && p.chat == Some(ch)
                {
                    p.chat = None;
                }
            }
            Event::MediaEgressStats(s) => self.on_egress_stats(id, s),
            Event::MediaIngressStats(s) => self.on_ingress_stats(id, s),
            Event::PeerStats(s) => self.on_peer_stats(now, id, s),
            Event::Closed if !self.to_remove.iter().any(|x| x.0 == id) => {
                self.to_remove.push((id, LeaveReason::ConnectionLost));
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------ tick

    fn tick(&mut self, now: Instant) {
        // dead or never-connected peers
        for p in self.participants.values() {
            if p.rtc.is_none() {
                continue;
            }
            let never = !p.connected && now.saturating_duration_since(p.joined_at) > CONNECT_TIMEOUT;
            let lost = p.disconnected_at.is_some_and(|t| now.saturating_duration_since(t) > DISCONNECT_GRACE);
            let dead = p.rtc.as_ref().is_some_and(|r| !r.is_alive());
            if (never || lost || dead) && !self.to_remove.iter().any(|x| x.0 == p.id) {
                self.to_remove.push((p.id, LeaveReason::ConnectionLost));
            }
        }
        // layer meters; what the hot path accumulated per track goes to its room
        for t in self.tracks.values_mut() {
            for l in t.layers.iter_mut() {
                l.meter.roll(now);
            }
            if let Some(r) = self.rooms.get_mut(&t.room) {
                r.forwarded_packets += std::mem::take(&mut t.fwd_packets);
                r.forwarded_bytes += std::mem::take(&mut t.fwd_bytes);
                if t.level_n > 0 {
                    r.speaker.observe_sum(t.owner, t.level_sum, t.level_n);
                }
            }
            t.level_sum = 0.0;
            t.level_n = 0;
        }
        // speakers
        let rooms: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        for r in &rooms {
            let change = self.rooms.get_mut(r).and_then(|room| room.speaker.tick());
            if let Some(change) = change {
                if let Some(room) = self.rooms.get_mut(r) {
                    room.active_speaker = change;
                }
                self.speaker_changed(now, r, change);
            }
        }
        self.allocate(now);
        self.publisher_limits(now);
        self.pending_keyframes(now);
        self.flush_metrics(now);
    }

    fn flush_metrics(&mut self, now: Instant) {
        let c = &mut self.counters;
        if c.send_queue_full > c.send_queue_full_flushed {
            if let Some(m) = &self.metrics {
                m.dropped_send_queue_full.inc_by(c.send_queue_full - c.send_queue_full_flushed);
            }
            c.send_queue_full_flushed = c.send_queue_full;
            let (at, logged) = c.send_queue_full_logged.unwrap_or((self.start, 0));
            if c.send_queue_full_logged.is_none() || now.saturating_duration_since(at) >= SEND_QUEUE_LOG_EVERY
            {
                tracing::warn!(
                    dropped = c.send_queue_full - logged,
                    total = c.send_queue_full,
                    max_packets = forward::SEND_QUEUE_MAX_PACKETS,
                    "subscriber send queues full: packets dropped instead of queued"
                );
                c.send_queue_full_logged = Some((now, c.send_queue_full));
            }
        }
        for r in self.rooms.values_mut() {
            if let Some(m) = &r.metrics {
                m.forwarded_packets.inc_by(r.forwarded_packets - r.flushed_packets);
                m.forwarded_bytes.inc_by(r.forwarded_bytes - r.flushed_bytes);
            }
            r.flushed_packets = r.forwarded_packets;
            r.flushed_bytes = r.forwarded_bytes;
        }
    }

    fn flush_room_metrics_of(&self, _room: &Room) {}
}

/// Is `at` the live deadline of `id`'s `Rtc`?
#[inline]
fn is_live(participants: &IdMap<Participant>, id: ParticipantId, at: Instant) -> bool {
    participants.get(&id).is_some_and(|p| p.armed && p.timeout == at && p.rtc.is_some())
}

/// `p`'s `Rtc` wants its next timeout at `t`.
#[inline]
fn set_timeout(p: &mut Participant, t: Instant, deadlines: &mut deadlines::Deadlines) {
    if !p.armed || p.timeout != t {
        deadlines.schedule(p.id, t);
        p.armed = true;
    }
    p.timeout = t;
}

/// Drain one `Rtc` until `Timeout`.
fn drain_rtc(
    p: &mut Participant,
    out: &mut VecDeque<Output>,
    work: &mut VecDeque<(ParticipantId, Event)>,
    deadlines: &mut deadlines::Deadlines,
) {
    let Some(rtc) = p.rtc.as_mut() else { return };
    loop {
        match rtc.poll_output() {
            Ok(str0m::Output::Timeout(t)) => {
                set_timeout(p, t, deadlines);
                break;
            }
            Ok(str0m::Output::Transmit(t)) => out.push_back(Output::Transmit(t)),
            Ok(str0m::Output::Event(e)) => work.push_back((p.id, e)),
            Err(e) => {
                tracing::info!(participant = p.id, error = %e, "peer failed");
                p.failed = true;
                let t = p.timeout.max(p.joined_at) + Duration::from_secs(3600);
                set_timeout(p, t, deadlines);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
