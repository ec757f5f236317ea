//! Sends `count` UDP datagrams to 10.0.2.2:`port` (the host's 127.0.0.1:`port` under QEMU's
//! user network) through the LAN9118 and smoltcp, then exits QEMU with success once all of
//! them have left the NIC, or with failure on any error or after a deadline.
//!
//! Arguments (semihosting command line): `port=N` (required), `count=N` (default 5),
//! `interval_ms=N` (default 20). Each datagram reads `varta-probe SEQ/COUNT`.
#![no_std]
#![no_main]

use core::fmt::Write as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use smoltcp::iface::{SocketSet, SocketStorage};
use smoltcp::socket::udp;
use smoltcp::time::Duration;
use smoltcp::wire::{EthernetAddress, IpEndpoint};
use varta_firmware_mps2::{args, clock::Clock, lan9118, net};

/// Local UDP port the probe sends from.
const LOCAL_PORT: u16 = 49_152;
/// Give up when the datagrams have not all left by then (ARP plus sends take milliseconds).
const DEADLINE: Duration = Duration::from_secs(10);

#[entry]
fn main() -> ! {
    let mut cmd_buf = [0u8; 256];
    let cmd = args::cmdline(&mut cmd_buf).unwrap_or("");
    let Some(port) = args::find_u32(cmd, "port").and_then(|p| u16::try_from(p).ok()) else {
        fail(format_args!("udp-probe: missing or bad port=N in {cmd:?}"));
    };
    let count = args::find_u32(cmd, "count").unwrap_or(5);
    let interval =
        Duration::from_millis(u64::from(args::find_u32(cmd, "interval_ms").unwrap_or(20)));

    let Some(mut eth) = lan9118::Lan9118::take_mps2() else {
        fail(format_args!("udp-probe: LAN9118 already taken"));
    };
    let mac = match eth.init(None) {
        Ok(mac) => mac,
        Err(e) => fail(format_args!("udp-probe: LAN9118 init: {e}")),
    };
    let mut clock = Clock::new(lan9118::FREE_RUN_HZ, eth.free_run());
    let now = clock.instant(eth.free_run());
    let mut iface = net::interface(
        &mut eth,
        mac,
        net::GUEST_IP,
        net::PREFIX_LEN,
        net::GATEWAY_IP,
        u64::from(clock.ticks() as u32 ^ 0x5641_5254),
        now,
    );
    hprintln!(
        "udp-probe: mac {}, {}/{} -> {}:{}, {} datagrams",
        EthernetAddress(mac),
        net::GUEST_IP,
        net::PREFIX_LEN,
        net::GATEWAY_IP,
        port,
        count
    );

    let mut rx_meta = [udp::PacketMetadata::EMPTY; 1];
    let mut rx_data = [0u8; 64];
    let mut tx_meta = [udp::PacketMetadata::EMPTY; 4];
    let mut tx_data = [0u8; 256];
    let socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
    );
    let mut storage = [SocketStorage::EMPTY; 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let handle = sockets.add(socket);
    if let Err(e) = sockets.get_mut::<udp::Socket>(handle).bind(LOCAL_PORT) {
        fail(format_args!("udp-probe: bind: {e}"));
    }

    let remote = IpEndpoint::new(net::GATEWAY_IP.into(), port);
    let start = now;
    let mut next_send = now;
    let mut sent = 0u32;
    loop {
        let now = clock.instant(eth.free_run());
        iface.poll(now, &mut eth, &mut sockets);
        let socket = sockets.get_mut::<udp::Socket>(handle);
        if sent < count && now >= next_send && socket.can_send() {
            sent += 1;
            let mut text = heapless::String::<48>::new();
            // 48 bytes hold "varta-probe " and two u32s.
            let _ = write!(text, "varta-probe {sent}/{count}");
            if let Err(e) = socket.send_slice(text.as_bytes(), remote) {
                fail(format_args!("udp-probe: send {sent}: {e}"));
            }
            next_send = now + interval;
        }
        if sent == count && socket.send_queue() == 0 {
            let stats = eth.stats();
            hprintln!(
                "udp-probe: done in {} ms; tx {} frames ({} errors), rx {} ({} dropped)",
                (now - start).total_millis(),
                stats.tx_frames,
                stats.tx_errors,
                stats.rx_frames,
                stats.rx_dropped
            );
            exit(true);
        }
        if now - start > DEADLINE {
            fail(format_args!(
                "udp-probe: deadline passed with {sent}/{count} queued, {} still in the socket",
                socket.send_queue()
            ));
        }
    }
}

fn fail(msg: core::fmt::Arguments<'_>) -> ! {
    hprintln!("{}", msg);
    exit(false)
}

fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached when no debugger/QEMU honours the exit request.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("udp-probe: {}", info);
    exit(false)
}
