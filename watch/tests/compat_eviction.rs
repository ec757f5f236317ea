//! `--tracker-eviction-policy` in the sans-I/O tracker, on a virtual clock: what a full table
//! gives up for a newcomer under each policy, and that an unproven identity (plain UDP)
//! never displaces a proven (kernel-attested) one.

use varta_watch::tracker::{
    EvictionPolicy, Listener, Nanos, Origin, Reason, Tracker, TrackerConfig, UdpMode,
};
use vlp_core::{Frame, Status};

const MS: Nanos = 1_000_000;
const UID: u32 = 1000;

fn tracker(policy: Option<EvictionPolicy>) -> Tracker {
    // Capacity 4, one slot reserved for proven identities: 3 unproven at most.
    Tracker::new(TrackerConfig {
        threshold: 100 * MS,
        capacity: 4,
        evict_after: 3_600_000 * MS,
        allowed_uids: vec![UID],
        udp: vec![UdpMode::Plain],
        proven_reserve: Some(1),
        eviction: policy,
        ..TrackerConfig::default()
    })
}

fn beat(t: &mut Tracker, now: Nanos, origin: Origin, pid: u32) -> bool {
    let f = Frame::new(Status::Ok, pid, now, now, 0).unwrap().emit();
    let ok = t.handle_datagram(now, &origin, &f).is_ok();
    while t.poll_event().is_some() {}
    ok
}

fn udp(t: &mut Tracker, now: Nanos, pid: u32) -> bool {
    beat(t, now, Origin::Udp { listener: 0 }, pid)
}

fn unix(t: &mut Tracker, now: Nanos, pid: u32) -> bool {
    beat(t, now, Origin::Unix { pid, uid: UID }, pid)
}

fn tracked(t: &Tracker, listener: Listener, pid: u32) -> bool {
    t.agents()
        .any(|a| a.id.pid == pid && a.id.listener == listener)
}

fn capacity_refusals(t: &Tracker) -> u64 {
    t.stats().rejected(Reason::CapacityExceeded) + t.stats().rejected(Reason::UnprovenCapacity)
}

/// Unproven 11, 12, 13 beat at 1, 2, 3 ms (the quota is full); a fourth unproven arrives at
/// `at`, everyone silent since.
fn fourth_unproven(policy: Option<EvictionPolicy>, at: Nanos) -> Tracker {
    let mut t = tracker(policy);
    for (i, pid) in [11, 12, 13].into_iter().enumerate() {
        assert!(udp(&mut t, (i as u64 + 1) * MS, pid));
    }
    t.handle_timeout(at);
    while t.poll_event().is_some() {}
    udp(&mut t, at, 14);
    t
}

#[test]
fn an_unproven_newcomer_at_the_quota() {
    let udp0 = Listener::Udp(0);
    // All live (10 ms, below the 100 ms threshold).
    let ours = fourth_unproven(None, 10 * MS);
    let strict = fourth_unproven(Some(EvictionPolicy::Strict), 10 * MS);
    let balanced = fourth_unproven(Some(EvictionPolicy::Balanced), 10 * MS);
    assert!(!tracked(&ours, udp0, 14) && capacity_refusals(&ours) == 1);
    assert!(
        !tracked(&strict, udp0, 14) && capacity_refusals(&strict) == 1,
        "strict evicts no live agent"
    );
    assert!(
        tracked(&balanced, udp0, 14),
        "balanced evicts the agent silent longest"
    );
    assert!(!tracked(&balanced, udp0, 11) && tracked(&balanced, udp0, 12));
    assert_eq!(balanced.stats().displaced, 1);
    // All stalled (500 ms): strict and balanced make room with the longest-stalled, ours not.
    let ours = fourth_unproven(None, 500 * MS);
    let strict = fourth_unproven(Some(EvictionPolicy::Strict), 500 * MS);
    assert!(!tracked(&ours, udp0, 14));
    assert!(tracked(&strict, udp0, 14) && !tracked(&strict, udp0, 11));
}

#[test]
fn a_proven_newcomer_at_a_full_table_and_proven_agents_are_never_displaced_by_unproven() {
    let udp0 = Listener::Udp(0);
    let me = std::process::id();
    let setup = |policy| {
        let mut t = tracker(policy);
        // The proven agent is the oldest, then three unproven: the table is full.
        assert!(unix(&mut t, MS, me));
        for (i, pid) in [11, 12, 13].into_iter().enumerate() {
            assert!(udp(&mut t, (i as u64 + 2) * MS, pid));
        }
        t
    };
    // An unproven newcomer under balanced displaces the oldest unproven agent, never the
    // (older) proven one.
    let mut t = setup(Some(EvictionPolicy::Balanced));
    assert!(udp(&mut t, 10 * MS, 14));
    assert!(tracked(&t, Listener::Unix, me) && !tracked(&t, udp0, 11));
    // A proven newcomer (another attested pid) under strict with everyone live: refused;
    // under balanced: the agent silent longest goes, which may be proven.
    let mut strict = setup(Some(EvictionPolicy::Strict));
    assert!(
        !unix(&mut strict, 10 * MS, 4000),
        "strict: no stalled agent, no room"
    );
    let mut balanced = setup(Some(EvictionPolicy::Balanced));
    assert!(unix(&mut balanced, 10 * MS, 4000));
    assert!(
        !tracked(&balanced, Listener::Unix, me),
        "balanced: the oldest goes"
    );
    // Ours (no policy): a proven newcomer displaces an unproven agent, the proven one stays.
    let mut ours = setup(None);
    assert!(unix(&mut ours, 10 * MS, 4000));
    assert!(tracked(&ours, Listener::Unix, me) && !tracked(&ours, udp0, 11));
}
