//! Noticing that we are a forked child, with one memory load per beat.
//!
//! `getpid(2)` is a real system call on current glibc and musl (neither caches the pid): on a
//! plain Unix socket it would be a sizeable share of a beat. Instead one anonymous page is
//! marked `MADV_WIPEONFORK` (Linux 4.14+), the mechanism BoringSSL and OpenSSL use for their
//! fork-safe RNGs: the kernel hands every child that gets its own address space a zero-filled
//! copy of it, whether `fork()` or a raw `clone(2)` without `CLONE_VM` made the child, and no
//! user-space code has to run for that. (A `vfork`-style child, e.g. glibc's `posix_spawn`
//! with `CLONE_VM | CLONE_VFORK`, shares the parent's memory until it execs and sees nothing;
//! it runs no client code either.) The page holds a nonzero *token*; a client caches
//! the token it was made under and compares it on every beat. A mismatch means a fork, with
//! no `getpid()` to confirm it: the pid cannot tell, since a grandchild may be given the pid
//! its grandparent had (P forks C, P exits, C forks G, G gets P's old pid).
//!
//! Where the page cannot be set up (an older kernel, a seccomp filter refusing `madvise`),
//! [`Watch::check`] says [`Seen::Unknown`]: every beat then pays one `getpid()` and compares
//! it with the cached pid, which is correct except in the pid-reuse case above.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Tokens handed out in this process lineage; a child's first token is larger than any token
/// its parent had cached (the counter is copied by fork, the page is not).
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The wipe-on-fork page, if it could be set up.
static PAGE: OnceLock<Option<&'static AtomicU64>> = OnceLock::new();

fn setup_page() -> Option<&'static AtomicU64> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
    // result is checked against MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page_size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `p` is the page-aligned start of the mapping of `page_size()` bytes made above.
    let rc = unsafe { libc::madvise(p, page_size(), libc::MADV_WIPEONFORK) };
    if rc != 0 {
        // SAFETY: unmapping exactly the mapping made above, which nothing references yet.
        unsafe { libc::munmap(p, page_size()) };
        return None;
    }
    // SAFETY: the mapping is page-aligned (so aligned for u64), zero-filled, readable and
    // writable, and is never unmapped: a `'static` reference to its first word is valid for
    // the rest of the process (and, zeroed, in every child).
    let word: &'static AtomicU64 = unsafe { &*p.cast::<AtomicU64>() };
    word.store(
        NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
        Ordering::Relaxed,
    );
    Some(word)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// What [`Watch::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The page holds the token this client cached: no fork since it was armed.
    Quiet,
    /// The page was wiped (or re-tokened by another client after a wipe): the kernel only
    /// wipes it for a new address space, so this *is* a forked child, whatever `getpid()`
    /// says (a grandchild can be handed a pid its dead grandparent once had).
    Forked,
    /// No page: the caller must compare `getpid()` with its cached pid.
    Unknown,
}

/// One client's view of the fork marker.
#[derive(Debug)]
pub(crate) struct Watch {
    page: Option<&'static AtomicU64>,
    token: u64,
}

impl Watch {
    /// Sets up the page (once per process) and records the current token.
    pub(crate) fn new() -> Watch {
        Watch::on(*PAGE.get_or_init(setup_page))
    }

    /// A watch on `page` (the process-wide one, or a private word in tests).
    pub(crate) fn on(page: Option<&'static AtomicU64>) -> Watch {
        let mut w = Watch { page, token: 0 };
        w.token = w.current();
        w
    }

    /// Whether a fork happened since [`Watch::new`] / [`Watch::rearm`]; one relaxed load.
    #[inline]
    pub(crate) fn check(&self) -> Seen {
        match self.page {
            Some(p) if p.load(Ordering::Relaxed) == self.token => Seen::Quiet,
            Some(_) => Seen::Forked,
            None => Seen::Unknown,
        }
    }

    /// The page's token, installing a fresh one if the page was wiped (we are a child).
    fn current(&self) -> u64 {
        let Some(p) = self.page else { return 0 };
        let t = p.load(Ordering::Relaxed);
        if t != 0 {
            return t;
        }
        let fresh = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        // Another client of this child may have installed one first; either is fine.
        match p.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => fresh,
            Err(other) => other,
        }
    }

    /// Accepts the current state (after a fork was handled).
    pub(crate) fn rearm(&mut self) {
        self.token = self.current();
    }

    /// Whether the cheap path is available (for tests and docs).
    #[cfg(test)]
    pub(crate) fn has_page(&self) -> bool {
        self.page.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_page_is_set_up_and_quiet() {
        let w = Watch::new();
        assert!(w.has_page(), "MADV_WIPEONFORK needs Linux 4.14+");
        assert_eq!(w.check(), Seen::Quiet);
        // Never written here: other clients in this test binary share the page.
    }

    #[test]
    fn wipe_is_a_fork_and_rearming_installs_a_fresh_token() {
        // A private word standing in for the page: zeroing it touches no other client.
        let page: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let mut w = Watch::on(Some(page));
        let before = w.token;
        assert_ne!(before, 0);
        assert_eq!(w.check(), Seen::Quiet);
        let other = Watch::on(Some(page));
        assert_eq!(
            other.token, before,
            "clients of one process share the token"
        );
        page.store(0, Ordering::Relaxed); // what the kernel does to a child's copy
        assert_eq!(w.check(), Seen::Forked);
        w.rearm();
        assert_eq!(w.check(), Seen::Quiet);
        assert!(w.token > before, "a token no client cached before");
        // The other client of the "child" sees a new token: a fork for it too.
        assert_eq!(other.check(), Seen::Forked);
        assert_eq!(Watch::on(Some(page)).token, w.token);
    }

    #[test]
    fn without_the_page_every_beat_checks() {
        let mut w = Watch {
            page: None,
            token: 0,
        };
        assert_eq!(w.check(), Seen::Unknown);
        w.rearm();
        assert_eq!(w.check(), Seen::Unknown, "no page: getpid() on every beat");
    }
}
