//! Noticing that we are a forked child, cheaply.
//!
//! `getpid(2)` is a real system call on current glibc and musl (neither caches the pid), and
//! on a plain Unix socket it would be a sizeable share of a beat. Instead a
//! `pthread_atfork` child handler, registered once, bumps a process-wide generation counter;
//! a beat compares one relaxed atomic load against the generation its session was made in.
//!
//! `fork()` runs the handler (glibc and musl alike). A child created by a raw `clone(2)`
//! without `fork()` semantics does not; for the secure envelopes, where reusing an IV would
//! be a cryptographic failure rather than a confused observer, [`crate::Varta`] therefore
//! also compares `getpid()` on every beat. If registering the handler ever failed, every
//! transport falls back to `getpid()`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);
static REGISTER: Once = Once::new();

extern "C" fn in_child() {
    // Async-signal-safe: one atomic add, no allocation, no locks.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Registers the handler (once per process). Returns whether it is in place; if not, callers
/// must check `getpid()` on every beat.
pub(crate) fn register() -> bool {
    REGISTER.call_once(|| {
        // SAFETY: `in_child` is an `extern "C" fn()` with static lifetime that only touches
        // an atomic; pthread_atfork stores the pointer and calls it in fork()ed children.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        HANDLER_INSTALLED.store(rc == 0, Ordering::Relaxed);
    });
    HANDLER_INSTALLED.load(Ordering::Relaxed)
}

/// How many forks happened in this process's ancestry since the handler was registered.
#[inline]
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}
