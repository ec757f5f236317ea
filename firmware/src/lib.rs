//! Varta's example firmware for QEMU's `mps2-an386` (Cortex-M4).
//!
//! The pieces, from the wire up:
//!
//! * [`lan9118`]: a polled driver for the board's SMSC LAN9118 Ethernet controller, as a
//!   smoltcp [`Device`](smoltcp::phy::Device);
//! * [`clock`]: smoltcp time from the controller's 25 MHz free-running counter;
//! * [`net`]: smoltcp set up for QEMU's user-mode network (10.0.2.15/24, gateway 10.0.2.2,
//!   which forwards to the host's loopback);
//! * [`args`]: run-time arguments from the host over semihosting;
//! * [`board`]: all of the above brought up together on the MPS2 board;
//! * [`app`]: the sending loop of the network-only probe (`udp-probe`);
//! * [`scenario`]: what the `heartbeat` firmware does (normal, late task, stall, panic) and
//!   its main loop's decisions, host-tested against the client's task monitor.
//!
//! The binaries in `src/bin` tie them together; `run-e2e.sh` boots them under QEMU against a
//! listener on the host. The library builds for the host too, so its logic is unit-tested there
//! (`cargo test --lib` with the host toolchain).
#![cfg_attr(not(test), no_std)]

pub mod app;
pub mod args;
pub mod board;
pub mod clock;
pub mod lan9118;
pub mod net;
pub mod scenario;
