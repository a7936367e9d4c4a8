//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): datagrams to `$NOTIFY_SOCKET`.
//!
//! `READY=1` once the daemon serves, `WATCHDOG=1` while it is healthy (every half of
//! `$WATCHDOG_USEC`), `STOPPING=1` at shutdown. Without `$NOTIFY_SOCKET` (not under systemd)
//! every call does nothing. Abstract sockets (`@name`) and paths both work. No crate needed: a
//! Unix datagram socket is in std.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Send one notify message (`READY=1`, `WATCHDOG=1`, `STATUS=...`). `Ok(false)` when not under
/// systemd.
pub fn notify(msg: &str) -> std::io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send_to(&path, msg).map(|()| true),
        None => Ok(false),
    }
}

/// Send `msg` to the notify socket `path` (a file path, or `@name` for an abstract socket).
pub fn send_to(path: &std::ffi::OsStr, msg: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.as_encoded_bytes().strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(msg.as_bytes(), &addr)?;
    } else {
        sock.send_to(msg.as_bytes(), path)?;
    }
    Ok(())
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process when
/// `$WATCHDOG_PID` says so), halved as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from the variables' values.
pub fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if pid.is_some_and(|p| p.parse::<u32>().ok() != Some(my_pid)) {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn messages_arrive_on_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("roombox-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let err = send_to(std::ffi::OsStr::new("/nonexistent/notify.sock"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn the_watchdog_interval_is_half_of_what_systemd_asks_for_this_process() {
        assert_eq!(watchdog_interval_from(Some("20000000"), Some("42"), 42), Some(Duration::from_secs(10)));
        assert_eq!(watchdog_interval_from(Some("20000000"), None, 42), Some(Duration::from_secs(10)));
        assert_eq!(watchdog_interval_from(Some("20000000"), Some("1"), 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval_from(None, None, 42), None);
    }
}
