//! The bench never rots: a tiny load through every server this machine can
//! run, checking that packets flowed (never how fast).
//!
//! The floor always runs (on loopback). roombox runs when the `sfu` binary has
//! been built next to this test's binary; Janus when it is installed and this
//! process may make a network namespace (libnice gathers no loopback candidates).

use std::path::PathBuf;
use std::process::Command;

fn bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roombox-bench"))
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("roombox-bench-smoke-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_smoke(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run roombox-bench smoke");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "smoke failed:\n{text}");
    text
}

/// Packets/s column of the row for `server` in the printed table.
fn pps_of(table: &str, server: &str) -> f64 {
    let row = table.lines().find(|l| l.starts_with(&format!("| {server}"))).unwrap_or_else(|| panic!("no {server} row in:\n{table}"));
    row.split('|').nth(3).unwrap().trim().parse().unwrap()
}

#[test]
fn packets_flow_through_the_floor_relay() {
    let dir = out_dir("floor");
    let text = run_smoke(Command::new(bench()).args(["smoke", "--servers", "floor", "--window", "1", "--out"]).arg(&dir));
    // One publisher, two subscribers of its top layer: 2 × (120 video + 50 audio) packets/s.
    let pps = pps_of(&text, "floor");
    assert!(pps > 200.0, "floor forwarded only {pps} packets/s:\n{text}");
    assert!(text.contains("packets flowed through every server"));
}

#[test]
fn packets_flow_through_roombox_when_its_binary_is_built() {
    let sfu = bench().parent().unwrap().join("sfu");
    if !sfu.exists() {
        eprintln!("no sfu binary at {}; build it (cargo build -p sfu-core --bin sfu) to smoke-test roombox", sfu.display());
        return;
    }
    let dir = out_dir("roombox");
    let text = run_smoke(Command::new(bench()).args(["smoke", "--servers", "roombox", "--window", "1", "--out"]).arg(&dir).arg("--sfu-bin").arg(&sfu));
    assert!(pps_of(&text, "roombox") > 200.0, "{text}");
}

#[test]
fn packets_flow_through_janus_when_it_is_installed() {
    if !std::path::Path::new("/usr/bin/janus").exists() {
        eprintln!("janus is not installed (apt-get install -y janus); skipping its smoke run");
        return;
    }
    let can_unshare = Command::new("unshare").args(["-n", "true"]).status().is_ok_and(|s| s.success());
    if !can_unshare {
        eprintln!("cannot make a network namespace here; skipping the janus smoke run");
        return;
    }
    let dir = out_dir("janus");
    let script = "ip link set lo up; ip link add bench0 type veth peer name bench1; \
                  ip addr add 10.254.0.1/24 dev bench0; ip link set bench0 up; ip link set bench1 up; exec \"$@\"";
    let text = run_smoke(
        Command::new("unshare")
            .args(["-n", "bash", "-c", script, "bash"])
            .arg(bench())
            .args(["smoke", "--servers", "janus", "--ip", "10.254.0.1", "--window", "1", "--out"])
            .arg(&dir),
    );
    assert!(pps_of(&text, "janus") > 200.0, "{text}");
}
