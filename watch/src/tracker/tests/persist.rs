//! The state file: what a restart keeps, and what a damaged file does (nothing).

use sha2::{Digest, Sha256};
use vlp_core::{Frame, Status};

use super::{beat, cfg, events, frame, key, master, shared, udp, unix, EVICT, THR};
use crate::tracker::*;

const BOOT: u64 = 7_000_000_000_000;
/// Bytes of the state file's header.
const HEADER: usize = 36;

fn at(tracker_now: Nanos, clock_now: u64) -> ClockMapping {
    ClockMapping {
        tracker_now,
        clock_now,
    }
}

/// The last AEAD counter [`populated`] used on pid 50's stream 2.
const LAST_C: u32 = 10 + 60;

/// A tracker with one of everything: alive, stalled, crashed, exited, secure agents with
/// remembered streams, a tombstone, a plaintext agent with a known source address.
fn populated() -> Tracker {
    let mut t = Tracker::new(cfg());
    let sh = |stream, counter, n| {
        shared(
            &key(1),
            stream,
            counter,
            &frame(Status::Ok, 50, n * 10, n, 0),
        )
    };
    let from = Origin::UdpFrom {
        listener: 0,
        source: "10.1.1.1:9".parse().unwrap(),
    };
    // pid 50 (shared key): sessions on streams 1 then 2.
    t.handle_datagram(1, &udp(1), &sh(1, 1, 1)).unwrap();
    t.handle_datagram(2, &udp(1), &sh(2, 1, 1)).unwrap();
    // pid 51 (shared key): silent, evicted, leaves a tombstone.
    let f51 = frame(Status::Ok, 51, 1, 1, 0);
    t.handle_datagram(4, &udp(1), &shared(&key(1), 9, 1, &f51))
        .unwrap();
    // pid 50, 52 (agent key) and 70 (plaintext, known source) keep beating; stream 2 of
    // pid 50 loses every third counter.
    let mut now = 10;
    for c in 11..=LAST_C {
        now += THR - 1;
        t.handle_timeout(now);
        let n = u64::from(c);
        if c % 3 != 0 || c == LAST_C {
            t.handle_datagram(now, &udp(1), &sh(2, c, n)).unwrap();
        }
        t.handle_datagram(
            now,
            &udp(1),
            &master(3, c, &frame(Status::Degraded, 52, n, n, 9)),
        )
        .unwrap();
        t.handle_datagram(now, &from, &beat(70, n, n)).unwrap();
    }
    assert!(now > 4 + THR + EVICT, "51 evicted");
    // 60 (Unix) stalls, 61 crashes, 62 exits.
    t.handle_datagram(now, &unix(60), &beat(60, 1, 1)).unwrap();
    t.handle_datagram(now, &unix(61), &Frame::terminal(61, 1, 3).unwrap().emit())
        .unwrap();
    t.handle_datagram(now, &unix(62), &Frame::goodbye(62, 1).unwrap().emit())
        .unwrap();
    now += THR / 2;
    for c in [LAST_C + 1, LAST_C + 2] {
        let n = u64::from(c);
        t.handle_datagram(
            now,
            &udp(1),
            &master(3, c, &frame(Status::Degraded, 52, n, n, 9)),
        )
        .unwrap();
        t.handle_datagram(now, &from, &beat(70, n, n)).unwrap();
        now += THR / 2 + 1;
        t.handle_timeout(now);
    }
    events(&mut t);
    assert_eq!(
        t.agent(AgentId::unix(60)).unwrap().state,
        AgentState::Stalled
    );
    t.check_invariants().unwrap();
    t
}

fn views(t: &Tracker) -> Vec<AgentView> {
    let mut v: Vec<AgentView> = t.agents().collect();
    v.sort_by_key(|a| a.id);
    v
}

#[test]
fn a_snapshot_restores_the_same_table_with_its_clocks_carried_across() {
    let t = populated();
    let now = t.now();
    let mut bytes = Vec::new();
    t.snapshot(at(now, BOOT + now), &mut bytes);
    // The observer restarts 5 ms later (persistent clock), its own clock at 0.
    let gap = 5_000_000;
    let r = Tracker::restore(cfg(), &bytes, at(0, BOOT + now + gap)).unwrap();
    r.check_invariants().unwrap();
    let (before, after) = (views(&t), views(&r));
    assert_eq!(before.len(), after.len());
    assert_eq!(before.len(), 6, "51 was evicted");
    for (b, a) in before.iter().zip(&after) {
        let shifted = AgentView {
            last_beat: a.last_beat,
            ..*b
        };
        assert_eq!(&shifted, a);
        // Silence so far is preserved, the gap included (clamped at the new zero).
        assert_eq!(
            a.last_beat,
            b.last_beat.saturating_sub(now + gap),
            "{}",
            b.id
        );
    }
    // A second snapshot of the restored table restores to the same table again.
    let mut again = Vec::new();
    r.snapshot(at(0, BOOT + now + gap), &mut again);
    assert_eq!(bytes.len(), again.len());
    let rr = Tracker::restore(cfg(), &again, at(0, BOOT + now + gap)).unwrap();
    assert_eq!(views(&rr), after);
}

#[test]
fn a_hang_that_began_before_the_restart_is_reported_on_time_after_it() {
    let mut t = Tracker::new(cfg());
    let base: Nanos = 50 * THR;
    t.handle_datagram(base, &unix(60), &beat(60, 1, 1)).unwrap();
    t.handle_datagram(base, &unix(61), &beat(61, 1, 1)).unwrap();
    let mut bytes = Vec::new();
    // Snapshot 10 ms after the beats; the restarted tracker's clock starts at 60 * THR.
    t.snapshot(at(base + 10, BOOT + 10), &mut bytes);
    let restart = 60 * THR;
    let mut r = Tracker::restore(cfg(), &bytes, at(restart, BOOT + 20)).unwrap();
    // Both agents beat 20 ns ago on the persistent clock: due at threshold - 20.
    assert_eq!(r.poll_timeout(), Some(restart - 20 + THR));
    // 61 beats during/after the restart: no stall for it; 60 stalls on time.
    r.handle_datagram(restart + 1, &unix(61), &beat(61, 2, 2))
        .unwrap();
    r.handle_timeout(restart - 20 + THR);
    let e = events(&mut r);
    assert_eq!(
        e,
        [Event::Stalled {
            at: restart - 20 + THR,
            agent: AgentId::unix(60),
            last_beat: restart - 20,
            nonce: 1
        }]
    );
}

#[test]
fn replay_defences_survive_a_restart() {
    let t = populated();
    let now = t.now();
    let mut bytes = Vec::new();
    t.snapshot(at(now, BOOT), &mut bytes);
    let mut r = Tracker::restore(cfg(), &bytes, at(now, BOOT)).unwrap();
    let f50 = |n| frame(Status::Ok, 50, n * 10, n, 0);
    // Pid 50's first session's stream is still retired.
    assert_eq!(
        r.handle_datagram(now + 1, &udp(1), &shared(&key(1), 1, 1, &f50(1))),
        Err(Rejection::RetiredStream)
    );
    // Its current window still refuses a replay, and still takes a lost counter.
    let c = LAST_C;
    let f = f50(u64::from(c));
    assert_eq!(
        r.handle_datagram(now + 1, &udp(1), &shared(&key(1), 2, c, &f)),
        Err(Rejection::Replay(vlp_core::ReplayError::Replayed {
            counter: c
        }))
    );
    let lost = LAST_C - 1 - (LAST_C - 1) % 3;
    let f = f50(u64::from(lost));
    assert_eq!(
        r.handle_datagram(now + 1, &udp(1), &shared(&key(1), 2, lost, &f))
            .unwrap()
            .kind,
        AcceptKind::Reordered
    );
    // Pid 51's tombstone survived: its captured datagram does not create it again.
    let f51 = frame(Status::Ok, 51, 1, 1, 0);
    assert_eq!(
        r.handle_datagram(now + 1, &udp(1), &shared(&key(1), 9, 1, &f51)),
        Err(Rejection::EvictedStream)
    );
    // Pid 70's source address is still its own.
    let other = Origin::UdpFrom {
        listener: 0,
        source: "10.9.9.9:9".parse().unwrap(),
    };
    assert_eq!(
        r.handle_datagram(now + 1, &other, &beat(70, 1_000_000, 1_000_000)),
        Err(Rejection::OriginConflict)
    );
}

fn resum(bytes: &mut [u8]) {
    let n = bytes.len() - 32;
    let sum = Sha256::digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&sum);
}

#[test]
fn damaged_or_foreign_state_is_a_typed_error_never_a_panic() {
    let t = populated();
    let mut bytes = Vec::new();
    t.snapshot(at(t.now(), BOOT), &mut bytes);
    let load = |b: &[u8]| Tracker::restore(cfg(), b, at(0, BOOT));
    assert!(load(&bytes).is_ok());
    // Every truncation.
    for n in 0..bytes.len() {
        assert!(
            matches!(load(&bytes[..n]), Err(PersistError::Truncated { .. })),
            "cut at {n}"
        );
    }
    // Trailing bytes.
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        load(&long),
        Err(PersistError::TrailingBytes { .. })
    ));
    // Any flipped bit.
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(load(&b).is_err(), "bit flip at {i} accepted");
    }
    let mut b = bytes.clone();
    b[200] ^= 1;
    assert_eq!(load(&b).err(), Some(PersistError::BadChecksum));
    // Another format version, another file, reserved flags.
    let mut b = bytes.clone();
    b[8] = 2;
    resum(&mut b);
    assert_eq!(
        load(&b).err(),
        Some(PersistError::UnsupportedVersion { found: 2 })
    );
    let mut b = bytes.clone();
    b[0] = b'X';
    assert_eq!(load(&b).err(), Some(PersistError::BadMagic));
    let mut b = bytes.clone();
    b[10] = 1;
    resum(&mut b);
    assert_eq!(
        load(&b).err(),
        Some(PersistError::UnknownFlags { flags: 1 })
    );
    // A bad record behind a valid checksum: the first agent's phase bits, status.
    let mut b = bytes.clone();
    b[HEADER + 2] = 0;
    resum(&mut b);
    assert!(matches!(
        load(&b),
        Err(PersistError::BadRecord {
            index: 0,
            field: "flags",
            ..
        })
    ));
    let mut b = bytes.clone();
    b[HEADER + 3] = 9;
    resum(&mut b);
    assert!(matches!(
        load(&b),
        Err(PersistError::BadRecord {
            index: 0,
            field: "status",
            ..
        })
    ));
    // A configuration without the UDP listeners the agents used.
    let no_udp = TrackerConfig {
        udp: Vec::new(),
        ..cfg()
    };
    assert!(matches!(
        Tracker::restore(no_udp, &bytes, at(0, BOOT)),
        Err(PersistError::ListenerMismatch { .. })
    ));
    // A smaller table.
    let small = TrackerConfig {
        capacity: 3,
        ..cfg()
    };
    assert!(matches!(
        Tracker::restore(small, &bytes, at(0, BOOT)),
        Err(PersistError::TooManyAgents { .. })
    ));
    // Each error names its rule.
    assert_eq!(
        PersistError::UnsupportedVersion { found: 2 }.to_string(),
        "state format version 2, this observer reads 1"
    );
}

#[test]
fn a_duplicated_identity_is_refused() {
    let mut t = Tracker::new(cfg());
    t.handle_datagram(1, &unix(60), &beat(60, 1, 1)).unwrap();
    t.handle_datagram(1, &unix(61), &beat(61, 1, 1)).unwrap();
    let mut bytes = Vec::new();
    t.snapshot(at(1, BOOT), &mut bytes);
    // Make the second record's pid the first's.
    let rec = |i: usize| HEADER + i * (bytes.len() - HEADER - 32) / 2;
    let pid0 = bytes[rec(0) + 4..rec(0) + 8].to_vec();
    let r1 = rec(1);
    bytes[r1 + 4..r1 + 8].copy_from_slice(&pid0);
    resum(&mut bytes);
    assert!(matches!(
        Tracker::restore(cfg(), &bytes, at(1, BOOT)),
        Err(PersistError::DuplicateIdentity { .. })
    ));
}

#[test]
fn an_empty_tracker_round_trips() {
    let t = Tracker::new(cfg());
    let mut bytes = Vec::new();
    t.snapshot(at(0, 0), &mut bytes);
    assert_eq!(bytes.len(), HEADER + 32);
    let r = Tracker::restore(cfg(), &bytes, at(0, 0)).unwrap();
    assert!(r.is_empty());
    let _ = (EVICT, THR);
}

#[cfg(feature = "fuzz")]
#[test]
fn the_fuzz_harness_accepts_real_snapshots_as_file_and_as_body() {
    let t = populated();
    let mut bytes = Vec::new();
    t.snapshot(crate::tracker::fuzz::RESTORE_AT, &mut bytes);
    // The fuzz configuration is smaller: the file is refused there, without a panic.
    crate::tracker::fuzz::restore(&bytes).unwrap();
    crate::tracker::fuzz::restore(&bytes[12..bytes.len() - 32]).unwrap();
    let small = Tracker::new(crate::tracker::fuzz::config());
    let mut bytes = Vec::new();
    small.snapshot(crate::tracker::fuzz::RESTORE_AT, &mut bytes);
    crate::tracker::fuzz::restore(&bytes[12..bytes.len() - 32]).unwrap();
}

#[test]
fn a_window_at_the_last_counter_round_trips() {
    // Found by the `state` fuzz target: counter u32::MAX overflowed the window rebuild.
    let mut t = Tracker::new(cfg());
    let f = frame(Status::Ok, 50, 1, 1, 0);
    t.handle_datagram(1, &udp(1), &shared(&key(1), 1, u32::MAX, &f))
        .unwrap();
    let mut bytes = Vec::new();
    t.snapshot(at(1, BOOT), &mut bytes);
    let mut r = Tracker::restore(cfg(), &bytes, at(1, BOOT)).unwrap();
    assert_eq!(
        r.handle_datagram(2, &udp(1), &shared(&key(1), 1, u32::MAX, &f)),
        Err(Rejection::Replay(vlp_core::ReplayError::Replayed {
            counter: u32::MAX
        }))
    );
}
