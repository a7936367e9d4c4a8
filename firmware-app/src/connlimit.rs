//! Bounds on the HTTP(S) server's connections, so a slowloris or a flood of
//! half-open TLS handshakes cannot take the box's only web server: at most
//! `max_connections` open (and `max_connections_per_ip` from one address),
//! counted while the TLS handshake runs; the handshake and the request headers
//! each within a time (set on the server in `daemon.rs`). Every refusal and
//! timeout is counted in the daemon's registry.
//!
//! [`Admit`] is the innermost acceptor (it sees the TCP stream first); [`Watch`]
//! is the outermost (it sees the HTTP bytes, after TLS) and counts connections
//! that sent part of a request and were closed without a response.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The counters, registered once per daemon.
#[derive(Clone)]
pub struct ConnMetrics {
    /// `roombox_http_connections`: open now (TLS handshakes included).
    pub open: IntGauge,
    /// `roombox_http_connections_refused_total{reason}`: `max_connections`, `max_per_ip`.
    pub refused_total: IntCounter,
    pub refused_per_ip: IntCounter,
    /// `roombox_http_tls_handshakes_failed_total{reason}`: `timeout`, `error`.
    pub handshake_timeout: IntCounter,
    pub handshake_error: IntCounter,
    /// `roombox_http_requests_incomplete_total`: closed after part of a request
    /// and before any response (a header timeout, a client that gave up).
    pub incomplete: IntCounter,
}

impl ConnMetrics {
    pub fn register(registry: &Registry) -> Result<ConnMetrics, prometheus::Error> {
        let open =
            IntGauge::new("roombox_http_connections", "HTTP(S) connections open (TLS handshakes included)")?;
        let refused = IntCounterVec::new(
            Opts::new(
                "roombox_http_connections_refused_total",
                "connections closed at once because a connection limit was reached, by limit",
            ),
            &["reason"],
        )?;
        let handshake = IntCounterVec::new(
            Opts::new("roombox_http_tls_handshakes_failed_total", "TLS handshakes that failed, by reason"),
            &["reason"],
        )?;
        let incomplete = IntCounter::new(
            "roombox_http_requests_incomplete_total",
            "connections closed after part of a request and before any response (header timeout, abandoned)",
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(handshake.clone()))?;
        registry.register(Box::new(incomplete.clone()))?;
        Ok(ConnMetrics {
            open,
            refused_total: refused.with_label_values(&["max_connections"]),
            refused_per_ip: refused.with_label_values(&["max_per_ip"]),
            handshake_timeout: handshake.with_label_values(&["timeout"]),
            handshake_error: handshake.with_label_values(&["error"]),
            incomplete,
        })
    }

    /// For the server's `accept_error_handler`: a failed TLS handshake.
    pub fn accept_error(&self, e: &io::Error) {
        if e.get_ref().is_some_and(|r| r.is::<Refused>()) {
            return; // counted by `Admit`
        }
        if e.kind() == io::ErrorKind::TimedOut {
            self.handshake_timeout.inc();
        } else {
            self.handshake_error.inc();
        }
    }
}

/// A connection refused by a limit (the error `Admit` returns).
#[derive(Debug, thiserror::Error)]
#[error("connection limit reached")]
pub struct Refused;

struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The innermost acceptor: admits a TCP connection when under both limits,
/// else closes it at once.
#[derive(Clone)]
pub struct Admit {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
    metrics: ConnMetrics,
}

impl Admit {
    pub fn new(max_total: usize, max_per_ip: usize, metrics: ConnMetrics) -> Admit {
        Admit {
            max_total,
            max_per_ip,
            counts: Arc::new(Mutex::new(Counts { total: 0, per_ip: HashMap::new() })),
            metrics,
        }
    }
}

/// Holds one admitted connection's place until it drops.
pub struct Slot {
    ip: Option<IpAddr>,
    counts: Arc<Mutex<Counts>>,
    open: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = c.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
        self.open.dec();
    }
}

impl<S> Accept<TcpStream, S> for Admit {
    type Stream = Admitted<TcpStream>;
    type Service = S;
    type Future = Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let ip = stream.peer_addr().ok().map(|a| a.ip());
        let mut c = self.counts.lock();
        if c.total >= self.max_total {
            self.metrics.refused_total.inc();
            return ready(Err(io::Error::other(Refused)));
        }
        if let Some(ip) = ip {
            let n = c.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                self.metrics.refused_per_ip.inc();
                return ready(Err(io::Error::other(Refused)));
            }
            *n += 1;
        }
        c.total += 1;
        drop(c);
        self.metrics.open.inc();
        let slot = Slot { ip, counts: self.counts.clone(), open: self.metrics.open.clone() };
        ready(Ok((Admitted { inner: stream, _slot: slot }, service)))
    }
}

/// A stream holding its connection's [`Slot`].
pub struct Admitted<T> {
    inner: T,
    _slot: Slot,
}

impl<T: AsyncRead + Unpin> AsyncRead for Admitted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Admitted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The outermost acceptor: wraps the HTTP byte stream to see whether a
/// request was started and never answered.
#[derive(Clone)]
pub struct Watch<A> {
    inner: A,
    incomplete: IntCounter,
}

impl<A> Watch<A> {
    pub fn new(inner: A, metrics: &ConnMetrics) -> Watch<A> {
        Watch { inner, incomplete: metrics.incomplete.clone() }
    }
}

impl<A, I, S> Accept<I, S> for Watch<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Watched<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let fut = self.inner.accept(stream, service);
        let incomplete = self.incomplete.clone();
        Box::pin(async move {
            let (s, svc) = fut.await?;
            Ok((Watched { inner: s, read: false, written: false, incomplete }, svc))
        })
    }
}

/// A stream that remembers whether it read and wrote any byte.
pub struct Watched<T> {
    inner: T,
    read: bool,
    written: bool,
    incomplete: IntCounter,
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        if self.read && !self.written {
            self.incomplete.inc();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.read = true;
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.written = true;
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.written = true;
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(l: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn admits_up_to_the_per_ip_limit_counts_refusals_and_frees_slots_on_close() {
        let registry = Registry::new();
        let m = ConnMetrics::register(&registry).unwrap();
        let admit = Admit::new(10, 2, m.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut held = Vec::new();
        for _ in 0..2 {
            let (c, s) = pair(&l).await;
            let (stream, ()) = admit.accept(s, ()).into_inner().expect("under the limit");
            held.push((c, stream));
        }
        assert_eq!(m.open.get(), 2);
        let (_c, s) = pair(&l).await;
        let e = admit.accept(s, ()).into_inner().err().expect("past the per-IP limit");
        assert!(e.get_ref().is_some_and(|r| r.is::<Refused>()), "{e}");
        assert_eq!(m.refused_per_ip.get(), 1);
        // a refusal is not counted again as a handshake failure
        m.accept_error(&e);
        assert_eq!(m.handshake_error.get() + m.handshake_timeout.get(), 0);
        held.pop();
        assert_eq!(m.open.get(), 1);
        let (_c2, s) = pair(&l).await;
        assert!(admit.accept(s, ()).into_inner().is_ok(), "a closed connection frees its slot");
    }

    #[tokio::test]
    async fn the_total_limit_holds_across_addresses_and_timeouts_are_counted() {
        let registry = Registry::new();
        let m = ConnMetrics::register(&registry).unwrap();
        let admit = Admit::new(1, 8, m.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_c1, s1) = pair(&l).await;
        let _a = admit.accept(s1, ()).into_inner().unwrap();
        let (_c2, s2) = pair(&l).await;
        assert!(admit.accept(s2, ()).into_inner().is_err());
        assert_eq!(m.refused_total.get(), 1);
        m.accept_error(&io::Error::new(io::ErrorKind::TimedOut, "handshake"));
        assert_eq!(m.handshake_timeout.get(), 1);
    }
}
