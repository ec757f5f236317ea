//! Scale bench of the tracker core: memory per agent and time per beat at 10k / 100k / 1M
//! simulated agents (VLP v0.2 plain frames over the Unix origin, kernel attestation
//! simulated), plus the per-datagram cost of secure (shared-key and master-key) beats.
//!
//! ```text
//! cargo run --release -p varta-watch --example scale            # all sizes
//! cargo run --release -p varta-watch --example scale -- 1000000 # one size
//! cargo run --release -p varta-watch --example scale -- 1000000 8 # one size, 8 threshold classes
//! cargo run --release -p varta-watch --example scale -- state   # state file, 10k and 100k
//! ```
//!
//! Each size runs in a child process of its own so that its RSS (VmRSS of /proc/self/status)
//! is not blurred by the previous one. Beats visit agents in a scattered order (a stride
//! coprime with N), as real agents' beats interleave, so the figures include cache misses.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use varta_watch::tracker::{ClockMapping, Nanos, Origin, Tracker, TrackerConfig, UdpMode};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Iv, Key, MasterDatagram, SharedDatagram, Status};

const ROUNDS: u64 = 3;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A stride coprime with `n`, near n / φ, so consecutive beats land far apart in the table.
fn stride(n: u64) -> u64 {
    let mut s = (n as f64 * 0.618_033_988_7) as u64 | 1;
    while gcd(s, n) != 1 {
        s += 2;
    }
    s
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `classes` > 1: that many threshold classes (distinct thresholds), agent `i` in class
/// `i % classes`, set once per agent after its admission as the shell does once per session.
fn one_size(n: u64, classes: u8) {
    let threshold: Nanos = 3_600_000_000_000;
    let base_rss = rss_bytes();
    let mut t = Tracker::new(TrackerConfig {
        threshold,
        capacity: usize::try_from(n).unwrap_or(usize::MAX),
        evict_after: Nanos::MAX,
        allowed_uids: vec![0],
        udp: Vec::new(),
        ..TrackerConfig::default()
    });
    let step = stride(n);
    let frame = |i: u64, round: u64| {
        let pid = 2 + u32::try_from(i).unwrap_or(0);
        (
            pid,
            Frame::new(Status::Ok, pid, 1 + round * 1_000, round + 1, 0)
                .unwrap()
                .emit(),
        )
    };

    // Threshold classes: class c waits threshold + c seconds; agent i is in class i % classes,
    // set right after its admission, as the shell does when the session starts.
    let ths: Vec<Nanos> = (0..u64::from(classes.max(1)))
        .map(|c| threshold + c * 1_000_000_000)
        .collect();
    let longest = *ths.last().unwrap_or(&threshold);
    t.set_thresholds(&ths, |_| 0).expect("threshold classes");

    // Admission of every agent.
    let start = Instant::now();
    let mut now: Nanos = 1;
    for k in 0..n {
        let i = (k * step) % n;
        let (pid, bytes) = frame(i, 0);
        black_box(t.handle_datagram(now, &Origin::Unix { pid, uid: 0 }, &bytes)).ok();
        while t.poll_event().is_some() {}
        if classes > 1 {
            let class = u8::try_from(i % u64::from(classes)).unwrap_or(0);
            t.set_threshold_class(varta_watch::tracker::AgentId::unix(pid), class);
        }
        now += 1;
    }
    let admit = start.elapsed();
    let rss = rss_bytes().saturating_sub(base_rss);
    // Cost of building the frames alone (CRC), to separate it from the core's work.
    let start = Instant::now();
    for k in 0..n {
        black_box(frame((k * step) % n, 1));
    }
    let emit_ns = start.elapsed().as_nanos() as f64 / n as f64;

    // Steady state: every agent beats once per round.
    let start = Instant::now();
    for round in 1..=ROUNDS {
        for k in 0..n {
            let i = (k * step) % n;
            let (pid, bytes) = frame(i, round);
            black_box(t.handle_datagram(now, &Origin::Unix { pid, uid: 0 }, &bytes)).ok();
            now += 1;
        }
        while t.poll_event().is_some() {}
    }
    let beat_ns = start.elapsed().as_nanos() as f64 / (n * ROUNDS) as f64;
    assert_eq!(t.stats().accepted, n * (ROUNDS + 1), "every beat accepted");

    // Every agent stalls: the cost of one deadline.
    let start = Instant::now();
    let mut stalls = 0u64;
    let end = now + longest;
    while let Some(d) = t.poll_timeout() {
        if d > end {
            break;
        }
        t.handle_timeout(end);
        while t.poll_event().is_some() {
            stalls += 1;
        }
    }
    let stall_ns = start.elapsed().as_nanos() as f64 / stalls.max(1) as f64;
    assert_eq!(stalls, n, "every agent stalled once");

    println!(
        "{n:>9} agents | RSS +{:>7.1} MiB = {:>5.1} B/agent (table heap {:>5.1} B/agent) | admit {:>6.1} ns | beat {:>6.1} ns (of which frame build {:>4.1} ns) | stall {:>6.1} ns",
        rss as f64 / (1024.0 * 1024.0),
        rss as f64 / n as f64,
        t.table_heap_bytes() as f64 / n as f64,
        admit.as_nanos() as f64 / n as f64,
        beat_ns,
        emit_ns,
        stall_ns,
    );
    println!(
        "{n:>9} agents | {} threshold class(es); admit includes setting the class",
        classes.max(1)
    );
}

fn secure(n: u32) {
    let shared = Key::from_bytes([1; 32]);
    let master = Key::from_bytes([2; 32]);
    let mut t = Tracker::new(TrackerConfig {
        threshold: 3_600_000_000_000,
        capacity: 2 * n as usize,
        evict_after: Nanos::MAX,
        allowed_uids: vec![],
        udp: vec![UdpMode::Secure {
            keys: vec![Key::from_bytes([9; 32]), shared.clone()],
            master: Some(master.clone()),
        }],
        ..TrackerConfig::default()
    });
    let origin = Origin::Udp { listener: 0 };
    let agent_keys: Vec<Key> = (0..n).map(|i| derive_agent_key(&master, 2 + i)).collect();
    let rounds = 20u32;
    // Sealed in advance: the figure is the observer's cost only.
    let mut shared_d = Vec::new();
    let mut master_d = Vec::new();
    for r in 0..rounds {
        for i in 0..n {
            let iv = Iv {
                random: [7; 8],
                counter: r + 1,
            };
            let f = Frame::new(Status::Ok, 2 + i, u64::from(r) + 1, u64::from(r) + 1, 0).unwrap();
            shared_d.push(SharedDatagram::seal(&shared, &iv, &f).0);
            let f =
                Frame::new(Status::Ok, 2 + n + i, u64::from(r) + 1, u64::from(r) + 1, 0).unwrap();
            master_d.push(MasterDatagram::seal(&derive_agent_key(&master, 2 + n + i), &iv, &f).0);
        }
    }
    black_box(&agent_keys);
    let mut now = 1;
    let start = Instant::now();
    for d in &shared_d {
        black_box(t.handle_datagram(now, &origin, d)).ok();
        while t.poll_event().is_some() {}
        now += 1;
    }
    let shared_ns = start.elapsed().as_nanos() as f64 / shared_d.len() as f64;
    let start = Instant::now();
    for d in &master_d {
        black_box(t.handle_datagram(now, &origin, d)).ok();
        while t.poll_event().is_some() {}
        now += 1;
    }
    let master_ns = start.elapsed().as_nanos() as f64 / master_d.len() as f64;
    let s = t.stats();
    assert_eq!(s.accepted, u64::from(2 * n * rounds));
    println!(
        "secure, {n} agents each: shared-key beat {shared_ns:.0} ns (second of two keys), master-key beat {master_ns:.0} ns ({} key derivations for {} datagrams)",
        s.key_derivations,
        master_d.len()
    );
}

/// State-file figures: snapshot size and time, restore time, for `n` agents (half on the
/// Unix socket, half shared-key agents each with a retired stream and a live replay window).
fn state(n: u32) {
    let shared = Key::from_bytes([1; 32]);
    let mut t = Tracker::new(TrackerConfig {
        threshold: 3_600_000_000_000,
        capacity: n as usize,
        evict_after: Nanos::MAX,
        allowed_uids: vec![0],
        udp: vec![UdpMode::Secure {
            keys: vec![shared.clone()],
            master: None,
        }],
        proven_reserve: Some(0),
        ..TrackerConfig::default()
    });
    let udp = Origin::Udp { listener: 0 };
    let mut now = 1;
    for i in 0..n {
        let pid = 2 + i;
        if i % 2 == 0 {
            let f = Frame::new(Status::Ok, pid, 1, 1, 0).unwrap().emit();
            t.handle_datagram(now, &Origin::Unix { pid, uid: 0 }, &f)
                .unwrap();
        } else {
            for (stream, counter, nonce) in [(1u8, 1u32, 5u64), (2, 1, 1), (2, 3, 2)] {
                let iv = Iv {
                    random: [stream; 8],
                    counter,
                };
                let f = Frame::new(Status::Ok, pid, nonce, nonce, 0).unwrap();
                t.handle_datagram(now, &udp, &SharedDatagram::seal(&shared, &iv, &f).0)
                    .unwrap();
            }
        }
        while t.poll_event().is_some() {}
        now += 1;
    }
    assert_eq!(t.len(), n as usize);
    let at = ClockMapping {
        tracker_now: now,
        clock_now: 1_000_000_000_000 + now,
    };
    let mut bytes = Vec::new();
    let mut snap = f64::MAX;
    for _ in 0..3 {
        bytes.clear();
        let start = Instant::now();
        t.snapshot(at, &mut bytes);
        snap = snap.min(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut restore = f64::MAX;
    for _ in 0..3 {
        let cfg = TrackerConfig {
            threshold: 3_600_000_000_000,
            capacity: n as usize,
            evict_after: Nanos::MAX,
            allowed_uids: vec![0],
            udp: vec![UdpMode::Secure {
                keys: vec![shared.clone()],
                master: None,
            }],
            proven_reserve: Some(0),
            ..TrackerConfig::default()
        };
        let start = Instant::now();
        let r = Tracker::restore(cfg, black_box(&bytes), at).expect("restores");
        restore = restore.min(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r.len(), n as usize);
    }
    println!(
        "state, {n:>7} agents: snapshot {:>6.2} MiB ({:.0} B/agent) in {snap:>6.1} ms, restore {restore:>6.1} ms (best of 3)",
        bytes.len() as f64 / (1024.0 * 1024.0),
        bytes.len() as f64 / f64::from(n),
    );
    state_file(&t, now, n);
}

/// The daemon's whole state file for the same table: encoded, then written as the helper
/// thread writes it (temporary file, fsync, rename, directory fsync) in the system's temporary
/// directory.
fn state_file(t: &Tracker, now: Nanos, n: u32) {
    use varta_watch::daemon::state;
    let path = std::env::temp_dir().join(format!("varta-scale-state-{}", std::process::id()));
    let clocks = state::Clocks::now();
    let mut bytes = Vec::new();
    let (mut encode, mut write) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let start = Instant::now();
        state::encode(t, now, &clocks, Some((1, [0; 32])), &mut bytes);
        encode = encode.min(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        state::write_atomic(&path, &bytes).expect("writes the state file");
        write = write.min(start.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    println!(
        "state file, {n:>7} agents: {:>6.2} MiB, encoded on the loop in {encode:>6.1} ms, written + fsynced + renamed in {write:>6.1} ms off the loop (best of 3, {})",
        bytes.len() as f64 / (1024.0 * 1024.0),
        std::env::temp_dir().display(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("secure") => secure(10_000),
        Some("state") => {
            state(10_000);
            state(100_000);
        }
        Some(n) => one_size(
            n.parse().expect("agent count"),
            args.get(1)
                .map_or(1, |c| c.parse().expect("threshold classes")),
        ),
        None => {
            let exe = std::env::current_exe().expect("current_exe");
            for n in ["10000", "100000", "1000000"] {
                let st = Command::new(&exe).arg(n).status().expect("spawn");
                assert!(st.success(), "size {n} failed");
            }
            let st = Command::new(&exe).arg("secure").status().expect("spawn");
            assert!(st.success(), "secure failed");
        }
    }
}
