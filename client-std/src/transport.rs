//! Transports: how a datagram reaches the observer. The thin I/O shell around the session.
//!
//! Every built-in transport is a *connected*, *non-blocking* datagram socket: a send either
//! hands the whole datagram to the kernel at once or fails with an errno that
//! [`crate::classify_send_error`] turns into a drop or a failure. Nothing here allocates after
//! the transport was built (the observer's address is resolved and stored once), so
//! reconnecting is allocation-free too.

use std::io;
#[cfg(feature = "udp")]
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// A way to deliver heartbeat datagrams; plug your own into [`crate::Varta::with_transport`].
///
/// Contract, which the built-in transports keep and [`crate::Varta`] relies on:
///
/// * [`BeatTransport::send`] never blocks. `Ok(())` means the whole datagram was handed on;
///   an error is classified by [`crate::classify_send_error`] (return `WouldBlock` when
///   full, `ConnectionRefused`/`NotFound` when nobody listens, `NotConnected` when the peer
///   went away).
/// * [`BeatTransport::reconnect`] replaces the connection (the observer restarted; a forked
///   child must not share its parent's socket). On error the old connection may remain.
/// * Neither allocates if the beat path is to stay allocation-free.
pub trait BeatTransport {
    /// Hands one datagram (32, 60 or 64 bytes) to the transport without blocking.
    ///
    /// # Errors
    /// Whatever the underlying send reported.
    fn send(&mut self, datagram: &[u8]) -> io::Result<()>;

    /// Drops the current connection and makes a new one to the same observer.
    ///
    /// # Errors
    /// Whatever creating or connecting the new socket reported.
    fn reconnect(&mut self) -> io::Result<()>;
}

impl<T: BeatTransport + ?Sized> BeatTransport for &mut T {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        (**self).send(datagram)
    }
    fn reconnect(&mut self) -> io::Result<()> {
        (**self).reconnect()
    }
}

impl<T: BeatTransport + ?Sized> BeatTransport for Box<T> {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        (**self).send(datagram)
    }
    fn reconnect(&mut self) -> io::Result<()> {
        (**self).reconnect()
    }
}

/// A datagram send is all or nothing; a short count would mean a broken socket layer.
fn whole(sent: usize, len: usize) -> io::Result<()> {
    if sent == len {
        Ok(())
    } else {
        Err(io::Error::from(io::ErrorKind::WriteZero))
    }
}

/// Retries a send interrupted by a signal. A non-blocking datagram send cannot really be
/// interrupted twice in a row; the bound keeps a pathological signal storm from spinning.
fn retry_eintr(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted && tries < 3 => tries += 1,
            r => return r,
        }
    }
}

/// A connected, non-blocking Unix datagram socket to the observer's socket path.
#[derive(Debug)]
pub struct UdsTransport {
    path: PathBuf,
    socket: UnixDatagram,
}

fn open_uds(path: &Path) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    socket.connect(path)?;
    Ok(socket)
}

impl UdsTransport {
    /// Connects to the observer bound at `path`.
    ///
    /// # Errors
    /// Socket creation failed, or connecting did: `NotFound` (no such path),
    /// `ConnectionRefused` (nothing bound there), `PermissionDenied`, an over-long path...
    pub fn connect(path: impl AsRef<Path>) -> io::Result<UdsTransport> {
        let path = path.as_ref().to_path_buf();
        let socket = open_uds(&path)?;
        Ok(UdsTransport { path, socket })
    }

    /// The observer's socket path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket (e.g. to read its local address or tune its send buffer).
    #[must_use]
    pub fn socket(&self) -> &UnixDatagram {
        &self.socket
    }
}

impl BeatTransport for UdsTransport {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        whole(retry_eintr(|| self.socket.send(datagram))?, datagram.len())
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.socket = open_uds(&self.path)?;
        Ok(())
    }
}

/// A connected, non-blocking UDP socket to the observer's address.
#[cfg(feature = "udp")]
#[derive(Debug)]
pub struct UdpTransport {
    peer: SocketAddr,
    socket: UdpSocket,
}

#[cfg(feature = "udp")]
fn open_udp(peer: SocketAddr) -> io::Result<UdpSocket> {
    // A `SocketAddr` (not a string) so that binding resolves nothing and allocates nothing.
    let local = match peer {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_nonblocking(true)?;
    socket.connect(peer)?;
    Ok(socket)
}

#[cfg(feature = "udp")]
impl UdpTransport {
    /// Resolves `addr` (once; the first address that connects wins) and connects to it.
    ///
    /// # Errors
    /// Resolution found no address, or socket creation / connecting failed.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<UdpTransport> {
        let mut last = io::Error::new(
            io::ErrorKind::InvalidInput,
            "observer address resolved to nothing",
        );
        for peer in addr.to_socket_addrs()? {
            match open_udp(peer) {
                Ok(socket) => return Ok(UdpTransport { peer, socket }),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The observer's address.
    #[must_use]
    pub const fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The socket (e.g. to read its local address).
    #[must_use]
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

#[cfg(feature = "udp")]
impl BeatTransport for UdpTransport {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        whole(retry_eintr(|| self.socket.send(datagram))?, datagram.len())
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.socket = open_udp(self.peer)?;
        Ok(())
    }
}

/// A connected, non-blocking UDP socket carrying sealed datagrams: the transport of
/// [`crate::Varta::connect_secure_udp`] and its agent-key and master-key forms. The sealing is
/// the client's ([`vlp_core::sender::Sender`]); this type names the transport as the
/// published 0.2 API does (`Varta::<SecureUdpTransport>::connect_secure_udp`).
#[cfg(feature = "secure-udp")]
#[derive(Debug)]
pub struct SecureUdpTransport(UdpTransport);

#[cfg(feature = "secure-udp")]
impl SecureUdpTransport {
    /// Resolves `addr` and connects to it, as [`UdpTransport::connect`].
    ///
    /// # Errors
    /// As [`UdpTransport::connect`].
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<SecureUdpTransport> {
        UdpTransport::connect(addr).map(SecureUdpTransport)
    }

    /// The UDP transport underneath.
    #[must_use]
    pub const fn udp(&self) -> &UdpTransport {
        &self.0
    }

    /// The UDP transport underneath, by value.
    #[must_use]
    pub fn into_inner(self) -> UdpTransport {
        self.0
    }
}

#[cfg(feature = "secure-udp")]
impl BeatTransport for SecureUdpTransport {
    #[inline]
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        self.0.send(datagram)
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.0.reconnect()
    }
}

/// The built-in transports, as one type, so that `Varta` (without a type argument) names a
/// client whichever `connect*` made it.
#[derive(Debug)]
pub enum Transport {
    /// Unix datagram socket.
    Uds(UdsTransport),
    /// UDP socket.
    #[cfg(feature = "udp")]
    Udp(UdpTransport),
}

impl BeatTransport for Transport {
    #[inline]
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        match self {
            Transport::Uds(t) => t.send(datagram),
            #[cfg(feature = "udp")]
            Transport::Udp(t) => t.send(datagram),
        }
    }

    fn reconnect(&mut self) -> io::Result<()> {
        match self {
            Transport::Uds(t) => t.reconnect(),
            #[cfg(feature = "udp")]
            Transport::Udp(t) => t.reconnect(),
        }
    }
}
