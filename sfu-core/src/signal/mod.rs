//! Signaling over HTTP: WHIP (RFC 9725), WHEP, and the room protocol on a
//! WebSocket (`/ws/{room}`, see [`crate::protocol`] and `docs/protocol.md`).
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | `POST` | `/whip/{room}` | publish (token needs `publish`); 201 + `Location` + SDP answer |
//! | `PATCH` | `/whip/{room}/session/{id}` | trickle ICE / ICE restart (`application/trickle-ice-sdpfrag`) |
//! | `DELETE` | `/whip/{room}/session/{id}` | leave |
//! | `POST` | `/whep/{room}/{identity}` | watch one participant (token needs `subscribe`) |
//! | `POST` | `/whep/{room}` | watch whoever speaks |
//! | `PATCH`/`DELETE` | `/whep/{room}/session/{id}` | as for WHIP |
//! | `GET` | `/ws/{room}` | WebSocket room protocol |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;
use tower_http::cors::{Any, CorsLayer};

use crate::auth::{Claims, bearer};
use crate::edge::driver::Request;
use crate::engine::{PeerRole, RemoteJoin};
use crate::error::SfuError;
use crate::protocol::{ClientMessage, ErrorCode, MAX_MESSAGE_BYTES, ServerMessage};
use crate::server::{LeaveReason, Sfu};

/// The first WebSocket message (`join`) must come within this time.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn router(sfu: Sfu) -> Router {
    let limit = sfu.config().limits.max_body_bytes;
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH])
        .expose_headers([header::LOCATION, header::LINK, header::ETAG]);
    Router::new()
        .route("/whip/{room}", post(whip_post))
        .route("/whip/{room}/session/{id}", axum::routing::patch(patch_resource).delete(delete_resource))
        .route("/whep/{room}", post(whep_room_post))
        .route("/whep/{room}/{identity}", post(whep_post))
        .route("/whep/{room}/session/{id}", axum::routing::patch(patch_resource).delete(delete_resource))
        .route("/ws/{room}", get(ws_upgrade))
        .layer(DefaultBodyLimit::max(limit))
        .layer(cors)
        .with_state(sfu)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An error answered over HTTP: status, a text body, and `Retry-After` for load.
fn error_response(e: &SfuError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, format!("{e}\n")).into_response();
    match e {
        SfuError::Overloaded { retry_after_secs } => {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        SfuError::RoomFull { .. } | SfuError::TooManyRooms { .. } => {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(30u64));
        }
        SfuError::Auth(_) if status == StatusCode::UNAUTHORIZED => {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    r
}

fn authorize(sfu: &Sfu, headers: &HeaderMap, room: &str) -> Result<Claims, SfuError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(SfuError::Auth(crate::auth::AuthError::Missing))?;
    let token = bearer(h)?;
    Ok(sfu.verifier().verify_for_room(token, room, unix_now())?)
}

fn check_content_type(headers: &HeaderMap, want: &str) -> Result<(), Response> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.split(';').next().map(str::trim).is_some_and(|c| c.eq_ignore_ascii_case(want)) {
        Ok(())
    } else {
        Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("send Content-Type: {want}\n")).into_response())
    }
}

fn new_resource_id() -> String {
    let a: u64 = rand::random();
    let b: u64 = rand::random();
    format!("{a:016x}{b:016x}")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(|c| c.is_control())
}

async fn offer_answer(
    sfu: Sfu,
    headers: HeaderMap,
    room: String,
    role: PeerRole,
    body: Bytes,
    kind: &str,
) -> Response {
    if let Err(r) = check_content_type(&headers, "application/sdp") {
        return r;
    }
    if !valid_name(&room) {
        return (StatusCode::BAD_REQUEST, "bad room name\n").into_response();
    }
    let claims = match authorize(&sfu, &headers, &room) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return error_response(&SfuError::BadSdp("the offer is not UTF-8".into()));
    };
    let resource = new_resource_id();
    let join = RemoteJoin {
        room: room.clone(),
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        grants: claims.grants,
        role,
        offer: Some(sdp),
        resource: Some(resource.clone()),
    };
    let joined = match sfu.request(|reply| Request::Join { join, signals: None, reply }).await {
        Ok(Ok(j)) => j,
        Ok(Err(e)) | Err(e) => {
            tracing::info!(room = %room, identity = %claims.sub, error = %e, "{kind} refused");
            return error_response(&e);
        }
    };
    let location = format!("/{kind}/{room}/session/{resource}");
    let mut r = (StatusCode::CREATED, joined.answer.unwrap_or_default()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{resource}\"")) {
        h.insert(header::ETAG, v);
    }
    for s in &sfu.config().ice_servers {
        for u in &s.urls {
            let mut link = format!("<{u}>; rel=\"ice-server\"");
            if let (Some(user), Some(cred)) = (&s.username, &s.credential) {
                link.push_str(&format!(
                    "; username=\"{user}\"; credential=\"{cred}\"; credential-type=\"password\""
                ));
            }
            if let Ok(v) = HeaderValue::from_str(&link) {
                h.append(header::LINK, v);
            }
        }
    }
    r
}

async fn whip_post(
    State(sfu): State<Sfu>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    offer_answer(sfu, headers, room, PeerRole::Whip, body, "whip").await
}

async fn whep_post(
    State(sfu): State<Sfu>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    offer_answer(sfu, headers, room, PeerRole::Whep { target: Some(identity) }, body, "whep").await
}

async fn whep_room_post(
    State(sfu): State<Sfu>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    offer_answer(sfu, headers, room, PeerRole::Whep { target: None }, body, "whep").await
}

async fn patch_resource(
    State(sfu): State<Sfu>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_content_type(&headers, "application/trickle-ice-sdpfrag") {
        return r;
    }
    if let Err(e) = authorize(&sfu, &headers, &room) {
        return error_response(&e);
    }
    let Ok(frag) = String::from_utf8(body.to_vec()) else {
        return error_response(&SfuError::BadSdp("the fragment is not UTF-8".into()));
    };
    match sfu.request(|reply| Request::Patch { resource: id, room, frag, reply }).await {
        Ok(Ok(None)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(Some(answer))) => {
            let mut r = (StatusCode::OK, answer).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/trickle-ice-sdpfrag"));
            r
        }
        Ok(Err(e)) | Err(e) => error_response(&e),
    }
}

async fn delete_resource(
    State(sfu): State<Sfu>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&sfu, &headers, &room) {
        return error_response(&e);
    }
    match sfu.request(|reply| Request::LeaveResource { resource: id, room, reply }).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) | Err(e) => error_response(&e),
    }
}

async fn ws_upgrade(State(sfu): State<Sfu>, Path(room): Path<String>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |s| ws_session(sfu, room, s))
}

/// A message the client has not taken within this time ends its session: a
/// client that does not read its socket must not hold a task, a participant
/// and its queue for ever (counted in `sfu_dropped_total{reason="signaling_backlog"}`).
pub const WS_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a message did not reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendFailed {
    /// The socket is gone.
    Gone,
    /// The client did not read it within [`WS_SEND_TIMEOUT`].
    Stalled,
}

async fn send_msg(ws: &mut WebSocket, msg: &ServerMessage) -> Result<(), SendFailed> {
    let Ok(s) = serde_json::to_string(msg) else { return Err(SendFailed::Gone) };
    match tokio::time::timeout(WS_SEND_TIMEOUT, ws.send(Message::Text(s.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendFailed::Gone),
        Err(_) => Err(SendFailed::Stalled),
    }
}

async fn ws_error(ws: &mut WebSocket, code: ErrorCode, message: String) -> Result<(), SendFailed> {
    send_msg(ws, &ServerMessage::Error { code, message }).await
}

/// A send failed in a joined session: count a stalled client.
fn send_failed(sfu: &Sfu, id: u64, f: SendFailed) {
    if f == SendFailed::Stalled {
        tracing::info!(participant = id, "room client does not read its socket: dropping it");
        sfu.count_signaling_backlog();
    }
}

fn error_code(e: &SfuError) -> ErrorCode {
    match e {
        SfuError::Auth(a) if a.http_status() == 403 => ErrorCode::Forbidden,
        SfuError::Auth(_) => ErrorCode::Unauthorized,
        SfuError::RoomFull { .. } => ErrorCode::RoomFull,
        SfuError::TooManyRooms { .. } => ErrorCode::TooManyRooms,
        SfuError::TooManyTracks { .. } => ErrorCode::TooManyTracks,
        SfuError::Overloaded { .. } => ErrorCode::Overloaded,
        SfuError::BadSdp(_) | SfuError::CodecNotAllowed(_) => ErrorCode::BadSdp,
        _ => ErrorCode::Internal,
    }
}

/// How long a closing session waits for the client's close frame in reply.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);

/// One WebSocket client: `join` first, then messages both ways until either
/// side ends. However it ends, the client gets every message the engine had
/// for it (a `closing` or `kicked` last), then a close frame with a code.
async fn ws_session(sfu: Sfu, room: String, mut ws: WebSocket) {
    let _open = sfu.session_guard();
    // 1. join, within JOIN_TIMEOUT
    let first = tokio::time::timeout(JOIN_TIMEOUT, ws.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(_) => return,
        Err(_) => {
            let _ = ws_error(&mut ws, ErrorCode::BadMessage, "send `join` first (within 10 s)".into()).await;
            return;
        }
    };
    let (token, auto_subscribe) = match serde_json::from_str::<ClientMessage>(&text) {
        Ok(ClientMessage::Join { token, auto_subscribe }) => (token, auto_subscribe),
        Ok(_) => {
            let _ = ws_error(&mut ws, ErrorCode::BadMessage, "the first message must be `join`".into()).await;
            return;
        }
        Err(e) => {
            let _ = ws_error(&mut ws, ErrorCode::BadMessage, format!("bad message: {e}")).await;
            return;
        }
    };
    if !valid_name(&room) {
        let _ = ws_error(&mut ws, ErrorCode::BadMessage, "bad room name".into()).await;
        return;
    }
    let claims = match sfu.verifier().verify_for_room(&token, &room, unix_now()) {
        Ok(c) => c,
        Err(e) => {
            let _ = ws_error(&mut ws, error_code(&SfuError::Auth(e.clone())), e.to_string()).await;
            return;
        }
    };
    let (sig_tx, mut sig_rx) = mpsc::channel::<ServerMessage>(512);
    let join = RemoteJoin {
        room: room.clone(),
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        grants: claims.grants,
        role: PeerRole::Room { auto_subscribe },
        offer: None,
        resource: None,
    };
    let id = match sfu.request(|reply| Request::Join { join, signals: Some(sig_tx), reply }).await {
        Ok(Ok(j)) => j.id,
        Ok(Err(e)) | Err(e) => {
            let retry = matches!(
                e,
                SfuError::Overloaded { .. } | SfuError::RoomFull { .. } | SfuError::TooManyRooms { .. }
            );
            let _ = ws_error(&mut ws, error_code(&e), e.to_string()).await;
            if retry {
                let _ = send_msg(
                    &mut ws,
                    &ServerMessage::Closing { reason: e.to_string(), retry_after_ms: Some(1000) },
                )
                .await;
            }
            return;
        }
    };
    tracing::info!(room = %room, identity = %claims.sub, participant = id, "room client joined");
    // 2. relay both ways; what the engine says goes first
    let mut reason = LeaveReason::ConnectionLost;
    // (the client's socket is still open, code of our close frame)
    let mut close: Option<u16> = Some(close_code::NORMAL);
    loop {
        tokio::select! {
            biased;
            m = sig_rx.recv() => match m {
                Some(m) => {
                    let end = end_code(&m);
                    if let Err(f) = send_msg(&mut ws, &m).await { send_failed(&sfu, id, f); close = None; break; }
                    if let Some(code) = end { reason = LeaveReason::Kicked; close = Some(code); break; }
                }
                None => { reason = LeaveReason::Kicked; break; } // the engine dropped us
            },
            m = ws.recv() => match m {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ClientMessage>(&t) {
                    Ok(ClientMessage::Leave {}) => { reason = LeaveReason::Left; break; }
                    Ok(msg) => {
                        if sfu.send(Request::Client(id, msg)).await.is_err() {
                            // the driver stopped: what it had for us is queued, `closing` last
                            close = flush(&mut ws, &mut sig_rx).await;
                            break;
                        }
                    }
                    Err(e) => if let Err(f) = ws_error(&mut ws, ErrorCode::BadMessage, format!("bad message: {e}")).await {
                        send_failed(&sfu, id, f); close = None; break;
                    },
                },
                Some(Ok(Message::Binary(_))) => if let Err(f) = ws_error(&mut ws, ErrorCode::BadMessage, "text frames only".into()).await {
                    send_failed(&sfu, id, f); close = None; break;
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => { close = None; break; }
                Some(Ok(_)) => {}
            },
        }
    }
    sfu.send_control(Request::Leave(id, reason));
    if let Some(code) = close {
        let frame = CloseFrame { code, reason: close_reason(code).into() };
        if let Ok(Ok(())) = tokio::time::timeout(WS_SEND_TIMEOUT, ws.send(Message::Close(Some(frame)))).await {
            // wait for the client's close frame, so the socket is not reset
            // under a close frame the client has not read yet
            let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
                while let Some(Ok(m)) = ws.recv().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// The close code a final message calls for (`closing`: going away).
fn end_code(m: &ServerMessage) -> Option<u16> {
    match m {
        ServerMessage::Closing { .. } => Some(close_code::AWAY),
        ServerMessage::Kicked { .. } => Some(close_code::POLICY),
        _ => None,
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close_code::AWAY => "server shutting down",
        close_code::POLICY => "removed from the room",
        _ => "",
    }
}

/// Send every signal still queued for this client (up to a final one) and
/// return the close code to end with (`None`: the socket is gone).
async fn flush(ws: &mut WebSocket, sig_rx: &mut mpsc::Receiver<ServerMessage>) -> Option<u16> {
    while let Ok(m) = sig_rx.try_recv() {
        let end = end_code(&m);
        if send_msg(ws, &m).await.is_err() {
            return None;
        }
        if end.is_some() {
            return end;
        }
    }
    Some(close_code::NORMAL)
}
