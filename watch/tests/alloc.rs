//! No heap allocation per datagram in steady state: a counting global allocator watches the
//! tracker handle beats of every kind (Unix, plain UDP, shared-key, master-key), rejections of
//! every family, stalls, recoveries, deaths, restarts, evictions and re-admissions.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use varta_watch::tracker::{EventKind, Nanos, Origin, Tracker, TrackerConfig, UdpMode};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Iv, Key, MasterDatagram, SharedDatagram, Status};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    // `try_with`: the thread-local may be gone during thread teardown.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MS: Nanos = 1_000_000;
const AGENTS: u32 = 200;

fn keys() -> (Key, Key) {
    (Key::from_bytes([1; 32]), Key::from_bytes([9; 32]))
}

/// One datagram of agent `i` (kind by `i % 4`), nonce `n`, session `s`.
fn datagram(i: u32, n: u64, s: u8, status: Status) -> (Origin, Vec<u8>) {
    let pid = 100 + i;
    let f = Frame::new(status, pid, 1_000 + n * 10 * MS, n, 0).unwrap();
    let iv = Iv {
        random: [s; 8],
        counter: u32::try_from(n).unwrap(),
    };
    let (shared, master) = keys();
    match i % 4 {
        0 => (Origin::Unix { pid, uid: 0 }, f.emit().to_vec()),
        1 => (Origin::Udp { listener: 0 }, f.emit().to_vec()),
        2 => (
            Origin::Udp { listener: 1 },
            SharedDatagram::seal(&shared, &iv, &f).0.to_vec(),
        ),
        _ => (
            Origin::Udp { listener: 1 },
            MasterDatagram::seal(&derive_agent_key(&master, pid), &iv, &f)
                .0
                .to_vec(),
        ),
    }
}

#[test]
fn steady_state_handles_datagrams_without_allocating() {
    let (shared, master) = keys();
    let mut t = Tracker::new(TrackerConfig {
        threshold: 100 * MS,
        capacity: AGENTS as usize,
        evict_after: 300 * MS,
        allowed_uids: vec![0],
        udp: vec![
            UdpMode::Plain,
            UdpMode::Secure {
                keys: vec![Key::from_bytes([7; 32]), shared],
                master: Some(master),
            },
        ],
        ..TrackerConfig::default()
    });

    // The script, built before counting: rounds of beats every 10 ms; every 50th round a
    // quarter of the agents stays silent for 200 ms (stall, then recovery), some die and
    // restart, some are silent long enough to be evicted and come back; garbage and replays
    // throughout.
    let mut script: Vec<(Nanos, Origin, Vec<u8>)> = Vec::new();
    let mut now = 0;
    let mut nonce = vec![0u64; AGENTS as usize];
    let mut session = vec![0u8; AGENTS as usize];
    let mut silent_until = vec![0; AGENTS as usize];
    for round in 0..300u64 {
        now += 10 * MS;
        for i in 0..AGENTS {
            let k = i as usize;
            if now < silent_until[k] {
                continue;
            }
            if round % 50 == 25 && i % 4 == (round / 50 % 4) as u32 {
                silent_until[k] = now + if i % 8 == 0 { 600 * MS } else { 200 * MS };
                continue;
            }
            if round % 97 == 0 && i % 5 == 0 {
                // Crash (terminal), then a new session.
                let (o, _) = datagram(i, 1, session[k], Status::Ok);
                let pid = 100 + i;
                let term = Frame::terminal(pid, 1_000 + (nonce[k] + 1) * 10 * MS, 3).unwrap();
                let iv = Iv {
                    random: [session[k]; 8],
                    counter: u32::try_from(nonce[k] + 1).unwrap(),
                };
                let bytes = match i % 4 {
                    0 | 1 => term.emit().to_vec(),
                    2 => SharedDatagram::seal(&shared_key(), &iv, &term).0.to_vec(),
                    _ => MasterDatagram::seal(&derive_agent_key(&keys().1, pid), &iv, &term)
                        .0
                        .to_vec(),
                };
                script.push((now, o, bytes));
                session[k] = session[k].wrapping_add(1);
                nonce[k] = 0;
                silent_until[k] = now + 150 * MS;
                continue;
            }
            nonce[k] += 1;
            let status = if nonce[k] % 7 == 0 {
                Status::Degraded
            } else {
                Status::Ok
            };
            let (o, b) = datagram(i, nonce[k], session[k], status);
            script.push((now, o, b.clone()));
            if i % 16 == 0 {
                // Replay / duplicate.
                script.push((now, o, b.clone()));
                // Corruption.
                let mut bad = b;
                let last = bad.len() - 1;
                bad[last] ^= 1;
                script.push((now, o, bad));
                script.push((now, o, vec![0u8; 7]));
            }
        }
    }
    let (warm, steady) = script.split_at(script.len() / 3);

    let run = |part: &[(Nanos, Origin, Vec<u8>)], t: &mut Tracker| {
        let mut events = 0u64;
        for (at, origin, bytes) in part {
            while let Some(d) = t.poll_timeout() {
                if d > *at {
                    break;
                }
                t.handle_timeout(d);
                while t.poll_event().is_some() {
                    events += 1;
                }
            }
            let _ = t.handle_datagram(*at, origin, bytes);
            while t.poll_event().is_some() {
                events += 1;
            }
        }
        events
    };
    run(warm, &mut t);
    let before = t.stats().clone();

    COUNTING.with(|c| c.set(true));
    let events = run(steady, &mut t);
    COUNTING.with(|c| c.set(false));
    let allocs = ALLOCS.load(Ordering::Relaxed);

    let s = t.stats();
    let d = |a: u64, b: u64| a - b;
    // The steady part did exercise every path.
    assert!(d(s.accepted, before.accepted) > 20_000);
    assert!(
        d(s.events(EventKind::Stall), before.events(EventKind::Stall)) > 50,
        "stalls"
    );
    assert!(
        d(
            s.events(EventKind::Recovered),
            before.events(EventKind::Recovered)
        ) > 50,
        "recoveries"
    );
    assert!(
        d(s.events(EventKind::Crash), before.events(EventKind::Crash)) > 20,
        "crashes"
    );
    assert!(
        d(
            s.events(EventKind::Restart),
            before.events(EventKind::Restart)
        ) > 20,
        "restarts"
    );
    assert!(
        d(
            s.events(EventKind::Evicted),
            before.events(EventKind::Evicted)
        ) > 20,
        "evictions"
    );
    assert!(
        d(s.events(EventKind::New), before.events(EventKind::New)) > 20,
        "re-admissions"
    );
    assert!(d(s.rejected_total(), before.rejected_total()) > 2_000);
    assert!(events > 0);
    eprintln!(
        "alloc: {} datagrams, {events} events, {allocs} allocations",
        steady.len()
    );
    assert_eq!(allocs, 0, "heap allocations in steady state");

    // The counter itself works.
    COUNTING.with(|c| c.set(true));
    let b = std::hint::black_box(Box::new(7u64));
    COUNTING.with(|c| c.set(false));
    drop(b);
    assert!(ALLOCS.load(Ordering::Relaxed) > allocs);
}

fn shared_key() -> Key {
    keys().0
}
