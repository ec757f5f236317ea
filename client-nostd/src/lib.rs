//! `varta-client-nostd`: Varta heartbeats from firmware. `#![no_std]`, no allocator, no clock.
//!
//! # Architecture
//!
//! The decisions (framing, sealing, nonces, timestamps, AEAD IVs, commit-on-success) live in
//! `vlp-core`'s [`vlp_core::sender::Sender`], shared with the Linux client; this crate wraps
//! one sender in an [`Agent`] and adds what firmware needs around it:
//!
//! * [`Agent`]: `const` constructors ([`Agent::plain`], [`Agent::shared`],
//!   [`Agent::agent_key`] (the device holds only its own key, never the master),
//!   [`Agent::master`]) so it can live in a `static`; [`Agent::try_start`] once per boot with a fresh salt
//!   ([`entropy`] explains why a rebooted device never reuses an AEAD nonce). Sends are
//!   *prepare → transport → commit*: a send the stack certainly refused consumes no frame
//!   nonce and no AEAD counter; an accepted one, or one whose outcome is uncertain (timeout,
//!   opaque stack error, cancelled async send), consumes both.
//! * [`transport`]: the two interfaces a stack must offer ([`Transport`], non-blocking;
//!   [`AsyncTransport`]) and adapters behind features: `embedded-nal` (blocking / `nb`),
//!   `embedded-nal-async`, `smoltcp` (`socket::udp::Socket`), `embassy-net` (`UdpSocket`).
//!   Stack errors map to [`StackError`] inside the crate's [`Error`], which names the step
//!   that failed.
//! * [`GlobalAgent`]: the agent behind `critical-section`, reachable from interrupts and the
//!   panic handler, with try-borrow semantics (never a deadlock); [`panic_beat`] sends one
//!   terminal Critical frame through a pre-registered non-blocking hook from a
//!   `#[panic_handler]`, then halts or resets.
//! * [`tasks`]: `N` tasks check in; a poll yields the beat's status (Ok / Degraded / Critical,
//!   payload = bitmask of late tasks) and pets the hardware watchdog only when all are on
//!   time.
//!
//! Time is always an argument (`now`, ticks of the caller's monotonic timer).
//!
//! # Memory
//!
//! An [`Agent`] is at most 256 bytes (asserted at compile time), a [`GlobalAgent`] adds a few
//! bytes of flags. Datagrams are built on the caller's stack (a 64-byte buffer).
//!
//! # Panic contract
//!
//! No function of this crate panics on any input (stack errors, refused sends, re-entrant
//! calls, out-of-range task indices are all errors). The hot path uses no formatting
//! machinery: `Display` impls exist for the host but are only linked when called.
//!
//! # Features
//!
//! `embedded-nal`, `embedded-nal-async`, `smoltcp`, `embassy-net` (the adapters) and `defmt`
//! (`defmt::Format` on the public types, and debug/warn lines at refusals), `std`
//! (`std::error::Error` for [`Error`], [`StackError`] and [`TaskError`]), `testing`
//! (`Agent::session_mut`, for tests only). Default: none; nothing logs by default.
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod agent;
pub mod entropy;
pub mod error;
pub mod global;
pub mod tasks;
pub mod transport;

pub use agent::{Agent, Kind, Prepared, Security, MAX_DATAGRAM_LEN};
pub use error::{Error, StackError};
pub use global::{panic_beat, panic_payload, GlobalAgent, LastGasp, SendHook};
pub use tasks::{Health, SharedTaskMonitor, TaskError, TaskMonitor, TaskSpec};
pub use transport::{AsyncTransport, Transport};
pub use vlp_core::{Key, Status};

/// Static RAM budget per agent (issue 4).
pub const AGENT_RAM_BUDGET: usize = 256;

const _: () = assert!(core::mem::size_of::<Agent>() <= AGENT_RAM_BUDGET);
const _: () = assert!(core::mem::size_of::<GlobalAgent>() <= AGENT_RAM_BUDGET);
