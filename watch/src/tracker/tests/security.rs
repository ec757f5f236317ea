//! The observer's promise under attack, at the core: nobody can make it believe a hung agent
//! is alive, nobody can speak for an identity whose key or kernel attestation they lack, and
//! spoofed identities cannot lock real agents out. Each test fails without its rule.

use std::net::SocketAddr;

use vlp_core::{Frame, Status};

use super::{cfg, events, frame, key, master, shared, udp, unix, EVICT, THR};
use crate::tracker::*;

fn udp1(pid: u32) -> AgentId {
    AgentId::udp(1, KeyClass::Shared, pid)
}

fn sh(stream: u8, counter: u32, nonce: u64) -> [u8; 60] {
    shared(
        &key(1),
        stream,
        counter,
        &frame(Status::Ok, 42, nonce * 10, nonce, 0),
    )
}

fn kinds(t: &mut Tracker) -> Vec<&'static str> {
    events(t).iter().map(|e| e.kind().as_str()).collect()
}

/// Three sessions X, Y, Z of pid 42 (each a restart), beats of each captured. Z hangs.
fn three_sessions(t: &mut Tracker) -> Vec<[u8; 60]> {
    let mut captured = Vec::new();
    let mut now = 0;
    for stream in [1u8, 2, 3] {
        for n in 1..=3u64 {
            now += 1;
            let d = sh(stream, n as u32, n);
            t.handle_datagram(now, &udp(1), &d).unwrap();
            captured.push(d);
        }
    }
    events(t);
    captured
}

#[test]
fn replays_of_any_remembered_older_session_do_not_end_a_stall() {
    let mut t = Tracker::new(cfg());
    let captured = three_sessions(&mut t);
    // Z hangs: stalled.
    t.handle_timeout(9 + THR);
    assert_eq!(kinds(&mut t), ["stall"]);
    // The attacker cycles X, Y, X … : every one refused, the agent stays stalled.
    for (i, d) in captured[..6].iter().enumerate() {
        let now = 10 + THR + i as u64;
        assert_eq!(
            t.handle_datagram(now, &udp(1), d),
            Err(Rejection::RetiredStream),
            "datagram {i} of an older session"
        );
    }
    assert_eq!(kinds(&mut t), Vec::<&str>::new());
    assert_eq!(t.agent(udp1(42)).unwrap().state, AgentState::Stalled);
    assert_eq!(t.stats().rejected(Reason::RetiredStream), 6);
    assert_eq!(t.stats().events(EventKind::Recovered), 0);
}

#[test]
fn a_replayed_goodbye_of_an_older_session_does_not_turn_a_hang_into_an_exit() {
    let mut t = Tracker::new(cfg());
    let k = key(1);
    let mut now = 0;
    // Session X ends with a goodbye (captured), then Y and Z run; Z hangs.
    for n in 1..=2u64 {
        now += 1;
        t.handle_datagram(now, &udp(1), &sh(1, n as u32, n))
            .unwrap();
    }
    let bye = shared(&k, 1, 3, &Frame::goodbye(42, 30).unwrap());
    t.handle_datagram(now + 1, &udp(1), &bye).unwrap();
    for stream in [2u8, 3] {
        for n in 1..=2u64 {
            now += 1;
            t.handle_datagram(now, &udp(1), &sh(stream, n as u32, n))
                .unwrap();
        }
    }
    t.handle_timeout(now + THR);
    events(&mut t);
    assert_eq!(t.agent(udp1(42)).unwrap().state, AgentState::Stalled);
    let r = t.handle_datagram(now + THR + 1, &udp(1), &bye);
    assert_eq!(r, Err(Rejection::RetiredStream));
    assert_eq!(t.agent(udp1(42)).unwrap().state, AgentState::Stalled);
    assert_eq!(t.stats().events(EventKind::Goodbye), 1, "only the real one");
}

#[test]
fn a_stalled_agents_exit_must_come_on_its_current_stream() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(1, &udp(1), &sh(1, 1, 1)).unwrap();
    t.handle_timeout(1 + THR);
    events(&mut t);
    // A terminal frame on a stream the observer never saw (an older session it missed).
    let crash = shared(&key(1), 7, 9, &Frame::terminal(42, 5, 0).unwrap());
    assert_eq!(
        t.handle_datagram(2 + THR, &udp(1), &crash),
        Err(Rejection::NotCurrentStream)
    );
    assert_eq!(t.agent(udp1(42)).unwrap().state, AgentState::Stalled);
    assert_eq!(t.stats().rejected(Reason::NotCurrentStream), 1);
    // On its current stream the exit is taken.
    let bye = shared(&key(1), 1, 2, &Frame::goodbye(42, 20).unwrap());
    t.handle_datagram(3 + THR, &udp(1), &bye).unwrap();
    assert_eq!(kinds(&mut t), ["goodbye"]);
}

#[test]
fn streams_older_than_the_history_bound_are_forgotten_oldest_first() {
    let mut t = Tracker::new(cfg());
    let mut now = 0;
    let first = sh(1, 1, 1);
    // STREAM_HISTORY + 1 restarts after the first session: its stream falls out.
    for stream in 1..=(STREAM_HISTORY as u8 + 2) {
        now += 1;
        t.handle_datagram(now, &udp(1), &sh(stream, 1, 1)).unwrap();
    }
    let second = sh(2, 1, 1);
    // The second session's stream is still remembered …
    assert_eq!(
        t.handle_datagram(now + 1, &udp(1), &second),
        Err(Rejection::RetiredStream)
    );
    // … the first is not (bounded memory); it is judged as a stream never seen.
    assert_ne!(
        t.handle_datagram(now + 2, &udp(1), &first),
        Err(Rejection::RetiredStream)
    );
}

#[test]
fn evicted_identities_leave_tombstones_that_refuse_their_old_streams() {
    let mut t = Tracker::new(cfg());
    let a = sh(1, 1, 1);
    let b = sh(1, 2, 2);
    t.handle_datagram(1, &udp(1), &a).unwrap();
    t.handle_datagram(2, &udp(1), &b).unwrap();
    // Silent: stalled, then evicted.
    t.handle_timeout(2 + THR + EVICT);
    assert_eq!(kinds(&mut t), ["new", "stall", "evicted"]);
    assert!(t.is_empty());
    // A captured datagram does not create the agent again …
    for d in [&a, &b] {
        assert_eq!(
            t.handle_datagram(3 + THR + EVICT, &udp(1), d),
            Err(Rejection::EvictedStream)
        );
    }
    assert!(t.is_empty());
    assert_eq!(t.stats().rejected(Reason::EvictedStream), 2);
    // … the same process resuming on its stream does, and so does a new session; the old
    // counters stay refused afterwards.
    let resumed = sh(1, 3, 3);
    t.handle_datagram(4 + THR + EVICT, &udp(1), &resumed)
        .unwrap();
    assert_eq!(kinds(&mut t), ["new"]);
    t.handle_timeout(4 + 2 * THR + 2 * EVICT);
    events(&mut t);
    assert!(t.is_empty());
    t.handle_datagram(5 + 2 * THR + 2 * EVICT, &udp(1), &sh(9, 1, 1))
        .unwrap();
    assert_eq!(
        t.handle_datagram(6 + 2 * THR + 2 * EVICT, &udp(1), &a),
        Err(Rejection::RetiredStream),
        "the tombstone became the new session's history"
    );
}

#[test]
fn tombstones_are_bounded_least_recently_written_dropped() {
    let mut t = Tracker::new(TrackerConfig {
        tombstones: Some(2),
        ..cfg()
    });
    let mut now = 0;
    for pid in 2..=4u32 {
        now += 1;
        let f = frame(Status::Ok, pid, 1, 1, 0);
        t.handle_datagram(now, &udp(1), &shared(&key(1), 1, 1, &f))
            .unwrap();
    }
    t.handle_timeout(now + THR + EVICT);
    events(&mut t);
    assert!(t.is_empty());
    // pid 2's tombstone was dropped (least recently written), 3 and 4 are kept.
    let replay = |pid| shared(&key(1), 1, 1, &frame(Status::Ok, pid, 1, 1, 0));
    let at = now + THR + EVICT + 1;
    assert!(t.handle_datagram(at, &udp(1), &replay(2)).is_ok());
    assert_eq!(
        t.handle_datagram(at, &udp(1), &replay(3)),
        Err(Rejection::EvictedStream)
    );
    assert_eq!(
        t.handle_datagram(at, &udp(1), &replay(4)),
        Err(Rejection::EvictedStream)
    );
}

#[test]
fn shared_key_and_agent_key_datagrams_for_one_pid_are_different_identities() {
    let mut t = Tracker::new(cfg());
    let f = |n| frame(Status::Ok, 42, n * 10, n, 0);
    let own = t.handle_datagram(1, &udp(1), &master(1, 1, &f(1))).unwrap();
    assert_eq!(own.agent, AgentId::udp(1, KeyClass::Agent, 42));
    assert!(own.agent.is_proven());
    // The per-agent-key agent hangs; a shared-key holder claims its pid.
    t.handle_timeout(1 + THR);
    events(&mut t);
    let forged = t
        .handle_datagram(2 + THR, &udp(1), &shared(&key(1), 5, 1, &f(2)))
        .unwrap();
    assert_eq!(forged.agent, udp1(42));
    assert_eq!(forged.kind, AcceptKind::NewAgent, "another identity");
    assert!(!forged.agent.is_proven());
    assert_eq!(kinds(&mut t), ["new"], "no recovery of the real agent");
    assert_eq!(
        t.agent(AgentId::udp(1, KeyClass::Agent, 42)).unwrap().state,
        AgentState::Stalled
    );
    assert_eq!(t.len(), 2);
    assert_eq!(forged.agent.to_string(), "udp1:42");
    assert_eq!(own.agent.to_string(), "udp1/agent:42");
    assert_eq!(KeyClass::Agent.as_str(), "agent");
}

#[test]
fn spoofed_pids_cannot_take_the_room_reserved_for_proven_identities() {
    // Capacity 16, a quarter reserved: 12 unproven identities at most.
    let mut t = Tracker::new(cfg());
    let plain = |pid| Frame::new(Status::Ok, pid, 1, 1, 0).unwrap().emit();
    let mut refused = 0;
    for pid in 1000..1100u32 {
        match t.handle_datagram(1, &udp(0), &plain(pid)) {
            Ok(_) => {}
            Err(Rejection::UnprovenCapacity) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(t.len(), 12);
    assert_eq!(refused, 88);
    assert_eq!(t.stats().rejected(Reason::UnprovenCapacity), 88);
    // Kernel-attested agents still get in, up to the capacity.
    for pid in 2..=5 {
        t.handle_datagram(2, &unix(pid), &super::beat(pid, 1, 1))
            .unwrap();
    }
    assert_eq!(t.len(), 16);
    // Full: a further proven newcomer displaces an unproven entry, never a proven one.
    let a = t
        .handle_datagram(3, &unix(6), &super::beat(6, 1, 1))
        .unwrap();
    assert_eq!(a.kind, AcceptKind::NewAgent);
    assert_eq!(t.len(), 16);
    assert_eq!(t.stats().displaced, 1);
    let evicted: Vec<_> = events(&mut t)
        .into_iter()
        .filter(|e| e.kind() == EventKind::Evicted)
        .map(|e| e.agent())
        .collect();
    assert_eq!(evicted.len(), 1);
    assert!(!evicted[0].is_proven());
    for pid in 2..=6 {
        assert!(t.agent(AgentId::unix(pid)).is_some());
    }
    // An unproven newcomer is still refused: the table is full and nothing in it is dead.
    assert_eq!(
        t.handle_datagram(4, &udp(0), &plain(2000)),
        Err(Rejection::CapacityExceeded)
    );
    t.check_invariants().unwrap();
}

fn from(addr: &str) -> Origin {
    Origin::UdpFrom {
        listener: 0,
        source: addr.parse::<SocketAddr>().unwrap(),
    }
}

#[test]
fn plaintext_frames_for_a_known_pid_from_another_address_are_origin_conflicts() {
    let mut t = Tracker::new(cfg());
    let b = |n: u64| Frame::new(Status::Ok, 42, n * 10, n, 0).unwrap().emit();
    t.handle_datagram(1, &from("10.0.0.1:4000"), &b(1)).unwrap();
    t.handle_datagram(2, &from("10.0.0.1:4000"), &b(2)).unwrap();
    // Another address (or port) within the threshold: refused, counted.
    for (i, other) in ["10.0.0.2:4000", "10.0.0.1:4001", "[::1]:4000"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            t.handle_datagram(3 + i as u64, &from(other), &b(3 + i as u64)),
            Err(Rejection::OriginConflict),
            "{other}"
        );
    }
    assert_eq!(t.stats().rejected(Reason::OriginConflict), 3);
    // The owner keeps beating; an IPv4-mapped IPv6 spelling is the same address.
    t.handle_datagram(10, &from("[::ffff:10.0.0.1]:4000"), &b(10))
        .unwrap();
    // Once the agent has been silent for the threshold, another address may take over.
    events(&mut t);
    t.handle_timeout(10 + THR);
    t.handle_datagram(10 + THR, &from("10.0.0.2:5000"), &b(11))
        .unwrap();
    assert_eq!(
        t.handle_datagram(11 + THR, &from("10.0.0.1:4000"), &b(12)),
        Err(Rejection::OriginConflict)
    );
    // A shell that does not pass the address gets no origin check.
    t.handle_datagram(12 + THR, &udp(0), &b(13)).unwrap();
}
