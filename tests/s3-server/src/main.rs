//! `roombox-s3-test-server ROOT PORT LOG FAULTS ACCESS_KEY SECRET_KEY`: a real
//! S3 server for the upload tests. `s3s-fs` serves `ROOT` (one directory per
//! bucket; file-backed multipart that survives a restart; SigV4 checked with the
//! given key pair) on `127.0.0.1:PORT` (0 = any; prints `listening N`). A thin
//! front in the same process appends `part N` to `LOG` for every part the server
//! accepted (the tests count parts server side, across restarts) and `complete`
//! for every completed upload, and injects `FAULTS` (comma-separated):
//! `fail500=K` (the first K part uploads get 500 InternalError), `bad_etag_part=N`
//! (part N's first answer carries a wrong ETag), `bad_etag_always`,
//! `slow_complete` (the first CompleteMultipartUpload answer trickles at one byte
//! per 400 ms).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

#[derive(Default)]
struct Faults {
    /// Fail this many part uploads with 500 before letting them through.
    fail500: u32,
    /// Give this part a wrong ETag once.
    bad_etag_part: Option<u32>,
    /// Give every part a wrong ETag.
    bad_etag_always: bool,
    /// Trickle the first CompleteMultipartUpload answer (1 byte / 400 ms).
    slow_complete: bool,
}

impl Faults {
    fn parse(s: &str) -> Faults {
        let mut f = Faults::default();
        for item in s.split(',').filter(|x| !x.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            match k {
                "fail500" => f.fail500 = v.parse().unwrap(),
                "bad_etag_part" => f.bad_etag_part = Some(v.parse().unwrap()),
                "bad_etag_always" => f.bad_etag_always = true,
                "slow_complete" => f.slow_complete = true,
                _ => panic!("unknown fault {k:?}"),
            }
        }
        f
    }
}

struct Front {
    s3: s3s::service::S3Service,
    log: PathBuf,
    faults: Mutex<Faults>,
}

fn log_line(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// A body that sends its bytes one at a time, 400 ms apart.
struct Slow {
    data: Bytes,
    pos: usize,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Slow {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.pos >= self.data.len() {
            return Poll::Ready(None);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let next = tokio::time::Instant::now() + Duration::from_millis(400);
                self.sleep.as_mut().reset(next);
                let b = self.data.slice(self.pos..self.pos + 1);
                self.pos += 1;
                Poll::Ready(Some(Ok(http_body::Frame::data(b))))
            }
        }
    }
}

async fn front(
    st: Arc<Front>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<s3s::Body>, std::convert::Infallible> {
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_owned();
    let part: Option<u32> = (method == hyper::Method::PUT)
        .then(|| query.split('&').find_map(|kv| kv.strip_prefix("partNumber=")).and_then(|n| n.parse().ok()))
        .flatten();
    let is_complete = method == hyper::Method::POST && query.contains("uploadId=");
    if part.is_some() {
        let fail = {
            let mut f = st.faults.lock().unwrap();
            let fail = f.fail500 > 0;
            f.fail500 = f.fail500.saturating_sub(1);
            fail
        };
        if fail {
            // read the body first, as a server does, so the client sees the answer
            let _ = s3s::Body::from(req.into_body()).store_all_limited(64 << 20).await;
            let body = "<Error><Code>InternalError</Code><Message>injected by the test</Message></Error>";
            return Ok(hyper::Response::builder()
                .status(500)
                .body(s3s::Body::from(body.to_owned()))
                .unwrap());
        }
    }
    let mut resp = match st.s3.call(req.map(s3s::Body::from)).await {
        Ok(r) => r,
        Err(e) => {
            return Ok(hyper::Response::builder()
                .status(500)
                .body(s3s::Body::from(format!("{e:?}")))
                .unwrap());
        }
    };
    if let Some(n) = part
        && resp.status().is_success()
    {
        log_line(&st.log, &format!("part {n}"));
        let mut f = st.faults.lock().unwrap();
        if f.bad_etag_always || f.bad_etag_part == Some(n) {
            f.bad_etag_part = None;
            resp.headers_mut().insert("etag", "\"0123456789abcdef0123456789abcdef\"".parse().unwrap());
        }
    }
    if is_complete && resp.status().is_success() {
        log_line(&st.log, "complete");
        let slow = std::mem::take(&mut st.faults.lock().unwrap().slow_complete);
        if slow {
            let (parts, mut body) = resp.into_parts();
            let data = body.store_all_limited(1 << 20).await.unwrap_or_default();
            let sleep = Box::pin(tokio::time::sleep(Duration::ZERO));
            return Ok(hyper::Response::from_parts(
                parts,
                s3s::Body::http_body(Slow { data, pos: 0, sleep }),
            ));
        }
    }
    Ok(resp)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 {
        eprintln!("usage: roombox-s3-test-server ROOT PORT LOG FAULTS ACCESS_KEY SECRET_KEY");
        std::process::exit(2);
    }
    let root = PathBuf::from(&args[0]);
    let port: u16 = args[1].parse().expect("PORT: a number");
    let log = PathBuf::from(&args[2]);
    let faults = Faults::parse(&args[3]);
    let (ak, sk) = (args[4].clone(), args[5].clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let fs = s3s_fs::FileSystem::new(&root).expect("ROOT: a directory");
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ak, sk));
        let st = Arc::new(Front { s3: b.build(), log, faults: Mutex::new(faults) });
        // S3_TEST_BIND: another address (a test that runs the server in a network namespace)
        let host = std::env::var("S3_TEST_BIND").unwrap_or_else(|_| "127.0.0.1".into());
        let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await.expect("bind");
        println!("listening {}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| front(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
}
