//! Hardening of the HTTP edge, shared by the `sfu` binary and `roomboxd`:
//! oversized bodies answered with a clean 413, security headers on every
//! response, and per-client-IP rate limits (429 + `Retry-After`).
//!
//! ## Oversized bodies: respond, then close — and let the client read it
//!
//! A handler that refuses a body (too large, or not wanted at all) drops it
//! unread. hyper then tries one cheap read and, when the client is still
//! sending, closes the socket with unread bytes in its receive buffer: the
//! kernel answers with a TCP RST, which can reach the client before it read
//! the 413, so a client sending 10 MB saw "connection reset" and no status.
//! [`guard`] fixes that at the root:
//! * a request whose `Content-Length` is over the limit gets its 413 at once,
//!   without reading the body;
//! * every request body is wrapped so that, when it is dropped unread, a task
//!   goes on reading and discarding it — at most [`DRAIN_MAX_BYTES`] for at
//!   most [`DRAIN_MAX_TIME`] — so the response is written, the client's upload
//!   ends, and the connection closes with a FIN instead of a RST;
//! * with `Expect: 100-continue` the body is *not* drained: hyper then never
//!   sends `100 Continue`, and the client never sends the body at all;
//! * a 413 carries `Connection: close` (HTTP/1.x).
//!
//! ## Security headers
//! [`security_headers`] sets a strict Content-Security-Policy (no inline
//! scripts or styles, `frame-ancestors 'none'`), `X-Content-Type-Options`,
//! `Referrer-Policy`, `X-Frame-Options`, and HSTS when served over HTTPS.
//!
//! ## Rate limits
//! [`RateLimiter`] is a sans-IO token bucket per client IP (time is a
//! parameter); [`guard`] applies it to the paths [`GuardConfig::limited`] picks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use prometheus::IntCounterVec;

/// Most bytes of an unwanted body read and discarded so the client gets its response.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Longest time spent reading and discarding an unwanted body.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// The Content-Security-Policy of every response: scripts, styles, images
/// and connections from the box itself only (WebSocket included), nothing
/// inline, no plugins, never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
media-src 'self' blob:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// HSTS for responses served over HTTPS (one year; the box's own name only).
pub const HSTS: &str = "max-age=31536000";

/// Insert the security headers into `headers` (`https`: also HSTS).
pub fn security_headers(headers: &mut HeaderMap, https: bool) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if https {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
}

// ---------------------------------------------------------------------------
// Rate limits

/// A per-IP token bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

/// Sans-IO per-IP rate limiter: [`check`](Self::check) takes `now`.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<IpAddr, (f64, Instant)>,
    max_clients: usize,
}

impl RateLimiter {
    /// At most `max_clients` addresses are remembered; full buckets are
    /// forgotten first, and beyond that new addresses are let through (a LAN
    /// has few addresses; memory stays bounded whatever arrives).
    pub fn new(limit: RateLimit, max_clients: usize) -> Self {
        RateLimiter { limit, buckets: HashMap::new(), max_clients }
    }

    /// Take one request for `ip` at `now`: `Err(retry_after)` when its bucket is empty.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = self.limit.per_minute as f64 / 60.0;
        let burst = self.limit.burst.max(1) as f64;
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_clients {
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= self.max_clients {
                return Ok(());
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if rate <= 0.0 {
            Err(Duration::from_secs(60))
        } else {
            Err(Duration::from_secs_f64(((1.0 - *tokens) / rate).ceil().max(1.0)))
        }
    }

    /// How many addresses are remembered.
    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

// ---------------------------------------------------------------------------
// The middleware

/// What [`guard`] enforces.
#[derive(Clone)]
pub struct GuardConfig {
    /// Bodies larger than this are refused up front (413) by `Content-Length`.
    pub max_body_bytes: usize,
    /// Served over HTTPS (adds HSTS).
    pub https: bool,
    /// The rate limit, with the paths it applies to (`None`: no limit).
    pub rate_limit: Option<RateLimit>,
    /// Which paths count against the rate limit; returns the metric's `surface` label.
    pub limited: fn(&str) -> Option<&'static str>,
    /// `..._rate_limited_total{surface}`: requests answered 429.
    pub rate_limited: Option<IntCounterVec>,
}

impl GuardConfig {
    /// Signaling paths (`/whip`, `/whep`, `/ws`) count as `signaling`, `/api/` as `api`.
    pub fn default_surfaces(path: &str) -> Option<&'static str> {
        if path.starts_with("/whip/") || path.starts_with("/whep/") || path.starts_with("/ws/") {
            Some("signaling")
        } else if path.starts_with("/api/") {
            Some("api")
        } else {
            None
        }
    }
}

/// The state [`guard`] runs with (clone it into the middleware closure).
#[derive(Clone)]
pub struct Guard {
    cfg: GuardConfig,
    limiter: Option<Arc<Mutex<RateLimiter>>>,
}

/// Addresses a limiter remembers at most.
const MAX_CLIENTS: usize = 4096;

impl Guard {
    pub fn new(cfg: GuardConfig) -> Self {
        let limiter = cfg.rate_limit.map(|l| Arc::new(Mutex::new(RateLimiter::new(l, MAX_CLIENTS))));
        Guard { cfg, limiter }
    }

    /// Wrap `router` in the guard (outermost layer: it sees every request).
    pub fn layer(self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let g = self.clone();
            async move { g.run(req, next).await }
        }))
    }

    async fn run(&self, req: Request, next: Next) -> Response {
        let http1 = req.version() <= Version::HTTP_11;
        let h = req.headers();
        let expects_continue = h
            .get(header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let declared =
            h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let has_body = declared.is_some_and(|n| n > 0) || h.contains_key(header::TRANSFER_ENCODING);
        let refusal = self.rate_check(&req).or_else(|| {
            declared
                .is_some_and(|n| n > self.cfg.max_body_bytes as u64)
                .then(|| too_large(self.cfg.max_body_bytes))
        });
        let (parts, body) = req.into_parts();
        // With `Expect: 100-continue` an unread body is simply dropped: hyper
        // then sends the final status instead of `100 Continue` and the client
        // never uploads. Without it, drain what the client is already sending.
        let body =
            if has_body && !expects_continue { Body::from_stream(DrainOnDrop::new(body)) } else { body };
        if let Some(resp) = refusal {
            drop(body);
            return self.finish(resp, http1);
        }
        let resp = next.run(Request::from_parts(parts, body)).await;
        self.finish(resp, http1)
    }

    fn rate_check(&self, req: &Request) -> Option<Response> {
        let limiter = self.limiter.as_ref()?;
        let surface = (self.cfg.limited)(req.uri().path())?;
        let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())?;
        let verdict = limiter.lock().ok()?.check(ip, Instant::now());
        let retry = verdict.err()?;
        if let Some(c) = &self.cfg.rate_limited {
            c.with_label_values(&[surface]).inc();
        }
        let secs = retry.as_secs().max(1);
        let mut r = error_json(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!("too many requests from this address; retry in {secs} s"),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        Some(r)
    }

    fn finish(&self, mut resp: Response, http1: bool) -> Response {
        if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && http1 {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        security_headers(resp.headers_mut(), self.cfg.https);
        resp
    }
}

fn error_json(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

fn too_large(limit: usize) -> Response {
    error_json(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is too large (at most {limit} bytes)"),
    )
}

/// A request body that, dropped before its end, is read to its end (bounded)
/// by a task of its own, so the client's upload finishes and it reads the
/// response instead of a TCP reset.
struct DrainOnDrop {
    inner: Option<axum::body::BodyDataStream>,
    ended: bool,
}

impl DrainOnDrop {
    fn new(body: Body) -> Self {
        DrainOnDrop { inner: Some(body.into_data_stream()), ended: false }
    }
}

impl Stream for DrainOnDrop {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = inner.poll_next_unpin(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        r
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let drain = async {
                let mut n = 0u64;
                while let Some(Ok(chunk)) = inner.next().await {
                    n += chunk.len() as u64;
                    if n > DRAIN_MAX_BYTES {
                        break;
                    }
                }
                n
            };
            match tokio::time::timeout(DRAIN_MAX_TIME, drain).await {
                Ok(n) => tracing::debug!(bytes = n, "drained an unread request body"),
                Err(_) => tracing::debug!("gave up draining an unread request body"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_burst_passes_then_requests_wait_for_the_refill() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit { per_minute: 60, burst: 3 }, 16);
        for _ in 0..3 {
            assert_eq!(l.check(ip(1), t0), Ok(()));
        }
        assert_eq!(l.check(ip(1), t0), Err(Duration::from_secs(1)));
        assert_eq!(l.check(ip(2), t0), Ok(()), "another address has its own bucket");
        assert_eq!(l.check(ip(1), t0 + Duration::from_millis(1000)), Ok(()), "one token per second");
        assert!(l.check(ip(1), t0 + Duration::from_millis(1000)).is_err());
    }

    #[test]
    fn memory_stays_bounded_and_idle_addresses_are_forgotten_first() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit { per_minute: 60, burst: 2 }, 4);
        for n in 0..4 {
            l.check(ip(n), t0).unwrap();
        }
        assert_eq!(l.clients(), 4);
        // Nobody's bucket is full yet: a fifth address passes without being remembered.
        assert_eq!(l.check(ip(9), t0), Ok(()));
        assert_eq!(l.clients(), 4);
        // Two seconds later every bucket has refilled: they are forgotten to make room.
        assert_eq!(l.check(ip(9), t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(l.clients(), 1);
    }

    #[test]
    fn the_csp_allows_nothing_inline() {
        assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        let mut h = HeaderMap::new();
        security_headers(&mut h, false);
        assert!(h.get(header::STRICT_TRANSPORT_SECURITY).is_none(), "no HSTS over plain HTTP");
        security_headers(&mut h, true);
        assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], HSTS);
    }
}
