//! # sfu-core — roombox's trimmed WebRTC SFU
//!
//! A selective forwarding unit built on [`str0m`] in RTP mode, in three
//! layers: a sans-IO **engine**, the **media plane** it forwards with, and the
//! **edge** (sockets, HTTP) that drives it.
//!
//! ## The engine ([`engine::Engine`])
//!
//! Rooms, participants, tracks, subscriptions and permissions (from the JWT's
//! grants). It owns every remote participant's `str0m::Rtc` and the
//! in-process (local) participants. It is fed events with `now` passed in —
//! [`engine::Engine::handle_receive`] (a datagram with source, destination and
//! protocol), [`engine::Engine::handle_timeout`], [`engine::Engine::join`],
//! [`engine::Engine::join_local`], [`engine::Engine::client_message`] (the
//! room protocol), [`engine::Engine::local_packet`], leave/kick/mute — and
//! everything it wants done comes out of [`engine::Engine::poll_output`]:
//! transmits, signaling for one participant, local events, room events, and
//! finally the next timeout. It never reads the clock and never touches a
//! socket, so tests run it on virtual time with str0m clients over a simulated
//! lossy network (see `engine/tests.rs`).
//!
//! str0m's rule holds everywhere: after a mutation of an `Rtc`, the engine
//! drains its `poll_output` until `Timeout`; events found while draining are
//! queued and handled afterwards, so no `Rtc` is ever borrowed twice.
//!
//! Incoming datagrams are demultiplexed by remote address once known, else by
//! the local ICE ufrag in a STUN request's USERNAME. The server side is
//! **ICE-lite**: the SFU only has host candidates (UDP on one port, passive
//! TCP) and answers checks, so it needs no gathering or pacing of checks, and
//! an ICE restart is just new credentials.
//!
//! ## The media plane ([`media`])
//!
//! Split the LiveKit way: the forwarder *decides* ([`media::forwarder`]: which
//! simulcast layer each subscriber gets, from its downlink — str0m's TWCC
//! send-side estimate, its raw figure and loss read every 200 ms, and how
//! long packets wait in str0m's pacer — the *measured* layer bitrates and the
//! size it asked for, with hysteresis: down at once, straight to the lowest
//! layer on congestion; up only with a margin, after a dwell and a hold time
//! that doubles when a climb is taken back, with str0m padding the link
//! towards the next layer first; switching only on a keyframe of the target
//! layer, which is asked for at once; an urgent step down stops the current
//! layer at its frame's end and drops its retransmissions, so the picture
//! stands still briefly instead of freezing mid-GOP behind a queue), the
//! down-track *does*
//! ([`media::rewrite`]: one outgoing SSRC per subscriber and track whose
//! sequence numbers and timestamps stay continuous across layer switches,
//! publisher restarts and — for the active-speaker WHEP — speaker changes;
//! [`media::vp8`] does the same for VP8's PictureID/TL0PICIDX/KEYIDX, patched
//! by str0m while it serializes, so no payload is copied).
//! Payload types are mapped per subscriber (H.264 by packetization mode and
//! profile). Keyframes are detected in VP8, VP9, H.264 (STAP-A, FU-A) and AV1
//! payloads ([`media::keyframe`]); keyframe requests (PLI) to publishers are
//! throttled; NACK/RTX is str0m's. The active speaker comes from RFC 6464
//! audio levels, smoothed, with hysteresis ([`media::speaker`]). The hot path
//! does not allocate per forwarded packet (payloads are shared `Arc<[u8]>`)
//! and hashes no strings: it looks up tracks and participants by numeric id,
//! and what is per room (speaker levels, counters) accumulates on the track
//! until the engine's 200 ms tick.
//!
//! Every 200 ms per peer, str0m's statistics become the per-room metrics
//! (NACKs from subscribers, packets lost from publishers, RTT) and, for room
//! protocol clients, a rate-limited `connection_quality` ([`engine::stats`]).
//! A room-protocol client's server-side m-lines are reused: one that stopped
//! carrying a track goes inactive and a later subscription of the same kind
//! turns it back on, so a long meeting's SDP stays bounded.
//!
//! ## The edge ([`Sfu`], [`edge`], [`signal`])
//!
//! [`Sfu::start`] binds one UDP port for every peer (batched `recvmmsg` /
//! `sendmmsg` with `IP_PKTINFO`, see [`edge::udp`]) and, optionally, one
//! passive ICE-TCP port (RFC 4571 framing), and starts the driver thread
//! (a current-thread tokio runtime that owns the sockets and the engine and
//! `select!`s over readiness, requests and the next deadline). [`Sfu`] is the
//! cloneable handle; [`Sfu::router`] gives the signaling routes to mount:
//! WHIP, WHEP and the room protocol over WebSocket (`docs/protocol.md`).
//! [`Sfu::join_local`] adds the box's own camera and microphone without a
//! WebRTC hop.
//!
//! ## Example: two in-process participants through the engine, virtual time
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use bytes::Bytes;
//! use sfu_core::engine::{Engine, Output};
//! use sfu_core::local::*;
//! use sfu_core::protocol::{TrackKind, TrackSource};
//! use sfu_core::SfuConfig;
//!
//! let mut now = Instant::now();
//! let mut engine = Engine::new(SfuConfig::default(), vec![], now, SystemTime::now());
//!
//! // the room microphone publishes Opus...
//! let mic = engine.join_local(now, LocalJoin {
//!     room: "demo".into(), identity: "room".into(), name: None,
//!     publish: vec![LocalTrackSpec {
//!         name: "mic".into(), kind: TrackKind::Audio, source: TrackSource::RoomMicrophone,
//!         codec: LocalCodec::Opus, layers: vec![],
//!     }],
//!     subscribe: LocalSubscription::None,
//! }).unwrap();
//! // ...and a recorder subscribes to everything.
//! let rec = engine.join_local(now, LocalJoin {
//!     room: "demo".into(), identity: "recorder".into(), name: None,
//!     publish: vec![], subscribe: LocalSubscription::All,
//! }).unwrap();
//!
//! let mut received = Vec::new();
//! for n in 0..50u16 {
//!     engine.local_packet(now, mic, LocalPacket {
//!         track: 0, layer: 0, seq: 1000 + n, timestamp: u32::from(n) * 960, marker: false,
//!         keyframe: false, audio_level: Some(30), capture_time: now,
//!         payload: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
//!     });
//!     now += Duration::from_millis(20);
//!     engine.handle_timeout(now);
//!     loop {
//!         match engine.poll_output() {
//!             Output::Timeout(_) => break,
//!             Output::Local(id, LocalEvent::Rtp(p)) if id == rec => received.push(p),
//!             _ => {}
//!         }
//!     }
//! }
//! assert_eq!(received.len(), 50);
//! // one continuous outgoing sequence, whatever the publisher's numbering
//! assert!(received.windows(2).all(|w| w[1].seq == w[0].seq.wrapping_add(1)));
//! assert_eq!(&*received[0].from, "room");
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod auth;
pub mod config;
pub mod edge;
pub mod engine;
pub mod httpguard;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod local;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod signal;
pub mod standalone;

pub use auth::{Claims, Grants, KeyScope, LiveVerifier, TokenCheck, TokenVerifier};
pub use config::SfuConfig;
pub use error::SfuError;
pub use local::{LocalCodec, LocalEvent, LocalJoin, LocalPacket, LocalSubscription, LocalTrackSpec};
pub use server::LocalParticipant;
pub use server::{LeaveReason, RoomEvent, RoomSnapshot, Sfu, SfuStats};
