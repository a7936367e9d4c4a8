//! Batched UDP I/O: `recvmmsg(2)` with `IP_PKTINFO` (so one socket bound to
//! the wildcard address still learns each datagram's destination address,
//! which ICE needs) and `sendmmsg(2)`, again with `IP_PKTINFO` /
//! `IPV6_PKTINFO` when a datagram names its source address, so a reply leaves
//! from the address the peer's packets arrived on (a multi-homed box with
//! asymmetric routes would otherwise answer from the kernel's choice, which
//! the peer's ICE does not know). A small safe wrapper over libc; the
//! buffers are allocated once and reused.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Largest datagram accepted (bigger ones are truncated and dropped).
pub const MAX_DATAGRAM: usize = 2048;
const CMSG_SPACE: usize = 128;

/// One received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub struct RecvMeta {
    pub len: usize,
    pub source: SocketAddr,
    /// Destination IP from `IP_PKTINFO` / `IPV6_PKTINFO`, when the kernel gave it.
    pub dest_ip: Option<IpAddr>,
    pub truncated: bool,
}

/// Reusable receive buffers for [`recv_batch`].
pub struct RecvBatch {
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u8; CMSG_SPACE]>,
    meta: Vec<RecvMeta>,
    /// The `recvmmsg` arrays, kept rather than zeroed on the stack per call.
    iovs: Box<[libc::iovec; BATCH]>,
    msgs: Box<[libc::mmsghdr; BATCH]>,
}

// SAFETY: the raw pointers in `iovs`/`msgs` are set during `recv_batch`
// and point into `self`'s own heap buffers; none is used after the call.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            names: vec![unsafe { zeroed() }; BATCH],
            cmsgs: vec![[0u8; CMSG_SPACE]; BATCH],
            meta: Vec::with_capacity(BATCH),
            // SAFETY: plain old data; all-zero is a valid value.
            iovs: Box::new(unsafe { zeroed() }),
            msgs: Box::new(unsafe { zeroed() }),
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last [`recv_batch`].
    pub fn iter(&self) -> impl Iterator<Item = (&RecvMeta, &[u8])> {
        self.meta.iter().zip(self.bufs.iter()).map(|(m, b)| (m, &b[..m.len]))
    }
}

/// Ask the kernel for each datagram's destination address.
pub fn enable_pktinfo(sock: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let one: libc::c_int = 1;
    let (level, opt) =
        if v6 { (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO) } else { (libc::IPPROTO_IP, libc::IP_PKTINFO) };
    // SAFETY: valid fd, pointer to a c_int of the stated size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            &one as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn from_socket_addr(a: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            // (every field written: the storage is reused from call to call)
            let s: &mut libc::sockaddr_in = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in) };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = v4.port().to_be();
            s.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            s.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in6.
            let s: &mut libc::sockaddr_in6 = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in6) };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = v6.port().to_be();
            s.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            s.sin6_flowinfo = v6.flowinfo();
            s.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn parse_pktinfo(msg: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: msg was filled by the kernel; the CMSG_* macros walk its control buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            }
            if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// Receive up to [`BATCH`] datagrams without blocking. `Ok(0)` never happens:
/// no data is `Err(WouldBlock)`.
pub fn recv_batch(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.meta.clear();
    // SAFETY: iovecs/msghdrs point into `batch`'s buffers, which outlive the call;
    // lengths are the buffers' real sizes.
    unsafe {
        let RecvBatch { iovs, msgs, .. } = batch;
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: batch.bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = &mut batch.names[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = batch.cmsgs[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CMSG_SPACE as _;
            h.msg_flags = 0;
            msgs[i].msg_len = 0;
        }
        let n = libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for m in msgs.iter().take(n) {
            let idx = batch.meta.len();
            let Some(source) = to_socket_addr(&batch.names[idx]) else {
                batch.meta.push(RecvMeta {
                    len: 0,
                    source: SocketAddr::from(([0, 0, 0, 0], 0)),
                    dest_ip: None,
                    truncated: true,
                });
                continue;
            };
            batch.meta.push(RecvMeta {
                len: (m.msg_len as usize).min(MAX_DATAGRAM),
                source,
                dest_ip: parse_pktinfo(&m.msg_hdr),
                truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        Ok(n)
    }
}

/// One datagram for [`send_batch`]: where to, the bytes, and optionally the
/// local address to send from (`IP_PKTINFO`; it must be one of this host's
/// addresses of the destination's family, and the socket bound to the
/// wildcard address).
pub trait Datagram {
    fn destination(&self) -> SocketAddr;
    fn source_ip(&self) -> Option<IpAddr> {
        None
    }
    fn bytes(&self) -> &[u8];
}

impl<B: AsRef<[u8]>> Datagram for (SocketAddr, B) {
    fn destination(&self) -> SocketAddr {
        self.0
    }
    fn bytes(&self) -> &[u8] {
        self.1.as_ref()
    }
}

impl<B: AsRef<[u8]>> Datagram for (SocketAddr, Option<IpAddr>, B) {
    fn destination(&self) -> SocketAddr {
        self.0
    }
    fn source_ip(&self) -> Option<IpAddr> {
        self.1
    }
    fn bytes(&self) -> &[u8] {
        self.2.as_ref()
    }
}

/// Room for one `IP_PKTINFO` or `IPV6_PKTINFO` control message, aligned for `cmsghdr`.
type PktinfoBuf = [u64; 6];

/// Point `h`'s control buffer at `buf`, holding a pktinfo that makes the
/// kernel send from `src` (`false`: `src`'s family is not the destination's).
///
/// # Safety
/// `buf` must outlive every use of `h`.
unsafe fn set_source(h: &mut libc::msghdr, buf: &mut PktinfoBuf, src: IpAddr, to: &SocketAddr) -> bool {
    let (level, ty, len) = match (src, to) {
        (IpAddr::V4(_), SocketAddr::V4(_)) => {
            (libc::IPPROTO_IP, libc::IP_PKTINFO, size_of::<libc::in_pktinfo>())
        }
        (IpAddr::V6(_), SocketAddr::V6(_)) => {
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, size_of::<libc::in6_pktinfo>())
        }
        _ => return false,
    };
    // SAFETY: `buf` is zeroed, aligned for cmsghdr and larger than CMSG_SPACE
    // of either pktinfo; the CMSG_* macros stay within msg_controllen.
    unsafe {
        *buf = [0; 6];
        h.msg_control = buf.as_mut_ptr() as *mut libc::c_void;
        h.msg_controllen = libc::CMSG_SPACE(len as u32) as _;
        let c = libc::CMSG_FIRSTHDR(h);
        if c.is_null() {
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            return false;
        }
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(len as u32) as _;
        match src {
            IpAddr::V4(ip) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from(ip).to_be() },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in_pktinfo, info);
            }
            IpAddr::V6(ip) => {
                let info =
                    libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: 0 };
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in6_pktinfo, info);
            }
        }
    }
    true
}

/// Reusable `sendmmsg` arrays for [`send_batch`]: allocated (and zeroed)
/// once, then only the entries a call uses are written. Zeroing them on the
/// stack per call cost ≈ 850 instructions per forwarded packet at a light
/// load (callgrind, docs/PERFORMANCE.md round 0).
pub struct SendBatch {
    names: Box<[libc::sockaddr_storage; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    msgs: Box<[libc::mmsghdr; BATCH]>,
    cmsgs: Box<[PktinfoBuf; BATCH]>,
}

// SAFETY: the raw pointers inside are only ever set during a `send_batch`
// call and point into that call's items or into `self`; none is used after it.
unsafe impl Send for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        // SAFETY: all four are plain old data; all-zero is a valid value.
        unsafe {
            SendBatch {
                names: Box::new(zeroed()),
                iovs: Box::new(zeroed()),
                msgs: Box::new(zeroed()),
                cmsgs: Box::new(zeroed()),
            }
        }
    }
}

/// Send datagrams with as few `sendmmsg` calls as possible. Returns how many
/// were handed to the kernel (stops early on `WouldBlock`). Takes the
/// buffers as they are (`&[u8]`, `Vec<u8>`, …): no per-batch list to build.
/// A datagram with a [`Datagram::source_ip`] leaves from that address.
pub fn send_batch<D: Datagram>(fd: RawFd, bufs: &mut SendBatch, items: &[D]) -> io::Result<usize> {
    let mut sent = 0;
    let SendBatch { names, iovs, msgs, cmsgs } = bufs;
    for chunk in items.chunks(BATCH) {
        // SAFETY: every pointer refers to `items` or to `bufs`, which outlive
        // the call; every field of the entries used is written below.
        let n = unsafe {
            for (i, d) in chunk.iter().enumerate() {
                let addr = d.destination();
                let data = d.bytes();
                let len = from_socket_addr(&addr, &mut names[i]);
                iovs[i] = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
                msgs[i].msg_len = 0;
                let h = &mut msgs[i].msg_hdr;
                h.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                h.msg_namelen = len;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                if let Some(src) = d.source_ip() {
                    set_source(h, &mut cmsgs[i], src, &addr);
                }
            }
            libc::sendmmsg(fd, msgs.as_mut_ptr(), chunk.len() as libc::c_uint, libc::MSG_DONTWAIT)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock && sent > 0 {
                return Ok(sent);
            }
            return Err(e);
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            return Ok(sent);
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn batch_roundtrip_with_destination_address() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("0.0.0.0:0").unwrap();
        enable_pktinfo(&b, false).unwrap();
        let b_addr = SocketAddr::from(([127, 0, 0, 1], b.local_addr().unwrap().port()));
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10 + i as usize]).collect();
        let items: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (b_addr, &p[..])).collect();
        let mut sb = SendBatch::default();
        assert_eq!(send_batch(a.as_raw_fd(), &mut sb, &items).unwrap(), 40);
        // the arrays are reused: a second, shorter batch after a longer one
        assert_eq!(send_batch(a.as_raw_fd(), &mut sb, &items[..3]).unwrap(), 3);
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        while got.len() < 43 {
            match recv_batch(b.as_raw_fd(), &mut batch) {
                Ok(_) => {
                    for (m, d) in batch.iter() {
                        assert_eq!(m.source, a.local_addr().unwrap());
                        assert_eq!(m.dest_ip, Some(IpAddr::from([127, 0, 0, 1])));
                        got.push(d.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let mut want = payloads.clone();
        want.extend_from_slice(&payloads[..3]);
        assert_eq!(got, want);
        assert_eq!(recv_batch(b.as_raw_fd(), &mut batch).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    /// A socket bound to the wildcard address replies from the address the
    /// datagram came in on: 127.0.0.2 (all of 127/8 is this host's), though
    /// the kernel would pick 127.0.0.1 to reach 127.0.0.1.
    #[test]
    fn a_datagram_leaves_from_the_source_address_it_names() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let to = peer.local_addr().unwrap();
        let items: Vec<(SocketAddr, Option<IpAddr>, &[u8])> = vec![
            (to, Some(IpAddr::from([127, 0, 0, 2])), b"from two"),
            (to, None, b"kernel's choice"),
            (to, Some(IpAddr::from([127, 0, 0, 3])), b"from three"),
            // a family that does not match the destination: no pktinfo, the kernel chooses
            (to, Some("::1".parse().unwrap()), b"mismatch"),
        ];
        assert_eq!(send_batch(server.as_raw_fd(), &mut SendBatch::default(), &items).unwrap(), 4);
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..4 {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
        }
        let at = |ip: [u8; 4]| SocketAddr::from((ip, port));
        assert_eq!(
            got,
            vec![
                ("from two".to_string(), at([127, 0, 0, 2])),
                ("kernel's choice".to_string(), at([127, 0, 0, 1])),
                ("from three".to_string(), at([127, 0, 0, 3])),
                ("mismatch".to_string(), at([127, 0, 0, 1])),
            ]
        );
    }
}
