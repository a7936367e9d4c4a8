//! The HTTP(S) edge: the REST API under `/api/v1`, `/metrics`, `/healthz`,
//! `/readyz`, the web client's files, and the SFU's signaling routes.
//!
//! Every error is JSON: `{"error": {"code": "...", "message": "..."}}`.
//! Bodies are capped (`http.max_body_bytes`), JSON bodies must say
//! `Content-Type: application/json`, names in paths are validated before use,
//! and the web client's files come from a table compiled into the binary (no
//! file system path is ever built from a URL).

pub mod api;
pub mod assets;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sfu_core::auth::{AuthError, Claims};

use crate::auth::{Auth, AuthServiceError, unix_now};
use crate::config::DaemonConfig;
use crate::device::Device;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Everything a handler may touch.
pub struct AppState {
    pub cfg: Arc<DaemonConfig>,
    pub auth: Arc<Auth>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// `None` while the SFU is not running (it failed to start, or shut down).
    pub sfu: Option<sfu_core::Sfu>,
    pub device: Arc<Device>,
    pub started: Instant,
    pub server_id: String,
    /// Server-side recordings (start/stop, crash recovery).
    pub recordings: Arc<crate::recording::Recordings>,
    /// The MQTT fleet link's state (off unless `[cloud.fleet]` is configured).
    pub fleet: crate::fleet::FleetView,
}

pub type SharedState = Arc<AppState>;

/// The whole router (the SFU's signaling routes merged in).
pub fn router(state: SharedState) -> Router {
    let max_body = state.cfg.http.max_body_bytes;
    let http = &state.cfg.http;
    let guard = sfu_core::httpguard::Guard::new(sfu_core::httpguard::GuardConfig {
        // The largest body any route takes: smaller route limits still apply.
        max_body_bytes: max_body.max(state.cfg.sfu.limits.max_body_bytes),
        https: http.tls,
        rate_limit: (http.rate_limit_per_minute > 0).then_some(sfu_core::httpguard::RateLimit {
            per_minute: http.rate_limit_per_minute,
            burst: http.rate_limit_burst,
        }),
        limited: sfu_core::httpguard::GuardConfig::default_surfaces,
        rate_limited: Some(state.metrics.http_rate_limited.clone()),
    });
    let sfu_routes = state.sfu.as_ref().map(|s| s.router());
    let metrics = state.metrics.clone();
    let mut r = Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics_handler))
        .nest("/api/v1", api::routes())
        .merge(assets::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    if let Some(s) = sfu_routes {
        r = r.merge(s);
    }
    // The guard sees every request: oversized bodies, rate limits and the security
    // headers (CSP, HSTS, nosniff, Referrer-Policy, framing) on every response.
    let r = guard.layer(r);
    r.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let metrics = metrics.clone();
        async move {
            let api = req.uri().path().starts_with("/api/");
            let mut resp = next.run(req).await;
            let class = match resp.status().as_u16() {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            metrics.http_requests.with_label_values(&[class]).inc();
            if api {
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            resp
        }
    }))
}

/// `GET /healthz`: the process is alive and serving.
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "alive" }))
}

/// Readiness detail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub store: bool,
    pub sfu: bool,
    pub media: bool,
}

/// What `/readyz` says (also what a desired config's trial waits for).
pub async fn readiness(s: &AppState) -> Readiness {
    let store = s.store.call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)).await.is_ok();
    let sfu = s.sfu.is_some();
    let media = s.device.media_ready();
    Readiness { ready: store && sfu && media, store, sfu, media }
}

/// `GET /readyz`: 200 when the store answers, the SFU runs and the media pipeline runs.
async fn readyz(State(s): State<SharedState>) -> Response {
    let body = readiness(&s).await;
    let ready = body.ready;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics_handler(State(s): State<SharedState>) -> Response {
    match s.metrics.render() {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

// ---------------------------------------------------------------------------
// Errors

/// The body of every error.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`unauthorized`, `bad_json`, …).
    pub code: String,
    /// For people.
    pub message: String,
}

/// An API error: status, code, message, maybe `Retry-After`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(code: &'static str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
    pub fn sfu_unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "sfu_unavailable", "the SFU is not running")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let code = match &e {
            AuthError::Missing => "unauthorized",
            AuthError::Expired { .. } => "token_expired",
            AuthError::Revoked => "token_revoked",
            AuthError::WrongRoom { .. } => "wrong_room",
            AuthError::MissingGrant(_) => "missing_grant",
            _ => "invalid_token",
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full | StoreError::WriteFailed => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", e.to_string())
            }
            StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
            StoreError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_error", other.to_string()),
        }
    }
}

impl From<AuthServiceError> for ApiError {
    fn from(e: AuthServiceError) -> Self {
        match e {
            AuthServiceError::Token(t) => t.into(),
            AuthServiceError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", "wrong username or password")
            }
            AuthServiceError::RateLimited { retry_after_secs } => ApiError {
                retry_after: Some(retry_after_secs),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many login attempts; retry in {retry_after_secs} s"),
                )
            },
            AuthServiceError::BadRefresh => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_refresh_token", e.to_string())
            }
            AuthServiceError::RefreshReuse => {
                ApiError::new(StatusCode::UNAUTHORIZED, "refresh_token_reused", e.to_string())
            }
            AuthServiceError::BadDisplay => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_display_credential", e.to_string())
            }
            AuthServiceError::BadRequest(m) => ApiError::bad_request("bad_request", m),
            AuthServiceError::Store(s) => s.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<sfu_core::SfuError> for ApiError {
    fn from(e: sfu_core::SfuError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match &e {
            sfu_core::SfuError::NoSuchRoom(_) | sfu_core::SfuError::NoSuchParticipant { .. } => "not_found",
            sfu_core::SfuError::NotRunning => "sfu_unavailable",
            _ => "sfu_error",
        };
        let status = if matches!(e, sfu_core::SfuError::NotRunning) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            status
        };
        ApiError::new(status, code, e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Extractors

/// A JSON body: `Content-Type: application/json`, within the size limit,
/// well-formed, and of the right shape — or a JSON error saying which.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Every request body is a JSON object: serde would also take a struct
        // written as an array (`[null, null]`), which the API does not document.
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rej) => return Err(json_rejection(rej)),
        };
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", e.to_string()))
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let status = rej.status();
    let text = rej.body_text();
    match rej {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("bad_json", text),
        JsonRejection::JsonDataError(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", text)
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
        }
        _ => ApiError::new(status, "bad_body", text),
    }
}

/// Path parameters with JSON errors.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("bad_path", e.body_text()))
    }
}

/// Query parameters with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiQuery(p.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("bad_query", e.body_text()))
    }
}

/// The verified claims of the request's bearer token.
pub struct Bearer(pub Claims);

impl FromRequestParts<SharedState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &SharedState,
    ) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".into()))?;
        let token = sfu_core::auth::bearer(value)?;
        Ok(Bearer(state.auth.verify(token, unix_now())?))
    }
}

/// The client's address (for rate limits and the audit log).
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(ip))
    }
}
