//! Process settings of the loop thread: timer slack and real-time scheduling.

use std::io;
use std::num::NonZeroU64;

/// Wake-ups for deadlines should be exact: shrinks this thread's timer slack from the default
/// 50 us to 1 ns. Best effort.
pub fn exact_timers() {
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
}

/// Runs this thread under `SCHED_FIFO` at `prio`, with `SCHED_RESET_ON_FORK` so recovery
/// children get normal policy. Only the loop thread is real-time: the HTTP thread is spawned
/// before and keeps normal policy.
///
/// # Errors
/// The `sched_setscheduler` error (`EPERM` without `CAP_SYS_NICE`).
pub fn realtime(prio: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(prio),
    };
    // SAFETY: `param` is a live local; pid 0 is this thread. (No safe crate wraps
    // sched_setscheduler.)
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
