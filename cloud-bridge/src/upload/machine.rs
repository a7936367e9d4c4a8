//! The sans-IO upload of one file: part plan, phases, retries, verification.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use super::{MAX_PARTS, MIN_PART};

/// One part of the plan: bytes `offset..offset + len` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
}

/// Split `size` bytes into parts of `part_size` (raised to S3's 5 MiB floor, and
/// raised further if the file would need more than 10,000 parts); the last part
/// holds the rest. An empty file is one empty part.
pub fn plan_parts(size: u64, part_size: u64) -> Vec<Part> {
    let mut ps = part_size.max(MIN_PART);
    if size.div_ceil(ps) > MAX_PARTS {
        ps = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    }
    let mut parts = Vec::new();
    let mut offset = 0;
    let mut number = 1;
    while offset < size || parts.is_empty() {
        let len = ps.min(size - offset);
        parts.push(Part { number, offset, len });
        offset += len;
        number += 1;
    }
    parts
}

/// An ETag as a bare lowercase string: no quotes, no `W/`.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_start_matches("W/").trim_matches('"').to_ascii_lowercase()
}

/// S3's multipart ETag: the MD5 of the parts' binary MD5s, then `-` and the part
/// count. `None` if a part's ETag is not a hex MD5.
pub fn composite_etag<'a>(part_md5s: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut h = Md5::new();
    let mut n = 0;
    for e in part_md5s {
        let raw = hex::decode(normalize_etag(e)).ok()?;
        if raw.len() != 16 {
            return None;
        }
        h.update(&raw);
        n += 1;
    }
    Some(format!("{}-{n}", hex::encode(h.finalize())))
}

/// Retry timing: delay = random in `[0, min(max, base · 2^attempt)]` ("full
/// jitter"), at least 10 ms; after `max_attempts` consecutive failures the
/// upload is parked for `park`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    pub park: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            max_attempts: 12,
            park: Duration::from_secs(3600),
        }
    }
}

/// How to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPolicy {
    /// Multipart part size (raised to 5 MiB). Files no larger go in one PUT.
    pub part_size: u64,
    pub retry: RetryPolicy,
}

impl Default for UploadPolicy {
    fn default() -> Self {
        UploadPolicy { part_size: MIN_PART, retry: RetryPolicy::default() }
    }
}

/// A part the server has, with the ETag it gave (checked against our MD5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DonePart {
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// Where an upload stands; what the daemon stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing on the server yet (or what was there is gone).
    Pending,
    /// A multipart upload is open; some parts may be done.
    Uploading,
    /// The server has the whole object (completed or PUT); not yet verified.
    Completed,
    /// HEAD matched: the local copy may go.
    Verified,
    /// The local copy is gone; nothing left to do.
    Done,
    /// Refused or failed too often: set aside, file kept, tried again later.
    Parked,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Uploading => "uploading",
            Phase::Completed => "completed",
            Phase::Verified => "verified",
            Phase::Done => "done",
            Phase::Parked => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "pending" => Phase::Pending,
            "uploading" => Phase::Uploading,
            "completed" => Phase::Completed,
            "verified" => Phase::Verified,
            "done" => Phase::Done,
            "failed" => Phase::Parked,
            _ => return None,
        })
    }
}

/// The durable state of one upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub upload_id: Option<String>,
    pub parts: Vec<DonePart>,
    /// The object's ETag once the server has it (a whole PUT's is the file's MD5).
    pub remote_etag: Option<String>,
    /// Consecutive failures.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Upload ids given up on (to abort; the cleanup's list when the server
    /// cannot list multipart uploads).
    pub abandoned: Vec<String>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            phase: Phase::Pending,
            upload_id: None,
            parts: Vec::new(),
            remote_etag: None,
            attempts: 0,
            last_error: None,
            abandoned: Vec::new(),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// What the server told us on `HEAD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadInfo {
    pub etag: String,
    pub len: u64,
    /// `x-amz-meta-sha256`, when the server kept user metadata.
    pub sha256: Option<String>,
}

/// Why an action failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Could not connect (server down, link down).
    Connect,
    /// No (complete) answer in time.
    Timeout,
    /// The connection broke or the answer was unreadable.
    Network,
    /// 5xx other than throttling.
    Server(u16),
    /// 503 SlowDown / 429.
    Throttled,
    /// The server forgot the multipart upload.
    NoSuchUpload,
    /// 401/403: credentials or permissions. Parks.
    Auth,
    /// Another 4xx: the server refuses this request. Parks.
    Rejected(u16),
    /// Reading the local file failed (missing, changed size). Parks.
    LocalIo,
    /// The server's ETag for a part is not our MD5 (found by the machine).
    BadEtag,
    /// HEAD does not match the file (found by the machine).
    VerifyMismatch,
}

impl FailureKind {
    /// A stable label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Network => "network",
            FailureKind::Server(_) => "server_error",
            FailureKind::Throttled => "throttled",
            FailureKind::NoSuchUpload => "no_such_upload",
            FailureKind::Auth => "auth",
            FailureKind::Rejected(_) => "rejected",
            FailureKind::LocalIo => "local_io",
            FailureKind::BadEtag => "bad_etag",
            FailureKind::VerifyMismatch => "verify_mismatch",
        }
    }

    /// Refusals that retrying soon will not fix.
    pub fn parks(self) -> bool {
        matches!(self, FailureKind::Auth | FailureKind::Rejected(_) | FailureKind::LocalIo)
    }
}

/// A failed action: what kind, and the detail for `last_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.reason(), self.detail)
    }
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// CreateMultipartUpload, storing `sha256` as `x-amz-meta-sha256`.
    Create { key: String, sha256: String },
    /// PUT the whole (small) file; body `len` bytes from offset 0.
    PutWhole { key: String, len: u64, sha256: String },
    /// UploadPart: bytes `part.offset..+part.len`, with their MD5 and SHA-256.
    UploadPart { key: String, upload_id: String, part: Part },
    /// CompleteMultipartUpload with these (number, ETag) pairs.
    Complete { key: String, upload_id: String, parts: Vec<(u32, String)> },
    /// HEAD the object.
    Verify { key: String },
    /// AbortMultipartUpload of an id given up on.
    Abort { key: String, upload_id: String },
    /// Delete the local file (only after a matching HEAD).
    DeleteLocal,
    /// Nothing to do before `until` (a retry backoff).
    Wait { until: Instant },
    /// Set aside until `until`: the file stays, the row says why.
    Park { until: Instant, error: String },
    /// Uploaded, verified, local copy deleted.
    Done,
}

/// What happened to the last action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Created {
        upload_id: String,
    },
    /// A part was accepted; `local_md5` is the hex MD5 of the bytes we sent.
    PartUploaded {
        number: u32,
        etag: String,
        local_md5: String,
    },
    WholePut {
        etag: String,
        local_md5: String,
    },
    Completed {
        etag: String,
    },
    /// HEAD answered; `None` = no such object.
    Head(Option<HeadInfo>),
    Aborted,
    LocalDeleted,
    Failed(Failure),
}

/// One file's upload. See the module docs.
#[derive(Debug, Clone)]
pub struct Upload {
    key: String,
    size: u64,
    sha256: String,
    policy: UploadPolicy,
    plan: Vec<Part>,
    whole: bool,
    upload_id: Option<String>,
    done: BTreeMap<u32, DonePart>,
    phase: Phase,
    remote_etag: Option<String>,
    attempts: u32,
    last_error: Option<String>,
    abandoned: Vec<String>,
    wait_until: Option<Instant>,
    park: Option<(Instant, String)>,
    /// After Complete said NoSuchUpload: a HEAD decides whether it had completed.
    completing: bool,
    rng: u64,
    last_failure: Option<FailureKind>,
}

impl Upload {
    /// A fresh upload of `size` bytes whose SHA-256 (hex) is `sha256`. `seed`
    /// drives the retry jitter.
    pub fn new(key: &str, size: u64, sha256: String, policy: UploadPolicy, seed: u64) -> Upload {
        Upload::resume(key, size, sha256, policy, seed, Progress::new())
    }

    /// Continue from stored progress (after a restart): finished parts are not
    /// sent again.
    pub fn resume(
        key: &str,
        size: u64,
        sha256: String,
        policy: UploadPolicy,
        seed: u64,
        p: Progress,
    ) -> Upload {
        let plan = plan_parts(size, policy.part_size);
        let whole = size <= policy.part_size.max(MIN_PART);
        let mut done = BTreeMap::new();
        for part in p.parts {
            // keep only parts that match this plan (same part size as when sent)
            if plan.iter().any(|q| q.number == part.number && q.len == part.size) {
                done.insert(part.number, part);
            }
        }
        let mut phase = match p.phase {
            Phase::Parked => {
                if p.remote_etag.is_some() {
                    Phase::Completed
                } else if p.upload_id.is_some() {
                    Phase::Uploading
                } else {
                    Phase::Pending
                }
            }
            ph => ph,
        };
        if phase == Phase::Uploading && p.upload_id.is_none() {
            phase = Phase::Pending;
        }
        Upload {
            key: key.to_owned(),
            size,
            sha256,
            policy,
            plan,
            whole,
            upload_id: p.upload_id,
            done,
            phase,
            remote_etag: p.remote_etag,
            attempts: p.attempts,
            last_error: p.last_error,
            abandoned: p.abandoned,
            wait_until: None,
            park: None,
            completing: false,
            rng: seed | 1,
            last_failure: None,
        }
    }

    /// What to store.
    pub fn progress(&self) -> Progress {
        Progress {
            phase: if self.park.is_some() { Phase::Parked } else { self.phase },
            upload_id: self.upload_id.clone(),
            parts: self.done.values().cloned().collect(),
            remote_etag: self.remote_etag.clone(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
            abandoned: self.abandoned.clone(),
        }
    }

    /// The kind of the last failure, once (for a failures-by-reason counter).
    pub fn take_failure(&mut self) -> Option<FailureKind> {
        self.last_failure.take()
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn plan(&self) -> &[Part] {
        &self.plan
    }

    /// Bytes the server has acknowledged (finished parts).
    pub fn bytes_done(&self) -> u64 {
        match self.phase {
            Phase::Completed | Phase::Verified | Phase::Done => self.size,
            _ => self.done.values().map(|p| p.size).sum(),
        }
    }

    /// The ETag the object must have: our MD5 for a whole PUT, else the composite.
    fn expected_etag(&self) -> Option<String> {
        if self.whole && self.upload_id.is_none() {
            self.remote_etag.clone()
        } else {
            composite_etag(self.done.values().map(|p| p.etag.as_str()))
        }
    }

    /// The next thing to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        if let Some((until, error)) = &self.park {
            return Action::Park { until: *until, error: error.clone() };
        }
        if let Some(until) = self.wait_until {
            if now < until {
                return Action::Wait { until };
            }
            self.wait_until = None;
        }
        if let Some(id) = self.abandoned.first() {
            return Action::Abort { key: self.key.clone(), upload_id: id.clone() };
        }
        let key = self.key.clone();
        match self.phase {
            Phase::Pending if self.whole => {
                Action::PutWhole { key, len: self.size, sha256: self.sha256.clone() }
            }
            Phase::Pending => Action::Create { key, sha256: self.sha256.clone() },
            Phase::Uploading => {
                let Some(upload_id) = self.upload_id.clone() else {
                    self.phase = Phase::Pending;
                    return self.poll(now);
                };
                if self.completing {
                    return Action::Verify { key };
                }
                match self.plan.iter().find(|p| !self.done.contains_key(&p.number)) {
                    Some(part) => Action::UploadPart { key, upload_id, part: *part },
                    None => Action::Complete {
                        key,
                        upload_id,
                        parts: self.done.values().map(|p| (p.number, p.etag.clone())).collect(),
                    },
                }
            }
            Phase::Completed => Action::Verify { key },
            Phase::Verified => Action::DeleteLocal,
            Phase::Done | Phase::Parked => Action::Done,
        }
    }

    /// Take the outcome of the last action at `now`.
    pub fn handle(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Created { upload_id } => {
                self.upload_id = Some(upload_id);
                self.done.clear();
                self.phase = Phase::Uploading;
                self.succeeded();
            }
            Event::PartUploaded { number, etag, local_md5 } => {
                let etag = normalize_etag(&etag);
                if etag != normalize_etag(&local_md5) {
                    self.fail(
                        Failure {
                            kind: FailureKind::BadEtag,
                            detail: format!(
                                "part {number}: server ETag {etag:?} is not the MD5 we sent ({local_md5})"
                            ),
                        },
                        now,
                    );
                    return;
                }
                let size = self.plan.iter().find(|p| p.number == number).map_or(0, |p| p.len);
                self.done.insert(number, DonePart { number, etag, size });
                self.succeeded();
            }
            Event::WholePut { etag, local_md5 } => {
                let etag = normalize_etag(&etag);
                if etag != normalize_etag(&local_md5) {
                    self.fail(
                        Failure {
                            kind: FailureKind::BadEtag,
                            detail: format!(
                                "object: server ETag {etag:?} is not the MD5 we sent ({local_md5})"
                            ),
                        },
                        now,
                    );
                    return;
                }
                self.remote_etag = Some(etag);
                self.phase = Phase::Completed;
                self.succeeded();
            }
            Event::Completed { etag } => {
                let etag = normalize_etag(&etag);
                let expected = self.expected_etag();
                if expected.as_deref() != Some(etag.as_str()) {
                    // The server assembled something else: start over (the object
                    // will be overwritten; nothing local is touched).
                    let detail =
                        format!("complete: server ETag {etag:?}, expected {:?} from our parts", expected);
                    self.restart();
                    self.fail(Failure { kind: FailureKind::VerifyMismatch, detail }, now);
                    return;
                }
                self.remote_etag = Some(etag);
                self.phase = Phase::Completed;
                self.succeeded();
            }
            Event::Head(head) => {
                let completing = std::mem::replace(&mut self.completing, false);
                let expected = if completing {
                    composite_etag(self.done.values().map(|p| p.etag.as_str()))
                } else {
                    self.expected_etag()
                };
                match head {
                    Some(h) => {
                        let etag = normalize_etag(&h.etag);
                        let mut problems = Vec::new();
                        if h.len != self.size {
                            problems.push(format!("length {} != local {}", h.len, self.size));
                        }
                        if expected.as_deref() != Some(etag.as_str()) {
                            problems.push(format!("ETag {etag:?} != expected {expected:?}"));
                        }
                        if let Some(s) = &h.sha256
                            && !s.eq_ignore_ascii_case(&self.sha256)
                        {
                            problems.push(format!("x-amz-meta-sha256 {s} != local {}", self.sha256));
                        }
                        if problems.is_empty() {
                            if completing {
                                self.remote_etag = Some(etag);
                            }
                            self.phase = Phase::Verified;
                            self.succeeded();
                        } else {
                            let detail = format!("verify: {}", problems.join("; "));
                            if completing {
                                // the upload is gone and the object is not ours: redo
                                self.upload_id = None;
                            }
                            self.restart();
                            self.fail(Failure { kind: FailureKind::VerifyMismatch, detail }, now);
                        }
                    }
                    None => {
                        let detail = "verify: the object is not on the server".to_owned();
                        if completing {
                            self.upload_id = None;
                        }
                        self.restart();
                        self.fail(Failure { kind: FailureKind::VerifyMismatch, detail }, now);
                    }
                }
            }
            Event::Aborted => {
                if !self.abandoned.is_empty() {
                    self.abandoned.remove(0);
                }
            }
            Event::LocalDeleted => {
                self.phase = Phase::Done;
                self.succeeded();
            }
            Event::Failed(f) => self.failed_action(f, now),
        }
    }

    /// Forget the server-side state and start from nothing (the old id, if any,
    /// is kept to abort).
    fn restart(&mut self) {
        if let Some(id) = self.upload_id.take() {
            self.abandoned.push(id);
        }
        self.done.clear();
        self.remote_etag = None;
        self.completing = false;
        self.phase = Phase::Pending;
    }

    fn failed_action(&mut self, f: Failure, now: Instant) {
        self.last_failure = Some(f.kind);
        // One action at a time: while ids wait to be aborted, the action was an Abort.
        if !self.abandoned.is_empty() {
            // Whatever went wrong, the upload goes on: the daemon keeps the id in
            // its orphan list and the periodic cleanup tries again.
            self.abandoned.remove(0);
            self.last_error = Some(f.to_string());
            return;
        }
        let all_done = self.plan.iter().all(|p| self.done.contains_key(&p.number));
        if matches!(f.kind, FailureKind::NoSuchUpload | FailureKind::Auth)
            && self.phase == Phase::Uploading
            && !self.completing
            && all_done
        {
            // Complete says the upload is gone (S3: 404 NoSuchUpload; some stores,
            // s3s-fs among them, 403): it may have completed already (before a
            // crash, or an answer lost to a timeout). A HEAD decides.
            self.completing = true;
            self.last_error = Some(f.to_string());
            return;
        }
        if f.kind == FailureKind::NoSuchUpload {
            // the id is dead (nothing to abort): start over
            self.upload_id = None;
            self.restart();
        }
        self.fail(f, now);
    }

    fn succeeded(&mut self) {
        self.attempts = 0;
        self.wait_until = None;
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fail(&mut self, f: Failure, now: Instant) {
        self.last_failure = Some(f.kind);
        self.attempts += 1;
        self.last_error = Some(f.to_string());
        let r = &self.policy.retry;
        if f.kind.parks() || self.attempts >= r.max_attempts {
            self.park = Some((now + r.park, f.to_string()));
            return;
        }
        let exp = r.base.saturating_mul(1u32 << (self.attempts - 1).min(20)).min(r.max);
        let jitter = (self.next_random() % 1_000_001) as f64 / 1_000_000.0;
        let delay = exp.mul_f64(jitter).max(Duration::from_millis(10));
        self.wait_until = Some(now + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn md5_hex(b: &[u8]) -> String {
        hex::encode(Md5::digest(b))
    }

    /// Drive `up` against an ideal server, returning the actions taken.
    fn run_ideal(up: &mut Upload, data: &[u8], now: Instant) -> Vec<Action> {
        let mut log = Vec::new();
        let mut server_parts: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut object: Option<(Vec<u8>, String)> = None;
        for _ in 0..1000 {
            let a = up.poll(now);
            log.push(a.clone());
            let ev = match a {
                Action::Create { .. } => Event::Created { upload_id: "u".into() },
                Action::UploadPart { part, .. } => {
                    let b = &data[part.offset as usize..(part.offset + part.len) as usize];
                    server_parts.insert(part.number, b.to_vec());
                    Event::PartUploaded {
                        number: part.number,
                        etag: format!("\"{}\"", md5_hex(b)),
                        local_md5: md5_hex(b),
                    }
                }
                Action::PutWhole { .. } => {
                    object = Some((data.to_vec(), md5_hex(data)));
                    Event::WholePut { etag: md5_hex(data), local_md5: md5_hex(data) }
                }
                Action::Complete { parts, .. } => {
                    let body: Vec<u8> = parts.iter().flat_map(|(n, _)| server_parts[n].clone()).collect();
                    let md5s: Vec<String> = parts.iter().map(|(n, _)| md5_hex(&server_parts[n])).collect();
                    let etag = composite_etag(md5s.iter().map(|s| s.as_str())).unwrap();
                    object = Some((body, etag.clone()));
                    Event::Completed { etag }
                }
                Action::Verify { .. } => Event::Head(object.as_ref().map(|(b, e)| HeadInfo {
                    etag: e.clone(),
                    len: b.len() as u64,
                    sha256: Some("ab".into()),
                })),
                Action::Abort { .. } => Event::Aborted,
                Action::DeleteLocal => Event::LocalDeleted,
                Action::Done | Action::Park { .. } | Action::Wait { .. } => break,
            };
            up.handle(ev, now);
        }
        assert_eq!(object.unwrap().0, data, "the server's object is the file");
        log
    }

    #[test]
    fn plan_uses_full_parts_and_a_short_last_one() {
        let p = plan_parts(12 * MIB + 7, 5 * MIB);
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], Part { number: 3, offset: 10 * MIB, len: 2 * MIB + 7 });
        assert!(p.iter().rev().skip(1).all(|x| x.len == 5 * MIB));
        // below the floor is raised; an exact multiple has no empty tail
        assert_eq!(plan_parts(10 * MIB, MIB).len(), 2);
        assert_eq!(plan_parts(0, MIB), vec![Part { number: 1, offset: 0, len: 0 }]);
        // 10,000 parts at most
        let huge = plan_parts(100_000 * MIB, 5 * MIB);
        assert!(huge.len() as u64 <= MAX_PARTS);
        assert_eq!(huge.iter().map(|p| p.len).sum::<u64>(), 100_000 * MIB);
    }

    #[test]
    fn composite_etag_is_md5_of_part_md5s() {
        // two known parts: "a" and "b"
        let e = composite_etag([md5_hex(b"a").as_str(), md5_hex(b"b").as_str()]).unwrap();
        let mut cat = hex::decode(md5_hex(b"a")).unwrap();
        cat.extend(hex::decode(md5_hex(b"b")).unwrap());
        assert_eq!(e, format!("{}-2", md5_hex(&cat)));
        assert_eq!(composite_etag(["not-hex"]), None);
    }

    #[test]
    fn a_small_file_is_put_whole_verified_then_deleted() {
        let data = vec![7u8; 3000];
        let mut up = Upload::new("k", 3000, "ab".into(), UploadPolicy::default(), 9);
        let log = run_ideal(&mut up, &data, Instant::now());
        assert!(matches!(log[0], Action::PutWhole { len: 3000, .. }));
        assert!(matches!(log[1], Action::Verify { .. }));
        assert_eq!(log[2], Action::DeleteLocal);
        assert_eq!(log[3], Action::Done);
    }

    #[test]
    fn a_large_file_goes_in_parts_and_the_local_copy_goes_only_after_verify() {
        let data: Vec<u8> = (0..11 * MIB).map(|i| (i % 251) as u8).collect();
        let mut up = Upload::new("k", data.len() as u64, "ab".into(), UploadPolicy::default(), 9);
        let log = run_ideal(&mut up, &data, Instant::now());
        let kinds: Vec<&str> = log
            .iter()
            .map(|a| match a {
                Action::Create { .. } => "create",
                Action::UploadPart { .. } => "part",
                Action::Complete { .. } => "complete",
                Action::Verify { .. } => "verify",
                Action::DeleteLocal => "delete",
                Action::Done => "done",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["create", "part", "part", "part", "complete", "verify", "delete", "done"]);
    }

    #[test]
    fn resume_after_a_crash_sends_only_the_missing_parts() {
        let data: Vec<u8> = (0..16 * MIB).map(|i| (i % 253) as u8).collect();
        let now = Instant::now();
        let mut up = Upload::new("k", data.len() as u64, "ab".into(), UploadPolicy::default(), 3);
        assert!(matches!(up.poll(now), Action::Create { .. }));
        up.handle(Event::Created { upload_id: "u".into() }, now);
        for _ in 0..2 {
            let Action::UploadPart { part, .. } = up.poll(now) else { panic!() };
            let b = &data[part.offset as usize..(part.offset + part.len) as usize];
            up.handle(
                Event::PartUploaded { number: part.number, etag: md5_hex(b), local_md5: md5_hex(b) },
                now,
            );
        }
        // "crash": only the stored progress survives
        let stored = up.progress();
        assert_eq!(stored.parts.len(), 2);
        let mut again =
            Upload::resume("k", data.len() as u64, "ab".into(), UploadPolicy::default(), 4, stored);
        let log = run_ideal_parts_only(&mut again, &data, now);
        assert_eq!(log, vec![3, 4], "parts 1 and 2 are not sent again");
    }

    fn run_ideal_parts_only(up: &mut Upload, data: &[u8], now: Instant) -> Vec<u32> {
        let mut sent = Vec::new();
        loop {
            match up.poll(now) {
                Action::UploadPart { part, .. } => {
                    sent.push(part.number);
                    let b = &data[part.offset as usize..(part.offset + part.len) as usize];
                    up.handle(
                        Event::PartUploaded { number: part.number, etag: md5_hex(b), local_md5: md5_hex(b) },
                        now,
                    );
                }
                Action::Complete { .. } => return sent,
                a => panic!("unexpected {a:?}"),
            }
        }
    }

    #[test]
    fn a_wrong_part_etag_is_an_error_and_the_part_is_sent_again() {
        let now = Instant::now();
        let mut up = Upload::new("k", 6 * MIB, "ab".into(), UploadPolicy::default(), 3);
        up.poll(now);
        up.handle(Event::Created { upload_id: "u".into() }, now);
        let Action::UploadPart { part, .. } = up.poll(now) else { panic!() };
        up.handle(
            Event::PartUploaded { number: part.number, etag: "\"00\"".into(), local_md5: "ff".repeat(16) },
            now,
        );
        assert!(up.progress().parts.is_empty(), "a part with a wrong ETag is not recorded");
        assert!(up.progress().last_error.unwrap().contains("bad_etag"));
        let Action::Wait { until } = up.poll(now) else { panic!("backs off") };
        let Action::UploadPart { part: again, .. } = up.poll(until) else { panic!() };
        assert_eq!(again, part);
    }

    #[test]
    fn backoff_grows_with_jitter_and_parks_after_the_limit() {
        let now = Instant::now();
        let policy = UploadPolicy {
            part_size: MIN_PART,
            retry: RetryPolicy {
                base: Duration::from_millis(100),
                max: Duration::from_secs(1),
                max_attempts: 6,
                park: Duration::from_secs(3600),
            },
        };
        let mut up = Upload::new("k", 10, "ab".into(), policy, 77);
        let mut t = now;
        let mut delays = Vec::new();
        for i in 0..5 {
            assert!(matches!(up.poll(t), Action::PutWhole { .. }), "try {i}");
            up.handle(Event::Failed(Failure { kind: FailureKind::Server(500), detail: "boom".into() }), t);
            let Action::Wait { until } = up.poll(t) else { panic!() };
            delays.push(until - t);
            t = until;
        }
        for (i, d) in delays.iter().enumerate() {
            let cap = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
            assert!(*d <= cap && *d >= Duration::from_millis(10), "delay {i} = {d:?}");
        }
        assert!(delays.windows(2).any(|w| w[0] != w[1]), "jittered: {delays:?}");
        up.poll(t);
        up.handle(Event::Failed(Failure { kind: FailureKind::Server(500), detail: "boom".into() }), t);
        let Action::Park { until, error } = up.poll(t) else { panic!("parks after 6") };
        assert_eq!(until, t + Duration::from_secs(3600));
        assert!(error.contains("500") || error.contains("server_error"), "{error}");
        assert_eq!(up.progress().phase, Phase::Parked);
    }

    #[test]
    fn refusals_park_at_once() {
        let now = Instant::now();
        let mut up = Upload::new("k", 10, "ab".into(), UploadPolicy::default(), 1);
        up.poll(now);
        up.handle(Event::Failed(Failure { kind: FailureKind::Auth, detail: "403 AccessDenied".into() }), now);
        assert!(matches!(up.poll(now), Action::Park { .. }));
    }

    #[test]
    fn no_such_upload_on_a_part_starts_over_and_on_complete_checks_the_object() {
        let now = Instant::now();
        let data: Vec<u8> = vec![1; (6 * MIB) as usize];
        let mut up = Upload::new("k", data.len() as u64, "ab".into(), UploadPolicy::default(), 1);
        up.poll(now);
        up.handle(Event::Created { upload_id: "u1".into() }, now);
        up.poll(now);
        up.handle(Event::Failed(Failure { kind: FailureKind::NoSuchUpload, detail: "gone".into() }), now);
        let Action::Wait { until } = up.poll(now) else { panic!() };
        assert!(
            matches!(up.poll(until), Action::Create { .. }),
            "a dead id is not aborted, a new upload starts"
        );

        // all parts done, Complete says NoSuchUpload (it had completed before a crash): HEAD decides
        let mut up = Upload::new("k", data.len() as u64, "ab".into(), UploadPolicy::default(), 1);
        up.poll(now);
        up.handle(Event::Created { upload_id: "u2".into() }, now);
        let mut md5s = Vec::new();
        while let Action::UploadPart { part, .. } = up.poll(now) {
            let b = &data[part.offset as usize..(part.offset + part.len) as usize];
            md5s.push(md5_hex(b));
            up.handle(
                Event::PartUploaded { number: part.number, etag: md5_hex(b), local_md5: md5_hex(b) },
                now,
            );
        }
        up.handle(Event::Failed(Failure { kind: FailureKind::NoSuchUpload, detail: "gone".into() }), now);
        assert!(matches!(up.poll(now), Action::Verify { .. }));
        let etag = composite_etag(md5s.iter().map(|s| s.as_str())).unwrap();
        up.handle(Event::Head(Some(HeadInfo { etag, len: data.len() as u64, sha256: None })), now);
        assert_eq!(up.poll(now), Action::DeleteLocal);
    }

    #[test]
    fn a_head_that_does_not_match_never_deletes_the_local_copy() {
        let now = Instant::now();
        let mut up = Upload::new("k", 10, "ab".into(), UploadPolicy::default(), 1);
        up.poll(now);
        up.handle(Event::WholePut { etag: md5_hex(b"0123456789"), local_md5: md5_hex(b"0123456789") }, now);
        assert!(matches!(up.poll(now), Action::Verify { .. }));
        up.handle(Event::Head(Some(HeadInfo { etag: md5_hex(b"0123456789"), len: 9, sha256: None })), now);
        let Action::Wait { until } = up.poll(now) else { panic!() };
        assert!(matches!(up.poll(until), Action::PutWhole { .. }), "uploads again instead of deleting");
        assert!(up.progress().last_error.unwrap().contains("length 9"));
    }
}
