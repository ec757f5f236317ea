//! The smoltcp adapter over a real TAP interface in a network namespace: smoltcp (ARP, IPv4,
//! UDP) in this process drives the TAP device; the kernel in the namespace routes the
//! datagrams to an ordinary UDP socket, and `vlp-core` opens what arrives.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), `/dev/net/tun` and iproute2's `ip`; the test
//! creates the namespace and the TAP device and removes both when done. It fails (with the
//! reason) rather than skip when they are unavailable.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{wait as phy_wait, Medium, TunTapInterface};
use smoltcp::socket::udp::{self, PacketBuffer, PacketMetadata};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};
use varta_client_nostd::transport::smoltcp::SmoltcpTransport;
use varta_client_nostd::{Agent, Error, Key, StackError, Status};
use vlp_core::envelope::MasterDatagram;
use vlp_core::kdf::derive_agent_key;

const MASTER: [u8; 32] = [0x77; 32];
const PID: u32 = 0x7A9;
const BEATS: usize = 5;

fn ip(ns: &str, args: &[&str]) {
    let mut cmd = Command::new("ip");
    if !ns.is_empty() {
        cmd.args(["netns", "exec", ns, "ip"]);
    }
    let out = cmd.args(args).output().expect("running iproute2 `ip`");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("netns file");
    // SAFETY: setns on a valid namespace fd; it only changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

#[test]
fn beats_cross_a_tap_device_into_a_kernel_udp_socket() {
    let ns = Netns(format!("varta-nostd-{}", std::process::id()));
    ip("", &["netns", "add", &ns.0]);
    // All of smoltcp and the host socket live in a thread inside the namespace: setns is
    // per-thread, and the TAP device is created in the namespace of the thread opening it.
    let name = ns.0.clone();
    std::thread::spawn(move || run_in_netns(&name))
        .join()
        .expect("netns thread");
}

fn run_in_netns(ns: &str) {
    enter_netns(ns);
    let tap = "vtap0";
    let mut device =
        TunTapInterface::new(tap, Medium::Ethernet).expect("open TAP (root, /dev/net/tun)");
    ip(ns, &["link", "set", "lo", "up"]);
    ip(ns, &["addr", "add", "10.77.0.1/24", "dev", tap]);
    ip(ns, &["link", "set", tap, "up"]);
    let host = UdpSocket::bind("10.77.0.1:9999").expect("bind the observer socket");
    host.set_nonblocking(true).unwrap();

    let hw = EthernetAddress([0x02, 0, 0, 0, 0x77, 0x02]);
    let mut iface = Interface::new(Config::new(hw.into()), &mut device, Instant::now());
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 77, 0, 2), 24))
            .unwrap();
    });
    let mut sockets = SocketSet::new(vec![]);
    let mut s = udp::Socket::new(
        PacketBuffer::new(vec![PacketMetadata::EMPTY; 4], vec![0; 512]),
        PacketBuffer::new(vec![PacketMetadata::EMPTY; 4], vec![0; 512]),
    );
    s.bind(40000).unwrap();
    let h = sockets.add(s);
    let observer = IpEndpoint::new(IpAddress::v4(10, 77, 0, 1), 9999);

    let mut agent = Agent::master(PID, Key::from_bytes(MASTER));
    agent.start([0x3C; 16]);
    let start = StdInstant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 128];
    let mut sent = 0;
    while received.len() < BEATS {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {received:?}"
        );
        let now_ms = start.elapsed().as_millis() as u64;
        if sent < BEATS {
            let mut t = SmoltcpTransport::new(sockets.get_mut::<udp::Socket>(h), observer);
            match agent.try_beat(&mut t, Status::Ok, sent as u32, now_ms) {
                Ok(()) => sent += 1,
                Err(Error::Send(StackError::WouldBlock)) => {}
                Err(e) => panic!("beat failed: {e}"),
            }
        }
        iface.poll(Instant::now(), &mut device, &mut sockets);
        while let Ok((n, from)) = host.recv_from(&mut buf) {
            assert_eq!(from.to_string(), "10.77.0.2:40000");
            received.push(buf[..n].to_vec());
        }
        phy_wait(
            device.as_raw_fd(),
            Some(smoltcp::time::Duration::from_millis(5)),
        )
        .ok();
    }
    let key = derive_agent_key(&Key::from_bytes(MASTER), PID);
    for (i, d) in received.iter().enumerate() {
        assert_eq!(d.len(), 64);
        let (iv, f) = MasterDatagram::from_bytes(d).unwrap().open(&key).unwrap();
        assert_eq!(
            (f.nonce(), f.payload(), iv.counter),
            (i as u64 + 1, i as u32, i as u32 + 1)
        );
    }
}
