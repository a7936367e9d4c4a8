//! Recording upload against a real S3 server: `s3s-fs` (file-backed, real
//! multipart, SigV4 checked) run by these tests as a child process
//! (`roombox-s3-test-server`, tests/s3-server), so it can be killed and
//! restarted. In front of it, in the same process, a thin front counts the
//! parts the server accepted (`parts.log`, server side) and, when a test asks,
//! misbehaves: 500s, a wrong ETag, a slow body.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloud_bridge::UploadConfig;
use cloud_bridge::upload::s3::{S3Client, load_credentials};
use cloud_bridge::upload::{Action, Event};
use roombox::store::{Store, StoreOptions};
use roombox::upload::{Driver, UploadMetrics, UploadRow, queue};

const AK: &str = "roombox-test";
const SK: &str = "roombox-test-secret-0123456789";
const BUCKET: &str = "recordings";
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// The server (test side).

/// The server binary: beside this test's directory when the workspace was
/// built (`cargo test --workspace` builds every member's binaries); built
/// here when only this package's tests run.
fn s3_server_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("roombox-s3-test-server");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo)
                .args(["build", "--locked", "-p", "roombox-s3-test-server"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .unwrap();
            assert!(st.success(), "building roombox-s3-test-server failed");
        }
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

struct S3 {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
    log: PathBuf,
    faults: String,
    /// Where it listens (127.0.0.1, or the far end of a [`Link`]).
    host: String,
    /// Run inside this network namespace.
    netns: Option<String>,
}

impl S3 {
    fn start(dir: &Path, faults: &str) -> S3 {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let mut s = S3 {
            child: None,
            port: 0,
            root,
            log: dir.join("parts.log"),
            faults: faults.to_owned(),
            host: "127.0.0.1".into(),
            netns: None,
        };
        s.spawn();
        s
    }

    /// The server in the namespace at the far end of `link`.
    fn start_behind(dir: &Path, link: &Link) -> S3 {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let mut s = S3 {
            child: None,
            port: 0,
            root,
            log: dir.join("parts.log"),
            faults: String::new(),
            host: link.far_ip.clone(),
            netns: Some(link.netns.clone()),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            None => Command::new(s3_server_bin()),
            Some(ns) => {
                // `ip netns exec` execs the server: killing the child kills the server
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(s3_server_bin());
                c
            }
        };
        let mut child = cmd
            .env("S3_TEST_BIND", &self.host)
            .arg(&self.root)
            .arg(self.port.to_string())
            .arg(&self.log)
            .arg(&self.faults)
            .args([AK, SK])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("the S3 child prints its port").unwrap();
            if let Some(p) = line.strip_prefix("listening ") {
                break p.trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        self.port = port;
        self.child = Some(child);
    }

    /// SIGKILL: the server is gone (connections refused) until `spawn`.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// Part numbers the server accepted, in order, over every run of the server.
    fn parts(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("part ").and_then(|n| n.parse().ok()))
            .collect()
    }

    fn part_counts(&self) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for p in self.parts() {
            *m.entry(p).or_insert(0) += 1;
        }
        m
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A network namespace joined to ours by a veth pair: the far side of a WAN
/// link that can be cut. Deleted on drop.
struct Link {
    netns: String,
    far_dev: String,
    far_ip: String,
}

impl Link {
    fn create() -> Link {
        let pid = std::process::id();
        let net = pid % 250 + 1;
        let (netns, near_dev, far_dev) = (format!("rbxs3-{pid}"), format!("s3n{pid}"), format!("s3f{pid}"));
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip (apt-get install -y iproute2)");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        ip(&["netns", "add", &netns]);
        ip(&["link", "add", &near_dev, "type", "veth", "peer", "name", &far_dev]);
        ip(&["link", "set", &far_dev, "netns", &netns]);
        ip(&["addr", "add", &format!("10.253.{net}.1/24"), "dev", &near_dev]);
        ip(&["link", "set", &near_dev, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&["-n", &netns, "addr", "add", &format!("10.253.{net}.2/24"), "dev", &far_dev]);
        ip(&["-n", &netns, "link", "set", &far_dev, "up"]);
        Link { netns, far_dev, far_ip: format!("10.253.{net}.2") }
    }

    /// The far end down (`up = false`): what is sent goes nowhere, nothing
    /// answers, not even a refusal — a dead WAN, not a stopped server.
    fn set(&self, up: bool) {
        let st = Command::new("ip")
            .args(["-n", &self.netns, "link", "set", &self.far_dev, if up { "up" } else { "down" }])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // deleting the namespace deletes the veth pair with it
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// Deterministic bytes that differ per part (so a wrong part would show).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

fn credentials_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("s3-credentials.toml");
    std::fs::write(&p, format!("access_key_id = \"{AK}\"\nsecret_access_key = \"{SK}\"\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn upload_cfg(s3: &S3, dir: &Path, kbit: u64) -> UploadConfig {
    UploadConfig {
        endpoint: s3.endpoint(),
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        credentials_file: credentials_file(dir).to_string_lossy().into_owned(),
        key_prefix: String::new(),
        part_size_mib: 5,
        max_kbit_per_s: kbit,
        retry_base_ms: 100,
        retry_max_s: 2,
        retry_max_attempts: 60,
        park_s: 3600,
        request_timeout_s: 3,
    }
}

fn client(cfg: &UploadConfig) -> S3Client {
    S3Client::new(cfg, load_credentials(Path::new(&cfg.credentials_file)).unwrap()).unwrap()
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics: UploadMetrics,
}

impl Running {
    async fn end(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn start_driver(cfg: &UploadConfig, store: &Store) -> Running {
    let registry = prometheus::Registry::new();
    let metrics = UploadMetrics::register(&registry).unwrap();
    let mut d = Driver::new(cfg, store.clone(), metrics.clone()).unwrap();
    d.idle_poll = Duration::from_millis(100);
    let (stop, rx) = tokio::sync::watch::channel(false);
    Running { stop, task: tokio::spawn(d.run(rx)), metrics }
}

async fn wait_row(
    store: &Store,
    path: &Path,
    secs: u64,
    what: &str,
    f: impl Fn(&UploadRow) -> bool,
) -> UploadRow {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let row = store.upload(path).await.unwrap().expect("the row stays");
        if f(&row) {
            return row;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; row: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_done(store: &Store, path: &Path, secs: u64) -> UploadRow {
    wait_row(store, path, secs, "state done", |r| r.state == "done").await
}

async fn wait_parts(s3: &S3, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while s3.parts().len() < n {
        assert!(Instant::now() < deadline, "the server got {:?}, waiting for {n} parts", s3.parts());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A store in `dir` with `file` (of `len` bytes) queued as `key`.
async fn queued(dir: &Path, name: &str, len: usize, seed: u64) -> (Store, PathBuf, Vec<u8>) {
    let store = Store::open(&dir.join("roombox.db"), StoreOptions::default()).unwrap();
    let file = dir.join(name);
    let bytes = data(len, seed);
    std::fs::write(&file, &bytes).unwrap();
    assert!(store.enqueue_upload(&file, &format!("rec/{name}")).await.unwrap());
    (store, file, bytes)
}

async fn assert_object(cfg: &UploadConfig, key: &str, want: &[u8]) {
    let got = client(cfg).get(key).await.unwrap();
    assert_eq!(got.len(), want.len(), "object length");
    assert_eq!(sha256(&got), sha256(want), "object sha256 = the recording's");
}

fn failures(m: &UploadMetrics, reason: &str) -> u64 {
    m.failures.with_label_values(&[reason]).get()
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_uploaded_verified_and_only_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path(), "");
    let cfg = upload_cfg(&s3, dir.path(), 0);
    let (store, big, big_bytes) = queued(dir.path(), "big.mp4", 12 * MIB + 12_345, 1).await;
    let small = dir.path().join("small.mp4");
    let small_bytes = data(300_000, 2);
    std::fs::write(&small, &small_bytes).unwrap();
    store.enqueue_upload(&small, "rec/small.mp4").await.unwrap();
    // queuing again is a no-op
    assert!(!store.enqueue_upload(&small, "rec/small.mp4").await.unwrap());
    let run = start_driver(&cfg, &store);
    let row = wait_done(&store, &big, 60).await;
    wait_done(&store, &small, 60).await;
    assert_eq!(row.parts.len(), 3);
    assert!(!big.exists() && !small.exists(), "local copies go once verified");
    assert_object(&cfg, "rec/big.mp4", &big_bytes).await;
    assert_object(&cfg, "rec/small.mp4", &small_bytes).await;
    // three parts for the big file, each once; the small one went whole (no part)
    assert_eq!(s3.part_counts(), BTreeMap::from([(1, 1), (2, 1), (3, 1)]));
    assert_eq!(run.metrics.bytes.get(), (big_bytes.len() + small_bytes.len()) as u64);
    assert_eq!(run.metrics.queue_depth.get(), 0);
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_roomboxd_mid_upload_then_restart_resends_no_finished_part() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path(), "");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let len = 30 * MIB + 777;
    let (store, file, bytes) = queued(&data_dir, "meeting.mp4", len, 3).await;
    drop(store);
    // 40 Mbit/s: six 5 MiB parts take ~6 s, time enough to kill it in the middle
    let mut cfg = common_config(&data_dir);
    cfg.cloud.upload = Some(upload_cfg(&s3, dir.path(), 40_000));
    let cfg_file = dir.path().join("roombox.toml");
    std::fs::write(&cfg_file, toml::to_string(&cfg).unwrap()).unwrap();
    let run = |cfg_file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_roomboxd"))
            .args(["run", "--config"])
            .arg(cfg_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut daemon = run(&cfg_file);
    let db = data_dir.join("roombox.db");
    // Kill once the daemon has *recorded* two finished parts: the server counts a part when its
    // answer leaves, the daemon a moment later, so the server's count alone races the kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let recorded: i64 = rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM upload_parts", [], |r| r.get(0)))
            .unwrap_or(0);
        if recorded >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon recorded {recorded} parts; the server got {:?}",
            s3.parts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let finished_at_kill: Vec<u32> = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c.prepare("SELECT part_number FROM upload_parts ORDER BY part_number").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert!(finished_at_kill.len() >= 2, "parts recorded before the kill: {finished_at_kill:?}");
    assert!(file.exists(), "nothing deleted before verification");

    let mut daemon = run(&cfg_file);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state: String = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT state FROM uploads", [], |r| r.get(0))
            .unwrap();
        if state == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "not done after restart (state {state})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let counts = s3.part_counts();
    for p in &finished_at_kill {
        assert_eq!(counts[p], 1, "part {p} was finished before the kill and sent again: {counts:?}");
    }
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    // at most the part in flight at the kill went twice
    assert!(counts.values().sum::<usize>() <= 8, "{counts:?}");
    assert!(!file.exists());
    let ucfg = cfg.cloud.upload.unwrap();
    assert_object(&ucfg, "rec/meeting.mp4", &bytes).await;
}

fn common_config(data_dir: &Path) -> roombox::config::DaemonConfig {
    let mut cfg = roombox::config::DaemonConfig::default();
    cfg.data_dir = data_dir.to_owned();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.region = "test".into();
    cfg.server_id = "box-1".into();
    cfg.room = "demo".into();
    cfg.sfu.udp_bind = "127.0.0.1:0".parse().unwrap();
    cfg.sfu.tcp_bind = None;
    cfg.media.enabled = false;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_server_restarted_mid_upload_the_upload_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3::start(dir.path(), "");
    let cfg = upload_cfg(&s3, dir.path(), 40_000);
    let (store, file, bytes) = queued(dir.path(), "a.mp4", 20 * MIB, 4).await;
    let run = start_driver(&cfg, &store);
    wait_parts(&s3, 2, 60).await;
    s3.stop();
    s3.spawn(); // same port, same files: the open upload survives
    let row = wait_done(&store, &file, 90).await;
    assert_eq!(row.parts.len(), 4);
    let counts = s3.part_counts();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(counts[&1], 1, "a finished part is not sent again: {counts:?}");
    assert_object(&cfg, "rec/a.mp4", &bytes).await;
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_server_unreachable_for_30_s_the_upload_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3::start(dir.path(), "");
    let cfg = upload_cfg(&s3, dir.path(), 40_000);
    let (store, file, bytes) = queued(dir.path(), "b.mp4", 20 * MIB, 5).await;
    let run = start_driver(&cfg, &store);
    wait_parts(&s3, 1, 60).await;
    // The server is stopped (connections refused) for 30 s.
    s3.stop();
    let down = Instant::now();
    let row = wait_row(&store, &file, 30, "a failure recorded", |r| r.last_error.is_some()).await;
    assert!(row.last_error.unwrap().contains("connect"));
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    assert!(file.exists());
    let failed = failures(&run.metrics, "connect");
    assert!(failed >= 3, "retried while down: {failed} connect failures");
    s3.spawn();
    wait_done(&store, &file, 60).await;
    let counts = s3.part_counts();
    assert_eq!(counts[&1], 1, "{counts:?}");
    assert_object(&cfg, "rec/b.mp4", &bytes).await;
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_to_the_s3_server_down_for_30_s_the_upload_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::create();
    let s3 = S3::start_behind(dir.path(), &link);
    let cfg = upload_cfg(&s3, dir.path(), 40_000);
    let (store, file, bytes) = queued(dir.path(), "c.mp4", 20 * MIB, 6).await;
    let run = start_driver(&cfg, &store);
    wait_parts(&s3, 1, 60).await;
    // The link goes dead for 30 s: requests in flight and new connections time out.
    link.set(false);
    let down = Instant::now();
    let row = wait_row(&store, &file, 30, "a failure recorded", |r| r.last_error.is_some()).await;
    let err = row.last_error.unwrap();
    assert!(err.contains("timed out") || err.contains("timeout") || err.contains("connect"), "{err}");
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    assert!(file.exists(), "the local copy stays while the store is out of reach");
    assert!(store.upload(&file).await.unwrap().unwrap().state != "done");
    link.set(true);
    wait_done(&store, &file, 90).await;
    let counts = s3.part_counts();
    assert_eq!(counts[&1], 1, "the part finished before the outage was not sent again: {counts:?}");
    assert_object(&cfg, "rec/c.mp4", &bytes).await;
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_part_etag_is_caught_and_the_part_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path(), "bad_etag_part=2");
    let cfg = upload_cfg(&s3, dir.path(), 0);
    let (store, file, bytes) = queued(dir.path(), "c.mp4", 11 * MIB, 6).await;
    let run = start_driver(&cfg, &store);
    let row = wait_done(&store, &file, 60).await;
    assert!(row.last_error.as_deref().unwrap_or("").contains("not the MD5 we sent"), "{row:?}");
    assert_eq!(failures(&run.metrics, "bad_etag"), 1);
    assert_eq!(s3.part_counts(), BTreeMap::from([(1, 1), (2, 2), (3, 1)]));
    assert_object(&cfg, "rec/c.mp4", &bytes).await;
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_lies_about_etags_never_gets_the_local_copy_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path(), "bad_etag_always");
    let mut cfg = upload_cfg(&s3, dir.path(), 0);
    cfg.retry_max_attempts = 3;
    let (store, file, bytes) = queued(dir.path(), "d.mp4", 6 * MIB, 7).await;
    let run = start_driver(&cfg, &store);
    let row = wait_row(&store, &file, 60, "set aside", |r| r.state == "failed").await;
    assert!(row.last_error.unwrap().contains("bad_etag: part 1: server ETag"));
    assert!(row.parts.is_empty());
    assert!(row.next_attempt_at > roombox::auth::unix_now() as i64 + 3000, "parked for park_s");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the recording is intact");
    assert!(client(&cfg).get("rec/d.mp4").await.is_err(), "no object was completed");
    assert_eq!(failures(&run.metrics, "bad_etag"), 3);
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_500s_are_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path(), "fail500=3");
    let cfg = upload_cfg(&s3, dir.path(), 0);
    let (store, file, bytes) = queued(dir.path(), "e.mp4", 7 * MIB, 8).await;
    let run = start_driver(&cfg, &store);
    let row = wait_done(&store, &file, 60).await;
    assert!(row.last_error.unwrap().contains("HTTP 500 InternalError (injected by the test)"));
    assert_eq!(failures(&run.metrics, "server_error"), 3);
    assert_eq!(s3.part_counts(), BTreeMap::from([(1, 1), (2, 1)]));
    assert_object(&cfg, "rec/e.mp4", &bytes).await;
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_times_out_and_the_upload_still_completes_once() {
    // The first CompleteMultipartUpload answer trickles for longer than the
    // request timeout: the client gives up, retries, the server says the upload
    // is gone (it did complete), and a HEAD proves the object is ours.
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path(), "slow_complete");
    let cfg = upload_cfg(&s3, dir.path(), 0);
    let (store, file, bytes) = queued(dir.path(), "f.mp4", 6 * MIB, 9).await;
    let run = start_driver(&cfg, &store);
    let row = wait_done(&store, &file, 60).await;
    assert_eq!(failures(&run.metrics, "timeout"), 1);
    // s3s-fs answers a completed upload's id with 403 (S3: 404 NoSuchUpload); either way a HEAD decides
    assert_eq!(failures(&run.metrics, "no_such_upload") + failures(&run.metrics, "auth"), 1);
    assert!(row.last_error.unwrap().contains("complete upload: HTTP 40"));
    assert_eq!(s3.part_counts(), BTreeMap::from([(1, 1), (2, 1)]), "no part sent twice");
    assert_object(&cfg, "rec/f.mp4", &bytes).await;
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_set_aside_with_a_clear_error_and_the_row_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path(), "");
    let cfg = upload_cfg(&s3, dir.path(), 0);
    let (store, file, _) = queued(dir.path(), "g.mp4", 1000, 10).await;
    std::fs::remove_file(&file).unwrap();
    let run = start_driver(&cfg, &store);
    let row = wait_row(&store, &file, 30, "set aside", |r| r.state == "failed").await;
    assert!(row.last_error.unwrap().contains("No such file"));
    assert_eq!(failures(&run.metrics, "local_io"), 1);
    run.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_are_aborted_by_the_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path(), "");
    let cfg = upload_cfg(&s3, dir.path(), 0);
    let c = client(&cfg);
    let pace = Arc::new(Mutex::new(cloud_bridge::upload::TokenBucket::from_kbit(0)));
    let ev =
        c.execute(&Action::Create { key: "rec/x.mp4".into(), sha256: "00".into() }, dir.path(), &pace).await;
    let Event::Created { upload_id } = ev else { panic!("{ev:?}") };
    let store = Store::open(&dir.path().join("roombox.db"), StoreOptions::default()).unwrap();
    let id = upload_id.clone();
    store
        .call(move |c| {
            c.execute(
                "INSERT INTO upload_orphans(upload_id, object_key, created_at) VALUES (?1, 'rec/x.mp4', 0)",
                [id],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let registry = prometheus::Registry::new();
    let d = Driver::new(&cfg, store.clone(), UploadMetrics::register(&registry).unwrap()).unwrap();
    d.cleanup().await;
    // the orphan is forgotten only after the server accepted the abort
    assert!(store.call(|c| queue::orphans(c)).await.unwrap().is_empty());
    // and the server no longer knows the upload (S3 says 404 NoSuchUpload, s3s-fs 403)
    let err = c.abort("rec/x.mp4", &upload_id).await.unwrap_err();
    assert!(err.detail.contains("HTTP 404") || err.detail.contains("HTTP 403"), "{err}");
}

#[test]
fn a_credentials_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = credentials_file(dir.path());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load_credentials(&p).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::write(&p, "access_key_id = 1").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load_credentials(&p).unwrap_err().to_string().contains("not a credentials file"));
}

/// The upload benchmark (prints numbers, asserts nothing about time): a file
/// per bandwidth cap through the driver to the s3s-fs child on loopback;
/// throughput = file bytes / time from queued to verified-and-deleted, and the
/// uploader's CPU time (this process: driver, store, hashing, TLS-less HTTP).
/// In `cargo test` it runs one small capped upload (the file must arrive and be
/// verified); the full table for docs/PERFORMANCE.md § Upload:
/// `ROOMBOX_UPLOAD_BENCH=1 cargo test -p firmware-app --test upload -- --nocapture upload_throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_throughput_against_the_cap() {
    let full = std::env::var_os("ROOMBOX_UPLOAD_BENCH").is_some();
    let caps: &[u64] = if full { &[4_000, 8_000, 20_000, 50_000, 100_000, 0] } else { &[8_000] };
    fn cpu_s() -> f64 {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }
    println!("cap_kbit_s  file_MiB  seconds  achieved_kbit_s  achieved/cap  cpu_s  cpu_ms_per_MiB");
    for (i, &cap) in caps.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = S3::start(dir.path(), "");
        let mut cfg = upload_cfg(&s3, dir.path(), cap);
        cfg.part_size_mib = 8;
        // ~8 s of data at the cap; 256 MiB uncapped
        let mib = match (full, cap) {
            (false, _) => 2,
            (true, 0) => 256,
            (true, _) => ((cap * 1000 / 8 * 8) as usize / MIB).max(4),
        };
        let (store, file, _) = queued(dir.path(), &format!("bench{i}.mp4"), mib * MIB, 11 + i as u64).await;
        let cpu0 = cpu_s();
        let t0 = Instant::now();
        let run = start_driver(&cfg, &store);
        wait_done(&store, &file, 600).await;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_s() - cpu0;
        run.end().await;
        let kbit = (mib * MIB) as f64 * 8.0 / 1000.0 / secs;
        let ratio = if cap == 0 { "-".to_owned() } else { format!("{:.3}", kbit / cap as f64) };
        println!(
            "{:>10}  {mib:>8}  {secs:>7.2}  {kbit:>15.0}  {ratio:>12}  {cpu:>5.2}  {:>14.1}",
            if cap == 0 { "none".to_owned() } else { cap.to_string() },
            cpu * 1000.0 / mib as f64
        );
    }
}
