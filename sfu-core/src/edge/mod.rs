//! The transport edge: sockets, interface addresses, ICE-TCP framing, and the
//! driver thread that owns them with the engine.

pub(crate) mod driver;
pub mod udp;

use std::net::{IpAddr, SocketAddr};

use str0m::Candidate;
use str0m::net::TcpType;

use crate::config::SfuConfig;

/// The machine's interface addresses (IPv4, and IPv6 that is not link-local),
/// without loopback unless asked.
pub fn interface_ips(include_loopback: bool) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we walk and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as libc::c_uint == 0 {
                continue;
            }
            let ip = match (*ifa.ifa_addr).sa_family as libc::c_int {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(a.sin6_addr.s6_addr)
                }
                _ => continue,
            };
            if let IpAddr::V6(v6) = ip
                && (v6.segments()[0] & 0xffc0) == 0xfe80
            {
                continue;
            }
            if ip.is_loopback() && !include_loopback {
                continue;
            }
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// The IPs advertised as host candidates: `announce_ips` (1:1 NAT) instead of
/// everything else; else `candidate_ips`; else the interfaces.
pub fn advertised_ips(config: &SfuConfig) -> Vec<IpAddr> {
    if !config.announce_ips.is_empty() {
        return config.announce_ips.clone();
    }
    if !config.candidate_ips.is_empty() {
        return config.candidate_ips.clone();
    }
    let mut ips = interface_ips(config.include_loopback);
    // the bind address narrows things when it is specific
    if !config.udp_bind.ip().is_unspecified() {
        ips.retain(|ip| *ip == config.udp_bind.ip());
        if ips.is_empty() {
            ips.push(config.udp_bind.ip());
        }
    }
    ips.retain(|ip| ip.is_ipv4() == config.udp_bind.is_ipv4());
    ips
}

/// Host candidates for the one UDP port and (if any) the passive ICE-TCP port.
pub fn candidates(ips: &[IpAddr], udp_port: u16, tcp_port: Option<u16>) -> Vec<Candidate> {
    let mut out = Vec::new();
    for ip in ips {
        if let Ok(c) = Candidate::host(SocketAddr::new(*ip, udp_port), "udp") {
            out.push(c);
        }
        if let Some(port) = tcp_port
            && let Ok(c) =
                Candidate::builder().tcp().host(SocketAddr::new(*ip, port)).tcptype(TcpType::Passive).build()
        {
            out.push(c);
        }
    }
    out
}

/// RFC 4571 framing of ICE-TCP: each packet is prefixed by its 16-bit length.
/// Feed bytes as they arrive; take whole packets out.
#[derive(Debug, Default)]
pub struct Rfc4571 {
    buf: Vec<u8>,
}

impl Rfc4571 {
    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole packet, if any (zero-length frames are skipped).
    pub fn next_packet(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.buf.len() < 2 {
                return None;
            }
            let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
            if self.buf.len() < 2 + len {
                return None;
            }
            let pkt = self.buf[2..2 + len].to_vec();
            self.buf.drain(..2 + len);
            if len > 0 {
                return Some(pkt);
            }
        }
    }

    /// Frame one packet for sending (`None` when it is too big for the 16-bit length).
    pub fn frame(pkt: &[u8]) -> Option<Vec<u8>> {
        let len = u16::try_from(pkt.len()).ok()?;
        let mut v = Vec::with_capacity(pkt.len() + 2);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(pkt);
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4571_reassembles_split_and_joined_frames() {
        let mut f = Rfc4571::default();
        let a = Rfc4571::frame(b"hello").unwrap();
        let b = Rfc4571::frame(&[7u8; 300]).unwrap();
        let mut all = a.clone();
        all.extend_from_slice(&b);
        f.push(&all[..3]);
        assert_eq!(f.next_packet(), None);
        f.push(&all[3..]);
        assert_eq!(f.next_packet().unwrap(), b"hello");
        assert_eq!(f.next_packet().unwrap(), vec![7u8; 300]);
        assert_eq!(f.next_packet(), None);
        assert!(Rfc4571::frame(&vec![0u8; 70_000]).is_none());
    }

    #[test]
    fn loopback_only_when_asked() {
        assert!(interface_ips(false).iter().all(|ip| !ip.is_loopback()));
        assert!(interface_ips(true).iter().any(|ip| ip.is_loopback()));
    }
}
