//! UDP and secure UDP against a real loopback observer: plain frames, 60-byte shared-key and
//! 64-byte master-key datagrams that open with the right key only, IV sequences, drops.
mod common;

use common::{closed_udp_port, UdpObserver};
use varta_client::vlp_core::envelope::{MasterDatagram, OpenError, SharedDatagram};
use varta_client::vlp_core::kdf::derive_agent_key;
use varta_client::vlp_core::keyfile::read_key_file;
use varta_client::{BeatOutcome, DropReason, Frame, Key, Status, Varta};

#[test]
fn plain_udp_frames() {
    let obs = UdpObserver::bind();
    let mut v = Varta::connect_udp(obs.addr()).unwrap();
    for n in 1..=3u64 {
        assert_eq!(v.beat(Status::Degraded, 9), BeatOutcome::Sent);
        let bytes = obs.recv();
        let f = Frame::parse(&bytes).unwrap();
        assert_eq!(&f.emit()[..], &bytes[..]);
        assert_eq!(
            (f.pid(), f.nonce(), f.status(), f.payload()),
            (std::process::id(), n, Status::Degraded, 9)
        );
    }
    // A string address resolves too.
    let mut v = Varta::connect_udp(format!("127.0.0.1:{}", obs.addr().port())).unwrap();
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(Frame::parse(&obs.recv()).unwrap().nonce(), 1);
}

#[test]
fn shared_key_datagrams_open_with_the_key_only() {
    let key = Key::from_bytes([0x42; 32]);
    let obs = UdpObserver::bind();
    let mut v = Varta::connect_secure_udp(obs.addr(), key.clone()).unwrap();
    let mut random = None;
    for n in 1..=4u64 {
        assert_eq!(v.beat(Status::Ok, n as u32), BeatOutcome::Sent);
        let bytes = obs.recv();
        assert_eq!(bytes.len(), 60);
        let d = SharedDatagram::from_bytes(&bytes).unwrap();
        let (iv, f) = d.open(&key).expect("opens with the shared key");
        assert_eq!(
            (f.pid(), f.nonce(), f.payload()),
            (std::process::id(), n, n as u32)
        );
        // The AEAD counter starts at 1 and advances once per datagram, one iv_random.
        assert_eq!(iv.counter, n as u32);
        assert_eq!(*random.get_or_insert(iv.random), iv.random);
        assert_eq!(
            d.open(&Key::from_bytes([0x43; 32])),
            Err(OpenError::BadTag),
            "a wrong key never opens it"
        );
        let mut tampered = bytes.clone();
        tampered[20] ^= 1;
        assert_eq!(
            SharedDatagram::from_bytes(&tampered).unwrap().open(&key),
            Err(OpenError::BadTag)
        );
    }
    assert_eq!(v.goodbye(), BeatOutcome::Sent);
    let (iv, f) = SharedDatagram::from_bytes(&obs.recv())
        .unwrap()
        .open(&key)
        .unwrap();
    assert!(f.is_goodbye());
    assert_eq!(iv.counter, 5, "terminal frames consume an IV too");
}

#[test]
fn two_clients_with_one_key_never_share_an_iv_stream() {
    let key = Key::from_bytes([0x11; 32]);
    let obs = UdpObserver::bind();
    let mut a = Varta::connect_secure_udp(obs.addr(), key.clone()).unwrap();
    let mut b = Varta::connect_secure_udp(obs.addr(), key.clone()).unwrap();
    assert_eq!(a.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(b.beat(Status::Ok, 0), BeatOutcome::Sent);
    let ia = SharedDatagram::from_bytes(&obs.recv()).unwrap().iv();
    let ib = SharedDatagram::from_bytes(&obs.recv()).unwrap().iv();
    assert_eq!((ia.counter, ib.counter), (1, 1));
    assert_ne!(ia.random, ib.random, "each session draws its own salt");
}

#[test]
fn master_key_datagrams_open_with_the_derived_key() {
    let master = Key::from_bytes([0x5A; 32]);
    let obs = UdpObserver::bind();
    let mut v = Varta::connect_secure_udp_with_master(obs.addr(), master.clone()).unwrap();
    let pid = std::process::id();
    for n in 1..=3u64 {
        assert_eq!(v.beat(Status::Critical, 0), BeatOutcome::Sent);
        let bytes = obs.recv();
        assert_eq!(bytes.len(), 64);
        assert_eq!(&bytes[0..4], &pid.to_le_bytes());
        let d = MasterDatagram::from_bytes(&bytes).unwrap();
        assert_eq!(d.pid(), pid);
        let (iv, f) = d.open(&derive_agent_key(&master, pid)).unwrap();
        assert_eq!((f.pid(), f.nonce(), iv.counter), (pid, n, n as u32));
        // Neither the master key itself nor another pid's key opens it.
        assert_eq!(d.open(&master), Err(OpenError::BadTag));
        assert_eq!(
            d.open(&derive_agent_key(&master, pid + 1)),
            Err(OpenError::BadTag)
        );
    }
}

#[test]
fn key_file_round_trip() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = common::temp_dir("keyfile");
    let path = dir.join("agent.key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(f, "# test key\n{}", "ab".repeat(32)).unwrap();
    drop(f);
    let key = read_key_file(&path).unwrap();
    let obs = UdpObserver::bind();
    let mut v = Varta::connect_secure_udp(obs.addr(), key).unwrap();
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    let d = SharedDatagram::from_bytes(&obs.recv()).unwrap();
    assert!(d.open(&Key::from_bytes([0xAB; 32])).is_ok());
}

#[test]
fn unreachable_udp_port_is_no_observer() {
    // On loopback the ICMP port-unreachable comes back at once and is reported by the next
    // send on the connected socket as ECONNREFUSED.
    let mut v = Varta::connect_udp(closed_udp_port()).unwrap();
    v.set_reconnect_after(0);
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(v.beat(Status::Ok, 0));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        outcomes.contains(&BeatOutcome::Dropped(DropReason::NoObserver)),
        "{outcomes:?}"
    );
    assert!(outcomes
        .iter()
        .all(|o| o.is_sent() || *o == BeatOutcome::Dropped(DropReason::NoObserver)));
    assert_eq!(v.transport().peer().ip().to_string(), "127.0.0.1");
}

#[test]
fn udp_observer_coming_back_is_reached_again() {
    let port = closed_udp_port();
    let mut v = Varta::connect_udp(port).unwrap();
    for _ in 0..3 {
        let _ = v.beat(Status::Ok, 0);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let obs = std::net::UdpSocket::bind(port).unwrap();
    obs.set_read_timeout(Some(common::ARRIVAL)).unwrap();
    let nonce = v.next_nonce();
    // The default auto-reconnect turns a pending ECONNREFUSED into a fresh socket and a send.
    assert_eq!(v.beat(Status::Ok, 0), BeatOutcome::Sent);
    let mut buf = [0u8; 64];
    let n = obs.recv(&mut buf).unwrap();
    assert_eq!(Frame::parse(&buf[..n]).unwrap().nonce(), nonce);
}

#[test]
fn ipv6_observer() {
    let obs = std::net::UdpSocket::bind("[::1]:0").expect("IPv6 loopback");
    obs.set_read_timeout(Some(common::ARRIVAL)).unwrap();
    let key = Key::from_bytes([0x66; 32]);
    let mut v = Varta::connect_secure_udp(obs.local_addr().unwrap(), key.clone()).unwrap();
    assert_eq!(v.beat(Status::Ok, 6), BeatOutcome::Sent);
    let mut buf = [0u8; 64];
    let n = obs.recv(&mut buf).unwrap();
    let (_, f) = SharedDatagram::from_bytes(&buf[..n])
        .unwrap()
        .open(&key)
        .unwrap();
    assert_eq!((f.nonce(), f.payload()), (1, 6));
}

/// An agent given only its own key (derived from the master for its agent id) seals 64-byte
/// datagrams carrying that id in every process, parent and forked child alike: the observer,
/// holding the master, opens them with the key it derives for the id, and never with the
/// key of another id.
#[test]
fn agent_key_datagrams_carry_the_agent_id_and_open_with_the_master_derived_key() {
    let master = Key::from_bytes([0x5e; 32]);
    let agent_id = 70_001;
    let obs = UdpObserver::bind();
    let mut v = Varta::connect_secure_udp_with_agent_key(
        obs.addr(),
        agent_id,
        derive_agent_key(&master, agent_id),
    )
    .unwrap();
    assert_eq!(v.pid(), agent_id);
    for n in 1..=3u64 {
        assert_eq!(v.beat(Status::Ok, 7), BeatOutcome::Sent);
        let bytes = obs.recv();
        assert_eq!(bytes.len(), 64);
        let d = MasterDatagram::from_bytes(&bytes).unwrap();
        assert_eq!(d.pid(), agent_id, "the agent id is the clear-text pid");
        let (iv, f) = d
            .open(&derive_agent_key(&master, agent_id))
            .expect("opens with the key the observer derives from the master");
        assert_eq!((f.pid(), f.nonce(), iv.counter), (agent_id, n, n as u32));
        assert_eq!(
            d.open(&derive_agent_key(&master, agent_id + 1)),
            Err(OpenError::BadTag),
            "another id's key never opens it"
        );
        assert_eq!(
            d.open(&derive_agent_key(&master, std::process::id())),
            Err(OpenError::BadTag)
        );
    }
    // Re-labelling the datagram with another id (the clear pid is AAD) does not open either.
    assert_eq!(v.goodbye(), BeatOutcome::Sent);
    let mut forged = obs.recv();
    forged[..4].copy_from_slice(&(agent_id + 1).to_le_bytes());
    let d = MasterDatagram::from_bytes(&forged).unwrap();
    assert_eq!(
        d.open(&derive_agent_key(&master, agent_id + 1)),
        Err(OpenError::BadTag)
    );
}
