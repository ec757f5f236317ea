//! What the `heartbeat` firmware does, chosen at boot by semihosting arguments, and the
//! decisions of its main loop, kept free of I/O so the host tests them.
//!
//! The firmware beats 64-byte VLP datagrams under its own agent key (derived from the
//! observer's master key by the host that provisions it) through `varta-client-nostd`; a
//! [`TaskMonitor`](varta_client_nostd::TaskMonitor) of [`TASKS`] tasks decides each beat's
//! status and payload. The [`Mode`] injects one fault after `after` beats:
//!
//! | `mode=`     | after `after` beats                                                   |
//! |-------------|-----------------------------------------------------------------------|
//! | `normal`    | nothing; after `count` beats a goodbye (clean exit)                   |
//! | `late-task` | task [`TASK_SENSOR`] stops checking in: once its window passes, beats  |
//! |             | are Degraded with payload `1 << TASK_SENSOR`; goodbye after `count`    |
//! | `stall`     | no more beats; the device stays up and on the network for `linger_ms`  |
//! | `panic`     | a panic: the panic handler sends the last-gasp terminal frame          |

use varta_client_nostd::entropy::{check_salt, SALT_LEN};

use crate::args::{self, RunArgs};

/// Tasks the firmware registers with its task monitor.
pub const TASKS: usize = 2;
/// The task that checks in after every network poll.
pub const TASK_NET: usize = 0;
/// The task `mode=late-task` stops.
pub const TASK_SENSOR: usize = 1;
/// A task's check-in window, in beat intervals: a task silent for longer is late.
pub const WINDOW_INTERVALS: u32 = 3;

/// The fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No fault.
    Normal,
    /// [`TASK_SENSOR`] stops checking in.
    LateTask,
    /// Beats stop; the device stays alive.
    Stall,
    /// The firmware panics.
    Panic,
}

impl Mode {
    /// The `mode=` word.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::LateTask => "late-task",
            Mode::Stall => "stall",
            Mode::Panic => "panic",
        }
    }

    fn parse(word: &str) -> Option<Mode> {
        [Mode::Normal, Mode::LateTask, Mode::Stall, Mode::Panic]
            .into_iter()
            .find(|m| m.name() == word)
    }
}

/// Everything the `heartbeat` firmware takes on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatArgs {
    /// Port, count, interval, linger and pid ([`RunArgs`]).
    pub run: RunArgs,
    /// `mode=` (default `normal`).
    pub mode: Mode,
    /// `after=N` (default 5): beats before the fault.
    pub after: u32,
    /// `key=HEX` (required): this device's own 32-byte agent key, derived from the observer's
    /// master key for its agent id (`pid=`) on the host (VLP v0.2 §4); the device never
    /// holds the master key.
    pub key: [u8; 32],
    /// `salt=HEX` (required): 16 bytes of fresh entropy for this boot (QEMU's board has no
    /// TRNG; a real board draws it from its RNG).
    pub salt: [u8; SALT_LEN],
}

impl HeartbeatArgs {
    /// Parses the semihosting command line.
    ///
    /// # Errors
    ///
    /// Names the argument that is missing or malformed.
    pub fn parse(cmdline: &str) -> Result<Self, &'static str> {
        let run = RunArgs::parse(cmdline)?;
        let mode = match args::find(cmdline, "mode") {
            None => Mode::Normal,
            Some(w) => Mode::parse(w).ok_or("mode= must be normal, late-task, stall or panic")?,
        };
        let after = match args::find(cmdline, "after") {
            None => 5,
            Some(_) => args::find_u32(cmdline, "after").ok_or("after=N must be a number")?,
        };
        let key = args::find_hex::<32>(cmdline, "key").ok_or("key=HEX (32 bytes) is required")?;
        let salt =
            args::find_hex::<SALT_LEN>(cmdline, "salt").ok_or("salt=HEX (16 bytes) is required")?;
        let salt = check_salt(salt).map_err(|_| "salt= is all 0x00 or all 0xFF (a dead RNG)")?;
        if run.interval_ms == 0 {
            return Err("interval_ms=N must be at least 1");
        }
        Ok(Self {
            run,
            mode,
            after,
            key,
            salt,
        })
    }

    /// The main loop's plan.
    pub const fn plan(&self) -> Plan {
        Plan {
            mode: self.mode,
            after: self.after,
            count: self.run.count,
        }
    }

    /// A task's check-in window in milliseconds.
    pub const fn window_ms(&self) -> u64 {
        self.run.interval_ms as u64 * WINDOW_INTERVALS as u64
    }
}

/// What the main loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a beat (status and payload from the task monitor).
    Beat,
    /// Send a goodbye and exit cleanly.
    Goodbye,
    /// Stop beating, stay on the network for `linger_ms`, exit.
    Silent,
    /// Panic.
    Panic,
}

/// The main loop's decisions, from the number of beats sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    mode: Mode,
    after: u32,
    count: u32,
}

impl Plan {
    /// What to do once `beats` beats have been sent.
    pub const fn action(&self, beats: u32) -> Action {
        match self.mode {
            Mode::Normal | Mode::LateTask if beats < self.count => Action::Beat,
            Mode::Normal | Mode::LateTask => Action::Goodbye,
            Mode::Stall | Mode::Panic if beats < self.after => Action::Beat,
            Mode::Stall => Action::Silent,
            Mode::Panic => Action::Panic,
        }
    }

    /// Whether `task` still checks in once `beats` beats have been sent.
    pub const fn checks_in(&self, task: usize, beats: u32) -> bool {
        !(matches!(self.mode, Mode::LateTask) && task == TASK_SENSOR && beats >= self.after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varta_client_nostd::{Status, TaskMonitor, TaskSpec};

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const SALT: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";

    fn parse(extra: &str) -> Result<HeartbeatArgs, &'static str> {
        HeartbeatArgs::parse(&format!("heartbeat port=9 key={KEY} salt={SALT} {extra}"))
    }

    #[test]
    fn defaults_and_every_mode() {
        let a = parse("").unwrap();
        assert_eq!((a.mode, a.after, a.run.count), (Mode::Normal, 5, 5));
        assert_eq!(a.key[31], 0x1f);
        assert_eq!(a.salt[0], 0xa0);
        for m in [Mode::Normal, Mode::LateTask, Mode::Stall, Mode::Panic] {
            let a = parse(&format!("mode={} after=7", m.name())).unwrap();
            assert_eq!((a.mode, a.after), (m, 7));
        }
        assert_eq!(parse("interval_ms=20").unwrap().window_ms(), 60);
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(parse("mode=hang").unwrap_err().starts_with("mode="));
        assert!(parse("after=x").unwrap_err().starts_with("after="));
        assert!(parse("interval_ms=0")
            .unwrap_err()
            .starts_with("interval_ms="));
        let no_key = HeartbeatArgs::parse(&format!("port=9 salt={SALT}"));
        assert!(no_key.unwrap_err().starts_with("key="));
        let no_salt = HeartbeatArgs::parse(&format!("port=9 key={KEY}"));
        assert!(no_salt.unwrap_err().starts_with("salt="));
        let dead = HeartbeatArgs::parse(&format!("port=9 key={KEY} salt={}", "00".repeat(16)));
        assert!(dead.unwrap_err().contains("dead RNG"));
        let dead = HeartbeatArgs::parse(&format!("port=9 key={KEY} salt={}", "ff".repeat(16)));
        assert!(dead.unwrap_err().contains("dead RNG"));
    }

    #[test]
    fn actions_per_mode() {
        let plan = |m: &str| parse(&format!("mode={m} after=3 count=6")).unwrap().plan();
        let run = |p: Plan| (0..8).map(|b| p.action(b)).collect::<Vec<_>>();
        use Action::*;
        let six_then = |a| vec![Beat, Beat, Beat, Beat, Beat, Beat, a, a];
        assert_eq!(run(plan("normal")), six_then(Goodbye));
        assert_eq!(run(plan("late-task")), six_then(Goodbye));
        let three_then = |a| vec![Beat, Beat, Beat, a, a, a, a, a];
        assert_eq!(run(plan("stall")), three_then(Silent));
        assert_eq!(run(plan("panic")), three_then(Panic));
        // count=0: beat until stopped.
        assert_eq!(parse("count=0").unwrap().plan().action(u32::MAX - 1), Beat);
    }

    #[test]
    fn only_late_task_mode_stops_the_sensor_task() {
        for m in ["normal", "stall", "panic"] {
            let p = parse(&format!("mode={m} after=2")).unwrap().plan();
            assert!((0..10).all(|b| p.checks_in(TASK_SENSOR, b) && p.checks_in(TASK_NET, b)));
        }
        let p = parse("mode=late-task after=2").unwrap().plan();
        assert!(p.checks_in(TASK_SENSOR, 1));
        assert!(!p.checks_in(TASK_SENSOR, 2));
        assert!((0..10).all(|b| p.checks_in(TASK_NET, b)));
    }

    /// The firmware's main loop against the real task monitor, with simulated time: loop turns
    /// every millisecond, a beat per interval. Beats stay Ok for the window after the sensor
    /// task stops, then are Degraded naming it, and the watchdog is petted only for Ok beats.
    #[test]
    fn late_task_turns_beats_degraded_and_stops_the_pets() {
        let args = parse("mode=late-task after=4 count=12 interval_ms=20").unwrap();
        let plan = args.plan();
        let spec = TaskSpec::new(args.window_ms());
        let mut tasks = TaskMonitor::<TASKS>::new([spec; TASKS]);
        let (mut beats, mut pets, mut next_beat) = (0u32, 0u32, 0u64);
        let mut sent = Vec::new();
        for now in 0u64..1_000 {
            tasks.check_in(TASK_NET, now).unwrap();
            if plan.checks_in(TASK_SENSOR, beats) {
                tasks.check_in(TASK_SENSOR, now).unwrap();
            }
            if now < next_beat || plan.action(beats) != Action::Beat {
                continue;
            }
            let h = tasks.poll(now, || pets += 1);
            sent.push((h.status(), h.late_mask()));
            beats += 1;
            next_beat = now + u64::from(args.run.interval_ms);
        }
        assert_eq!(sent.len(), 12);
        // The sensor's last check-in is at the 4th beat (t = 60 ms); it is late once silent
        // for more than 60 ms: from the beat at t = 140 ms (the 8th) on.
        let ok = (Status::Ok, 0);
        let degraded = (Status::Degraded, 1 << TASK_SENSOR);
        assert_eq!(sent[..7], [ok; 7]);
        assert_eq!(sent[7..], [degraded; 5]);
        assert_eq!(pets, 7, "one pet per on-time poll");
    }
}
