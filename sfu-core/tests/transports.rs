//! Real sockets on loopback, beyond the WHIP/WHEP smoke test: the room
//! protocol over a real WebSocket (tokio-tungstenite client, str0m peers),
//! passive ICE-TCP (str0m clients over TCP with RFC 4571 framing), and an ICE
//! restart through WHIP `PATCH` while media keeps flowing.
//!
//! Every peer is a str0m `Rtc` driven in real time by the test on a tokio
//! socket; waits are conditions with deadlines, never fixed sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use sfu_core::auth::{Claims, Grants, sign_hs256};
use sfu_core::edge::Rfc4571;
use sfu_core::protocol::{ChatMessage, ClientMessage, PublishTrack, ServerMessage, TrackKind, TrackSource};
use sfu_core::{Sfu, SfuConfig, TokenVerifier};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &[u8] = b"transport-test-secret-transport-test";

fn token(identity: &str, room: &str, publish: bool, subscribe: bool) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let c = Claims::new(identity, room, Grants { publish, subscribe, record: false, admin: false }, now, 300);
    sign_hs256(&c, SECRET).unwrap()
}

async fn start_sfu(tcp: bool) -> (Sfu, SocketAddr) {
    let config = SfuConfig {
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        tcp_bind: tcp.then(|| "127.0.0.1:0".parse().unwrap()),
        include_loopback: true,
        ..Default::default()
    };
    let sfu = Sfu::start(config, TokenVerifier::hs256(SECRET).unwrap(), &prometheus::Registry::new())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, sfu.router()).into_future());
    (sfu, http)
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal async HTTP/1.1 client, one request per connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sfu\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    HttpResponse { status, headers, body: body.to_string() }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// How a peer reaches the SFU.
enum Net {
    Udp(UdpSocket),
    /// Active ICE-TCP: one connection to the SFU's passive port, RFC 4571 framing.
    Tcp {
        stream: TcpStream,
        framer: Rfc4571,
        server: SocketAddr,
    },
}

/// A str0m peer driven in real time, optionally with a room-protocol WebSocket.
struct Peer {
    name: &'static str,
    rtc: Rtc,
    net: Net,
    /// The address of the peer's ICE candidate (for TCP the RFC 6544 port 9 form).
    addr: SocketAddr,
    connected: bool,
    rtp: Vec<(u64, Vec<u8>)>,
    keyframe_requests: usize,
    chat: Option<ChannelId>,
    chat_in: Vec<ChatMessage>,
    /// Room protocol
    ws: Option<Ws>,
    msgs: Vec<ServerMessage>,
    own_offer: Option<(u64, SdpPendingOffer)>,
    /// Publishing VP8: (mid, pt), frame counter, next frame time, keyframe wanted
    video: Option<(Mid, str0m::media::Pt)>,
    frame: u32,
    next_frame: Instant,
    want_key: bool,
}

impl Peer {
    async fn udp(name: &'static str) -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Peer::with(name, rtc, Net::Udp(sock), addr)
    }

    async fn tcp(name: &'static str, server: SocketAddr) -> Peer {
        let stream = TcpStream::connect(server).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(
            Candidate::builder().tcp().host(addr).tcptype(TcpType::Active).build().unwrap(),
        );
        Peer::with(name, rtc, Net::Tcp { stream, framer: Rfc4571::default(), server }, addr)
    }

    fn with(name: &'static str, rtc: Rtc, net: Net, addr: SocketAddr) -> Peer {
        Peer {
            name,
            rtc,
            net,
            addr,
            connected: false,
            rtp: Vec::new(),
            keyframe_requests: 0,
            chat: None,
            chat_in: Vec::new(),
            ws: None,
            msgs: Vec::new(),
            own_offer: None,
            video: None,
            frame: 0,
            next_frame: Instant::now(),
            want_key: true,
        }
    }

    /// Start sending VP8 on `mid` once connected (30 fps, two packets a frame).
    fn publish_vp8(&mut self, mid: Mid) {
        let pt = self.rtc.codec_config().params().iter().find(|p| p.spec().codec == Codec::Vp8).unwrap().pt();
        self.video = Some((mid, pt));
    }

    fn send_media(&mut self) {
        let Some((mid, pt)) = self.video else { return };
        let now = Instant::now();
        if !self.connected || now < self.next_frame {
            return;
        }
        self.next_frame = now + Duration::from_millis(33);
        self.frame += 1;
        let key = std::mem::take(&mut self.want_key) || self.frame.is_multiple_of(90);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else { return };
        for i in 0..2u32 {
            let seq = u64::from(self.frame) * 2 + u64::from(i);
            let mut p = vec![if i == 0 { 0x10 } else { 0x00 }, if key { 0x00 } else { 0x01 }];
            p.extend_from_slice(&self.frame.to_be_bytes());
            p.resize(500, 0x5a);
            tx.write_rtp(
                RtpWrite::new(pt, seq.into(), self.frame * 3000, now, p).marker(i == 1).nackable(true),
            );
        }
    }

    async fn transmit(&mut self, proto: Protocol, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        match &mut self.net {
            Net::Udp(s)
                if proto == Protocol::Udp
                // after an ICE restart onto a new socket, the old candidate's sends go nowhere
                && source == s.local_addr().unwrap() =>
            {
                let _ = s.send_to(data, destination).await;
            }
            Net::Tcp { stream, server, .. } if proto == Protocol::Tcp && destination == *server => {
                let _ = stream.write_all(&Rfc4571::frame(data).unwrap()).await;
            }
            _ => {}
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::KeyframeRequest(_) => {
                self.keyframe_requests += 1;
                self.want_key = true;
            }
            Event::RtpPacket(p) => self.rtp.push((*p.seq_no, p.payload.to_vec())),
            Event::ChannelOpen(id, label) if label == "chat" => self.chat = Some(id),
            Event::ChannelData(d) if Some(d.id) == self.chat => {
                self.chat_in
                    .push(serde_json::from_slice(&d.data).expect("the server relays valid chat JSON"));
            }
            _ => {}
        }
    }

    async fn send_ws(&mut self, m: &ClientMessage) {
        let text = serde_json::to_string(m).unwrap();
        self.ws.as_mut().unwrap().send(Message::Text(text.into())).await.unwrap();
    }

    /// A room-protocol server message: negotiation as an impolite peer, the rest recorded.
    async fn on_server(&mut self, m: ServerMessage) {
        match &m {
            ServerMessage::Offer { sdp, seq }
                // impolite: while our own offer is out, a crossing server offer is ignored
                if self.own_offer.is_none() => {
                    let answer = self.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(sdp).unwrap()).unwrap();
                    let seq = *seq;
                    self.send_ws(&ClientMessage::Answer { sdp: answer.to_sdp_string(), seq }).await;
                }
            ServerMessage::Answer { sdp, seq }
                if self.own_offer.as_ref().is_some_and(|o| o.0 == *seq) => {
                    let (_, pending) = self.own_offer.take().unwrap();
                    self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(sdp).unwrap()).unwrap();
                }
            _ => {}
        }
        self.msgs.push(m);
    }

    /// str0m's rule: after every input, poll until `Timeout`.
    async fn drain(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let contents = t.contents.to_vec();
                    self.transmit(t.proto, t.source, t.destination, &contents).await;
                }
                Output::Event(e) => self.on_event(e),
            }
        }
    }

    /// Drain str0m, send media, then wait at most `max` for one input.
    async fn pump(&mut self, max: Duration) {
        self.send_media();
        let timeout = self.drain().await;
        let until = timeout.min(Instant::now() + max).max(Instant::now());
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(until));
        let mut buf = vec![0u8; 4096];
        let ws_ref = self.ws.as_mut();
        let ws = async move {
            match ws_ref {
                Some(ws) => ws.next().await,
                None => std::future::pending().await,
            }
        };
        enum In {
            Udp(usize, SocketAddr),
            Tcp(usize),
            Ws(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
            Timeout,
        }
        let input = match &mut self.net {
            Net::Udp(s) => tokio::select! {
                r = s.recv_from(&mut buf) => r.map(|(n, from)| In::Udp(n, from)).unwrap_or(In::Timeout),
                m = ws => In::Ws(m),
                _ = sleep => In::Timeout,
            },
            Net::Tcp { stream, .. } => tokio::select! {
                r = stream.read(&mut buf) => r.map(In::Tcp).unwrap_or(In::Timeout),
                m = ws => In::Ws(m),
                _ = sleep => In::Timeout,
            },
        };
        let now = Instant::now();
        match input {
            In::Udp(n, from) => {
                let local = match &self.net {
                    Net::Udp(s) => s.local_addr().unwrap(),
                    Net::Tcp { .. } => unreachable!(),
                };
                if let Ok(r) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                    self.rtc.handle_input(Input::Receive(now, r)).unwrap();
                }
            }
            In::Tcp(n) => {
                let Net::Tcp { framer, server, .. } = &mut self.net else { unreachable!() };
                assert!(n > 0, "{}: the SFU closed the ICE-TCP connection", self.name);
                framer.push(&buf[..n]);
                let server = *server;
                let mut pkts = Vec::new();
                while let Some(pkt) = framer.next_packet() {
                    pkts.push(pkt);
                }
                for pkt in pkts {
                    if let Ok(r) = Receive::new(Protocol::Tcp, server, self.addr, &pkt) {
                        self.rtc.handle_input(Input::Receive(now, r)).unwrap();
                        self.drain().await;
                    }
                }
            }
            In::Ws(Some(Ok(Message::Text(t)))) => {
                let m: ServerMessage = serde_json::from_str(t.as_str()).unwrap();
                self.on_server(m).await;
            }
            In::Ws(_) => {}
            In::Timeout => self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap(),
        }
    }
}

/// Pump every peer round-robin until `cond` holds or `max` passes.
async fn run_until(
    peers: &mut [&mut Peer],
    max: Duration,
    mut cond: impl FnMut(&[&mut Peer]) -> bool,
) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        if cond(peers) {
            return true;
        }
        for p in peers.iter_mut() {
            p.pump(Duration::from_millis(2)).await;
        }
    }
    cond(peers)
}

/// WHIP (`whep` = None) or WHEP POST of the peer's offer; returns the resource
/// URL and the SDP answer, applied.
async fn http_join(
    p: &mut Peer,
    http_addr: SocketAddr,
    path: &str,
    tok: &str,
    media: &[(MediaKind, Direction)],
) -> (String, String) {
    let mut api = p.rtc.sdp_api();
    let mids: Vec<Mid> = media.iter().map(|(k, d)| api.add_media(*k, *d, None, None, None)).collect();
    let (offer, pending) = api.apply().unwrap();
    let auth = format!("Bearer {tok}");
    let r = http(
        http_addr,
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", "application/sdp")],
        &offer.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{path}: {}", r.body);
    p.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&r.body).unwrap()).unwrap();
    if media[0].1 == Direction::SendOnly {
        p.publish_vp8(mids[0]);
    }
    (r.header("location").unwrap().to_string(), r.body)
}

/// Frames received (by the frame number in the payload), starting at a keyframe.
fn frames(p: &Peer) -> Vec<u32> {
    let mut v: Vec<&(u64, Vec<u8>)> = p.rtp.iter().collect();
    v.sort_by_key(|x| x.0);
    let mut f: Vec<u32> = v.iter().map(|x| u32::from_be_bytes(x.1[2..6].try_into().unwrap())).collect();
    f.dedup();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_protocol_over_a_real_websocket_joins_negotiates_forwards_and_relays_chat() {
    let (sfu, http_addr) = start_sfu(false).await;
    let url = format!("ws://{http_addr}/ws/meet");
    let mut ann = Peer::udp("ann").await;
    let mut ben = Peer::udp("ben").await;
    for (p, who) in [(&mut ann, "ann"), (&mut ben, "ben")] {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        p.ws = Some(ws);
        p.send_ws(&ClientMessage::Join { token: token(who, "meet", true, true), auto_subscribe: true }).await;
        let joined = |ps: &[&mut Peer]| ps[0].msgs.iter().any(|m| matches!(m, ServerMessage::Joined { .. }));
        assert!(run_until(&mut [p], Duration::from_secs(10), joined).await, "{who} gets `joined`");
    }
    // ann, there first, sees ben arrive
    assert!(
        run_until(&mut [&mut ann, &mut ben], Duration::from_secs(5), |ps| ps[0].msgs.iter().any(
            |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.identity == "ben")
        ))
        .await
    );
    let ServerMessage::Joined { room, you, .. } =
        ann.msgs.iter().find(|m| matches!(m, ServerMessage::Joined { .. })).unwrap()
    else {
        unreachable!()
    };
    assert_eq!((room.as_str(), you.identity.as_str()), ("meet", "ann"));

    // ann: camera + chat in one offer (announced with `publish`); ben: chat only
    let mut api = ann.rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_channel("chat".into());
    let (offer, pending) = api.apply().unwrap();
    ann.own_offer = Some((1, pending));
    ann.send_ws(&ClientMessage::Publish {
        tracks: vec![PublishTrack {
            mid: mid.to_string(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
        }],
    })
    .await;
    ann.send_ws(&ClientMessage::Offer { sdp: offer.to_sdp_string(), seq: 1 }).await;
    ann.publish_vp8(mid);
    let mut api = ben.rtc.sdp_api();
    api.add_channel("chat".into());
    let (offer, pending) = api.apply().unwrap();
    ben.own_offer = Some((1, pending));
    ben.send_ws(&ClientMessage::Offer { sdp: offer.to_sdp_string(), seq: 1 }).await;

    assert!(
        run_until(&mut [&mut ann, &mut ben], Duration::from_secs(10), |ps| ps
            .iter()
            .all(|p| p.connected && p.own_offer.is_none()))
        .await,
        "both PeerConnections up"
    );
    // ben hears of ann's camera, is offered it, and receives it
    assert!(
        run_until(&mut [&mut ann, &mut ben], Duration::from_secs(10), |ps| frames(ps[1]).len() >= 30).await,
        "ben receives ann's video: {} packets",
        ben.rtp.len()
    );
    let published = ben.msgs.iter().find_map(|m| match m {
        ServerMessage::TrackPublished { track } => Some(track.clone()),
        _ => None,
    });
    let published = published.expect("track_published reached ben");
    assert_eq!(
        (published.participant.as_str(), published.kind, published.source, published.codec.as_str()),
        ("ann", TrackKind::Video, TrackSource::Camera, "VP8")
    );
    assert!(
        ben.msgs
            .iter()
            .any(|m| matches!(m, ServerMessage::Subscribed { track, .. } if *track == published.id))
    );
    let mut sorted = ben.rtp.clone();
    sorted.sort_by_key(|x| x.0);
    assert!(
        sorted[0].1[0] & 0x10 != 0 && sorted[0].1[1] & 1 == 0,
        "the first packet ben gets starts a keyframe"
    );
    let f = frames(&ben);
    assert!(f.windows(2).all(|w| w[1] > w[0]), "frames in order");

    // chat both ways, stamped by the server
    assert!(
        run_until(&mut [&mut ann, &mut ben], Duration::from_secs(5), |ps| ps
            .iter()
            .all(|p| p.chat.is_some()))
        .await,
        "chat channels open"
    );
    let ch = ann.chat.unwrap();
    ann.rtc.channel(ch).unwrap().write(false, br#"{"text":"hello ben"}"#).unwrap();
    let ch = ben.chat.unwrap();
    ben.rtc.channel(ch).unwrap().write(false, br#"{"text":"hi ann"}"#).unwrap();
    assert!(
        run_until(&mut [&mut ann, &mut ben], Duration::from_secs(5), |ps| ps
            .iter()
            .all(|p| !p.chat_in.is_empty()))
        .await,
        "chat relayed"
    );
    assert_eq!((ben.chat_in[0].text.as_str(), ben.chat_in[0].from.as_deref()), ("hello ben", Some("ann")));
    assert_eq!((ann.chat_in[0].text.as_str(), ann.chat_in[0].from.as_deref()), ("hi ann", Some("ben")));
    assert!(ann.chat_in[0].ts.is_some());

    // garbage on the socket is an error message, the session goes on
    ben.ws.as_mut().unwrap().send(Message::Text(r#"{"type":"launch"}"#.into())).await.unwrap();
    ben.send_ws(&ClientMessage::Ping { id: 42 }).await;
    assert!(
        run_until(&mut [&mut ann, &mut ben], Duration::from_secs(5), |ps| ps[1]
            .msgs
            .iter()
            .any(|m| matches!(m, ServerMessage::Pong { id: 42 })))
        .await
    );
    assert!(
        ben.msgs.iter().any(|m| matches!(
            m,
            ServerMessage::Error { code: sfu_core::protocol::ErrorCode::BadMessage, .. }
        ))
    );

    // ann leaves: ben is told, the track goes
    ann.send_ws(&ClientMessage::Leave {}).await;
    assert!(
        run_until(&mut [&mut ben], Duration::from_secs(5), |ps| ps[0]
            .msgs
            .iter()
            .any(|m| matches!(m, ServerMessage::ParticipantLeft { identity } if identity == "ann")))
        .await
    );
    assert!(
        ben.msgs
            .iter()
            .any(|m| matches!(m, ServerMessage::TrackUnpublished { track } if *track == published.id))
    );
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_whip_publish_and_whep_watch() {
    let (sfu, http_addr) = start_sfu(true).await;
    let tcp = sfu.tcp_addr().unwrap();
    let mut alice = Peer::tcp("alice", tcp).await;
    http_join(
        &mut alice,
        http_addr,
        "/whip/tcp",
        &token("alice", "tcp", true, false),
        &[(MediaKind::Video, Direction::SendOnly)],
    )
    .await;
    assert!(
        run_until(&mut [&mut alice], Duration::from_secs(10), |ps| ps[0].connected).await,
        "the publisher connects over ICE-TCP"
    );
    let mut bob = Peer::tcp("bob", tcp).await;
    let (_, answer) = http_join(
        &mut bob,
        http_addr,
        "/whep/tcp/alice",
        &token("bob", "tcp", false, true),
        &[(MediaKind::Video, Direction::RecvOnly)],
    )
    .await;
    assert!(
        answer.contains(" tcp ") && answer.contains("tcptype passive"),
        "the answer offers the passive TCP candidate"
    );
    assert!(
        run_until(&mut [&mut alice, &mut bob], Duration::from_secs(15), |ps| frames(ps[1]).len() >= 60).await,
        "bob receives over TCP: {} packets",
        bob.rtp.len()
    );
    assert!(alice.keyframe_requests >= 1, "the keyframe request crossed TCP too");
    let mut seqs: Vec<u64> = bob.rtp.iter().map(|x| x.0).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), bob.rtp.len(), "no duplicates");
    // TCP is lossless: one contiguous sequence
    assert_eq!((seqs[seqs.len() - 1] - seqs[0] + 1) as usize, seqs.len());
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_through_whip_patch_moves_the_publisher_and_media_continues() {
    let (sfu, http_addr) = start_sfu(false).await;
    let tok = token("alice", "restart", true, false);
    let auth = format!("Bearer {tok}");
    let mut alice = Peer::udp("alice").await;
    let (location, answer) =
        http_join(&mut alice, http_addr, "/whip/restart", &tok, &[(MediaKind::Video, Direction::SendOnly)])
            .await;
    assert!(run_until(&mut [&mut alice], Duration::from_secs(10), |ps| ps[0].connected).await);
    let mut bob = Peer::udp("bob").await;
    http_join(
        &mut bob,
        http_addr,
        "/whep/restart/alice",
        &token("bob", "restart", false, true),
        &[(MediaKind::Video, Direction::RecvOnly)],
    )
    .await;
    assert!(
        run_until(&mut [&mut alice, &mut bob], Duration::from_secs(10), |ps| frames(ps[1]).len() >= 30).await,
        "media flows before the restart"
    );

    // bad PATCHes are clear refusals and change nothing
    let frag_type = ("Content-Type", "application/trickle-ice-sdpfrag");
    let r = http(
        http_addr,
        "PATCH",
        &location,
        &[("Authorization", &auth), frag_type],
        "a=ice-ufrag:x\r\na=ice-pwd:short\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(
        http_addr,
        "PATCH",
        "/whip/restart/session/nonexistent",
        &[("Authorization", &auth), frag_type],
        "a=end-of-candidates\r\n",
    )
    .await;
    assert_eq!(r.status, 404);
    let r = http(
        http_addr,
        "PATCH",
        &location,
        &[("Authorization", &auth), ("Content-Type", "application/sdp")],
        "",
    )
    .await;
    assert_eq!(r.status, 415);
    // a trickled candidate alone: 204
    let r = http(
        http_addr,
        "PATCH",
        &location,
        &[("Authorization", &auth), frag_type],
        "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);

    // The publisher's network changes: a new socket, an ICE restart as a browser does it
    // (restartIce, new ufrag/pwd and candidates in a PATCH, the server's in the 200).
    let new_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let new_addr = new_sock.local_addr().unwrap();
    let old_addr = alice.addr;
    let mut api = alice.rtc.sdp_api();
    let creds = api.ice_restart(false);
    let (offer, pending) = api.apply().unwrap();
    let cand = Candidate::host(new_addr, "udp").unwrap();
    assert!(offer.to_sdp_string().contains(&creds.ufrag));
    let frag =
        format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na={}\r\n", creds.ufrag, creds.pass, cand.to_sdp_string());
    let frames_before = frames(&bob).len();
    let last_before = *frames(&bob).last().unwrap();
    let r =
        http(http_addr, "PATCH", &location, &[("Authorization", &auth), frag_type, ("If-Match", "*")], &frag)
            .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/trickle-ice-sdpfrag"));
    let server_ufrag = r.body.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).unwrap().to_string();
    let server_pwd = r.body.lines().find_map(|l| l.strip_prefix("a=ice-pwd:")).unwrap().to_string();
    let old_ufrag = answer.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).unwrap();
    let old_pwd = answer.lines().find_map(|l| l.strip_prefix("a=ice-pwd:")).unwrap();
    assert_ne!(server_ufrag, old_ufrag, "new server credentials");
    // the restarted session's answer: the first answer with the server's new credentials
    let restarted = answer.replace(old_ufrag, &server_ufrag).replace(old_pwd, &server_pwd);
    alice.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&restarted).unwrap()).unwrap();
    // the restart flushed alice's candidates: the new socket's is the only one now
    alice.rtc.add_local_candidate(cand);
    alice.net = Net::Udp(new_sock);
    alice.addr = new_addr;

    // media goes on, now from the new address, with no new keyframe needed
    assert!(
        run_until(&mut [&mut alice, &mut bob], Duration::from_secs(10), |ps| frames(ps[1])
            .iter()
            .filter(|f| **f > last_before + 15)
            .count()
            >= 30)
        .await,
        "media continues after the restart: {} frames before, {} now",
        frames_before,
        frames(&bob).len()
    );
    assert_ne!(old_addr, new_addr);
    let f = frames(&bob);
    assert!(f.windows(2).all(|w| w[1] > w[0]), "in order across the restart");
    sfu.shutdown().await;
}
