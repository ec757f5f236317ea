//! No heap allocation per beat, after `connect`, on every path: sent, dropped (queue full, no
//! observer, peer gone, with and without the automatic reconnect), failed, sealed.
//!
//! A counting global allocator counts the allocations of the *current thread* while armed
//! (the test harness runs tests on parallel threads; thread-local counters keep them apart).
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;

use common::{closed_udp_port, temp_dir, UdpObserver, UdsObserver};
use varta_client::{BeatOutcome, BeatTransport, DropReason, Key, Status, Varta};

struct Counting;

thread_local! {
    // `const` initialisers with `Cell`: no lazy registration, so the allocator may touch them.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only thread-local `Cell`s and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BEATS: u64 = 10_000;

/// Runs `f` with counting armed; returns its result and the allocations it made.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, COUNT.with(Cell::get))
}

/// Tally of outcomes, in fixed slots (a map would allocate).
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    sent: u64,
    queue_full: u64,
    no_observer: u64,
    peer_gone: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, o: BeatOutcome) {
        match o {
            BeatOutcome::Sent => self.sent += 1,
            BeatOutcome::Dropped(DropReason::KernelQueueFull) => self.queue_full += 1,
            BeatOutcome::Dropped(DropReason::NoObserver) => self.no_observer += 1,
            BeatOutcome::Dropped(DropReason::PeerGone) => self.peer_gone += 1,
            BeatOutcome::Dropped(DropReason::StorageFull) | BeatOutcome::Failed(_) => {
                self.failed += 1;
            }
        }
    }
}

#[test]
fn the_counter_counts() {
    // Guard against a vacuous pass: an allocation made while armed is seen.
    let (v, n) = counted(|| vec![1u8; 100]);
    drop(v);
    assert!(n >= 1);
}

#[test]
fn uds_sent_path() {
    let dir = temp_dir("na-sent");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    let mut buf = [0u8; 64];
    let (tally, allocs) = counted(|| {
        let mut t = Tally::default();
        for _ in 0..BEATS {
            t.add(v.beat(Status::Ok, 1));
            // Drain as the observer would (a plain recv into a stack buffer).
            let _ = obs.socket.recv(&mut buf);
        }
        t
    });
    assert_eq!(tally.sent, BEATS, "{tally:?}");
    assert_eq!(allocs, 0);
}

#[test]
fn uds_queue_full_path() {
    let dir = temp_dir("na-full");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    let (tally, allocs) = counted(|| {
        let mut t = Tally::default();
        for _ in 0..BEATS {
            t.add(v.beat(Status::Degraded, 2));
        }
        t
    });
    assert!(tally.queue_full > BEATS - 1000, "{tally:?}");
    assert_eq!(tally.sent + tally.queue_full, BEATS);
    assert_eq!(allocs, 0);
    drop(obs);
}

#[test]
fn uds_observer_gone_paths() {
    let dir = temp_dir("na-gone");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    let mut plain = Varta::connect(&obs.path).unwrap();
    plain.set_reconnect_after(0);
    obs.shut_down();
    // Automatic reconnect on every drop: socket(), connect() -> ENOENT, each beat.
    let (tally, allocs) = counted(|| {
        let mut t = Tally::default();
        for _ in 0..BEATS {
            t.add(v.beat(Status::Ok, 0));
        }
        t
    });
    assert_eq!(tally.no_observer, BEATS, "{tally:?}");
    assert_eq!(allocs, 0, "reconnect path");
    // No reconnect: ECONNREFUSED once, then ENOTCONN.
    let (tally, allocs) = counted(|| {
        let mut t = Tally::default();
        for _ in 0..BEATS {
            t.add(plain.beat(Status::Ok, 0));
        }
        t
    });
    assert_eq!((tally.no_observer, tally.peer_gone), (1, BEATS - 1));
    assert_eq!(allocs, 0, "peer-gone path");
}

#[test]
fn failed_paths() {
    let dir = temp_dir("na-failed");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut v = Varta::connect(&obs.path).unwrap();
    // A transport whose OS refuses outright (EPERM, as from a firewall rule).
    struct Refusing;
    impl BeatTransport for Refusing {
        fn send(&mut self, _: &[u8]) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        }
        fn reconnect(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut r = Varta::with_transport_shared_key(Refusing, Key::from_bytes([1; 32])).unwrap();
    let (tally, allocs) = counted(|| {
        let mut t = Tally::default();
        for _ in 0..BEATS {
            t.add(v.beat(Status::Stall, 0));
            let o = r.beat(Status::Ok, 0);
            if let BeatOutcome::Failed(e) = o {
                // Converting to io::Error is allocation-free too.
                assert_eq!(e.to_io_error().kind(), io::ErrorKind::PermissionDenied);
            }
            t.add(o);
        }
        t
    });
    assert_eq!(tally.failed, 2 * BEATS, "{tally:?}");
    assert_eq!(allocs, 0);
}

#[test]
fn udp_paths() {
    let obs = UdpObserver::bind();
    let mut v = Varta::connect_udp(obs.addr()).unwrap();
    let mut gone = Varta::connect_udp(closed_udp_port()).unwrap();
    let mut gone_no_reconnect = Varta::connect_udp(closed_udp_port()).unwrap();
    gone_no_reconnect.set_reconnect_after(0);
    let mut buf = [0u8; 64];
    let (tallies, allocs) = counted(|| {
        let (mut a, mut b, mut c) = (Tally::default(), Tally::default(), Tally::default());
        for _ in 0..BEATS {
            a.add(v.beat(Status::Ok, 0));
            let _ = obs.socket.recv(&mut buf);
            b.add(gone.beat(Status::Ok, 0));
            c.add(gone_no_reconnect.beat(Status::Ok, 0));
        }
        (a, b, c)
    });
    assert_eq!(tallies.0.sent, BEATS);
    assert_eq!(tallies.1.sent + tallies.1.no_observer, BEATS);
    assert!(tallies.2.no_observer > 0, "{:?}", tallies.2);
    assert_eq!(allocs, 0);
}

#[test]
fn secure_udp_paths() {
    let obs = UdpObserver::bind();
    let key = Key::from_bytes([3; 32]);
    let mut shared = Varta::connect_secure_udp(obs.addr(), key.clone()).unwrap();
    let mut master = Varta::connect_secure_udp_with_master(obs.addr(), key.clone()).unwrap();
    let mut gone = Varta::connect_secure_udp(closed_udp_port(), key).unwrap();
    gone.set_reconnect_after(0);
    let mut buf = [0u8; 64];
    let (tallies, allocs) = counted(|| {
        let (mut a, mut b, mut c) = (Tally::default(), Tally::default(), Tally::default());
        for _ in 0..BEATS {
            a.add(shared.beat(Status::Ok, 0));
            let _ = obs.socket.recv(&mut buf);
            b.add(master.beat(Status::Ok, 0));
            let _ = obs.socket.recv(&mut buf);
            c.add(gone.beat(Status::Ok, 0));
        }
        let _ = shared.goodbye();
        let _ = master.terminal(0);
        (a, b, c)
    });
    assert_eq!((tallies.0.sent, tallies.1.sent), (BEATS, BEATS));
    assert!(tallies.2.no_observer > 0, "{:?}", tallies.2);
    assert_eq!(allocs, 0);
}
