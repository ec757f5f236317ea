//! What the original observer (`varta-watch` 0.2) offered that this one had under no name:
//! the daemon's clock source, the heartbeat file, the PID-namespace gate, the loop's
//! iteration histogram and a timed shutdown. Each piece is a small shell object the loop
//! calls with a few lines; none reads a clock of its own except [`Clock`], whose job that is.
//! The HTTP guard (bearer token, scrape rate limit) lives in the metrics room.

mod heartbeat;
mod iteration;
mod namespace;

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use rustix::time::ClockId;
use vlp_core::Key;

pub use crate::tracker::EvictionPolicy;
pub use heartbeat::HeartbeatFile;
pub use iteration::{IterationHistogram, BUCKET_FRACTIONS};
pub use namespace::{NamespaceGate, NsGate, NsVerdict};

use crate::tracker::Nanos;

/// The daemon's clock (`--clock-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ClockSource {
    /// `CLOCK_MONOTONIC`: stops while the machine is suspended, so a suspend is no silence.
    #[default]
    Monotonic,
    /// `CLOCK_BOOTTIME`: counts suspended time, so agents are stalled after a long suspend.
    Boottime,
}

/// Nanoseconds since the daemon started, on the chosen [`ClockSource`].
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    id: ClockId,
    origin: u128,
}

fn read(id: ClockId) -> u128 {
    let t = rustix::time::clock_gettime(id);
    // Both clocks are non-negative.
    u128::from(t.tv_sec.unsigned_abs()) * 1_000_000_000 + u128::from(t.tv_nsec.unsigned_abs())
}

impl Clock {
    /// A clock reading `back` now (the daemon's clock starts in the past when a state file
    /// is restored).
    #[must_use]
    pub fn start(source: ClockSource, back: Duration) -> Clock {
        let id = match source {
            ClockSource::Monotonic => ClockId::Monotonic,
            ClockSource::Boottime => ClockId::Boottime,
        };
        Clock {
            id,
            origin: read(id).saturating_sub(back.as_nanos()),
        }
    }

    /// Nanoseconds since the clock's origin.
    #[must_use]
    pub fn now(&self) -> Nanos {
        u64::try_from(read(self.id).saturating_sub(self.origin)).unwrap_or(u64::MAX)
    }
}

/// Per-source-IP token bucket of `/metrics` (`--prom-rate-limit-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens per second.
    pub rate: u32,
    /// Bucket size.
    pub burst: u32,
}

/// Checked settings of the compatibility flags.
#[derive(Debug, Default)]
pub struct CompatConfig {
    /// Bearer token of the HTTP side.
    pub prom_token: Option<Key>,
    /// Scrape rate limit per source IP.
    pub prom_rate_limit: Option<RateLimit>,
    /// Heartbeat file.
    pub heartbeat_file: Option<PathBuf>,
    /// Clock of the daemon.
    pub clock: ClockSource,
    /// `SO_RCVBUF` of the Unix socket (0: the kernel's default); `None`: ours.
    pub uds_rcvbuf: Option<usize>,
    /// Eviction policy when the tracker is full; `None`: ours.
    pub eviction: Option<EvictionPolicy>,
    /// Exit after this much uptime.
    pub shutdown_after: Option<Duration>,
    /// The PID-namespace gate of Unix agents.
    pub namespace_gate: NamespaceGate,
    /// Budget of one loop turn (histogram buckets, over-budget counter).
    pub iteration_budget: Duration,
    /// Flags given that have no effect here (logged once at start).
    pub no_effect: Vec<&'static str>,
}

/// The longest the loop sleeps when a heartbeat file is kept: the file shows a live loop
/// even when no agent and no deadline wakes it.
pub const HEARTBEAT_PERIOD: Nanos = 1_000_000_000;

/// The compatibility pieces the loop drives, one call per turn.
#[derive(Debug)]
pub struct Runtime {
    /// Heartbeat file, if kept.
    pub heartbeat: Option<HeartbeatFile>,
    /// Namespace gate of Unix agents.
    pub ns_gate: NsGate,
    /// Turn durations.
    pub iterations: IterationHistogram,
    /// Exit at this clock reading.
    pub shutdown_at: Option<Nanos>,
    /// Clock reading at the start of the current turn's work, while awake.
    turn_start: Option<Nanos>,
    /// Clock reading of the last heartbeat write.
    last_beat: Nanos,
    /// Unix time (s) of the last loop turn.
    pub last_turn_unix: f64,
}

impl Runtime {
    /// Opens the heartbeat file and logs the flags that have no effect.
    ///
    /// # Errors
    /// Opening the heartbeat file.
    pub fn new(cfg: &CompatConfig) -> std::io::Result<Runtime> {
        for flag in &cfg.no_effect {
            eprintln!(
                "varta-watch: note: --{flag} is accepted for compatibility with varta-watch 0.2 and has no effect here"
            );
        }
        let heartbeat = match &cfg.heartbeat_file {
            Some(p) => Some(HeartbeatFile::open(p)?),
            None => None,
        };
        Ok(Runtime {
            heartbeat,
            ns_gate: NsGate::new(cfg.namespace_gate),
            iterations: IterationHistogram::new(cfg.iteration_budget),
            shutdown_at: cfg
                .shutdown_after
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            turn_start: None,
            last_beat: 0,
            last_turn_unix: 0.0,
        })
    }

    /// The loop is awake (after its sleep, or at the top of a turn): starts a turn, once per
    /// wake-up, and writes the heartbeat file.
    pub fn awake(&mut self, now: Nanos) {
        if self.turn_start.is_some() {
            return;
        }
        self.turn_start = Some(now);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_turn_unix = unix.as_secs_f64();
        if let Some(h) = self.heartbeat.as_mut() {
            h.write(unix);
            self.last_beat = now;
        }
    }

    /// The loop goes to sleep: records the turn's duration.
    pub fn asleep(&mut self, now: Nanos) {
        if let Some(start) = self.turn_start.take() {
            self.iterations.observe(now.saturating_sub(start));
        }
    }

    /// Whether `--shutdown-after-secs` has passed.
    #[must_use]
    pub fn shutdown_due(&self, now: Nanos) -> bool {
        matches!(self.shutdown_at, Some(t) if now >= t)
    }

    /// The latest the loop may sleep until: the timed shutdown, and the next heartbeat write.
    #[must_use]
    pub fn wake_by(&self) -> Option<Nanos> {
        let beat = self
            .heartbeat
            .as_ref()
            .map(|_| self.last_beat.saturating_add(HEARTBEAT_PERIOD));
        [self.shutdown_at, beat].into_iter().flatten().min()
    }
}
