//! The two send interfaces every stack adapter implements, and the adapters.
//!
//! The agent needs exactly one thing from a stack: "take this datagram, or say why not".
//! [`Transport`] is the non-blocking form (it must not wait: a full buffer is
//! [`StackError::WouldBlock`]); [`AsyncTransport`] is the async form (it may wait for buffer
//! space). Both report refusals as [`StackError`]. The agent keeps a beat's nonce and AEAD
//! counter for the retry only after a certain refusal ([`StackError::is_certain_refusal`]);
//! `Ok` and every uncertain outcome commit them. An adapter must therefore return a certain
//! refusal only when the stack did not take the datagram.
//!
//! Any `FnMut(&[u8]) -> Result<(), StackError>` is a [`Transport`], which is what tests, fake
//! stacks and hand-written drivers use.

use crate::error::StackError;

#[cfg(feature = "embassy-net")]
pub mod embassy;
#[cfg(feature = "embedded-nal")]
pub mod nal;
#[cfg(feature = "embedded-nal-async")]
pub mod nal_async;
#[cfg(feature = "smoltcp")]
pub mod smoltcp;

/// A non-blocking datagram sink.
pub trait Transport {
    /// Hands one datagram to the stack without waiting.
    ///
    /// # Errors
    /// The stack's refusal; [`StackError::WouldBlock`] when it cannot take it *now*.
    fn try_send(&mut self, datagram: &[u8]) -> Result<(), StackError>;
}

impl<F: FnMut(&[u8]) -> Result<(), StackError>> Transport for F {
    fn try_send(&mut self, datagram: &[u8]) -> Result<(), StackError> {
        self(datagram)
    }
}

/// An async datagram sink.
// The futures are not required to be `Send`: firmware executors (embassy) are single-threaded.
#[allow(async_fn_in_trait)]
pub trait AsyncTransport {
    /// Sends one datagram, waiting for buffer space if needed.
    ///
    /// # Errors
    /// The stack's refusal.
    async fn send(&mut self, datagram: &[u8]) -> Result<(), StackError>;
}
