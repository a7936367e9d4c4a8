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
