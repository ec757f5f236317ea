//! Socket activation: listeners handed over by systemd (`LISTEN_FDS`, `LISTEN_PID`; see
//! `sd_listen_fds(3)`), so datagrams queued while the observer restarts are read after it.
//!
//! Each descriptor is recognised by what it is (a datagram socket, Unix or IP), not by its
//! `LISTEN_FDNAMES` name, so a unit file cannot mislabel one. The Unix socket's unit needs
//! `PassCredentials=yes`: the kernel attaches a sender's credentials only to datagrams sent
//! while `SO_PASSCRED` is on, and those queued before we start are otherwise refused
//! (`no_credentials`).

use std::net::UdpSocket;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

use rustix::net::{AddressFamily, SocketType};

use super::ListenError;

/// Sockets passed by the service manager.
#[derive(Debug, Default)]
pub struct Activated {
    /// The Unix datagram socket, if one was passed.
    pub unix: Option<UnixDatagram>,
    /// UDP sockets, in the order passed.
    pub udp: Vec<UdpSocket>,
}

fn refuse(fd: i32, why: &str) -> ListenError {
    ListenError::Io {
        op: "use socket-activated descriptor",
        what: fd.to_string(),
        err: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string()),
    }
}

/// Takes the descriptors passed for this process (none when `LISTEN_PID` is not ours), and
/// unsets the variables so children do not see them. Call once, before other threads read
/// the environment.
///
/// # Errors
/// [`ListenError::Io`] for a malformed `LISTEN_FDS` or a descriptor that is no datagram socket
/// (or a second Unix socket).
pub fn take() -> Result<Activated, ListenError> {
    let fds = sd_notify::listen_fds().map_err(|err| ListenError::Io {
        op: "read",
        what: "LISTEN_FDS".into(),
        err,
    })?;
    let mut out = Activated::default();
    for raw in fds {
        // SAFETY: sd_notify::listen_fds yields each descriptor systemd passed to this process
        // (LISTEN_PID is ours) exactly once, on the first call; nothing else owns them.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let kind =
            rustix::net::sockopt::socket_type(&fd).map_err(|_| refuse(raw, "not a socket"))?;
        if kind != SocketType::DGRAM {
            return Err(refuse(raw, "not a datagram socket"));
        }
        let family = rustix::net::getsockname(&fd)
            .map_err(|_| refuse(raw, "no address"))?
            .address_family();
        if family == AddressFamily::UNIX {
            if out.unix.is_some() {
                return Err(refuse(raw, "a second Unix socket"));
            }
            out.unix = Some(UnixDatagram::from(fd));
        } else if family == AddressFamily::INET || family == AddressFamily::INET6 {
            out.udp.push(UdpSocket::from(fd));
        } else {
            return Err(refuse(raw, "neither a Unix nor a UDP socket"));
        }
    }
    Ok(out)
}
