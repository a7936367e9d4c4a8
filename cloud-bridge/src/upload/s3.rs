//! The S3 edge: runs one [`Action`] over `reqwest` (path-style URLs, SigV4),
//! reading the file's bytes, pacing bodies through the [`TokenBucket`], and
//! turning every answer into an [`Event`] — a failure with its kind and the
//! server's own words, never a panic.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::sigv4::{self, Credentials, EMPTY_SHA256};
use super::{Action, Event, Failure, FailureKind, HeadInfo, TokenBucket, UploadError, xml};
use crate::UploadConfig;

/// Bytes per paced write.
const CHUNK: usize = 64 * 1024;

/// Read a credentials file: TOML with `access_key_id` and `secret_access_key`,
/// refused if group or others may read it.
pub fn load_credentials(path: &Path) -> Result<Credentials, UploadError> {
    let err = |detail: String| UploadError::Credentials { path: path.display().to_string(), detail };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!("mode {mode:04o} lets others read the secret; chmod 600 it")));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        access_key_id: String,
        secret_access_key: String,
    }
    let f: File =
        toml::from_str(&text).map_err(|e| err(format!("not a credentials file: {}", e.message())))?;
    if f.access_key_id.is_empty() || f.secret_access_key.is_empty() {
        return Err(err("access_key_id and secret_access_key must not be empty".into()));
    }
    Ok(Credentials { access_key_id: f.access_key_id, secret_access_key: f.secret_access_key })
}

/// A signed S3 client for one bucket.
#[derive(Debug, Clone)]
pub struct S3Client {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    bucket: String,
    region: String,
    creds: Credentials,
    timeout: Duration,
}

/// An answer we read: status, headers, body text (bounded).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl S3Client {
    pub fn new(cfg: &UploadConfig, creds: Credentials) -> Result<S3Client, UploadError> {
        let url = reqwest::Url::parse(&cfg.endpoint)
            .map_err(|e| UploadError::Endpoint { endpoint: cfg.endpoint.clone(), detail: e.to_string() })?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(UploadError::Endpoint {
                    endpoint: cfg.endpoint.clone(),
                    detail: "no host".into(),
                });
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(S3Client {
            http,
            endpoint: cfg.endpoint.trim_end_matches('/').to_owned(),
            host,
            bucket: cfg.bucket.clone(),
            region: cfg.region.clone(),
            creds,
            timeout: Duration::from_secs(cfg.request_timeout_s.max(1)),
        })
    }

    fn path(&self, key: &str) -> String {
        let key = key.trim_start_matches('/');
        if key.is_empty() { format!("/{}", self.bucket) } else { format!("/{}/{key}", self.bucket) }
    }

    /// One signed request. `body` is sent paced through `bucket` when given.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        key: &str,
        query: &[(String, String)],
        mut headers: Vec<(String, String)>,
        body: Bytes,
        pace: Option<&Arc<Mutex<TokenBucket>>>,
        what: &str,
    ) -> Result<Answer, Failure> {
        let path = self.path(key);
        let payload_sha = if body.is_empty() { EMPTY_SHA256.to_owned() } else { sigv4::sha256_hex(&body) };
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (_, amz_date) = sigv4::amz_dates(unix);
        headers.push(("host".into(), self.host.clone()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        headers.push(("x-amz-content-sha256".into(), payload_sha.clone()));
        let auth = sigv4::authorization(
            &self.creds,
            &self.region,
            &amz_date,
            &sigv4::Request {
                method: method.as_str(),
                path: &path,
                query,
                headers: &headers,
                payload_sha256: &payload_sha,
            },
        );
        let mut q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", sigv4::uri_encode(k, false), sigv4::uri_encode(v, false)))
            .collect();
        q.sort();
        let mut url = format!("{}{}", self.endpoint, sigv4::uri_encode(&path, true));
        if !q.is_empty() {
            url.push('?');
            url.push_str(&q.join("&"));
        }
        // time for the body at the cap, plus the request's own limit
        let rate = pace.and_then(|b| b.lock().ok().map(|b| b.rate())).unwrap_or(0);
        let body_time =
            if rate > 0 { Duration::from_secs_f64(body.len() as f64 / rate as f64) } else { Duration::ZERO };
        let mut rb = self.http.request(method.clone(), &url).timeout(self.timeout + body_time);
        for (k, v) in &headers {
            if k != "host" {
                rb = rb.header(k.as_str(), v.as_str());
            }
        }
        rb = rb.header("authorization", auth).header("content-length", body.len().to_string());
        let len = body.len();
        rb = match pace {
            Some(b) if len > 0 && rate > 0 => rb.body(reqwest::Body::wrap(PacedBody::start(body, b.clone()))),
            _ => rb.body(body),
        };
        let resp = rb.send().await.map_err(|e| transport_failure(&e, what))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| transport_failure(&e, what))?;
        let body = String::from_utf8_lossy(&bytes[..bytes.len().min(xml::MAX_XML)]).into_owned();
        Ok(Answer { status, headers, body })
    }

    /// Run one action (not `Wait`, `Park` or `Done`, which are the driver's).
    /// `file` is the local copy; `pace` the shared bandwidth cap.
    pub async fn execute(&self, action: &Action, file: &Path, pace: &Arc<Mutex<TokenBucket>>) -> Event {
        match self.execute_inner(action, file, pace).await {
            Ok(ev) => ev,
            Err(f) => Event::Failed(f),
        }
    }

    async fn execute_inner(
        &self,
        action: &Action,
        file: &Path,
        pace: &Arc<Mutex<TokenBucket>>,
    ) -> Result<Event, Failure> {
        match action {
            Action::Create { key, sha256 } => {
                let a = self
                    .send(
                        Method::POST,
                        key,
                        &[("uploads".into(), String::new())],
                        vec![("x-amz-meta-sha256".into(), sha256.clone())],
                        Bytes::new(),
                        None,
                        "create upload",
                    )
                    .await?;
                expect_ok(&a, "create upload")?;
                let upload_id =
                    xml::first(&a.body, "UploadId").filter(|s| !s.is_empty()).ok_or_else(|| Failure {
                        kind: FailureKind::Network,
                        detail: "create upload: the answer has no UploadId".into(),
                    })?;
                Ok(Event::Created { upload_id })
            }
            Action::PutWhole { key, len, sha256 } => {
                let (body, md5) = read_range(file, 0, *len).await?;
                let a = self
                    .send(
                        Method::PUT,
                        key,
                        &[],
                        vec![("content-md5".into(), b64(&md5)), ("x-amz-meta-sha256".into(), sha256.clone())],
                        body,
                        Some(pace),
                        "put object",
                    )
                    .await?;
                expect_ok(&a, "put object")?;
                Ok(Event::WholePut { etag: header(&a, "etag"), local_md5: hex::encode(md5) })
            }
            Action::UploadPart { key, upload_id, part } => {
                let (body, md5) = read_range(file, part.offset, part.len).await?;
                let what = format!("upload part {}", part.number);
                let a = self
                    .send(
                        Method::PUT,
                        key,
                        &[
                            ("partNumber".into(), part.number.to_string()),
                            ("uploadId".into(), upload_id.clone()),
                        ],
                        vec![("content-md5".into(), b64(&md5))],
                        body,
                        Some(pace),
                        &what,
                    )
                    .await?;
                expect_ok(&a, &what)?;
                Ok(Event::PartUploaded {
                    number: part.number,
                    etag: header(&a, "etag"),
                    local_md5: hex::encode(md5),
                })
            }
            Action::Complete { key, upload_id, parts } => {
                let mut x = String::from("<CompleteMultipartUpload>");
                for (n, e) in parts {
                    x.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>\"{e}\"</ETag></Part>"));
                }
                x.push_str("</CompleteMultipartUpload>");
                let a = self
                    .send(
                        Method::POST,
                        key,
                        &[("uploadId".into(), upload_id.clone())],
                        vec![("content-type".into(), "application/xml".into())],
                        Bytes::from(x),
                        None,
                        "complete upload",
                    )
                    .await?;
                expect_ok(&a, "complete upload")?;
                // S3 may answer 200 and put the error in the body
                if xml::first(&a.body, "Error").is_some() || xml::first(&a.body, "Code").is_some() {
                    return Err(status_failure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &a.body,
                        "complete upload",
                    ));
                }
                let etag = xml::first(&a.body, "ETag").ok_or_else(|| Failure {
                    kind: FailureKind::Network,
                    detail: "complete upload: the answer has no ETag".into(),
                })?;
                Ok(Event::Completed { etag })
            }
            Action::Verify { key } => {
                let a = self.send(Method::HEAD, key, &[], vec![], Bytes::new(), None, "head object").await?;
                if a.status == StatusCode::NOT_FOUND {
                    return Ok(Event::Head(None));
                }
                expect_ok(&a, "head object")?;
                let len = header(&a, "content-length").parse().unwrap_or(u64::MAX);
                let sha = header(&a, "x-amz-meta-sha256");
                Ok(Event::Head(Some(HeadInfo {
                    etag: header(&a, "etag"),
                    len,
                    sha256: (!sha.is_empty()).then_some(sha),
                })))
            }
            Action::Abort { key, upload_id } => {
                self.abort(key, upload_id).await?;
                Ok(Event::Aborted)
            }
            Action::DeleteLocal => {
                match tokio::fs::remove_file(file).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Failure {
                            kind: FailureKind::LocalIo,
                            detail: format!("delete {}: {e}", file.display()),
                        });
                    }
                }
                if let Some(dir) = file.parent()
                    && let Ok(d) = std::fs::File::open(dir)
                {
                    let _ = d.sync_all();
                }
                Ok(Event::LocalDeleted)
            }
            Action::Wait { .. } | Action::Park { .. } | Action::Done => {
                Err(Failure { kind: FailureKind::LocalIo, detail: "not an S3 action".into() })
            }
        }
    }

    /// AbortMultipartUpload.
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), Failure> {
        let a = self
            .send(
                Method::DELETE,
                key,
                &[("uploadId".into(), upload_id.to_owned())],
                vec![],
                Bytes::new(),
                None,
                "abort upload",
            )
            .await?;
        expect_ok(&a, "abort upload")
    }

    /// ListMultipartUploads under `prefix`: `Ok(None)` when the server does not
    /// implement it (s3s-fs, some on-prem stores).
    pub async fn list_uploads(&self, prefix: &str) -> Result<Option<Vec<(String, String)>>, Failure> {
        let a = self
            .send(
                Method::GET,
                "",
                &[("uploads".into(), String::new()), ("prefix".into(), prefix.to_owned())],
                vec![],
                Bytes::new(),
                None,
                "list uploads",
            )
            .await?;
        let code = xml::first(&a.body, "Code").unwrap_or_default();
        if a.status == StatusCode::NOT_IMPLEMENTED || code == "NotImplemented" {
            return Ok(None);
        }
        expect_ok(&a, "list uploads")?;
        Ok(Some(xml::list_uploads(&a.body)))
    }

    /// GET an object whole (tests and the benchmark read back what was sent).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, Failure> {
        let path = self.path(key);
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (_, amz_date) = sigv4::amz_dates(unix);
        let headers = vec![
            ("host".to_owned(), self.host.clone()),
            ("x-amz-date".to_owned(), amz_date.clone()),
            ("x-amz-content-sha256".to_owned(), EMPTY_SHA256.to_owned()),
        ];
        let auth = sigv4::authorization(
            &self.creds,
            &self.region,
            &amz_date,
            &sigv4::Request {
                method: "GET",
                path: &path,
                query: &[],
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
            },
        );
        let resp = self
            .http
            .get(format!("{}{}", self.endpoint, sigv4::uri_encode(&path, true)))
            .header("x-amz-date", amz_date)
            .header("x-amz-content-sha256", EMPTY_SHA256)
            .header("authorization", auth)
            .send()
            .await
            .map_err(|e| transport_failure(&e, "get object"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| transport_failure(&e, "get object"))?;
        if !status.is_success() {
            return Err(status_failure(status, &String::from_utf8_lossy(&bytes), "get object"));
        }
        Ok(bytes.to_vec())
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn header(a: &Answer, name: &str) -> String {
    a.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

fn expect_ok(a: &Answer, what: &str) -> Result<(), Failure> {
    if a.status.is_success() { Ok(()) } else { Err(status_failure(a.status, &a.body, what)) }
}

/// A non-2xx answer as a failure, keeping the server's code and message.
pub fn status_failure(status: StatusCode, body: &str, what: &str) -> Failure {
    let code = xml::first(body, "Code").unwrap_or_default();
    let message = xml::first(body, "Message").unwrap_or_default();
    let s = status.as_u16();
    let kind = match (s, code.as_str()) {
        (_, "NoSuchUpload") => FailureKind::NoSuchUpload,
        (_, "SlowDown") | (429, _) | (503, _) => FailureKind::Throttled,
        // the body did not arrive intact or in time: send it again
        (_, "BadDigest" | "XAmzContentSHA256Mismatch" | "IncompleteBody") => FailureKind::Network,
        (408, _) | (_, "RequestTimeout") => FailureKind::Timeout,
        (401 | 403, _) => FailureKind::Auth,
        (500..=599, _) => FailureKind::Server(s),
        _ => FailureKind::Rejected(s),
    };
    let mut detail = format!("{what}: HTTP {s}");
    if !code.is_empty() {
        detail.push_str(&format!(" {code}"));
    }
    if !message.is_empty() {
        detail.push_str(&format!(" ({})", message.chars().take(200).collect::<String>()));
    }
    Failure { kind, detail }
}

fn transport_failure(e: &reqwest::Error, what: &str) -> Failure {
    let kind = if e.is_timeout() {
        FailureKind::Timeout
    } else if e.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Network
    };
    // the URL carries nothing secret (the signature is in a header)
    let mut detail = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail.push_str(&format!(": {s}"));
        src = s.source();
    }
    Failure { kind, detail }
}

/// Read `len` bytes at `offset` and their MD5; the file must still be as long as planned.
async fn read_range(file: &Path, offset: u64, len: u64) -> Result<(Bytes, [u8; 16]), Failure> {
    let io = |e: std::io::Error| Failure {
        kind: FailureKind::LocalIo,
        detail: format!("read {}: {e}", file.display()),
    };
    let mut f = tokio::fs::File::open(file).await.map_err(io)?;
    let have = f.metadata().await.map_err(io)?.len();
    if have < offset + len {
        return Err(Failure {
            kind: FailureKind::LocalIo,
            detail: format!("{} is {have} bytes, shorter than planned ({})", file.display(), offset + len),
        });
    }
    f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).await.map_err(io)?;
    let md5: [u8; 16] = Md5::digest(&buf).into();
    Ok((Bytes::from(buf), md5))
}

/// A request body fed chunk by chunk as the token bucket allows.
struct PacedBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl PacedBody {
    fn start(body: Bytes, bucket: Arc<Mutex<TokenBucket>>) -> PacedBody {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let remaining = body.len() as u64;
        tokio::spawn(async move {
            let mut off = 0;
            while off < body.len() {
                let burst = bucket.lock().map(|b| b.burst() as usize).unwrap_or(CHUNK);
                let n = CHUNK.min(burst.max(1)).min(body.len() - off);
                loop {
                    let r = match bucket.lock() {
                        Ok(mut b) => b.take(n as u64, Instant::now()),
                        Err(_) => Ok(()),
                    };
                    match r {
                        Ok(()) => break,
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                }
                if tx.send(body.slice(off..off + n)).await.is_err() {
                    return; // the request was dropped (timeout, shutdown)
                }
                off += n;
            }
        });
        PacedBody { rx, remaining }
    }
}

impl http_body::Body for PacedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(http_body::Frame::data(b))))
            }
            Poll::Ready(None) if self.remaining > 0 => {
                Poll::Ready(Some(Err(std::io::Error::other("the paced body stopped early"))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}
