//! Time for smoltcp from a free-running 32-bit hardware counter.
//!
//! The LAN9118's `FREE_RUN` register counts at 25 MHz and wraps every 2^32 / 25 MHz ≈ 171.8 s.
//! [`Clock`] extends it to 64 bits by adding the wrapping difference between successive
//! readings, so it stays right as long as it is fed at least once per wrap period (the main
//! loop polls far more often). Like the protocol core, it reads no hardware itself: the shell
//! passes the raw counter in.
//!
//! Under QEMU the counter follows the virtual clock: host time while the guest runs (so a
//! busy-polling guest sees real milliseconds), or instruction counts under `-icount`.

use smoltcp::time::Instant;

/// A 64-bit tick count built from a wrapping 32-bit counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    hz: u32,
    last_raw: u32,
    ticks: u64,
}

impl Clock {
    /// A clock at zero ticks, for a counter running at `hz` that currently reads `raw`.
    ///
    /// # Panics
    ///
    /// If `hz` is zero.
    pub const fn new(hz: u32, raw: u32) -> Self {
        assert!(hz != 0, "a counter frequency of 0 Hz");
        Self {
            hz,
            last_raw: raw,
            ticks: 0,
        }
    }

    /// Feeds a new counter reading; returns the ticks elapsed since [`new`](Self::new).
    ///
    /// Readings further apart than one wrap period (2^32 ticks) lose whole periods.
    pub fn update(&mut self, raw: u32) -> u64 {
        self.ticks = self
            .ticks
            .wrapping_add(u64::from(raw.wrapping_sub(self.last_raw)));
        self.last_raw = raw;
        self.ticks
    }

    /// Ticks elapsed up to the last reading.
    pub const fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Microseconds elapsed up to the last reading (rounded down).
    pub const fn micros(&self) -> u64 {
        let hz = self.hz as u64;
        // Split so that `ticks * 1e6` cannot overflow for any tick count.
        (self.ticks / hz) * 1_000_000 + (self.ticks % hz) * 1_000_000 / hz
    }

    /// Nanoseconds elapsed up to the last reading (rounded down); VLP's sender timestamp.
    pub const fn nanos(&self) -> u64 {
        let hz = self.hz as u64;
        (self.ticks / hz) * 1_000_000_000 + (self.ticks % hz) * 1_000_000_000 / hz
    }

    /// Feeds a new counter reading and returns the time as smoltcp's [`Instant`].
    pub fn instant(&mut self, raw: u32) -> Instant {
        self.update(raw);
        // i64 microseconds last 292,000 years.
        Instant::from_micros(self.micros() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_the_first_reading() {
        let mut c = Clock::new(25_000_000, 1_000);
        assert_eq!(c.update(1_000), 0);
        assert_eq!(c.update(26_000), 25_000);
        assert_eq!(c.micros(), 1_000);
        assert_eq!(c.nanos(), 1_000_000);
        c.update(26_001);
        assert_eq!(c.nanos(), 1_000_040, "one tick is 40 ns at 25 MHz");
    }

    #[test]
    fn survives_the_32_bit_wrap() {
        let mut c = Clock::new(25_000_000, u32::MAX - 9);
        assert_eq!(c.update(5), 15);
        // Several wraps, each observed.
        for _ in 0..3 {
            c.update(0x8000_0000);
            c.update(5);
        }
        assert_eq!(c.ticks(), 15 + 3 * (1u64 << 32));
    }

    #[test]
    fn micros_is_exact_at_large_tick_counts() {
        let mut c = Clock::new(25_000_000, 0);
        // 200 days of ticks, fed in steps below one wrap period.
        let target: u64 = 200 * 86_400 * 25_000_000;
        let mut raw: u32 = 0;
        let mut fed: u64 = 0;
        while fed < target {
            let step = (target - fed).min(1 << 31);
            raw = raw.wrapping_add(step as u32);
            fed += step;
            c.update(raw);
        }
        assert_eq!(c.ticks(), target);
        assert_eq!(c.micros(), 200 * 86_400 * 1_000_000);
        assert_eq!(c.nanos(), 200 * 86_400 * 1_000_000_000);
    }

    #[test]
    fn instant_rounds_down_to_microseconds() {
        let mut c = Clock::new(25_000_000, 0);
        assert_eq!(c.instant(24).total_micros(), 0);
        assert_eq!(c.instant(25).total_micros(), 1);
        assert_eq!(c.instant(25 * 1_500_000).total_millis(), 1_500);
    }
}
