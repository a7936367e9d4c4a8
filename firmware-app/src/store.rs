//! The SQLite store: one file in the data dir, owned by one thread.
//!
//! * **Handle + driver.** [`Store`] is a cheap, cloneable handle. One thread
//!   (`roombox-store`) owns the [`Connection`] and runs jobs sent over a bounded
//!   channel, so blocking SQLite calls never run on a tokio worker and writes
//!   are serialized without lock contention.
//! * **Durability.** WAL journal, `foreign_keys = ON`, and `synchronous = FULL`
//!   by default: in WAL mode FULL fsyncs the log at every commit, so a power cut
//!   loses nothing that was acknowledged (NORMAL would keep the file consistent
//!   but may drop the last commits, which the design forbids). The box writes a
//!   few rows per join/leave/login, so the fsync per commit costs nothing that
//!   matters. `store.synchronous = "normal"` exists for wear-sensitive media.
//! * **Refusals.** A file that is not SQLite, fails `quick_check`, or carries a
//!   schema version newer than this build knows is refused with a clear error
//!   before anything is written to it: the file is never overwritten.
//! * **Migrations** are numbered; `PRAGMA user_version` records the last one
//!   applied; each runs in its own transaction.
//! * **A full disk** (or `store.max_size_mib`, via `max_page_count`) turns into
//!   [`StoreError::Full`]; the transaction rolls back, earlier rows stay.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::Synchronous;

/// Schema migrations, in order. Index `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE rooms (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        display_name TEXT,
        created_at   INTEGER NOT NULL
    );
    CREATE TABLE meetings (
        id         INTEGER PRIMARY KEY,
        room_id    INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        started_at INTEGER NOT NULL,
        ended_at   INTEGER,
        end_reason TEXT
    );
    -- at most one open meeting per room
    CREATE UNIQUE INDEX meetings_open ON meetings(room_id) WHERE ended_at IS NULL;
    CREATE INDEX meetings_started ON meetings(started_at);
    CREATE TABLE participant_sessions (
        id          INTEGER PRIMARY KEY,
        meeting_id  INTEGER NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        identity    TEXT NOT NULL,
        sfu_session INTEGER NOT NULL,
        local       INTEGER NOT NULL DEFAULT 0,
        joined_at   INTEGER NOT NULL,
        left_at     INTEGER,
        leave_reason TEXT
    );
    CREATE INDEX sessions_meeting ON participant_sessions(meeting_id);
    CREATE INDEX sessions_open ON participant_sessions(sfu_session) WHERE left_at IS NULL;
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'member')),
        token_version INTEGER NOT NULL DEFAULT 1,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE TABLE refresh_tokens (
        id            INTEGER PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash    BLOB NOT NULL UNIQUE,
        family        TEXT NOT NULL,
        token_version INTEGER NOT NULL,
        room          TEXT NOT NULL,
        grants        TEXT NOT NULL,
        issued_at     INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        used_at       INTEGER,
        revoked_at    INTEGER
    );
    CREATE INDEX refresh_family ON refresh_tokens(family);
    CREATE TABLE recordings (
        id         INTEGER PRIMARY KEY,
        meeting_id INTEGER REFERENCES meetings(id) ON DELETE SET NULL,
        room       TEXT NOT NULL,
        path       TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('recording', 'finalized', 'recovered', 'failed')),
        bytes      INTEGER NOT NULL DEFAULT 0,
        started_at INTEGER NOT NULL,
        ended_at   INTEGER
    );
    -- superseded by migration 3's per-file `uploads`; nothing writes it any more
    CREATE TABLE upload_queue (
        id              INTEGER PRIMARY KEY,
        recording_id    INTEGER NOT NULL UNIQUE REFERENCES recordings(id) ON DELETE CASCADE,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'done', 'failed')),
        upload_id       TEXT,
        parts           TEXT NOT NULL DEFAULT '[]',
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        next_attempt_at INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    );
    CREATE TABLE settings (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE audit_log (
        id     INTEGER PRIMARY KEY,
        at     INTEGER NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        detail TEXT,
        ip     TEXT
    );
    CREATE INDEX audit_at ON audit_log(at);
    "#,
    // 2: display credentials (the room TV's durable, revocable login).
    r#"
    CREATE TABLE displays (
        id           INTEGER PRIMARY KEY,
        room         TEXT NOT NULL,
        name         TEXT NOT NULL,
        secret_hash  BLOB NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        created_by   TEXT NOT NULL,
        last_used_at INTEGER,
        revoked_at   INTEGER
    );
    "#,
    // 3: the upload queue by file (firmware-app/src/upload.rs): what the recorder
    // finished, where it goes, and every part the store already has, so a restart
    // resumes without sending a finished part again.
    r#"
    CREATE TABLE uploads (
        path            TEXT PRIMARY KEY,
        object_key      TEXT NOT NULL,
        state           TEXT NOT NULL
                        CHECK (state IN ('pending', 'uploading', 'completed', 'verified', 'done', 'failed')),
        size            INTEGER,
        sha256          TEXT,
        upload_id       TEXT,
        remote_etag     TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        next_attempt_at INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    );
    CREATE INDEX uploads_due ON uploads(next_attempt_at) WHERE state <> 'done';
    CREATE TABLE upload_parts (
        path        TEXT NOT NULL REFERENCES uploads(path) ON DELETE CASCADE,
        part_number INTEGER NOT NULL,
        etag        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        PRIMARY KEY (path, part_number)
    );
    -- multipart uploads given up on: aborted by the cleanup when the server
    -- cannot list its open uploads
    CREATE TABLE upload_orphans (
        upload_id  TEXT PRIMARY KEY,
        object_key TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    "#,
    // 4: the per-track files of a recording (`recordings.path` is their directory).
    r#"
    CREATE TABLE recording_files (
        id           INTEGER PRIMARY KEY,
        recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        track        TEXT NOT NULL,
        identity     TEXT NOT NULL,
        kind         TEXT NOT NULL,
        codec        TEXT NOT NULL,
        path         TEXT NOT NULL UNIQUE,
        state        TEXT NOT NULL CHECK (state IN ('recording', 'finalized', 'recovered', 'failed', 'empty')),
        bytes        INTEGER NOT NULL DEFAULT 0,
        duration_ms  INTEGER NOT NULL DEFAULT 0,
        error        TEXT,
        started_at   INTEGER NOT NULL,
        ended_at     INTEGER
    );
    CREATE INDEX recording_files_recording ON recording_files(recording_id);
    "#,
    // 5: the fleet link's command log (firmware-app/src/fleet.rs): every command id
    // seen until it expires (replays), its result until the operator acks it.
    // `IF NOT EXISTS`: boxes that ran the fleet link before this migration made
    // the table on first use, with this same shape.
    r#"
    CREATE TABLE IF NOT EXISTS fleet_commands (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        expires_at    INTEGER NOT NULL,
        token_sha256  TEXT NOT NULL,
        result        TEXT,
        acked         INTEGER NOT NULL DEFAULT 0
    );
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "{path} is not a usable roombox database ({detail}); it was left untouched. \
         Restore a backup (`roomboxd db backup` makes them) or move the file away to start empty"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path} has schema version {found}, newer than this roomboxd supports ({supported}); \
         refusing to open it (left untouched). Run the newer roomboxd or restore a backup"
    )]
    NewerSchema { path: PathBuf, found: i64, supported: i64 },
    #[error("the database is full (disk full or store.max_size_mib reached); nothing was written")]
    Full,
    #[error(
        "the database could not be written (disk full, file size limit, or failing storage); \
         the transaction was rolled back and earlier rows are intact"
    )]
    WriteFailed,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("the store is closed")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("SQLite error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        const IOERR_WRITE: i32 = rusqlite::ffi::SQLITE_IOERR_WRITE;
        const IOERR_FSYNC: i32 = rusqlite::ffi::SQLITE_IOERR_FSYNC;
        const IOERR_TRUNCATE: i32 = rusqlite::ffi::SQLITE_IOERR_TRUNCATE;
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && matches!(f.extended_code, IOERR_WRITE | IOERR_FSYNC | IOERR_TRUNCATE)
        {
            return StoreError::WriteFailed;
        }
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full,
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
            _ => StoreError::Sqlite(e),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub synchronous: Synchronous,
    /// 0 = unbounded.
    pub max_size_mib: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { synchronous: Synchronous::Full, max_size_mib: 0 }
    }
}

/// A handle to the store's thread. Clone freely.
#[derive(Clone)]
pub struct Store {
    tx: std_mpsc::SyncSender<Job>,
    path: Arc<PathBuf>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The database holds password hashes, refresh-token hashes and display
/// credentials: create it readable by the owner only, and tighten an existing
/// file (and its WAL/SHM, which SQLite creates with the main file's mode).
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Ok(());
    }
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(meta) = std::fs::metadata(&p)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Open (and migrate) the database file without starting the thread. Used by
/// [`Store::open`], by `db backup`, and by tests that want a plain connection.
pub fn open_connection(path: &Path, opts: &StoreOptions) -> Result<Connection, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { path: path.to_owned(), detail };
    // A non-empty file must start with SQLite's magic; anything else is refused
    // before SQLite can touch it.
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > 0
    {
        use std::io::Read;
        let mut magic = [0u8; 16];
        let mut f = std::fs::File::open(path)?;
        let n = f.read(&mut magic)?;
        if n < 16 || &magic != b"SQLite format 3\0" {
            return Err(corrupt("not an SQLite file".into()));
        }
    }
    make_private(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => corrupt(e.to_string()),
            _ => StoreError::from(e),
        }
    })?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let check: String = conn.pragma_query_value(None, "quick_check", |r| r.get(0)).map_err(|e| {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => corrupt(e.to_string()),
            _ => StoreError::from(e),
        }
    })?;
    if check != "ok" {
        return Err(corrupt(format!("quick_check: {check}")));
    }
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(format!("cannot switch to WAL (journal_mode is {mode})")));
        }
    }
    conn.pragma_update(
        None,
        "synchronous",
        match opts.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if opts.max_size_mib > 0 {
        let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages = (opts.max_size_mib as i64 * 1024 * 1024) / page.max(512);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    }
    migrate(&conn, version)?;
    Ok(conn)
}

fn migrate(conn: &Connection, from: i64) -> Result<(), StoreError> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        let to = i as i64 + 1;
        conn.execute_batch(&format!("BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {to};\nCOMMIT;"))
            .inspect_err(|_| {
                let _ = conn.execute_batch("ROLLBACK");
            })?;
        tracing::info!(version = to, "store schema migrated");
    }
    Ok(())
}

impl Store {
    /// Open the file (creating it and its directory when missing), migrate, and
    /// start the store thread.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = open_connection(path, &opts)?;
        let (tx, rx) = std_mpsc::sync_channel::<Job>(256);
        let thread = std::thread::Builder::new().name("roombox-store".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                job(&mut conn);
            }
            // Every handle is gone: checkpoint so the main file holds everything.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "final WAL checkpoint failed (the WAL still holds the data)");
            }
        })?;
        Ok(Store { tx, path: Arc::new(path.to_owned()), thread: Arc::new(Mutex::new(Some(thread))) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the store thread and await its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        // A full queue means the store is busy: wait for room without blocking a worker.
        let sender = self.tx.clone();
        match sender.try_send(job) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
            Err(std_mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || sender.send(job).map_err(|_| StoreError::Closed))
                    .await
                    .map_err(|_| StoreError::Closed)??;
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`call`](Self::call) from synchronous code (the CLI, tests). Never from a tokio worker.
    pub fn call_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = std_mpsc::sync_channel(1);
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.tx.send(job).map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Checkpoint the WAL into the main file (on shutdown, before a backup).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.call(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Checkpoint and stop the thread once every other handle is dropped. Waits
    /// (off the runtime) for the thread when this is the last handle.
    pub async fn close(self) -> Result<(), StoreError> {
        let r = self.checkpoint().await;
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        drop(self.tx);
        if let Some(t) = thread
            && Arc::strong_count(&self.thread) == 1
        {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        r
    }
}

/// Write an online, consistent copy of the database at `src` to `dest`.
/// Works while the daemon runs (WAL readers do not block the writer). The copy
/// goes to a temporary file beside `dest`, is integrity-checked, fsynced and
/// renamed into place, so `dest` is either the old file or a complete backup.
pub fn backup(src: &Path, dest: &Path) -> Result<u64, StoreError> {
    if !src.exists() {
        return Err(StoreError::NotFound(format!("database {}", src.display())));
    }
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: i64 = source
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| StoreError::Corrupt { path: src.to_owned(), detail: e.to_string() })?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: src.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".roombox-backup-").tempfile_in(dir)?;
    {
        let mut out = Connection::open(tmp.path())?;
        let b = rusqlite::backup::Backup::new(&source, &mut out)?;
        b.run_to_completion(256, Duration::from_millis(5), None)?;
        drop(b);
        // The copy is a plain rollback-journal file: one self-contained file.
        let check: String = out.pragma_query_value(None, "integrity_check", |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: src.to_owned(),
                detail: format!("backup check: {check}"),
            });
        }
    }
    let file = tmp.as_file();
    file.sync_all()?;
    let size = file.metadata()?.len();
    tmp.persist(dest).map_err(|e| StoreError::Io(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(size)
}

// ---------------------------------------------------------------------------
// Rows and queries. Each is a plain function over a connection, run on the
// store thread through `Store::call`.

/// A room known to the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RoomRow {
    pub name: String,
    pub display_name: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A meeting: from the first join to the last leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MeetingRow {
    pub id: i64,
    pub room: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    /// Participant sessions in this meeting.
    pub sessions: i64,
}

/// One participant's stay in a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SessionRow {
    pub id: i64,
    pub meeting_id: i64,
    pub identity: String,
    pub local: bool,
    pub joined_at: i64,
    pub left_at: Option<i64>,
    pub leave_reason: Option<String>,
}

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub token_version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
    fn parse(s: &str) -> Role {
        if s == "admin" { Role::Admin } else { Role::Member }
    }
}

/// A stored refresh token (the token itself is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub family: String,
    pub token_version: u64,
    pub room: String,
    pub grants: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A recording on the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RecordingRow {
    pub id: i64,
    pub room: String,
    pub path: String,
    pub state: String,
    pub bytes: i64,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// Upload state when queued (`pending`, `uploading`, `done`, `failed`).
    pub upload: Option<String>,
}

/// One track's file of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RecordingFileRow {
    pub id: i64,
    pub recording_id: i64,
    /// The room's track id.
    pub track: String,
    /// Who published it.
    pub identity: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `H264`, `VP8` or `opus`.
    pub codec: String,
    pub path: String,
    /// `recording`, `finalized`, `recovered` (cut after its last complete
    /// fragment after a crash), `failed` (not readable; left on disk) or `empty`.
    pub state: String,
    pub bytes: i64,
    /// From the start of the recording to the end of this file's last sample
    /// (the tracks of a recording share that time origin).
    pub duration_ms: i64,
    pub error: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

/// A display credential (the secret itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DisplayRow {
    pub id: i64,
    pub room: String,
    pub name: String,
    pub created_at: i64,
    pub created_by: String,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub ip: Option<String>,
}

/// Run `f` atomically: in a SAVEPOINT, so it nests inside an outer one and
/// either everything in it is committed or nothing is.
pub fn atomic<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    c.execute_batch("SAVEPOINT roombox_atomic")?;
    match f(c) {
        Ok(v) => match c.execute_batch("RELEASE roombox_atomic") {
            Ok(()) => Ok(v),
            Err(e) => {
                // A failed commit (e.g. disk full): roll back explicitly, as SQLite advises.
                if !c.is_autocommit() {
                    let _ = c.execute_batch("ROLLBACK");
                }
                Err(e.into())
            }
        },
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK TO roombox_atomic; RELEASE roombox_atomic");
            Err(e)
        }
    }
}

pub mod q {
    //! The queries. Each multi-statement write is [`atomic`].
    use super::*;

    pub fn ensure_room(c: &Connection, name: &str, at: i64) -> Result<i64, StoreError> {
        c.execute(
            "INSERT INTO rooms(name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![name, at],
        )?;
        Ok(c.query_row("SELECT id FROM rooms WHERE name = ?1", [name], |r| r.get(0))?)
    }

    pub fn create_room(
        c: &Connection,
        name: &str,
        display: Option<&str>,
        at: i64,
    ) -> Result<RoomRow, StoreError> {
        c.execute(
            "INSERT INTO rooms(name, display_name, created_at) VALUES (?1, ?2, ?3)",
            params![name, display, at],
        )
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("room {name:?}")),
            other => other,
        })?;
        Ok(RoomRow { name: name.into(), display_name: display.map(str::to_owned), created_at: at })
    }

    pub fn list_rooms(c: &Connection) -> Result<Vec<RoomRow>, StoreError> {
        let mut st = c.prepare_cached("SELECT name, display_name, created_at FROM rooms ORDER BY name")?;
        let rows = st
            .query_map([], |r| {
                Ok(RoomRow { name: r.get(0)?, display_name: r.get(1)?, created_at: r.get(2)? })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn get_room(c: &Connection, name: &str) -> Result<Option<RoomRow>, StoreError> {
        Ok(c.query_row("SELECT name, display_name, created_at FROM rooms WHERE name = ?1", [name], |r| {
            Ok(RoomRow { name: r.get(0)?, display_name: r.get(1)?, created_at: r.get(2)? })
        })
        .optional()?)
    }

    /// Start a meeting in `room` (idempotent: returns the open one if any).
    pub fn meeting_start(c: &Connection, room: &str, at: i64) -> Result<i64, StoreError> {
        atomic(c, |tx| {
            let room_id = ensure_room(tx, room, at)?;
            let open: Option<i64> = tx
                .query_row(
                    "SELECT id FROM meetings WHERE room_id = ?1 AND ended_at IS NULL",
                    [room_id],
                    |r| r.get(0),
                )
                .optional()?;
            let id = match open {
                Some(id) => id,
                None => {
                    tx.execute(
                        "INSERT INTO meetings(room_id, started_at) VALUES (?1, ?2)",
                        params![room_id, at],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            Ok(id)
        })
    }

    /// End the open meeting of `room` and any session still open in it.
    pub fn meeting_end(c: &Connection, room: &str, at: i64, reason: &str) -> Result<Option<i64>, StoreError> {
        atomic(c, |tx| {
            let open: Option<i64> = tx
                .query_row(
                    "SELECT m.id FROM meetings m JOIN rooms r ON r.id = m.room_id
                 WHERE r.name = ?1 AND m.ended_at IS NULL",
                    [room],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = open {
                tx.execute(
                    "UPDATE participant_sessions SET left_at = ?2, leave_reason = ?3
                 WHERE meeting_id = ?1 AND left_at IS NULL",
                    params![id, at, reason],
                )?;
                tx.execute(
                    "UPDATE meetings SET ended_at = ?2, end_reason = ?3 WHERE id = ?1",
                    params![id, at, reason],
                )?;
            }
            Ok(open)
        })
    }

    /// Record a join (starting the room's meeting if none is open).
    pub fn session_start(
        c: &Connection,
        room: &str,
        identity: &str,
        sfu_session: u64,
        local: bool,
        at: i64,
    ) -> Result<i64, StoreError> {
        atomic(c, |c| {
            let meeting = meeting_start(c, room, at)?;
            c.execute(
                "INSERT INTO participant_sessions(meeting_id, identity, sfu_session, local, joined_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![meeting, identity, sfu_session as i64, local, at],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Record a leave. Returns the session's row id when it was open.
    pub fn session_end(
        c: &Connection,
        room: &str,
        sfu_session: u64,
        at: i64,
        reason: &str,
    ) -> Result<Option<i64>, StoreError> {
        let id: Option<i64> = c
            .query_row(
                "SELECT s.id FROM participant_sessions s
                 JOIN meetings m ON m.id = s.meeting_id JOIN rooms r ON r.id = m.room_id
                 WHERE r.name = ?1 AND s.sfu_session = ?2 AND s.left_at IS NULL",
                params![room, sfu_session as i64],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = id {
            c.execute(
                "UPDATE participant_sessions SET left_at = ?2, leave_reason = ?3 WHERE id = ?1",
                params![id, at, reason],
            )?;
        }
        Ok(id)
    }

    /// Close every open session and meeting (at start after a crash, and at shutdown).
    pub fn close_all_open(c: &Connection, at: i64, reason: &str) -> Result<(usize, usize), StoreError> {
        atomic(c, |tx| {
            let s = tx.execute(
            "UPDATE participant_sessions SET left_at = MAX(joined_at, ?1), leave_reason = ?2 WHERE left_at IS NULL",
            params![at, reason],
        )?;
            let m = tx.execute(
                "UPDATE meetings SET ended_at = MAX(started_at, ?1), end_reason = ?2 WHERE ended_at IS NULL",
                params![at, reason],
            )?;
            Ok((m, s))
        })
    }

    pub fn list_meetings(
        c: &Connection,
        room: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MeetingRow>, StoreError> {
        let mut st = c.prepare_cached(
            "SELECT m.id, r.name, m.started_at, m.ended_at, m.end_reason,
                    (SELECT COUNT(*) FROM participant_sessions s WHERE s.meeting_id = m.id)
             FROM meetings m JOIN rooms r ON r.id = m.room_id
             WHERE ?1 IS NULL OR r.name = ?1
             ORDER BY m.started_at DESC, m.id DESC LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![room, limit], |r| {
                Ok(MeetingRow {
                    id: r.get(0)?,
                    room: r.get(1)?,
                    started_at: r.get(2)?,
                    ended_at: r.get(3)?,
                    end_reason: r.get(4)?,
                    sessions: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn list_sessions(c: &Connection, meeting_id: i64) -> Result<Vec<SessionRow>, StoreError> {
        let mut st = c.prepare_cached(
            "SELECT id, meeting_id, identity, local, joined_at, left_at, leave_reason
             FROM participant_sessions WHERE meeting_id = ?1 ORDER BY joined_at, id",
        )?;
        let rows = st
            .query_map([meeting_id], |r| {
                Ok(SessionRow {
                    id: r.get(0)?,
                    meeting_id: r.get(1)?,
                    identity: r.get(2)?,
                    local: r.get(3)?,
                    joined_at: r.get(4)?,
                    left_at: r.get(5)?,
                    leave_reason: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn user_count(c: &Connection) -> Result<i64, StoreError> {
        Ok(c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
    }

    pub fn create_user(
        c: &Connection,
        username: &str,
        password_hash: &str,
        role: Role,
        at: i64,
    ) -> Result<UserRow, StoreError> {
        c.execute(
            "INSERT INTO users(username, password_hash, role, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![username, password_hash, role.as_str(), at],
        )
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("user {username:?}")),
            other => other,
        })?;
        Ok(UserRow {
            id: c.last_insert_rowid(),
            username: username.into(),
            password_hash: password_hash.into(),
            role,
            token_version: 1,
        })
    }

    pub fn get_user(c: &Connection, username: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(c.query_row(
            "SELECT id, username, password_hash, role, token_version FROM users WHERE username = ?1",
            [username],
            |r| {
                Ok(UserRow {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    password_hash: r.get(2)?,
                    role: Role::parse(&r.get::<_, String>(3)?),
                    token_version: r.get::<_, i64>(4)? as u64,
                })
            },
        )
        .optional()?)
    }

    /// Every user's current token version (to fill the revocation cache).
    pub fn token_versions(c: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = c.prepare_cached("SELECT username, token_version FROM users")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Bump a user's token version: every access and refresh token issued before is revoked.
    pub fn bump_token_version(c: &Connection, username: &str, at: i64) -> Result<u64, StoreError> {
        atomic(c, |tx| {
            let n = tx.execute(
                "UPDATE users SET token_version = token_version + 1, updated_at = ?2 WHERE username = ?1",
                params![username, at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {username:?}")));
            }
            tx.execute(
                "UPDATE refresh_tokens SET revoked_at = ?2
             WHERE revoked_at IS NULL AND user_id = (SELECT id FROM users WHERE username = ?1)",
                params![username, at],
            )?;
            let v: i64 =
                tx.query_row("SELECT token_version FROM users WHERE username = ?1", [username], |r| {
                    r.get(0)
                })?;
            Ok(v as u64)
        })
    }

    /// Set a password and bump the token version (a new password ends old sessions).
    pub fn set_password(c: &Connection, username: &str, hash: &str, at: i64) -> Result<u64, StoreError> {
        atomic(c, |c| {
            let n = c.execute(
                "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE username = ?1",
                params![username, hash, at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {username:?}")));
            }
            bump_token_version(c, username, at)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn insert_refresh(
        c: &Connection,
        user_id: i64,
        token_hash: &[u8],
        family: &str,
        token_version: u64,
        room: &str,
        grants: &str,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<i64, StoreError> {
        c.execute(
            "INSERT INTO refresh_tokens(user_id, token_hash, family, token_version, room, grants, issued_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![user_id, token_hash, family, token_version as i64, room, grants, issued_at, expires_at],
        )?;
        Ok(c.last_insert_rowid())
    }

    pub fn find_refresh(c: &Connection, token_hash: &[u8]) -> Result<Option<RefreshRow>, StoreError> {
        Ok(c.query_row(
            "SELECT t.id, t.user_id, u.username, t.family, t.token_version, t.room, t.grants,
                    t.issued_at, t.expires_at, t.used_at, t.revoked_at
             FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?1",
            [token_hash],
            |r| {
                Ok(RefreshRow {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    username: r.get(2)?,
                    family: r.get(3)?,
                    token_version: r.get::<_, i64>(4)? as u64,
                    room: r.get(5)?,
                    grants: r.get(6)?,
                    issued_at: r.get(7)?,
                    expires_at: r.get(8)?,
                    used_at: r.get(9)?,
                    revoked_at: r.get(10)?,
                })
            },
        )
        .optional()?)
    }

    /// Mark a refresh token used, only if it still is unused (returns false when
    /// another request got there first: that is a reuse).
    pub fn mark_refresh_used(c: &Connection, id: i64, at: i64) -> Result<bool, StoreError> {
        Ok(c.execute(
            "UPDATE refresh_tokens SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
            params![id, at],
        )? == 1)
    }

    pub fn revoke_family(c: &Connection, family: &str, at: i64) -> Result<usize, StoreError> {
        Ok(c.execute(
            "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL",
            params![family, at],
        )?)
    }

    /// Forget refresh tokens that expired long ago.
    pub fn prune(c: &Connection, now: i64, retention_days: u32) -> Result<usize, StoreError> {
        let mut n = c.execute("DELETE FROM refresh_tokens WHERE expires_at < ?1", [now - 86_400])?;
        if retention_days > 0 {
            let cutoff = now - retention_days as i64 * 86_400;
            n += c.execute("DELETE FROM meetings WHERE ended_at IS NOT NULL AND ended_at < ?1", [cutoff])?;
            n += c.execute("DELETE FROM audit_log WHERE at < ?1", [cutoff])?;
        }
        Ok(n)
    }

    pub fn insert_recording(c: &Connection, room: &str, path: &str, at: i64) -> Result<i64, StoreError> {
        let meeting: Option<i64> = c
            .query_row(
                "SELECT m.id FROM meetings m JOIN rooms r ON r.id = m.room_id WHERE r.name = ?1 AND m.ended_at IS NULL",
                [room],
                |r| r.get(0),
            )
            .optional()?;
        c.execute(
            "INSERT INTO recordings(meeting_id, room, path, state, started_at) VALUES (?1, ?2, ?3, 'recording', ?4)",
            params![meeting, room, path, at],
        )?;
        Ok(c.last_insert_rowid())
    }

    pub fn list_recordings(c: &Connection, limit: u32) -> Result<Vec<RecordingRow>, StoreError> {
        let mut st = c.prepare_cached(
            "SELECT r.id, r.room, r.path, r.state, r.bytes, r.started_at, r.ended_at, (
                 -- the upload of the recording's files (migration 3, by file), summed up
                 SELECT CASE
                     WHEN COUNT(u.path) = 0 THEN NULL
                     WHEN SUM(u.state = 'failed') > 0 THEN 'failed'
                     WHEN SUM(u.state <> 'done') = 0 THEN 'done'
                     WHEN SUM(u.state <> 'pending') > 0 THEN 'uploading'
                     ELSE 'pending' END
                 FROM recording_files f JOIN uploads u ON u.path = f.path
                 WHERE f.recording_id = r.id)
             FROM recordings r
             ORDER BY r.started_at DESC, r.id DESC LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit], recording_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A `recordings` row selected as (id, room, path, state, bytes, started_at, ended_at, upload).
    fn recording_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordingRow> {
        Ok(RecordingRow {
            id: r.get(0)?,
            room: r.get(1)?,
            path: r.get(2)?,
            state: r.get(3)?,
            bytes: r.get(4)?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            upload: r.get(7)?,
        })
    }

    /// A recording's state and size when it ends (`finalized`, `recovered`, `failed`).
    pub fn end_recording(c: &Connection, id: i64, state: &str, bytes: i64, at: i64) -> Result<(), StoreError> {
        let n = c.execute(
            "UPDATE recordings SET state = ?2, bytes = ?3, ended_at = ?4 WHERE id = ?1",
            params![id, state, bytes, at],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("recording {id}")));
        }
        Ok(())
    }

    /// Recordings a crash left open (state `recording`), oldest first.
    pub fn open_recordings(c: &Connection) -> Result<Vec<RecordingRow>, StoreError> {
        let mut st = c.prepare_cached(
            "SELECT id, room, path, state, bytes, started_at, ended_at, NULL FROM recordings
             WHERE state = 'recording' ORDER BY id",
        )?;
        let rows = st
            .query_map([], recording_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn insert_recording_file(
        c: &Connection,
        recording_id: i64,
        track: &str,
        identity: &str,
        kind: &str,
        codec: &str,
        path: &str,
        at: i64,
    ) -> Result<i64, StoreError> {
        c.execute(
            "INSERT INTO recording_files(recording_id, track, identity, kind, codec, path, state, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'recording', ?7)",
            params![recording_id, track, identity, kind, codec, path, at],
        )?;
        Ok(c.last_insert_rowid())
    }

    /// A file's end: its state, size, duration and (for `failed`) why.
    pub fn end_recording_file(
        c: &Connection,
        id: i64,
        state: &str,
        bytes: i64,
        duration_ms: i64,
        error: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        let n = c.execute(
            "UPDATE recording_files SET state = ?2, bytes = ?3, duration_ms = ?4, error = ?5, ended_at = ?6
             WHERE id = ?1",
            params![id, state, bytes, duration_ms, error, at],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("recording file {id}")));
        }
        Ok(())
    }

    pub fn list_recording_files(c: &Connection, recording_id: i64) -> Result<Vec<RecordingFileRow>, StoreError> {
        let mut st = c.prepare_cached(
            "SELECT id, recording_id, track, identity, kind, codec, path, state, bytes, duration_ms, error,
                    started_at, ended_at
             FROM recording_files WHERE recording_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([recording_id], |r| {
                Ok(RecordingFileRow {
                    id: r.get(0)?,
                    recording_id: r.get(1)?,
                    track: r.get(2)?,
                    identity: r.get(3)?,
                    kind: r.get(4)?,
                    codec: r.get(5)?,
                    path: r.get(6)?,
                    state: r.get(7)?,
                    bytes: r.get(8)?,
                    duration_ms: r.get(9)?,
                    error: r.get(10)?,
                    started_at: r.get(11)?,
                    ended_at: r.get(12)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn get_setting(c: &Connection, key: &str) -> Result<Option<String>, StoreError> {
        Ok(c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    pub fn set_setting(c: &Connection, key: &str, value: &str, at: i64) -> Result<(), StoreError> {
        c.execute(
            "INSERT INTO settings(key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![key, value, at],
        )?;
        Ok(())
    }

    pub fn create_display(
        c: &Connection,
        room: &str,
        name: &str,
        secret_hash: &[u8],
        by: &str,
        at: i64,
    ) -> Result<DisplayRow, StoreError> {
        c.execute(
            "INSERT INTO displays(room, name, secret_hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![room, name, secret_hash, at, by],
        )?;
        let id = c.last_insert_rowid();
        Ok(DisplayRow {
            id,
            room: room.to_owned(),
            name: name.to_owned(),
            created_at: at,
            created_by: by.to_owned(),
            last_used_at: None,
            revoked_at: None,
        })
    }

    fn display_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DisplayRow> {
        Ok(DisplayRow {
            id: r.get(0)?,
            room: r.get(1)?,
            name: r.get(2)?,
            created_at: r.get(3)?,
            created_by: r.get(4)?,
            last_used_at: r.get(5)?,
            revoked_at: r.get(6)?,
        })
    }

    const DISPLAY_COLS: &str = "id, room, name, created_at, created_by, last_used_at, revoked_at";

    pub fn list_displays(c: &Connection) -> Result<Vec<DisplayRow>, StoreError> {
        let mut st = c.prepare_cached(&format!("SELECT {DISPLAY_COLS} FROM displays ORDER BY id"))?;
        let rows = st.query_map([], display_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The display with this secret hash, revoked or not.
    pub fn find_display(c: &Connection, secret_hash: &[u8]) -> Result<Option<DisplayRow>, StoreError> {
        let mut st =
            c.prepare_cached(&format!("SELECT {DISPLAY_COLS} FROM displays WHERE secret_hash = ?1"))?;
        Ok(st.query_row([secret_hash], display_row).optional()?)
    }

    pub fn touch_display(c: &Connection, id: i64, at: i64) -> Result<(), StoreError> {
        c.execute("UPDATE displays SET last_used_at = ?2 WHERE id = ?1", params![id, at])?;
        Ok(())
    }

    /// Revoke a display; returns its row (`NotFound` when there is none).
    pub fn revoke_display(c: &Connection, id: i64, at: i64) -> Result<DisplayRow, StoreError> {
        c.execute(
            "UPDATE displays SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![id, at],
        )?;
        let mut st = c.prepare_cached(&format!("SELECT {DISPLAY_COLS} FROM displays WHERE id = ?1"))?;
        st.query_row([id], display_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("display {id}")))
    }

    pub fn audit(
        c: &Connection,
        at: i64,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: Option<&str>,
        ip: Option<&str>,
    ) -> Result<i64, StoreError> {
        c.execute(
            "INSERT INTO audit_log(at, actor, action, target, detail, ip) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![at, actor, action, target, detail, ip],
        )?;
        Ok(c.last_insert_rowid())
    }

    pub fn list_audit(c: &Connection, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let mut st = c.prepare_cached(
            "SELECT id, at, actor, action, target, detail, ip FROM audit_log ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                    ip: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_tmp() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = open_connection(&dir.path().join("t.db"), &StoreOptions::default()).unwrap();
        (dir, c)
    }

    #[test]
    fn a_new_file_is_migrated_to_the_latest_schema_in_wal_mode() {
        let (_d, c) = open_tmp();
        let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = c.pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap();
        assert_eq!(fk, 1);
        let sync: i64 = c.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn a_store_whose_fleet_log_predates_migration_5_keeps_its_commands() {
        // Before migration 5 the fleet link created `fleet_commands` itself on a
        // version-4 store: migrating must keep that table and its rows.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let c = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
                c.execute_batch(sql).unwrap();
                c.pragma_update(None, "user_version", i as i64 + 1).unwrap();
            }
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS fleet_commands (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                 expires_at INTEGER NOT NULL, token_sha256 TEXT NOT NULL, result TEXT,
                 acked INTEGER NOT NULL DEFAULT 0);
                 INSERT INTO fleet_commands(id, name, expires_at, token_sha256) VALUES ('m-1', 'mute', 9, 'ab');",
            )
            .unwrap();
        }
        let c = open_connection(&path, &StoreOptions::default()).unwrap();
        let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let name: String =
            c.query_row("SELECT name FROM fleet_commands WHERE id = 'm-1'", [], |r| r.get(0)).unwrap();
        assert_eq!(name, "mute");
        // And a new store has the table from the migration alone.
        let (_d, fresh) = open_tmp();
        let n: i64 = fresh.query_row("SELECT COUNT(*) FROM fleet_commands", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn meetings_and_sessions_open_and_close() {
        let (_d, c) = open_tmp();
        q::session_start(&c, "demo", "alice", 1, false, 100).unwrap();
        q::session_start(&c, "demo", "bob", 2, false, 110).unwrap();
        assert!(q::session_end(&c, "demo", 1, 200, "left").unwrap().is_some());
        assert_eq!(q::session_end(&c, "demo", 1, 201, "left").unwrap(), None, "already closed");
        let m = q::meeting_end(&c, "demo", 300, "closed").unwrap().unwrap();
        let sessions = q::list_sessions(&c, m).unwrap();
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[0].left_at, Some(200));
        assert_eq!(sessions[1].left_at, Some(300), "closing the meeting closes open sessions");
        let meetings = q::list_meetings(&c, Some("demo"), 10).unwrap();
        assert_eq!((meetings[0].started_at, meetings[0].ended_at, meetings[0].sessions), (100, Some(300), 2));
    }

    #[test]
    fn one_open_meeting_per_room() {
        let (_d, c) = open_tmp();
        let a = q::meeting_start(&c, "demo", 1).unwrap();
        let b = q::meeting_start(&c, "demo", 2).unwrap();
        assert_eq!(a, b);
        let err =
            c.execute("INSERT INTO meetings(room_id, started_at) SELECT id, 3 FROM rooms", []).unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Conflict(_)));
    }

    #[test]
    fn foreign_keys_are_enforced() {
        let (_d, c) = open_tmp();
        let err = c.execute("INSERT INTO meetings(room_id, started_at) VALUES (999, 1)", []).unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Conflict(_)), "FK violation is refused");
    }

    #[test]
    fn bumping_the_token_version_revokes_refresh_tokens() {
        let (_d, c) = open_tmp();
        let u = q::create_user(&c, "admin", "h", Role::Admin, 1).unwrap();
        q::insert_refresh(&c, u.id, b"hash1", "fam", 1, "*", "{}", 1, 1000).unwrap();
        assert_eq!(q::bump_token_version(&c, "admin", 5).unwrap(), 2);
        let r = q::find_refresh(&c, b"hash1").unwrap().unwrap();
        assert_eq!(r.revoked_at, Some(5));
        assert!(matches!(q::bump_token_version(&c, "nobody", 5), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn a_refresh_token_can_be_marked_used_once() {
        let (_d, c) = open_tmp();
        let u = q::create_user(&c, "a", "h", Role::Member, 1).unwrap();
        let id = q::insert_refresh(&c, u.id, b"x", "f", 1, "demo", "{}", 1, 1000).unwrap();
        assert!(q::mark_refresh_used(&c, id, 2).unwrap());
        assert!(!q::mark_refresh_used(&c, id, 3).unwrap());
    }

    #[test]
    fn a_recordings_upload_state_sums_up_its_files_uploads() {
        let (_d, c) = open_tmp();
        let id = q::insert_recording(&c, "demo", "/data/rec/1", 10).unwrap();
        let upload = |c: &Connection| q::list_recordings(c, 10).unwrap()[0].upload.clone();
        assert_eq!(upload(&c), None, "nothing queued yet");
        for f in ["a", "b"] {
            let path = format!("/data/rec/1/{f}.mp4");
            q::insert_recording_file(&c, id, f, "alice", "video", "VP8", &path, 11).unwrap();
            crate::upload::queue::enqueue(&c, &path, &format!("demo/1/{f}.mp4"), 12).unwrap();
        }
        assert_eq!(upload(&c).as_deref(), Some("pending"));
        let set = |state: &str, f: &str| {
            c.execute("UPDATE uploads SET state = ?1 WHERE path = ?2", params![state, format!("/data/rec/1/{f}.mp4")])
                .unwrap()
        };
        set("uploading", "a");
        assert_eq!(upload(&c).as_deref(), Some("uploading"));
        set("done", "a");
        assert_eq!(upload(&c).as_deref(), Some("uploading"), "one file still waits");
        set("done", "b");
        assert_eq!(upload(&c).as_deref(), Some("done"));
        set("failed", "b");
        assert_eq!(upload(&c).as_deref(), Some("failed"));
    }

    #[test]
    fn atomic_writes_all_or_nothing_and_nests() {
        let (_d, c) = open_tmp();
        let r: Result<(), StoreError> = atomic(&c, |c| {
            q::create_room(c, "a", None, 1)?;
            q::session_start(c, "a", "x", 1, false, 1)?; // nested atomic inside
            Err(StoreError::NotFound("forced".into()))
        });
        assert!(r.is_err());
        assert!(q::list_rooms(&c).unwrap().is_empty(), "rolled back, nested part included");
        atomic(&c, |c| {
            q::create_room(c, "b", None, 1)?;
            q::session_start(c, "b", "x", 1, false, 1).map(|_| ())
        })
        .unwrap();
        assert_eq!(q::list_rooms(&c).unwrap().len(), 1);
        assert!(c.is_autocommit(), "no transaction left open");
    }

    #[test]
    fn settings_and_audit_round_trip() {
        let (_d, c) = open_tmp();
        q::set_setting(&c, "k", "v1", 1).unwrap();
        q::set_setting(&c, "k", "v2", 2).unwrap();
        assert_eq!(q::get_setting(&c, "k").unwrap().as_deref(), Some("v2"));
        q::audit(&c, 5, "admin", "login", None, None, Some("10.0.0.1")).unwrap();
        assert_eq!(q::list_audit(&c, 10).unwrap()[0].action, "login");
    }
}
