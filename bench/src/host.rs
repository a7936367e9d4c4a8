//! The client driver: one thread that owns many [`Peer`]s, waits on all their
//! sockets with epoll, feeds str0m every datagram and timeout, drains
//! `poll_output` to `Timeout` after every input (str0m's rule), and writes
//! publishers' media when it is due.
//!
//! Measurement happens here: subscribers read the kernel receive timestamp of
//! each datagram ([`crate::net::recv_ts`]) and compare it with the stamp in the
//! payload, so the client's own processing delay is not counted as latency.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use str0m::net::{Protocol, Receive};
use str0m::{Input, Output};
use tokio::sync::oneshot;

use crate::net::{Epoll, Waker};
use crate::peer::{Peer, Role};

const WAKER: u64 = u64::MAX;

/// Histogram of one-way latency in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// What one peer saw in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerReport {
    pub label: String,
    pub publisher: bool,
    pub connected: bool,
    pub join: Option<Duration>,
    pub sent: u64,
    pub received: u64,
    pub received_total: u64,
    pub lost: u64,
    pub unstamped: u64,
    pub errors: u64,
    pub keyframe_requests: u64,
    /// Datagram bytes received in the window.
    pub bytes_in: u64,
    /// Chat messages sent and received over the data channel (soak publishers).
    pub chat_sent: u64,
    pub chat_received: u64,
}

/// Everything a host measured since the last reset.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub peers: Vec<PeerReport>,
    pub latency_us: Histogram<u64>,
    pub window: Duration,
}

enum Cmd {
    Add(Box<Peer>),
    Reset,
    Report(oneshot::Sender<HostReport>),
    Clear,
    Stop,
}

/// Handle to a client-driver thread.
pub struct Host {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Host {
    pub fn start(name: &str) -> anyhow::Result<Host> {
        crate::net::raise_nofile();
        let (tx, rx) = mpsc::channel();
        let waker = Arc::new(Waker::new()?);
        let w = waker.clone();
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            if let Err(e) = run(rx, w) {
                tracing::error!(error = %e, "client host stopped");
            }
        })?;
        Ok(Host { tx, waker, thread: Some(thread) })
    }

    fn send(&self, c: Cmd) {
        let _ = self.tx.send(c);
        self.waker.wake();
    }

    /// Hand over a negotiated peer.
    pub fn add(&self, peer: Peer) {
        self.send(Cmd::Add(Box::new(peer)));
    }

    /// Start a new measurement window (zero counters and the latency histogram).
    pub fn reset(&self) {
        self.send(Cmd::Reset);
    }

    /// Drop every peer (closing its socket).
    pub fn clear(&self) {
        self.send(Cmd::Clear);
    }

    pub async fn report(&self) -> anyhow::Result<HostReport> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Report(tx));
        Ok(rx.await?)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    peers: Vec<Option<Peer>>,
    latency: Histogram<u64>,
    window_start: Instant,
    next_deadline: Instant,
    buf: Vec<u8>,
}

fn run(rx: mpsc::Receiver<Cmd>, waker: Arc<Waker>) -> anyhow::Result<()> {
    let mut ep = Epoll::new()?;
    ep.add(waker.fd(), WAKER)?;
    let mut st = State {
        peers: Vec::new(),
        latency: latency_histogram(),
        window_start: Instant::now(),
        next_deadline: Instant::now() + Duration::from_millis(50),
        buf: vec![0u8; 2048],
    };
    let mut ready = Vec::with_capacity(256);
    loop {
        let now = Instant::now();
        let wait = st.next_deadline.saturating_duration_since(now).min(Duration::from_millis(50));
        ep.wait(wait, &mut ready)?;
        for &tok in &ready {
            if tok == WAKER {
                waker.drain();
                while let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        Cmd::Add(p) => {
                            let mut p = *p;
                            let idx = st.peers.iter().position(Option::is_none).unwrap_or(st.peers.len());
                            ep.add(p.sock.as_raw_fd(), idx as u64)?;
                            let now = Instant::now();
                            let _ = p.rtc.handle_input(Input::Timeout(now));
                            drain(&mut p, now, 0, &mut st.latency);
                            st.next_deadline = st.next_deadline.min(p.deadline());
                            if idx == st.peers.len() {
                                st.peers.push(Some(p));
                            } else {
                                st.peers[idx] = Some(p);
                            }
                        }
                        Cmd::Reset => {
                            st.latency.reset();
                            st.window_start = Instant::now();
                            for p in st.peers.iter_mut().flatten() {
                                p.bytes_in = 0;
                                match &mut p.role {
                                    Role::Subscriber(s) => s.reset_window(),
                                    Role::Publisher(pb) => pb.sent = 0,
                                }
                            }
                        }
                        Cmd::Report(reply) => {
                            let _ = reply.send(report(&st));
                        }
                        Cmd::Clear => {
                            for p in st.peers.drain(..).flatten() {
                                let _ = ep.remove(p.sock.as_raw_fd());
                            }
                        }
                        Cmd::Stop => return Ok(()),
                    }
                }
                continue;
            }
            let Some(Some(p)) = st.peers.get_mut(tok as usize) else { continue };
            service_socket(p, &mut st.buf, &mut st.latency);
            st.next_deadline = st.next_deadline.min(p.deadline());
        }
        let now = Instant::now();
        if now >= st.next_deadline {
            let mut next = now + Duration::from_millis(50);
            for p in st.peers.iter_mut().flatten() {
                if p.next_timeout <= now {
                    if p.rtc.handle_input(Input::Timeout(now)).is_err() {
                        p.errors += 1;
                    }
                    drain(p, now, 0, &mut st.latency);
                }
                p.send_due_media(now);
                drain(p, now, 0, &mut st.latency);
                next = next.min(p.deadline());
            }
            st.next_deadline = next;
        }
    }
}

fn service_socket(p: &mut Peer, buf: &mut [u8], latency: &mut Histogram<u64>) {
    // Bounded per wake-up so one busy socket cannot starve the others.
    for _ in 0..64 {
        let (n, from, rx_ns) = match crate::net::recv_ts(&p.sock, buf) {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(_) => {
                p.errors += 1;
                return;
            }
        };
        p.bytes_in += n as u64;
        let now = Instant::now();
        let Ok(recv) = Receive::new(Protocol::Udp, from, p.local, &buf[..n]) else {
            p.errors += 1;
            continue;
        };
        if p.rtc.handle_input(Input::Receive(now, recv)).is_err() {
            p.errors += 1;
        }
        drain(p, now, rx_ns, latency);
    }
}

/// Drain `poll_output` until `Timeout`, sending transmits and handling events.
fn drain(p: &mut Peer, now: Instant, rx_ns: u64, latency: &mut Histogram<u64>) {
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                p.next_timeout = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                if p.sock.send_to(&t.contents, t.destination).is_err() {
                    p.errors += 1;
                }
            }
            Ok(Output::Event(ev)) => p.on_event(ev, now, rx_ns, latency),
            Err(_) => {
                p.errors += 1;
                p.next_timeout = now + Duration::from_millis(10);
                return;
            }
        }
    }
}

fn report(st: &State) -> HostReport {
    let peers = st
        .peers
        .iter()
        .flatten()
        .map(|p| {
            let (publisher, sent, received, received_total, lost, unstamped, kf) = match &p.role {
                Role::Publisher(pb) => (true, pb.sent, 0, 0, 0, 0, pb.keyframe_requests),
                Role::Subscriber(s) => (false, 0, s.received, s.received_total, s.lost(), s.unstamped, 0),
            };
            PeerReport {
                label: p.label.clone(),
                publisher,
                connected: p.connected_at.is_some(),
                join: p.join_time(),
                sent,
                received,
                received_total,
                lost,
                unstamped,
                errors: p.errors,
                keyframe_requests: kf,
                bytes_in: p.bytes_in,
                chat_sent: p.chat.as_ref().map_or(0, |c| c.sent),
                chat_received: p.chat.as_ref().map_or(0, |c| c.received),
            }
        })
        .collect();
    HostReport { peers, latency_us: st.latency.clone(), window: st.window_start.elapsed() }
}
