//! The embedded-nal (`nb`) and embedded-nal-async adapters against fake stacks.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use varta_client_nostd::transport::nal::{connect, nb_result, NalTransport};
use varta_client_nostd::transport::nal_async::{
    map_kind, ConnectedTransport, UnconnectedTransport,
};
use varta_client_nostd::{Agent, Error, StackError, Status};
use vlp_core::Frame;

const OBSERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)), 9000);

#[derive(Default)]
struct FakeNal {
    would_block: usize,
    fail_socket: bool,
    sent: Vec<(SocketAddr, Vec<u8>)>,
    attempts: usize,
}

#[derive(Debug)]
struct FakeErr;

impl embedded_nal::UdpClientStack for FakeNal {
    type UdpSocket = Option<SocketAddr>;
    type Error = FakeErr;
    fn socket(&mut self) -> Result<Self::UdpSocket, FakeErr> {
        if self.fail_socket {
            Err(FakeErr)
        } else {
            Ok(None)
        }
    }
    fn connect(&mut self, s: &mut Self::UdpSocket, remote: SocketAddr) -> Result<(), FakeErr> {
        *s = Some(remote);
        Ok(())
    }
    fn send(&mut self, s: &mut Self::UdpSocket, buf: &[u8]) -> nb::Result<(), FakeErr> {
        self.attempts += 1;
        if self.would_block > 0 {
            self.would_block -= 1;
            return Err(nb::Error::WouldBlock);
        }
        let to = s.ok_or(nb::Error::Other(FakeErr))?;
        self.sent.push((to, buf.to_vec()));
        Ok(())
    }
    fn receive(
        &mut self,
        _: &mut Self::UdpSocket,
        _: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), FakeErr> {
        Err(nb::Error::WouldBlock)
    }
    fn close(&mut self, _: Self::UdpSocket) -> Result<(), FakeErr> {
        Ok(())
    }
}

#[test]
fn nb_block_retries_the_same_nonce_until_the_stack_takes_it() {
    let mut stack = FakeNal {
        would_block: 3,
        ..FakeNal::default()
    };
    let mut socket = connect(&mut stack, OBSERVER).unwrap();
    let mut agent = Agent::plain(321);
    for now in 1..=2 {
        let mut t = NalTransport::new(&mut stack, &mut socket);
        nb::block!(nb_result(agent.try_beat(&mut t, Status::Ok, 0, now))).unwrap();
    }
    assert_eq!(stack.attempts, 5);
    let nonces: Vec<u64> = stack
        .sent
        .iter()
        .map(|(to, d)| {
            assert_eq!(*to, OBSERVER);
            Frame::parse(d).unwrap().nonce()
        })
        .collect();
    assert_eq!(nonces, [1, 2]);
}

#[test]
fn nal_errors_name_the_failed_step() {
    let mut stack = FakeNal {
        fail_socket: true,
        ..FakeNal::default()
    };
    assert_eq!(
        connect(&mut stack, OBSERVER).err(),
        Some(Error::Socket(StackError::Other))
    );
    // A socket never connected: the stack's own error, not retryable.
    let mut stack = FakeNal::default();
    let mut unconnected = None;
    let mut agent = Agent::plain(321);
    let mut t = NalTransport::new(&mut stack, &mut unconnected);
    let r = agent.try_beat(&mut t, Status::Ok, 0, 1);
    assert_eq!(r, Err(Error::Send(StackError::Other)));
    assert!(matches!(nb_result(r), Err(nb::Error::Other(_))));
    // An opaque stack error may have sent the datagram: its nonce is consumed.
    assert_eq!(agent.session().next_nonce(), 2);
}

#[derive(Debug, Clone, Copy)]
struct IoErr(embedded_io_async::ErrorKind);
impl core::fmt::Display for IoErr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl core::error::Error for IoErr {}
impl embedded_io_async::Error for IoErr {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        self.0
    }
}

struct FakeAsync {
    fail: Vec<embedded_io_async::ErrorKind>,
    sent: Vec<(Option<SocketAddr>, Vec<u8>)>,
}

impl embedded_nal_async::ConnectedUdp for FakeAsync {
    type Error = IoErr;
    async fn send(&mut self, data: &[u8]) -> Result<(), IoErr> {
        if !self.fail.is_empty() {
            return Err(IoErr(self.fail.remove(0)));
        }
        self.sent.push((None, data.to_vec()));
        Ok(())
    }
    async fn receive_into(&mut self, _: &mut [u8]) -> Result<usize, IoErr> {
        Err(IoErr(embedded_io_async::ErrorKind::Unsupported))
    }
}

impl embedded_nal_async::UnconnectedUdp for FakeAsync {
    type Error = IoErr;
    async fn send(
        &mut self,
        _local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> Result<(), IoErr> {
        if !self.fail.is_empty() {
            return Err(IoErr(self.fail.remove(0)));
        }
        self.sent.push((Some(remote), data.to_vec()));
        Ok(())
    }
    async fn receive_into(
        &mut self,
        _: &mut [u8],
    ) -> Result<(usize, SocketAddr, SocketAddr), IoErr> {
        Err(IoErr(embedded_io_async::ErrorKind::Unsupported))
    }
}

#[test]
fn async_adapters_map_errors_and_commit_on_success() {
    use embedded_io_async::ErrorKind as K;
    let mut agent = Agent::plain(654);
    let mut t = ConnectedTransport(FakeAsync {
        fail: vec![K::NotConnected, K::AddrNotAvailable],
        sent: vec![],
    });
    embassy_futures::block_on(async {
        assert_eq!(
            agent.beat(&mut t, Status::Ok, 0, 1).await,
            Err(Error::Send(StackError::NoRoute))
        );
        assert_eq!(
            agent.beat(&mut t, Status::Ok, 0, 1).await,
            Err(Error::Send(StackError::NoRoute))
        );
        agent.beat(&mut t, Status::Ok, 0, 1).await.unwrap();
    });
    assert_eq!(Frame::parse(&t.0.sent[0].1).unwrap().nonce(), 1);

    let mut u = UnconnectedTransport {
        socket: FakeAsync {
            fail: vec![],
            sent: vec![],
        },
        local: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        remote: OBSERVER,
    };
    embassy_futures::block_on(agent.beat(&mut u, Status::Ok, 0, 2)).unwrap();
    assert_eq!(u.socket.sent[0].0, Some(OBSERVER));
    assert_eq!(Frame::parse(&u.socket.sent[0].1).unwrap().nonce(), 2);
    assert_eq!(map_kind(K::InvalidInput), StackError::TooLarge);
    assert_eq!(map_kind(K::PermissionDenied), StackError::Other);
}
