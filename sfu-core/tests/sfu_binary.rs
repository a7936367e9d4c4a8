//! The `sfu` binary: config errors are clear, a good config checks out, and
//! it serves WHIP and stops on SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn config_errors_name_the_key_and_a_good_config_runs_until_sigterm() {
    let dir = std::env::temp_dir().join(format!("sfu-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "secret", "0123456789abcdef0123456789abcdef\n");
    let bin = env!("CARGO_BIN_EXE_sfu");

    let bad = write(
        &dir,
        "bad.toml",
        "[http]\nlisten = \"127.0.0.1:0\"\n[auth]\nhs256_secret_file = \"secret\"\n[sfu]\nudp_bnd = \"0.0.0.0:1\"\n",
    );
    let out = Command::new(bin).args(["--check", "--config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("udp_bnd"), "{err}");

    let invalid = write(
        &dir,
        "invalid.toml",
        "[http]\nlisten = \"127.0.0.1:0\"\n[auth]\nhs256_secret_file = \"secret\"\n[sfu.limits]\nmax_rooms = 0\n",
    );
    let out = Command::new(bin).args(["--check", "--config"]).arg(&invalid).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_rooms"));

    let secret = dir.join("secret");
    let good = write(
        &dir,
        "good.toml",
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[auth]\nhs256_secret_file = {:?}\n[sfu]\nudp_bind = \"127.0.0.1:0\"\ninclude_loopback = true\n",
            secret.display().to_string()
        ),
    );
    let out = Command::new(bin).args(["--check", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&good)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(child.try_wait().unwrap().is_none(), "it runs");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "SIGTERM stops it");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "graceful exit: {status:?}");
}

/// The `sfu` binary on a free port with `extra` lines under `[http]`; killed on drop.
struct Running {
    child: std::process::Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(tag: &str, extra_http: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("sfu-bin-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = write(&dir, "secret", "0123456789abcdef0123456789abcdef\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = write(
        &dir,
        "sfu.toml",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n{extra_http}\n[auth]\nhs256_secret_file = {:?}\n[sfu]\nudp_bind = \"127.0.0.1:0\"\ntcp_bind = \"127.0.0.1:0\"\ninclude_loopback = true\n",
            secret.display().to_string()
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "the sfu listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running { child, port }
}

/// `curl`'s status line for a POST of `body` to `url` with extra curl arguments.
fn curl_status(url: &str, body: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "-X", "POST"])
        .args(["-H", "Content-Type: application/sdp", "-H", "Expect:"])
        .args(extra)
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(url)
        .output()
        .expect("curl runs");
    format!("{} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr).trim())
}

/// issue 14: a 10 MB body POSTed to /whip/{room} over plain HTTP gets a clean
/// 413 (curl reads the status), with a Content-Length and chunked alike.
#[test]
fn a_10_mb_whip_body_gets_a_clean_413_over_http() {
    let s = start("413", "");
    let body = std::env::temp_dir().join(format!("sfu-bin-10mb-{}", std::process::id()));
    std::fs::write(&body, vec![b'v'; 10 * 1024 * 1024]).unwrap();
    let url = format!("http://127.0.0.1:{}/whip/demo", s.port);
    assert_eq!(curl_status(&url, &body, &[]).trim(), "413", "with a Content-Length");
    assert_eq!(
        curl_status(&url, &body, &["-H", "Transfer-Encoding: chunked"]).trim(),
        "413",
        "chunked, no Content-Length"
    );
    let _ = std::fs::remove_file(&body);
}

/// A client that never finishes its request headers is cut off after
/// `header_read_timeout_secs`, and connections past `max_connections` are
/// closed at once; when the idle ones go, the server answers again.
#[test]
fn slow_headers_time_out_and_connections_past_the_limit_are_closed() {
    use std::io::{Read, Write};
    let s = start("limits", "max_connections = 4\nheader_read_timeout_secs = 1\n");
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    };
    let get_metrics = || {
        let mut c = connect();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        text
    };
    assert!(get_metrics().starts_with("HTTP/1.1 200"), "it serves");

    // slowloris: half a request line, then nothing
    let mut slow = connect();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(6),
        "cut off after the header timeout, not {waited:?}"
    );
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "closed (or a 408), got {head:?}");

    // four idle connections take every slot; a fifth is closed at once
    let idle: Vec<_> = (0..4).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = connect();
    let t0 = Instant::now();
    let _ = fifth.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let n = fifth.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "refused, not served: {:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(t0.elapsed() < Duration::from_millis(900), "closed at once, before the header timeout");
    drop(idle);
    // the idle ones leave (or time out); the server answers again and counted the refusal
    let end = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let m = get_metrics();
        if m.starts_with("HTTP/1.1 200") {
            break m;
        }
        assert!(Instant::now() < end, "serves again once the idle connections are gone");
        std::thread::sleep(Duration::from_millis(100));
    };
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sfu_http_connections_refused_total "))
        .expect("the refusal counter is exported");
    assert!(refused.trim().parse::<u64>().unwrap() >= 1, "counted: {refused}");
}
