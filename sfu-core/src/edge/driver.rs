//! The driver: one thread, a current-thread tokio runtime, owning the UDP
//! socket, the ICE-TCP listener and the [`Engine`]. It `select!`s over socket
//! readiness, requests from the [`crate::Sfu`] handle and the engine's next
//! deadline, and after every input drains the engine's outputs.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::Rfc4571;
use super::udp::{RecvBatch, SendBatch, recv_batch, send_batch};
use crate::engine::{Engine, Joined, Output, ParticipantId, RemoteJoin};
use crate::error::SfuError;
use crate::local::{LocalEvent, LocalJoin, LocalPacket};
use crate::protocol::{ClientMessage, ServerMessage, TrackKind};
use crate::server::{LeaveReason, RoomEvent, RoomSnapshot, SfuStats};

/// Requests from the handle to the driver.
pub(crate) enum Request {
    Join {
        join: RemoteJoin,
        signals: Option<mpsc::Sender<ServerMessage>>,
        reply: oneshot::Sender<Result<Joined, SfuError>>,
    },
    JoinLocal {
        join: LocalJoin,
        events: mpsc::Sender<LocalEvent>,
        reply: oneshot::Sender<Result<ParticipantId, SfuError>>,
    },
    Client(ParticipantId, ClientMessage),
    Patch {
        resource: String,
        room: String,
        frag: String,
        reply: oneshot::Sender<Result<Option<String>, SfuError>>,
    },
    LeaveResource {
        resource: String,
        room: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave(ParticipantId, LeaveReason),
    LocalPacket(ParticipantId, LocalPacket),
    LocalMute {
        id: ParticipantId,
        track: usize,
        muted: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Rooms(oneshot::Sender<Vec<RoomSnapshot>>),
    Stats(oneshot::Sender<SfuStats>),
    Kick {
        room: String,
        identity: String,
        reason: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Mute {
        room: String,
        identity: String,
        kind: TrackKind,
        muted: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    SetRecording {
        room: String,
        recording: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Shutdown(oneshot::Sender<()>),
}

enum TcpEvent {
    Opened { peer: SocketAddr, writer: mpsc::Sender<Vec<u8>>, written: tokio::task::JoinHandle<()> },
    Packet { peer: SocketAddr, local: SocketAddr, data: Vec<u8> },
    Closed { peer: SocketAddr },
}

pub(crate) struct DriverParts {
    pub engine: Engine,
    pub udp: std::net::UdpSocket,
    pub tcp: Option<std::net::TcpListener>,
    /// Destination address the engine sees for a datagram that arrived on `ip`
    /// (maps interface IPs to `announce_ips` behind a 1:1 NAT).
    pub dest_map: Vec<(IpAddr, IpAddr)>,
    pub requests: mpsc::Receiver<Request>,
    pub control: mpsc::UnboundedReceiver<Request>,
    pub events: broadcast::Sender<RoomEvent>,
}

/// At shutdown, how long ICE-TCP writers may take to send what is queued.
const TCP_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// At most this many local addresses are remembered for replies.
const MAX_LOCAL_IPS: usize = 32;

/// The local address a datagram from the engine's address `source` leaves
/// from: the interface address behind an announced one (when only one is),
/// and only one datagrams arrived on. `None`: the kernel chooses.
fn send_from(dest_map: &[(IpAddr, IpAddr)], local_ips: &[IpAddr], source: IpAddr) -> Option<IpAddr> {
    let mut behind = dest_map.iter().filter(|(_, announced)| *announced == source).map(|(iface, _)| *iface);
    let ip = match (behind.next(), behind.next()) {
        (None, _) => source,
        (Some(iface), None) => iface,
        (Some(_), Some(_)) => return None, // several interfaces behind one address: ambiguous
    };
    local_ips.contains(&ip).then_some(ip)
}

pub(crate) fn run(parts: DriverParts) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(drive(parts))
}

#[derive(Default)]
struct Sinks {
    signals: HashMap<ParticipantId, mpsc::Sender<ServerMessage>>,
    locals: HashMap<ParticipantId, mpsc::Sender<LocalEvent>>,
}

async fn drive(parts: DriverParts) -> io::Result<()> {
    let DriverParts { mut engine, udp, tcp, dest_map, mut requests, mut control, events } = parts;
    udp.set_nonblocking(true)?;
    let udp = UdpSocket::from_std(udp)?;
    let udp_local = udp.local_addr()?;
    let fd = udp.as_raw_fd();
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(1024);
    if let Some(l) = tcp {
        l.set_nonblocking(true)?;
        let l = TcpListener::from_std(l)?;
        tokio::spawn(accept_loop(l, tcp_tx.clone()));
    }
    let mut tcp_writers: HashMap<SocketAddr, (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut sinks = Sinks::default();
    let mut batch = RecvBatch::default();
    let mut send_bufs = SendBatch::default();
    let mut out_udp: Vec<(SocketAddr, Option<IpAddr>, Vec<u8>)> = Vec::with_capacity(256);
    // Replies leave from the address the peer's datagrams arrived on (the
    // socket is on the wildcard address; IP_PKTINFO on send). Only addresses
    // seen as a datagram's destination are used: those are surely this host's.
    let wildcard = udp_local.ip().is_unspecified();
    let mut local_ips: Vec<IpAddr> = Vec::new();
    let mut shutdown_reply: Option<oneshot::Sender<()>> = None;
    let mut timeout_last_turn = false;

    loop {
        // 1. drain the engine
        let deadline = loop {
            match engine.poll_output() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => match t.proto {
                    Protocol::Udp => {
                        let from =
                            if wildcard { send_from(&dest_map, &local_ips, t.source.ip()) } else { None };
                        out_udp.push((t.destination, from, t.contents.into()));
                    }
                    Protocol::Tcp => {
                        if let (Some((w, _)), Some(f)) =
                            (tcp_writers.get(&t.destination), Rfc4571::frame(&t.contents))
                        {
                            let _ = w.try_send(f);
                        }
                    }
                    _ => {}
                },
                Output::Signal(id, msg) => {
                    if let Some(s) = sinks.signals.get(&id)
                        && s.try_send(msg).is_err()
                    {
                        // a client that does not read its socket is dropped, the room goes on
                        tracing::info!(participant = id, "signaling backlog full: dropping client");
                        engine.count_drop_signaling_backlog();
                        sinks.signals.remove(&id);
                        engine.leave(Instant::now(), id, LeaveReason::ConnectionLost);
                    }
                }
                Output::Local(id, ev) => {
                    if let Some(s) = sinks.locals.get(&id) {
                        let _ = s.try_send(ev);
                    }
                }
                Output::Room(ev) => {
                    let _ = events.send(ev);
                }
                Output::Gone(id, _) => {
                    sinks.signals.remove(&id);
                    sinks.locals.remove(&id);
                }
            }
        };
        // 2. send what was produced, batched
        if !out_udp.is_empty() {
            let items = &out_udp[..];
            let mut off = 0;
            while off < items.len() {
                match send_batch(fd, &mut send_bufs, &items[off..]) {
                    Ok(n) if n > 0 => off += n,
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if udp.writable().await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "udp send failed");
                        off += 1; // skip the offending datagram (unreachable address etc.)
                    }
                }
            }
            out_udp.clear();
        }
        if let Some(r) = shutdown_reply.take() {
            // ICE-TCP peers get their goodbyes (RTCP BYE, DTLS close_notify)
            // too: let each writer finish what is queued, briefly
            let written: Vec<_> = tcp_writers.drain().map(|(_, (_, done))| done).collect();
            let _ = tokio::time::timeout(TCP_FLUSH, async {
                for w in written {
                    let _ = w.await;
                }
            })
            .await;
            let _ = r.send(());
            return Ok(());
        }
        // 3. a deadline already due goes first. In the select below the timer is
        // the last branch, and a saturated SFU finds its socket readable every
        // time round: str0m then only sends what `write_rtp` queued when a
        // timeout reaches it, so its send queues grew to seconds of media (the
        // bench's rooms of 24/32). Every other turn at most, so input is never
        // starved either.
        let now = Instant::now();
        if deadline <= now && !timeout_last_turn {
            timeout_last_turn = true;
            engine.handle_timeout(now);
            continue;
        }
        timeout_last_turn = false;
        // 4. wait for the next input
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            biased;
            r = control.recv() => if let Some(req) = r { handle(&mut engine, &mut sinks, req, &mut shutdown_reply) },
            r = udp.readable() => {
                if r.is_ok() {
                    for _ in 0..8 {
                        match udp.try_io(tokio::io::Interest::READABLE, || recv_batch(fd, &mut batch)) {
                            Ok(_) => {
                                let now = Instant::now();
                                for (m, data) in batch.iter() {
                                    if m.truncated || m.len == 0 {
                                        continue;
                                    }
                                    if let Some(ip) = m.dest_ip
                                        && !local_ips.contains(&ip)
                                        && local_ips.len() < MAX_LOCAL_IPS
                                    {
                                        local_ips.push(ip);
                                    }
                                    let dest_ip = m.dest_ip.unwrap_or(udp_local.ip());
                                    let dest_ip = dest_map.iter().find(|(a, _)| *a == dest_ip).map(|x| x.1).unwrap_or(dest_ip);
                                    let dest = SocketAddr::new(dest_ip, udp_local.port());
                                    engine.handle_receive(now, Protocol::Udp, m.source, dest, data);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => { tracing::debug!(error = %e, "udp receive failed"); break; }
                        }
                    }
                }
            }
            r = tcp_rx.recv() => match r {
                Some(TcpEvent::Opened { peer, writer, written }) => { tcp_writers.insert(peer, (writer, written)); }
                Some(TcpEvent::Packet { peer, local, data }) => {
                    let local = dest_map.iter().find(|(a, _)| *a == local.ip()).map(|x| SocketAddr::new(x.1, local.port())).unwrap_or(local);
                    engine.handle_receive(Instant::now(), Protocol::Tcp, peer, local, &data);
                }
                Some(TcpEvent::Closed { peer }) => { tcp_writers.remove(&peer); }
                None => {}
            },
            r = requests.recv() => match r {
                Some(req) => handle(&mut engine, &mut sinks, req, &mut shutdown_reply),
                None => {
                    // every handle is gone: stop
                    engine.shutdown(Instant::now());
                    let (tx, _rx) = oneshot::channel();
                    shutdown_reply = Some(tx);
                }
            },
            _ = sleep => engine.handle_timeout(Instant::now()),
        }
    }
}

fn handle(engine: &mut Engine, sinks: &mut Sinks, req: Request, shutdown: &mut Option<oneshot::Sender<()>>) {
    let now = Instant::now();
    match req {
        Request::Join { join, signals, reply } => {
            // the sink must exist before the engine's first output for this peer
            let r = engine.join(now, join);
            if let (Ok(j), Some(s)) = (&r, signals) {
                sinks.signals.insert(j.id, s);
            }
            let _ = reply.send(r);
        }
        Request::JoinLocal { join, events, reply } => {
            let r = engine.join_local(now, join);
            if let Ok(id) = &r {
                sinks.locals.insert(*id, events);
            }
            let _ = reply.send(r);
        }
        Request::Client(id, msg) => engine.client_message(now, id, msg),
        Request::Patch { resource, room, frag, reply } => {
            let r = match engine.participant_by_resource(&resource) {
                Some(id) if engine.participant_identity(id).map(|x| x.0) == Some(room.as_str()) => {
                    engine.patch(now, id, &frag)
                }
                _ => Err(SfuError::NoSuchParticipant { room, identity: resource }),
            };
            let _ = reply.send(r);
        }
        Request::LeaveResource { resource, room, reply } => {
            let r = match engine.participant_by_resource(&resource) {
                Some(id) if engine.participant_identity(id).map(|x| x.0) == Some(room.as_str()) => {
                    engine.leave(now, id, LeaveReason::Left);
                    Ok(())
                }
                _ => Err(SfuError::NoSuchParticipant { room, identity: resource }),
            };
            let _ = reply.send(r);
        }
        Request::Leave(id, reason) => engine.leave(now, id, reason),
        Request::LocalPacket(id, p) => engine.local_packet(now, id, p),
        Request::LocalMute { id, track, muted, reply } => {
            let _ = reply.send(engine.set_local_muted(now, id, track, muted));
        }
        Request::Rooms(r) => {
            let _ = r.send(engine.rooms());
        }
        Request::Stats(r) => {
            let _ = r.send(engine.stats());
        }
        Request::Kick { room, identity, reason, reply } => {
            let _ = reply.send(engine.kick(now, &room, &identity, &reason));
        }
        Request::Mute { room, identity, kind, muted, reply } => {
            let _ = reply.send(engine.admin_mute(now, &room, &identity, kind, muted));
        }
        Request::SetRecording { room, recording, reply } => {
            let _ = reply.send(engine.set_recording(&room, recording));
        }
        Request::Shutdown(reply) => {
            engine.shutdown(now);
            *shutdown = Some(reply);
        }
    }
}

async fn accept_loop(l: TcpListener, tx: mpsc::Sender<TcpEvent>) {
    loop {
        let Ok((stream, peer)) = l.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(256);
        let (mut r, mut w) = stream.into_split();
        // writes until every sender is gone and the queue is empty
        let writer = tokio::spawn(async move {
            while let Some(f) = wrx.recv().await {
                if w.write_all(&f).await.is_err() {
                    break;
                }
            }
        });
        let abort = writer.abort_handle();
        if tx.send(TcpEvent::Opened { peer, writer: wtx, written: writer }).await.is_err() {
            abort.abort();
            return;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut framer = Rfc4571::default();
            let mut buf = vec![0u8; 4096];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        framer.push(&buf[..n]);
                        while let Some(data) = framer.next_packet() {
                            if tx.send(TcpEvent::Packet { peer, local, data }).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            abort.abort();
            let _ = tx.send(TcpEvent::Closed { peer }).await;
        });
    }
}

/// Build the engine's view of the sockets.
pub(crate) fn engine_for(
    config: &crate::config::SfuConfig,
    udp_port: u16,
    tcp_port: Option<u16>,
) -> (Engine, Vec<(IpAddr, IpAddr)>) {
    let ips = super::advertised_ips(config);
    let candidates = super::candidates(&ips, udp_port, tcp_port);
    // 1:1 NAT: datagrams arrive on the interface address but ICE knows the announced one
    let mut dest_map = Vec::new();
    if !config.announce_ips.is_empty() {
        for ip in super::interface_ips(true) {
            if let Some(a) = config.announce_ips.iter().find(|a| a.is_ipv4() == ip.is_ipv4()) {
                dest_map.push((ip, *a));
            }
        }
    }
    let engine = Engine::new(config.clone(), candidates, Instant::now(), SystemTime::now());
    (engine, dest_map)
}

#[cfg(test)]
mod send_from_tests {
    use super::*;

    #[test]
    fn replies_leave_from_an_address_datagrams_arrived_on() {
        let lan: IpAddr = "192.168.1.10".parse().unwrap();
        let wifi: IpAddr = "10.0.0.5".parse().unwrap();
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        // no NAT: the candidate address itself, once seen
        assert_eq!(send_from(&[], &[lan, wifi], wifi), Some(wifi));
        assert_eq!(send_from(&[], &[lan], wifi), None, "never seen: the kernel chooses");
        // 1:1 NAT: the interface behind the announced address
        assert_eq!(send_from(&[(lan, public)], &[lan], public), Some(lan));
        // two interfaces behind one announced address: ambiguous
        assert_eq!(send_from(&[(lan, public), (wifi, public)], &[lan, wifi], public), None);
    }
}
