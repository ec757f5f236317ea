//! The embassy-net adapter on the host: an embassy-net stack over an in-memory loopback
//! driver (IP medium), embassy-time's std driver, and `embassy_futures` to run the stack's
//! runner beside the test. Beats go out through the async and the non-blocking form and
//! `vlp-core` opens them on a second embassy-net socket.

use std::collections::VecDeque;
use std::task::Context;

use embassy_futures::select::{select, Either};
use embassy_net::driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Config, IpEndpoint, Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use varta_client_nostd::transport::embassy::EmbassyTransport;
use varta_client_nostd::{Agent, Error, Key, StackError, Status, Transport};
use vlp_core::envelope::SharedDatagram;

/// Every transmitted IP packet comes back as received.
#[derive(Default)]
struct LoopbackDriver {
    queue: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Driver for LoopbackDriver {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx, Tx<'_>)> {
        match self.queue.pop_front() {
            Some(p) => Some((Rx(p), Tx(&mut self.queue))),
            None => {
                // Busy-poll: the test's block_on spins, so waking at once is enough.
                cx.waker().wake_by_ref();
                None
            }
        }
    }
    fn transmit(&mut self, _cx: &mut Context) -> Option<Tx<'_>> {
        Some(Tx(&mut self.queue))
    }
    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.max_transmission_unit = 1500;
        c
    }
    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ip
    }
}

const KEY: [u8; 32] = [0xE1; 32];
const ADDR: Ipv4Address = Ipv4Address::new(10, 9, 0, 1);

#[test]
fn beats_cross_embassy_net_and_open() {
    let resources = Box::leak(Box::new(StackResources::<4>::new()));
    let config = Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ADDR, 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let (stack, mut runner) = embassy_net::new(LoopbackDriver::default(), config, resources, 7);

    let test = async {
        let (mut m1, mut b1, mut m2, mut b2) = (
            [PacketMetadata::EMPTY; 4],
            [0u8; 512],
            [PacketMetadata::EMPTY; 4],
            [0u8; 512],
        );
        let (mut m3, mut b3, mut m4, mut b4) = (
            [PacketMetadata::EMPTY; 4],
            [0u8; 512],
            [PacketMetadata::EMPTY; 4],
            [0u8; 512],
        );
        let mut agent_sock = UdpSocket::new(stack, &mut m1, &mut b1, &mut m2, &mut b2);
        let mut observer = UdpSocket::new(stack, &mut m3, &mut b3, &mut m4, &mut b4);
        observer.bind(7000).unwrap();
        let remote = IpEndpoint::new(ADDR.into(), 7000);

        // Unbound socket: a named error, nothing consumed.
        let mut agent = Agent::shared(0x5151, Key::from_bytes(KEY));
        agent.start([0x21; 16]);
        {
            let mut t = EmbassyTransport::new(&agent_sock, remote);
            assert_eq!(
                agent.beat(&mut t, Status::Ok, 0, 1).await,
                Err(Error::Send(StackError::NotBound))
            );
            assert_eq!(t.try_send(&[0; 60]), Err(StackError::NotBound));
        }
        assert_eq!(agent.session().next_nonce(), 1);
        agent_sock.bind(7001).unwrap();

        let mut t = EmbassyTransport::new(&agent_sock, remote);
        for i in 0..3u32 {
            agent
                .beat(&mut t, Status::Ok, i, u64::from(i))
                .await
                .unwrap();
        }
        agent.try_beat(&mut t, Status::Degraded, 3, 3).unwrap();

        let key = Key::from_bytes(KEY);
        let mut buf = [0u8; 128];
        for i in 0..4u32 {
            let (n, meta) = observer.recv_from(&mut buf).await.unwrap();
            assert_eq!(meta.endpoint.port, 7001);
            let (iv, f) = SharedDatagram::from_bytes(&buf[..n])
                .unwrap()
                .open(&key)
                .unwrap();
            assert_eq!(
                (f.nonce(), f.payload(), iv.counter),
                (u64::from(i) + 1, i, i + 1)
            );
        }
    };
    match embassy_futures::block_on(select(runner.run(), test)) {
        Either::First(never) => match never {},
        Either::Second(()) => {}
    }
}
