//! Task check-in and the hardware watchdog.
//!
//! Firmware registers `N` tasks (a const generic, 1 ≤ N ≤ 32), each with a check-in window.
//! Tasks call [`TaskMonitor::check_in`] (or [`SharedTaskMonitor::check_in`] from interrupts)
//! with the current tick; the beat loop calls [`TaskMonitor::poll`], which
//!
//! * returns the [`Health`] to beat with: [`Status::Ok`] if every task checked in within its
//!   window, [`Status::Degraded`] if some did not, [`Status::Critical`] if one is late past its
//!   critical limit;
//! * pets the hardware watchdog (the caller's callback) **only** when every task is on time,
//!   so a hung task ends in a watchdog reset once the watchdog's own timeout expires, while the
//!   observer already saw Degraded beats naming it.
//!
//! **The payload names the late tasks as a bitmask**: bit `i` is set when task `i` is late.
//! An Ok beat carries 0. (A bitmask, rather than the first late index, shows every late task
//! at once; it is why N ≤ 32.)
//!
//! Time is an input: ticks of any monotonic clock, in the unit of the windows. All tasks count
//! as checked in at tick 0 (boot) after [`TaskMonitor::new`], or at the tick given to
//! [`TaskMonitor::restart`]. A check-in stamped later than the `now` of a poll (an interrupt that
//! checked in after the beat loop read its clock) counts as on time.

use core::cell::RefCell;

use critical_section::Mutex;
use vlp_core::Status;

/// One task's deadlines, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskSpec {
    window: u64,
    critical_after: u64,
}

impl TaskSpec {
    /// A task that must check in at least every `window` ticks; late means Degraded.
    #[must_use]
    pub const fn new(window: u64) -> TaskSpec {
        TaskSpec {
            window,
            critical_after: u64::MAX,
        }
    }

    /// Also report Critical once the task has been silent for more than `ticks` (meant to be
    /// larger than the window).
    #[must_use]
    pub const fn critical_after(self, ticks: u64) -> TaskSpec {
        TaskSpec {
            window: self.window,
            critical_after: ticks,
        }
    }

    /// The check-in window.
    #[must_use]
    pub const fn window(&self) -> u64 {
        self.window
    }
}

/// The verdict of one poll: the status to beat with and the late tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Health {
    status: Status,
    late: u32,
}

impl Health {
    /// Ok, Degraded or Critical.
    #[must_use]
    pub const fn status(&self) -> Status {
        self.status
    }

    /// Bit `i` set: task `i` is late. This is the beat's payload.
    #[must_use]
    pub const fn late_mask(&self) -> u32 {
        self.late
    }

    /// Whether every task checked in within its window.
    #[must_use]
    pub const fn all_on_time(&self) -> bool {
        self.late == 0
    }

    /// The index of the first late task, if any.
    #[must_use]
    pub const fn first_late(&self) -> Option<usize> {
        if self.late == 0 {
            None
        } else {
            Some(self.late.trailing_zeros() as usize)
        }
    }

    /// The beat to send for this verdict.
    #[must_use]
    pub const fn kind(&self) -> crate::Kind {
        crate::Kind::Beat(self.status, self.late)
    }
}

/// `N` tasks' deadlines and last check-ins (`16 · N + 8 · N` bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMonitor<const N: usize> {
    specs: [TaskSpec; N],
    last: [u64; N],
}

impl<const N: usize> TaskMonitor<N> {
    const VALID_N: () = assert!(N >= 1 && N <= 32, "a TaskMonitor holds 1 to 32 tasks");

    /// A monitor of `N` tasks; all count as checked in at tick 0.
    #[must_use]
    pub const fn new(specs: [TaskSpec; N]) -> TaskMonitor<N> {
        let () = Self::VALID_N;
        TaskMonitor {
            specs,
            last: [0; N],
        }
    }

    /// Counts every task as checked in at `now` (use at boot if ticks do not start at 0).
    pub fn restart(&mut self, now: u64) {
        self.last = [now; N];
    }

    /// Records that `task` made progress at `now`.
    ///
    /// # Errors
    /// [`TaskError::UnknownTask`] for an index ≥ N.
    pub fn check_in(&mut self, task: usize, now: u64) -> Result<(), TaskError> {
        let slot = self.last.get_mut(task).ok_or(TaskError::UnknownTask)?;
        // An earlier stamp arriving late (out-of-order check-ins) never moves it back.
        *slot = (*slot).max(now);
        Ok(())
    }

    /// The health at `now`, without side effects.
    #[must_use]
    pub fn evaluate(&self, now: u64) -> Health {
        let mut late = 0u32;
        let mut critical = false;
        for (i, (spec, &last)) in self.specs.iter().zip(self.last.iter()).enumerate() {
            let silent = now.saturating_sub(last);
            if silent > spec.window {
                late |= 1 << i;
            }
            if silent > spec.critical_after {
                critical = true;
            }
        }
        let status = if critical {
            Status::Critical
        } else if late != 0 {
            Status::Degraded
        } else {
            Status::Ok
        };
        Health { status, late }
    }

    /// [`TaskMonitor::evaluate`], and `pet_watchdog()` if every task is on time.
    pub fn poll(&self, now: u64, pet_watchdog: impl FnOnce()) -> Health {
        let h = self.evaluate(now);
        if h.all_on_time() {
            pet_watchdog();
        } else {
            #[cfg(feature = "defmt")]
            defmt::warn!("varta: late tasks {=u32:#b}, watchdog not petted", h.late);
        }
        h
    }
}

/// Why a check-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TaskError {
    /// The task index is not below N.
    UnknownTask,
    /// The monitor is borrowed (re-entered from a panic inside a poll).
    Busy,
}

impl core::fmt::Display for TaskError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TaskError::UnknownTask => "task index out of range",
            TaskError::Busy => "task monitor busy",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TaskError {}

/// A [`TaskMonitor`] behind `critical-section`, for a `static`: tasks and interrupt handlers
/// check in, the beat loop polls.
pub struct SharedTaskMonitor<const N: usize> {
    inner: Mutex<RefCell<TaskMonitor<N>>>,
}

impl<const N: usize> SharedTaskMonitor<N> {
    /// A shared monitor of `N` tasks; all count as checked in at tick 0.
    #[must_use]
    pub const fn new(specs: [TaskSpec; N]) -> SharedTaskMonitor<N> {
        SharedTaskMonitor {
            inner: Mutex::new(RefCell::new(TaskMonitor::new(specs))),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut TaskMonitor<N>) -> R) -> Result<R, TaskError> {
        critical_section::with(|cs| {
            let mut m = self
                .inner
                .borrow(cs)
                .try_borrow_mut()
                .map_err(|_| TaskError::Busy)?;
            Ok(f(&mut m))
        })
    }

    /// [`TaskMonitor::check_in`]; callable from interrupts.
    ///
    /// # Errors
    /// [`TaskError::UnknownTask`], [`TaskError::Busy`].
    pub fn check_in(&self, task: usize, now: u64) -> Result<(), TaskError> {
        self.with(|m| m.check_in(task, now))?
    }

    /// [`TaskMonitor::restart`].
    ///
    /// # Errors
    /// [`TaskError::Busy`].
    pub fn restart(&self, now: u64) -> Result<(), TaskError> {
        self.with(|m| m.restart(now))
    }

    /// [`TaskMonitor::poll`]; the watchdog callback runs inside the critical section.
    ///
    /// # Errors
    /// [`TaskError::Busy`]; the watchdog is not petted then.
    pub fn poll(&self, now: u64, pet_watchdog: impl FnOnce()) -> Result<Health, TaskError> {
        self.with(|m| m.poll(now, pet_watchdog))
    }
}
