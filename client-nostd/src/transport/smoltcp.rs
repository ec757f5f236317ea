//! smoltcp's `socket::udp::Socket` as a [`Transport`].
//!
//! [`SmoltcpTransport::try_send`] copies the datagram into the socket's transmit buffer; it
//! leaves the device on the next `Interface::poll`. "Accepted" (and so committed) therefore
//! means "queued in the socket", which is the point past which a retry would reuse an IV that
//! may reach the wire.

use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;

use crate::error::StackError;
use crate::transport::Transport;

/// Maps smoltcp's UDP send error.
#[must_use]
pub fn map_send_error(socket_port: u16, e: udp::SendError) -> StackError {
    match e {
        udp::SendError::BufferFull => StackError::WouldBlock,
        udp::SendError::Unaddressable if socket_port == 0 => StackError::NotBound,
        udp::SendError::Unaddressable => StackError::NoRoute,
    }
}

/// A bound smoltcp UDP socket and the observer's endpoint.
pub struct SmoltcpTransport<'s, 'b> {
    socket: &'s mut udp::Socket<'b>,
    remote: IpEndpoint,
}

impl<'s, 'b> SmoltcpTransport<'s, 'b> {
    /// Wraps a socket (already bound to a local port) sending to `remote`.
    pub fn new(socket: &'s mut udp::Socket<'b>, remote: IpEndpoint) -> Self {
        SmoltcpTransport { socket, remote }
    }
}

impl Transport for SmoltcpTransport<'_, '_> {
    fn try_send(&mut self, datagram: &[u8]) -> Result<(), StackError> {
        if datagram.len() > self.socket.payload_send_capacity() {
            return Err(StackError::TooLarge);
        }
        let port = self.socket.endpoint().port;
        self.socket
            .send_slice(datagram, self.remote)
            .map_err(|e| map_send_error(port, e))
    }
}
