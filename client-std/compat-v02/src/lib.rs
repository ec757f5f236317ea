//! Compatibility with the published `varta-client` 0.2 API.
//!
//! The binaries under `src/bin/` are the five published examples' programs (`basic`,
//! `with_payload`, `udp`, `with_panic_handler`, `secure_udp`) written with exactly the calls
//! they make: `Varta::connect(path)?`, `Varta::connect_udp(addr)?`,
//! `Varta::<SecureUdpTransport>::connect_secure_udp(addr, key)?` with
//! `varta_vlp::crypto::Key::from_file(&path)?`, `install_panic_handler(path)?`,
//! `BeatOutcome::{Sent, Dropped(_), Failed(e)}`, `Status::{Ok, Degraded}`. They compile
//! against our `varta-client` with `varta-vlp` mapped to our `vlp-core` (this crate's
//! Cargo.toml), and `tests/compat.rs` runs each against a real socket and checks its beats.
//! Unlike the published ones they stop after `COUNT` beats (their last argument).

/// The beat count from the command line's argument `index` (default 3).
#[must_use]
pub fn count_arg(index: usize) -> u32 {
    std::env::args()
        .nth(index)
        .and_then(|c| c.parse().ok())
        .unwrap_or(3)
}
