//! The blocking / `nb` form over embedded-nal's [`UdpClientStack`].
//!
//! ```text
//! let mut socket = nal::connect(&mut stack, observer)?;
//! let mut t = NalTransport::new(&mut stack, &mut socket);
//! nb::block!(nal::nb_result(agent.try_beat(&mut t, Status::Ok, 0, now)))?; // or handle WouldBlock
//! ```
//!
//! A `WouldBlock` from the stack consumes nothing, so `nb::block!` (which repeats the call with
//! the same arguments) re-prepares the same nonce and IV until the stack takes it. Any other
//! send error (`nb::Error::Other`, which says nothing about whether the datagram was queued)
//! is [`StackError::Other`] and consumes the beat's nonce and IV. Only block if
//! the stack makes progress on its own (an offloaded modem stack); a stack polled by the same
//! thread (smoltcp) must be polled between attempts instead.

use core::net::SocketAddr;

use embedded_nal::UdpClientStack;

use crate::error::{Error, StackError};
use crate::transport::Transport;

/// Opens a UDP socket on `stack` and connects it to `remote` (the observer).
///
/// # Errors
/// [`Error::Socket`] or [`Error::Connect`] with [`StackError::WouldBlock`] or
/// [`StackError::Other`] (embedded-nal errors carry no kind).
pub fn connect<S: UdpClientStack + ?Sized>(
    stack: &mut S,
    remote: SocketAddr,
) -> Result<S::UdpSocket, Error> {
    let mut socket = stack
        .socket()
        .map_err(|_| Error::Socket(StackError::Other))?;
    stack
        .connect(&mut socket, remote)
        .map_err(|_| Error::Connect(StackError::Other))?;
    Ok(socket)
}

/// A connected embedded-nal socket as a [`Transport`].
pub struct NalTransport<'a, S: UdpClientStack + ?Sized> {
    stack: &'a mut S,
    socket: &'a mut S::UdpSocket,
}

impl<'a, S: UdpClientStack + ?Sized> NalTransport<'a, S> {
    /// Wraps a stack and a socket [`connect`]ed to the observer.
    pub fn new(stack: &'a mut S, socket: &'a mut S::UdpSocket) -> Self {
        NalTransport { stack, socket }
    }
}

impl<S: UdpClientStack + ?Sized> Transport for NalTransport<'_, S> {
    fn try_send(&mut self, datagram: &[u8]) -> Result<(), StackError> {
        match self.stack.send(self.socket, datagram) {
            Ok(()) => Ok(()),
            Err(nb::Error::WouldBlock) => Err(StackError::WouldBlock),
            Err(nb::Error::Other(_)) => Err(StackError::Other),
        }
    }
}

/// Turns a send result into an `nb::Result`, so `nb::block!` retries exactly the refusals that
/// can clear ([`Error::is_would_block`]).
///
/// # Errors
/// `nb::Error::WouldBlock` for retryable refusals, `nb::Error::Other` for the rest.
pub fn nb_result(r: Result<(), Error>) -> nb::Result<(), Error> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.is_would_block() => Err(nb::Error::WouldBlock),
        Err(e) => Err(nb::Error::Other(e)),
    }
}
