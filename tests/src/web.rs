//! An in-process HTTP server for browser tests: the web client's files (with
//! the same routes `roomboxd` serves them on), the test pages under
//! `tests/pages/`, and optionally the SFU's signaling routes.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// `firmware-app/web/`: the web client's static files.
pub fn web_client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-app/web")
}

/// `tests/pages/`: pages written for the tests.
pub fn test_pages_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pages")
}

/// The web client's routes: page routes to files (as `roomboxd` maps them).
pub const PAGE_ROUTES: &[(&str, &str)] =
    &[("/", "index.html"), ("/display", "display.html"), ("/admin", "admin.html")];

/// A running server; stopped on drop.
pub struct WebServer {
    pub addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl WebServer {
    /// Serve the web client at `/`, the test pages at `/pages/…`, and `extra`
    /// (e.g. the SFU's router) on `bind` (port 0 picks one).
    pub async fn start(bind: SocketAddr, extra: Option<Router>) -> anyhow::Result<WebServer> {
        let mut app = Router::new();
        if let Some(extra) = extra {
            app = app.merge(extra);
        }
        let app = app.fallback(serve_file);
        let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("bind {bind}"))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("test web server stopped: {e}");
            }
        });
        Ok(WebServer { addr, task: Some(task) })
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl WebServer {
    /// Stop accepting connections; the port is free when this returns.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve_file(uri: Uri) -> Response {
    let path = uri.path();
    let file = if let Some(rest) = path.strip_prefix("/pages/") {
        safe_join(&test_pages_dir(), rest)
    } else if let Some((_, f)) = PAGE_ROUTES.iter().find(|(r, _)| *r == path) {
        Some(web_client_dir().join(f))
    } else {
        safe_join(&web_client_dir(), path.trim_start_matches('/'))
    };
    let Some(file) = file else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

/// Content type by file extension, as the daemon serves them.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}
