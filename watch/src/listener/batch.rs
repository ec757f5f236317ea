//! One `recvmmsg(2)` batch: buffers allocated once, reused every call.
//!
//! `recvmmsg` is the one call of the receive path that no safe crate wraps (rustix has
//! `sendmmsg` only), so it and the zeroed header array are this room's `unsafe`. The
//! `SCM_CREDENTIALS` control messages the kernel writes are parsed from our own byte buffers
//! with safe code ([`parse_creds`]).

use std::io;
use std::mem;
use std::os::fd::RawFd;

use super::{BATCH, DGRAM_BUF};

/// Room for one `SCM_CREDENTIALS` control message, 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_ROOM]);

const CMSG_ROOM: usize = 64;

/// Buffers for one `recvmmsg` call, allocated once and reused: no allocation per datagram.
/// Source addresses are not asked for: identity is the attested or claimed pid, and the
/// kernel's copy of each address costs about 45 ns per datagram here.
pub struct RecvBatch {
    bufs: Box<[[u8; DGRAM_BUF]; BATCH]>,
    cmsgs: Box<[CmsgBuf; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    got: usize,
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
            iovs: Box::new([iov; BATCH]),
            hdrs: Box::new(zeroed_hdrs),
            got: 0,
        }
    }

    /// One non-blocking `recvmmsg` on any datagram socket `fd` (used by the benchmark's bare
    /// receiver, so it makes exactly the observer's calls): with `creds`, room for
    /// `SCM_CREDENTIALS`, else the datagrams alone.
    ///
    /// # Errors
    /// The `recvmmsg` error.
    pub fn recv_raw(&mut self, fd: RawFd, creds: bool) -> io::Result<usize> {
        self.recv(fd, creds)
    }

    pub(super) fn recv(&mut self, fd: RawFd, creds: bool) -> io::Result<usize> {
        self.got = 0;
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: DGRAM_BUF,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = std::ptr::addr_of_mut!(self.iovs[i]);
            h.msg_iovlen = 1;
            h.msg_flags = 0;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            if creds {
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
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.got = usize::try_from(n).unwrap_or(0);
        Ok(self.got)
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

    /// The kernel-attested `(pid, uid)` of datagram `i` (Unix listener), if present.
    #[must_use]
    pub fn creds(&self, i: usize) -> Option<(u32, u32)> {
        let h = &self.hdrs[i].msg_hdr;
        if h.msg_control.is_null() || h.msg_flags & libc::MSG_CTRUNC != 0 {
            return None;
        }
        #[allow(
            clippy::unnecessary_cast,
            reason = "msg_controllen is size_t on glibc, socklen_t on musl"
        )]
        let len = (h.msg_controllen as usize).min(CMSG_ROOM);
        parse_creds(&self.cmsgs[i].0[..len])
    }
}

/// Finds `SCM_CREDENTIALS` in a control buffer the kernel filled in and returns `(pid, uid)`.
///
/// Linux's layout (`struct cmsghdr`): `cmsg_len: size_t`, `cmsg_level: int`, `cmsg_type:
/// int`, then the data aligned to `size_t`; each message padded to that alignment. Read from
/// the bytes, so nothing here trusts a pointer.
#[must_use]
pub fn parse_creds(buf: &[u8]) -> Option<(u32, u32)> {
    const W: usize = mem::size_of::<usize>();
    const HDR: usize = (W + 8).div_ceil(W) * W;
    let int_at = |at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let mut at = 0;
    while at + HDR <= buf.len() {
        let len = usize::from_ne_bytes(buf.get(at..at + W)?.try_into().ok()?);
        if len < HDR || at + len > buf.len() {
            return None;
        }
        let (level, kind) = (int_at(at + W)?, int_at(at + W + 4)?);
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS && len >= HDR + 12 {
            let pid = int_at(at + HDR)?;
            let uid = int_at(at + HDR + 4)?;
            return Some((pid as u32, uid as u32));
        }
        at += len.div_ceil(W) * W;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn credentials_parsed_from_the_kernels_bytes() {
        let (a, b) = UnixDatagram::pair().unwrap();
        rustix::net::sockopt::set_socket_passcred(&b, true).unwrap();
        rustix::net::send(&a, b"hello", rustix::net::SendFlags::empty()).unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(b.as_raw_fd(), true).unwrap(), 1);
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
