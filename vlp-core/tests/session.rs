//! The sender's session: nonces 1, 2, 3, … with commit-on-success, monotonic timestamps, AEAD
//! IVs that never repeat (across a forced prefix rotation too), and the receiver side (open +
//! replay window) accepting everything a session commits.

use std::collections::HashSet;

use proptest::prelude::*;
use vlp_core::kdf::{derive_agent_key, derive_iv_prefix};
use vlp_core::session::{COUNTER_START, NONCE_START};
use vlp_core::{
    Beat, DecodeError, Iv, Key, MasterDatagram, ReplayWindow, Session, SessionError,
    SharedDatagram, Status, NONCE_TERMINAL,
};

const SALT: [u8; 16] = [0x5A; 16];

fn key() -> Key {
    Key::from_bytes([0x33; 32])
}

#[test]
fn first_beat_is_nonce_1_counter_start_prefix_0() {
    let s = Session::secure(1234, SALT);
    let b = s.beat(Status::Ok, 9, 100).unwrap();
    assert_eq!(b.frame().nonce(), NONCE_START);
    assert_eq!(NONCE_START, 1);
    assert_eq!(b.frame().pid(), 1234);
    assert_eq!(b.frame().timestamp(), 100);
    assert_eq!(b.frame().payload(), 9);
    assert_eq!(
        b.iv(),
        Some(Iv {
            random: derive_iv_prefix(&SALT, 0),
            counter: COUNTER_START
        })
    );
    assert_eq!(b.emit(), b.frame().emit());
    assert!(s.is_secure());
    assert!(!Session::plain(1234).is_secure());
    assert_eq!(
        Session::plain(1234).beat(Status::Ok, 0, 0).unwrap().iv(),
        None
    );
}

#[test]
fn nonce_wraps_past_max_minus_one_to_zero_then_one() {
    let mut s = Session::plain(50);
    s.set_next_nonce(NONCE_TERMINAL - 2);
    let mut seen = Vec::new();
    for t in 0..5 {
        let b = s.beat(Status::Ok, 0, t).unwrap();
        seen.push(b.frame().nonce());
        s.commit(&b).unwrap();
    }
    assert_eq!(
        seen,
        [NONCE_TERMINAL - 2, NONCE_TERMINAL - 1, 0, 1, 2],
        "the terminal nonce is never a regular beat's"
    );
}

#[test]
fn uncommitted_beats_consume_nothing() {
    let mut s = Session::secure(50, SALT);
    let snapshot = s.clone();
    let a = s.beat(Status::Ok, 1, 10).unwrap();
    let b = s.beat(Status::Degraded, 2, 5).unwrap(); // regressing clock, never committed
    let t = s.terminal(3, 11).unwrap();
    assert_eq!(s, snapshot, "preparing does not mutate");
    assert_eq!(a.frame().nonce(), b.frame().nonce());
    assert_eq!(a.iv(), b.iv());
    assert_eq!(a.iv(), t.iv());
    assert_eq!(s.clock_regressions(), 0);
    // The transport refused `a`; the retry is identical in nonce and IV.
    let retry = s.beat(Status::Ok, 1, 12).unwrap();
    assert_eq!(retry.frame().nonce(), a.frame().nonce());
    assert_eq!(retry.iv(), a.iv());
    s.commit(&retry).unwrap();
    let next = s.beat(Status::Ok, 1, 13).unwrap();
    assert_eq!(next.frame().nonce(), 2);
    assert_eq!(next.iv().unwrap().counter, COUNTER_START + 1);
}

#[test]
fn stale_beats_are_refused_and_change_nothing() {
    let mut s = Session::secure(50, SALT);
    let first = s.beat(Status::Ok, 0, 1).unwrap();
    let early_terminal = s.terminal(0, 1).unwrap();
    s.commit(&first).unwrap();
    let snapshot = s.clone();
    // The same beat twice.
    assert_eq!(s.commit(&first), Err(SessionError::StaleBeat));
    // A terminal prepared before the last commit carries a used IV.
    assert_eq!(s.commit(&early_terminal), Err(SessionError::StaleBeat));
    // A beat of another session: other pid; same pid but another salt.
    let other_pid = Session::secure(51, SALT);
    let mut other_pid_b = other_pid.beat(Status::Ok, 0, 1).unwrap();
    assert_eq!(s.commit(&other_pid_b), Err(SessionError::StaleBeat));
    let mut other_salt = Session::secure(50, [1; 16]);
    other_salt
        .commit(&other_salt.beat(Status::Ok, 0, 1).unwrap())
        .unwrap();
    let other_salt_b = other_salt.beat(Status::Ok, 0, 2).unwrap();
    assert_eq!(other_salt_b.frame().nonce(), 2);
    assert_eq!(s.commit(&other_salt_b), Err(SessionError::StaleBeat));
    // A plain beat into a secure session.
    let plain = Session::plain(50);
    let mut p = plain.clone();
    p.commit(&plain.beat(Status::Ok, 0, 1).unwrap()).unwrap();
    assert_eq!(
        s.commit(&p.beat(Status::Ok, 0, 1).unwrap()),
        Err(SessionError::StaleBeat)
    );
    assert_eq!(s, snapshot);
    // After a restart, beats of the old session are stale.
    let pending = s.beat(Status::Ok, 0, 2).unwrap();
    s.restart(60, Some([2; 16]));
    assert_eq!(s.commit(&pending), Err(SessionError::StaleBeat));
    other_pid_b = s.beat(Status::Ok, 0, 2).unwrap();
    assert_eq!(s.commit(&other_pid_b), Ok(()));
}

#[test]
fn terminal_and_goodbye() {
    let mut s = Session::secure(50, SALT);
    let b = s.beat(Status::Ok, 0, 1).unwrap();
    s.commit(&b).unwrap();
    let t = s.terminal(0xDEAD, 2).unwrap();
    assert_eq!(t.frame().status(), Status::Critical);
    assert_eq!(t.frame().nonce(), NONCE_TERMINAL);
    assert_eq!(t.frame().payload(), 0xDEAD);
    assert!(!t.frame().is_goodbye());
    let g = s.goodbye(2).unwrap();
    assert!(g.frame().is_goodbye());
    assert_eq!(g.iv(), t.iv(), "both would use the next IV");
    s.commit(&g).unwrap();
    // The terminal consumed an IV but not a nonce.
    let n = s.beat(Status::Ok, 0, 3).unwrap();
    assert_eq!(n.frame().nonce(), 2);
    assert_eq!(n.iv().unwrap().counter, COUNTER_START + 2);
}

#[test]
fn timestamps_monotonic_and_regressions_counted_on_commit_only() {
    let mut s = Session::plain(50);
    s.commit(&s.beat(Status::Ok, 0, 1_000).unwrap()).unwrap();
    let back = s.beat(Status::Ok, 0, 10).unwrap();
    assert_eq!(back.frame().timestamp(), 1_000);
    assert_eq!(s.clock_regressions(), 0, "preparing does not count");
    s.commit(&back).unwrap();
    assert_eq!(s.clock_regressions(), 1);
    // u64::MAX is reserved (§2 rule 7): clamped below it, and stays there.
    let top = s.beat(Status::Ok, 0, u64::MAX).unwrap();
    assert_eq!(top.frame().timestamp(), u64::MAX - 1);
    s.commit(&top).unwrap();
    let after = s.beat(Status::Ok, 0, 5).unwrap();
    assert_eq!(after.frame().timestamp(), u64::MAX - 1);
    // A restart resets the floor (a new session) but keeps the regression count.
    s.restart(51, None);
    assert_eq!(s.beat(Status::Ok, 0, 5).unwrap().frame().timestamp(), 5);
    assert_eq!(s.clock_regressions(), 1);
}

#[test]
fn invalid_fields_are_errors() {
    let s = Session::plain(50);
    assert_eq!(
        s.beat(Status::Stall, 0, 1),
        Err(SessionError::Frame(DecodeError::StallOnWire))
    );
    for pid in [0, 1] {
        let s = Session::secure(pid, SALT);
        assert_eq!(
            s.beat(Status::Ok, 0, 1),
            Err(SessionError::Frame(DecodeError::BadPid(pid)))
        );
        assert_eq!(
            s.terminal(0, 1),
            Err(SessionError::Frame(DecodeError::BadPid(pid)))
        );
    }
    let plain = s.beat(Status::Ok, 0, 1).unwrap();
    assert_eq!(plain.seal_shared(&key()), Err(SessionError::NotSecure));
    assert_eq!(plain.seal_master(&key()), Err(SessionError::NotSecure));
    for e in [
        SessionError::Frame(DecodeError::BadPid(0)),
        SessionError::NotSecure,
        SessionError::IvExhausted,
        SessionError::StaleBeat,
        SessionError::KeyBoundToPid,
    ] {
        assert!(!e.to_string().is_empty());
    }
}

/// The last IV of the last prefix is used once; after it the session refuses to seal.
#[test]
fn iv_space_exhaustion() {
    let mut s = Session::secure(50, SALT);
    let seq = s.iv_sequence_mut().unwrap();
    seq.set_prefix_index(u32::MAX);
    seq.set_counter(u32::MAX - 1);
    let mut ivs = Vec::new();
    for t in 0..2 {
        let b = s.beat(Status::Ok, 0, t).unwrap();
        ivs.push(b.iv().unwrap());
        s.commit(&b).unwrap();
    }
    assert_eq!(ivs[1].counter, u32::MAX);
    assert_eq!(ivs[1].random, derive_iv_prefix(&SALT, u32::MAX));
    assert_eq!(s.beat(Status::Ok, 0, 3), Err(SessionError::IvExhausted));
    assert_eq!(s.terminal(0, 3), Err(SessionError::IvExhausted));
    // A new salt gives a fresh IV space.
    s.restart(50, Some([9; 16]));
    assert!(s.beat(Status::Ok, 0, 4).is_ok());
}

/// A long run through a forced IV-prefix rotation (twice): every committed beat has a
/// distinct IV, nonces run 1..=n, the rotation lands on the next prefix at COUNTER_START, and
/// the receiver (open + replay window) accepts every datagram exactly once.
#[test]
fn long_run_with_forced_rotations_never_repeats_an_iv() {
    const N: u64 = 6_000;
    let agent = derive_agent_key(&key(), 50);
    let mut s = Session::secure(50, SALT);
    s.iv_sequence_mut().unwrap().set_counter(u32::MAX - 1_000);
    let mut ivs = HashSet::new();
    let mut window = ReplayWindow::new();
    let mut rotations = Vec::new();
    let mut last = None::<Iv>;
    for i in 0..N {
        if i == 3_000 {
            // Second rotation, forced from the middle of prefix 1.
            s.iv_sequence_mut().unwrap().set_counter(u32::MAX - 500);
        }
        let b = s.beat(Status::Ok, i as u32, i * 10).unwrap();
        let iv = b.iv().unwrap();
        assert_eq!(b.frame().nonce(), i + 1);
        assert!(
            ivs.insert((iv.random, iv.counter)),
            "IV repeated at beat {i}"
        );
        if let Some(prev) = last {
            if prev.random == iv.random {
                assert!(iv.counter > prev.counter);
            } else {
                assert_eq!(
                    prev.counter,
                    u32::MAX,
                    "rotation only after the last counter"
                );
                assert_eq!(iv.counter, COUNTER_START);
                rotations.push((i, iv.random));
            }
        }
        // Receiver side: shared and master datagrams open and pass the replay window.
        let d = b.seal_shared(&key()).unwrap();
        assert_eq!(window.check(&d.iv()), Ok(()));
        let (opened_iv, f) = SharedDatagram::from_bytes(&d.0)
            .unwrap()
            .open(&key())
            .unwrap();
        window.commit(&opened_iv);
        assert_eq!(&f, b.frame());
        assert!(window.check(&d.iv()).is_err(), "replay of beat {i}");
        if i % 97 == 0 {
            let m = b.seal_master(&agent).unwrap();
            assert_eq!(
                MasterDatagram::from_bytes(&m.0).unwrap().open(&agent),
                Ok((iv, f))
            );
        }
        s.commit(&b).unwrap();
        last = Some(iv);
    }
    assert_eq!(ivs.len() as u64, N);
    assert_eq!(
        rotations,
        [
            (1_001, derive_iv_prefix(&SALT, 1)),
            (3_501, derive_iv_prefix(&SALT, 2))
        ]
    );
    assert_eq!(s.iv_sequence().unwrap().prefix_index(), 2);
    assert_eq!(s.next_nonce(), N + 1);
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Beat(Status),
    Terminal,
    Goodbye,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop_oneof![Just(Status::Ok), Just(Status::Degraded), Just(Status::Critical)].prop_map(Op::Beat),
        1 => Just(Op::Terminal),
        1 => Just(Op::Goodbye),
    ]
}

fn prepare(s: &Session, op: Op, now: u64) -> Beat {
    match op {
        Op::Beat(st) => s.beat(st, 0, now),
        Op::Terminal => s.terminal(0, now),
        Op::Goodbye => s.goodbye(now),
    }
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary beats, terminals and goodbyes, each accepted or refused by the "transport",
    /// on a clock that may jump back: committed regular nonces are exactly 1, 2, 3, …;
    /// refused beats leave the session untouched; committed timestamps never decrease; IVs
    /// never repeat and advance by one per commit; the receiver accepts every commit.
    #[test]
    fn session_invariants(
        ops in proptest::collection::vec((op(), -50i64..1_000, any::<bool>()), 1..150),
        start_counter in prop_oneof![Just(COUNTER_START), Just(u32::MAX - 20)],
    ) {
        let mut s = Session::secure(4321, SALT);
        s.iv_sequence_mut().unwrap().set_counter(start_counter);
        let mut now: i64 = 1_000;
        let mut regular = Vec::new();
        let mut ivs = HashSet::new();
        let mut last_ts = 0u64;
        let mut prev_iv = None::<Iv>;
        let mut window = ReplayWindow::new();
        let mut regressions = 0;
        for (op, dt, accepted) in ops {
            now = (now + dt).max(0);
            let before = s.clone();
            let b = prepare(&s, op, now as u64);
            prop_assert_eq!(&s, &before);
            if !accepted {
                // The retry prepares the same nonce and IV.
                let again = prepare(&s, op, now as u64);
                prop_assert_eq!(again.frame().nonce(), b.frame().nonce());
                prop_assert_eq!(again.iv(), b.iv());
                continue;
            }
            let f = *b.frame();
            let iv = b.iv().unwrap();
            if (now as u64) < last_ts {
                regressions += 1;
            }
            s.commit(&b).unwrap();
            prop_assert!(f.timestamp() >= last_ts);
            last_ts = f.timestamp();
            prop_assert!(ivs.insert((iv.random, iv.counter)));
            if let Some(p) = prev_iv {
                if p.random == iv.random {
                    prop_assert_eq!(iv.counter, p.counter + 1);
                } else {
                    prop_assert_eq!((p.counter, iv.counter), (u32::MAX, COUNTER_START));
                }
            }
            prev_iv = Some(iv);
            match op {
                Op::Beat(_) => regular.push(f.nonce()),
                Op::Terminal | Op::Goodbye => prop_assert!(f.is_terminal()),
            }
            let d = SharedDatagram::seal(&key(), &iv, &f);
            prop_assert_eq!(window.check(&d.iv()), Ok(()));
            prop_assert_eq!(d.open(&key()), Ok((iv, f)));
            window.commit(&iv);
        }
        let want: Vec<u64> = (1..=regular.len() as u64).collect();
        prop_assert_eq!(regular, want);
        prop_assert_eq!(s.clock_regressions(), regressions);
    }
}
