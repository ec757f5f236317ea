//! The async form over embedded-nal-async's UDP traits.
//!
//! [`ConnectedTransport`] wraps a [`ConnectedUdp`] (from `UdpStack::connect`);
//! [`UnconnectedTransport`] wraps an [`UnconnectedUdp`] with the local and remote addresses
//! every send names. Errors map through `embedded_io_async::Error::kind`.
//!
//! The traits do not say whether a failed send left the device, nor that a send completes in
//! one poll. Only kinds that name a problem found before anything is queued (no address, not
//! connected, invalid input) map to certain refusals; timeouts, interruptions, allocation
//! failures and unknown kinds map to [`StackError::Uncertain`] / [`StackError::Other`], which
//! consume the beat's nonce and IV.

use core::net::SocketAddr;
use embedded_io_async::{Error as _, ErrorKind};

use embedded_nal_async::{ConnectedUdp, UnconnectedUdp};

use crate::error::StackError;
use crate::transport::AsyncTransport;

/// Maps an embedded-io error kind to a [`StackError`].
///
/// `ConnectionRefused` is not a certain refusal: stacks report an ICMP error caused by an
/// *earlier* datagram on a later send, which may itself have been queued.
#[must_use]
pub fn map_kind(kind: ErrorKind) -> StackError {
    match kind {
        ErrorKind::OutOfMemory | ErrorKind::Interrupted | ErrorKind::TimedOut => {
            StackError::Uncertain
        }
        ErrorKind::AddrNotAvailable | ErrorKind::NotFound | ErrorKind::NotConnected => {
            StackError::NoRoute
        }
        ErrorKind::InvalidInput => StackError::TooLarge,
        _ => StackError::Other,
    }
}

/// A connected embedded-nal-async socket as an [`AsyncTransport`].
pub struct ConnectedTransport<T: ConnectedUdp>(pub T);

impl<T: ConnectedUdp> AsyncTransport for ConnectedTransport<T> {
    async fn send(&mut self, datagram: &[u8]) -> Result<(), StackError> {
        self.0.send(datagram).await.map_err(|e| map_kind(e.kind()))
    }
}

/// An unconnected embedded-nal-async socket and the addresses to send with.
pub struct UnconnectedTransport<T: UnconnectedUdp> {
    /// The socket.
    pub socket: T,
    /// The local address to send from (may be unspecified: `0.0.0.0:0`).
    pub local: SocketAddr,
    /// The observer.
    pub remote: SocketAddr,
}

impl<T: UnconnectedUdp> AsyncTransport for UnconnectedTransport<T> {
    async fn send(&mut self, datagram: &[u8]) -> Result<(), StackError> {
        self.socket
            .send(self.local, self.remote, datagram)
            .await
            .map_err(|e| map_kind(e.kind()))
    }
}
