//! One test per rule of the tracker, each asserting the exact outcome.

use vlp_core::kdf::derive_agent_key;
use vlp_core::{
    DecodeError, Frame, Iv, Key, MasterDatagram, OpenError, ReplayError, SharedDatagram, Status,
    NONCE_TERMINAL,
};

use super::*;

mod persist;
mod security;
mod thresholds;

const MS: Nanos = 1_000_000;
const THR: Nanos = 200 * MS;
const EVICT: Nanos = 10_000 * MS;
const UID: u32 = 1000;

fn cfg() -> TrackerConfig {
    TrackerConfig {
        threshold: THR,
        capacity: 16,
        evict_after: EVICT,
        allowed_uids: vec![UID],
        udp: vec![
            UdpMode::Plain,
            UdpMode::Secure {
                keys: vec![key(1), key(2)],
                master: Some(key(9)),
            },
        ],
        proven_reserve: None,
        tombstones: None,
        eviction: None,
    }
}

fn key(b: u8) -> Key {
    Key::from_bytes([b; 32])
}

fn unix(pid: u32) -> Origin {
    Origin::Unix { pid, uid: UID }
}

fn udp(listener: usize) -> Origin {
    Origin::Udp { listener }
}

fn uid(pid: u32) -> AgentId {
    AgentId::unix(pid)
}

fn beat(pid: u32, ts: u64, nonce: u64) -> [u8; 32] {
    Frame::new(Status::Ok, pid, ts, nonce, 0).unwrap().emit()
}

fn frame(status: Status, pid: u32, ts: u64, nonce: u64, payload: u32) -> Frame {
    Frame::new(status, pid, ts, nonce, payload).unwrap()
}

fn events(t: &mut Tracker) -> Vec<Event> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

fn iv(stream: u8, counter: u32) -> Iv {
    Iv {
        random: [stream; 8],
        counter,
    }
}

fn shared(k: &Key, stream: u8, counter: u32, f: &Frame) -> [u8; 60] {
    SharedDatagram::seal(k, &iv(stream, counter), f).0
}

fn master(stream: u8, counter: u32, f: &Frame) -> [u8; 64] {
    MasterDatagram::seal(&derive_agent_key(&key(9), f.pid()), &iv(stream, counter), f).0
}

#[test]
fn first_beat_is_new_agent_and_sets_the_deadline() {
    let mut t = Tracker::new(cfg());
    assert_eq!(t.poll_timeout(), None, "no agents, no wake-ups");
    let a = t.handle_datagram(5, &unix(42), &beat(42, 7, 1)).unwrap();
    assert_eq!(a.agent, uid(42));
    assert_eq!(a.kind, AcceptKind::NewAgent);
    assert_eq!(
        events(&mut t),
        [Event::NewAgent {
            at: 5,
            agent: uid(42),
            status: Status::Ok,
            nonce: 1
        }]
    );
    assert_eq!(t.poll_timeout(), Some(5 + THR));
    assert_eq!(t.len(), 1);
    assert_eq!(t.stats().accepted, 1);
}

#[test]
fn refused_uid_is_counted_before_decoding() {
    let mut t = Tracker::new(cfg());
    let r = t.handle_datagram(0, &Origin::Unix { pid: 42, uid: 7 }, &[0u8; 3]);
    assert_eq!(r.unwrap_err(), Rejection::UidRefused { uid: 7 });
    assert_eq!(t.stats().rejected(Reason::UidRefused), 1);
    assert_eq!(t.stats().rejected(Reason::BadLength), 0);
    assert!(t.is_empty());
}

#[test]
fn each_decode_error_is_counted_by_kind() {
    let mut t = Tracker::new(cfg());
    let good = beat(42, 1, 1);
    let mut magic = good;
    magic[0] = b'X';
    let r = t.handle_datagram(0, &unix(42), &magic).unwrap_err();
    assert_eq!(r, Rejection::Decode(DecodeError::BadMagic));
    assert_eq!(r.reason(), "bad_magic");
    assert_eq!(r.class(), ReasonClass::Decode);
    let r = t.handle_datagram(0, &unix(42), &good[..31]).unwrap_err();
    assert_eq!(r, Rejection::Decode(DecodeError::BadLength { len: 31 }));
    let mut crc = good;
    crc[31] ^= 1;
    assert!(matches!(
        t.handle_datagram(0, &unix(42), &crc),
        Err(Rejection::Decode(DecodeError::BadCrc { .. }))
    ));
    assert_eq!(t.stats().rejected(Reason::BadMagic), 1);
    assert_eq!(t.stats().rejected(Reason::BadLength), 1);
    assert_eq!(t.stats().rejected(Reason::BadCrc), 1);
    assert_eq!(t.stats().rejected_class(ReasonClass::Decode), 3);
    assert!(t.is_empty());
}

#[test]
fn pid_other_than_attested_is_an_auth_failure() {
    let mut t = Tracker::new(cfg());
    let r = t
        .handle_datagram(0, &unix(42), &beat(43, 1, 1))
        .unwrap_err();
    assert_eq!(
        r,
        Rejection::PidMismatch {
            attested: 42,
            claimed: 43
        }
    );
    assert_eq!(r.class(), ReasonClass::Auth);
    assert_eq!(t.stats().rejected(Reason::PidMismatch), 1);
    assert!(t.is_empty());
}

#[test]
fn nonces_must_increase_duplicates_and_reorderings_are_stale() {
    let mut t = Tracker::new(cfg());
    for (n, ts) in [(1, 10), (2, 20), (5, 50)] {
        let a = t
            .handle_datagram(n * MS, &unix(42), &beat(42, ts, n))
            .unwrap();
        assert_eq!(
            a.kind,
            if n == 1 {
                AcceptKind::NewAgent
            } else {
                AcceptKind::Beat
            }
        );
    }
    // Exact duplicate.
    assert_eq!(
        t.handle_datagram(6 * MS, &unix(42), &beat(42, 50, 5)),
        Err(Rejection::StaleNonce { nonce: 5, last: 5 })
    );
    // Reordered older beat (nonce and timestamp consistently older).
    assert_eq!(
        t.handle_datagram(6 * MS, &unix(42), &beat(42, 40, 4)),
        Err(Rejection::StaleNonce { nonce: 4, last: 5 })
    );
    assert_eq!(t.stats().rejected(Reason::StaleNonce), 2);
    assert_eq!(t.agent(uid(42)).unwrap().nonce, 5);
    assert_eq!(
        t.agent(uid(42)).unwrap().last_beat,
        5 * MS,
        "stale beats do not refresh"
    );
}

#[test]
fn stall_fires_once_at_the_exact_deadline_and_recovery_follows() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(1_000, &unix(42), &beat(42, 1, 1))
        .unwrap();
    events(&mut t);
    let deadline = 1_000 + THR;
    t.handle_timeout(deadline - 1);
    assert_eq!(events(&mut t), []);
    // The shell wakes late: `at` is still the deadline.
    t.handle_timeout(deadline + 37 * MS);
    assert_eq!(
        events(&mut t),
        [Event::Stalled {
            at: deadline,
            agent: uid(42),
            last_beat: 1_000,
            nonce: 1
        }]
    );
    assert_eq!(t.agent(uid(42)).unwrap().state, AgentState::Stalled);
    assert_eq!(t.agent(uid(42)).unwrap().reported_status(), Status::Stall);
    // Silence goes on: no second stall, the next deadline is the eviction.
    t.handle_timeout(deadline + 150 * MS);
    assert_eq!(events(&mut t), []);
    assert_eq!(t.poll_timeout(), Some(deadline + EVICT));
    let now = deadline + 300 * MS;
    t.handle_datagram(now, &unix(42), &beat(42, 2, 2)).unwrap();
    assert_eq!(
        events(&mut t),
        [Event::Recovered {
            at: now,
            agent: uid(42),
            silent_for: now - 1_000
        }]
    );
    assert_eq!(t.poll_timeout(), Some(now + THR));
    let v = t.agent(uid(42)).unwrap();
    assert_eq!((v.state, v.stalls, v.beats), (AgentState::Alive, 1, 2));
    assert_eq!(t.stats().events(EventKind::Stall), 1);
    assert_eq!(t.stats().events(EventKind::Recovered), 1);
}

#[test]
fn beat_after_an_unfired_deadline_applies_the_stall_first() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    events(&mut t);
    // The shell never called handle_timeout.
    t.handle_datagram(THR + 5, &unix(42), &beat(42, 2, 2))
        .unwrap();
    assert_eq!(
        events(&mut t),
        [
            Event::Stalled {
                at: THR,
                agent: uid(42),
                last_beat: 0,
                nonce: 1
            },
            Event::Recovered {
                at: THR + 5,
                agent: uid(42),
                silent_for: THR + 5
            }
        ]
    );
}

#[test]
fn beat_exactly_at_the_deadline_is_a_stall_and_recovery() {
    // Silence of exactly `threshold` is a stall, whichever the shell calls first.
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    t.handle_datagram(THR - 1, &unix(42), &beat(42, 2, 2))
        .unwrap();
    events(&mut t);
    t.handle_datagram(2 * THR - 1, &unix(42), &beat(42, 3, 3))
        .unwrap();
    let e = events(&mut t);
    assert_eq!(e.len(), 2);
    assert!(matches!(e[0], Event::Stalled { at, .. } if at == 2 * THR - 1));
}

#[test]
fn status_change_is_reported() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    let f = frame(Status::Degraded, 42, 2, 2, 77).emit();
    t.handle_datagram(1, &unix(42), &f).unwrap();
    let f = frame(Status::Degraded, 42, 3, 3, 78).emit();
    t.handle_datagram(2, &unix(42), &f).unwrap();
    assert_eq!(
        events(&mut t)[1..],
        [Event::StatusChanged {
            at: 1,
            agent: uid(42),
            from: Status::Ok,
            to: Status::Degraded,
            payload: 77
        }]
    );
    assert_eq!(t.agent(uid(42)).unwrap().payload, 78);
}

#[test]
fn terminal_frame_is_a_crash_at_once_and_no_stall_follows() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    let f = Frame::terminal(42, 2, 0xdead).unwrap().emit();
    let a = t.handle_datagram(10, &unix(42), &f).unwrap();
    assert_eq!(a.kind, AcceptKind::Beat);
    assert_eq!(
        events(&mut t)[1..],
        [Event::Died {
            at: 10,
            agent: uid(42),
            clean: false,
            payload: 0xdead
        }]
    );
    // No stall, ever: the only deadline left is the eviction.
    assert_eq!(t.poll_timeout(), Some(10 + EVICT));
    t.handle_timeout(10 + EVICT - 1);
    assert_eq!(events(&mut t), []);
    t.handle_timeout(10 + EVICT);
    assert_eq!(
        events(&mut t),
        [Event::Evicted {
            at: 10 + EVICT,
            agent: uid(42)
        }]
    );
    assert!(t.is_empty());
    assert_eq!(t.poll_timeout(), None);
    assert_eq!(t.stats().events(EventKind::Crash), 1);
}

#[test]
fn goodbye_is_a_clean_death() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    let f = Frame::goodbye(42, 2).unwrap().emit();
    t.handle_datagram(10, &unix(42), &f).unwrap();
    assert_eq!(
        events(&mut t)[1..],
        [Event::Died {
            at: 10,
            agent: uid(42),
            clean: true,
            payload: vlp_core::GOODBYE_PAYLOAD
        }]
    );
    assert_eq!(
        t.agent(uid(42)).unwrap().state,
        AgentState::Dead { clean: true }
    );
    assert_eq!(t.stats().events(EventKind::Goodbye), 1);
}

#[test]
fn terminal_of_a_stalled_agent_ends_the_run_without_recovery() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    t.handle_timeout(THR);
    events(&mut t);
    let f = Frame::terminal(42, 2, 0).unwrap().emit();
    t.handle_datagram(THR + 1, &unix(42), &f).unwrap();
    assert_eq!(
        events(&mut t),
        [Event::Died {
            at: THR + 1,
            agent: uid(42),
            clean: false,
            payload: 0
        }]
    );
}

#[test]
fn frames_after_the_terminal_frame() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 100, 10)).unwrap();
    let term = Frame::terminal(42, 110, 0).unwrap().emit();
    t.handle_datagram(1, &unix(42), &term).unwrap();
    events(&mut t);
    // The terminal frame again, and a late beat of the dead session.
    assert_eq!(
        t.handle_datagram(2, &unix(42), &term),
        Err(Rejection::AfterTerminal)
    );
    assert_eq!(
        t.handle_datagram(2, &unix(42), &beat(42, 105, 11)),
        Err(Rejection::AfterTerminal)
    );
    assert_eq!(events(&mut t), []);
    // A beat stamped after the terminal frame: a new session.
    let a = t.handle_datagram(3, &unix(42), &beat(42, 200, 1)).unwrap();
    assert_eq!(a.kind, AcceptKind::Restart);
    assert_eq!(
        events(&mut t),
        [
            Event::SessionRestart {
                at: 3,
                agent: uid(42),
                nonce: 1
            },
            Event::StatusChanged {
                at: 3,
                agent: uid(42),
                from: Status::Critical,
                to: Status::Ok,
                payload: 0
            }
        ]
    );
    assert_eq!(t.poll_timeout(), Some(3 + THR));
    assert_eq!(t.stats().rejected(Reason::AfterTerminal), 2);
}

#[test]
fn dead_agent_starting_over_after_the_threshold_is_a_new_session() {
    // A device that crashed and rebooted: its clock and nonces start over, below the dead
    // session's (which was short, so they are not "far below").
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 5_000, 5))
        .unwrap();
    let term = Frame::terminal(42, 5_100, 1).unwrap().emit();
    t.handle_datagram(1, &unix(42), &term).unwrap();
    // Soon after the death it looks like a late frame of the dead session.
    assert_eq!(
        t.handle_datagram(THR, &unix(42), &beat(42, 3_000, 3)),
        Err(Rejection::AfterTerminal)
    );
    let a = t
        .handle_datagram(THR + 1, &unix(42), &beat(42, 3_000, 3))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::Restart);
}

#[test]
fn recycled_pid_with_nonce_and_clock_started_over_is_a_new_session_at_once() {
    let mut t = Tracker::new(cfg());
    // A long-lived agent: nonce 1000 at 100 s of its clock.
    t.handle_datagram(0, &unix(42), &beat(42, 100_000 * MS, 1000))
        .unwrap();
    events(&mut t);
    // Another process got pid 42 and starts over, while the old entry is still alive.
    let a = t
        .handle_datagram(MS, &unix(42), &beat(42, 3 * MS, 1))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::Restart);
    assert_eq!(
        events(&mut t),
        [Event::SessionRestart {
            at: MS,
            agent: uid(42),
            nonce: 1
        }]
    );
    // Its next beats are accepted as usual.
    let a = t
        .handle_datagram(2 * MS, &unix(42), &beat(42, 4 * MS, 2))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::Beat);
    assert_eq!(t.stats().events(EventKind::Restart), 1);
}

#[test]
fn early_reordering_is_not_taken_for_a_restart() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 10, 1)).unwrap();
    t.handle_datagram(1, &unix(42), &beat(42, 30, 3)).unwrap();
    assert_eq!(
        t.handle_datagram(2, &unix(42), &beat(42, 20, 2)),
        Err(Rejection::StaleNonce { nonce: 2, last: 3 })
    );
    assert_eq!(t.stats().events(EventKind::Restart), 0);
}

#[test]
fn nonce_back_while_clock_goes_on_is_a_new_session() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1_000, 5))
        .unwrap();
    let a = t
        .handle_datagram(1, &unix(42), &beat(42, 2_000, 1))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::Restart);
    // And the reverse: nonce forward, clock back.
    let a = t
        .handle_datagram(2, &unix(42), &beat(42, 1_500, 9))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::Restart);
}

#[test]
fn stalled_agent_starting_over_is_a_new_session() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 100, 4)).unwrap();
    t.handle_timeout(THR);
    events(&mut t);
    let a = t
        .handle_datagram(THR + 1, &unix(42), &beat(42, 90, 3))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::Restart);
    assert_eq!(
        events(&mut t),
        [
            Event::Recovered {
                at: THR + 1,
                agent: uid(42),
                silent_for: THR + 1
            },
            Event::SessionRestart {
                at: THR + 1,
                agent: uid(42),
                nonce: 3
            }
        ]
    );
}

#[test]
fn capacity_refuses_newcomers_but_dead_entries_make_room() {
    let mut c = cfg();
    c.capacity = 2;
    let mut t = Tracker::new(c);
    t.handle_datagram(0, &unix(10), &beat(10, 1, 1)).unwrap();
    t.handle_datagram(0, &unix(11), &beat(11, 1, 1)).unwrap();
    assert_eq!(
        t.handle_datagram(1, &unix(12), &beat(12, 1, 1)),
        Err(Rejection::CapacityExceeded)
    );
    assert_eq!(t.stats().rejected(Reason::CapacityExceeded), 1);
    assert_eq!(Rejection::CapacityExceeded.class(), ReasonClass::Capacity);
    // Known agents still beat.
    t.handle_datagram(2, &unix(10), &beat(10, 2, 2)).unwrap();
    // A death frees a place for the next newcomer.
    let term = Frame::terminal(11, 2, 0).unwrap().emit();
    t.handle_datagram(3, &unix(11), &term).unwrap();
    events(&mut t);
    t.handle_datagram(4, &unix(12), &beat(12, 1, 1)).unwrap();
    assert_eq!(
        events(&mut t),
        [
            Event::Evicted {
                at: 4,
                agent: uid(11)
            },
            Event::NewAgent {
                at: 4,
                agent: uid(12),
                status: Status::Ok,
                nonce: 1
            }
        ]
    );
    assert_eq!(t.len(), 2);
    t.check_invariants().unwrap();
}

#[test]
fn stalled_entries_are_evicted_after_evict_after() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    t.handle_timeout(THR);
    assert_eq!(t.poll_timeout(), Some(THR + EVICT));
    events(&mut t);
    t.handle_timeout(u64::MAX);
    assert_eq!(
        events(&mut t),
        [Event::Evicted {
            at: THR + EVICT,
            agent: uid(42)
        }]
    );
    assert_eq!(t.stats().events(EventKind::Evicted), 1);
    // It comes back as a new agent.
    let a = t
        .handle_datagram(u64::MAX, &unix(42), &beat(42, 2, 2))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::NewAgent);
}

#[test]
fn beat_of_an_overdue_evicted_agent_is_a_new_agent() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    events(&mut t);
    let now = THR + EVICT + 1;
    let a = t.handle_datagram(now, &unix(42), &beat(42, 2, 2)).unwrap();
    assert_eq!(a.kind, AcceptKind::NewAgent);
    let kinds: Vec<_> = events(&mut t).iter().map(|e| e.kind().as_str()).collect();
    assert_eq!(kinds, ["stall", "evicted", "new"]);
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(1_000, &unix(42), &beat(42, 1, 1))
        .unwrap();
    t.handle_datagram(10, &unix(42), &beat(42, 2, 2)).unwrap();
    assert_eq!(t.agent(uid(42)).unwrap().last_beat, 1_000);
    assert_eq!(t.now(), 1_000);
}

#[test]
fn timeout_batch_bounds_the_work_of_one_call() {
    let mut c = cfg();
    c.capacity = 3 * TIMEOUT_BATCH;
    let mut t = Tracker::new(c);
    let n = u32::try_from(TIMEOUT_BATCH).unwrap() + 10;
    for pid in 2..2 + n {
        t.handle_datagram(0, &unix(pid), &beat(pid, 1, 1)).unwrap();
    }
    events(&mut t);
    t.handle_timeout(THR);
    assert_eq!(events(&mut t).len(), TIMEOUT_BATCH);
    assert_eq!(t.poll_timeout(), Some(THR), "more are due: call again");
    t.handle_timeout(THR);
    assert_eq!(events(&mut t).len(), 10);
    assert_eq!(t.poll_timeout(), Some(THR + EVICT));
}

#[test]
fn plain_udp_identity_is_listener_and_frame_pid() {
    let mut t = Tracker::new(cfg());
    let a = t.handle_datagram(0, &udp(0), &beat(42, 1, 1)).unwrap();
    assert_eq!(a.agent, AgentId::udp(0, KeyClass::None, 42));
    assert!(!a.agent.is_attested());
    // The same pid on the Unix socket is another agent.
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(
        t.handle_datagram(0, &udp(7), &beat(42, 1, 1)),
        Err(Rejection::UnknownListener { listener: 7 })
    );
}

#[test]
fn secure_listener_refusals() {
    let mut t = Tracker::new(cfg());
    let f = frame(Status::Ok, 42, 1, 1, 0);
    assert_eq!(
        t.handle_datagram(0, &udp(1), &f.emit()),
        Err(Rejection::PlaintextRefused)
    );
    assert_eq!(
        t.handle_datagram(0, &udp(1), &[0u8; 50]),
        Err(Rejection::Decode(DecodeError::BadLength { len: 50 }))
    );
    let wrong = shared(&key(3), 1, 1, &f);
    let r = t.handle_datagram(0, &udp(1), &wrong).unwrap_err();
    assert_eq!(r, Rejection::Open(OpenError::BadTag));
    assert_eq!(r.class(), ReasonClass::Decrypt);
    let mut c = cfg();
    c.udp[1] = UdpMode::Secure {
        keys: vec![],
        master: None,
    };
    let mut t2 = Tracker::new(c);
    assert_eq!(
        t2.handle_datagram(0, &udp(1), &shared(&key(1), 1, 1, &f)),
        Err(Rejection::NoKey { len: 60 })
    );
    assert_eq!(
        t2.handle_datagram(0, &udp(1), &master(1, 1, &f)),
        Err(Rejection::NoKey { len: 64 })
    );
    // Plain listeners take only plain frames.
    assert_eq!(
        t.handle_datagram(0, &udp(0), &shared(&key(1), 1, 1, &f)),
        Err(Rejection::Decode(DecodeError::BadLength { len: 60 }))
    );
    assert!(t.is_empty());
}

#[test]
fn shared_keys_are_tried_in_turn() {
    let mut t = Tracker::new(cfg());
    let f = frame(Status::Ok, 42, 1, 1, 0);
    let a = t
        .handle_datagram(0, &udp(1), &shared(&key(2), 1, 1, &f))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::NewAgent);
    assert!(t.agents().next().unwrap().secure);
}

#[test]
fn secure_reordering_within_the_window_is_accepted_once() {
    let mut t = Tracker::new(cfg());
    let k = key(1);
    let d = |n: u64| shared(&k, 1, n as u32, &frame(Status::Ok, 42, n * 10, n, 0));
    for n in [1, 2, 5] {
        t.handle_datagram(n * MS, &udp(1), &d(n)).unwrap();
    }
    events(&mut t);
    // 4 and 3 arrive late: authentic, never seen: accepted, but they change nothing.
    for n in [4, 3] {
        let a = t.handle_datagram(6 * MS, &udp(1), &d(n)).unwrap();
        assert_eq!(a.kind, AcceptKind::Reordered);
    }
    let v = t.agents().next().unwrap();
    assert_eq!((v.nonce, v.last_beat, v.beats), (5, 5 * MS, 5));
    assert_eq!(events(&mut t), []);
    // A replay of any of them is refused by the window.
    assert_eq!(
        t.handle_datagram(7 * MS, &udp(1), &d(4)),
        Err(Rejection::Replay(ReplayError::Replayed { counter: 4 }))
    );
    assert_eq!(t.stats().reordered, 2);
    assert_eq!(t.stats().rejected(Reason::Replayed), 1);
}

#[test]
fn secure_counter_older_than_the_window_is_refused() {
    let mut t = Tracker::new(cfg());
    let k = key(1);
    let d = |n: u64| shared(&k, 1, n as u32, &frame(Status::Ok, 42, n * 10, n, 0));
    t.handle_datagram(0, &udp(1), &d(1)).unwrap();
    t.handle_datagram(1, &udp(1), &d(300)).unwrap();
    assert_eq!(
        t.handle_datagram(2, &udp(1), &d(100)),
        Err(Rejection::Replay(ReplayError::TooOld {
            counter: 100,
            highest: 300
        }))
    );
}

#[test]
fn replay_windows_are_per_agent_not_per_address() {
    // Two agents behind one address, both starting their counters at 1: neither is taken for
    // a replay of the other.
    let mut t = Tracker::new(cfg());
    let k = key(1);
    for n in 1..=3u64 {
        for pid in [42, 43] {
            let f = frame(Status::Ok, pid, n, n, 0);
            let stream = pid as u8;
            t.handle_datagram(n, &udp(1), &shared(&k, stream, n as u32, &f))
                .unwrap();
        }
    }
    assert_eq!(t.stats().accepted, 6);
    assert_eq!(t.stats().rejected_total(), 0);
}

#[test]
fn secure_restart_is_a_new_stream_and_the_old_stream_is_retired() {
    let mut t = Tracker::new(cfg());
    let k = key(1);
    let old: Vec<_> = (1..=5u64)
        .map(|n| shared(&k, 1, n as u32, &frame(Status::Ok, 42, n * 1000, n, 0)))
        .collect();
    for (i, d) in old.iter().enumerate() {
        t.handle_datagram(i as u64, &udp(1), d).unwrap();
    }
    events(&mut t);
    // The agent restarts: fresh salt, fresh stream, nonce from 1.
    let a = t
        .handle_datagram(
            10,
            &udp(1),
            &shared(&k, 2, 1, &frame(Status::Ok, 42, 5, 1, 0)),
        )
        .unwrap();
    assert_eq!(a.kind, AcceptKind::Restart);
    assert_eq!(
        events(&mut t),
        [Event::SessionRestart {
            at: 10,
            agent: udp1(42),
            nonce: 1
        }]
    );
    // An attacker replays the previous session: refused, nothing changes.
    assert_eq!(
        t.handle_datagram(11, &udp(1), &old[0]),
        Err(Rejection::RetiredStream)
    );
    assert_eq!(t.stats().rejected(Reason::RetiredStream), 1);
    assert_eq!(events(&mut t), []);
}

#[test]
fn master_key_agent_keys_are_derived_once_and_cached() {
    let mut t = Tracker::new(cfg());
    for n in 1..=5u64 {
        let f = frame(Status::Ok, 42, n, n, 0);
        t.handle_datagram(n, &udp(1), &master(1, n as u32, &f))
            .unwrap();
    }
    assert_eq!(t.stats().accepted, 5);
    assert_eq!(t.stats().key_derivations, 1);
}

#[test]
fn master_key_replay_is_refused_before_decryption() {
    let mut t = Tracker::new(cfg());
    let f = frame(Status::Ok, 42, 1, 1, 0);
    let d = master(1, 1, &f);
    t.handle_datagram(0, &udp(1), &d).unwrap();
    // The same IV with a broken tag: were it decrypted first this would be a decrypt
    // failure; the window refuses it before any AEAD work.
    let mut forged = d;
    forged[63] ^= 1;
    assert_eq!(
        t.handle_datagram(1, &udp(1), &forged),
        Err(Rejection::Replay(ReplayError::Replayed { counter: 1 }))
    );
    assert_eq!(t.stats().rejected(Reason::BadTag), 0);
}

#[test]
fn forged_master_datagrams_do_not_move_the_window_or_fill_the_cache() {
    let mut t = Tracker::new(cfg());
    let f = frame(Status::Ok, 42, 1, 1, 0);
    t.handle_datagram(0, &udp(1), &master(1, 1, &f)).unwrap();
    // Counter 2 with a bad tag: refused, and counter 2 stays acceptable.
    let f2 = frame(Status::Ok, 42, 2, 2, 0);
    let mut forged = master(1, 2, &f2);
    forged[20] ^= 0xff;
    assert_eq!(
        t.handle_datagram(1, &udp(1), &forged),
        Err(Rejection::Open(OpenError::BadTag))
    );
    t.handle_datagram(2, &udp(1), &master(1, 2, &f2)).unwrap();
    // Unknown pid with garbage: one derivation each time (never cached).
    let mut junk = master(1, 1, &frame(Status::Ok, 77, 1, 1, 0));
    junk[40] ^= 1;
    for _ in 0..3 {
        assert_eq!(
            t.handle_datagram(3, &udp(1), &junk),
            Err(Rejection::Open(OpenError::BadTag))
        );
    }
    assert_eq!(t.stats().key_derivations, 1 + 3);
    assert_eq!(t.len(), 1);
}

#[test]
fn sealed_pid_mismatch_is_an_auth_failure() {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
    let mut t = Tracker::new(cfg());
    // Pid 43's key, pid 43 in the clear and as AAD, but a frame claiming pid 42 inside: the
    // tag verifies, the pids differ.
    let k43 = derive_agent_key(&key(9), 43);
    let cipher = ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(k43.as_bytes()));
    let v = iv(1, 1);
    let mut body = frame(Status::Ok, 42, 1, 1, 0).emit();
    let tag = cipher
        .encrypt_in_place_detached(
            Nonce::from_slice(&v.nonce()),
            &43u32.to_le_bytes(),
            &mut body,
        )
        .unwrap();
    let mut d = [0u8; 64];
    d[..4].copy_from_slice(&43u32.to_le_bytes());
    d[4..16].copy_from_slice(&v.nonce());
    d[16..48].copy_from_slice(&body);
    d[48..].copy_from_slice(&tag);
    let r = t.handle_datagram(0, &udp(1), &d).unwrap_err();
    assert_eq!(
        r,
        Rejection::Open(OpenError::PidMismatch {
            outer: 43,
            inner: 42
        })
    );
    assert_eq!(r.class(), ReasonClass::Auth);
    assert_eq!(t.stats().rejected(Reason::SealedPidMismatch), 1);
    assert!(t.is_empty());
}

#[test]
fn terminal_first_frame_is_new_agent_then_died() {
    let mut t = Tracker::new(cfg());
    let f = Frame::terminal(42, 1, 5).unwrap().emit();
    t.handle_datagram(0, &unix(42), &f).unwrap();
    let kinds: Vec<_> = events(&mut t).iter().map(|e| e.kind().as_str()).collect();
    assert_eq!(kinds, ["new", "crash"]);
    assert_eq!(t.poll_timeout(), Some(EVICT));
    let v = t.agent(uid(42)).unwrap();
    assert_eq!(v.nonce, 0, "a terminal frame is not a regular nonce");
    assert_ne!(v.nonce, NONCE_TERMINAL);
}

#[test]
fn reason_labels_are_unique_and_decode_labels_match_vlp_core() {
    let mut seen = std::collections::HashSet::new();
    for r in Reason::ALL {
        assert!(seen.insert(r.as_str()), "duplicate label {}", r.as_str());
        assert_eq!(Reason::ALL[r as usize], r);
    }
    for (i, k) in DecodeError::KINDS.iter().enumerate() {
        assert_eq!(Reason::ALL[i].as_str(), *k);
        assert_eq!(Reason::ALL[i].class(), ReasonClass::Decode);
    }
}

#[test]
fn event_queue_is_bounded_and_overflow_counted() {
    let mut c = cfg();
    c.capacity = EVENT_QUEUE_CAP + 10;
    let mut t = Tracker::new(c);
    let n = u32::try_from(EVENT_QUEUE_CAP).unwrap() + 10;
    for pid in 2..2 + n {
        t.handle_datagram(0, &unix(pid), &beat(pid, 1, 1)).unwrap();
    }
    assert_eq!(t.stats().events_dropped, 10);
    assert_eq!(events(&mut t).len(), EVENT_QUEUE_CAP);
}

#[test]
fn agent_struct_fits_the_budget() {
    assert!(std::mem::size_of::<table::Agent>() <= 96);
}

/// The application's session and its panic hook's session (own salt, so its own AEAD
/// stream), as the std client builds them.
struct PanickyApp {
    app: vlp_core::Session,
    hook: vlp_core::Session,
}

impl PanickyApp {
    fn new(pid: u32) -> PanickyApp {
        PanickyApp {
            app: vlp_core::Session::secure(pid, [0xa1; 16]),
            hook: vlp_core::Session::secure(pid, [0xb2; 16]),
        }
    }

    fn beat(&mut self, k: &Key, ts: u64) -> [u8; 60] {
        let b = self.app.beat(Status::Ok, 0, ts).unwrap();
        self.app.commit(&b).unwrap();
        b.seal_shared(k).unwrap().0
    }

    fn panic(&mut self, k: &Key, ts: u64) -> [u8; 60] {
        let b = self.hook.terminal(0, ts).unwrap();
        self.hook.commit(&b).unwrap();
        b.seal_shared(k).unwrap().0
    }

    fn panic_master(&mut self, ts: u64) -> [u8; 64] {
        let b = self.hook.terminal(0, ts).unwrap();
        self.hook.commit(&b).unwrap();
        b.seal_master(&derive_agent_key(&key(9), self.hook.pid()))
            .unwrap()
            .0
    }

    fn beat_master(&mut self, ts: u64) -> [u8; 64] {
        let b = self.app.beat(Status::Ok, 0, ts).unwrap();
        self.app.commit(&b).unwrap();
        b.seal_master(&derive_agent_key(&key(9), self.app.pid()))
            .unwrap()
            .0
    }
}

/// A shared-key agent of listener 1.
fn udp1(pid: u32) -> AgentId {
    AgentId::udp(1, KeyClass::Shared, pid)
}

/// A per-agent-key (master-derived) agent of listener 1.
fn udp1_agent(pid: u32) -> AgentId {
    AgentId::udp(1, KeyClass::Agent, pid)
}

#[test]
fn panic_hook_terminal_on_its_own_stream_leaves_the_app_stream_alone() {
    let mut t = Tracker::new(cfg());
    let k = key(1);
    let mut p = PanickyApp::new(42);
    for i in 0..3 {
        t.handle_datagram(i, &udp(1), &p.beat(&k, i + 1)).unwrap();
    }
    events(&mut t);
    // A thread panics; the hook reports from its own stream. The agent died, as before.
    let crash = p.panic(&k, 10);
    let a = t.handle_datagram(10, &udp(1), &crash).unwrap();
    assert_eq!(a.kind, AcceptKind::Beat);
    assert_eq!(
        events(&mut t),
        [Event::Died {
            at: 10,
            agent: udp1(42),
            clean: false,
            payload: 0
        }]
    );
    // The process lives on and beats on its own stream: taken (not a retired stream), as a
    // dead agent's newer frame: a new session.
    let a = t.handle_datagram(20, &udp(1), &p.beat(&k, 20)).unwrap();
    assert_eq!(a.kind, AcceptKind::Restart);
    assert_eq!(
        events(&mut t),
        [
            Event::SessionRestart {
                at: 20,
                agent: udp1(42),
                nonce: 4
            },
            Event::StatusChanged {
                at: 20,
                agent: udp1(42),
                from: Status::Critical,
                to: Status::Ok,
                payload: 0
            }
        ]
    );
    assert_eq!(t.agent(udp1(42)).unwrap().state, AgentState::Alive);
    assert_eq!(
        t.poll_timeout(),
        Some(20 + THR),
        "tracked (and stalls) as before"
    );
    let a = t.handle_datagram(21, &udp(1), &p.beat(&k, 21)).unwrap();
    assert_eq!(a.kind, AcceptKind::Beat);
    // A replay of the crash report does not kill it again.
    assert_eq!(
        t.handle_datagram(22, &udp(1), &crash),
        Err(Rejection::Replay(ReplayError::Replayed { counter: 1 }))
    );
    assert_eq!(events(&mut t), []);
    assert_eq!(t.agent(udp1(42)).unwrap().state, AgentState::Alive);
    // Another thread panics later: a genuine second crash report on the hook's stream.
    let crash2 = p.panic(&k, 30);
    t.handle_datagram(30, &udp(1), &crash2).unwrap();
    assert_eq!(
        events(&mut t),
        [Event::Died {
            at: 30,
            agent: udp1(42),
            clean: false,
            payload: 0
        }]
    );
    for d in [&crash, &crash2] {
        assert!(matches!(
            t.handle_datagram(31, &udp(1), d),
            Err(Rejection::Replay(ReplayError::Replayed { .. }) | Rejection::AfterTerminal)
        ));
    }
    assert_eq!(
        t.handle_datagram(40, &udp(1), &p.beat(&k, 40))
            .unwrap()
            .kind,
        AcceptKind::Restart
    );
    assert_eq!(t.stats().rejected(Reason::RetiredStream), 0);
    assert_eq!(t.stats().events(EventKind::Crash), 2);
    assert_eq!(t.stats().events(EventKind::Restart), 2);
    t.check_invariants().unwrap();
}

#[test]
fn panic_hook_terminal_replayed_while_dead_is_refused() {
    let mut t = Tracker::new(cfg());
    let k = key(1);
    let mut p = PanickyApp::new(42);
    t.handle_datagram(0, &udp(1), &p.beat(&k, 1)).unwrap();
    let crash = p.panic(&k, 5);
    t.handle_datagram(5, &udp(1), &crash).unwrap();
    events(&mut t);
    // The same datagram again: a replay, not a new session that died at once.
    assert_eq!(
        t.handle_datagram(6, &udp(1), &crash),
        Err(Rejection::Replay(ReplayError::Replayed { counter: 1 }))
    );
    // Another thread's report while the agent is still dead: nothing new.
    let crash2 = p.panic(&k, 7);
    assert_eq!(
        t.handle_datagram(7, &udp(1), &crash2),
        Err(Rejection::AfterTerminal)
    );
    // Long after (a dead agent's new stream would be a new session by then): still refused.
    assert_eq!(
        t.handle_datagram(5 * THR, &udp(1), &crash),
        Err(Rejection::Replay(ReplayError::Replayed { counter: 1 }))
    );
    assert_eq!(events(&mut t), []);
    assert_eq!(t.stats().events(EventKind::Crash), 1);
    assert_eq!(t.stats().events(EventKind::Restart), 0);
}

#[test]
fn panic_hook_master_key_replay_is_refused_before_decryption() {
    let mut t = Tracker::new(cfg());
    let mut p = PanickyApp::new(42);
    t.handle_datagram(0, &udp(1), &p.beat_master(1)).unwrap();
    let crash = p.panic_master(5);
    t.handle_datagram(5, &udp(1), &crash).unwrap();
    assert_eq!(
        t.handle_datagram(6, &udp(1), &p.beat_master(6))
            .unwrap()
            .kind,
        AcceptKind::Restart
    );
    // The crash report's IV with a broken tag: the side stream refuses it before any AEAD
    // work (a decrypt failure otherwise).
    let mut forged = crash;
    forged[63] ^= 1;
    assert_eq!(
        t.handle_datagram(7, &udp(1), &forged),
        Err(Rejection::Replay(ReplayError::Replayed { counter: 1 }))
    );
    assert_eq!(t.stats().rejected(Reason::BadTag), 0);
    assert_eq!(t.agent(udp1_agent(42)).unwrap().state, AgentState::Alive);
}

#[test]
fn panic_hook_report_before_the_first_beat_keeps_the_hook_stream_aside() {
    // The observer (re)starts and the first datagram it gets from an agent is the hook's
    // crash report; the application's stream then names the session.
    let mut t = Tracker::new(cfg());
    let k = key(1);
    let mut p = PanickyApp::new(42);
    p.beat(&k, 1); // sent before the observer was up: lost
    t.handle_datagram(5, &udp(1), &p.panic(&k, 5)).unwrap();
    let kinds: Vec<_> = events(&mut t).iter().map(|e| e.kind().as_str()).collect();
    assert_eq!(kinds, ["new", "crash"]);
    assert_eq!(
        t.handle_datagram(6, &udp(1), &p.beat(&k, 6)).unwrap().kind,
        AcceptKind::Restart
    );
    events(&mut t);
    // A second panic is reported (the hook's stream was not retired).
    t.handle_datagram(7, &udp(1), &p.panic(&k, 7)).unwrap();
    let kinds: Vec<_> = events(&mut t).iter().map(|e| e.kind().as_str()).collect();
    assert_eq!(kinds, ["crash"]);
}

#[test]
fn terminal_on_the_current_stream_still_ends_its_window() {
    // A client that sends its terminal frame on its own session (goodbye): the window
    // follows that stream, replays and late frames of it are refused as before.
    let mut t = Tracker::new(cfg());
    let k = key(1);
    let mut s = vlp_core::Session::secure(42, [3; 16]);
    let seal = |b: vlp_core::Beat, s: &mut vlp_core::Session| {
        s.commit(&b).unwrap();
        b.seal_shared(&k).unwrap().0
    };
    let b1 = s.beat(Status::Ok, 0, 1).unwrap();
    let d1 = seal(b1, &mut s);
    let b2 = s.beat(Status::Ok, 0, 2).unwrap();
    let d2 = seal(b2, &mut s);
    t.handle_datagram(0, &udp(1), &d1).unwrap();
    let g = s.goodbye(3).unwrap();
    let bye = seal(g, &mut s);
    t.handle_datagram(1, &udp(1), &bye).unwrap();
    assert_eq!(
        t.handle_datagram(2, &udp(1), &bye),
        Err(Rejection::Replay(ReplayError::Replayed { counter: 3 }))
    );
    assert_eq!(
        t.handle_datagram(2, &udp(1), &d2),
        Err(Rejection::AfterTerminal)
    );
}

#[test]
fn terminal_frames_are_not_counted_as_beats() {
    let mut t = Tracker::new(cfg());
    for n in 1..=3 {
        t.handle_datagram(n, &unix(42), &beat(42, n, n)).unwrap();
    }
    t.handle_datagram(4, &unix(42), &Frame::terminal(42, 4, 1).unwrap().emit())
        .unwrap();
    assert_eq!(t.agent(uid(42)).unwrap().beats, 3);
    // A goodbye as the first frame: a known agent with no beat.
    t.handle_datagram(5, &unix(43), &Frame::goodbye(43, 5).unwrap().emit())
        .unwrap();
    assert_eq!(t.agent(uid(43)).unwrap().beats, 0);
    // The session after the crash counts on.
    t.handle_datagram(THR + 10, &unix(42), &beat(42, 100, 1))
        .unwrap();
    assert_eq!(t.agent(uid(42)).unwrap().beats, 4);
    assert_eq!(
        t.stats().accepted,
        6,
        "every frame is still an accepted frame"
    );
}

#[test]
fn master_key_agents_derive_their_key_once_each_however_many() {
    // Every agent's key is kept in its own slot: one derivation per agent, whatever the
    // number of agents (a hashed cache thrashes on colliding agents and derives again).
    let n = 5_000u32;
    let mut c = cfg();
    c.capacity = n as usize;
    let mut t = Tracker::new(c);
    let sealed: Vec<Vec<[u8; 64]>> = (1..=3u32)
        .map(|r| {
            (0..n)
                .map(|i| {
                    master(
                        1,
                        r,
                        &frame(Status::Ok, 1000 + i, u64::from(r), u64::from(r), 0),
                    )
                })
                .collect()
        })
        .collect();
    for (r, round) in sealed.iter().enumerate() {
        for d in round {
            t.handle_datagram(r as u64 + 1, &udp(1), d).unwrap();
        }
    }
    assert_eq!(t.stats().accepted, 3 * u64::from(n));
    assert_eq!(t.stats().key_derivations, u64::from(n));
}

#[test]
fn master_key_of_an_evicted_agent_is_forgotten_and_its_slot_reused_cleanly() {
    let mut c = cfg();
    c.capacity = 1;
    let mut t = Tracker::new(c);
    t.handle_datagram(0, &udp(1), &master(1, 1, &frame(Status::Ok, 42, 1, 1, 0)))
        .unwrap();
    t.handle_datagram(1, &udp(1), &master(1, 2, &frame(Status::Ok, 42, 2, 2, 0)))
        .unwrap();
    assert_eq!(t.stats().key_derivations, 1);
    // It dies and is pushed out by a newcomer that takes its slot.
    t.handle_datagram(
        2,
        &udp(1),
        &master(1, 3, &Frame::terminal(42, 3, 0).unwrap()),
    )
    .unwrap();
    t.handle_datagram(3, &udp(1), &master(1, 1, &frame(Status::Ok, 43, 1, 1, 0)))
        .unwrap();
    assert_eq!(t.stats().events(EventKind::Evicted), 1);
    assert_eq!(t.stats().key_derivations, 2);
    // The newcomer's next beat uses its own key (not the slot's previous one).
    t.handle_datagram(4, &udp(1), &master(1, 2, &frame(Status::Ok, 43, 2, 2, 0)))
        .unwrap();
    assert_eq!(t.stats().key_derivations, 2);
    let mut c = cfg();
    c.capacity = 2;
    let mut t2 = Tracker::new(c);
    t2.handle_datagram(0, &udp(1), &master(1, 1, &frame(Status::Ok, 42, 1, 1, 0)))
        .unwrap();
    // A forged datagram for the known agent: refused, the kept key stays.
    let mut forged = master(1, 2, &frame(Status::Ok, 42, 2, 2, 0));
    forged[30] ^= 1;
    assert_eq!(
        t2.handle_datagram(1, &udp(1), &forged),
        Err(Rejection::Open(OpenError::BadTag))
    );
    t2.handle_datagram(2, &udp(1), &master(1, 2, &frame(Status::Ok, 42, 2, 2, 0)))
        .unwrap();
    assert_eq!(t2.stats().key_derivations, 1);
}

#[test]
fn event_kinds_have_one_unique_spelling_that_reads_back() {
    let mut seen = std::collections::HashSet::new();
    for k in EventKind::ALL {
        assert!(seen.insert(k.as_str()), "duplicate spelling {k}");
        assert_eq!(EventKind::ALL[k as usize], k);
        assert_eq!(EventKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(EventKind::parse("stalled"), None);
}

#[test]
fn stats_count_events_by_kind_as_they_are_raised() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(0, &unix(42), &beat(42, 1, 1)).unwrap();
    t.handle_timeout(THR);
    t.handle_datagram(THR + 1, &unix(42), &beat(42, 2, 2))
        .unwrap();
    let g = Frame::goodbye(42, 3).unwrap().emit();
    t.handle_datagram(THR + 2, &unix(42), &g).unwrap();
    let raised = events(&mut t);
    for k in EventKind::ALL {
        let n = raised.iter().filter(|e| e.kind() == k).count() as u64;
        assert_eq!(t.stats().events(k), n, "{k}");
    }
    assert_eq!(t.stats().events(EventKind::Stall), 1);
    assert_eq!(t.stats().events(EventKind::Goodbye), 1);
    assert_eq!(t.stats().events(EventKind::Crash), 0);
}
