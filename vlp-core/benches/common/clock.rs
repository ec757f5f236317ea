//! The benches' measurement: the bench thread's CPU time (so a busy machine's other work is
//! not counted), or wall time with `VLP_BENCH_WALLCLOCK=1`, in nanoseconds.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// The bench thread's CPU time, or wall time with `VLP_BENCH_WALLCLOCK=1`, in ns.
pub struct ThreadOrWall {
    wall: bool,
}

impl ThreadOrWall {
    pub fn get() -> ThreadOrWall {
        ThreadOrWall {
            wall: std::env::var_os("VLP_BENCH_WALLCLOCK").is_some(),
        }
    }
}

fn now_ns(wall: bool) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let clock = if wall {
        libc::CLOCK_MONOTONIC
    } else {
        libc::CLOCK_THREAD_CPUTIME_ID
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadOrWall {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        now_ns(self.wall)
    }
    fn end(&self, start: u64) -> u64 {
        now_ns(self.wall) - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as WallTime's: reuse its formatting.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}
