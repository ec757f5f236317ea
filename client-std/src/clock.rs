//! The shell's clock: `CLOCK_MONOTONIC` in nanoseconds, the clock [`std::time::Instant`]
//! reads on Linux, without `Instant`'s checked `Duration` arithmetic (a beat's budget is a
//! few tens of nanoseconds, and the clock is most of it).

/// Nanoseconds on `CLOCK_MONOTONIC` (since boot, not counting suspend): never goes back.
#[inline]
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on
    // Linux, so the call cannot fail (on failure `ts` stays zero, which only clamps).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Both fields are non-negative for CLOCK_MONOTONIC; u64 nanoseconds last 584 years.
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// Same clock as `Instant` (CLOCK_MONOTONIC): readings taken in the order
    /// `a, c0, i0, sleep, i1, c1, b` nest, so `i1 - i0 <= c1 - c0 <= b - a`. Only the order
    /// of readings is asserted, never how long a step took (a loaded machine may stall any).
    #[test]
    fn readings_nest_with_instant() {
        let a = Instant::now();
        let c0 = super::monotonic_ns();
        let i0 = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        let i1 = Instant::now();
        let c1 = super::monotonic_ns();
        let b = Instant::now();
        assert!(c0 < c1, "{c0} then {c1}");
        let ours = Duration::from_nanos(c1 - c0);
        let (inner, outer) = (i1 - i0, b - a);
        assert!(
            inner <= ours,
            "{ours:?} shorter than the Instants inside it ({inner:?})"
        );
        assert!(
            ours <= outer,
            "{ours:?} longer than the Instants around it ({outer:?})"
        );
    }
}
