//! The agent against a fake stack: refused sends consume nothing, the retry reuses the same
//! nonce and IV, and every accepted datagram is one `vlp-core` opens.

use std::vec::Vec;

use varta_client_nostd::entropy::{salt_from_rng, salt_with_boot_counter, SALT_LEN};
use varta_client_nostd::{Agent, Error, Key, Kind, Security, StackError, Status, Transport};
use vlp_core::envelope::{Iv, MasterDatagram, SharedDatagram};
use vlp_core::kdf::{derive_agent_key, derive_iv_prefix};
use vlp_core::{Frame, SessionError, NONCE_TERMINAL};

const MASTER: [u8; 32] = [0x42; 32];
const SHARED: [u8; 32] = [0x17; 32];
const SALT: [u8; SALT_LEN] = [9; SALT_LEN];

/// A scripted stack: refuses with the queued errors first, then accepts and records.
#[derive(Default)]
struct FakeStack {
    refusals: Vec<StackError>,
    sent: Vec<Vec<u8>>,
    attempts: Vec<Vec<u8>>,
}

impl Transport for FakeStack {
    fn try_send(&mut self, d: &[u8]) -> Result<(), StackError> {
        self.attempts.push(d.to_vec());
        if !self.refusals.is_empty() {
            return Err(self.refusals.remove(0));
        }
        self.sent.push(d.to_vec());
        Ok(())
    }
}

fn open_master(d: &[u8]) -> (Iv, Frame) {
    let dg = MasterDatagram::from_bytes(d).expect("64-byte master datagram");
    let key = derive_agent_key(&Key::from_bytes(MASTER), dg.pid());
    dg.open(&key).expect("opens with the derived agent key")
}

fn started(mut a: Agent) -> Agent {
    a.start(SALT);
    a
}

#[test]
fn refused_sends_consume_nothing_then_retry_reuses_nonce_and_iv() {
    let mut agent = started(Agent::master(4242, Key::from_bytes(MASTER)));
    let mut stack = FakeStack {
        refusals: vec![
            StackError::WouldBlock,
            StackError::NoRoute,
            StackError::TooLarge,
        ],
        ..FakeStack::default()
    };
    // Certain refusals only (uncertain ones consume the IV: tests/uncertain_sends.rs).
    for expected in [
        StackError::WouldBlock,
        StackError::NoRoute,
        StackError::TooLarge,
    ] {
        assert_eq!(
            agent.try_beat(&mut stack, Status::Ok, 7, 100),
            Err(Error::Send(expected))
        );
        assert_eq!(agent.session().next_nonce(), 1, "refusal consumed a nonce");
    }
    agent.try_beat(&mut stack, Status::Ok, 7, 100).unwrap();
    assert_eq!(agent.session().next_nonce(), 2);

    // All four attempts carried byte-identical datagrams: same nonce, same IV, same frame.
    assert_eq!(stack.attempts.len(), 4);
    assert!(stack.attempts.iter().all(|a| a == &stack.attempts[0]));
    let (iv, frame) = open_master(&stack.sent[0]);
    assert_eq!(frame.nonce(), 1);
    assert_eq!(frame.pid(), 4242);
    assert_eq!(frame.payload(), 7);
    assert_eq!(iv.counter, 1);
    assert_eq!(iv.random, derive_iv_prefix(&SALT, 0));

    // The next beat moves both the nonce and the AEAD counter by exactly one.
    agent
        .try_beat(&mut stack, Status::Degraded, 8, 101)
        .unwrap();
    let (iv2, frame2) = open_master(&stack.sent[1]);
    assert_eq!((frame2.nonce(), iv2.counter), (2, 2));
    assert_eq!(frame2.status(), Status::Degraded);
}

#[test]
fn partial_failures_interleaved_keep_sequence_gapless() {
    // Refuse every other attempt across 20 beats: the observer must see nonces 1..=20 and
    // counters 1..=20 with no gap and no repeat.
    let mut agent = started(Agent::shared(77, Key::from_bytes(SHARED)));
    let mut stack = FakeStack::default();
    let mut now = 0;
    let mut delivered = 0;
    while delivered < 20 {
        now += 1;
        if now % 2 == 0 {
            stack.refusals.push(StackError::WouldBlock);
        }
        match agent.try_beat(&mut stack, Status::Ok, 0, now) {
            Ok(()) => delivered += 1,
            Err(e) => assert!(e.is_would_block(), "{e}"),
        }
    }
    let key = Key::from_bytes(SHARED);
    for (i, d) in stack.sent.iter().enumerate() {
        assert_eq!(d.len(), 60);
        let (iv, f) = SharedDatagram::from_bytes(d).unwrap().open(&key).unwrap();
        assert_eq!(f.nonce(), i as u64 + 1);
        assert_eq!(iv.counter, i as u32 + 1);
    }
}

#[test]
fn plain_agent_is_ready_at_once_and_emits_parsable_frames() {
    static_assertions_plain();
    let mut agent = Agent::plain(1000);
    assert_eq!(agent.security(), Security::Plain);
    let mut sent = Vec::new();
    let mut t = |d: &[u8]| -> Result<(), StackError> {
        sent.push(d.to_vec());
        Ok(())
    };
    agent.try_beat(&mut t, Status::Ok, 1, 5).unwrap();
    agent.try_send(&mut t, Kind::Goodbye, 6).unwrap();
    assert_eq!(sent[0].len(), 32);
    let f = Frame::parse(&sent[0]).unwrap();
    assert_eq!((f.pid(), f.nonce(), f.timestamp()), (1000, 1, 5));
    let g = Frame::parse(&sent[1]).unwrap();
    assert!(g.is_goodbye());
}

// A plain agent in a `static` (const constructor).
fn static_assertions_plain() {
    static PLAIN: std::sync::Mutex<Agent> = std::sync::Mutex::new(Agent::plain(3));
    assert_eq!(PLAIN.lock().unwrap().pid(), 3);
}

#[test]
fn secure_agent_refuses_to_beat_before_start() {
    let mut agent = Agent::master(50, Key::from_bytes(MASTER));
    let mut stack = FakeStack::default();
    assert_eq!(
        agent.try_beat(&mut stack, Status::Ok, 0, 1),
        Err(Error::NotStarted)
    );
    assert!(stack.attempts.is_empty(), "nothing may reach the stack");
    let mut shared = Agent::shared(50, Key::from_bytes(SHARED));
    assert_eq!(shared.prepare(Kind::Terminal(0), 1), Err(Error::NotStarted));
    shared.start(SALT);
    assert!(shared.prepare(Kind::Terminal(0), 1).is_ok());
}

#[test]
fn frame_rules_surface_as_session_errors_and_reach_no_stack() {
    let mut stack = FakeStack::default();
    let mut agent = started(Agent::master(60, Key::from_bytes(MASTER)));
    assert_eq!(
        agent.try_beat(&mut stack, Status::Stall, 0, 1),
        Err(Error::Session(SessionError::Frame(
            vlp_core::DecodeError::StallOnWire
        )))
    );
    let mut bad_pid = Agent::plain(1);
    assert_eq!(
        bad_pid.try_beat(&mut stack, Status::Ok, 0, 1),
        Err(Error::Session(SessionError::Frame(
            vlp_core::DecodeError::BadPid(1)
        )))
    );
    assert!(stack.attempts.is_empty());
}

#[test]
fn stale_prepared_beat_is_refused_on_commit() {
    let mut agent = started(Agent::shared(61, Key::from_bytes(SHARED)));
    let a = agent.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    let b = agent.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    agent.commit(&a).unwrap();
    assert_eq!(
        agent.commit(&b),
        Err(Error::Session(SessionError::StaleBeat))
    );
}

#[test]
fn terminal_frame_uses_an_iv_but_not_a_nonce() {
    let mut agent = started(Agent::master(62, Key::from_bytes(MASTER)));
    let mut stack = FakeStack::default();
    agent.try_beat(&mut stack, Status::Ok, 0, 1).unwrap();
    agent
        .try_send(&mut stack, Kind::Terminal(0xDEAD), 2)
        .unwrap();
    agent.try_beat(&mut stack, Status::Ok, 0, 3).unwrap();
    let frames: Vec<_> = stack.sent.iter().map(|d| open_master(d)).collect();
    assert_eq!(frames[1].1.nonce(), NONCE_TERMINAL);
    assert_eq!(frames[1].1.status(), Status::Critical);
    assert_eq!(frames[1].1.payload(), 0xDEAD);
    assert_eq!(frames[2].1.nonce(), 2);
    let counters: Vec<u32> = frames.iter().map(|(iv, _)| iv.counter).collect();
    assert_eq!(counters, [1, 2, 3]);
}

#[test]
fn master_agent_uses_the_derived_key_not_the_master() {
    let mut agent = started(Agent::master(63, Key::from_bytes(MASTER)));
    let p = agent.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    let dg = MasterDatagram::from_bytes(p.as_bytes()).unwrap();
    assert!(dg.open(&Key::from_bytes(MASTER)).is_err());
    assert!(dg
        .open(&derive_agent_key(&Key::from_bytes(MASTER), 63))
        .is_ok());
    // Restarting (a new boot's salt) does not derive again from the already-derived key.
    agent.start([10; SALT_LEN]);
    let p = agent.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
    let (iv, f) = open_master(p.as_bytes());
    assert_eq!(f.nonce(), 1);
    assert_eq!(iv.random, derive_iv_prefix(&[10; SALT_LEN], 0));
}

#[cfg(feature = "testing")]
#[test]
fn iv_rotation_is_followed_by_the_agent() {
    let mut agent = started(Agent::shared(64, Key::from_bytes(SHARED)));
    agent
        .session_mut()
        .iv_sequence_mut()
        .unwrap()
        .set_counter(u32::MAX);
    let mut stack = FakeStack::default();
    agent.try_beat(&mut stack, Status::Ok, 0, 1).unwrap();
    agent.try_beat(&mut stack, Status::Ok, 0, 2).unwrap();
    let key = Key::from_bytes(SHARED);
    let ivs: Vec<Iv> = stack
        .sent
        .iter()
        .map(|d| SharedDatagram::from_bytes(d).unwrap().open(&key).unwrap().0)
        .collect();
    assert_eq!(ivs[0].counter, u32::MAX);
    assert_eq!(ivs[1].counter, 1);
    assert_eq!(ivs[1].random, derive_iv_prefix(&SALT, 1));
}

/// A deterministic RNG standing in for a hardware one.
struct CountingRng(u8);
impl rand_core::RngCore for CountingRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for b in dst {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
}
impl rand_core::CryptoRng for CountingRng {}

/// A hardware RNG that reports a fault.
struct FailingRng;
impl rand_core::TryRngCore for FailingRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(0)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        dst.fill(0);
        Ok(())
    }
}
impl rand_core::TryCryptoRng for FailingRng {}

#[test]
fn fresh_salt_per_boot_gives_fresh_iv_prefix() {
    // Two "boots" of the same device with the same key: different salts, different
    // iv_random, so the same counter never appears under the same nonce twice.
    let mut rng = CountingRng(1);
    let mut boot1 = Agent::master(70, Key::from_bytes(MASTER));
    boot1.start_with_rng(&mut rng).unwrap();
    let mut boot2 = Agent::master(70, Key::from_bytes(MASTER));
    boot2.start_with_rng(&mut rng).unwrap();
    let n1 = open_master(
        boot1
            .prepare(Kind::Beat(Status::Ok, 0), 1)
            .unwrap()
            .as_bytes(),
    )
    .0;
    let n2 = open_master(
        boot2
            .prepare(Kind::Beat(Status::Ok, 0), 1)
            .unwrap()
            .as_bytes(),
    )
    .0;
    assert_eq!(n1.counter, n2.counter);
    assert_ne!(n1.random, n2.random);
}

#[test]
fn boot_counter_separates_boots_even_with_a_stuck_rng() {
    // A "stuck" RNG: the same bytes every boot.
    let s1 = salt_with_boot_counter(&mut CountingRng(1), 1).unwrap();
    let s2 = salt_with_boot_counter(&mut CountingRng(1), 2).unwrap();
    assert_ne!(s1, s2);
    assert_eq!(s1[..12], s2[..12]);
    assert_ne!(derive_iv_prefix(&s1, 0), derive_iv_prefix(&s2, 0));
}

#[test]
fn dead_rng_is_refused() {
    assert_eq!(salt_from_rng(&mut FailingRng), Err(Error::Entropy));
    assert_eq!(
        salt_with_boot_counter(&mut FailingRng, 5),
        Err(Error::Entropy)
    );
    let mut agent = Agent::shared(80, Key::from_bytes(SHARED));
    assert_eq!(agent.start_with_rng(&mut FailingRng), Err(Error::Entropy));
    assert!(!agent.is_started());
}

#[test]
fn agent_fits_the_ram_budget() {
    // Also asserted at compile time in the crate; printed here for the report.
    let size = core::mem::size_of::<Agent>();
    println!("size_of::<Agent>() = {size}");
    println!(
        "size_of::<GlobalAgent>() = {}",
        core::mem::size_of::<varta_client_nostd::GlobalAgent>()
    );
    assert!(size <= varta_client_nostd::AGENT_RAM_BUDGET);
}

/// `Agent::agent_key`: a device holding only its own key sends its fixed agent id; the
/// observer's master-derived key for that id opens every datagram, another id's does not.
#[test]
fn agent_key_agent_is_opened_with_the_master_derived_key_for_its_id_only() {
    let master = Key::from_bytes(MASTER);
    let mut agent = Agent::agent_key(77, derive_agent_key(&master, 77));
    assert_eq!(agent.security(), Security::Master);
    assert_eq!(
        agent.try_beat(&mut FakeStack::default(), Status::Ok, 0, 1),
        Err(Error::NotStarted)
    );
    agent.start(SALT);
    let mut stack = FakeStack::default();
    for t in 1..=3 {
        agent.try_beat(&mut stack, Status::Ok, 5, t).unwrap();
    }
    agent.try_send(&mut stack, Kind::Goodbye, 4).unwrap();
    for (i, d) in stack.sent.iter().enumerate() {
        let (iv, f) = open_master(d);
        assert_eq!((f.pid(), iv.counter), (77, i as u32 + 1));
        let dg = MasterDatagram::from_bytes(d).unwrap();
        assert!(dg.open(&derive_agent_key(&master, 78)).is_err());
    }
    // Same bytes as a master-key agent of the same id: the observer cannot tell them apart.
    let mut by_master = started(Agent::master(77, master.clone()));
    let mut again = FakeStack::default();
    by_master.try_beat(&mut again, Status::Ok, 5, 1).unwrap();
    assert_eq!(again.sent[0], stack.sent[0]);
}
