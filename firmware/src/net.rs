//! smoltcp bring-up for QEMU's user-mode network.
//!
//! QEMU's user network (slirp) puts the guest at 10.0.2.15/24 behind a gateway at 10.0.2.2,
//! and what the guest sends to 10.0.2.2:PORT arrives at the host's 127.0.0.1:PORT.

use smoltcp::iface::{Config, Interface};
use smoltcp::phy::Device;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

/// The guest's address on QEMU's user network.
pub const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// Prefix length of QEMU's user network.
pub const PREFIX_LEN: u8 = 24;
/// QEMU's user-network gateway, which forwards to the host's loopback.
pub const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

/// An interface with `ip`/`prefix_len` and a default route via `gateway`.
///
/// `seed` seeds smoltcp's port and sequence randomness; use a value that differs per boot
/// where it matters (it does not for plain UDP to a fixed port).
pub fn interface<D: Device + ?Sized>(
    device: &mut D,
    mac: [u8; 6],
    ip: Ipv4Address,
    prefix_len: u8,
    gateway: Ipv4Address,
    seed: u64,
    now: Instant,
) -> Interface {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = seed;
    let mut iface = Interface::new(config, device, now);
    iface.update_ip_addrs(|addrs| {
        // A fresh interface has no addresses, so the one push fits.
        let _ = addrs.push(IpCidr::new(ip.into(), prefix_len));
    });
    // A fresh route table has room for the default route.
    let _ = iface.routes_mut().add_default_ipv4_route(gateway);
    iface
}
