//! Network namespaces for browser tests.
//!
//! Headless Chromium gathers no loopback ICE candidates, so a browser test
//! process first moves itself into a fresh network namespace
//! ([`enter_private_netns`]) with `lo` up and a veth pair whose first end holds
//! [`LAN_IP`] and has no route out: the SFU binds that address and every
//! Chromium in the process's namespace reaches it.
//!
//! For traffic that must cross a real link (a squeezed subscriber), a
//! [`LinkedNetns`] is a second, named namespace joined to ours by another veth
//! pair; a [`Squeeze`] puts a `tbf` qdisc on our end of it, so everything sent
//! to that namespace is shaped. (This kernel has no `netem`.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// The private address of the test namespace (first veth end, `/24`, no route out).
pub const LAN_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);

/// Run a command, failing with its stderr.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running `{program}` (install it: apt-get install -y iproute2)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &str) -> anyhow::Result<String> {
    sh("ip", &args.split_whitespace().collect::<Vec<_>>())
}

/// Move this process into a new network namespace with `lo` up and a veth pair
/// `rbx0`/`rbx1`, `rbx0` holding [`LAN_IP`]/24. Call it first thing in `main`,
/// before any thread exists (threads keep the namespace they were born in).
/// Needs root (CAP_SYS_ADMIN).
pub fn enter_private_netns() -> anyhow::Result<()> {
    // SAFETY: unshare only changes this thread's namespace membership; no memory is touched.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if r != 0 {
        bail!("unshare(CLONE_NEWNET) failed: {} (browser tests need root)", std::io::Error::last_os_error());
    }
    ip("link set lo up")?;
    no_ipv6_on_new_links()?;
    ip("link add rbx0 type veth peer name rbx1")?;
    ip(&format!("addr add {LAN_IP}/24 dev rbx0"))?;
    ip("link set rbx0 up")?;
    ip("link set rbx1 up")?;
    Ok(())
}

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// New interfaces in this namespace get no IPv6. A veth's link-local address
/// appears a second or two after the link comes up (duplicate address
/// detection); Chromium, already running by then, takes the address change for
/// a network change and fails what it is loading with `ERR_NETWORK_CHANGED` —
/// a tab whose script never loaded never joins. The tests speak IPv4 only.
fn no_ipv6_on_new_links() -> anyhow::Result<()> {
    let path = "/proc/sys/net/ipv6/conf/default/disable_ipv6";
    if std::path::Path::new(path).exists() {
        std::fs::write(path, "1").map_err(|e| anyhow::anyhow!("writing {path}: {e}"))?;
    }
    Ok(())
}

/// A second network namespace joined to ours by a veth pair:
/// ours `host_ip`/24 on `host_dev`, theirs `peer_ip`/24, no other route.
/// Deleted on drop.
pub struct LinkedNetns {
    pub name: String,
    /// Our end of the veth (shape it with [`Squeeze`]).
    pub host_dev: String,
    pub host_ip: Ipv4Addr,
    pub peer_ip: Ipv4Addr,
}

impl LinkedNetns {
    /// Make namespace number `subnet` (1..=250): `10.254.{subnet}.1` on our side,
    /// `10.254.{subnet}.2` on theirs.
    pub fn create(subnet: u8) -> anyhow::Result<LinkedNetns> {
        if !(1..=250).contains(&subnet) {
            bail!("subnet {subnet} out of 1..=250");
        }
        clean_stale_namespaces();
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        let name = format!("rbx-{}-{n}", std::process::id());
        let host_dev = format!("rbxh{subnet}");
        let peer_dev = format!("rbxp{subnet}");
        let host_ip = Ipv4Addr::new(10, 254, subnet, 1);
        let peer_ip = Ipv4Addr::new(10, 254, subnet, 2);
        ip(&format!("netns add {name}"))?;
        let ns = LinkedNetns { name, host_dev, host_ip, peer_ip };
        let n = &ns.name;
        // No IPv6 on either end (see `no_ipv6_on_new_links`): a device moved into
        // a namespace is set up with that namespace's defaults.
        no_ipv6_on_new_links()?;
        sh(
            "ip",
            &[
                "netns",
                "exec",
                n,
                "sh",
                "-c",
                "! test -e /proc/sys/net/ipv6/conf/default/disable_ipv6 || echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
            ],
        )?;
        ip(&format!("link add {} type veth peer name {peer_dev}", ns.host_dev))?;
        ip(&format!("link set {peer_dev} netns {n}"))?;
        ip(&format!("addr add {host_ip}/24 dev {}", ns.host_dev))?;
        ip(&format!("link set {} up", ns.host_dev))?;
        ip(&format!("-n {n} link set lo up"))?;
        ip(&format!("-n {n} addr add {peer_ip}/24 dev {peer_dev}"))?;
        ip(&format!("-n {n} link set {peer_dev} up"))?;
        Ok(ns)
    }

    /// Open a TCP connection from inside this namespace (e.g. to a DevTools
    /// port on its loopback). The socket stays in the namespace it was made in.
    pub fn connect(&self, addr: SocketAddr) -> anyhow::Result<std::net::TcpStream> {
        connect_in_netns(&self.name, addr)
    }
}

impl Drop for LinkedNetns {
    fn drop(&mut self) {
        let _ = ip(&format!("link del {}", self.host_dev));
        let _ = ip(&format!("netns del {}", self.name));
    }
}

/// Namespaces named `rbx-PID-N` whose process is gone (a test killed with -9).
fn clean_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("rbx-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&format!("netns del {name}"));
        }
    }
}

/// Connect to `addr` from inside the named namespace `/run/netns/{name}`.
pub fn connect_in_netns(name: &str, addr: SocketAddr) -> anyhow::Result<std::net::TcpStream> {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<std::net::TcpStream> {
            let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            // SAFETY: setns on a namespace fd we own; it only affects this short-lived thread.
            let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            if r != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            let s =
                std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr} in {name}"))?;
            Ok(s)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("setns thread panicked"))?
    })
}

/// A token-bucket squeeze on a device's egress; removed on drop.
pub struct Squeeze {
    dev: String,
}

impl Squeeze {
    /// `tc qdisc replace dev DEV root tbf rate RATEkbit burst BURST latency 50ms`:
    /// a shallow buffer, so excess traffic is dropped rather than queued.
    pub fn apply(dev: &str, rate_kbit: u32) -> anyhow::Result<Squeeze> {
        Self::apply_with(dev, rate_kbit, 50)
    }

    /// The same with a queue that holds `latency_ms` of traffic before dropping.
    pub fn apply_with(dev: &str, rate_kbit: u32, latency_ms: u32) -> anyhow::Result<Squeeze> {
        // A burst of ~40 ms at the rate, but at least two full-size packets.
        let burst = (rate_kbit as usize * 1000 / 8 / 25).max(3200);
        sh(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                &format!("{rate_kbit}kbit"),
                "burst",
                &burst.to_string(),
                "latency",
                &format!("{latency_ms}ms"),
            ],
        )?;
        Ok(Squeeze { dev: dev.to_owned() })
    }

    /// Lift it now (also done on drop).
    pub fn lift(mut self) -> anyhow::Result<()> {
        let dev = std::mem::take(&mut self.dev);
        sh("tc", &["qdisc", "del", "dev", &dev, "root"]).map(|_| ())
    }
}

impl Drop for Squeeze {
    fn drop(&mut self) {
        if !self.dev.is_empty() {
            let _ = sh("tc", &["qdisc", "del", "dev", &self.dev, "root"]);
        }
    }
}

/// `ip` as an address string, for URLs.
pub fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
