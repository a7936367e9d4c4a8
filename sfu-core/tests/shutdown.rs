//! `Sfu::shutdown` over real sockets: every room-protocol client gets
//! `closing` as the SFU's last message and then a close frame with a code
//! (1001, going away) — also while it is busy sending, which is when a
//! session used to notice the stopped driver first and close without either.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use sfu_core::auth::{Claims, Grants, sign_hs256};
use sfu_core::protocol::{ClientMessage, ServerMessage, TrackKind, TrackSource};
use sfu_core::{LocalCodec, LocalJoin, LocalSubscription, LocalTrackSpec, Sfu, SfuConfig, TokenVerifier};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &[u8] = b"shutdown-test-secret-shutdown-test-secret";
const CLIENTS: usize = 4;
const ROUNDS: usize = 5;

fn token(identity: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let c =
        Claims::new(identity, "r", Grants { publish: true, subscribe: true, ..Grants::default() }, now, 300);
    sign_hs256(&c, SECRET).unwrap()
}

async fn start_sfu() -> (Sfu, SocketAddr) {
    let config =
        SfuConfig { udp_bind: "127.0.0.1:0".parse().unwrap(), include_loopback: true, ..Default::default() };
    let sfu = Sfu::start(config, TokenVerifier::hs256(SECRET).unwrap(), &prometheus::Registry::new())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, sfu.router()).into_future());
    (sfu, http)
}

/// What one client saw: the server's messages in order and the close frame's code.
struct Seen {
    texts: Vec<ServerMessage>,
    close: Option<CloseCode>,
}

/// Join, then send size `subscribe`s and `ping`s as fast as the socket takes
/// them while reading everything; `busy` fires after the first 20 sends.
async fn busy_client(http: SocketAddr, name: String, busy: oneshot::Sender<()>) -> Seen {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws/r")).await.unwrap();
    let join = ClientMessage::Join { token: token(&name), auto_subscribe: true };
    ws.send(Message::Text(serde_json::to_string(&join).unwrap().into())).await.unwrap();
    let mut seen = Seen { texts: Vec::new(), close: None };
    let mut busy = Some(busy);
    let mut sent = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => seen.texts.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    seen.close = frame.map(|f| f.code);
                    let _ = ws.close(None).await;
                    return seen;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return seen,
            },
            _ = tick.tick() => {
                if seen.texts.is_empty() {
                    continue; // not joined yet
                }
                sent += 1;
                let m = if sent.is_multiple_of(2) {
                    ClientMessage::Subscribe { track: "room/1".into(), width: Some(300 + sent % 50), height: Some(200) }
                } else {
                    ClientMessage::Ping { id: u64::from(sent) }
                };
                if ws.send(Message::Text(serde_json::to_string(&m).unwrap().into())).await.is_err() {
                    return seen;
                }
                if sent == 20
                    && let Some(b) = busy.take() {
                        let _ = b.send(());
                    }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_hears_closing_then_a_close_frame_even_while_sending() {
    for round in 0..ROUNDS {
        let (sfu, http) = start_sfu().await;
        let camera = sfu
            .join_local(LocalJoin {
                room: "r".into(),
                identity: "room".into(),
                name: None,
                publish: vec![
                    LocalTrackSpec {
                        name: "camera".into(),
                        kind: TrackKind::Video,
                        source: TrackSource::RoomCamera,
                        codec: LocalCodec::H264 { profile_level_id: "42e01f".into() },
                        layers: vec![],
                    },
                    LocalTrackSpec {
                        name: "mic".into(),
                        kind: TrackKind::Audio,
                        source: TrackSource::RoomMicrophone,
                        codec: LocalCodec::Opus,
                        layers: vec![],
                    },
                ],
                subscribe: LocalSubscription::None,
            })
            .await
            .unwrap();
        let mut tasks = Vec::new();
        let mut busy = Vec::new();
        for i in 0..CLIENTS {
            let (tx, rx) = oneshot::channel();
            busy.push(rx);
            tasks.push(tokio::spawn(busy_client(http, format!("c{i}"), tx)));
        }
        for b in busy {
            tokio::time::timeout(Duration::from_secs(10), b).await.expect("clients busy").unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), sfu.shutdown()).await.expect("shutdown returns");
        for (i, t) in tasks.into_iter().enumerate() {
            let seen = tokio::time::timeout(Duration::from_secs(10), t).await.expect("client done").unwrap();
            let last = seen.texts.last();
            assert!(
                matches!(last, Some(ServerMessage::Closing { .. })),
                "round {round}, client {i}: the last message is `closing`, got {last:?} ({} messages)",
                seen.texts.len()
            );
            let others = seen
                .texts
                .iter()
                .filter(|m| {
                    matches!(
                        m,
                        ServerMessage::Unsubscribed { .. }
                            | ServerMessage::ParticipantLeft { .. }
                            | ServerMessage::TrackUnpublished { .. }
                    )
                })
                .count();
            assert_eq!(
                others, 0,
                "round {round}, client {i}: nobody left before the shutdown, so no leaving is reported"
            );
            assert_eq!(
                seen.close,
                Some(CloseCode::Away),
                "round {round}, client {i}: a close frame with 1001"
            );
        }
        drop(camera);
    }
}
