//! Deterministic simulation of the tracker core: thousands of virtual agents (Unix, plain UDP,
//! shared-key and master-key UDP) on a virtual clock, through a network that loses, delays,
//! reorders and duplicates datagrams, with agents that go silent, crash, say goodbye, and
//! restart under the same pid (a recycled pid; a rebooted device), plus an attacker who
//! replays, corrupts and spoofs.
//!
//! The expected event log is computed from the scenario's ground truth (which session each
//! datagram belongs to, which copy is a duplicate, which nonce is the newest the network has
//! delivered), never from the tracker's output, and compared with the tracker's log exactly
//! (after a stable sort by time and agent, which only fixes the order of events of different
//! agents at the same nanosecond).

use std::collections::{HashMap, HashSet};

use varta_watch::tracker::{
    AgentId, Event, EventKind, KeyClass, Listener, Nanos, Opened, Opener, Origin, Reason, Tracker,
    TrackerConfig, UdpMode,
};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Iv, Key, MasterDatagram, SharedDatagram, Status, GOODBYE_PAYLOAD};

const MS: Nanos = 1_000_000;
const THRESHOLD: Nanos = 500 * MS;
const EVICT: Nanos = 3_000 * MS;
const END: Nanos = 10_000 * MS;
const MAX_DELAY: Nanos = 30 * MS;
const UID: u32 = 1000;

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Unix,
    PlainUdp,
    Shared,
    Master,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    Silent,
    Crash,
    Goodbye,
}

/// What a datagram is, in truth.
#[derive(Clone, Copy, Debug)]
enum Truth {
    /// A frame an agent sent.
    Real {
        agent: usize,
        session: usize,
        /// Index of the datagram within its session (identifies duplicate copies).
        seq: u64,
        frame: Frame,
    },
    /// Attacker traffic, refused for the given reason.
    Junk(Reason),
}

struct Dgram {
    at: Nanos,
    order: u64,
    origin: Origin,
    bytes: Vec<u8>,
    truth: Truth,
}

struct Agent {
    kind: Kind,
    id: AgentId,
}

fn shared_keys() -> [Key; 2] {
    [Key::from_bytes([0x11; 32]), Key::from_bytes([0x22; 32])]
}

fn master_key() -> Key {
    Key::from_bytes([0x99; 32])
}

fn config(capacity: usize) -> TrackerConfig {
    TrackerConfig {
        threshold: THRESHOLD,
        capacity,
        evict_after: EVICT,
        allowed_uids: vec![UID],
        udp: vec![
            UdpMode::Plain,
            UdpMode::Secure {
                keys: shared_keys().to_vec(),
                master: Some(master_key()),
            },
        ],
        ..TrackerConfig::default()
    }
}

/// Builds the scenario: every datagram every agent sends, through the network, plus the
/// attacker's, sorted by arrival.
fn scenario(n_agents: usize, seed: u64) -> (Vec<Agent>, Vec<Dgram>) {
    let mut rng = Rng(seed);
    let mut agents = Vec::new();
    let mut out = Vec::new();
    let mut order = 0u64;
    let mut push = |out: &mut Vec<Dgram>, at, origin, bytes: Vec<u8>, truth| {
        order += 1;
        out.push(Dgram {
            at,
            order,
            origin,
            bytes,
            truth,
        });
    };
    for i in 0..n_agents {
        let kind = match rng.range(0, 10) {
            0..=3 => Kind::Unix,
            4..=5 => Kind::PlainUdp,
            6..=7 => Kind::Shared,
            _ => Kind::Master,
        };
        let pid = 1000 + u32::try_from(i).unwrap();
        let (listener, origin) = match kind {
            Kind::Unix => (Listener::Unix, Origin::Unix { pid, uid: UID }),
            Kind::PlainUdp => (Listener::Udp(0), Origin::Udp { listener: 0 }),
            Kind::Shared | Kind::Master => (Listener::Udp(1), Origin::Udp { listener: 1 }),
        };
        let key = match kind {
            Kind::Master => derive_agent_key(&master_key(), pid),
            _ => shared_keys()[usize::from(rng.chance(50))].clone(),
        };
        let key_class = match kind {
            Kind::Shared => KeyClass::Shared,
            Kind::Master => KeyClass::Agent,
            Kind::Unix | Kind::PlainUdp => KeyClass::None,
        };
        let id = AgentId {
            listener,
            pid,
            key_class,
        };
        let fast = rng.chance(5);
        let period = if fast {
            rng.range(8, 20) * MS
        } else {
            rng.range(80, 300) * MS
        };
        let counter_start = u32::from(rng.chance(50)); // Python 0, Rust 1
        let mut start = rng.range(0, 1_000) * MS;
        let sessions = rng.range(1, 4);
        for session in 0..usize::try_from(sessions).unwrap() {
            let beats = if rng.chance(30) {
                rng.range(60, 120)
            } else {
                rng.range(5, 40)
            };
            let end = match rng.range(0, 4) {
                0 => End::Crash,
                1 => End::Goodbye,
                _ => End::Silent,
            };
            let mut stream = [0u8; 8];
            stream.copy_from_slice(&rng.next().to_le_bytes());
            let mut status = Status::Ok;
            let mut t = start;
            let mut last_send = start;
            for seq in 0..beats + u64::from(end != End::Silent) {
                if t >= END {
                    break;
                }
                let terminal = seq == beats;
                let ts = 1_000 + (t - start);
                let frame = if terminal {
                    if end == End::Goodbye {
                        Frame::goodbye(pid, ts).unwrap()
                    } else {
                        Frame::terminal(pid, ts, 0xdead_0000 | u32::try_from(seq).unwrap()).unwrap()
                    }
                } else {
                    if rng.chance(5) {
                        status = match rng.range(0, 3) {
                            0 => Status::Ok,
                            1 => Status::Degraded,
                            _ => Status::Critical,
                        };
                    }
                    let payload = u32::try_from(rng.range(0, 1 << 20)).unwrap();
                    Frame::new(status, pid, ts, seq + 1, payload).unwrap()
                };
                let iv = Iv {
                    random: stream,
                    counter: counter_start + u32::try_from(seq).unwrap(),
                };
                let bytes = match kind {
                    Kind::Unix | Kind::PlainUdp => frame.emit().to_vec(),
                    Kind::Shared => SharedDatagram::seal(&key, &iv, &frame).0.to_vec(),
                    Kind::Master => MasterDatagram::seal(&key, &iv, &frame).0.to_vec(),
                };
                let truth = Truth::Real {
                    agent: i,
                    session,
                    seq,
                    frame,
                };
                // The first three datagrams of a session always arrive exactly once, so a
                // new session is visible to the tracker by its first frame (VLP v0.2 plain
                // frames carry no session id: a session whose first frames are all lost is
                // indistinguishable from a gap in the old one).
                let protected = seq < 3;
                if protected || !rng.chance(3) {
                    let at = t + rng.range(MS, MAX_DELAY);
                    push(&mut out, at, origin, bytes.clone(), truth);
                    if !protected && rng.chance(3) {
                        let at = t + rng.range(MS, MAX_DELAY);
                        push(&mut out, at, origin, bytes.clone(), truth);
                    }
                }
                if !protected && kind != Kind::Unix && kind != Kind::PlainUdp && rng.chance(2) {
                    // Attacker: a replay shortly after, and a corrupted copy on a fresh stream.
                    let at = t + rng.range(MAX_DELAY, 2 * MAX_DELAY);
                    push(&mut out, at, origin, bytes.clone(), truth);
                    let mut bad = bytes.clone();
                    let off = if kind == Kind::Master { 4 } else { 0 };
                    bad[off] ^= 0x5a;
                    bad[off + 20] ^= 0x01;
                    push(&mut out, at, origin, bad, Truth::Junk(Reason::BadTag));
                }
                if !protected && kind == Kind::Unix && rng.chance(2) {
                    // Attacker: a frame with this agent's pid from another process, and a
                    // corrupted frame.
                    let at = t + rng.range(0, MAX_DELAY);
                    let spoof = Origin::Unix { pid: 1, uid: UID };
                    push(
                        &mut out,
                        at,
                        spoof,
                        bytes.clone(),
                        Truth::Junk(Reason::PidMismatch),
                    );
                    let mut bad = bytes.clone();
                    bad[24] ^= 0xff;
                    push(&mut out, at, origin, bad, Truth::Junk(Reason::BadCrc));
                }
                last_send = t;
                t += period;
            }
            // The next session of this pid: a restarted agent or a recycled pid. A quick
            // restart (within the threshold) only after a long session (its nonce and
            // clock then clearly start over), else after the threshold.
            let gap = if beats >= 60 && end == End::Silent && rng.chance(50) {
                rng.range(period.max(2 * MAX_DELAY), THRESHOLD)
            } else {
                rng.range(THRESHOLD + 100 * MS, 2 * THRESHOLD + EVICT)
            };
            start = last_send + gap;
        }
        agents.push(Agent { kind, id });
    }
    out.sort_by_key(|d| (d.at, d.order));
    (agents, out)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Alive,
    Stalled,
    Dead,
}

#[derive(Clone, Copy, Debug)]
struct Track {
    phase: Phase,
    last: Nanos,
    nonce: u64,
    status: Status,
    session: usize,
}

#[derive(Default)]
struct Model {
    track: Option<Track>,
    /// Per session: highest nonce delivered, and whether its terminal frame was delivered.
    max: HashMap<usize, u64>,
    dead: HashSet<usize>,
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Expect {
    accepted: u64,
    reordered: u64,
    junk: HashMap<Reason, u64>,
}

impl Model {
    /// Applies the deadlines of this agent that fall at or before `t`.
    fn advance(&mut self, id: AgentId, t: Nanos, log: &mut Vec<Event>) {
        loop {
            let Some(tr) = self.track.as_mut() else {
                return;
            };
            match tr.phase {
                Phase::Alive if tr.last + THRESHOLD <= t => {
                    log.push(Event::Stalled {
                        at: tr.last + THRESHOLD,
                        agent: id,
                        last_beat: tr.last,
                        nonce: tr.nonce,
                    });
                    tr.phase = Phase::Stalled;
                }
                Phase::Stalled if tr.last + THRESHOLD + EVICT <= t => {
                    log.push(Event::Evicted {
                        at: tr.last + THRESHOLD + EVICT,
                        agent: id,
                    });
                    self.track = None;
                }
                Phase::Dead if tr.last + EVICT <= t => {
                    log.push(Event::Evicted {
                        at: tr.last + EVICT,
                        agent: id,
                    });
                    self.track = None;
                }
                _ => return,
            }
        }
    }
}

/// The expected log, from ground truth.
fn expected(agents: &[Agent], dgrams: &[Dgram]) -> (Vec<Event>, Expect) {
    let mut models: Vec<Model> = agents.iter().map(|_| Model::default()).collect();
    let mut delivered: HashSet<(usize, usize, u64)> = HashSet::new();
    let mut log = Vec::new();
    let mut ex = Expect::default();
    for d in dgrams {
        let (agent, session, seq, f) = match d.truth {
            Truth::Junk(r) => {
                *ex.junk.entry(r).or_default() += 1;
                continue;
            }
            Truth::Real {
                agent,
                session,
                seq,
                frame,
            } => (agent, session, seq, frame),
        };
        let a = &agents[agent];
        let m = &mut models[agent];
        let first_copy = delivered.insert((agent, session, seq));
        let secure = matches!(a.kind, Kind::Shared | Kind::Master);
        let fresh = !m.dead.contains(&session)
            && (f.is_terminal() || m.max.get(&session).map_or(true, |&mx| f.nonce() > mx));
        if !fresh {
            if secure && first_copy && !m.dead.contains(&session) {
                // Reordered within the replay window: accepted, changes nothing.
                ex.accepted += 1;
                ex.reordered += 1;
            }
            continue;
        }
        ex.accepted += 1;
        if f.is_terminal() {
            m.dead.insert(session);
        } else {
            m.max.insert(session, f.nonce());
        }
        m.advance(a.id, d.at, &mut log);
        let at = d.at;
        let id = a.id;
        match m.track {
            None => {
                log.push(Event::NewAgent {
                    at,
                    agent: id,
                    status: f.status(),
                    nonce: f.nonce(),
                });
            }
            Some(tr) => {
                if tr.phase == Phase::Stalled && !(f.is_terminal() && tr.session == session) {
                    log.push(Event::Recovered {
                        at,
                        agent: id,
                        silent_for: at - tr.last,
                    });
                }
                if tr.session != session {
                    log.push(Event::SessionRestart {
                        at,
                        agent: id,
                        nonce: f.nonce(),
                    });
                }
                if !f.is_terminal() && tr.status != f.status() {
                    log.push(Event::StatusChanged {
                        at,
                        agent: id,
                        from: tr.status,
                        to: f.status(),
                        payload: f.payload(),
                    });
                }
            }
        }
        let prev_nonce = m.track.map_or(0, |t| t.nonce);
        if f.is_terminal() {
            log.push(Event::Died {
                at,
                agent: id,
                clean: f.payload() == GOODBYE_PAYLOAD,
                payload: f.payload(),
            });
        }
        m.track = Some(Track {
            phase: if f.is_terminal() {
                Phase::Dead
            } else {
                Phase::Alive
            },
            last: at,
            nonce: if f.is_terminal() {
                if m.track.is_some_and(|t| t.session == session) {
                    prev_nonce
                } else {
                    0
                }
            } else {
                f.nonce()
            },
            status: f.status(),
            session,
        });
    }
    for (a, m) in agents.iter().zip(models.iter_mut()) {
        m.advance(a.id, END, &mut log);
    }
    (log, ex)
}

/// Runs the tracker over the scenario on a virtual clock: deadlines due at or before the next
/// arrival fire first, exactly at their time.
fn run(dgrams: &[Dgram], capacity: usize) -> (Vec<Event>, Tracker) {
    let mut t = Tracker::new(config(capacity));
    let mut log = Vec::new();
    let mut i = 0;
    let mut steps = 0u64;
    loop {
        let next_dgram = dgrams.get(i).map(|d| d.at);
        let next_timeout = t.poll_timeout().filter(|&d| d <= END);
        match (next_timeout, next_dgram) {
            (Some(to), Some(at)) if to <= at => t.handle_timeout(to),
            (Some(to), None) => t.handle_timeout(to),
            (_, Some(at)) => {
                let d = &dgrams[i];
                let _ = t.handle_datagram(at, &d.origin, &d.bytes);
                i += 1;
            }
            (None, None) => break,
        }
        log.extend(std::iter::from_fn(|| t.poll_event()));
        steps += 1;
        if steps % 20_000 == 0 {
            t.check_invariants().unwrap();
        }
    }
    t.check_invariants().unwrap();
    (log, t)
}

fn canonical(mut log: Vec<Event>) -> Vec<Event> {
    log.sort_by_key(|e| (e.at(), e.agent()));
    log
}

#[test]
fn simulation_matches_ground_truth() {
    let n = 2_000;
    let (agents, dgrams) = scenario(n, 0x5eed_0001);
    let (want, ex) = expected(&agents, &dgrams);
    let (got, t) = run(&dgrams, n);

    // The tracker's log is in time order as produced.
    assert!(
        got.windows(2).all(|w| w[0].at() <= w[1].at()),
        "log out of time order"
    );
    let (got, want) = (canonical(got), canonical(want));
    let first_diff = got.iter().zip(&want).position(|(g, w)| g != w);
    if let Some(i) = first_diff {
        let agent = want[i].agent();
        let mine: Vec<_> = got.iter().filter(|e| e.agent() == agent).collect();
        let theirs: Vec<_> = want.iter().filter(|e| e.agent() == agent).collect();
        panic!(
            "event {i} differs: got {:?}, want {:?}\nagent {agent}: got {mine:#?}\nwant {theirs:#?}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len());

    let s = t.stats();
    assert_eq!(s.datagrams, dgrams.len() as u64);
    assert_eq!(s.accepted, ex.accepted);
    assert_eq!(s.reordered, ex.reordered);
    for (r, n) in &ex.junk {
        assert_eq!(s.rejected(*r), *n, "rejections for {}", r.as_str());
    }
    assert_eq!(s.rejected(Reason::CapacityExceeded), 0);
    assert_eq!(s.events_dropped, 0);

    // The scenario exercises what it claims to.
    let count = |k: EventKind| want.iter().filter(|e| e.kind() == k).count();
    // The core's own counters agree with the event log, kind by kind.
    for k in EventKind::ALL {
        assert_eq!(s.events(k), count(k) as u64, "Stats::events({k})");
    }
    eprintln!(
        "sim: {} agents, {} datagrams, {} events, {} reordered, rejections {:?}",
        n,
        dgrams.len(),
        want.len(),
        ex.reordered,
        s.rejections().filter(|r| r.1 > 0).collect::<Vec<_>>()
    );
    for k in [
        EventKind::New,
        EventKind::Restart,
        EventKind::Status,
        EventKind::Stall,
        EventKind::Recovered,
        EventKind::Evicted,
    ] {
        eprintln!("sim: {k}: {}", count(k));
        assert!(count(k) > 20, "scenario has only {} {k} events", count(k));
    }
    let deaths = count(EventKind::Crash) + count(EventKind::Goodbye);
    assert!(deaths > 20, "scenario has only {deaths} deaths");
    assert!(
        ex.reordered > 100,
        "only {} secure reorderings",
        ex.reordered
    );
    assert!(s.rejected(Reason::StaleNonce) > 100);
    assert!(s.rejected(Reason::Replayed) > 50);
}

#[test]
fn simulation_is_deterministic_across_seeds_and_capacity_holds() {
    // A second seed, with a table too small for everyone: refusals are counted, the table
    // never exceeds its capacity, and the invariants hold throughout.
    let (_, dgrams) = scenario(600, 0x5eed_0002);
    let (_, t) = run(&dgrams, 100);
    assert!(t.len() <= 100);
    assert!(t.stats().rejected(Reason::CapacityExceeded) > 0);
    let (log1, _) = run(&dgrams, 100);
    let (log2, _) = run(&dgrams, 100);
    assert_eq!(log1, log2);
}

/// An attacker who captured every datagram of every earlier session of a fleet of secure
/// agents replays them, shuffled, while the agents hang and after they are evicted: no hung
/// agent looks alive, restarted or cleanly exited, and no evicted one comes back.
#[test]
fn replayed_older_sessions_never_hide_a_hang() {
    const AGENTS: u32 = 300;
    let mut rng = Rng(0x01d5_e55e);
    let mut t = Tracker::new(config(4 * AGENTS as usize));
    let keys = shared_keys();
    let mut captured: Vec<(Origin, Vec<u8>)> = Vec::new();
    let mut now: Nanos = 0;
    // Every agent runs three sessions (one ends with a goodbye, one with a crash report),
    // then a fourth that hangs after a few beats.
    for pid in 2..2 + AGENTS {
        let master = pid % 2 == 0;
        let agent_key = derive_agent_key(&master_key(), pid);
        let origin = Origin::Udp { listener: 1 };
        for session in 0..4u8 {
            let mut stream = [0u8; 8];
            stream.copy_from_slice(&rng.next().to_le_bytes());
            let beats = rng.range(3, 8);
            for seq in 0..=beats {
                now += MS;
                let frame = match (session, seq == beats) {
                    (0, true) => Frame::goodbye(pid, 1_000 + seq).unwrap(),
                    (1, true) => Frame::terminal(pid, 1_000 + seq, 7).unwrap(),
                    (_, true) => continue,
                    _ => Frame::new(Status::Ok, pid, 1_000 + seq, seq + 1, 0).unwrap(),
                };
                let iv = Iv {
                    random: stream,
                    counter: u32::try_from(seq).unwrap(),
                };
                let bytes = if master {
                    MasterDatagram::seal(&agent_key, &iv, &frame).0.to_vec()
                } else {
                    SharedDatagram::seal(&keys[0], &iv, &frame).0.to_vec()
                };
                t.handle_datagram(now, &origin, &bytes).unwrap();
                if session < 3 {
                    captured.push((origin, bytes));
                }
            }
        }
    }
    while t.poll_event().is_some() {}
    let hang_from = now;
    // The replay storm runs from before the stalls until long after the evictions.
    let end = hang_from + THRESHOLD + EVICT + 2 * THRESHOLD;
    let step = (end - hang_from) / (3 * captured.len() as u64);
    let mut log = Vec::new();
    for round in 0..3 {
        for i in (1..captured.len()).rev() {
            let j = usize::try_from(rng.range(0, i as u64 + 1)).unwrap();
            captured.swap(i, j);
        }
        for (origin, bytes) in &captured {
            now += step;
            while let Some(d) = t.poll_timeout().filter(|&d| d <= now) {
                t.handle_timeout(d);
                log.extend(std::iter::from_fn(|| t.poll_event()));
            }
            let r = t.handle_datagram(now, origin, bytes);
            assert!(r.is_err(), "round {round}: a replay was accepted: {r:?}");
            log.extend(std::iter::from_fn(|| t.poll_event()));
        }
    }
    t.handle_timeout(end);
    log.extend(std::iter::from_fn(|| t.poll_event()));
    let count = |k: EventKind| log.iter().filter(|e| e.kind() == k).count();
    assert_eq!(
        count(EventKind::Stall),
        AGENTS as usize,
        "every hang reported once"
    );
    assert_eq!(count(EventKind::Evicted), AGENTS as usize);
    for k in [
        EventKind::Recovered,
        EventKind::Restart,
        EventKind::Goodbye,
        EventKind::Crash,
        EventKind::New,
        EventKind::Status,
    ] {
        assert_eq!(count(k), 0, "{k} raised by a replay");
    }
    let s = t.stats();
    eprintln!(
        "replay storm: {} replays, refused as {:?}",
        3 * captured.len(),
        s.rejections().filter(|r| r.1 > 0).collect::<Vec<_>>()
    );
    assert!(s.rejected(Reason::RetiredStream) > 0);
    assert!(s.rejected(Reason::EvictedStream) > 0);
    assert!(t.is_empty());
}

/// Runs the scenario in receive batches (as the daemon reads them: up to 64 datagrams that
/// arrived before the next deadline, each at its own arrival time or all at the last one's),
/// through
/// [`Tracker::handle_batch`] when `batched`, else one by one through `handle_datagram` at the
/// same times. Returns the event log, every datagram's outcome and the tracker.
/// How [`run_in_batches`] hands a batch to the tracker.
#[derive(Clone, Copy)]
enum How {
    /// One by one, `handle_datagram`.
    OneByOne,
    /// `handle_batch` opening with this backend.
    Batched(vlp_core::batch::Backend),
    /// Opened by one of two [`Opener`]s in turn (as two receive workers would), then
    /// `handle_opened`; each opener derives at most `derive_per_sec` new keys (0: unbounded).
    Workers { derive_per_sec: u32 },
}

fn run_in_batches(
    dgrams: &[Dgram],
    capacity: usize,
    how: How,
    seed: u64,
) -> (
    Vec<Event>,
    Vec<Result<varta_watch::tracker::Accepted, varta_watch::tracker::Rejection>>,
    Tracker,
) {
    let mut t = Tracker::new(config(capacity));
    if let How::Batched(b) = how {
        t.set_open_backend(b);
    }
    let mut openers: Vec<Opener> = match how {
        How::Workers { derive_per_sec } => (0..2)
            .map(|_| Opener::new(config(capacity).udp, 0, capacity, derive_per_sec))
            .collect(),
        _ => Vec::new(),
    };
    let mut turn = 0;
    let mut rng = Rng(seed);
    let (mut log, mut out) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < dgrams.len() {
        let next_timeout = t.poll_timeout().filter(|&d| d <= END);
        if matches!(next_timeout, Some(to) if to <= dgrams[i].at) {
            t.handle_timeout(next_timeout.unwrap_or(0));
        } else {
            let want = rng.range(1, 65) as usize;
            let mut j = i + 1;
            while j < dgrams.len()
                && j - i < want
                && !matches!(next_timeout, Some(to) if to <= dgrams[j].at)
            {
                j += 1;
            }
            let now = dgrams[j - 1].at;
            // Half the batches at their own arrival times (kernel stamps), half all at the
            // time the batch was read.
            let stamped = rng.chance(50);
            let group: Vec<(Nanos, Origin, &[u8])> = dgrams[i..j]
                .iter()
                .map(|d| {
                    (
                        if stamped { d.at } else { now },
                        d.origin,
                        d.bytes.as_slice(),
                    )
                })
                .collect();
            match how {
                How::Batched(_) => t.handle_batch(&group, |_, r| out.push(r)),
                How::OneByOne => {
                    for (at, origin, bytes) in &group {
                        out.push(t.handle_datagram(*at, origin, bytes));
                    }
                }
                How::Workers { .. } => {
                    let mut opened: Vec<Option<Opened>> = (0..group.len()).map(|_| None).collect();
                    turn += 1;
                    openers[turn % 2].open(now, &group, &mut opened);
                    t.handle_opened(0, &group, &mut opened, |_, r| out.push(r));
                }
            }
            i = j;
        }
        log.extend(std::iter::from_fn(|| t.poll_event()));
    }
    t.handle_timeout(END);
    log.extend(std::iter::from_fn(|| t.poll_event()));
    t.check_invariants().unwrap();
    (log, out, t)
}

/// The batched open (every SIMD path this CPU runs) takes the same decisions, counts the
/// same and raises the same events as one-by-one handling, datagram for datagram, including
/// duplicates and replays inside one batch and agents whose key is derived in that batch.
#[test]
fn batched_open_is_one_by_one_handling() {
    use vlp_core::batch::{Backend, Path};
    let (_, dgrams) = scenario(800, 0x5eed_0003);
    let (want_log, want_out, want_t) = run_in_batches(&dgrams, 800, How::OneByOne, 7);
    let secure = dgrams
        .iter()
        .filter(|d| d.bytes.len() == 60 || d.bytes.len() == 64)
        .count();
    assert!(secure > 10_000, "only {secure} secure datagrams");
    assert!(want_t.stats().key_derivations > 100);
    for path in Path::ALL {
        let Some(backend) = Backend::with_path(path) else {
            continue;
        };
        let (log, out, t) = run_in_batches(&dgrams, 800, How::Batched(backend), 7);
        let diff = out.iter().zip(&want_out).position(|(g, w)| g != w);
        assert_eq!(diff, None, "{path}: outcome of datagram {diff:?} differs");
        assert_eq!(out.len(), want_out.len());
        assert_eq!(t.stats(), want_t.stats(), "{path}: statistics");
        assert_eq!(log, want_log, "{path}: event log");
    }
    // A smaller table: evictions and refusals inside batches.
    let (_, dgrams) = scenario(300, 0x5eed_0004);
    let (want_log, want_out, want_t) = run_in_batches(&dgrams, 60, How::OneByOne, 9);
    let (log, out, t) = run_in_batches(&dgrams, 60, How::Batched(Backend::detect()), 9);
    assert!(want_out.iter().any(|r| r.is_err()));
    assert_eq!(out, want_out);
    assert_eq!(t.stats(), want_t.stats());
    assert_eq!(log, want_log);
}

/// Batches opened by two receive workers' openers (each keeping the agent keys it derived,
/// one batch each in turn, so an agent's datagrams reach both) take the same decisions, count
/// the same and raise the same events as one-by-one handling, with and without a derivation
/// budget that leaves some datagrams unopened for the table.
#[test]
fn worker_opened_batches_are_one_by_one_handling() {
    let (_, dgrams) = scenario(800, 0x5eed_0005);
    let (want_log, want_out, want_t) = run_in_batches(&dgrams, 800, How::OneByOne, 11);
    assert!(want_t.stats().key_derivations > 100);
    for derive_per_sec in [0, 2] {
        let (log, out, t) = run_in_batches(&dgrams, 800, How::Workers { derive_per_sec }, 11);
        let diff = out.iter().zip(&want_out).position(|(g, w)| g != w);
        assert_eq!(
            diff, None,
            "budget {derive_per_sec}: datagram {diff:?} differs"
        );
        assert_eq!(out.len(), want_out.len());
        assert_eq!(
            t.stats(),
            want_t.stats(),
            "budget {derive_per_sec}: statistics"
        );
        assert_eq!(log, want_log, "budget {derive_per_sec}: event log");
    }
}
