//! `vlp-core`: the Varta Lifeline Protocol v0.2, as a sans-I/O core.
//!
//! Everything that decides what goes on the wire, and whether what came off it is acceptable,
//! lives here; sockets, clocks, entropy and files live in the clients and the observer. The
//! crate is `#![no_std]`, never allocates, never reads a clock (time is an argument), and runs
//! unchanged on a Cortex-M4 and in the observer.
//!
//! Layers, bottom up:
//!
//! * [`crc`]: CRC-32C, the frame checksum.
//! * [`wire`]: the 32-byte frame. [`wire::Frame::parse`] applies the spec's eight checks in
//!   order and yields a validated value; [`wire::Frame::emit`] cannot fail.
//! * [`envelope`]: ChaCha20-Poly1305 sealing of a frame into the 60-byte (shared key) or
//!   64-byte (master key) datagram, in place, and opening with the tag checked first.
//! * [`kdf`]: HKDF-SHA256 derivation of per-agent keys and IV prefixes.
//! * [`batch`]: the datagrams of one receive batch opened together, in SIMD lanes where the
//!   CPU has them (SSE2, AVX2), with the same results as the single open.
//! * [`replay`]: the receiver's sliding window over AEAD counters.
//! * [`session`]: the sender's nonce / timestamp / IV state machine with commit-on-success.
//! * [`sender`]: a session and its key class (plain, shared key, agent key, master key)
//!   writing the next datagram into the caller's buffer; every client sends through it.
//!
//! # Panic contract
//!
//! No function of this crate panics on any input that comes from a peer: every byte sequence
//! of every length given to a `parse`, `from_bytes` or `open` returns a value or an error.
//! (The few `expect`s guard conditions fixed by construction, such as a 32-byte message being
//! within ChaCha20's length limit.) The `fuzz/` targets hold this.
//!
//! # Features
//!
//! * `std`: `std::error::Error` impls, `keyfile` (reading key files and accepted-key lists
//!   with the §5 checks) and `crypto` (`Key::from_file`, the published 0.2 client API's path).
//! * `defmt`: `defmt::Format` on the public types.
//! * `fast-aead`: the envelope's own ChaCha20-Poly1305 for 32-byte frames.
//! * `testing`: hooks that jump or rewind the sender's nonce and IV sequences, for tests and
//!   simulations only (they let a caller reuse AEAD nonces); off by default.
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod batch;
pub mod crc;
#[cfg(feature = "std")]
pub mod crypto;
pub mod envelope;
pub mod kdf;
#[cfg(feature = "std")]
pub mod keyfile;
pub mod replay;
pub mod sender;
pub mod session;
pub mod wire;

pub use envelope::{Iv, Key, KeyError, MasterDatagram, OpenError, SharedDatagram};
pub use replay::{ReplayError, ReplayWindow};
pub use sender::{KeyClass, Kind, Prepared, Sender, MAX_DATAGRAM_LEN};
pub use session::{Beat, Session, SessionError};
pub use wire::{DecodeError, Frame, Status, FRAME_LEN, GOODBYE_PAYLOAD, NONCE_TERMINAL};
