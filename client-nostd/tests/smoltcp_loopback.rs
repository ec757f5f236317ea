//! The smoltcp adapter in-process: an agent's UDP socket and an "observer" socket on one
//! smoltcp interface over the Loopback device. A full socket buffer is a WouldBlock that
//! consumes nothing; after the interface drains it, the retry carries the same nonce.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::udp::{self, PacketBuffer, PacketMetadata};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use varta_client_nostd::transport::smoltcp::SmoltcpTransport;
use varta_client_nostd::{Agent, Error, Key, StackError, Status};
use vlp_core::envelope::MasterDatagram;
use vlp_core::kdf::derive_agent_key;

const MASTER: [u8; 32] = [0x5A; 32];
const OBSERVER: IpEndpoint = IpEndpoint::new(IpAddress::v4(127, 0, 0, 1), 6000);

fn socket(slots: usize, bytes: usize) -> udp::Socket<'static> {
    udp::Socket::new(
        PacketBuffer::new(vec![PacketMetadata::EMPTY; 8], vec![0; 1024]),
        PacketBuffer::new(vec![PacketMetadata::EMPTY; slots], vec![0; bytes]),
    )
}

#[test]
fn beats_cross_smoltcp_loopback_and_open() {
    let mut device = Loopback::new(Medium::Ip);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, Instant::ZERO);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap();
    });
    let mut sockets = SocketSet::new(vec![]);
    // Room for exactly two 64-byte datagrams.
    let mut tx = socket(2, 128);
    tx.bind(5000).unwrap();
    let tx = sockets.add(tx);
    let mut rx = socket(8, 1024);
    rx.bind(OBSERVER.port).unwrap();
    let rx = sockets.add(rx);

    let mut agent = Agent::master(0xC0DE, Key::from_bytes(MASTER));
    agent.start([0x11; 16]);

    let mut received = Vec::new();
    let mut now = 0u64;
    let mut would_block = 0;
    while received.len() < 6 {
        now += 1;
        // Three attempts per round: the third finds the buffer full.
        for _ in 0..3 {
            let mut t = SmoltcpTransport::new(sockets.get_mut::<udp::Socket>(tx), OBSERVER);
            let before = agent.session().next_nonce();
            match agent.try_beat(&mut t, Status::Ok, 0, now) {
                Ok(()) => assert_eq!(agent.session().next_nonce(), before + 1),
                Err(Error::Send(StackError::WouldBlock)) => {
                    would_block += 1;
                    assert_eq!(agent.session().next_nonce(), before);
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        iface.poll(Instant::from_millis(now as i64), &mut device, &mut sockets);
        let obs = sockets.get_mut::<udp::Socket>(rx);
        while let Ok((data, meta)) = obs.recv() {
            assert_eq!(meta.endpoint.port, 5000);
            received.push(data.to_vec());
        }
    }
    assert!(would_block >= 2, "the full buffer was exercised");
    let key = derive_agent_key(&Key::from_bytes(MASTER), 0xC0DE);
    for (i, d) in received.iter().enumerate() {
        let (iv, f) = MasterDatagram::from_bytes(d).unwrap().open(&key).unwrap();
        assert_eq!(f.nonce(), i as u64 + 1, "gapless, no repeat");
        assert_eq!(iv.counter, i as u32 + 1);
    }
}

#[test]
fn smoltcp_errors_map_to_named_kinds() {
    let mut unbound = socket(2, 128);
    let mut agent = Agent::plain(77);
    let mut t = SmoltcpTransport::new(&mut unbound, OBSERVER);
    assert_eq!(
        agent.try_beat(&mut t, Status::Ok, 0, 1),
        Err(Error::Send(StackError::NotBound))
    );
    let mut tiny = socket(2, 16);
    tiny.bind(5001).unwrap();
    let mut t = SmoltcpTransport::new(&mut tiny, OBSERVER);
    assert_eq!(
        agent.try_beat(&mut t, Status::Ok, 0, 1),
        Err(Error::Send(StackError::TooLarge))
    );
    let mut bound = socket(2, 128);
    bound.bind(5002).unwrap();
    let unspecified = IpEndpoint::new(IpAddress::v4(0, 0, 0, 0), 6000);
    let mut t = SmoltcpTransport::new(&mut bound, unspecified);
    assert_eq!(
        agent.try_beat(&mut t, Status::Ok, 0, 1),
        Err(Error::Send(StackError::NoRoute))
    );
    assert_eq!(agent.session().next_nonce(), 1);
}
