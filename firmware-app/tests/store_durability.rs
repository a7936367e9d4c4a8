//! The store with real SQLite files: kill -9 during writes, corrupt and newer
//! files refused and left untouched, a full database, online backup.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roombox::store::{SCHEMA_VERSION, Store, StoreError, StoreOptions, backup, open_connection, q};

const CHILD_ENV: &str = "ROOMBOX_STORE_CRASH_CHILD";

/// Not a test on its own: the writer process the crash test starts and kills.
/// It writes audit rows (one transaction each) and meetings/sessions, printing
/// `ack N` only after each commit returned.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let store = Store::open(Path::new(&path), StoreOptions::default()).unwrap();
    let stdout = std::io::stdout();
    for i in 0u64.. {
        let id = store
            .call_blocking(move |c| {
                let tx = c.transaction()?;
                let id = q::audit(
                    &tx,
                    i as i64,
                    "child",
                    "write",
                    Some(&format!("row-{i}")),
                    Some(&"x".repeat(200)),
                    None,
                )?;
                q::set_setting(&tx, "last", &i.to_string(), i as i64)?;
                tx.commit()?;
                Ok(id)
            })
            .unwrap();
        if i % 7 == 0 {
            store
                .call_blocking(move |c| {
                    q::session_start(c, "crash", &format!("p{i}"), i, false, i as i64).map(|_| ())
                })
                .unwrap();
        }
        let mut out = stdout.lock();
        writeln!(out, "ack {i} {id}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut total_acked = 0;
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked: Vec<(u64, i64)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Kill at a different point each round, while it is writing.
        let kill_after = 150 + round * 97;
        while acked.len() < kill_after && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            let mut it = line.split_whitespace();
            if it.next() == Some("ack") {
                let i: u64 = it.next().unwrap().parse().unwrap();
                let id: i64 = it.next().unwrap().parse().unwrap();
                acked.push((i, id));
            }
        }
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        // Acks already in the pipe were acknowledged before the kill: count them too.
        for line in lines.map_while(Result::ok) {
            let mut it = line.split_whitespace();
            if it.next() == Some("ack") {
                acked.push((it.next().unwrap().parse().unwrap(), it.next().unwrap().parse().unwrap()));
            }
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "the writer was killed");
        assert!(acked.len() >= kill_after, "round {round}: only {} acks", acked.len());
        total_acked += acked.len();

        // Reopen as the daemon would: every acknowledged row is there.
        let c = open_connection(&db, &StoreOptions::default()).expect("reopens after kill -9");
        let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        for (i, id) in &acked {
            let target: String = c
                .query_row("SELECT target FROM audit_log WHERE id = ?1", [id], |r| r.get(0))
                .unwrap_or_else(|e| panic!("round {round}: acknowledged row {i} (id {id}) lost: {e}"));
            assert_eq!(target, format!("row-{i}"));
        }
        let last: i64 = q::get_setting(&c, "last").unwrap().unwrap().parse().unwrap();
        assert!(last >= acked.last().unwrap().0 as i64, "settings row at least as new as the last ack");
        drop(c);
    }
    assert!(total_acked >= 150 + 247 + 344);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roombox.db");
    let junk = b"this is not a database, it is the owner's precious file\n".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
    assert!(!dir.path().join("roombox.db-wal").exists());
}

#[test]
fn a_damaged_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roombox.db");
    {
        let c = open_connection(&path, &StoreOptions::default()).unwrap();
        for i in 0..500 {
            q::session_start(&c, "r", &format!("p{i}"), i, false, i as i64).unwrap();
        }
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    // Overwrite the middle of the file (b-tree pages) with garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 16 * 4096, "{}", bytes.len());
    for b in &mut bytes[8192..8192 + 3 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "never overwritten");
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roombox.db");
    {
        let c = open_connection(&path, &StoreOptions::default()).unwrap();
        q::set_setting(&c, "k", "v", 1).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    match &err {
        StoreError::NewerSchema { found, supported, .. } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("newer than this roomboxd supports"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn a_full_database_is_a_clear_error_and_loses_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roombox.db");
    let store = Store::open(&path, StoreOptions { max_size_mib: 1, ..StoreOptions::default() }).unwrap();
    let mut written = Vec::new();
    let mut full = None;
    for i in 0..10_000 {
        let r = store
            .call(move |c| {
                q::audit(c, i, "test", "fill", Some(&format!("row-{i}")), Some(&"y".repeat(1000)), None)
            })
            .await;
        match r {
            Ok(id) => written.push((i, id)),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("1 MiB fills up");
    assert!(matches!(err, StoreError::Full), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(written.len() > 100, "{}", written.len());
    // The store still answers, reads work, every row written before is there.
    let rows = store.call(|c| q::list_audit(c, 100_000)).await.unwrap();
    assert_eq!(rows.len(), written.len());
    // A small write that fits after deleting succeeds: the store is not wedged.
    store.call(|c| Ok(c.execute("DELETE FROM audit_log WHERE id % 2 = 0", [])?)).await.unwrap();
    store.call(|c| q::set_setting(c, "after", "full", 1)).await.unwrap();
    store.close().await.unwrap();
}

#[test]
fn a_full_disk_through_rlimit_fsize_is_a_clear_error() {
    // RLIMIT_FSIZE applies to the whole process; run the writer in a child.
    if let Some(path) = std::env::var_os("ROOMBOX_FSIZE_CHILD") {
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 256 * 1024, rlim_max: 256 * 1024 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
        }
        let store = Store::open(Path::new(&path), StoreOptions::default()).unwrap();
        let mut n = 0;
        loop {
            match store
                .call_blocking(move |c| q::audit(c, n, "t", "fill", None, Some(&"z".repeat(2000)), None))
            {
                Ok(_) => n += 1,
                Err(e) => {
                    println!("WROTE={n}; error: {e}");
                    // Still alive: a read works after the failed write.
                    let rows = store.call_blocking(|c| q::list_audit(c, 1_000_000)).unwrap();
                    println!("ROWS={}", rows.len());
                    return;
                }
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fsize.db");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_full_disk_through_rlimit_fsize_is_a_clear_error",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ROOMBOX_FSIZE_CHILD", &db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let wrote: usize = text.split("WROTE=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    let rows: usize = text.split("ROWS=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(text.contains("could not be written (disk full"), "a clear error: {text}");
    assert_eq!(wrote, rows, "every acknowledged row is readable after the failure: {text}");
    // And from a fresh process without the limit, the file opens and holds them.
    let c = open_connection(&db, &StoreOptions::default()).unwrap();
    let n: usize =
        c.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get::<_, i64>(0)).unwrap() as usize;
    assert_eq!(n, wrote);
}

#[tokio::test]
async fn an_online_backup_is_complete_while_the_store_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roombox.db");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    for i in 0..300 {
        store
            .call(move |c| q::session_start(c, "r", &format!("p{i}"), i, false, i as i64).map(|_| ()))
            .await
            .unwrap();
    }
    let dest = dir.path().join("backup.db");
    let p = path.clone();
    let d2 = dest.clone();
    let size = tokio::task::spawn_blocking(move || backup(&p, &d2)).await.unwrap().unwrap();
    assert!(size > 0);
    // Writes go on; the backup is a consistent snapshot.
    store.call(|c| q::session_start(c, "r", "late", 999, false, 999).map(|_| ())).await.unwrap();
    let b = open_connection(&dest, &StoreOptions::default()).unwrap();
    let n: i64 = b.query_row("SELECT COUNT(*) FROM participant_sessions", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 300);
    // Backing up onto an existing file replaces it whole.
    std::fs::write(&dest, b"old").unwrap();
    backup(&path, &dest).unwrap();
    let b = open_connection(&dest, &StoreOptions::default()).unwrap();
    let n: i64 = b.query_row("SELECT COUNT(*) FROM participant_sessions", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 301);
    store.close().await.unwrap();
}
