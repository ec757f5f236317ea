//! embassy-net's `udp::UdpSocket` as an [`AsyncTransport`] and a [`Transport`].
//!
//! embassy-net does not implement embedded-nal-async's UDP traits, hence this adapter. The
//! async form waits for buffer space (`send_to`); the non-blocking form polls `poll_send_to`
//! once with a no-op waker (a task awaiting the same socket's send readiness may then miss one
//! wake-up; use one form per socket).

use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use embassy_net::udp::{SendError, UdpSocket};
use embassy_net::IpEndpoint;

use crate::error::StackError;
use crate::transport::{AsyncTransport, Transport};

/// Maps embassy-net's UDP send error.
#[must_use]
pub fn map_send_error(e: SendError) -> StackError {
    match e {
        SendError::NoRoute => StackError::NoRoute,
        SendError::SocketNotBound => StackError::NotBound,
        SendError::PacketTooLarge => StackError::TooLarge,
    }
}

/// A bound embassy-net UDP socket and the observer's endpoint.
pub struct EmbassyTransport<'s, 'b> {
    socket: &'s UdpSocket<'b>,
    remote: IpEndpoint,
}

impl<'s, 'b> EmbassyTransport<'s, 'b> {
    /// Wraps a socket (already bound) sending to `remote`.
    pub fn new(socket: &'s UdpSocket<'b>, remote: IpEndpoint) -> Self {
        EmbassyTransport { socket, remote }
    }
}

impl AsyncTransport for EmbassyTransport<'_, '_> {
    async fn send(&mut self, datagram: &[u8]) -> Result<(), StackError> {
        self.socket
            .send_to(datagram, self.remote)
            .await
            .map_err(map_send_error)
    }
}

fn noop_raw_waker() -> RawWaker {
    fn clone(_: *const ()) -> RawWaker {
        noop_raw_waker()
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    RawWaker::new(core::ptr::null(), &VTABLE)
}

impl Transport for EmbassyTransport<'_, '_> {
    fn try_send(&mut self, datagram: &[u8]) -> Result<(), StackError> {
        // SAFETY: the vtable's functions ignore the (null) data pointer and do nothing, which
        // upholds RawWaker's contract trivially.
        let waker = unsafe { Waker::from_raw(noop_raw_waker()) };
        let mut cx = Context::from_waker(&waker);
        match self.socket.poll_send_to(datagram, self.remote, &mut cx) {
            Poll::Ready(r) => r.map_err(map_send_error),
            Poll::Pending => Err(StackError::WouldBlock),
        }
    }
}
