//! The runtime edge: the [`Sfu`] handle and the driver that owns the sockets.
//!
//! `Sfu` is a cloneable handle; requests travel over a bounded channel to one
//! driver thread that owns the UDP (and ICE-TCP) sockets and the sans-IO
//! [`crate::engine`], and `select!`s over socket readiness, requests and the
//! engine's next deadline.
//!
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::auth::TokenCheck;
use crate::config::SfuConfig;
use crate::edge::driver::{self, DriverParts, Request};
use crate::error::SfuError;
use crate::local::{LocalEvent, LocalJoin, LocalPacket};
use crate::metrics::Metrics;
use crate::protocol::{ParticipantInfo, TrackInfo, TrackKind};

/// Room lifecycle events, for the daemon's store and metrics.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// The first participant arrived: a meeting starts.
    RoomOpened {
        room: String,
        at: SystemTime,
    },
    /// The last participant left: the meeting ends.
    RoomClosed {
        room: String,
        at: SystemTime,
    },
    ParticipantJoined {
        room: String,
        identity: String,
        session: u64,
        local: bool,
        at: SystemTime,
    },
    ParticipantLeft {
        room: String,
        identity: String,
        session: u64,
        reason: LeaveReason,
        duration: Duration,
        at: SystemTime,
    },
    TrackPublished {
        room: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        room: String,
        track: String,
    },
    TrackMuted {
        room: String,
        track: String,
        muted: bool,
    },
    ActiveSpeaker {
        room: String,
        identity: Option<String>,
    },
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// Said goodbye (WS `leave`, WHIP/WHEP `DELETE`, local `leave`).
    Left,
    /// ICE/DTLS failed or timed out.
    ConnectionLost,
    Kicked,
    /// The SFU shut down.
    Shutdown,
}

/// A snapshot of one room for the REST API and the admin page.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSnapshot {
    pub name: String,
    pub participants: Vec<ParticipantInfo>,
    pub active_speaker: Option<String>,
    pub opened_at: SystemTime,
}

/// Traffic counters, for metrics and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SfuStats {
    pub rooms: usize,
    pub participants: usize,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_packets: u64,
}

/// A cloneable handle to a running SFU.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

struct Inner {
    requests: mpsc::Sender<Request>,
    control: mpsc::UnboundedSender<Request>,
    verifier: Arc<dyn TokenCheck>,
    config: Arc<SfuConfig>,
    events: broadcast::Sender<RoomEvent>,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    /// Room-protocol WebSockets still open (shutdown waits for their goodbyes).
    sessions: tokio::sync::watch::Sender<usize>,
    /// `sfu_dropped_total{reason="signaling_backlog"}`.
    signaling_backlog: prometheus::IntCounter,
}

/// Counts one open WebSocket session while it lives.
pub(crate) struct SessionGuard(tokio::sync::watch::Sender<usize>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// How long [`Sfu::shutdown`] waits for WebSocket clients to get `closing`
/// and the close frame.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// A running in-process participant. Dropping it leaves the room.
pub struct LocalParticipant {
    /// Events from the engine: keyframe requests, bitrate targets, media, signaling.
    pub events: mpsc::Receiver<LocalEvent>,
    id: u64,
    requests: mpsc::Sender<Request>,
    control: mpsc::UnboundedSender<Request>,
    left: bool,
}

impl LocalParticipant {
    /// Hand a packet to the engine. Never blocks: when the engine is behind the
    /// packet is dropped (and counted) and `false` is returned.
    pub fn send(&self, packet: LocalPacket) -> bool {
        self.requests.try_send(Request::LocalPacket(self.id, packet)).is_ok()
    }

    /// Mark one of this participant's tracks muted or unmuted (signaled to the room).
    pub async fn set_muted(&self, track: usize, muted: bool) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::LocalMute { id: self.id, track, muted, reply })
            .await
            .map_err(|_| SfuError::NotRunning)?;
        rx.await.map_err(|_| SfuError::NotRunning)?
    }

    /// The engine's session id of this participant.
    pub fn session(&self) -> u64 {
        self.id
    }

    /// Leave the room now.
    pub async fn leave(mut self) {
        self.left = true;
        let _ = self.control.send(Request::Leave(self.id, LeaveReason::Left));
    }
}

impl Drop for LocalParticipant {
    fn drop(&mut self) {
        if !self.left {
            let _ = self.control.send(Request::Leave(self.id, LeaveReason::Left));
        }
    }
}

impl Sfu {
    /// Bind the sockets, start the driver thread and return the handle.
    /// `tokens` checks every request's bearer token: a [`crate::TokenVerifier`],
    /// a [`crate::auth::LiveVerifier`] refreshed at run time, or the embedding
    /// service's own (`Arc<T>` where `T: TokenCheck`). `registry` receives the
    /// SFU's metrics.
    pub async fn start(
        config: SfuConfig,
        tokens: impl TokenCheck + 'static,
        registry: &prometheus::Registry,
    ) -> Result<Sfu, SfuError> {
        let verifier: Arc<dyn TokenCheck> = Arc::new(tokens);
        if let Err(problems) = config.validate() {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(SfuError::Config(list.join("; ")));
        }
        let metrics = Metrics::register(registry).map_err(|e| SfuError::Config(format!("metrics: {e}")))?;
        let udp = bind_udp(config.udp_bind)?;
        let udp_addr = udp.local_addr()?;
        let tcp = match config.tcp_bind {
            Some(a) => Some(std::net::TcpListener::bind(a)?),
            None => None,
        };
        let tcp_addr = match &tcp {
            Some(t) => Some(t.local_addr()?),
            None => None,
        };
        let (mut engine, dest_map) = driver::engine_for(&config, udp_addr.port(), tcp_addr.map(|a| a.port()));
        let signaling_backlog = metrics.dropped_signaling_backlog.clone();
        engine.set_metrics(metrics);
        let (requests_tx, requests) = mpsc::channel(4096);
        let (control_tx, control) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let parts = DriverParts { engine, udp, tcp, dest_map, requests, control, events: events.clone() };
        std::thread::Builder::new().name("sfu-driver".into()).spawn(move || {
            if let Err(e) = driver::run(parts) {
                tracing::error!(error = %e, "SFU driver stopped");
            }
        })?;
        tracing::info!(udp = %udp_addr, tcp = ?tcp_addr, "SFU started");
        Ok(Sfu {
            inner: Arc::new(Inner {
                requests: requests_tx,
                control: control_tx,
                verifier,
                config: Arc::new(config),
                events,
                udp_addr,
                tcp_addr,
                sessions: tokio::sync::watch::channel(0).0,
                signaling_backlog,
            }),
        })
    }

    /// A room-protocol client was dropped for not reading its socket.
    pub(crate) fn count_signaling_backlog(&self) {
        self.inner.signaling_backlog.inc();
    }

    /// A room-protocol session starts; it counts until the guard drops.
    pub(crate) fn session_guard(&self) -> SessionGuard {
        self.inner.sessions.send_modify(|n| *n += 1);
        SessionGuard(self.inner.sessions.clone())
    }

    /// The signaling routes (WHIP, WHEP, `/ws/{room}`), with CORS and body limits,
    /// to mount in an axum server.
    pub fn router(&self) -> axum::Router {
        crate::signal::router(self.clone())
    }

    /// The token check the SFU applies to every request.
    pub fn verifier(&self) -> &dyn TokenCheck {
        &*self.inner.verifier
    }

    /// The configuration the SFU runs with.
    pub fn config(&self) -> &SfuConfig {
        &self.inner.config
    }

    /// The bound UDP address (useful with port 0).
    pub fn udp_addr(&self) -> SocketAddr {
        self.inner.udp_addr
    }

    /// The bound ICE-TCP address, if enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.tcp_addr
    }

    pub(crate) async fn request<T>(
        &self,
        f: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.inner.requests.send(f(tx)).await.map_err(|_| SfuError::NotRunning)?;
        rx.await.map_err(|_| SfuError::NotRunning)
    }

    pub(crate) async fn send(&self, req: Request) -> Result<(), SfuError> {
        self.inner.requests.send(req).await.map_err(|_| SfuError::NotRunning)
    }

    pub(crate) fn send_control(&self, req: Request) {
        let _ = self.inner.control.send(req);
    }

    /// Join a room with an in-process participant (room camera, recorder, cascade).
    pub async fn join_local(&self, join: LocalJoin) -> Result<LocalParticipant, SfuError> {
        let (ev_tx, events) = mpsc::channel(1024);
        let id = self.request(|reply| Request::JoinLocal { join, events: ev_tx, reply }).await??;
        Ok(LocalParticipant {
            events,
            id,
            requests: self.inner.requests.clone(),
            control: self.inner.control.clone(),
            left: false,
        })
    }

    /// Room lifecycle events.
    pub fn events(&self) -> broadcast::Receiver<RoomEvent> {
        self.inner.events.subscribe()
    }

    pub async fn rooms(&self) -> Result<Vec<RoomSnapshot>, SfuError> {
        self.request(Request::Rooms).await
    }

    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        self.request(Request::Stats).await
    }

    /// Remove a participant; it is told why.
    pub async fn kick(&self, room: &str, identity: &str, reason: &str) -> Result<(), SfuError> {
        let (room, identity, reason) = (room.to_string(), identity.to_string(), reason.to_string());
        self.request(|reply| Request::Kick { room, identity, reason, reply }).await?
    }

    /// Server-side mute of a participant's tracks of `kind`: forwarding stops and
    /// the participant is told (`muted_by_admin`).
    pub async fn mute(
        &self,
        room: &str,
        identity: &str,
        kind: TrackKind,
        muted: bool,
    ) -> Result<(), SfuError> {
        let (room, identity) = (room.to_string(), identity.to_string());
        self.request(|reply| Request::Mute { room, identity, kind, muted, reply }).await?
    }

    /// Mark a room as being recorded (or not): every room-protocol client and
    /// local participant gets `recording`, and `joined` carries the flag for
    /// whoever joins while it is set. The flag lives as long as the room.
    pub async fn set_room_recording(&self, room: &str, recording: bool) -> Result<(), SfuError> {
        let room = room.to_string();
        self.request(|reply| Request::SetRecording { room, recording, reply }).await?
    }

    /// Tell every peer, close every connection, stop the driver. Returns once
    /// every room-protocol client was sent `closing` and a close frame (code
    /// 1001, going away) — or after [`SHUTDOWN_FLUSH`] — and WHIP/WHEP and
    /// room peers were sent RTCP BYE and a DTLS close_notify.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        self.send_control(Request::Shutdown(tx));
        let _ = rx.await;
        let mut open = self.inner.sessions.subscribe();
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, open.wait_for(|n| *n == 0)).await;
    }
}

fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, SfuError> {
    use socket2::{Domain, Socket, Type};
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, None)?;
    // room for bursts of video to many subscribers
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    let udp: std::net::UdpSocket = s.into();
    crate::edge::udp::enable_pktinfo(&udp, addr.is_ipv6())?;
    Ok(udp)
}
