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
    #[test]
    fn advances_like_instant() {
        let (i, c) = (std::time::Instant::now(), super::monotonic_ns());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (di, dc) = (i.elapsed().as_nanos() as u64, super::monotonic_ns() - c);
        assert!(dc >= 20_000_000, "{dc}");
        // Same clock: the two intervals agree to well within a millisecond.
        assert!(dc.abs_diff(di) < 1_000_000, "{dc} vs {di}");
    }
}
