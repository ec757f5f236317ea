//! The listeners: the Unix datagram socket (kernel-attested senders) and UDP sockets, read in
//! batches with `recvmmsg(2)`.
//!
//! This is the only module of the daemon that talks to the socket API below `std`: `std` has no
//! `recvmmsg`, no `SCM_CREDENTIALS` and no `SO_PASSCRED`. Every `unsafe` block is a syscall or
//! a read of what the kernel wrote into our own buffers.

use std::fs;
use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Datagrams fetched by one `recvmmsg` call.
pub const BATCH: usize = 64;
/// Receive buffer per datagram: larger than every valid datagram (32, 60, 64 bytes), so a
/// longer one is seen as too long rather than cut to a valid length.
pub const DGRAM_BUF: usize = 128;
/// Kernel receive buffer asked for on every listener.
pub const RCVBUF: usize = 4 << 20;

/// Why a listener could not be set up; each names the operation and the path or address.
#[derive(Debug)]
pub enum ListenError {
    /// Another observer answers on this socket path.
    Live(PathBuf),
    /// The path exists and is not a socket; we do not delete other files.
    NotASocket(PathBuf),
    /// A system call failed.
    Io {
        /// What we were doing.
        op: &'static str,
        /// Path or address.
        what: String,
        /// The error.
        err: io::Error,
    },
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenError::Live(p) => write!(
                f,
                "socket {} is in use by a running observer (a connect succeeded); stop it or choose another --socket",
                p.display()
            ),
            ListenError::NotASocket(p) => write!(
                f,
                "{} exists and is not a socket; refusing to replace it",
                p.display()
            ),
            ListenError::Io { op, what, err } => write!(f, "cannot {op} {what}: {err}"),
        }
    }
}

impl std::error::Error for ListenError {}

fn io_err(op: &'static str, what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ListenError {
    let what = what.to_string();
    move |err| ListenError::Io { op, what, err }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `val` outlives the call and its size is passed; the fd is owned by the caller.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::addr_of!(val).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for a large receive buffer: `SO_RCVBUFFORCE` when privileged, else `SO_RCVBUF`
/// (capped by `net.core.rmem_max`). Best effort: a small buffer only means earlier drops.
fn grow_rcvbuf(fd: RawFd) {
    set_rcvbuf(fd, RCVBUF);
}

fn set_rcvbuf(fd: RawFd, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size);
    }
}

/// The Unix datagram listener. Removes its socket file on drop if the file is still the one
/// it created (same device and inode), so a newer observer's socket is never deleted.
#[derive(Debug)]
pub struct UnixListener {
    sock: UnixDatagram,
    path: PathBuf,
    ident: (u64, u64),
}

impl UnixListener {
    /// Binds `path` with permission bits `mode` and `SO_PASSCRED` set.
    ///
    /// A socket file already at `path` is probed with a connect: if an observer answers we
    /// refuse ([`ListenError::Live`]); if nobody does the file is stale and is replaced.
    ///
    /// # Errors
    /// [`ListenError`] naming the failed step.
    pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, ListenError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                let probe = UnixDatagram::unbound()
                    .map_err(io_err("create probe socket for", path.display()))?;
                if probe.connect(path).is_ok() {
                    return Err(ListenError::Live(path.to_path_buf()));
                }
                fs::remove_file(path).map_err(io_err("remove stale socket", path.display()))?;
            }
            Ok(_) => return Err(ListenError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", path.display())(e)),
        }
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                fs::create_dir_all(dir).map_err(io_err("create directory", dir.display()))?;
            }
        }
        // Bind with a restrictive umask so the file never exists with looser bits, then set
        // the exact mode. The daemon is single-threaded at this point.
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixDatagram::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let sock = bound.map_err(io_err("bind socket", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err("set mode of", path.display()))?;
        let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path.display()))?;
        let listener = UnixListener {
            sock,
            path: path.to_path_buf(),
            ident: (meta.dev(), meta.ino()),
        };
        let fd = listener.sock.as_raw_fd();
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
            .map_err(io_err("set SO_PASSCRED on", path.display()))?;
        grow_rcvbuf(fd);
        listener
            .sock
            .set_nonblocking(true)
            .map_err(io_err("set non-blocking", path.display()))?;
        Ok(listener)
    }

    /// The socket path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives up to [`BATCH`] datagrams with their credentials into `batch`.
    ///
    /// # Errors
    /// The `recvmmsg` error; `WouldBlock` when nothing is queued.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.recv(self.sock.as_raw_fd(), true)
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.ident {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// A UDP listener.
#[derive(Debug)]
pub struct UdpListener {
    sock: UdpSocket,
}

impl UdpListener {
    /// Binds `addr`, non-blocking, with a large receive buffer.
    ///
    /// # Errors
    /// [`ListenError::Io`] naming the address.
    pub fn bind(addr: SocketAddr) -> Result<UdpListener, ListenError> {
        let sock = UdpSocket::bind(addr).map_err(io_err("bind UDP", addr))?;
        sock.set_nonblocking(true)
            .map_err(io_err("set non-blocking", addr))?;
        grow_rcvbuf(sock.as_raw_fd());
        Ok(UdpListener { sock })
    }

    /// Asks for a receive buffer of `bytes` instead of [`RCVBUF`] (best effort, as at bind).
    pub fn set_rcvbuf(&self, bytes: usize) {
        set_rcvbuf(self.sock.as_raw_fd(), bytes);
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The kernel's count of datagrams this socket dropped because its receive queue was full
    /// (`SO_MEMINFO`, read on demand: no cost per datagram). Beats lost before we could read
    /// them show up here.
    ///
    /// # Errors
    /// The `getsockopt` error.
    pub fn kernel_drops(&self) -> io::Result<u32> {
        let mut info = [0u32; 16];
        let mut len = mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into our local array and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let at = libc::SK_MEMINFO_DROPS as usize;
        if (len as usize) < (at + 1) * 4 {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        Ok(info[at])
    }

    /// Receives up to [`BATCH`] datagrams with their source addresses into `batch`.
    ///
    /// # Errors
    /// The `recvmmsg` error; `WouldBlock` when nothing is queued.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.recv(self.sock.as_raw_fd(), false)
    }
}

impl AsRawFd for UdpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Room for one `SCM_CREDENTIALS` control message, 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

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
        // SAFETY: the all-zero bit pattern is valid for these plain C structs (null pointers,
        // zero lengths); every pointer is set before use in `recv`.
        let zeroed_hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zeroed_iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        RecvBatch {
            bufs: Box::new([[0u8; DGRAM_BUF]; BATCH]),
            cmsgs: Box::new([CmsgBuf([0u8; 64]); BATCH]),
            iovs: Box::new(zeroed_iovs),
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

    fn recv(&mut self, fd: RawFd, creds: bool) -> io::Result<usize> {
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
                h.msg_controllen = self.cmsgs[i].0.len() as _;
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
        self.got = n as usize;
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

    /// The kernel-attested `(pid, uid)` of datagram `i` (Unix listener), if present.
    #[must_use]
    pub fn creds(&self, i: usize) -> Option<(u32, u32)> {
        let h = &self.hdrs[i].msg_hdr;
        if h.msg_control.is_null() || h.msg_flags & libc::MSG_CTRUNC != 0 {
            return None;
        }
        // SAFETY: `h` is a header the kernel filled in; CMSG_FIRSTHDR/NXTHDR only walk within
        // msg_control[..msg_controllen], which is our own buffer.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(h) };
        while !cmsg.is_null() {
            // SAFETY: non-null cmsg from CMSG_FIRSTHDR/NXTHDR lies within our buffer.
            let c = unsafe { &*cmsg };
            if c.cmsg_level == libc::SOL_SOCKET
                && c.cmsg_type == libc::SCM_CREDENTIALS
                // SAFETY: CMSG_LEN is pure arithmetic.
                && c.cmsg_len as usize >= unsafe { libc::CMSG_LEN(mem::size_of::<libc::ucred>() as u32) } as usize
            {
                // SAFETY: the length check above guarantees a whole ucred follows the header;
                // read_unaligned because the data is only 4-byte aligned by contract.
                let cred: libc::ucred =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                return Some((cred.pid as u32, cred.uid));
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            cmsg = unsafe { libc::CMSG_NXTHDR(h, cmsg) };
        }
        None
    }
}
