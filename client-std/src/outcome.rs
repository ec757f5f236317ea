//! What became of a beat: [`BeatOutcome`], and the classifier that turns a send error into one.
//!
//! The split matters to callers: a *drop* is an expected, transient condition of a datagram
//! transport (the observer is absent or restarting, its queue is full) that the agent should
//! ride out by beating again later; a *failure* is something the caller got wrong or the OS
//! refused for a reason no retry will fix (a `Stall` status, a closed descriptor, `EPERM` from
//! a firewall...). Neither ever blocks, allocates or panics.

use std::fmt;
use std::io;

/// The result of [`crate::Varta::beat`].
///
/// Marked `#[must_use]`: a heartbeat library whose errors are silently ignored is the failure
/// mode it exists to prevent. `let _ = v.beat(..)` is the explicit way to not care.
#[must_use = "a beat can be dropped or fail; check it or discard it explicitly"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatOutcome {
    /// The kernel accepted the datagram (which says nothing about an observer reading it).
    Sent,
    /// The datagram was not sent, for a transient reason; the frame's nonce and AEAD counter
    /// were not consumed, so the next beat reuses them.
    Dropped(DropReason),
    /// The datagram was not sent and retrying will not help.
    Failed(BeatError),
}

impl BeatOutcome {
    /// Whether the datagram was handed to the kernel.
    #[must_use]
    pub const fn is_sent(&self) -> bool {
        matches!(self, BeatOutcome::Sent)
    }

    /// The drop reason, if the beat was dropped.
    #[must_use]
    pub const fn dropped(&self) -> Option<DropReason> {
        match self {
            BeatOutcome::Dropped(r) => Some(*r),
            _ => None,
        }
    }
}

impl fmt::Display for BeatOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeatOutcome::Sent => f.write_str("sent"),
            BeatOutcome::Dropped(r) => write!(f, "dropped: {r}"),
            BeatOutcome::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// Why a beat was dropped. Each variant names the condition the kernel reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The observer's receive queue (or our send buffer) is full: `EAGAIN`/`EWOULDBLOCK`
    /// (`WouldBlock`) or `ENOBUFS`. On a Unix socket the default queue holds only
    /// `net.unix.max_dgram_qlen` + 1 = 11 datagrams; raise that sysctl for bursty agents.
    KernelQueueFull,
    /// Nobody is listening: `ENOENT` (`NotFound`, the socket path does not exist) or
    /// `ECONNREFUSED` (`ConnectionRefused`: the path exists but nothing is bound to it, the
    /// connected peer just closed, or a UDP port is unreachable).
    NoObserver,
    /// The connection we had is gone: `ECONNRESET`, `ENOTCONN` or `EPIPE` (`ConnectionReset`,
    /// `NotConnected`, `BrokenPipe`). A Unix datagram socket whose observer closed reports
    /// this from the second send on; [`crate::Varta::reconnect`] cures it.
    PeerGone,
    /// `ENOSPC` (`StorageFull`): a transport backed by storage is full.
    StorageFull,
}

impl DropReason {
    /// A stable snake_case name, for logs and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::KernelQueueFull => "kernel_queue_full",
            DropReason::NoObserver => "no_observer",
            DropReason::PeerGone => "peer_gone",
            DropReason::StorageFull => "storage_full",
        }
    }

    /// Whether making a new connection can cure this drop (used by
    /// [`crate::Varta::set_reconnect_after`]). A full queue is not cured by reconnecting.
    #[must_use]
    pub const fn reconnect_may_help(self) -> bool {
        matches!(self, DropReason::NoObserver | DropReason::PeerGone)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::KernelQueueFull => "kernel queue full",
            DropReason::NoObserver => "no observer listening",
            DropReason::PeerGone => "observer connection gone",
            DropReason::StorageFull => "storage full",
        })
    }
}

/// A beat that failed for good: the OS error number, when there is one, and its kind.
///
/// `Copy` and allocation-free, unlike [`io::Error`]; [`BeatError::to_io_error`] converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeatError {
    /// The raw OS error number (`errno`), if the error came from a system call.
    pub errno: Option<i32>,
    /// The error's kind.
    pub kind: io::ErrorKind,
}

impl BeatError {
    /// The error of a beat whose arguments break a frame rule (a `Stall` status, pid 0 or 1):
    /// `EINVAL`, [`io::ErrorKind::InvalidInput`].
    pub const INVALID_INPUT: BeatError = BeatError {
        errno: Some(libc::EINVAL),
        kind: io::ErrorKind::InvalidInput,
    };

    /// Captures an [`io::Error`]'s errno and kind.
    #[must_use]
    pub fn from_io(err: &io::Error) -> BeatError {
        BeatError {
            errno: err.raw_os_error(),
            kind: err.kind(),
        }
    }

    /// An equivalent [`io::Error`]: the OS error for `errno`, else a bare error of `kind`
    /// (neither allocates).
    #[must_use]
    pub fn to_io_error(&self) -> io::Error {
        match self.errno {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::from(self.kind),
        }
    }
}

impl fmt::Display for BeatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // io::Error's Display already names the errno ("... (os error 22)").
        write!(f, "{}", self.to_io_error())
    }
}

impl std::error::Error for BeatError {}

impl From<BeatError> for io::Error {
    fn from(e: BeatError) -> io::Error {
        e.to_io_error()
    }
}

/// Classifies the error of a datagram send into a [`BeatOutcome`].
///
/// The raw errno decides when there is one (so `ENOBUFS` and `ENOSPC` are recognised on every
/// toolchain); otherwise the [`io::ErrorKind`] does, which is how errors built by a custom
/// [`crate::BeatTransport`] are classified. See [`DropReason`] for the mapping; everything
/// else is [`BeatOutcome::Failed`].
pub fn classify_send_error(err: &io::Error) -> BeatOutcome {
    let reason = match err.raw_os_error() {
        Some(code) => match code {
            libc::EAGAIN | libc::ENOBUFS => Some(DropReason::KernelQueueFull),
            libc::ENOENT | libc::ECONNREFUSED => Some(DropReason::NoObserver),
            libc::ECONNRESET | libc::ENOTCONN | libc::EPIPE => Some(DropReason::PeerGone),
            libc::ENOSPC => Some(DropReason::StorageFull),
            _ => None,
        },
        None => match err.kind() {
            io::ErrorKind::WouldBlock => Some(DropReason::KernelQueueFull),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                Some(DropReason::NoObserver)
            }
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
            | io::ErrorKind::BrokenPipe => Some(DropReason::PeerGone),
            _ => None,
        },
    };
    match reason {
        Some(r) => BeatOutcome::Dropped(r),
        None => BeatOutcome::Failed(BeatError::from_io(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> BeatOutcome {
        classify_send_error(&io::Error::from_raw_os_error(code))
    }

    #[test]
    fn errno_mapping() {
        use DropReason::*;
        assert_eq!(os(libc::EAGAIN), BeatOutcome::Dropped(KernelQueueFull));
        assert_eq!(os(libc::EWOULDBLOCK), BeatOutcome::Dropped(KernelQueueFull));
        assert_eq!(os(libc::ENOBUFS), BeatOutcome::Dropped(KernelQueueFull));
        assert_eq!(os(libc::ENOENT), BeatOutcome::Dropped(NoObserver));
        assert_eq!(os(libc::ECONNREFUSED), BeatOutcome::Dropped(NoObserver));
        assert_eq!(os(libc::ECONNRESET), BeatOutcome::Dropped(PeerGone));
        assert_eq!(os(libc::ENOTCONN), BeatOutcome::Dropped(PeerGone));
        assert_eq!(os(libc::EPIPE), BeatOutcome::Dropped(PeerGone));
        assert_eq!(os(libc::ENOSPC), BeatOutcome::Dropped(StorageFull));
        assert_eq!(
            os(libc::EBADF),
            BeatOutcome::Failed(BeatError {
                errno: Some(libc::EBADF),
                // The kind std assigns to EBADF, not a hard-coded guess of std's table.
                kind: io::Error::from_raw_os_error(libc::EBADF).kind(),
            })
        );
    }

    #[test]
    fn kind_mapping_without_errno() {
        use DropReason::*;
        let k = |kind: io::ErrorKind| classify_send_error(&io::Error::from(kind));
        assert_eq!(
            k(io::ErrorKind::WouldBlock),
            BeatOutcome::Dropped(KernelQueueFull)
        );
        assert_eq!(k(io::ErrorKind::NotFound), BeatOutcome::Dropped(NoObserver));
        assert_eq!(
            k(io::ErrorKind::ConnectionRefused),
            BeatOutcome::Dropped(NoObserver)
        );
        assert_eq!(
            k(io::ErrorKind::ConnectionReset),
            BeatOutcome::Dropped(PeerGone)
        );
        assert_eq!(
            k(io::ErrorKind::NotConnected),
            BeatOutcome::Dropped(PeerGone)
        );
        assert_eq!(k(io::ErrorKind::BrokenPipe), BeatOutcome::Dropped(PeerGone));
        assert_eq!(
            k(io::ErrorKind::PermissionDenied),
            BeatOutcome::Failed(BeatError {
                errno: None,
                kind: io::ErrorKind::PermissionDenied
            })
        );
    }

    #[test]
    fn beat_error_round_trips_through_io_error() {
        let e = BeatError::from_io(&io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(e.errno, Some(libc::EPERM));
        assert_eq!(e.to_io_error().raw_os_error(), Some(libc::EPERM));
        assert_eq!(e.to_io_error().kind(), io::ErrorKind::PermissionDenied);
        let bare = BeatError {
            errno: None,
            kind: io::ErrorKind::TimedOut,
        };
        assert_eq!(bare.to_io_error().kind(), io::ErrorKind::TimedOut);
        assert_eq!(bare.to_io_error().raw_os_error(), None);
        assert_eq!(
            BeatError::INVALID_INPUT.to_io_error().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
