//! Threshold classes: each agent stalls at its own class's threshold; moving an agent between
//! classes and replacing the classes keep every list in deadline order and lose no agent.

use super::*;

/// Pid of test agent `n` (small pids are refused by the frame rules).
const P: u32 = 100;

fn stalls(t: &mut Tracker) -> Vec<(u32, Nanos)> {
    let mut v = Vec::new();
    while let Some(e) = t.poll_event() {
        if let Event::Stalled { at, agent, .. } = e {
            v.push((agent.pid - P, at));
        }
    }
    v
}

#[test]
fn each_agent_stalls_at_its_class_threshold() {
    let mut t = Tracker::new(cfg());
    t.set_thresholds(&[THR, 50 * MS, 1000 * MS], |_| 0).unwrap();
    for pid in 1..=3 {
        t.handle_datagram(0, &unix(P + pid), &beat(P + pid, 1, 1))
            .unwrap();
    }
    assert!(t.set_threshold_class(uid(P + 2), 1));
    assert!(t.set_threshold_class(uid(P + 3), 2));
    assert!(!t.set_threshold_class(uid(P + 3), 3), "no such class");
    assert!(!t.set_threshold_class(uid(P + 9), 1), "no such agent");
    assert_eq!(t.threshold_class(uid(P + 3)), Some(2));
    t.check_invariants().unwrap();
    assert_eq!(t.poll_timeout(), Some(50 * MS));
    t.handle_timeout(2000 * MS);
    assert_eq!(
        stalls(&mut t),
        vec![(2, 50 * MS), (1, THR), (3, 1000 * MS)],
        "stalls in deadline order, each at last_beat + its class's threshold"
    );
    t.check_invariants().unwrap();
}

#[test]
fn a_class_change_reinserts_in_deadline_order() {
    let mut t = Tracker::new(cfg());
    t.set_thresholds(&[THR, 10 * MS], |_| 0).unwrap();
    // Beats at 0, 10, 20, ... ms: agent 1 is oldest.
    for pid in 1..=6u32 {
        let now = Nanos::from(pid) * 10 * MS;
        t.handle_datagram(now, &unix(P + pid), &beat(P + pid, 1, 1))
            .unwrap();
    }
    // Move the newest, then the oldest, then a middle one into the short class.
    for pid in [6, 1, 4] {
        assert!(t.set_threshold_class(uid(P + pid), 1));
        t.check_invariants().unwrap();
    }
    assert_eq!(t.poll_timeout(), Some(20 * MS));
    // Back to the default class.
    assert!(t.set_threshold_class(uid(P + 4), 0));
    t.check_invariants().unwrap();
    t.handle_timeout(u64::from(u32::MAX));
    let got: Vec<u32> = stalls(&mut t).into_iter().map(|s| s.0).collect();
    assert_eq!(got, vec![1, 6, 2, 3, 4, 5]);
    t.check_invariants().unwrap();
}

#[test]
fn replacing_the_classes_keeps_agents_and_moves_deadlines() {
    let mut t = Tracker::new(cfg());
    t.set_thresholds(&[THR, 50 * MS], |_| 0).unwrap();
    for pid in 1..=4u32 {
        t.handle_datagram(Nanos::from(pid) * MS, &unix(P + pid), &beat(P + pid, 1, 1))
            .unwrap();
        t.set_threshold_class(uid(P + pid), u8::from(pid % 2 == 0));
    }
    // Reload: class 1 becomes 500 ms, a new class 2 of 20 ms takes agent 3.
    t.set_thresholds(&[THR, 500 * MS, 20 * MS], |id| match id.pid - P {
        3 => 2,
        p => u8::from(p % 2 == 0),
    })
    .unwrap();
    t.check_invariants().unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t.poll_timeout(), Some(3 * MS + 20 * MS));
    // Fewer classes: agents of a class gone fall back to the default.
    t.set_thresholds(&[THR], |id| if id.pid == P + 3 { 2 } else { 0 })
        .unwrap();
    t.check_invariants().unwrap();
    assert_eq!(t.threshold_class(uid(P + 3)), Some(0));
    assert_eq!(t.poll_timeout(), Some(MS + THR));
    assert_eq!(t.set_thresholds(&[], |_| 0), Err(ThresholdError::Count(0)));
    assert_eq!(t.thresholds(), &[THR]);
}

#[test]
fn a_class_change_deep_in_a_long_list_waits_for_the_next_beat() {
    let mut c = cfg();
    c.capacity = 256;
    let mut t = Tracker::new(c);
    t.set_thresholds(&[THR, 10 * MS], |_| 0).unwrap();
    // Agent 1 beats first; 100 later agents go to the short class before it.
    t.handle_datagram(MS, &unix(P + 1), &beat(P + 1, 1, 1))
        .unwrap();
    for pid in 2..=101u32 {
        t.handle_datagram(2 * MS, &unix(P + pid), &beat(P + pid, 1, 1))
            .unwrap();
        assert!(t.set_threshold_class(uid(P + pid), 1));
    }
    t.check_invariants().unwrap();
    // Its place would be behind 100 entries: the move waits, the old threshold holds.
    assert!(t.set_threshold_class(uid(P + 1), 1));
    assert_eq!(t.threshold_class(uid(P + 1)), Some(0));
    t.check_invariants().unwrap();
    // Its next beat moves it.
    t.handle_datagram(3 * MS, &unix(P + 1), &beat(P + 1, 2, 2))
        .unwrap();
    assert_eq!(t.threshold_class(uid(P + 1)), Some(1));
    t.check_invariants().unwrap();
    while t.poll_event().is_some() {}
    t.handle_timeout(3 * MS + 10 * MS);
    let got = stalls(&mut t);
    assert_eq!(got.len(), 101, "every agent stalls at the short threshold");
    assert_eq!(got.last(), Some(&(1, 13 * MS)));
}

#[test]
fn udp_keys_are_replaced_without_losing_agents_or_replay_windows() {
    let mut t = Tracker::new(cfg());
    let f = frame(Status::Ok, P + 7, 1, 1, 0);
    t.handle_datagram(MS, &udp(1), &shared(&key(1), 1, 1, &f))
        .unwrap();
    // Rotation: key 1 retired, key 3 added.
    let new = vec![
        UdpMode::Plain,
        UdpMode::Secure {
            keys: vec![key(3), key(2)],
            master: Some(key(9)),
        },
    ];
    t.set_udp_modes(new).unwrap();
    assert_eq!(t.len(), 1, "the agent is kept");
    let f2 = frame(Status::Ok, P + 7, 2, 2, 0);
    assert!(
        t.handle_datagram(2 * MS, &udp(1), &shared(&key(1), 1, 2, &f2))
            .is_err(),
        "the retired key is refused"
    );
    t.handle_datagram(3 * MS, &udp(1), &shared(&key(3), 1, 3, &f2))
        .unwrap();
    // Same stream, counter already seen under the new key: still a replay.
    assert!(t
        .handle_datagram(4 * MS, &udp(1), &shared(&key(3), 1, 3, &f2))
        .is_err());
    t.check_invariants().unwrap();
    // A changed shape needs a restart.
    assert_eq!(
        t.set_udp_modes(vec![UdpMode::Plain]),
        Err(RekeyError::Listeners { had: 2, got: 1 })
    );
    assert_eq!(
        t.set_udp_modes(vec![UdpMode::Plain, UdpMode::Plain]),
        Err(RekeyError::Kind(1))
    );
    assert!(t.stats().accepted >= 2);
}
