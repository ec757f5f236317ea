//! Network-only baseline: sends `count` text datagrams to 10.0.2.2:`port` (the host's
//! 127.0.0.1:`port` under QEMU's user network), then exits QEMU with success once all of them
//! have left the NIC, or with failure on any error or after a deadline.
//!
//! Arguments (semihosting command line): `port=N` (required), `count=N` (default 5),
//! `interval_ms=N` (default 20). Each datagram reads `varta-probe SEQ/COUNT`.
#![no_std]
#![no_main]

use core::fmt::Write as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpEndpoint};
use varta_firmware_mps2::app::{self, Plan, Source, MAX_DATAGRAM};
use varta_firmware_mps2::board::{fail, Board};
use varta_firmware_mps2::{args, net};

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
    let Some(port) = args::find_u32(cmd, "port").and_then(|p| u16::try_from(p).ok()) else {
        fail(format_args!("udp-probe: missing or bad port=N"));
    };
    let count = args::find_u32(cmd, "count").unwrap_or(5);
    let interval = args::find_u32(cmd, "interval_ms").unwrap_or(20);

    let mut board = Board::bring_up().unwrap_or_else(|e| fail(format_args!("udp-probe: {e}")));
    hprintln!(
        "udp-probe: mac {}, {}/{} -> {}:{}, {} datagrams",
        EthernetAddress(board.eth.mac_address()),
        net::GUEST_IP,
        net::PREFIX_LEN,
        net::GATEWAY_IP,
        port,
        count
    );
    let plan = Plan {
        remote: IpEndpoint::new(net::GATEWAY_IP.into(), port),
        local_port: 49_152,
        count,
        interval: Duration::from_millis(interval.into()),
        deadline: Duration::from_secs(10),
    };
    let Board { eth, clock, iface } = &mut board;
    match app::send_all(
        eth,
        iface,
        |eth| clock.instant(eth.free_run()),
        &plan,
        &mut Text { count },
    ) {
        Ok(report) => {
            let stats = eth.stats();
            hprintln!(
                "udp-probe: {} sent in {} ms; NIC tx {} ({} errors), rx {} ({} dropped)",
                report.sent,
                report.elapsed.total_millis(),
                stats.tx_frames,
                stats.tx_errors,
                stats.rx_frames,
                stats.rx_dropped
            );
            varta_firmware_mps2::board::exit(true)
        }
        Err(e) => fail(format_args!("udp-probe: {e}")),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("udp-probe: {info}"))
}
