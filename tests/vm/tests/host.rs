//! The probe on this host, which has neither the `vivid` camera nor the `snd-aloop` card: it must
//! fail with a report that names each missing device, and refuse bad arguments with its usage.
//! (Its real run is inside the VM: `scripts/vm-test run`.) Being an integration test also makes
//! `cargo test --workspace` build `vm-probe` with the workspace's features, so the VM step of
//! `scripts/test` boots that binary instead of building the dependency tree a second time.

use std::process::Command;

fn probe(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-probe")).args(args).output().expect("vm-probe runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn lines<'a>(stdout: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("ROOMBOX-VM {key}=");
    stdout.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).collect()
}

#[test]
fn without_the_vm_devices_each_missing_device_is_named_and_the_result_is_fail() {
    if std::path::Path::new("/dev/video0").exists() {
        eprintln!("skipped: this machine has /dev/video0; the probe would use it");
        return;
    }
    let (ok, out) = probe(&["--gpio", "none", "--frames", "2", "--audio-ms", "100"]);
    assert!(!ok, "{out}");
    assert_eq!(lines(&out, "board"), ["qemu-arm64"], "{out}");
    assert_eq!(lines(&out, "video.device"), ["/dev/video0"], "{out}");
    let failures = lines(&out, "failure");
    assert_eq!(failures.len(), 2, "{out}");
    assert!(failures[0].starts_with("video: video device /dev/video0: "), "{out}");
    assert_eq!(failures[0].matches("os error").count(), 1, "the OS error once: {out}");
    assert!(failures[1].starts_with("audio: audio device hw:CARD=Loopback,DEV=1"), "{out}");
    assert_eq!(lines(&out, "result"), ["FAIL"], "{out}");
}

#[test]
fn bad_arguments_are_refused_with_the_usage() {
    for args in [&["--frames", "many"][..], &["--bogus"], &["--board"], &["--board", "no-such-board"]] {
        let (ok, out) = probe(args);
        assert!(!ok, "{args:?}: {out}");
        let failures = lines(&out, "failure");
        assert_eq!(failures.len(), 1, "{args:?}: {out}");
        assert_eq!(lines(&out, "result"), ["FAIL"], "{out}");
        assert!(lines(&out, "video.device").is_empty(), "no capture after bad arguments: {out}");
    }
    let (_, out) = probe(&["--bogus"]);
    assert!(out.contains("unknown argument --bogus (--board NAME"), "{out}");
    let (_, out) = probe(&["--board", "no-such-board"]);
    assert!(out.contains("no-such-board"), "{out}");
}
