//! The listener room: the Unix datagram socket (kernel-attested senders) and UDP sockets, read
//! in batches with `recvmmsg(2)`.
//!
//! Every kind of listener is one [`Listener`]: the daemon drains them all through the same
//! path ([`Listener::try_recv`] into one [`RecvBatch`], then [`Listener::origin`] for each
//! datagram), so a rule about reading (batch bounds, error counting) is written once. Socket
//! options go through `rustix`; only `recvmmsg` and `SO_MEMINFO`, which no safe crate wraps,
//! are raw calls.

pub mod activation;
mod batch;
pub mod pace;
pub mod steer;
mod udp;
mod unix;
pub mod workers;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;

pub use batch::{arrival_time, parse_creds, parse_rights, parse_sockaddr, parse_stamp, RecvBatch};
pub use pace::Pace;
pub use udp::UdpListener;
pub use unix::UnixListener;
pub use workers::Workers;

use crate::tracker::Origin;

/// Datagrams fetched by one `recvmmsg` call.
pub const BATCH: usize = 64;
/// Receive buffer per datagram: larger than every valid datagram (32, 60, 64 bytes), so a
/// longer one is seen as too long rather than cut to a valid length.
pub const DGRAM_BUF: usize = 128;
/// Kernel receive buffer asked for on every listener.
pub const RCVBUF: usize = 4 << 20;

/// Why a listener could not be set up; each names the operation and the path or address.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another observer answers on this socket path.
    #[error("socket {} is in use by a running observer (a connect succeeded); stop it or choose another --socket", .0.display())]
    Live(PathBuf),
    /// The path exists and is not a socket; we do not delete other files.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("cannot {op} {what}: {err}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Path or address.
        what: String,
        /// The error.
        err: io::Error,
    },
}

fn io_err(op: &'static str, what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ListenError {
    let what = what.to_string();
    move |err| ListenError::Io { op, what, err }
}

/// Asks for a receive buffer of `bytes`: `SO_RCVBUFFORCE` when privileged, else `SO_RCVBUF`
/// (capped by `net.core.rmem_max`). Best effort: a small buffer only means earlier drops.
fn set_rcvbuf(fd: BorrowedFd<'_>, bytes: usize) {
    use rustix::net::sockopt;
    if sockopt::set_socket_recv_buffer_size_force(fd, bytes).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(fd, bytes);
    }
}

/// Turns on `SO_TIMESTAMPNS`: the kernel stamps each datagram with its receive time, so a
/// batch read later keeps each beat's own time ([`RecvBatch::stamp`]).
///
/// # Errors
/// The `setsockopt` error.
pub(crate) fn set_timestamps(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a plain `int` option read by the kernel from our local for its true size
    // (SO_TIMESTAMPNS has no wrapper in rustix).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Any listener the daemon reads.
#[derive(Debug)]
pub enum Listener {
    /// The Unix datagram socket.
    Unix(UnixListener),
    /// UDP listener number `index` (`udpN` in labels, `Origin::Udp { listener: N }`).
    Udp {
        /// The socket.
        sock: UdpListener,
        /// Its number.
        index: usize,
    },
    /// A UDP listener read by receive workers (`--workers`), its opened batches taken with
    /// [`Workers::take`].
    Workers(Workers),
}

impl Listener {
    /// Receives up to [`BATCH`] datagrams into `batch` (with credentials on the Unix socket).
    ///
    /// # Errors
    /// The `recvmmsg` error; `WouldBlock` when nothing is queued.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        match self {
            Listener::Unix(u) => u.try_recv(batch),
            Listener::Udp { sock, .. } => sock.try_recv(batch),
            // Read by their own threads: nothing to receive here.
            Listener::Workers(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Who sent datagram `i` of the last batch: the kernel-attested pid and uid on the Unix
    /// socket (`None` when the kernel attached no credentials), the listener on UDP, with the
    /// source address where the listener records it ([`UdpListener::record_sources`]).
    #[must_use]
    pub fn origin(&self, batch: &RecvBatch, i: usize) -> Option<Origin> {
        match self {
            Listener::Unix(_) => batch.creds(i).map(|(pid, uid)| Origin::Unix { pid, uid }),
            Listener::Udp { index, .. } => Some(match batch.source(i) {
                Some(source) => Origin::UdpFrom {
                    listener: *index,
                    source,
                },
                None => Origin::Udp { listener: *index },
            }),
            Listener::Workers(w) => Some(Origin::Udp {
                listener: w.index(),
            }),
        }
    }

    /// The label of metrics and event lines: `unix` or `udpN`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Listener::Unix(_) => "unix",
            Listener::Udp { index, .. } => udp_label(*index),
            Listener::Workers(w) => udp_label(w.index()),
        }
    }

    /// Whether a hold-off ([`Pace`]) leaves this listener unread: the Unix socket only, whose
    /// datagrams carry kernel receive times.
    #[must_use]
    pub fn paced(&self) -> bool {
        matches!(self, Listener::Unix(_))
    }

    /// Datagrams the kernel dropped on a full receive queue, where the kernel tells.
    #[must_use]
    pub fn kernel_drops(&self) -> Option<u32> {
        match self {
            Listener::Unix(_) => None,
            Listener::Udp { sock, .. } => sock.kernel_drops().ok(),
            Listener::Workers(w) => w.kernel_drops(),
        }
    }
}

/// `udpN` as a static label (metric labels are `&'static str`).
#[must_use]
pub fn udp_label(index: usize) -> &'static str {
    const LABELS: [&str; 8] = [
        "udp0", "udp1", "udp2", "udp3", "udp4", "udp5", "udp6", "udp7",
    ];
    LABELS.get(index).copied().unwrap_or("udp")
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(u) => u.as_fd(),
            Listener::Udp { sock, .. } => sock.as_fd(),
            Listener::Workers(w) => w.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}
