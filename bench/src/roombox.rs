//! roombox under test: `roombox-bench sfu --config FILE` — sfu-core's own
//! server code (`sfu_core::standalone::run_from_config`, what the `sfu` binary
//! runs), linked into this binary so the bench always measures the sfu-core it
//! was built with — started as its own process from a TOML config and reached
//! over WHIP/WHEP with HS256 tokens the bench signs itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use sfu_core::auth::{Claims, Grants, sign_hs256};

/// The shared secret the bench configures the SFU with (benchmarks only).
pub const SECRET: &[u8] = b"roombox-bench-secret-not-for-production";

/// Sign a token for `identity` in `room` that may publish and subscribe.
pub fn token(room: &str, identity: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let grants = Grants { publish: true, subscribe: true, ..Default::default() };
    Ok(sign_hs256(&Claims::new(identity, room, grants, now, 3600), SECRET)?)
}

/// A running roombox (`roombox-bench sfu`) process.
pub struct Roombox {
    pub child: Child,
    pub http: SocketAddr,
    pub udp: SocketAddr,
    pub dir: PathBuf,
}

impl Roombox {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Start `bench` (this binary) as `bench sfu --config …` with a config
    /// written into `dir`. Waits until its HTTP port answers.
    pub fn start(
        bench: &Path,
        dir: &Path,
        http: SocketAddr,
        udp: SocketAddr,
        callgrind: bool,
        pin_layer: Option<usize>,
    ) -> anyhow::Result<Roombox> {
        std::fs::create_dir_all(dir)?;
        let secret = dir.join("jwt.secret");
        std::fs::write(&secret, SECRET)?;
        let tcp = SocketAddr::new(udp.ip(), std::net::TcpListener::bind((udp.ip(), 0))?.local_addr()?.port());
        let mut cfg = config_toml(http, udp, tcp, &secret);
        if let Some(l) = pin_layer {
            cfg.push_str(&format!("\n[sfu.media]\npin_layer = {l}\n"));
        }
        let path = dir.join("sfu.toml");
        std::fs::write(&path, cfg)?;
        let log = std::fs::File::create(dir.join("sfu.log"))?;
        let mut cmd = crate::scenario::wrapped(bench, dir, callgrind);
        let child = cmd
            .arg("sfu")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} sfu", bench.display()))?;
        let mut rb = Roombox { child, http, udp, dir: dir.to_path_buf() };
        let deadline = std::time::Instant::now() + Duration::from_secs(if callgrind { 60 } else { 15 });
        while std::net::TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_err() {
            if let Ok(Some(st)) = rb.child.try_wait() {
                bail!("sfu exited with {st}; see {}", dir.join("sfu.log").display());
            }
            if std::time::Instant::now() > deadline {
                rb.stop();
                bail!("sfu did not listen on {http} in time; see {}", dir.join("sfu.log").display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(rb)
    }

    pub fn stop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Roombox {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The `sfu` config for a bench run: loopback HTTP, media on `udp`
/// only (ICE-TCP on the same address), limits raised so the bench measures
/// forwarding, not refusals. The HS256 secret goes to `secret_file`.
pub fn config_toml(http: SocketAddr, udp: SocketAddr, tcp: SocketAddr, secret_file: &Path) -> String {
    format!(
        r#"# written by roombox-bench
[http]
listen = "{http}"
# one address opens every session of the bench: no per-address limit
rate_limit_per_minute = 0

[auth]
hs256_secret_file = "{secret}"

[sfu]
udp_bind = "{udp}"
tcp_bind = "{tcp}"
candidate_ips = ["{ip}"]
include_loopback = true

[sfu.limits]
max_rooms = 64
max_participants_per_room = 1100
max_tracks_per_participant = 8
max_joins_per_second = 10000
"#,
        secret = secret_file.display(),
        ip = udp.ip(),
    )
}
