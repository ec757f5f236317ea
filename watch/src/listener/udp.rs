//! A UDP listener: the pid is what the frame claims (authenticated by a key in secure mode).

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use super::batch::Want;
use super::{io_err, set_rcvbuf, ListenError, RecvBatch, RCVBUF};

/// A UDP listener.
#[derive(Debug)]
pub struct UdpListener {
    sock: UdpSocket,
    /// Ask the kernel for each datagram's source address (plaintext listeners, whose
    /// origin checks need it).
    sources: bool,
}

impl UdpListener {
    /// Binds `addr`, non-blocking, with a large receive buffer.
    ///
    /// # Errors
    /// [`ListenError::Io`] naming the address.
    pub fn bind(addr: SocketAddr) -> Result<UdpListener, ListenError> {
        let sock = UdpSocket::bind(addr).map_err(io_err("bind UDP", addr))?;
        UdpListener::adopt(sock)
    }

    /// Binds `addr` with `SO_REUSEPORT`, so receive workers can bind siblings beside it
    /// ([`super::workers::siblings`]); otherwise as [`UdpListener::bind`].
    ///
    /// # Errors
    /// [`ListenError::Io`] naming the address.
    pub fn bind_shared(addr: SocketAddr) -> Result<UdpListener, ListenError> {
        use rustix::net::{bind, socket_with, sockopt, AddressFamily, SocketFlags, SocketType};
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        let fd = socket_with(family, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
            .map_err(|e| io_err("open UDP socket for", addr)(e.into()))?;
        sockopt::set_socket_reuseport(&fd, true)
            .map_err(|e| io_err("set SO_REUSEPORT on", addr)(e.into()))?;
        bind(&fd, &addr).map_err(|e| io_err("bind UDP", addr)(e.into()))?;
        UdpListener::adopt(UdpSocket::from(fd))
    }

    /// Takes a bound socket (socket activation): non-blocking, large receive buffer. No kernel
    /// receive times: a UDP socket is read as soon as it is readable (its queue is never held,
    /// see [`super::Pace`]), and the stamp would cost every datagram its control message.
    ///
    /// # Errors
    /// [`ListenError::Io`] naming the address.
    pub fn adopt(sock: UdpSocket) -> Result<UdpListener, ListenError> {
        let what = sock
            .local_addr()
            .map_or_else(|_| "UDP socket".to_string(), |a| a.to_string());
        sock.set_nonblocking(true)
            .map_err(io_err("set non-blocking", &what))?;
        set_rcvbuf(sock.as_fd(), RCVBUF);
        Ok(UdpListener {
            sock,
            sources: false,
        })
    }

    /// Receives each datagram's source address from now on, for the tracker's origin checks
    /// of plaintext frames ([`crate::tracker::Origin::UdpFrom`]). Off by default: secure
    /// listeners authenticate by key and do not pay for the address copy.
    pub fn record_sources(&mut self) {
        self.sources = true;
    }

    /// Asks for a receive buffer of `bytes` instead of [`RCVBUF`] (best effort, as at bind).
    pub fn set_rcvbuf(&self, bytes: usize) {
        set_rcvbuf(self.sock.as_fd(), bytes);
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
        // SAFETY: the kernel writes at most `len` bytes into our local array and updates `len`
        // (SO_MEMINFO has no wrapper in rustix or nix).
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

    /// Receives up to [`super::BATCH`] datagrams into `batch`.
    ///
    /// # Errors
    /// The `recvmmsg` error; `WouldBlock` when nothing is queued.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.recv(
            self.sock.as_raw_fd(),
            Want {
                control: false,
                source: self.sources,
            },
        )
    }
}

impl AsFd for UdpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for UdpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
