//! The global agent while an async send is in flight: no other path may reuse its IV.
//!
//! `GlobalAgent::prepare` hands out the session's current IV before the transport has taken
//! the datagram. Until `finish`, every other send path must refuse ([`Error::Busy`]): a second
//! datagram under the same (key, nonce) with different bytes would break ChaCha20-Poly1305.

use std::sync::Mutex as StdMutex;

use varta_client_nostd::{Agent, Error, GlobalAgent, Key, Kind, StackError, Status};
use vlp_core::envelope::SharedDatagram;

const SHARED: [u8; 32] = [0x5A; 32];

static AGENT: GlobalAgent = GlobalAgent::new();
static WIRE: StdMutex<Vec<Vec<u8>>> = StdMutex::new(Vec::new());

fn wire_send(d: &[u8]) -> Result<(), StackError> {
    WIRE.lock().unwrap().push(d.to_vec());
    Ok(())
}

#[test]
fn a_beat_in_flight_blocks_every_other_send_path() {
    let mut a = Agent::shared(0x1F1, Key::from_bytes(SHARED));
    a.start([0x71; 16]);
    AGENT.install(a).unwrap();

    // An async task prepares a beat and awaits its transport ...
    let in_flight = AGENT.prepare(Kind::Beat(Status::Ok, 0), 10).unwrap();
    wire_send(in_flight.as_bytes()).unwrap();

    // ... when an interrupt beats, or a second task prepares: both are refused.
    assert_eq!(
        AGENT.try_beat(&mut wire_send, Status::Degraded, 7, 11),
        Err(Error::Busy)
    );
    assert_eq!(
        AGENT.try_send(&mut wire_send, Kind::Goodbye, 11),
        Err(Error::Busy)
    );
    assert_eq!(
        AGENT.prepare(Kind::Beat(Status::Ok, 1), 12).map(|_| ()),
        Err(Error::Busy)
    );
    assert_eq!(AGENT.with(|_| ()), Err(Error::Busy));

    // Once the in-flight beat is finished, beats go out again under the next IV.
    AGENT.finish(&in_flight, Ok(())).unwrap();
    AGENT.try_beat(&mut wire_send, Status::Ok, 0, 13).unwrap();

    let key = Key::from_bytes(SHARED);
    let wire = WIRE.lock().unwrap().clone();
    let ivs: Vec<_> = wire
        .iter()
        .map(|d| SharedDatagram::from_bytes(d).unwrap().open(&key).unwrap().0)
        .collect();
    assert_eq!(wire.len(), 2, "only the in-flight beat and the later one");
    assert_ne!(ivs[0], ivs[1], "no IV is used twice");
}
