//! roomboxd under systemd's notify protocol, as `Type=notify` + `WatchdogSec=` run it: the real
//! binary with `NOTIFY_SOCKET` pointing at a datagram socket of the test, which reads what a
//! service manager would: `READY=1` once it serves, `WATCHDOG=1` at half the asked interval,
//! `STOPPING=1` on SIGTERM, then a clean exit.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_roomboxd");

fn next(sock: &UnixDatagram, until: Instant) -> Option<String> {
    let mut buf = [0u8; 256];
    let left = until.checked_duration_since(Instant::now())?;
    sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn roomboxd_tells_systemd_it_is_ready_pings_the_watchdog_and_says_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while !got.iter().any(|m: &String| m == "READY=1") {
        match next(&sock, deadline) {
            Some(m) => got.push(m),
            None => panic!("no READY=1 within 60 s; got {got:?}"),
        }
    }
    // Watchdog every 0.5 s (half of WATCHDOG_USEC): two pings within 3 s.
    let until = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    while pings < 2 {
        match next(&sock, until) {
            Some(m) if m == "WATCHDOG=1" => pings += 1,
            Some(_) => {}
            None => panic!("{pings} watchdog pings within 3 s"),
        }
    }

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match next(&sock, until) {
            Some(m) if m == "STOPPING=1" => break,
            Some(_) => {}
            None => panic!("no STOPPING=1 after SIGTERM"),
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "roomboxd exited with {status}");
}
