//! Thin, safe wrappers over the Linux socket calls the bench needs and std
//! lacks: epoll, eventfd, `recvmsg` with the kernel receive timestamp
//! (`SO_TIMESTAMPNS`), and batched `recvmmsg`/`sendmmsg`.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// A level-triggered epoll set; each fd carries a `u64` token.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the returned fd is owned from here on.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd was just returned by the kernel and is not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; 256] })
    }

    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) })?;
        Ok(())
    }

    /// Wait up to `timeout` (rounded up to whole milliseconds); returns the ready tokens.
    pub fn wait(&mut self, timeout: Duration, ready: &mut Vec<u64>) -> io::Result<()> {
        ready.clear();
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: events points to self.events.len() initialised epoll_event slots.
        let n = unsafe {
            libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), self.events.len() as i32, ms)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        ready.extend(self.events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// An eventfd used to wake an epoll loop from another thread.
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fresh fd from the kernel.
        Ok(Waker { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe { libc::write(self.fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64.
        unsafe { libc::read(self.fd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

/// A non-blocking UDP socket on `127.0.0.1:0` (or `bind`) with kernel receive
/// timestamps switched on and large buffers.
pub fn udp_socket(bind: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(bind)?;
    s.set_nonblocking(true)?;
    let fd = s.as_raw_fd();
    let on: libc::c_int = 1;
    set_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, on)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = set_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
    let _ = set_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    Ok(s)
}

fn set_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: v lives for the call; the length matches its type.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        )
    })?;
    Ok(())
}

fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            (ss, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (ss, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Receive one datagram with its kernel receive time (CLOCK_REALTIME ns).
/// `Ok(None)` when nothing is waiting.
pub fn recv_ts(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr, u64)>> {
    // SAFETY: all-zero is valid for these C structs.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cbuf = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = &mut ss as *mut _ as *mut libc::c_void;
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: msg points at live buffers sized as declared.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(e);
    }
    let mut ts = 0u64;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                ts = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = from_sockaddr(&ss).ok_or_else(|| io::Error::other("unknown address family"))?;
    if ts == 0 {
        ts = crate::stamp::realtime_ns();
    }
    Ok(Some((n as usize, from, ts)))
}

/// Slots for `recvmmsg`: `n` buffers of `size` bytes, reused for every call.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    lens: Vec<usize>,
    n: usize,
}

// The raw pointers inside point at this struct's own heap buffers.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(n: usize, size: usize) -> RecvBatch {
        let mut b = RecvBatch {
            bufs: (0..n).map(|_| vec![0u8; size]).collect(),
            // SAFETY: zeroed C structs.
            addrs: vec![unsafe { zeroed() }; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            lens: vec![0; n],
            n: 0,
        };
        for i in 0..n {
            b.iovs.push(libc::iovec { iov_base: b.bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: size });
        }
        for i in 0..n {
            // SAFETY: zeroed mmsghdr, then pointed at our buffers.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = &mut b.addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// One `recvmmsg` call; returns how many datagrams arrived (0 when none).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: hdrs point at live buffers owned by self.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.n = 0;
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        self.n = n as usize;
        for i in 0..self.n {
            self.lens[i] = self.hdrs[i].msg_len as usize;
        }
        Ok(self.n)
    }

    /// Datagram `i` of the last call: (bytes, source).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let a = from_sockaddr(&self.addrs[i])?;
        Some((&self.bufs[i][..self.lens[i]], a))
    }
}

/// Outgoing datagrams collected and flushed with one `sendmmsg`.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    n: usize,
    /// Datagrams the kernel refused (buffer full), for the report.
    pub dropped: u64,
    /// `sendmmsg` calls made.
    pub calls: u64,
}

unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(n: usize, size: usize) -> SendBatch {
        SendBatch {
            bufs: (0..n).map(|_| vec![0u8; size]).collect(),
            lens: vec![0; n],
            // SAFETY: zeroed C structs.
            addrs: vec![(unsafe { zeroed() }, 0); n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            n: 0,
            dropped: 0,
            calls: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.n == self.bufs.len()
    }

    /// The next free slot's buffer; fill it, then [`SendBatch::commit`].
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.bufs[self.n]
    }

    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        self.lens[self.n] = len;
        self.addrs[self.n] = to_sockaddr(&to);
        self.n += 1;
    }

    /// Send everything queued (retrying the tail the kernel did not take once).
    pub fn flush(&mut self, sock: &UdpSocket) {
        if self.n == 0 {
            return;
        }
        self.iovs.clear();
        self.hdrs.clear();
        for i in 0..self.n {
            self.iovs.push(libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: self.lens[i],
            });
        }
        for i in 0..self.n {
            // SAFETY: zeroed, then pointed at live buffers.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = &mut self.addrs[i].0 as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = self.addrs[i].1;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        let mut off = 0;
        while off < self.n {
            self.calls += 1;
            // SAFETY: hdrs[off..n] point at live buffers owned by self.
            let r = unsafe {
                libc::sendmmsg(sock.as_raw_fd(), self.hdrs[off..].as_mut_ptr(), (self.n - off) as u32, 0)
            };
            if r <= 0 {
                // Skip the datagram the kernel refused and go on.
                self.dropped += 1;
                off += 1;
            } else {
                off += r as usize;
            }
        }
        self.n = 0;
    }
}

/// Raise the open-file limit to its hard maximum (many peers, one socket each).
pub fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_arrives_with_a_kernel_timestamp_close_to_now() {
        let a = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let before = crate::stamp::realtime_ns();
        a.send_to(b"hello", b.local_addr().unwrap()).unwrap();
        let mut ep = Epoll::new().unwrap();
        ep.add(b.as_raw_fd(), 7).unwrap();
        let mut ready = Vec::new();
        ep.wait(Duration::from_secs(2), &mut ready).unwrap();
        assert_eq!(ready, vec![7]);
        let mut buf = [0u8; 64];
        let (n, from, ts) = recv_ts(&b, &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from, a.local_addr().unwrap());
        assert!(ts >= before && ts < before + 1_000_000_000, "ts {ts} before {before}");
        assert!(recv_ts(&b, &mut buf).unwrap().is_none());
    }

    #[test]
    fn batches_carry_every_datagram_both_ways() {
        let a = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut sb = SendBatch::new(8, 1500);
        for i in 0..5u8 {
            let s = sb.slot();
            s[..3].copy_from_slice(&[i, i, i]);
            sb.commit(3, b.local_addr().unwrap());
        }
        sb.flush(&a);
        assert_eq!(sb.dropped, 0);
        let mut rb = RecvBatch::new(8, 1500);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while got.len() < 5 && std::time::Instant::now() < deadline {
            let n = rb.recv(&b).unwrap();
            for i in 0..n {
                let (d, from) = rb.get(i).unwrap();
                assert_eq!(from, a.local_addr().unwrap());
                got.push(d.to_vec());
            }
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i, i, i]).collect::<Vec<_>>());
    }
}
