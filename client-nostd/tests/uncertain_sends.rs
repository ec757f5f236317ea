//! Sends whose outcome is uncertain (the stack may have put the datagram on the wire) consume
//! their nonce and IV; only certain refusals leave the agent unchanged.
//!
//! A retry is re-prepared with a new timestamp, so its bytes differ from the failed attempt's:
//! reusing the IV is only safe if the failed datagram certainly never left the device.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::net::SocketAddr;

use embedded_io_async::ErrorKind as K;
use varta_client_nostd::transport::nal::NalTransport;
use varta_client_nostd::transport::nal_async::{map_kind, ConnectedTransport};
use varta_client_nostd::{
    Agent, AsyncTransport, Error, GlobalAgent, Key, Kind, StackError, Status, Transport,
};
use vlp_core::envelope::{Iv, MasterDatagram};
use vlp_core::kdf::derive_agent_key;
use vlp_core::Frame;

const MASTER: [u8; 32] = [0x6B; 32];

fn agent(pid: u32) -> Agent {
    let mut a = Agent::master(pid, Key::from_bytes(MASTER));
    a.start([0x2D; 16]);
    a
}

fn open(d: &[u8]) -> (Iv, Frame) {
    let dg = MasterDatagram::from_bytes(d).unwrap();
    dg.open(&derive_agent_key(&Key::from_bytes(MASTER), dg.pid()))
        .unwrap()
}

/// Records every attempt; refuses with the queued errors first.
#[derive(Default)]
struct Stack {
    refusals: Vec<StackError>,
    attempts: Vec<Vec<u8>>,
}

impl Transport for Stack {
    fn try_send(&mut self, d: &[u8]) -> Result<(), StackError> {
        self.attempts.push(d.to_vec());
        if self.refusals.is_empty() {
            Ok(())
        } else {
            Err(self.refusals.remove(0))
        }
    }
}

#[test]
fn only_certain_refusals_leave_the_state_unchanged() {
    assert!(StackError::WouldBlock.is_certain_refusal());
    assert!(StackError::NoRoute.is_certain_refusal());
    assert!(StackError::NotBound.is_certain_refusal());
    assert!(StackError::TooLarge.is_certain_refusal());
    assert!(!StackError::Other.is_certain_refusal());
    assert!(!StackError::Uncertain.is_certain_refusal());
}

#[test]
fn an_uncertain_refusal_burns_the_iv_and_the_retry_uses_the_next() {
    for uncertain in [StackError::Other, StackError::Uncertain] {
        let mut a = agent(0x301);
        let mut stack = Stack {
            refusals: vec![uncertain],
            ..Stack::default()
        };
        assert_eq!(
            a.try_beat(&mut stack, Status::Ok, 0, 10),
            Err(Error::Send(uncertain))
        );
        // The retry carries a new timestamp: it must not reuse the first attempt's IV.
        a.try_beat(&mut stack, Status::Ok, 0, 20).unwrap();
        let (iv1, f1) = open(&stack.attempts[0]);
        let (iv2, f2) = open(&stack.attempts[1]);
        assert_ne!(iv1, iv2, "{uncertain:?}: two plaintexts under one IV");
        assert_eq!((f1.nonce(), f2.nonce()), (1, 2));
        assert_eq!(a.session().next_nonce(), 3);
    }
}

#[derive(Debug)]
struct NalErr;

/// An embedded-nal stack whose sends fail with `nb::Error::Other` (it may have sent).
struct FailingNal;

impl embedded_nal::UdpClientStack for FailingNal {
    type UdpSocket = ();
    type Error = NalErr;
    fn socket(&mut self) -> Result<(), NalErr> {
        Ok(())
    }
    fn connect(&mut self, _: &mut (), _: SocketAddr) -> Result<(), NalErr> {
        Ok(())
    }
    fn send(&mut self, _: &mut (), _: &[u8]) -> nb::Result<(), NalErr> {
        Err(nb::Error::Other(NalErr))
    }
    fn receive(&mut self, _: &mut (), _: &mut [u8]) -> nb::Result<(usize, SocketAddr), NalErr> {
        Err(nb::Error::WouldBlock)
    }
    fn close(&mut self, _: ()) -> Result<(), NalErr> {
        Ok(())
    }
}

#[test]
fn an_embedded_nal_other_error_burns_the_iv() {
    let mut a = agent(0x302);
    let mut stack = FailingNal;
    let mut socket = ();
    let mut t = NalTransport::new(&mut stack, &mut socket);
    let before = a.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    assert_eq!(
        a.try_beat(&mut t, Status::Ok, 0, 1),
        Err(Error::Send(StackError::Other))
    );
    let after = a.prepare(Kind::Beat(Status::Ok, 0), 2).unwrap();
    assert_ne!(before.beat().iv(), after.beat().iv());
}

#[derive(Debug, Clone, Copy)]
struct IoErr(K);
impl core::fmt::Display for IoErr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl core::error::Error for IoErr {}
impl embedded_io_async::Error for IoErr {
    fn kind(&self) -> K {
        self.0
    }
}

struct FailingAsync(K);
impl embedded_nal_async::ConnectedUdp for FailingAsync {
    type Error = IoErr;
    async fn send(&mut self, _: &[u8]) -> Result<(), IoErr> {
        Err(IoErr(self.0))
    }
    async fn receive_into(&mut self, _: &mut [u8]) -> Result<usize, IoErr> {
        Err(IoErr(K::Unsupported))
    }
}

#[test]
fn timeouts_and_interruptions_are_uncertain_and_burn_the_iv() {
    for kind in [K::TimedOut, K::Interrupted, K::OutOfMemory] {
        assert_eq!(map_kind(kind), StackError::Uncertain, "{kind:?}");
        let mut a = agent(0x303);
        let mut t = ConnectedTransport(FailingAsync(kind));
        let before = a.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
        let r = embassy_futures::block_on(a.beat(&mut t, Status::Ok, 0, 1));
        assert_eq!(r, Err(Error::Send(StackError::Uncertain)));
        let after = a.prepare(Kind::Beat(Status::Ok, 0), 2).unwrap();
        assert_ne!(before.beat().iv(), after.beat().iv(), "{kind:?}");
    }
    // A refusal that names a problem found before queuing still consumes nothing.
    let mut a = agent(0x304);
    let mut t = ConnectedTransport(FailingAsync(K::InvalidInput));
    let before = a.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    let r = embassy_futures::block_on(a.beat(&mut t, Status::Ok, 0, 1));
    assert_eq!(r, Err(Error::Send(StackError::TooLarge)));
    assert_eq!(a.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap(), before);
}

/// A transport that takes the datagram (it is "on the wire") but never completes.
#[derive(Default)]
struct Stuck {
    taken: Vec<Vec<u8>>,
}

struct Never;
impl Future for Never {
    type Output = Result<(), StackError>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

impl AsyncTransport for Stuck {
    async fn send(&mut self, d: &[u8]) -> Result<(), StackError> {
        self.taken.push(d.to_vec());
        Never.await
    }
}

#[test]
fn a_send_future_dropped_after_it_was_polled_burns_the_iv() {
    let mut a = agent(0x305);
    let mut t = Stuck::default();
    // Never polled: nothing happened, nothing consumed.
    let before = a.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    drop(a.send(&mut t, Kind::Beat(Status::Ok, 0), 1));
    assert_eq!(a.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap(), before);

    // Polled once (the stack took the bytes), then cancelled (a select! timeout).
    let poll = embassy_futures::poll_once(a.send(&mut t, Kind::Beat(Status::Ok, 0), 1));
    assert!(poll.is_pending());
    assert_eq!(t.taken.len(), 1);
    let mut sink = Stack::default();
    a.try_beat(&mut sink, Status::Ok, 0, 2).unwrap();
    let (iv1, f1) = open(&t.taken[0]);
    let (iv2, f2) = open(&sink.attempts[0]);
    assert_ne!(iv1, iv2, "the retry reused the cancelled send's IV");
    assert_eq!((f1.nonce(), f2.nonce()), (1, 2));
}

static GLOBAL: GlobalAgent = GlobalAgent::new();

#[test]
fn global_finish_commits_uncertain_outcomes_only() {
    GLOBAL.install(agent(0x306)).unwrap();
    // A certain refusal: the IV stays for the retry.
    let p = GLOBAL.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    assert_eq!(
        GLOBAL.finish(&p, Err(StackError::WouldBlock)),
        Err(Error::Send(StackError::WouldBlock))
    );
    let q = GLOBAL.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    assert_eq!(p.beat().iv(), q.beat().iv());
    // A timeout: the datagram may be out, its IV is used.
    assert_eq!(
        GLOBAL.finish(&q, Err(StackError::Uncertain)),
        Err(Error::Send(StackError::Uncertain))
    );
    let r = GLOBAL.prepare(Kind::Beat(Status::Ok, 0), 2).unwrap();
    assert_ne!(q.beat().iv(), r.beat().iv());
    GLOBAL.finish(&r, Ok(())).unwrap();
}
