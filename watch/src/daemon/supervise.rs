//! The observer's own liveness: systemd notifications (`READY=1`, `WATCHDOG=1`, `STATUS=`,
//! `STOPPING=1`, through the `sd-notify` crate) and the self-watchdog (`--self-watchdog-secs`).
//!
//! Both watch the loop itself: `WATCHDOG=1` is sent from the loop's turn, never from a
//! helper thread, so a loop that stops turning stops the keep-alives and systemd restarts the
//! service. When either is on, the loop bounds its sleep ([`Supervisor::wake_by`]) so that an
//! idle observer still turns often enough: at least every `WATCHDOG_USEC / 2`, and every
//! `--self-watchdog-secs / 2`. With neither, an idle observer never wakes.
//!
//! A hardware watchdog (`--hw-watchdog PATH`, e.g. `/dev/watchdog0`) follows the same rule as
//! `WATCHDOG=1`: petted (one byte written) from the loop's turn only, at least every half of
//! its timeout (read from the device with `WDIOC_GETTIMEOUT`; [`HW_UNKNOWN_TIMEOUT`] when the
//! device cannot tell), the loop waking for it when idle. The device is opened non-blocking, so
//! a pet never blocks the loop. On a clean exit the magic close (`V`) disarms it; an observer
//! that dies or wedges stops petting, and the hardware resets the machine.

use std::ffi::c_int;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::ioctl::{ioctl, opcode, Getter, Opcode};
use sd_notify::NotifyState;

/// The loop's supervisor.
#[derive(Debug)]
pub struct Supervisor {
    start: Instant,
    /// `NOTIFY_SOCKET` is set.
    notify: bool,
    /// `WATCHDOG=1`, owed every half of `WATCHDOG_USEC`.
    ping: Option<Cadence>,
    /// Self-watchdog: half its limit, and the loop's last turn (ns since `start`).
    self_every: Option<Duration>,
    turned: Arc<AtomicU64>,
    /// `--hw-watchdog`.
    hw: Option<HwWatchdog>,
}

/// The timeout assumed for a watchdog device that does not report its own (a fake device, a
/// driver without `WDIOC_GETTIMEOUT`): it is petted at least every half of this.
pub const HW_UNKNOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// A keep-alive owed at least every `every`: the one cadence rule of `WATCHDOG=1` and of the
/// hardware watchdog. It is sent at the first turn after half of `every` has passed, so a turn
/// that comes late (the loop busy with a batch) still meets the deadline; the idle loop wakes
/// by [`Cadence::deadline`].
#[derive(Debug, Clone, Copy)]
struct Cadence {
    every: Duration,
    last: Instant,
}

impl Cadence {
    fn new(every: Duration) -> Cadence {
        Cadence {
            every,
            last: Instant::now(),
        }
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= self.every / 2
    }

    fn sent(&mut self) {
        self.last = Instant::now();
    }

    fn deadline(&self) -> Instant {
        self.last + self.every
    }
}

/// An open hardware watchdog.
#[derive(Debug)]
struct HwWatchdog {
    dev: File,
    /// Petted every half of its timeout.
    cadence: Cadence,
}

/// `WDIOC_GETTIMEOUT` (`linux/watchdog.h`): `_IOR('W', 7, int)`.
const WDIOC_GETTIMEOUT: Opcode = opcode::read::<c_int>(b'W', 7);

impl HwWatchdog {
    fn open(path: &Path) -> std::io::Result<HwWatchdog> {
        let dev = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        // SAFETY: WDIOC_GETTIMEOUT's argument is one int the driver writes, which is what
        // `Getter<_, c_int>` provides; files that are no watchdog refuse the request (ENOTTY).
        // rustix has no safe wrapper for the watchdog ioctls.
        let secs = unsafe { ioctl(&dev, Getter::<WDIOC_GETTIMEOUT, c_int>::new()) };
        let timeout = match secs.map(u64::try_from) {
            Ok(Ok(s)) if s > 0 => Duration::from_secs(s),
            _ => HW_UNKNOWN_TIMEOUT,
        };
        let mut w = HwWatchdog {
            dev,
            cadence: Cadence::new(timeout / 2),
        };
        w.pet();
        Ok(w)
    }

    /// One byte (anything but `V`) is a keep-alive. Never blocks; a full fake device or a
    /// write error is retried at the next due turn.
    fn pet(&mut self) {
        let _ = self.dev.write(b"1");
        self.cadence.sent();
    }

    /// Magic close: `V`, then close, disarms the watchdog (drivers built with `nowayout`
    /// ignore it and keep running; then systemd's own watchdog is the better tool).
    fn close(mut self) {
        let _ = self.dev.write(b"V");
    }
}

fn since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Supervisor {
    /// Reads systemd's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`) and
    /// starts the self-watchdog thread if `self_watchdog` is set.
    ///
    /// # Errors
    /// Spawning the self-watchdog thread.
    pub fn new(start: Instant, self_watchdog: Option<Duration>) -> std::io::Result<Supervisor> {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let ping = (notify && sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
            .then(|| Cadence::new(Duration::from_micros(usec) / 2));
        let turned = Arc::new(AtomicU64::new(since(start)));
        if let Some(limit) = self_watchdog {
            let turned = Arc::clone(&turned);
            std::thread::Builder::new()
                .name("varta-selfwatch".into())
                .spawn(move || self_watchdog_thread(start, limit, &turned))?;
        }
        Ok(Supervisor {
            start,
            notify,
            ping,
            self_every: self_watchdog.map(|d| d / 2),
            turned,
            hw: None,
        })
    }

    /// Opens the hardware watchdog at `path` (arming it) and pets it once.
    ///
    /// # Errors
    /// Opening the device.
    pub fn hw_watchdog(&mut self, path: &Path) -> std::io::Result<()> {
        self.hw = Some(HwWatchdog::open(path)?);
        Ok(())
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.notify {
            // Best effort: a service manager that went away is no reason to stop observing.
            let _ = sd_notify::notify(false, states);
        }
    }

    /// `READY=1` with a first status: every listener is bound.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        if let Some(c) = self.ping.as_mut() {
            c.sent();
        }
    }

    /// Called by the loop at every turn: records the turn; tells whether a keep-alive is due
    /// (then the loop calls [`Supervisor::ping`]).
    pub fn turn(&mut self) -> bool {
        self.turned.store(since(self.start), Ordering::Relaxed);
        if let Some(hw) = self.hw.as_mut() {
            if hw.cadence.due() {
                hw.pet();
            }
        }
        self.ping.is_some_and(|c| c.due())
    }

    /// `WATCHDOG=1` with a fresh `STATUS=`.
    pub fn ping(&mut self, status: &str) {
        self.send(&[NotifyState::Watchdog, NotifyState::Status(status)]);
        if let Some(c) = self.ping.as_mut() {
            c.sent();
        }
    }

    /// The latest time (ns since start) the loop must turn again, if any.
    #[must_use]
    pub fn wake_by(&self) -> Option<u64> {
        let ping = self.ping.map(|c| c.deadline());
        let selfw = self.self_every.map(|e| Instant::now() + e);
        let hw = self.hw.as_ref().map(|h| h.cadence.deadline());
        let at = [ping, selfw, hw].into_iter().flatten().min()?;
        Some(u64::try_from(at.duration_since(self.start).as_nanos()).unwrap_or(u64::MAX))
    }

    /// `STOPPING=1`; the hardware watchdog's magic close.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
        if let Some(hw) = self.hw.take() {
            hw.close();
        }
    }
}

/// Aborts the process when the loop has not turned for `limit` (a core dump beats a silent,
/// wedged observer; systemd or the operator's supervisor restarts it).
fn self_watchdog_thread(start: Instant, limit: Duration, turned: &AtomicU64) {
    let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    loop {
        std::thread::sleep(limit / 4);
        let quiet = since(start).saturating_sub(turned.load(Ordering::Relaxed));
        if quiet > limit_ns {
            eprintln!(
                "varta-watch: the loop has not turned for {} ms (--self-watchdog-secs {}): aborting",
                quiet / 1_000_000,
                limit.as_secs()
            );
            std::process::abort();
        }
    }
}
