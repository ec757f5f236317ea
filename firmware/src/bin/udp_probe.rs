//! Network-only baseline: sends text datagrams `varta-probe SEQ/COUNT` to 10.0.2.2:`port`
//! (the host's 127.0.0.1:`port` under QEMU's user network), then exits QEMU with success once
//! all of them have left the NIC, or with failure on any error or after a deadline.
//!
//! Arguments (semihosting command line): see [`RunArgs`]; `pid` is ignored.
#![no_std]
#![no_main]

use core::fmt::Write as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;
use varta_firmware_mps2::app::{Source, MAX_DATAGRAM};
use varta_firmware_mps2::args::{self, RunArgs};
use varta_firmware_mps2::board::{fail, Board};
use varta_firmware_mps2::net;

struct Text {
    count: u32,
}

impl Source for Text {
    fn prepare(
        &mut self,
        seq: u32,
        _now: Instant,
        buf: &mut [u8; MAX_DATAGRAM],
    ) -> Result<usize, &'static str> {
        let mut text = heapless::String::<MAX_DATAGRAM>::new();
        // "varta-probe " and two u32s fit in 64 bytes.
        let _ = write!(text, "varta-probe {seq}/{}", self.count);
        buf[..text.len()].copy_from_slice(text.as_bytes());
        Ok(text.len())
    }

    fn accepted(&mut self) {}
}

#[entry]
fn main() -> ! {
    let mut cmd_buf = [0u8; 256];
    let cmd = args::cmdline(&mut cmd_buf).unwrap_or("");
    let args = RunArgs::parse(cmd).unwrap_or_else(|e| fail(format_args!("udp-probe: {e}")));
    let mut board = Board::bring_up().unwrap_or_else(|e| fail(format_args!("udp-probe: {e}")));
    hprintln!(
        "udp-probe: mac {}, {}/{} -> {}:{}",
        EthernetAddress(board.eth.mac_address()),
        net::GUEST_IP,
        net::PREFIX_LEN,
        net::GATEWAY_IP,
        args.port
    );
    board.run("udp-probe", &args, 49_152, &mut Text { count: args.count })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("udp-probe: {info}"))
}
