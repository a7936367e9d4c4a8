//! `roombox::update` against real RAUC (Debian `rauc` + `rauc-service`): a private system bus,
//! a RAUC service whose two rootfs slots are image files and whose bootloader is RAUC's `custom`
//! backend over a key=value file (what U-Boot's environment is on a board), bundles signed with
//! keys made here by openssl and served over HTTP on loopback.
//!
//! It shows: a bundle signed by another key and a tampered bundle are refused (slot B untouched,
//! nothing recorded); a good bundle lands byte for byte in slot B, which becomes the primary
//! slot; a restart in the same boot is not a rollback; a boot into B is the update, and the
//! health gate marks it good when /readyz answers; a boot into A after the update is reported
//! as a rollback; the health gate on a new slot whose /readyz fails marks it bad and reboots;
//! `rauc` missing is `NoUpdater`.
//!
//! Host bundles are RAUC's `plain` format: `verity` needs device-mapper, which this machine's
//! kernel lacks (the image's system.conf accepts verity only; scripts/image-vm runs verity in
//! the arm64 VM). Needs root (RAUC loop-mounts the bundle).
//!
//! One test function: the RAUC client finds the private bus through the process environment.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use roombox::update::{self, BootVerdict, UpdateError};

fn sh(cmd: &str, dir: &Path) {
    let out = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Kills what it holds when the test ends, whatever happens.
struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tiny HTTP/1.0 server: `/files/NAME` from `dir`, `/readyz` with the status in `ready`.
fn serve(dir: PathBuf, ready: Arc<AtomicU16>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (code, body) = if path == "/readyz" {
                (ready.load(Ordering::SeqCst), b"{}".to_vec())
            } else if let Some(name) = path.strip_prefix("/files/") {
                match std::fs::read(dir.join(name)) {
                    Ok(b) => (200, b),
                    Err(_) => (404, b"not found".to_vec()),
                }
            } else {
                (404, b"not found".to_vec())
            };
            let _ =
                write!(s, "HTTP/1.0 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    port
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bootenv(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("bootenv")).unwrap()
}

fn start_service(dir: &Path, booted: &str) -> Child {
    let child = Command::new("rauc")
        .args(["service", "--conf=system.conf", "--mount=mnt", &format!("--override-boot-slot={booted}")])
        .env("ROOMBOX_BOOTENV", dir.join("bootenv"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("service-{booted}.log"))).unwrap())
        .spawn()
        .unwrap();
    wait_for("the RAUC service", Duration::from_secs(20), || {
        update::status().is_ok_and(|s| s.booted == booted)
    });
    child
}

fn rewrite_boot_id(pending: &Path, boot_id: &str) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pending).unwrap()).unwrap();
    v["boot_id"] = boot_id.into();
    std::fs::write(pending, v.to_string()).unwrap();
}

#[test]
fn rauc_installs_signed_bundles_into_the_other_slot_and_rollbacks_are_reported() {
    for tool in ["rauc", "dbus-daemon", "mksquashfs", "openssl", "mkfs.ext4", "curl"] {
        assert!(
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap().status.success(),
            "{tool} is missing: apt-get install rauc rauc-service dbus squashfs-tools openssl e2fsprogs curl"
        );
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "RAUC loop-mounts bundles: run as root");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("root/etc")).unwrap();
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let data_dir = dir.join("roombox");

    // Keys: a release CA the box trusts, a signing key it certified, and a rogue key.
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -subj /CN=roombox-test-ca -days 2 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -keyout rel.key -out rel.csr -subj /CN=roombox-release 2>/dev/null
         printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\n' > ext.cnf
         openssl x509 -req -in rel.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out rel.pem -days 2 -extfile ext.cnf 2>/dev/null
         openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.pem -subj /CN=rogue -days 2 2>/dev/null",
        &dir,
    );
    // Slots (image files) and the rootfs a bundle carries (random bytes so it is not all zeros).
    sh(
        "truncate -s 32M slotA.img slotB.img && mkfs.ext4 -q slotA.img && mkfs.ext4 -q slotB.img
         echo 'roombox v2' > www/root/etc/roombox-version && head -c 300000 /dev/urandom > www/root/etc/noise
         truncate -s 8M rootfs.ext4 && mkfs.ext4 -q -d www/root rootfs.ext4
         mkdir -p b && cp rootfs.ext4 b/ && printf '[update]\\ncompatible=roombox-test\\nversion=2\\n[bundle]\\nformat=plain\\n[image.rootfs]\\nfilename=rootfs.ext4\\n' > b/manifest.raucm
         rauc bundle --cert=rel.pem --key=rel.key b www/good.raucb >/dev/null 2>&1
         rauc bundle --cert=rogue.pem --key=rogue.key b www/rogue.raucb >/dev/null 2>&1
         cp www/good.raucb www/tampered.raucb",
        &dir,
    );
    // Flip one byte inside the tampered copy's payload.
    let mut t = std::fs::read(www.join("tampered.raucb")).unwrap();
    t[150_000] ^= 0xff;
    std::fs::write(www.join("tampered.raucb"), t).unwrap();

    // The bootloader: RAUC's custom backend over a key=value file.
    std::fs::write(
        dir.join("bootloader.sh"),
        r#"#!/bin/sh
ENV=${ROOMBOX_BOOTENV:?}
get() { sed -n "s/^$1=//p" "$ENV"; }
put() { grep -v "^$1=" "$ENV" > "$ENV.tmp"; echo "$1=$2" >> "$ENV.tmp"; mv "$ENV.tmp" "$ENV"; }
case "$1" in
  get-primary) set -- $(get BOOT_ORDER); echo "$1" ;;
  set-primary) o=A; [ "$2" = A ] && o=B; put BOOT_ORDER "$2 $o"; put "BOOT_$2_LEFT" 3 ;;
  get-state) [ "$(get "BOOT_$2_STATE")" = bad ] && echo bad || echo good ;;
  set-state) put "BOOT_$2_STATE" "$3" ;;
  *) exit 1 ;;
esac
"#,
    )
    .unwrap();
    sh("chmod +x bootloader.sh && printf 'BOOT_ORDER=A B\\n' > bootenv", &dir);
    let d = dir.display();
    std::fs::write(
        dir.join("system.conf"),
        format!(
            "[system]\ncompatible=roombox-test\nbootloader=custom\ndata-directory={d}/data\n\n\
             [handlers]\nbootloader-custom-backend={d}/bootloader.sh\n\n[keyring]\npath={d}/ca.pem\n\n\
             [slot.rootfs.0]\ndevice={d}/slotA.img\ntype=ext4\nbootname=A\n\n\
             [slot.rootfs.1]\ndevice={d}/slotB.img\ntype=ext4\nbootname=B\n"
        ),
    )
    .unwrap();
    // A system bus of our own: nothing of the host's D-Bus or RAUC is touched.
    std::fs::write(
        dir.join("bus.conf"),
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={d}/bus.sock</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy></busconfig>"#
        ),
    )
    .unwrap();
    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new("dbus-daemon")
            .args(["--nofork", "--config-file=bus.conf"])
            .current_dir(&dir)
            .spawn()
            .unwrap(),
    );
    wait_for("the bus socket", Duration::from_secs(10), || dir.join("bus.sock").exists());
    // SAFETY: the only test in this binary; set before any thread of ours reads the environment.
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={d}/bus.sock")) };
    procs.0.push(start_service(&dir, "A"));

    let ready = Arc::new(AtomicU16::new(503));
    let port = serve(www.clone(), ready.clone());
    let url = |name: &str| format!("http://127.0.0.1:{port}/files/{name}");
    let slot_b_before = std::fs::read(dir.join("slotB.img")).unwrap();
    let pending = data_dir.join("update/pending.json");

    // Refused: signed by a key the box does not trust; tampered after signing; not there.
    for (name, why) in
        [("rogue.raucb", "signature"), ("tampered.raucb", "signature"), ("missing.raucb", "HTTP 404")]
    {
        match update::install(&url(name), &data_dir) {
            Err(UpdateError::Failed(m)) => assert!(m.contains(why), "{name}: {m}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        assert!(!pending.exists(), "{name}: a refused bundle must not be recorded");
        assert!(!data_dir.join("update/bundle.raucb").exists(), "{name}: the download is deleted");
    }
    assert!(std::fs::read(dir.join("slotB.img")).unwrap() == slot_b_before, "a refused bundle wrote slot B");
    assert!(bootenv(&dir).starts_with("BOOT_ORDER=A B"), "{}", bootenv(&dir));

    // Installed: slot B holds the bundle's image byte for byte and is the primary slot now.
    let out = update::install(&url("good.raucb"), &data_dir).expect("the signed bundle installs");
    assert_eq!(out.message, "bundle installed into slot B (running A); reboot to run it");
    let image = std::fs::read(dir.join("rootfs.ext4")).unwrap();
    let slot_b = std::fs::read(dir.join("slotB.img")).unwrap();
    assert!(slot_b[..image.len()] == image[..], "slot B does not hold the bundle's image");
    assert!(bootenv(&dir).contains("BOOT_ORDER=B A"), "{}", bootenv(&dir));
    assert!(!data_dir.join("update/bundle.raucb").exists(), "the download is deleted after the install");
    let rec: update::InstallRecord =
        serde_json::from_str(&std::fs::read_to_string(&pending).unwrap()).unwrap();
    assert_eq!((rec.from.as_str(), rec.to.as_str()), ("A", "B"));

    // The daemon restarts in the same boot: not a rollback.
    assert_eq!(update::check_boot(&data_dir), BootVerdict::AwaitingReboot { to: "B".into() });

    // "Reboot" into B (the record is from an earlier boot now); the health gate sees /readyz.
    rewrite_boot_id(&pending, "an-earlier-boot");
    let mut svc = procs.0.pop().unwrap();
    let _ = svc.kill();
    let _ = svc.wait();
    procs.0.push(start_service(&dir, "B"));
    assert_eq!(update::check_boot(&data_dir), BootVerdict::UpdateBooted { to: "B".into() });
    let gate = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../yocto/meta-roombox/recipes-roombox/roomboxd/files/roombox-health-gate");
    let run_gate = |deadline: &str| {
        Command::new("sh")
            .arg(&gate)
            .env("ROOMBOX_READYZ_URL", format!("http://127.0.0.1:{port}/readyz"))
            .env("ROOMBOX_GATE_DEADLINE", deadline)
            .env("ROOMBOX_PENDING", &pending)
            .env("ROOMBOX_REBOOT_CMD", format!("touch {d}/rebooted"))
            .output()
            .unwrap()
    };
    ready.store(200, Ordering::SeqCst);
    let g = run_gate("10");
    assert!(g.status.success(), "gate: {}", String::from_utf8_lossy(&g.stdout));
    assert!(String::from_utf8_lossy(&g.stdout).contains("marking it good"));
    assert!(bootenv(&dir).contains("BOOT_B_STATE=good"), "{}", bootenv(&dir));
    assert!(!dir.join("rebooted").exists());

    // The same new slot with a daemon that never gets ready: marked bad, and the box reboots.
    ready.store(503, Ordering::SeqCst);
    let g = run_gate("2");
    assert!(!g.status.success());
    assert!(
        String::from_utf8_lossy(&g.stdout).contains("marking it bad and rebooting"),
        "{}",
        String::from_utf8_lossy(&g.stdout)
    );
    assert!(bootenv(&dir).contains("BOOT_B_STATE=bad"), "{}", bootenv(&dir));
    assert!(dir.join("rebooted").exists(), "the gate did not reboot");

    // The bootloader fell back: the box runs A again, and the daemon reports the rollback.
    let mut svc = procs.0.pop().unwrap();
    let _ = svc.kill();
    let _ = svc.wait();
    procs.0.push(start_service(&dir, "A"));
    let v = update::check_boot(&data_dir);
    assert_eq!(
        v,
        BootVerdict::RolledBack { expected: "B".into(), booted: "A".into(), bundle_url: url("good.raucb") }
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("update/last-rollback.json")).unwrap())
            .unwrap();
    assert_eq!(report["verdict"], "rolled_back");
    assert!(!pending.exists(), "the rollback clears the install record");
    assert_eq!(update::check_boot(&data_dir), BootVerdict::NoUpdate);
    // On a slot that was already good, a failing /readyz does not reboot the box.
    std::fs::remove_file(dir.join("rebooted")).unwrap();
    let g = run_gate("1");
    assert!(String::from_utf8_lossy(&g.stdout).contains("no fallback"));
    assert!(!dir.join("rebooted").exists());

    // No RAUC on the system.
    unsafe { std::env::set_var(update::RAUC_ENV, "/nonexistent/rauc") };
    assert!(matches!(update::install(&url("good.raucb"), &data_dir), Err(UpdateError::NoUpdater)));
    assert_eq!(UpdateError::NoUpdater.to_string(), "no updater on this system");
}
