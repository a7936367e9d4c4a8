//! `/api/v1`: rooms, meetings, participants, tokens, device state, recordings,
//! login/refresh/logout. The OpenAPI document is generated from these
//! handlers ([`ApiDoc`]) and served at `/api/v1/openapi.json`.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sfu_core::auth::{Claims, Grants};
use sfu_core::protocol::{TrackKind, TrackSource};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Bearer, ClientIp, ErrorBody, SharedState};
use crate::auth::{GrantsDto, TokenPair, random_bytes, unix_now};
use crate::device::{
    ButtonAction, ButtonRequest, DevicePatch, DeviceState, GpioButton, GpioError, GpioLed, GpioState,
};
use crate::names::{IDENTITY_RULE, ROOM_RULE, valid_identity, valid_room};
use crate::store::{AuditRow, DisplayRow, MeetingRow, RecordingRow, RoomRow, SessionRow, atomic, q};

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/password", post(change_password))
        .route("/users/{username}/revoke", post(revoke_user))
        .route("/auth/rotate-key", post(rotate_key))
        .route("/rooms", get(list_rooms).post(create_room))
        .route("/rooms/{room}", get(get_room))
        .route("/rooms/{room}/join", post(join_room))
        .route("/rooms/{room}/participants", get(list_participants))
        .route("/rooms/{room}/participants/{identity}/kick", post(kick))
        .route("/rooms/{room}/participants/{identity}/mute", post(mute))
        .route("/meetings", get(list_meetings))
        .route("/meetings/{id}/sessions", get(list_sessions))
        .route("/tokens", post(issue_token))
        .route("/device", get(get_device).patch(patch_device))
        .route("/device/gpio", get(get_gpio))
        .route("/device/gpio/buttons/{name}", post(press_button))
        .route("/displays", get(list_displays).post(create_display))
        .route("/displays/token", post(display_token))
        .route("/displays/{id}", axum::routing::delete(revoke_display))
        .route("/recordings", get(list_recordings))
        .route("/rooms/{room}/recording", get(get_recording).post(start_recording).delete(stop_recording))
        .route("/recordings/{id}/files", get(list_recording_files))
        .route("/audit", get(list_audit))
        .route("/status", get(status))
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
        })
}

#[derive(OpenApi)]
#[openapi(
    info(title = "roombox API", description = "The appliance's REST API. Every error is `{\"error\": {\"code\", \"message\"}}`."),
    paths(
        login, refresh, logout, change_password, revoke_user, rotate_key,
        list_rooms, create_room, get_room, join_room,
        list_participants, kick, mute,
        list_meetings, list_sessions,
        issue_token, get_device, patch_device, get_gpio, press_button,
        list_displays, create_display, display_token, revoke_display,
        list_recordings, list_audit, status,
        get_recording, start_recording, stop_recording, list_recording_files,
    ),
    components(schemas(
        ErrorBody, crate::auth::KeyRotation, TokenPair, GrantsDto, LoginRequest, RefreshRequest, PasswordRequest,
        RoomView, CreateRoom, JoinRequest, JoinResponse, Participant, ParticipantTrack, MuteRequest, MediaKind,
        TrackSourceKind, MeetingRow, SessionRow, TokenRequest, TokenResponse, DeviceState, DevicePatch,
        crate::device::MediaStatus, crate::device::PipelineStatus, crate::device::DeviceHealth,
        GpioState, GpioLed, GpioButton, ButtonRequest, ButtonAction,
        DisplayRow, CreateDisplay, DisplayCreated, DisplayTokenRequest, DisplayToken,
        RecordingRow, AuditRow, Status, SfuStatus,
        crate::recording::RecordingView, crate::store::RecordingFileRow, RecordingState, crate::fleet::FleetStatus,
    )),
    modifiers(&BearerScheme, &ErrorResponses),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// Every operation may also answer any error status (400 bad input, 401/403,
/// 413 body too large, 415, 422, 429 rate limited, 503, 507 storage full…),
/// always with an [`ErrorBody`]: say so once, as each operation's `default`
/// response, so a client (or a schema checker) knows the shape of every error.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = ResponseBuilder::new()
            .description("An error: `{\"error\": {\"code\", \"message\"}}`")
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
                .into_iter()
                .flatten()
            {
                op.responses.responses.entry("default".into()).or_insert_with(|| error.clone().into());
            }
        }
    }
}

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
                ),
            );
        }
    }
}

/// The OpenAPI document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_json_text() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    let mut s = doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

async fn openapi_json() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json_text()).into_response()
}

// ---------------------------------------------------------------------------
// Authorization helpers

fn need_room(c: &Claims, room: &str) -> Result<(), ApiError> {
    if c.allows_room(room) {
        Ok(())
    } else {
        Err(sfu_core::auth::AuthError::WrongRoom { token_room: c.room.clone(), room: room.to_owned() }.into())
    }
}

fn need_room_admin(c: &Claims, room: &str) -> Result<(), ApiError> {
    need_room(c, room)?;
    if c.grants.admin { Ok(()) } else { Err(sfu_core::auth::AuthError::MissingGrant("admin").into()) }
}

fn need_box_admin(c: &Claims) -> Result<(), ApiError> {
    if c.room == "*" && c.grants.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("this needs an administrator token (room \"*\" with the admin grant)"))
    }
}

fn room_name(room: &str) -> Result<(), ApiError> {
    if valid_room(room) {
        Ok(())
    } else {
        Err(ApiError::bad_request("bad_room_name", format!("room: {ROOM_RULE}")))
    }
}

fn identity_name(id: &str) -> Result<(), ApiError> {
    if valid_identity(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request("bad_identity", format!("identity: {IDENTITY_RULE}")))
    }
}

// ---------------------------------------------------------------------------
// Auth

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$")]
    pub username: String,
    /// At most 1024 bytes.
    #[schema(max_length = 256)]
    pub password: String,
    /// Members name the room they join; admins get every room when absent.
    #[serde(default)]
    pub room: Option<String>,
}

/// Log in with a local user's password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", security(()), request_body = LoginRequest,
    responses(
        (status = 200, description = "Access and refresh tokens", body = TokenPair),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 429, description = "Too many attempts (see Retry-After)", body = ErrorBody),
    ))]
async fn login(
    State(s): State<SharedState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    if req.username.is_empty() || req.username.len() > 64 || req.password.len() > 1024 {
        return Err(ApiError::bad_request("bad_request", "username 1-64 bytes, password at most 1024 bytes"));
    }
    match s.auth.login(&req.username, &req.password, req.room.as_deref(), ip, unix_now()).await {
        Ok(p) => {
            s.metrics.logins.with_label_values(&["ok"]).inc();
            Ok(axum::Json(p))
        }
        Err(e) => {
            let outcome = match &e {
                crate::auth::AuthServiceError::RateLimited { .. } => "rate_limited",
                _ => "bad_credentials",
            };
            s.metrics.logins.with_label_values(&[outcome]).inc();
            Err(e.into())
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Trade a refresh token for a new pair. The old refresh token is spent;
/// presenting it again revokes the whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", security(()), request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "Unknown, expired, revoked or reused", body = ErrorBody),
    ))]
async fn refresh(
    State(s): State<SharedState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    Ok(axum::Json(s.auth.refresh(&req.refresh_token, unix_now()).await?))
}

/// End a session: its refresh tokens are revoked.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(()), request_body = RefreshRequest,
    responses((status = 204, description = "Logged out")))]
async fn logout(
    State(s): State<SharedState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    s.auth.logout(&req.refresh_token, unix_now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    #[schema(max_length = 256)]
    pub old_password: String,
    /// At least 10 characters (at most 1024 bytes).
    #[schema(min_length = 10, max_length = 256)]
    pub new_password: String,
}

/// Change the caller's password; every token issued before is revoked.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = PasswordRequest,
    responses((status = 204, description = "Changed"), (status = 401, body = ErrorBody)))]
async fn change_password(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> Result<StatusCode, ApiError> {
    if c.tv.is_none() {
        return Err(ApiError::forbidden("only a local user's own login token may change a password"));
    }
    s.auth.change_password(&c.sub, &req.old_password, &req.new_password, ip, unix_now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke every token of a user (bumps the user's token version). Admins only.
#[utoipa::path(post, path = "/api/v1/users/{username}/revoke", tag = "auth",
    params(("username" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
async fn revoke_user(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(username): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    need_box_admin(&c)?;
    identity_name(&username)?;
    s.auth.revoke_user(&username, &c.sub, unix_now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate the token signing key without downtime: tokens are signed with a
/// new key from now on; tokens signed with the old one verify until they
/// expire. Box admins only.
#[utoipa::path(post, path = "/api/v1/auth/rotate-key", tag = "auth",
    responses((status = 200, body = crate::auth::KeyRotation), (status = 403, body = ErrorBody)))]
async fn rotate_key(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
) -> Result<axum::Json<crate::auth::KeyRotation>, ApiError> {
    need_box_admin(&c)?;
    let r = s.auth.rotate_key(unix_now())?;
    audit(
        &s,
        &c.sub,
        "rotate_key",
        &r.kid,
        Some(format!("previous {} until {}", r.previous_kid, r.previous_valid_until)),
    )
    .await;
    Ok(axum::Json(r))
}

// ---------------------------------------------------------------------------
// Rooms

/// A room: what the store knows plus who is there now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomView {
    pub name: String,
    pub display_name: Option<String>,
    pub created_at: i64,
    /// Participants connected now (0 when the SFU is not running).
    pub participants: usize,
    /// Whether a meeting is going on.
    pub live: bool,
    pub active_speaker: Option<String>,
}

async fn live_rooms(s: &SharedState) -> Vec<sfu_core::RoomSnapshot> {
    match &s.sfu {
        Some(sfu) => sfu.rooms().await.unwrap_or_default(),
        None => Vec::new(),
    }
}

fn view(row: RoomRow, live: &[sfu_core::RoomSnapshot]) -> RoomView {
    let snap = live.iter().find(|r| r.name == row.name);
    RoomView {
        participants: snap.map(|r| r.participants.len()).unwrap_or(0),
        live: snap.is_some_and(|r| !r.participants.is_empty()),
        active_speaker: snap.and_then(|r| r.active_speaker.clone()),
        name: row.name,
        display_name: row.display_name,
        created_at: row.created_at,
    }
}

/// Rooms the caller may see (admins: all).
#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms", responses((status = 200, body = Vec<RoomView>)))]
async fn list_rooms(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
) -> Result<axum::Json<Vec<RoomView>>, ApiError> {
    let rows = s.store.call(|c| q::list_rooms(c)).await?;
    let live = live_rooms(&s).await;
    Ok(axum::Json(rows.into_iter().filter(|r| c.allows_room(&r.name)).map(|r| view(r, &live)).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub display_name: Option<String>,
}

/// Create a room. Admins only.
#[utoipa::path(post, path = "/api/v1/rooms", tag = "rooms", request_body = CreateRoom,
    responses((status = 201, body = RoomView), (status = 409, body = ErrorBody)))]
async fn create_room(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiJson(req): ApiJson<CreateRoom>,
) -> Result<(StatusCode, axum::Json<RoomView>), ApiError> {
    need_box_admin(&c)?;
    room_name(&req.name)?;
    if req.display_name.as_ref().is_some_and(|d| d.chars().count() > 200) {
        return Err(ApiError::bad_request("bad_request", "display_name: at most 200 characters"));
    }
    let now = unix_now() as i64;
    let actor = c.sub.clone();
    let row = s
        .store
        .call(move |db| {
            atomic(db, |db| {
                let r = q::create_room(db, &req.name, req.display_name.as_deref(), now)?;
                q::audit(db, now, &actor, "room_created", Some(&req.name), None, None)?;
                Ok(r)
            })
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view(row, &[]))))
}

/// One room.
#[utoipa::path(get, path = "/api/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    responses((status = 200, body = RoomView), (status = 404, body = ErrorBody)))]
async fn get_room(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(room): ApiPath<String>,
) -> Result<axum::Json<RoomView>, ApiError> {
    room_name(&room)?;
    need_room(&c, &room)?;
    let r = room.clone();
    let row = s
        .store
        .call(move |db| q::get_room(db, &r))
        .await?
        .ok_or_else(|| ApiError::not_found("no such room"))?;
    let live = live_rooms(&s).await;
    Ok(axum::Json(view(row, &live)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Display name shown to others.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub name: Option<String>,
    /// Renew the token of an identity this invite handed out before (`guest-` + 8 hex digits).
    #[serde(default)]
    #[schema(pattern = "^guest-[0-9a-f]{8}$")]
    pub identity: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JoinResponse {
    pub token: String,
    pub identity: String,
    pub room: String,
    pub expires_in: u64,
    pub grants: GrantsDto,
}

/// Exchange an invite token (identity `invite`, as in the demo's join link) or
/// an admin token for a personal access token with a unique guest identity.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/join", tag = "rooms", params(("room" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    request_body = JoinRequest,
    responses((status = 200, body = JoinResponse), (status = 403, body = ErrorBody)))]
async fn join_room(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(room): ApiPath<String>,
    ApiJson(req): ApiJson<JoinRequest>,
) -> Result<axum::Json<JoinResponse>, ApiError> {
    room_name(&room)?;
    need_room(&c, &room)?;
    if c.sub != "invite" && !c.grants.admin {
        return Err(ApiError::forbidden("only an invite or admin token can be exchanged"));
    }
    if req
        .name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("bad_request", "name: 1 to 64 printable characters"));
    }
    let identity = match req.identity {
        Some(id) => {
            let ok = id.len() == 14
                && id.starts_with("guest-")
                && id[6..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !ok {
                return Err(ApiError::bad_request(
                    "bad_identity",
                    "identity: guest- followed by 8 hex digits",
                ));
            }
            id
        }
        None => {
            let mut b = [0u8; 4];
            random_bytes(&mut b).map_err(|e| ApiError::internal(e.to_string()))?;
            format!("guest-{}", hex::encode(b))
        }
    };
    let grants =
        Grants { publish: c.grants.publish, subscribe: c.grants.subscribe, record: false, admin: false };
    let ttl = s.auth.config().access_ttl;
    let (token, claims) = s
        .auth
        .issue_access(&identity, &room, grants, ttl, None, req.name, unix_now())
        .map_err(ApiError::from)?;
    Ok(axum::Json(JoinResponse {
        token,
        identity,
        room,
        expires_in: claims.exp - claims.iat,
        grants: grants.into(),
    }))
}

// ---------------------------------------------------------------------------
// Participants

/// A participant connected now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Participant {
    pub identity: String,
    pub name: Option<String>,
    /// The appliance's own camera and microphone.
    pub local: bool,
    pub tracks: Vec<ParticipantTrack>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ParticipantTrack {
    pub id: String,
    pub kind: MediaKind,
    /// What the track carries (a person's camera, a shared screen, the room camera…).
    pub source: TrackSourceKind,
    pub codec: String,
    pub muted: bool,
}

/// What a track shows or carries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TrackSourceKind {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
    /// The appliance's own room camera.
    RoomCamera,
    /// The appliance's own room microphone.
    RoomMicrophone,
}

impl From<TrackSource> for TrackSourceKind {
    fn from(s: TrackSource) -> Self {
        match s {
            TrackSource::Camera => TrackSourceKind::Camera,
            TrackSource::Microphone => TrackSourceKind::Microphone,
            TrackSource::Screen => TrackSourceKind::Screen,
            TrackSource::ScreenAudio => TrackSourceKind::ScreenAudio,
            TrackSource::RoomCamera => TrackSourceKind::RoomCamera,
            TrackSource::RoomMicrophone => TrackSourceKind::RoomMicrophone,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl From<TrackKind> for MediaKind {
    fn from(k: TrackKind) -> Self {
        match k {
            TrackKind::Audio => MediaKind::Audio,
            TrackKind::Video => MediaKind::Video,
        }
    }
}

/// Who is in a room now.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/participants", tag = "participants",
    params(("room" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    responses((status = 200, body = Vec<Participant>), (status = 503, description = "SFU not running", body = ErrorBody)))]
async fn list_participants(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(room): ApiPath<String>,
) -> Result<axum::Json<Vec<Participant>>, ApiError> {
    room_name(&room)?;
    need_room(&c, &room)?;
    let sfu = s.sfu.as_ref().ok_or_else(ApiError::sfu_unavailable)?;
    let rooms = sfu.rooms().await?;
    let Some(r) = rooms.into_iter().find(|r| r.name == room) else {
        return Ok(axum::Json(Vec::new()));
    };
    Ok(axum::Json(
        r.participants
            .into_iter()
            .map(|p| Participant {
                identity: p.identity,
                name: p.name,
                local: p.local,
                tracks: p
                    .tracks
                    .into_iter()
                    .map(|t| ParticipantTrack {
                        id: t.id,
                        kind: t.kind.into(),
                        source: t.source.into(),
                        codec: t.codec,
                        muted: t.muted,
                    })
                    .collect(),
            })
            .collect(),
    ))
}

/// Remove a participant from a room. Room admins only. The box's own room
/// participant cannot be removed (409): mute it instead.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/participants/{identity}/kick", tag = "participants",
    params(("room" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$"), ("identity" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$")),
    responses((status = 204, description = "Kicked"), (status = 404, body = ErrorBody),
        (status = 409, description = "The box's own camera and microphone", body = ErrorBody)))]
async fn kick(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath((room, identity)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    room_name(&room)?;
    identity_name(&identity)?;
    need_room_admin(&c, &room)?;
    if room == s.device.room() && identity == s.device.identity() && s.device.media_running() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "room_participant",
            "the box's own camera and microphone cannot be removed; mute them or turn the camera off (PATCH /api/v1/device)",
        ));
    }
    let sfu = s.sfu.as_ref().ok_or_else(ApiError::sfu_unavailable)?;
    sfu.kick(&room, &identity, &format!("removed by {}", c.sub)).await?;
    audit(&s, &c.sub, "kick", &format!("{room}/{identity}"), None).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    pub kind: MediaKind,
    pub muted: bool,
}

/// Mute (or unmute) a participant's audio or video in the SFU. Room admins only.
/// For the box's own room participant this is the device switch (audio stopped
/// at the source, the camera's privacy slate), as `PATCH /api/v1/device`.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/participants/{identity}/mute", tag = "participants",
    params(("room" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$"), ("identity" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$")), request_body = MuteRequest,
    responses((status = 204, description = "Done"), (status = 404, body = ErrorBody)))]
async fn mute(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath((room, identity)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<MuteRequest>,
) -> Result<StatusCode, ApiError> {
    room_name(&room)?;
    identity_name(&identity)?;
    need_room_admin(&c, &room)?;
    // The box's own camera and microphone: the same switches as the device API
    // and the button (audio stops at the source, the camera shows its slate).
    if room == s.device.room() && identity == s.device.identity() && s.device.media_running() {
        match req.kind {
            MediaKind::Audio => s.device.set_mic_muted(req.muted),
            MediaKind::Video => s.device.set_camera_off(req.muted),
        }
        audit(&s, &c.sub, if req.muted { "mute" } else { "unmute" }, &format!("{room}/{identity}"), None)
            .await;
        return Ok(StatusCode::NO_CONTENT);
    }
    let sfu = s.sfu.as_ref().ok_or_else(ApiError::sfu_unavailable)?;
    let kind = match req.kind {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    };
    sfu.mute(&room, &identity, kind, req.muted).await?;
    audit(&s, &c.sub, if req.muted { "mute" } else { "unmute" }, &format!("{room}/{identity}"), None).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit(s: &SharedState, actor: &str, action: &str, target: &str, detail: Option<String>) {
    let (a, ac, t) = (actor.to_owned(), action.to_owned(), target.to_owned());
    let now = unix_now() as i64;
    if let Err(e) = s.store.call(move |c| q::audit(c, now, &a, &ac, Some(&t), detail.as_deref(), None)).await
    {
        tracing::warn!(error = %e, "audit entry not written");
    }
}

// ---------------------------------------------------------------------------
// Meetings

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MeetingQuery {
    /// Only this room's meetings.
    pub room: Option<String>,
    /// At most this many (default 50, 1 to 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Meetings, newest first.
#[utoipa::path(get, path = "/api/v1/meetings", tag = "meetings", params(MeetingQuery),
    responses((status = 200, body = Vec<MeetingRow>)))]
async fn list_meetings(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiQuery(mq): ApiQuery<MeetingQuery>,
) -> Result<axum::Json<Vec<MeetingRow>>, ApiError> {
    match &mq.room {
        Some(r) => {
            room_name(r)?;
            need_room(&c, r)?;
        }
        None => need_box_admin(&c)?,
    }
    let limit = limit_of(mq.limit)?;
    Ok(axum::Json(s.store.call(move |db| q::list_meetings(db, mq.room.as_deref(), limit)).await?))
}

/// Who took part in a meeting.
#[utoipa::path(get, path = "/api/v1/meetings/{id}/sessions", tag = "meetings", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<SessionRow>)))]
async fn list_sessions(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<Vec<SessionRow>>, ApiError> {
    need_box_admin(&c)?;
    Ok(axum::Json(s.store.call(move |db| q::list_sessions(db, id)).await?))
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// A room name, or `*` (every room; admin tokens only).
    #[schema(min_length = 1, max_length = 64, pattern = "^([A-Za-z0-9_-]+|\\*)$")]
    pub room: String,
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$")]
    pub identity: String,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub name: Option<String>,
    #[serde(default)]
    pub grants: GrantsDto,
    /// Lifetime in seconds (default `auth.access_ttl`, at most `auth.max_issued_ttl`, 1 day by default).
    #[serde(default, deserialize_with = "whole_seconds")]
    #[schema(minimum = 10, maximum = 86400)]
    pub ttl_secs: Option<u64>,
}

/// A JSON number of seconds: an integer, or a float with no fraction (`600.0`
/// is the integer 600 in JSON Schema, so clients may send it).
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<serde_json::Number> = Option::deserialize(d)?;
    match v {
        None => Ok(None),
        Some(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("ttl_secs: a whole number of seconds")),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub room: String,
    pub identity: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Issue an access token for a room and identity. Admins of that room only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenRequest,
    responses((status = 201, body = TokenResponse), (status = 403, body = ErrorBody)))]
async fn issue_token(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<(StatusCode, axum::Json<TokenResponse>), ApiError> {
    if req.room != "*" {
        room_name(&req.room)?;
    }
    identity_name(&req.identity)?;
    if req
        .name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("bad_request", "name: 1 to 64 printable characters"));
    }
    need_room_admin(&c, &req.room)?;
    if req.room == "*" {
        need_box_admin(&c)?;
    }
    if req.identity == "invite" && !req.grants.subscribe {
        return Err(ApiError::bad_request("bad_request", "an invite token needs the subscribe grant"));
    }
    let max = s.auth.config().max_issued_ttl;
    let ttl = match req.ttl_secs {
        None => s.auth.config().access_ttl,
        Some(t) if t >= 10 && Duration::from_secs(t) <= max => Duration::from_secs(t),
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_ttl",
                format!("ttl_secs between 10 and {}", max.as_secs()),
            ));
        }
    };
    let (token, claims) = s
        .auth
        .issue_access(&req.identity, &req.room, req.grants.into(), ttl, None, req.name, unix_now())
        .map_err(ApiError::from)?;
    audit(&s, &c.sub, "token_issued", &format!("{}/{}", req.room, req.identity), None).await;
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenResponse { token, room: req.room, identity: req.identity, expires_at: claims.exp }),
    ))
}

// ---------------------------------------------------------------------------
// Device

/// The room's microphone, camera and media pipeline.
#[utoipa::path(get, path = "/api/v1/device", tag = "device", responses((status = 200, body = DeviceState)))]
async fn get_device(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
) -> Result<axum::Json<DeviceState>, ApiError> {
    need_room(&c, &s.cfg.room)?;
    Ok(axum::Json(s.device.state()))
}

/// Mute the room microphone or turn the room camera off (or back on).
#[utoipa::path(patch, path = "/api/v1/device", tag = "device", request_body = DevicePatch,
    responses((status = 200, body = DeviceState), (status = 403, body = ErrorBody)))]
async fn patch_device(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiJson(p): ApiJson<DevicePatch>,
) -> Result<axum::Json<DeviceState>, ApiError> {
    need_room_admin(&c, &s.cfg.room)?;
    let st = s.device.apply(&p);
    audit(&s, &c.sub, "device", &s.cfg.room, serde_json::to_string(&p).ok()).await;
    Ok(axum::Json(st))
}

/// The button panel: LEDs and buttons (`simulated` when the box has no GPIO lines).
#[utoipa::path(get, path = "/api/v1/device/gpio", tag = "device",
    responses((status = 200, body = GpioState), (status = 404, description = "No panel", body = ErrorBody)))]
async fn get_gpio(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
) -> Result<axum::Json<GpioState>, ApiError> {
    need_room(&c, &s.cfg.room)?;
    s.device.gpio().map(axum::Json).ok_or_else(|| ApiError::not_found("this box has no button panel"))
}

/// Press, release or click a button of the simulated panel (the demo, boards
/// without GPIO lines). A click toggles the room microphone; holding past the
/// long-press time turns microphone and camera off (privacy). Room admins only.
#[utoipa::path(post, path = "/api/v1/device/gpio/buttons/{name}", tag = "device",
    params(("name" = String, Path, description = "`mute`")), request_body = ButtonRequest,
    responses(
        (status = 200, description = "The panel after the action", body = GpioState),
        (status = 404, description = "No such button", body = ErrorBody),
        (status = 409, description = "Real GPIO lines: not pressable through the API", body = ErrorBody),
    ))]
async fn press_button(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ButtonRequest>,
) -> Result<axum::Json<GpioState>, ApiError> {
    need_room_admin(&c, &s.cfg.room)?;
    s.device.button(&name, req.action).map_err(|e| match e {
        GpioError::NotSimulated => ApiError::new(StatusCode::CONFLICT, "not_simulated", e.to_string()),
        GpioError::NoPanel | GpioError::NoSuchButton(_) => ApiError::not_found(e.to_string()),
    })?;
    if req.action != ButtonAction::Release {
        let action = format!("{:?}", req.action).to_lowercase();
        audit(&s, &c.sub, "gpio_button", &name, Some(action)).await;
    }
    s.device.gpio().map(axum::Json).ok_or_else(|| ApiError::not_found("this box has no button panel"))
}

// ---------------------------------------------------------------------------
// Displays (the room TV's durable credential)

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDisplay {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub room: String,
    /// For people (`"TV"`, `"Board room screen"`).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisplayCreated {
    pub display: DisplayRow,
    /// The secret the TV keeps; shown only now.
    pub credential: String,
    /// The page to open on the TV: `/display#room=ROOM&display=CREDENTIAL`.
    pub path: String,
}

/// Make a durable credential for a room's TV (`/display`). It never expires:
/// the page exchanges it for 15-minute subscribe-only tokens until it is
/// revoked (`DELETE /api/v1/displays/{id}`). Admins of that room.
#[utoipa::path(post, path = "/api/v1/displays", tag = "displays", request_body = CreateDisplay,
    responses((status = 201, body = DisplayCreated), (status = 403, body = ErrorBody)))]
async fn create_display(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiJson(req): ApiJson<CreateDisplay>,
) -> Result<(StatusCode, axum::Json<DisplayCreated>), ApiError> {
    room_name(&req.room)?;
    need_room_admin(&c, &req.room)?;
    let name = req.name.unwrap_or_else(|| "TV".into());
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("bad_request", "name: 1 to 64 printable characters"));
    }
    let (display, credential) = s.auth.create_display(&req.room, &name, &c.sub, unix_now()).await?;
    let path = format!("/display#room={}&display={credential}", req.room);
    Ok((StatusCode::CREATED, axum::Json(DisplayCreated { display, credential, path })))
}

/// Every display credential (revoked ones too). Admins only.
#[utoipa::path(get, path = "/api/v1/displays", tag = "displays",
    responses((status = 200, body = Vec<DisplayRow>)))]
async fn list_displays(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
) -> Result<axum::Json<Vec<DisplayRow>>, ApiError> {
    need_box_admin(&c)?;
    Ok(axum::Json(s.store.call(|db| q::list_displays(db)).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisplayTokenRequest {
    pub credential: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DisplayToken {
    pub token: String,
    pub identity: String,
    pub room: String,
    pub expires_in: u64,
}

/// Exchange a display credential for a short subscribe-only access token
/// (the `/display` page does this before each expiry).
#[utoipa::path(post, path = "/api/v1/displays/token", tag = "displays", security(()),
    request_body = DisplayTokenRequest,
    responses(
        (status = 200, body = DisplayToken),
        (status = 401, description = "Unknown or revoked credential", body = ErrorBody),
    ))]
async fn display_token(
    State(s): State<SharedState>,
    ApiJson(req): ApiJson<DisplayTokenRequest>,
) -> Result<axum::Json<DisplayToken>, ApiError> {
    let (token, claims, row) = s.auth.display_token(&req.credential, unix_now()).await?;
    Ok(axum::Json(DisplayToken {
        token,
        identity: claims.sub.clone(),
        room: row.room,
        expires_in: claims.exp - claims.iat,
    }))
}

/// Revoke a display credential: no new tokens for it, the tokens it holds are
/// refused, and the TV is removed from its room now. Admins only.
#[utoipa::path(delete, path = "/api/v1/displays/{id}", tag = "displays", params(("id" = i64, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
async fn revoke_display(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    need_box_admin(&c)?;
    let row = s.auth.revoke_display(id, &c.sub, unix_now()).await?;
    if let Some(sfu) = &s.sfu {
        // Its tokens are refused from now on; remove it from the room now too.
        let _ = sfu.kick(&row.room, &crate::auth::display_identity(id), "this display was revoked").await;
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Recordings, audit

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// At most this many (default 50, 1 to 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A `limit` query parameter: default 50, 1 to 500 (anything else is refused, as documented).
fn limit_of(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(50) {
        n @ 1..=500 => Ok(n),
        _ => Err(ApiError::bad_request("bad_query", "limit: 1 to 500")),
    }
}

/// Recordings on the box, newest first. Admins only.
#[utoipa::path(get, path = "/api/v1/recordings", tag = "recordings", params(LimitQuery),
    responses((status = 200, body = Vec<RecordingRow>)))]
async fn list_recordings(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiQuery(lq): ApiQuery<LimitQuery>,
) -> Result<axum::Json<Vec<RecordingRow>>, ApiError> {
    need_box_admin(&c)?;
    let limit = limit_of(lq.limit)?;
    Ok(axum::Json(s.store.call(move |db| q::list_recordings(db, limit)).await?))
}

fn need_record(c: &Claims, room: &str) -> Result<(), ApiError> {
    need_room(c, room)?;
    // the box's administrator (room "*", admin) may record any room too (the admin page)
    if c.grants.record || (c.room == "*" && c.grants.admin) {
        Ok(())
    } else {
        Err(sfu_core::auth::AuthError::MissingGrant("record").into())
    }
}

impl From<crate::recording::RecordingError> for ApiError {
    fn from(e: crate::recording::RecordingError) -> Self {
        use crate::recording::RecordingError as E;
        let (status, code) = match &e {
            E::AlreadyRecording { .. } => (StatusCode::CONFLICT, "already_recording"),
            E::NotRecording(_) => (StatusCode::NOT_FOUND, "not_recording"),
            E::InsufficientStorage { .. } => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
            E::SfuUnavailable => return ApiError::sfu_unavailable(),
            E::Store(_) => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "recording_failed"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Whether a room is being recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingState {
    pub room: String,
    pub recording: bool,
    /// The running recording's id.
    pub id: Option<i64>,
}

/// Is the room being recorded? Anyone with a token for the room.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/recording", tag = "recordings",
    params(("room" = String, Path)), responses((status = 200, body = RecordingState)))]
async fn get_recording(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(room): ApiPath<String>,
) -> Result<axum::Json<RecordingState>, ApiError> {
    room_name(&room)?;
    need_room(&c, &room)?;
    let id = s.recordings.active_id(&room);
    Ok(axum::Json(RecordingState { room, recording: id.is_some(), id }))
}

/// Start recording the room: one fragmented MP4 per published track (the room
/// camera and microphone included), fsynced every second. Needs the `record`
/// grant for the room (or the box administrator's token). 507 when free space is under `recording.min_free_mib`.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/recording", tag = "recordings",
    params(("room" = String, Path)),
    responses((status = 201, body = crate::recording::RecordingView), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn start_recording(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(room): ApiPath<String>,
) -> Result<(StatusCode, axum::Json<crate::recording::RecordingView>), ApiError> {
    room_name(&room)?;
    need_record(&c, &room)?;
    let v = s.recordings.start(&room, &c.sub).await?;
    Ok((StatusCode::CREATED, axum::Json(v)))
}

/// Stop recording the room; returns once every file is finalised. Needs the `record` grant.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/recording", tag = "recordings",
    params(("room" = String, Path)),
    responses((status = 200, body = crate::recording::RecordingView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn stop_recording(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(room): ApiPath<String>,
) -> Result<axum::Json<crate::recording::RecordingView>, ApiError> {
    room_name(&room)?;
    need_record(&c, &room)?;
    Ok(axum::Json(s.recordings.stop(&room, &c.sub).await?))
}

/// The per-track files of a recording. Admins only.
#[utoipa::path(get, path = "/api/v1/recordings/{id}/files", tag = "recordings",
    params(("id" = i64, Path)), responses((status = 200, body = Vec<crate::store::RecordingFileRow>)))]
async fn list_recording_files(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<Vec<crate::store::RecordingFileRow>>, ApiError> {
    need_box_admin(&c)?;
    Ok(axum::Json(s.store.call(move |db| q::list_recording_files(db, id)).await?))
}

/// The audit log, newest first. Admins only.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(LimitQuery),
    responses((status = 200, body = Vec<AuditRow>)))]
async fn list_audit(
    State(s): State<SharedState>,
    Bearer(c): Bearer,
    ApiQuery(lq): ApiQuery<LimitQuery>,
) -> Result<axum::Json<Vec<AuditRow>>, ApiError> {
    need_box_admin(&c)?;
    let limit = limit_of(lq.limit)?;
    Ok(axum::Json(s.store.call(move |db| q::list_audit(db, limit)).await?))
}

// ---------------------------------------------------------------------------
// Status (the admin page's device health)

/// The SFU's counters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SfuStatus {
    pub running: bool,
    pub rooms: usize,
    pub participants: usize,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_packets: u64,
}

/// Health of the whole box.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub version: String,
    pub server_id: String,
    pub region: String,
    pub board: Option<String>,
    pub uptime_secs: u64,
    /// The store answers.
    pub store: bool,
    pub sfu: SfuStatus,
    pub device: DeviceState,
    /// Meetings open now.
    pub active_meetings: i64,
    /// The MQTT fleet link.
    pub fleet: crate::fleet::FleetStatus,
}

/// Version, uptime, store, SFU and device health. Admins of the box's room.
#[utoipa::path(get, path = "/api/v1/status", tag = "status", responses((status = 200, body = Status)))]
async fn status(State(s): State<SharedState>, Bearer(c): Bearer) -> Result<axum::Json<Status>, ApiError> {
    need_room_admin(&c, &s.cfg.room)?;
    let store = s.store.call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)).await.is_ok();
    let stats = match &s.sfu {
        Some(sfu) => sfu.stats().await.ok(),
        None => None,
    };
    let sfu = SfuStatus {
        running: stats.is_some(),
        rooms: stats.as_ref().map(|x| x.rooms).unwrap_or(0),
        participants: stats.as_ref().map(|x| x.participants).unwrap_or(0),
        forwarded_packets: stats.as_ref().map(|x| x.forwarded_packets).unwrap_or(0),
        forwarded_bytes: stats.as_ref().map(|x| x.forwarded_bytes).unwrap_or(0),
        dropped_packets: stats.as_ref().map(|x| x.dropped_packets).unwrap_or(0),
    };
    Ok(axum::Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        server_id: s.server_id.clone(),
        region: s.cfg.region.clone(),
        board: s.cfg.board.clone(),
        uptime_secs: s.started.elapsed().as_secs(),
        store,
        sfu,
        device: s.device.state(),
        active_meetings: s.metrics.active_meetings(),
        fleet: s.fleet.status(),
    }))
}
