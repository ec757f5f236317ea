//! `cargo bench -p varta-client`: the cost of a beat beside the bare syscall it wraps.
//!
//! * `uds`: `Varta::beat` over a Unix datagram socket vs a bare `send(2)` of 32 bytes on
//!   another socket connected to the same observer, a thread draining it.
//! * `udp`: secure beats (60-byte shared key, 64-byte master key) vs a bare UDP send of 60
//!   bytes, and a plain UDP beat vs a bare 32-byte send, to a draining receiver on loopback.
//! * `parts`: the pieces of a beat without I/O (pid check, clock, frame, seal).
//!
//! After criterion's report, a paired run alternates blocks of bare sends and beats (so
//! machine noise hits both alike) and prints the medians and the targets: median UDS beat
//! <= 1.10 x bare send; secure UDP beat <= bare UDP send + 0.5 us.
#![allow(missing_docs)] // reason: criterion_group! generates an undocumented pub fn.
use std::hint::black_box;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use varta_client::vlp_core::Session;
use varta_client::{BeatOutcome, Key, Status, Varta};

/// A receiver thread that reads and discards everything until dropped.
struct Drain {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Drain {
    fn spawn(mut recv: impl FnMut(&mut [u8]) -> bool + Send + 'static) -> Drain {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                if recv(&mut buf) {
                    n += 1;
                }
            }
            n
        });
        Drain {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct UdsRig {
    _dir: PathBuf,
    _drain: Option<Drain>,
    /// The observer, when no drain thread owns it.
    obs: Option<UnixDatagram>,
    bare: UnixDatagram,
    varta: Varta,
}

/// A Unix-socket observer with a draining thread, or (`thread = false`) one the caller drains.
fn uds_rig(thread: bool) -> UdsRig {
    let dir = std::env::temp_dir().join(format!("varta-bench-{}-{thread}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("obs.sock");
    let obs = UnixDatagram::bind(&path).unwrap();
    let (drain, obs) = if thread {
        obs.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        (Some(Drain::spawn(move |buf| obs.recv(buf).is_ok())), None)
    } else {
        obs.set_nonblocking(true).unwrap();
        (None, Some(obs))
    };
    let bare = UnixDatagram::unbound().unwrap();
    bare.set_nonblocking(true).unwrap();
    bare.connect(&path).unwrap();
    let varta = Varta::connect(&path).unwrap();
    UdsRig {
        _dir: dir,
        _drain: drain,
        obs,
        bare,
        varta: varta.into(),
    }
}

struct UdpRig {
    _drain: Drain,
    bare: UdpSocket,
    plain: Varta,
    shared: Varta,
    master: Varta,
}

fn udp_rig() -> UdpRig {
    let obs = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = obs.local_addr().unwrap();
    obs.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let drain = Drain::spawn(move |buf| obs.recv(buf).is_ok());
    let bare = UdpSocket::bind("127.0.0.1:0").unwrap();
    bare.set_nonblocking(true).unwrap();
    bare.connect(addr).unwrap();
    UdpRig {
        _drain: drain,
        bare,
        plain: Varta::connect_udp(addr).unwrap().into(),
        shared: Varta::connect_secure_udp(addr, Key::from_bytes([7; 32]))
            .unwrap()
            .into(),
        master: Varta::connect_secure_udp_with_master(addr, Key::from_bytes([8; 32]))
            .unwrap()
            .into(),
    }
}

fn uds(c: &mut Criterion) {
    let mut rig = uds_rig(true);
    let frame = [0x5Au8; 32];
    let mut g = c.benchmark_group("uds");
    g.bench_function("bare_send_32B", |b| {
        b.iter(|| black_box(rig.bare.send(black_box(&frame)).is_ok()));
    });
    g.bench_function("beat", |b| {
        b.iter(|| black_box(rig.varta.beat(Status::Ok, black_box(0))));
    });
    g.finish();
}

fn udp(c: &mut Criterion) {
    let mut rig = udp_rig();
    let d60 = [0x5Au8; 60];
    let d32 = [0x5Au8; 32];
    let mut g = c.benchmark_group("udp");
    g.bench_function("bare_send_32B", |b| {
        b.iter(|| black_box(rig.bare.send(black_box(&d32)).is_ok()));
    });
    g.bench_function("beat_plain", |b| {
        b.iter(|| black_box(rig.plain.beat(Status::Ok, black_box(0))));
    });
    g.bench_function("bare_send_60B", |b| {
        b.iter(|| black_box(rig.bare.send(black_box(&d60)).is_ok()));
    });
    g.bench_function("beat_secure_shared", |b| {
        b.iter(|| black_box(rig.shared.beat(Status::Ok, black_box(0))));
    });
    g.bench_function("beat_secure_master", |b| {
        b.iter(|| black_box(rig.master.beat(Status::Ok, black_box(0))));
    });
    g.finish();
}

fn parts(c: &mut Criterion) {
    let mut g = c.benchmark_group("parts");
    g.bench_function("getpid", |b| b.iter(|| black_box(std::process::id())));
    let epoch = Instant::now();
    g.bench_function("clock", |b| b.iter(|| black_box(epoch.elapsed())));
    let plain = Session::plain(1234);
    g.bench_function("prepare_emit_32B", |b| {
        b.iter(|| black_box(plain.beat(Status::Ok, 0, black_box(5)).unwrap().emit()));
    });
    // The whole beat minus the syscall: a transport that accepts everything.
    struct Null;
    impl varta_client::BeatTransport for Null {
        fn send(&mut self, d: &[u8]) -> std::io::Result<()> {
            black_box(d);
            Ok(())
        }
        fn reconnect(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut null = Varta::with_transport(Null);
    g.bench_function("beat_without_io_plain", |b| {
        b.iter(|| black_box(null.beat(Status::Ok, black_box(0))));
    });
    let mut null_shared = Varta::with_transport_shared_key(Null, Key::from_bytes([7; 32])).unwrap();
    g.bench_function("beat_without_io_shared", |b| {
        b.iter(|| black_box(null_shared.beat(Status::Ok, black_box(0))));
    });
    let secure = Session::secure(1234, [9; 16]);
    let key = Key::from_bytes([7; 32]);
    g.bench_function("prepare_seal_60B", |b| {
        b.iter(|| {
            black_box(
                secure
                    .beat(Status::Ok, 0, black_box(5))
                    .unwrap()
                    .seal_shared(&key)
                    .unwrap(),
            )
        });
    });
    g.finish();
}

/// Median nanoseconds per operation over `rounds` blocks of `block` operations of each of
/// `ops`, the blocks interleaved in a rotating order.
fn paired(rounds: usize, block: u32, ops: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); ops.len()];
    let n = ops.len();
    for round in 0..rounds {
        // Rotate the order every round so no op always runs first (cache, frequency).
        for k in 0..n {
            let i = (round + k) % n;
            let (op, s) = (&mut ops[i], &mut samples[i]);
            let t = Instant::now();
            for _ in 0..block {
                op();
            }
            s.push(t.elapsed().as_nanos() as f64 / f64::from(block));
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// Like [`paired`], but each block is followed by an untimed `reset` (draining the queue in
/// the same thread, so that every timed send finds room).
fn paired_with_reset(
    rounds: usize,
    block: u32,
    ops: &mut [&mut dyn FnMut()],
    reset: &mut dyn FnMut(),
) -> Vec<f64> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); ops.len()];
    let n = ops.len();
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let (op, s) = (&mut ops[i], &mut samples[i]);
            reset();
            let t = Instant::now();
            for _ in 0..block {
                op();
            }
            s.push(t.elapsed().as_nanos() as f64 / f64::from(block));
        }
    }
    reset();
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

fn summary() {
    // Every send accepted: blocks of 10 (the default queue holds 11), drained between blocks.
    let rig = std::cell::RefCell::new(uds_rig(false));
    let frame = [0x5Au8; 32];
    let (mut ok, mut not_ok) = (0u64, 0u64);
    let m = paired_with_reset(
        4000,
        10,
        &mut [
            &mut || {
                let _ = black_box(rig.borrow().bare.send(black_box(&frame)));
            },
            &mut || {
                if rig.borrow_mut().varta.beat(Status::Ok, 0).is_sent() {
                    ok += 1;
                } else {
                    not_ok += 1;
                }
            },
        ],
        &mut || {
            let r = rig.borrow();
            let obs = r.obs.as_ref().unwrap();
            let mut buf = [0u8; 64];
            while obs.recv(&mut buf).is_ok() {}
        },
    );
    println!("\n== paired medians (ns/op) ==");
    println!("UDS, queue drained between blocks of 10 (beats sent: {ok}, not sent: {not_ok}):");
    println!(
        "  bare send(2) 32 B {:7.1}   Varta::beat {:7.1}   ratio {:.3}  (target <= 1.10)",
        m[0],
        m[1],
        m[1] / m[0]
    );
    drop(rig);

    let mut uds = uds_rig(true);
    let frame = [0x5Au8; 32];
    let (mut sent, mut dropped) = (0u64, 0u64);
    let (mut bare_ok, mut bare_err) = (0u64, 0u64);
    let m = paired(
        400,
        200,
        &mut [
            &mut || {
                if uds.bare.send(black_box(&frame)).is_ok() {
                    bare_ok += 1;
                } else {
                    bare_err += 1;
                }
            },
            &mut || {
                if uds.varta.beat(Status::Ok, 0) == BeatOutcome::Sent {
                    sent += 1;
                } else {
                    dropped += 1;
                }
            },
        ],
    );
    println!("UDS, draining thread (blocks of 200 interleaved, 400 rounds):");
    println!(
        "  bare send(2) 32 B : {:7.1}   (queue-full share {:.1}%)",
        m[0],
        100.0 * bare_err as f64 / (bare_ok + bare_err) as f64
    );
    println!(
        "  Varta::beat       : {:7.1}   (dropped share {:.1}%)   ratio {:.3}",
        m[1],
        100.0 * dropped as f64 / (sent + dropped) as f64,
        m[1] / m[0]
    );
    drop(uds);

    let mut udp = udp_rig();
    let d60 = [0x5Au8; 60];
    let d32 = [0x5Au8; 32];
    let m = paired(
        400,
        200,
        &mut [
            &mut || {
                let _ = black_box(udp.bare.send(black_box(&d60)));
            },
            &mut || {
                let _ = black_box(udp.shared.beat(Status::Ok, 0));
            },
            &mut || {
                let _ = black_box(udp.master.beat(Status::Ok, 0));
            },
            &mut || {
                let _ = black_box(udp.bare.send(black_box(&d32)));
            },
            &mut || {
                let _ = black_box(udp.plain.beat(Status::Ok, 0));
            },
        ],
    );
    println!("UDP, draining thread (blocks of 200 interleaved, 400 rounds):");
    println!("  bare send 60 B   : {:7.1}", m[0]);
    println!(
        "  secure beat (shared key, 60 B): {:7.1}   overhead {:+.1} ns  (target <= +500)",
        m[1],
        m[1] - m[0]
    );
    println!(
        "  secure beat (master key, 64 B): {:7.1}   overhead {:+.1} ns",
        m[2],
        m[2] - m[0]
    );
    println!(
        "  bare send 32 B   : {:7.1}   plain beat {:7.1}   ratio {:.3}",
        m[3],
        m[4],
        m[4] / m[3]
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = uds, udp, parts
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench -- <filter>` runs only criterion's matching benches; the paired summary
    // runs when no filter is given or the filter is "summary".
    let filtered = std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "summary");
    if !filtered {
        summary();
    }
}
