//! The web client's files, compiled into the binary (see `build.rs`).
//!
//! The URL path is compared byte for byte with the table's names: nothing is
//! decoded or joined to a directory, so `..`, `%2e%2e`, `//` or `\` can only
//! miss. `/`, `/display` and `/admin` map to `index.html`, `display.html` and
//! `admin.html` (the last two fall back to `index.html` while missing).
//! Every answer carries a strong ETag and `Cache-Control: no-cache`: browsers
//! revalidate (a 304 on the LAN costs nothing) and always run the client that
//! matches the daemon, which matters for the service worker.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The `Content-Type` for a file name.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        "map" => "application/json",
        _ => "application/octet-stream",
    }
}

pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn resolve(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/index.html" => find("/index.html"),
        "/display" | "/display/" => find("/display.html").or_else(|| find("/index.html")),
        "/admin" | "/admin/" => find("/admin.html").or_else(|| find("/index.html")),
        p => find(p),
    }
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().fallback(serve)
}

async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let Some(asset) = resolve(uri.path()) else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n")
            .into_response();
    };
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")]).into_response();
    }
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(asset.path)));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asset.path.ends_with(".html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
                 connect-src 'self' wss: ws:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; \
                 frame-ancestors 'none'",
            ),
        );
    }
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    if method == Method::HEAD {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
        return (StatusCode::OK, h).into_response();
    }
    (StatusCode::OK, h, asset.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_page_is_embedded() {
        let a = resolve("/").expect("index.html embedded");
        assert!(std::str::from_utf8(a.bytes).unwrap().contains("<title>roombox</title>"));
        assert_eq!(content_type(a.path), "text/html; charset=utf-8");
        assert_eq!(resolve("/display").map(|a| a.path), Some("/display.html"));
    }

    #[test]
    fn path_tricks_never_match() {
        for p in [
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "//index.html",
            "/.\\index.html",
            "/index.html/",
            "/web/index.html",
            "/build.rs",
        ] {
            assert!(resolve(p).is_none(), "{p}");
        }
    }
}
