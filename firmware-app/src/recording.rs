//! Server-side recording: wiring the `recorder` crate into the daemon.
//!
//! A recording of a room is one in-process subscriber (identity
//! [`RECORDER_IDENTITY`], sfu-core's local-participant API, subscribed to every
//! track: the room camera and microphone included) and one file per track under
//! `data_dir/recordings/<id>/`. The SFU requests a keyframe for every video
//! track the moment the recorder subscribes; the recorder takes whichever
//! simulcast layer the SFU forwards to it (an in-process subscriber has no
//! congestion, so that is the top layer, and it stays fixed).
//!
//! Shape: a tokio task (the edge to the SFU) stamps each packet's arrival and
//! hands it over a bounded channel to one `roombox-rec-<id>` thread, which owns
//! the files: the sans-IO [`recorder::TrackRecorder`] per track writes through a
//! [`recorder::FileSink`] that `fdatasync`s every fragment (one per second).
//! Rows: `recordings` (the recording, `path` = its directory) and
//! `recording_files` (one per track). Every finished or recovered file passes
//! through [`on_file_final`].
//!
//! Disk: starting needs `min_free_mib` free (else 507); the writer stops and
//! finalises every file when free space falls under `reserve_mib` or a write
//! fails (disk full), leaving room for the database, which is never written
//! past what SQLite itself accepts. After a crash, [`Recordings::recover`]
//! cuts every file left open after its last complete fragment and marks it
//! `recovered`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use recorder::{Codec, FileSink, RtpIn, TrackRecorder};
use serde::{Deserialize, Serialize};
use sfu_core::local::ReceivedPacket;
use sfu_core::{LocalEvent, LocalJoin, LocalSubscription};
use tokio::sync::{mpsc, watch};

use crate::auth::unix_now;
use crate::device::Device;
use crate::store::{RecordingFileRow, RecordingRow, Store, StoreError, q};

/// The identity the recorder joins rooms with.
pub const RECORDER_IDENTITY: &str = "roombox-recorder";

/// `[recording]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Where recordings are written; relative paths are under `data_dir`.
    pub dir: PathBuf,
    /// Refuse to start a recording with less free space than this, MiB.
    pub min_free_mib: u64,
    /// Stop and finalise a running recording when free space falls under this, MiB.
    pub reserve_mib: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig { dir: PathBuf::from("recordings"), min_free_mib: 1024, reserve_mib: 64 }
    }
}

/// Why a recording could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    #[error("room {room} is already being recorded (recording {id})")]
    AlreadyRecording { room: String, id: i64 },
    #[error("room {0} is not being recorded")]
    NotRecording(String),
    #[error("not enough free space to record: {free_mib} MiB free, recording.min_free_mib is {need_mib} MiB")]
    InsufficientStorage { free_mib: u64, need_mib: u64 },
    #[error("the SFU is not running")]
    SfuUnavailable,
    #[error("the recorder could not join the room: {0}")]
    Sfu(#[from] sfu_core::SfuError),
    #[error("recording directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The daemon's recording metrics.
#[derive(Clone)]
pub struct RecordingMetrics {
    pub active: IntGauge,
    pub bytes: IntCounter,
    pub fragments: IntCounter,
    pub files: IntCounterVec,
    pub dropped: IntCounter,
}

impl RecordingMetrics {
    pub fn register(registry: &Registry) -> Result<RecordingMetrics, prometheus::Error> {
        let m = RecordingMetrics {
            active: IntGauge::new("roombox_recordings_active", "Recordings running now.")?,
            bytes: IntCounter::new("roombox_recording_bytes_total", "Bytes written into recording files.")?,
            fragments: IntCounter::new(
                "roombox_recording_fragments_synced_total",
                "Recording fragments (and init segments) written and fdatasync'ed.",
            )?,
            files: IntCounterVec::new(
                Opts::new("roombox_recording_files_total", "Recording files closed, by final state."),
                &["state"],
            )?,
            dropped: IntCounter::new(
                "roombox_recording_packets_dropped_total",
                "Packets the recorder could not take because its writer was behind.",
            )?,
        };
        registry.register(Box::new(m.active.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.fragments.clone()))?;
        registry.register(Box::new(m.files.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        for s in ["finalized", "recovered", "failed", "empty"] {
            m.files.with_label_values(&[s]);
        }
        Ok(m)
    }
}

/// A recording as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordingView {
    pub id: i64,
    pub room: String,
    /// `recording`, `finalized`, `recovered` or `failed`.
    pub state: String,
    /// The directory holding one file per track.
    pub path: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub bytes: i64,
    /// Why it stopped: `stopped` (by a user), `disk_full`, `write_error`, `shutdown`, `room_closed`.
    pub reason: Option<String>,
    pub files: Vec<RecordingFileRow>,
}

struct Active {
    id: i64,
    stop: mpsc::Sender<String>,
    done: watch::Receiver<Option<RecordingView>>,
}

/// Every recording of the box. Cheap to share (`Arc`).
pub struct Recordings {
    cfg: RecordingConfig,
    dir: PathBuf,
    store: Store,
    metrics: RecordingMetrics,
    device: Option<Arc<Device>>,
    sfu: Option<sfu_core::Sfu>,
    active: Mutex<HashMap<String, Active>>,
}

/// The one place a finished file goes on from: finalised by a stop, cut by
/// a full disk, or recovered after a crash. Not for `failed`/`empty` files.
///
/// The file enters the upload queue (`uploads`, firmware-app/src/upload.rs).
/// With no `[cloud.upload]` the queue only waits: the file stays on the box
/// and goes when an upload target is configured. Blocking: from the writer
/// thread; async code calls [`on_file_final_async`].
pub fn on_file_final(store: &Store, path: &Path, object_key: &str) {
    log_queued(path, object_key, store.enqueue_upload_blocking(path, object_key));
}

/// [`on_file_final`] from async code (recovery at start).
pub async fn on_file_final_async(store: &Store, path: &Path, object_key: &str) {
    log_queued(path, object_key, store.enqueue_upload(path, object_key).await);
}

fn log_queued(path: &Path, object_key: &str, r: Result<bool, crate::store::StoreError>) {
    match r {
        Ok(_) => {
            tracing::info!(path = %path.display(), object_key, "recording file final, queued for upload")
        }
        // the file stays on disk and its row says where it is: nothing lost
        Err(e) => {
            tracing::error!(path = %path.display(), object_key, error = %e, "recording file final, but queueing its upload failed")
        }
    }
}

/// The object key a file is uploaded under: `<room>/<recording id>/<file name>`.
pub fn object_key(room: &str, recording_id: i64, path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{room}/{recording_id}/{name}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Free space on the file system holding `dir`, bytes.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(80)
        .collect();
    if t.is_empty() { "track".into() } else { t }
}

impl Recordings {
    pub fn new(
        data_dir: &Path,
        cfg: RecordingConfig,
        store: Store,
        registry: &Registry,
        device: Option<Arc<Device>>,
        sfu: Option<sfu_core::Sfu>,
    ) -> Result<Recordings, prometheus::Error> {
        let dir = data_dir.join(&cfg.dir);
        let metrics = RecordingMetrics::register(registry)?;
        Ok(Recordings { cfg, dir, store, metrics, device, sfu, active: Mutex::new(HashMap::new()) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The recording running in `room`, if any.
    pub fn active_id(&self, room: &str) -> Option<i64> {
        lock(&self.active).get(room).map(|a| a.id)
    }

    fn show_led(&self) {
        let any = !lock(&self.active).is_empty();
        if let Some(d) = &self.device {
            d.set_recording(any);
        }
    }

    /// Recordings a crash left open: every file is cut after its last
    /// complete fragment and marked `recovered` (`failed` if unreadable,
    /// `empty` if nothing was written), then the recording is `recovered`.
    pub async fn recover(&self) -> Result<Vec<RecordingView>, StoreError> {
        let open = self.store.call(|c| q::open_recordings(c)).await?;
        let mut out = Vec::new();
        for rec in open {
            let id = rec.id;
            let files = self.store.call(move |c| q::list_recording_files(c, id)).await?;
            let mut total = 0i64;
            for f in files.into_iter().filter(|f| f.state == "recording") {
                let path = PathBuf::from(&f.path);
                let p = path.clone();
                let r = tokio::task::spawn_blocking(move || recorder::recover_file(&p))
                    .await
                    .unwrap_or_else(|e| Err(recorder::Error::Io(std::io::Error::other(e.to_string()))));
                let now = unix_now() as i64;
                let (state, bytes, ms, err) = match r {
                    Ok(r) => {
                        tracing::warn!(
                            recording = id, file = %path.display(), fragments = r.fragments,
                            end_ms = r.end().as_millis() as u64, cut_bytes = r.cut(),
                            "recovered a recording file left open by a crash"
                        );
                        ("recovered", r.valid_len as i64, r.end().as_millis() as i64, None)
                    }
                    Err(recorder::Error::Empty) => ("empty", 0, 0, None),
                    Err(recorder::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                        ("empty", 0, 0, None)
                    }
                    Err(e) => {
                        tracing::error!(recording = id, file = %path.display(), error = %e, "recording file not recoverable; left on disk");
                        ("failed", 0, 0, Some(e.to_string()))
                    }
                };
                total += bytes;
                let fid = f.id;
                self.store
                    .call(move |c| q::end_recording_file(c, fid, state, bytes, ms, err.as_deref(), now))
                    .await?;
                self.metrics.files.with_label_values(&[state]).inc();
                if state == "recovered" {
                    on_file_final_async(&self.store, &path, &object_key(&rec.room, id, &path)).await;
                }
            }
            let now = unix_now() as i64;
            self.store.call(move |c| q::end_recording(c, id, "recovered", total, now)).await?;
            let detail = format!("recording {id}: files cut after their last complete fragment");
            let room = rec.room.clone();
            let _ = self
                .store
                .call(move |c| {
                    q::audit(c, now, "roomboxd", "recording_recovered", Some(&room), Some(&detail), None)
                })
                .await;
            out.push(self.view(id, Some("crash_recovery".into())).await?);
        }
        Ok(out)
    }

    async fn view(&self, id: i64, reason: Option<String>) -> Result<RecordingView, StoreError> {
        let (row, files) = self
            .store
            .call(move |c| {
                let row: Option<RecordingRow> =
                    q::list_recordings(c, u32::MAX)?.into_iter().find(|r| r.id == id);
                Ok((row, q::list_recording_files(c, id)?))
            })
            .await?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("recording {id}")))?;
        Ok(RecordingView {
            id,
            room: row.room,
            state: row.state,
            path: row.path,
            started_at: row.started_at,
            ended_at: row.ended_at,
            bytes: row.bytes,
            reason,
            files,
        })
    }

    /// Start recording `room` (`actor` goes into the audit log).
    pub async fn start(self: &Arc<Self>, room: &str, actor: &str) -> Result<RecordingView, RecordingError> {
        if let Some(id) = self.active_id(room) {
            return Err(RecordingError::AlreadyRecording { room: room.into(), id });
        }
        let sfu = self.sfu.clone().ok_or(RecordingError::SfuUnavailable)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordingError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let free = free_bytes(&self.dir).map_err(io(&self.dir))?;
        if free < self.cfg.min_free_mib << 20 {
            return Err(RecordingError::InsufficientStorage {
                free_mib: free >> 20,
                need_mib: self.cfg.min_free_mib,
            });
        }
        let now = unix_now() as i64;
        let (r, base) = (room.to_owned(), self.dir.clone());
        let (id, dir) = self
            .store
            .call(move |c| {
                crate::store::atomic(c, |c| {
                    let id = q::insert_recording(c, &r, "", now)?;
                    let dir = base.join(id.to_string());
                    c.execute(
                        "UPDATE recordings SET path = ?2 WHERE id = ?1",
                        rusqlite::params![id, dir.to_string_lossy()],
                    )?;
                    Ok((id, dir))
                })
            })
            .await?;
        let fail = |e: RecordingError| {
            let store = self.store.clone();
            async move {
                let now = unix_now() as i64;
                let _ = store.call(move |c| q::end_recording(c, id, "failed", 0, now)).await;
                e
            }
        };
        if let Err(e) = std::fs::create_dir(&dir).and_then(|_| std::fs::File::open(&self.dir)?.sync_all()) {
            return Err(fail(RecordingError::Io { path: dir, source: e }).await);
        }
        let join = LocalJoin {
            room: room.to_owned(),
            identity: RECORDER_IDENTITY.into(),
            name: Some("Recording".into()),
            publish: vec![],
            subscribe: LocalSubscription::All,
        };
        let participant = match sfu.join_local(join).await {
            Ok(p) => p,
            Err(e) => return Err(fail(e.into()).await),
        };
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let (done_tx, done_rx) = watch::channel(None);
        lock(&self.active).insert(room.to_owned(), Active { id, stop: stop_tx, done: done_rx });
        self.metrics.active.inc();
        self.show_led();
        let _ = sfu.set_room_recording(room, true).await;
        self.audit(actor, "recording_start", room, format!("recording {id}")).await;
        tracing::info!(room, recording = id, dir = %dir.display(), "recording started");

        let writer = Writer {
            id,
            room: room.to_owned(),
            dir,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            reserve: self.cfg.reserve_mib << 20,
            started: Instant::now(),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let reason = run(participant, writer, stop_rx, this.metrics.dropped.clone()).await;
            this.finish(id, &reason, &sfu, done_tx).await;
        });
        Ok(self.view(id, None).await?)
    }

    async fn finish(
        &self,
        id: i64,
        reason: &Ended,
        sfu: &sfu_core::Sfu,
        done: watch::Sender<Option<RecordingView>>,
    ) {
        let room = {
            let mut a = lock(&self.active);
            let room = a.iter().find(|(_, v)| v.id == id).map(|(k, _)| k.clone());
            if let Some(r) = &room {
                a.remove(r);
            }
            room.unwrap_or_default()
        };
        self.metrics.active.dec();
        self.show_led();
        let _ = sfu.set_room_recording(&room, false).await;
        let now = unix_now() as i64;
        let bytes = reason.bytes as i64;
        if let Err(e) = self.store.call(move |c| q::end_recording(c, id, "finalized", bytes, now)).await {
            tracing::error!(recording = id, error = %e, "could not mark the recording finalized (the next start recovers it)");
        }
        self.audit(&reason.actor, "recording_stop", &room, format!("recording {id}: {}", reason.why)).await;
        tracing::info!(room, recording = id, reason = reason.why, bytes, "recording stopped");
        let view = self.view(id, Some(reason.why.to_string())).await.ok();
        let _ = done.send(view);
    }

    async fn audit(&self, actor: &str, action: &str, room: &str, detail: String) {
        let (a, ac, r) = (actor.to_owned(), action.to_owned(), room.to_owned());
        let now = unix_now() as i64;
        if let Err(e) =
            self.store.call(move |c| q::audit(c, now, &a, &ac, Some(&r), Some(&detail), None)).await
        {
            tracing::warn!(error = %e, "audit entry not written");
        }
    }

    /// Stop recording `room`; returns once every file is final.
    pub async fn stop(&self, room: &str, actor: &str) -> Result<RecordingView, RecordingError> {
        let (stop, mut done) = {
            let a = lock(&self.active);
            let a = a.get(room).ok_or_else(|| RecordingError::NotRecording(room.into()))?;
            (a.stop.clone(), a.done.clone())
        };
        let _ = stop.send(actor.to_owned()).await;
        let view = done.wait_for(|v| v.is_some()).await.map(|v| v.clone()).ok().flatten();
        view.ok_or_else(|| RecordingError::NotRecording(room.into()))
    }

    /// Stop every recording (daemon shutdown).
    pub async fn stop_all(&self, actor: &str) {
        let rooms: Vec<String> = lock(&self.active).keys().cloned().collect();
        for r in rooms {
            let _ = self.stop(&r, actor).await;
        }
    }
}

struct Ended {
    why: &'static str,
    actor: String,
    bytes: u64,
}

enum Msg {
    Rtp(ReceivedPacket, Instant),
}

/// The SFU edge: forward packets to the writer thread until stopped.
async fn run(
    mut participant: sfu_core::LocalParticipant,
    writer: Writer,
    mut stop: mpsc::Receiver<String>,
    dropped: IntCounter,
) -> Ended {
    let (tx, rx) = std_mpsc::sync_channel::<Msg>(8192);
    let name = format!("roombox-rec-{}", writer.id);
    let thread = match std::thread::Builder::new().name(name).spawn(move || writer.run(rx)) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "could not start the recording thread");
            participant.leave().await;
            return Ended { why: "write_error", actor: "roomboxd".into(), bytes: 0 };
        }
    };
    let mut actor = "roomboxd".to_owned();
    let mut why = "room_closed";
    loop {
        tokio::select! {
            a = stop.recv() => {
                if let Some(a) = a {
                    why = if a == "shutdown" { "shutdown" } else { "stopped" };
                    actor = a;
                }
                break;
            }
            ev = participant.events.recv() => match ev {
                Some(LocalEvent::Rtp(p)) => match tx.try_send(Msg::Rtp(p, Instant::now())) {
                    Ok(()) => {}
                    Err(std_mpsc::TrySendError::Full(_)) => dropped.inc(),
                    // the writer stopped by itself (disk full, write error)
                    Err(std_mpsc::TrySendError::Disconnected(_)) => break,
                },
                Some(_) => {}
                None => break,
            }
        }
    }
    drop(tx);
    participant.leave().await;
    let out = tokio::task::spawn_blocking(move || thread.join()).await;
    match out {
        Ok(Ok(w)) => Ended { why: w.why.unwrap_or(why), actor, bytes: w.bytes },
        _ => Ended { why: "write_error", actor, bytes: 0 },
    }
}

struct Writer {
    id: i64,
    room: String,
    dir: PathBuf,
    store: Store,
    metrics: RecordingMetrics,
    reserve: u64,
    started: Instant,
}

struct TrackFile {
    file_id: i64,
    path: PathBuf,
    rec: TrackRecorder,
    sink: Option<FileSink>,
}

struct WriterEnd {
    why: Option<&'static str>,
    bytes: u64,
}

impl Writer {
    fn run(self, rx: std_mpsc::Receiver<Msg>) -> WriterEnd {
        let mut tracks: HashMap<Arc<str>, Option<TrackFile>> = HashMap::new();
        let mut why = None;
        while let Ok(Msg::Rtp(p, at)) = rx.recv() {
            let arrival = at.saturating_duration_since(self.started);
            let slot = match tracks.get_mut(&p.track) {
                Some(s) => s,
                None => {
                    let t = self.open(&p);
                    tracks.entry(p.track.clone()).or_insert(t)
                }
            };
            let Some(t) = slot else { continue };
            let Some(sink) = t.sink.as_mut() else { continue };
            let rtp = RtpIn { seq: p.seq, timestamp: p.timestamp, marker: p.marker, payload: &p.payload };
            // A bug in the recorder on one peer's input (two were found by fuzzing) must not
            // take the other tracks down with the thread: that track's file is cut after its
            // last complete fragment, the others go on.
            let pushed = std::panic::catch_unwind(AssertUnwindSafe(|| t.rec.push(rtp, arrival, &mut *sink)));
            let Ok(pushed) = pushed else {
                tracing::error!(recording = self.id, track = %p.track, file = %t.path.display(), "the recorder failed on this track's input; its file ends here, the other tracks go on");
                if let Some(t) = tracks.get_mut(&p.track).and_then(Option::take) {
                    self.close_cut(t, "the recorder failed on this track's input".into());
                }
                continue;
            };
            let r = pushed.map_err(io_of).and_then(|w| {
                sink.commit(w)?;
                Ok(w)
            });
            match r {
                Ok(w) => {
                    self.metrics.bytes.inc_by(w.bytes);
                    self.metrics.fragments.inc_by(w.fragments as u64);
                    if w.fragments > 0 && free_bytes(&self.dir).is_ok_and(|f| f < self.reserve) {
                        tracing::warn!(
                            recording = self.id,
                            "free space under recording.reserve_mib: stopping"
                        );
                        why = Some("disk_full");
                        break;
                    }
                }
                Err(e) => {
                    let full =
                        e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT);
                    tracing::error!(recording = self.id, file = %t.path.display(), error = %e, "recording write failed: stopping");
                    why = Some(if full { "disk_full" } else { "write_error" });
                    break;
                }
            }
        }
        let mut bytes = 0;
        for t in tracks.into_values().flatten() {
            bytes += self.close(t);
        }
        WriterEnd { why, bytes }
    }

    fn open(&self, p: &ReceivedPacket) -> Option<TrackFile> {
        let Some(codec) = Codec::from_sdp_name(&p.codec) else {
            tracing::warn!(recording = self.id, track = %p.track, codec = %p.codec, "codec not recordable; track skipped");
            return None;
        };
        let mut name = format!("{}-{}", sanitize(&p.from), sanitize(&p.track));
        let mut n = 1;
        while self.dir.join(format!("{name}.mp4")).exists() {
            n += 1;
            name = format!("{}-{}-{n}", sanitize(&p.from), sanitize(&p.track));
        }
        let path = self.dir.join(format!("{name}.mp4"));
        let kind = if codec.is_video() { "video" } else { "audio" };
        let (id, track, from, codec_name, path_s) = (
            self.id,
            p.track.to_string(),
            p.from.to_string(),
            p.codec.to_string(),
            path.to_string_lossy().into_owned(),
        );
        let now = unix_now() as i64;
        // the row first: a crash after it leaves a row recovery finds (missing file = empty)
        let file_id = match self.store.call_blocking(move |c| {
            q::insert_recording_file(c, id, &track, &from, kind, &codec_name, &path_s, now)
        }) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(recording = self.id, error = %e, "could not store the recording file; track skipped");
                return None;
            }
        };
        let sink = match FileSink::create(&path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(recording = self.id, file = %path.display(), error = %e, "could not create the recording file");
                None
            }
        };
        tracing::info!(recording = self.id, track = %p.track, from = %p.from, file = %path.display(), "recording track");
        Some(TrackFile { file_id, path, rec: TrackRecorder::new(codec), sink })
    }

    /// Finalise one file; returns its size.
    fn close(&self, mut t: TrackFile) -> u64 {
        let (state, bytes, ms, err) = match t.sink.take() {
            None => ("failed", 0, 0, Some("the file could not be created".to_owned())),
            Some(mut sink) => {
                let ended = t.rec.finish(&mut sink).map_err(io_of).and_then(|done| {
                    let ms = done.end.as_millis() as i64;
                    let empty = done.patch.is_none();
                    self.metrics.bytes.inc_by(done.written.bytes);
                    sink.finalise(done.written, done.patch.as_ref())?;
                    Ok((empty, ms))
                });
                match ended {
                    Ok((true, _)) => ("empty", 0, 0, None),
                    Ok((false, ms)) => ("finalized", t.rec.position() as i64, ms, None),
                    // the last fragment did not fit: cut after the last complete one
                    Err(e) => cut_after_last_fragment(&t.path, &e.to_string()),
                }
            }
        };
        self.end_file(t, state, bytes, ms, err)
    }

    /// Finalise a file whose recorder cannot go on (`why`): the file is cut
    /// after its last complete fragment. Returns its size.
    fn close_cut(&self, mut t: TrackFile, why: String) -> u64 {
        drop(t.sink.take());
        let (state, bytes, ms, err) = cut_after_last_fragment(&t.path, &why);
        self.end_file(t, state, bytes, ms, err)
    }

    fn end_file(&self, t: TrackFile, state: &'static str, bytes: i64, ms: i64, err: Option<String>) -> u64 {
        let now = unix_now() as i64;
        self.metrics.fragments.inc();
        self.metrics.files.with_label_values(&[state]).inc();
        let fid = t.file_id;
        let e2 = err.clone();
        if let Err(e) = self
            .store
            .call_blocking(move |c| q::end_recording_file(c, fid, state, bytes, ms, e2.as_deref(), now))
        {
            tracing::error!(recording = self.id, error = %e, "could not store the file's end (the next start recovers it)");
        }
        tracing::info!(recording = self.id, file = %t.path.display(), state, bytes, duration_ms = ms, error = ?err, "recording file closed");
        if state == "finalized" {
            on_file_final(&self.store, &t.path, &object_key(&self.room, self.id, &t.path));
        }
        bytes as u64
    }
}

/// Cut a file after its last complete fragment: (state, bytes, duration ms, error).
fn cut_after_last_fragment(path: &Path, why: &str) -> (&'static str, i64, i64, Option<String>) {
    match recorder::recover_file(path) {
        Ok(r) => {
            ("finalized", r.valid_len as i64, r.end().as_millis() as i64, Some(format!("cut short: {why}")))
        }
        Err(recorder::Error::Empty) => ("empty", 0, 0, None),
        Err(r) => ("failed", 0, 0, Some(format!("{why}; then {r}"))),
    }
}

fn io_of(e: recorder::Error) -> std::io::Error {
    match e {
        recorder::Error::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Opus frames (20 ms, arbitrary bytes: the muxer does not decode them).
    fn opus_file(seconds: u32) -> Vec<u8> {
        let mut rec = TrackRecorder::new(Codec::Opus);
        let mut file = Vec::new();
        let payload = [0xfcu8, 0xff, 0xfe];
        for i in 0..seconds * 50 {
            let rtp = RtpIn { seq: i as u16, timestamp: i * 960, marker: false, payload: &payload };
            rec.push(rtp, Duration::from_millis(i as u64 * 20), &mut file).unwrap();
        }
        file
    }

    #[test]
    fn a_track_whose_recorder_failed_is_cut_after_its_last_complete_fragment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice-mic.mp4");
        let mut bytes = opus_file(3);
        let whole = bytes.len();
        bytes.extend_from_slice(&[0, 0, 1, 0, b'm', b'o', b'o', b'f', 1, 2, 3]); // a fragment cut mid-write
        std::fs::write(&path, &bytes).unwrap();

        let (state, len, ms, err) = cut_after_last_fragment(&path, "the recorder failed");
        assert_eq!(state, "finalized");
        assert_eq!(len as usize, whole, "cut exactly after the last complete fragment");
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole, "the file itself is cut");
        assert!((1000..=3000).contains(&ms), "{ms} ms recorded");
        assert_eq!(err.as_deref(), Some("cut short: the recorder failed"));
    }

    #[test]
    fn a_track_with_nothing_complete_is_empty_and_garbage_is_failed_with_both_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.mp4");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(cut_after_last_fragment(&empty, "x").0, "empty");
        let junk = dir.path().join("junk.mp4");
        std::fs::write(&junk, b"definitely not an mp4 file at all").unwrap();
        let (state, _, _, err) = cut_after_last_fragment(&junk, "the recorder failed");
        assert_eq!(state, "failed");
        assert!(err.unwrap().starts_with("the recorder failed; then "));
    }
}
