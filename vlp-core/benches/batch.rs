//! Batched open (`vlp_core::batch`) against the single open, per datagram:
//!
//! ```text
//! cargo bench -p vlp-core --features fast-aead --bench batch
//! ```
//!
//! Every figure is **nanoseconds per datagram, amortised**: each iteration opens a batch of
//! `n` datagrams (each under its own key, as per-agent keys are) and the bench reports the
//! time of one iteration divided by `n`. `batch_<layout>/<path>/<n>` is the batched open on
//! one SIMD path (every path this CPU runs); `batch_<layout>/single/16` opens the same 16
//! datagrams one by one with `SharedDatagram::open` / `MasterDatagram::open` (from the bytes,
//! as a receiver does), with the envelope backend of this build (`fast-aead` is what Varta's
//! binaries ship; without it, the `chacha20poly1305` crate). Both include parsing the frame.
//!
//! As in `benches/core.rs`, the time is the benchmarking thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`): the machine is shared. `VLP_BENCH_WALLCLOCK=1` measures wall
//! time. Short measurement windows keep the whole run under a minute.

use std::hint::black_box;
use std::time::Duration;

#[path = "common/clock.rs"]
mod clock;

use clock::ThreadOrWall;
use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion};
use vlp_core::batch::{Backend, Job, Opened, Path};
use vlp_core::envelope::OpenError;
use vlp_core::{Frame, Iv, Key, MasterDatagram, SharedDatagram, Status};

const SIZES: [usize; 4] = [1, 4, 8, 16];
const MAX: usize = 16;

/// `MAX` agents: a key, a sealed datagram of each layout.
struct Agents {
    keys: Vec<Key>,
    shared: Vec<Vec<u8>>,
    master: Vec<Vec<u8>>,
}

fn agents() -> Agents {
    let keys: Vec<Key> = (0..MAX)
        .map(|a| Key::from_bytes(core::array::from_fn(|i| (i * 7 + a * 13) as u8)))
        .collect();
    let (mut shared, mut master) = (Vec::new(), Vec::new());
    for (a, k) in keys.iter().enumerate() {
        let pid = 1_000 + a as u32;
        let f = Frame::new(Status::Ok, pid, 1_234_567_890, 42, 0xDEAD_BEEF).unwrap();
        let iv = Iv {
            random: [a as u8; 8],
            counter: 7 + a as u32,
        };
        shared.push(SharedDatagram::seal(k, &iv, &f).0.to_vec());
        master.push(MasterDatagram::seal(k, &iv, &f).0.to_vec());
    }
    Agents {
        keys,
        shared,
        master,
    }
}

/// Runs `op` `iters` times and returns the measured total divided by `n`: criterion then
/// reports nanoseconds per datagram.
fn per_datagram<M: Measurement<Value = u64>>(
    m: &M,
    iters: u64,
    n: usize,
    mut op: impl FnMut(),
) -> u64 {
    let start = m.start();
    for _ in 0..iters {
        op();
    }
    m.end(start) / n as u64
}

fn layout<M: Measurement<Value = u64> + 'static>(
    c: &mut Criterion<M>,
    name: &str,
    master: bool,
    a: &Agents,
) {
    let bytes = if master { &a.master } else { &a.shared };
    let jobs: Vec<Job<'_>> = a
        .keys
        .iter()
        .zip(bytes)
        .map(|(k, b)| {
            if master {
                Job::master(k, b)
            } else {
                Job::shared(k, b)
            }
        })
        .collect();
    let mut g = c.benchmark_group(format!("batch_{name}"));
    g.warm_up_time(Duration::from_millis(200));
    g.measurement_time(Duration::from_millis(800));
    g.sample_size(30);

    let single = |j: &Job<'_>| -> Opened {
        match j.sealed {
            vlp_core::batch::Sealed::Shared(b) => SharedDatagram::from_bytes(b)?.open(j.key),
            vlp_core::batch::Sealed::Master(b) => MasterDatagram::from_bytes(b)?.open(j.key),
        }
    };
    let backend = if cfg!(feature = "fast-aead") {
        "single"
    } else {
        "single_crate_backend"
    };
    g.bench_function(BenchmarkId::new(backend, MAX), |b| {
        b.iter_custom(|iters| {
            let m = ThreadOrWall::get();
            per_datagram(&m, iters, MAX, || {
                for j in &jobs {
                    black_box(single(black_box(j))).unwrap();
                }
            })
        })
    });
    let mut out: Vec<Opened> = vec![Err(OpenError::BadTag); MAX];
    for path in Path::ALL {
        let Some(backend) = Backend::with_path(path) else {
            eprintln!("path {path}: not available on this CPU, skipped");
            continue;
        };
        for n in SIZES {
            out.fill(Err(OpenError::BadTag));
            backend.open(&jobs[..n], &mut out);
            assert!(
                out[..n].iter().all(Result::is_ok),
                "{path} {n}: every datagram opens"
            );
            g.bench_function(BenchmarkId::new(path.name(), n), |b| {
                b.iter_custom(|iters| {
                    let m = ThreadOrWall::get();
                    per_datagram(&m, iters, n, || {
                        backend.open(black_box(&jobs[..n]), &mut out);
                    })
                })
            });
        }
    }
    g.finish();
}

fn main() {
    let a = agents();
    let mut c = Criterion::default()
        .with_measurement(ThreadOrWall::get())
        .configure_from_args();
    eprintln!(
        "batch open: fastest path here is {}",
        Backend::detect().path()
    );
    layout(&mut c, "shared", false, &a);
    layout(&mut c, "master", true, &a);
    c.final_summary();
}
