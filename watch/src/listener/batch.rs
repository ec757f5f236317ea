//! One `recvmmsg(2)` batch: buffers allocated once, reused every call.
//!
//! `recvmmsg` is the one call of the receive path that no safe crate wraps (rustix has
//! `sendmmsg` only), so it and the zeroed header array are this room's `unsafe`. The control
//! messages the kernel writes (`SCM_CREDENTIALS`, `SCM_RIGHTS`) and the source addresses are
//! parsed from our own byte buffers with safe code ([`parse_creds`], [`parse_rights`],
//! [`parse_sockaddr`]).
//!
//! # Passed descriptors
//!
//! Any local sender may attach descriptors (`SCM_RIGHTS`) to a datagram on the Unix socket;
//! the kernel installs them in our descriptor table on receipt. Every call receives with
//! `MSG_CMSG_CLOEXEC` (so none can leak into a recovery child even for an instant) and every
//! passed descriptor is closed before the call returns, and counted
//! ([`RecvBatch::passed_fds_closed`]). The control buffer has room for the credentials and a
//! handful of descriptors only: the kernel discards (never installs) descriptors that do not
//! fit and sets `MSG_CTRUNC`, so one datagram costs at most that handful of `close` calls.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::{BATCH, DGRAM_BUF};

/// Room for the control messages of one datagram, 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_ROOM]);

/// `SCM_TIMESTAMPNS` (16-byte header + a 16-byte `timespec`), `SCM_CREDENTIALS` (16 + 12,
/// padded: 32 bytes) and one `SCM_RIGHTS` message of up to 8 descriptors (16 + 32); a sender
/// can pass no more per datagram (with no stamp, 16).
const CMSG_ROOM: usize = 112;

/// Room for one source address (`struct sockaddr_storage`), aligned as the kernel writes it.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct NameBuf([u8; NAME_ROOM]);

const NAME_ROOM: usize = mem::size_of::<libc::sockaddr_storage>();

/// What a receive asks the kernel for besides the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    /// Control messages (`SCM_CREDENTIALS` on a Unix socket with `SO_PASSCRED`,
    /// `SCM_TIMESTAMPNS` on a socket with `SO_TIMESTAMPNS`).
    pub control: bool,
    /// Each datagram's source address (costs the kernel a copy per datagram: asked only
    /// where it is used).
    pub source: bool,
}

/// Buffers for one `recvmmsg` call, allocated once and reused: no allocation per datagram.
pub struct RecvBatch {
    bufs: Box<[[u8; DGRAM_BUF]; BATCH]>,
    cmsgs: Box<[CmsgBuf; BATCH]>,
    names: Box<[NameBuf; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    got: usize,
    want: Want,
    passed_fds_closed: u64,
    /// Arrival time of each datagram of the last batch on the daemon's monotonic clock
    /// ([`RecvBatch::stamp`]).
    arrivals: Box<[u64; BATCH]>,
    /// The latest arrival handed out: arrivals never go back.
    last_arrival: u64,
}

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        RecvBatch::new()
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("got", &self.got)
            .field("passed_fds_closed", &self.passed_fds_closed)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Allocates the buffers.
    #[must_use]
    pub fn new() -> RecvBatch {
        // SAFETY: the all-zero bit pattern is valid for this plain C struct (null pointers,
        // zero lengths; some libcs add private padding fields, so no struct literal); every
        // pointer is set before use in `recv`.
        let zeroed_hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        RecvBatch {
            bufs: Box::new([[0u8; DGRAM_BUF]; BATCH]),
            cmsgs: Box::new([CmsgBuf([0u8; CMSG_ROOM]); BATCH]),
            names: Box::new([NameBuf([0u8; NAME_ROOM]); BATCH]),
            iovs: Box::new([iov; BATCH]),
            hdrs: Box::new(zeroed_hdrs),
            got: 0,
            want: Want::default(),
            passed_fds_closed: 0,
            arrivals: Box::new([0; BATCH]),
            last_arrival: 0,
        }
    }

    /// One non-blocking `recvmmsg` on any datagram socket `fd` (used by the benchmark's bare
    /// receiver, so it makes exactly the observer's calls): with `creds`, room for
    /// `SCM_CREDENTIALS`, else the datagrams alone.
    ///
    /// # Errors
    /// The `recvmmsg` error.
    pub fn recv_raw(&mut self, fd: RawFd, creds: bool) -> io::Result<usize> {
        self.recv(
            fd,
            Want {
                control: creds,
                source: false,
            },
        )
    }

    /// Descriptors passed to us (`SCM_RIGHTS`) and closed on receipt, since this batch was
    /// made.
    #[must_use]
    pub fn passed_fds_closed(&self) -> u64 {
        self.passed_fds_closed
    }

    pub(super) fn recv(&mut self, fd: RawFd, want: Want) -> io::Result<usize> {
        self.got = 0;
        self.want = want;
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: DGRAM_BUF,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = std::ptr::addr_of_mut!(self.iovs[i]);
            h.msg_iovlen = 1;
            h.msg_flags = 0;
            if want.source {
                h.msg_name = self.names[i].0.as_mut_ptr().cast();
                h.msg_namelen = NAME_ROOM as libc::socklen_t;
            } else {
                h.msg_name = std::ptr::null_mut();
                h.msg_namelen = 0;
            }
            if want.control {
                h.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
                h.msg_controllen = CMSG_ROOM as _;
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by `self` that live across the call,
        // with their true lengths; MSG_DONTWAIT makes the call non-blocking; no timeout.
        // MSG_CMSG_CLOEXEC: descriptors a sender passes are installed close-on-exec.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.got = usize::try_from(n).unwrap_or(0);
        if want.control {
            for i in 0..self.got {
                self.close_passed(i);
            }
        }
        Ok(self.got)
    }

    /// Closes every descriptor the kernel installed for datagram `i` (`SCM_RIGHTS`), even in
    /// a truncated control buffer (the kernel installs what it wrote).
    fn close_passed(&mut self, i: usize) {
        let len = self.control_len(i);
        let mut closed = 0u64;
        parse_rights(&self.cmsgs[i].0[..len], |raw| {
            // SAFETY: the kernel installed this descriptor in our table for this datagram
            // just now (it wrote it into our control buffer, which nothing else reads);
            // nothing else owns it, and it is closed exactly once, here.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            closed += 1;
        });
        self.passed_fds_closed += closed;
    }

    fn control_len(&self, i: usize) -> usize {
        let h = &self.hdrs[i].msg_hdr;
        if h.msg_control.is_null() {
            return 0;
        }
        #[allow(
            clippy::unnecessary_cast,
            reason = "msg_controllen is size_t on glibc, socklen_t on musl"
        )]
        let len = (h.msg_controllen as usize).min(CMSG_ROOM);
        len
    }

    /// The bytes of datagram `i` of the last call. A datagram longer than [`DGRAM_BUF`] is
    /// truncated by the kernel; it is then reported with length `DGRAM_BUF`, which is still
    /// refused as a wrong length.
    #[must_use]
    pub fn data(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(DGRAM_BUF);
        &self.bufs[i][..len]
    }

    /// Whether datagram `i` was longer than the buffer.
    #[must_use]
    pub fn truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// Whether datagram `i`'s control data (the credentials) was cut by the kernel.
    #[must_use]
    pub fn ctrl_truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_CTRUNC != 0
    }

    /// The kernel-attested `(pid, uid)` of datagram `i` (Unix listener), if present. `None`
    /// when the control buffer was truncated (a sender that passed more descriptors than fit):
    /// such a datagram is not attested.
    #[must_use]
    pub fn creds(&self, i: usize) -> Option<(u32, u32)> {
        if self.hdrs[i].msg_hdr.msg_flags & libc::MSG_CTRUNC != 0 {
            return None;
        }
        parse_creds(&self.cmsgs[i].0[..self.control_len(i)])
    }

    /// The kernel's receive time of datagram `i` (`SCM_TIMESTAMPNS`, wall-clock ns since the
    /// epoch), if the socket has `SO_TIMESTAMPNS` on.
    #[must_use]
    pub fn kernel_stamp(&self, i: usize) -> Option<u64> {
        parse_stamp(&self.cmsgs[i].0[..self.control_len(i)])
    }

    /// Sets the arrival time of every datagram of the last batch on the daemon's monotonic
    /// clock, `now` being that clock read just now ([`arrival_time`]): the kernel's wall-clock
    /// stamp moved by the wall-minus-monotonic offset read here, clamped between the previous
    /// arrival and `now`; `now` for a datagram without a stamp.
    pub fn stamp(&mut self, now: u64) {
        let wall = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let wall = u64::try_from(wall.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(wall.tv_nsec).unwrap_or(0);
        for i in 0..self.got {
            let at = arrival_time(self.kernel_stamp(i), wall, now, self.last_arrival);
            self.arrivals[i] = at;
            self.last_arrival = at;
        }
    }

    /// Datagram `i`'s arrival time as set by the last [`RecvBatch::stamp`].
    #[must_use]
    pub fn arrival(&self, i: usize) -> u64 {
        self.arrivals[i]
    }

    /// The source address of datagram `i`, if it was asked for and is an IP address.
    #[must_use]
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        if !self.want.source || i >= self.got {
            return None;
        }
        let len = (self.hdrs[i].msg_hdr.msg_namelen as usize).min(NAME_ROOM);
        parse_sockaddr(&self.names[i].0[..len])
    }
}

/// Walks the control messages in `buf` (Linux's layout, `struct cmsghdr`: `cmsg_len:
/// size_t`, `cmsg_level: int`, `cmsg_type: int`, then the data aligned to `size_t`; each
/// message padded to that alignment), calling `f(level, type, data)`. Read from the bytes, so
/// nothing here trusts a pointer; a malformed header ends the walk.
fn each_cmsg(buf: &[u8], mut f: impl FnMut(i32, i32, &[u8])) {
    const W: usize = mem::size_of::<usize>();
    const HDR: usize = (W + 8).div_ceil(W) * W;
    let int_at = |at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let mut at = 0;
    while at + HDR <= buf.len() {
        let Some(len) = buf
            .get(at..at + W)
            .and_then(|b| b.try_into().ok())
            .map(usize::from_ne_bytes)
        else {
            return;
        };
        if len < HDR || len > buf.len() - at {
            return;
        }
        let (Some(level), Some(kind)) = (int_at(at + W), int_at(at + W + 4)) else {
            return;
        };
        f(level, kind, &buf[at + HDR..at + len]);
        at += len.div_ceil(W) * W;
    }
}

/// Finds `SCM_CREDENTIALS` in a control buffer the kernel filled in and returns `(pid, uid)`.
#[must_use]
pub fn parse_creds(buf: &[u8]) -> Option<(u32, u32)> {
    let mut out = None;
    each_cmsg(buf, |level, kind, data| {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        if out.is_none()
            && level == libc::SOL_SOCKET
            && kind == libc::SCM_CREDENTIALS
            && data.len() >= 12
        {
            let int = |at: usize| {
                u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
            };
            out = Some((int(0), int(4)));
        }
    });
    out
}

/// Calls `f` with every descriptor of every `SCM_RIGHTS` message in a control buffer the
/// kernel filled in (whole descriptors only; negative values skipped).
pub fn parse_rights(buf: &[u8], mut f: impl FnMut(RawFd)) {
    each_cmsg(buf, |level, kind, data| {
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            for c in data.chunks_exact(4) {
                let fd = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                if fd >= 0 {
                    f(fd);
                }
            }
        }
    });
}

/// Finds `SCM_TIMESTAMPNS` (a `struct timespec`) in a control buffer the kernel filled in:
/// wall-clock ns since the epoch.
#[must_use]
pub fn parse_stamp(buf: &[u8]) -> Option<u64> {
    const W: usize = mem::size_of::<libc::time_t>();
    let mut out = None;
    each_cmsg(buf, |level, kind, data| {
        if out.is_none()
            && level == libc::SOL_SOCKET
            && kind == libc::SCM_TIMESTAMPNS
            && data.len() >= 2 * W
        {
            let word = |at: usize| -> Option<i64> {
                let b = data.get(at..at + W)?;
                Some(if W == 8 {
                    i64::from_ne_bytes(b.try_into().ok()?)
                } else {
                    i64::from(i32::from_ne_bytes(b.try_into().ok()?))
                })
            };
            if let (Some(sec), Some(nsec)) = (word(0), word(W)) {
                out = u64::try_from(sec)
                    .ok()
                    .and_then(|s| s.checked_mul(1_000_000_000))
                    .and_then(|s| s.checked_add(u64::try_from(nsec).ok()?));
            }
        }
    });
    out
}

/// A datagram's arrival time on the monotonic clock: its kernel wall-clock `stamp` moved by
/// the offset between the wall clock (`wall`) and the monotonic clock (`now`) read together at
/// the batch, then clamped to `[previous, now]`. The clamp is what makes a wall-clock step
/// harmless: a step back cannot date a beat later than it was read (it never extends a
/// deadline past the time it was seen), a step forward cannot date it before the last one
/// (no beat is placed in the past to fake a stall). Without a stamp: `now`.
#[must_use]
pub fn arrival_time(stamp: Option<u64>, wall: u64, now: u64, previous: u64) -> u64 {
    let Some(stamp) = stamp else {
        return now.max(previous);
    };
    // How long ago the kernel stamped it, by the wall clock.
    let ago = wall.saturating_sub(stamp);
    now.saturating_sub(ago).clamp(previous.min(now), now)
}

/// A `struct sockaddr_in` / `sockaddr_in6` the kernel wrote, as a [`SocketAddr`]; `None` for
/// any other family or a short buffer.
#[must_use]
pub fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET {
        let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 {
        let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    const CREDS: Want = Want {
        control: true,
        source: false,
    };

    /// Sends `data` with `n` copies of a descriptor attached (`SCM_RIGHTS`).
    fn send_with_fds(tx: &UnixDatagram, data: &[u8], n: usize) {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = vec![file.as_fd(); n];
        let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(n))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        assert!(anc.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            tx,
            &[std::io::IoSlice::new(data)],
            &mut anc,
            SendFlags::empty(),
        )
        .unwrap();
    }

    #[test]
    fn passed_descriptors_are_closed_and_counted() {
        let (a, b) = UnixDatagram::pair().unwrap();
        rustix::net::sockopt::set_socket_passcred(&b, true).unwrap();
        let mut batch = RecvBatch::new();
        send_with_fds(&a, b"one", 1);
        send_with_fds(&a, b"three", 3);
        assert_eq!(batch.recv(b.as_raw_fd(), CREDS).unwrap(), 2);
        assert_eq!(batch.data(0), b"one");
        assert_eq!(batch.passed_fds_closed(), 4);
        assert_eq!(batch.creds(0).map(|c| c.0), Some(std::process::id()));
    }

    #[test]
    fn descriptors_beyond_the_room_are_never_installed_and_the_datagram_is_unattested() {
        let (a, b) = UnixDatagram::pair().unwrap();
        rustix::net::sockopt::set_socket_passcred(&b, true).unwrap();
        let mut batch = RecvBatch::new();
        send_with_fds(&a, b"many", 200);
        assert_eq!(batch.recv(b.as_raw_fd(), CREDS).unwrap(), 1);
        // What fits beside the credentials is installed (and closed); the rest never is.
        let closed = batch.passed_fds_closed();
        assert!(
            (1..=(CMSG_ROOM - 48) / 4).contains(&(closed as usize)),
            "{closed}"
        );
        assert_eq!(batch.creds(0), None, "truncated control: not attested");
    }

    #[test]
    fn source_addresses_when_asked() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        tx.send_to(b"y", rx.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new();
        let want = Want {
            control: false,
            source: true,
        };
        // Loopback queues a datagram before send_to returns.
        assert_eq!(batch.recv(rx.as_raw_fd(), want).unwrap(), 2);
        for i in 0..2 {
            assert_eq!(batch.source(i), Some(tx.local_addr().unwrap()));
        }
        tx.send_to(b"z", rx.local_addr().unwrap()).unwrap();
        assert_eq!(batch.recv_raw(rx.as_raw_fd(), false).unwrap(), 1);
        assert_eq!(batch.source(0), None, "not asked for");
    }

    #[test]
    fn kernel_stamps_become_monotonic_arrivals() {
        let (a, b) = UnixDatagram::pair().unwrap();
        super::super::set_timestamps(b.as_fd()).unwrap();
        a.send(b"x").unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(b.as_raw_fd(), CREDS).unwrap(), 1);
        let stamp = batch.kernel_stamp(0).expect("a kernel stamp");
        let wall = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let wall = u64::try_from(wall.tv_sec).unwrap() * 1_000_000_000
            + u64::try_from(wall.tv_nsec).unwrap();
        assert!(
            stamp <= wall && wall - stamp < 60_000_000_000,
            "{stamp} vs {wall}"
        );
        batch.stamp(5_000_000_000);
        let at = batch.arrival(0);
        assert!(at <= 5_000_000_000 && at > 0, "{at}");
    }

    #[test]
    fn arrival_times_are_clamped_between_the_previous_arrival_and_now() {
        let s = 1_000_000_000;
        // Stamped 2 ms before the clocks were read: 2 ms before now.
        assert_eq!(
            arrival_time(Some(100 * s - 2_000_000), 100 * s, 50 * s, 0),
            50 * s - 2_000_000
        );
        // The wall clock stepped back after the stamp (stamp "in the future"): now, no later.
        assert_eq!(arrival_time(Some(200 * s), 100 * s, 50 * s, 0), 50 * s);
        // The wall clock stepped forward an hour after the stamp: never before the last one.
        assert_eq!(
            arrival_time(Some(100 * s), 3700 * s, 50 * s, 49 * s),
            49 * s
        );
        // No stamp: now.
        assert_eq!(arrival_time(None, 100 * s, 50 * s, 49 * s), 50 * s);
        // Garbage never panics and stays in range.
        assert_eq!(arrival_time(Some(u64::MAX), 0, 7, 9), 7);
        assert_eq!(parse_stamp(&[0xff; 64]), None);
    }

    #[test]
    fn malformed_addresses_yield_nothing() {
        assert_eq!(parse_sockaddr(&[]), None);
        assert_eq!(parse_sockaddr(&[0xff; 128]), None);
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&9000u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(parse_sockaddr(&v4), Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(parse_sockaddr(&v4[..6]), None);
    }

    #[test]
    fn credentials_parsed_from_the_kernels_bytes() {
        let (a, b) = UnixDatagram::pair().unwrap();
        rustix::net::sockopt::set_socket_passcred(&b, true).unwrap();
        rustix::net::send(&a, b"hello", rustix::net::SendFlags::empty()).unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(b.as_raw_fd(), CREDS).unwrap(), 1);
        assert_eq!(batch.data(0), b"hello");
        let me = std::process::id();
        let uid = rustix::process::getuid().as_raw();
        assert_eq!(batch.creds(0), Some((me, uid)));
    }

    #[test]
    fn malformed_control_bytes_yield_nothing() {
        assert_eq!(parse_creds(&[]), None);
        assert_eq!(parse_creds(&[0xff; 64]), None);
        let mut short = [0u8; 32];
        short[..8].copy_from_slice(&4usize.to_ne_bytes());
        assert_eq!(parse_creds(&short), None);
    }
}
