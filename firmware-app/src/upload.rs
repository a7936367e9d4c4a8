//! Wires the recording upload: the SQLite queue (`uploads`, `upload_parts`,
//! `upload_orphans`), its metrics, and one driver task that feeds
//! cloud-bridge's sans-IO [`Upload`] from the queue and runs its actions with
//! [`S3Client`].
//!
//! * [`Store::enqueue_upload`] is how a finished file enters the queue (the
//!   recorder calls it; it is idempotent).
//! * After every event the driver writes the upload's [`Progress`] (phase,
//!   upload id, each finished part's number, ETag and size) in one transaction,
//!   so a `kill -9` or a power cut costs at most the part in flight.
//! * Off unless `[cloud.upload]` is configured; the metrics exist either way
//!   (the queue depth shows what waits on an air-gapped box).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloud_bridge::UploadConfig;
use cloud_bridge::upload::s3::{S3Client, load_credentials};
use cloud_bridge::upload::{
    Action, DonePart, Event, FailureKind, Phase, Progress, RetryPolicy, TokenBucket, Upload, UploadError,
    UploadPolicy,
};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::unix_now;
use crate::store::{Store, StoreError, atomic};

/// One queued file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub path: String,
    pub object_key: String,
    pub state: String,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub upload_id: Option<String>,
    pub remote_etag: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub parts: Vec<DonePart>,
}

/// The queue's SQL: plain functions over a connection, run on the store thread.
pub mod queue {
    use super::*;

    /// Queue `path` for upload as `object_key`. Queuing the same file with the
    /// same key again changes nothing (its progress is kept); a different key, or
    /// a file whose upload is done, starts over (an open multipart upload is
    /// kept as an orphan for the cleanup).
    pub fn enqueue(c: &Connection, path: &str, object_key: &str, now: i64) -> Result<bool, StoreError> {
        atomic(c, |tx| {
            let old: Option<(String, String, Option<String>)> = tx
                .query_row("SELECT object_key, state, upload_id FROM uploads WHERE path = ?1", [path], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            if let Some((key, state, upload_id)) = &old {
                if key == object_key && state != "done" {
                    return Ok(false);
                }
                if let Some(id) = upload_id
                    && matches!(state.as_str(), "pending" | "uploading" | "failed")
                {
                    tx.execute(
                        "INSERT OR IGNORE INTO upload_orphans(upload_id, object_key, created_at) VALUES (?1, ?2, ?3)",
                        params![id, key, now],
                    )?;
                }
                tx.execute("DELETE FROM uploads WHERE path = ?1", [path])?;
            }
            tx.execute(
                "INSERT INTO uploads(path, object_key, state, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, 'pending', ?3, ?3, ?3)",
                params![path, object_key, now],
            )?;
            Ok(true)
        })
    }

    fn row(c: &Connection, path: &str) -> Result<Option<UploadRow>, StoreError> {
        let r = c
            .query_row(
                "SELECT path, object_key, state, size, sha256, upload_id, remote_etag, attempts, last_error,
                        next_attempt_at FROM uploads WHERE path = ?1",
                [path],
                |r| {
                    Ok(UploadRow {
                        path: r.get(0)?,
                        object_key: r.get(1)?,
                        state: r.get(2)?,
                        size: r.get(3)?,
                        sha256: r.get(4)?,
                        upload_id: r.get(5)?,
                        remote_etag: r.get(6)?,
                        attempts: r.get(7)?,
                        last_error: r.get(8)?,
                        next_attempt_at: r.get(9)?,
                        parts: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut r) = r else { return Ok(None) };
        let mut st = c.prepare_cached(
            "SELECT part_number, etag, size FROM upload_parts WHERE path = ?1 ORDER BY part_number",
        )?;
        r.parts = st
            .query_map([path], |x| {
                Ok(DonePart { number: x.get(0)?, etag: x.get(1)?, size: x.get::<_, i64>(2)? as u64 })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(r))
    }

    /// One row with its parts.
    pub fn get(c: &Connection, path: &str) -> Result<Option<UploadRow>, StoreError> {
        row(c, path)
    }

    /// The next upload due at `now` (oldest first).
    pub fn next_due(c: &Connection, now: i64) -> Result<Option<UploadRow>, StoreError> {
        let path: Option<String> = c
            .query_row(
                "SELECT path FROM uploads WHERE state <> 'done' AND next_attempt_at <= ?1
                 ORDER BY next_attempt_at, created_at LIMIT 1",
                [now],
                |r| r.get(0),
            )
            .optional()?;
        match path {
            Some(p) => row(c, &p),
            None => Ok(None),
        }
    }

    /// Files not uploaded yet.
    pub fn depth(c: &Connection) -> Result<i64, StoreError> {
        Ok(c.query_row("SELECT count(*) FROM uploads WHERE state <> 'done'", [], |r| r.get(0))?)
    }

    /// Remember the file's size and SHA-256 (measured once).
    pub fn set_digest(
        c: &Connection,
        path: &str,
        size: u64,
        sha256: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        c.execute(
            "UPDATE uploads SET size = ?2, sha256 = ?3, updated_at = ?4 WHERE path = ?1",
            params![path, size as i64, sha256, now],
        )?;
        Ok(())
    }

    /// Write an upload's progress: the row, its parts, its orphans; one transaction.
    pub fn save(
        c: &Connection,
        path: &str,
        p: &Progress,
        next_attempt_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        atomic(c, |tx| {
            let key: String =
                tx.query_row("SELECT object_key FROM uploads WHERE path = ?1", [path], |r| r.get(0))?;
            tx.execute(
                "UPDATE uploads SET state = ?2, upload_id = ?3, remote_etag = ?4, attempts = ?5, last_error = ?6,
                        next_attempt_at = ?7, updated_at = ?8 WHERE path = ?1",
                params![path, p.phase.as_str(), p.upload_id, p.remote_etag, p.attempts, p.last_error, next_attempt_at, now],
            )?;
            tx.execute("DELETE FROM upload_parts WHERE path = ?1", [path])?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO upload_parts(path, part_number, etag, size) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for part in &p.parts {
                ins.execute(params![path, part.number, part.etag, part.size as i64])?;
            }
            for id in &p.abandoned {
                tx.execute(
                    "INSERT OR IGNORE INTO upload_orphans(upload_id, object_key, created_at) VALUES (?1, ?2, ?3)",
                    params![id, key, now],
                )?;
            }
            Ok(())
        })
    }

    /// Upload ids to abort: `(upload id, object key)`.
    pub fn orphans(c: &Connection) -> Result<Vec<(String, String)>, StoreError> {
        let mut st =
            c.prepare_cached("SELECT upload_id, object_key FROM upload_orphans ORDER BY created_at")?;
        let v = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        Ok(v)
    }

    pub fn forget_orphan(c: &Connection, upload_id: &str) -> Result<(), StoreError> {
        c.execute("DELETE FROM upload_orphans WHERE upload_id = ?1", [upload_id])?;
        Ok(())
    }

    /// Upload ids of uploads in progress (never aborted by the cleanup).
    pub fn active_ids(c: &Connection) -> Result<Vec<String>, StoreError> {
        let mut st = c.prepare_cached(
            "SELECT upload_id FROM uploads WHERE upload_id IS NOT NULL AND state <> 'done'",
        )?;
        let v = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(v)
    }
}

impl Store {
    /// Queue a finished file for upload as `object_key`. Idempotent.
    pub async fn enqueue_upload(&self, path: &Path, object_key: &str) -> Result<bool, StoreError> {
        let (p, k, now) = (path.to_string_lossy().into_owned(), object_key.to_owned(), unix_now() as i64);
        self.call(move |c| queue::enqueue(c, &p, &k, now)).await
    }

    /// [`enqueue_upload`](Self::enqueue_upload) from synchronous code.
    pub fn enqueue_upload_blocking(&self, path: &Path, object_key: &str) -> Result<bool, StoreError> {
        let (p, k, now) = (path.to_string_lossy().into_owned(), object_key.to_owned(), unix_now() as i64);
        self.call_blocking(move |c| queue::enqueue(c, &p, &k, now))
    }

    /// One queued upload, with its finished parts.
    pub async fn upload(&self, path: &Path) -> Result<Option<UploadRow>, StoreError> {
        let p = path.to_string_lossy().into_owned();
        self.call(move |c| queue::get(c, &p)).await
    }
}

/// The upload metrics (registered whether or not uploads are configured).
#[derive(Debug, Clone)]
pub struct UploadMetrics {
    pub queue_depth: IntGauge,
    pub bytes: IntCounter,
    pub failures: IntCounterVec,
}

impl UploadMetrics {
    pub fn register(registry: &Registry) -> Result<UploadMetrics, prometheus::Error> {
        let queue_depth = IntGauge::new(
            "roombox_upload_queue_depth",
            "Finished recordings not yet uploaded and verified.",
        )?;
        let bytes = IntCounter::new(
            "roombox_upload_bytes_total",
            "Bytes the object store acknowledged (parts with a matching ETag, whole objects).",
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "roombox_upload_failures_total",
                "Failed upload steps by reason (each is retried or parked).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        // every reason exposed at 0 from the start (dashboards and alerts see the series)
        for reason in [
            "connect",
            "timeout",
            "network",
            "server_error",
            "throttled",
            "no_such_upload",
            "auth",
            "rejected",
            "local_io",
            "bad_etag",
            "verify_mismatch",
        ] {
            failures.with_label_values(&[reason]);
        }
        Ok(UploadMetrics { queue_depth, bytes, failures })
    }
}

/// What the driver needs besides the store.
pub struct Driver {
    store: Store,
    client: S3Client,
    cfg: UploadConfig,
    policy: UploadPolicy,
    pace: Arc<Mutex<TokenBucket>>,
    metrics: UploadMetrics,
    /// How often an idle queue is looked at.
    pub idle_poll: Duration,
}

/// The policy a config asks for.
pub fn policy(cfg: &UploadConfig) -> UploadPolicy {
    UploadPolicy {
        part_size: cfg.part_size_mib << 20,
        retry: RetryPolicy {
            base: Duration::from_millis(cfg.retry_base_ms),
            max: Duration::from_secs(cfg.retry_max_s),
            max_attempts: cfg.retry_max_attempts,
            park: Duration::from_secs(cfg.park_s),
        },
    }
}

impl Driver {
    /// Read the credentials and build the client.
    pub fn new(cfg: &UploadConfig, store: Store, metrics: UploadMetrics) -> Result<Driver, UploadError> {
        let creds = load_credentials(Path::new(&cfg.credentials_file))?;
        let client = S3Client::new(cfg, creds)?;
        Ok(Driver {
            store,
            client,
            cfg: cfg.clone(),
            policy: policy(cfg),
            pace: Arc::new(Mutex::new(TokenBucket::from_kbit(cfg.max_kbit_per_s))),
            metrics,
            idle_poll: Duration::from_secs(2),
        })
    }

    async fn refresh_depth(&self) {
        if let Ok(d) = self.store.call(|c| queue::depth(c)).await {
            self.metrics.queue_depth.set(d);
        }
    }

    /// Run until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(endpoint = %self.cfg.endpoint, bucket = %self.cfg.bucket, "recording upload started");
        self.cleanup().await;
        let mut last_cleanup = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            self.refresh_depth().await;
            let now = unix_now() as i64;
            match self.store.call(move |c| queue::next_due(c, now)).await {
                Ok(Some(row)) => {
                    if !self.upload_one(row, &mut stop).await {
                        return;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "reading the upload queue failed"),
            }
            if last_cleanup.elapsed() > Duration::from_secs(6 * 3600) {
                self.cleanup().await;
                last_cleanup = Instant::now();
            }
            tokio::select! {
                _ = tokio::time::sleep(self.idle_poll) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Abort abandoned multipart uploads: every open upload under our key prefix
    /// that no queued file owns (when the server can list them; then the prefix
    /// must be this box's own), and the ids recorded as orphans.
    pub async fn cleanup(&self) {
        let active: std::collections::HashSet<String> =
            self.store.call(|c| queue::active_ids(c)).await.unwrap_or_default().into_iter().collect();
        if !self.cfg.key_prefix.is_empty() {
            match self.client.list_uploads(&self.cfg.key_prefix).await {
                Ok(Some(list)) => {
                    for (key, id) in list.into_iter().filter(|(_, id)| !active.contains(id)) {
                        match self.client.abort(&key, &id).await {
                            Ok(()) => tracing::info!(%key, upload_id = %id, "aborted an abandoned upload"),
                            Err(f) => tracing::warn!(%key, upload_id = %id, error = %f, "abort failed"),
                        }
                    }
                }
                Ok(None) => {
                    tracing::debug!("the store cannot list multipart uploads; aborting recorded orphans only")
                }
                Err(f) => tracing::warn!(error = %f, "listing multipart uploads failed"),
            }
        }
        let orphans = self.store.call(|c| queue::orphans(c)).await.unwrap_or_default();
        for (id, key) in orphans.into_iter().filter(|(id, _)| !active.contains(id)) {
            match self.client.abort(&key, &id).await {
                Ok(()) => {}
                Err(f) if f.kind == FailureKind::NoSuchUpload => {}
                Err(f) => {
                    tracing::warn!(%key, upload_id = %id, error = %f, "abort of an abandoned upload failed; kept for later");
                    continue;
                }
            }
            let id2 = id.clone();
            if self.store.call(move |c| queue::forget_orphan(c, &id2)).await.is_ok() {
                tracing::info!(%key, upload_id = %id, "abandoned upload aborted");
            }
        }
    }

    async fn save(&self, path: &str, p: Progress, next_attempt_at: i64) {
        let path = path.to_owned();
        let now = unix_now() as i64;
        if let Err(e) = self.store.call(move |c| queue::save(c, &path, &p, next_attempt_at, now)).await {
            // not fatal: at worst finished parts are sent again after a crash
            tracing::warn!(error = %e, "saving upload progress failed");
        }
    }

    /// Upload one file as far as it goes now. `false` when asked to stop.
    async fn upload_one(&self, row: UploadRow, stop: &mut watch::Receiver<bool>) -> bool {
        let path = PathBuf::from(&row.path);
        let now_unix = unix_now() as i64;
        let phase = Phase::parse(&row.state).unwrap_or(Phase::Pending);
        // Size and SHA-256, measured once (a verified file may already be gone).
        let (size, sha256) = match (row.size, row.sha256.clone()) {
            (Some(s), Some(h)) => (s as u64, h),
            _ => match digest(&path).await {
                Ok((s, h)) => {
                    let (p, h2) = (row.path.clone(), h.clone());
                    let _ = self.store.call(move |c| queue::set_digest(c, &p, s, &h2, now_unix)).await;
                    (s, h)
                }
                Err(e) => {
                    let error = format!("local_io: read {}: {e}", path.display());
                    tracing::warn!(%error, "upload set aside: the file cannot be read; the row is kept");
                    self.metrics.failures.with_label_values(&["local_io"]).inc();
                    let p = Progress {
                        phase: Phase::Parked,
                        attempts: row.attempts as u32 + 1,
                        last_error: Some(error),
                        ..Progress::new()
                    };
                    self.save(&row.path, p, now_unix + self.cfg.park_s as i64).await;
                    return true;
                }
            },
        };
        let progress = Progress {
            phase,
            upload_id: row.upload_id.clone(),
            parts: row.parts.clone(),
            remote_etag: row.remote_etag.clone(),
            attempts: row.attempts as u32,
            last_error: row.last_error.clone(),
            abandoned: Vec::new(),
        };
        let seed = now_unix as u64 ^ (size << 17) ^ 0x9e37_79b9_7f4a_7c15;
        let mut up = Upload::resume(&row.object_key, size, sha256, self.policy.clone(), seed, progress);
        loop {
            let now = Instant::now();
            match up.poll(now) {
                Action::Wait { until } => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = stop.changed() => return false,
                    }
                }
                Action::Park { until, error } => {
                    let wait = until.saturating_duration_since(now).as_secs() as i64;
                    tracing::warn!(key = %row.object_key, %error, retry_in_s = wait, "upload set aside; the file is kept");
                    self.save(&row.path, up.progress(), unix_now() as i64 + wait).await;
                    return true;
                }
                Action::Done => {
                    tracing::info!(key = %row.object_key, bytes = size, "uploaded, verified, local copy deleted");
                    self.save(&row.path, up.progress(), unix_now() as i64).await;
                    self.refresh_depth().await;
                    return true;
                }
                action => {
                    let aborting = match &action {
                        Action::Abort { upload_id, .. } => Some(upload_id.clone()),
                        _ => None,
                    };
                    let ev = tokio::select! {
                        ev = self.client.execute(&action, &path, &self.pace) => ev,
                        // the request is dropped; what was saved stays true
                        _ = stop.changed() => return false,
                    };
                    if let Event::Failed(f) = &ev {
                        tracing::warn!(key = %row.object_key, error = %f, "upload step failed");
                    }
                    if let (Some(id), Event::Aborted) = (&aborting, &ev) {
                        let id = id.clone();
                        let _ = self.store.call(move |c| queue::forget_orphan(c, &id)).await;
                    }
                    let before = up.bytes_done();
                    up.handle(ev, Instant::now());
                    if let Some(kind) = up.take_failure() {
                        self.metrics.failures.with_label_values(&[kind.reason()]).inc();
                    }
                    let after = up.bytes_done();
                    if after > before && !matches!(action, Action::Complete { .. } | Action::Verify { .. }) {
                        self.metrics.bytes.inc_by(after - before);
                    }
                    self.save(&row.path, up.progress(), unix_now() as i64).await;
                }
            }
        }
    }
}

/// Size and SHA-256 (hex) of a file, read off the runtime.
async fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            ctx.update(&buf[..k]);
            n += k as u64;
        }
        Ok((n, hex::encode(ctx.finish())))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Register the metrics and, when `[cloud.upload]` is set, start the driver.
/// A broken credentials file is logged (the queue waits; the daemon serves on).
pub async fn start(
    cfg: Option<&UploadConfig>,
    store: Store,
    registry: &Registry,
    stop: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, prometheus::Error> {
    let metrics = UploadMetrics::register(registry)?;
    if let Ok(d) = store.call(|c| queue::depth(c)).await {
        metrics.queue_depth.set(d);
    }
    let Some(cfg) = cfg else { return Ok(None) };
    match Driver::new(cfg, store, metrics) {
        Ok(d) => Ok(Some(tokio::spawn(d.run(stop)))),
        Err(e) => {
            tracing::error!(error = %e, "recording upload is configured but cannot start; files stay queued");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::open_connection(&dir.path().join("t.db"), &Default::default()).unwrap();
        (dir, c)
    }

    #[test]
    fn enqueue_is_idempotent_and_a_new_key_keeps_the_old_upload_as_an_orphan() {
        let (_d, c) = conn();
        assert!(queue::enqueue(&c, "/r/a.mp4", "k1", 10).unwrap());
        assert!(!queue::enqueue(&c, "/r/a.mp4", "k1", 11).unwrap(), "same file, same key: no-op");
        let p = Progress {
            phase: Phase::Uploading,
            upload_id: Some("u1".into()),
            parts: vec![DonePart { number: 1, etag: "aa".into(), size: 5 << 20 }],
            ..Progress::new()
        };
        queue::save(&c, "/r/a.mp4", &p, 12, 12).unwrap();
        let row = queue::get(&c, "/r/a.mp4").unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.upload_id.as_deref(), row.parts.len()),
            ("uploading", Some("u1"), 1)
        );
        assert_eq!(queue::depth(&c).unwrap(), 1);
        assert_eq!(queue::active_ids(&c).unwrap(), vec!["u1".to_owned()]);
        // queued again under another key: starts over, the open upload is kept to abort
        assert!(queue::enqueue(&c, "/r/a.mp4", "k2", 13).unwrap());
        let row = queue::get(&c, "/r/a.mp4").unwrap().unwrap();
        assert_eq!((row.object_key.as_str(), row.state.as_str()), ("k2", "pending"));
        assert!(row.parts.is_empty() && row.upload_id.is_none());
        assert_eq!(queue::orphans(&c).unwrap(), vec![("u1".to_owned(), "k1".to_owned())]);
        queue::forget_orphan(&c, "u1").unwrap();
        assert!(queue::orphans(&c).unwrap().is_empty());
    }

    #[test]
    fn only_due_rows_are_picked_oldest_first_and_done_rows_never() {
        let (_d, c) = conn();
        queue::enqueue(&c, "/r/1", "k1", 100).unwrap();
        queue::enqueue(&c, "/r/2", "k2", 50).unwrap();
        assert_eq!(queue::next_due(&c, 40).unwrap(), None);
        assert_eq!(queue::next_due(&c, 100).unwrap().unwrap().path, "/r/2");
        let done = Progress { phase: Phase::Done, ..Progress::new() };
        queue::save(&c, "/r/2", &done, 0, 101).unwrap();
        let parked =
            Progress { phase: Phase::Parked, last_error: Some("auth: 403".into()), ..Progress::new() };
        queue::save(&c, "/r/1", &parked, 5000, 101).unwrap();
        assert_eq!(queue::next_due(&c, 4999).unwrap(), None, "parked until 5000; done never");
        assert_eq!(queue::next_due(&c, 5000).unwrap().unwrap().state, "failed");
        assert_eq!(queue::depth(&c).unwrap(), 1);
    }
}
