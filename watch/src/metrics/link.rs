//! The loop's side of the metrics room: publish snapshots, hear requests for fresh ones.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};
use tokio::sync::watch;

use super::Snapshot;

/// A snapshot younger than this answers a scrape without asking the loop for a new one, so a
/// burst of scrapes costs the loop one copy.
pub const FRESH: Duration = Duration::from_millis(50);

/// A published snapshot and when the loop took it.
#[derive(Debug)]
pub struct Published {
    /// When the loop took it.
    pub taken: Instant,
    /// The figures.
    pub snapshot: Snapshot,
}

/// What the loop and the HTTP side share.
#[derive(Debug)]
pub(super) struct Shared {
    /// Set by a scrape that wants a fresh snapshot.
    pub wanted: AtomicBool,
    /// Readable while a request waits; the loop polls it.
    pub wake: OwnedFd,
}

impl Shared {
    /// Asks the loop for a snapshot (never blocks: the eventfd is non-blocking and a counter
    /// that is already set stays set).
    pub fn request(&self) {
        self.wanted.store(true, Ordering::Release);
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// The loop's handle.
#[derive(Debug)]
pub struct Publisher {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: watch::Sender<Option<Arc<Published>>>,
}

impl Publisher {
    /// A publisher and the receiving end for the HTTP side.
    ///
    /// # Errors
    /// Creating the eventfd.
    pub(super) fn new() -> std::io::Result<(Publisher, watch::Receiver<Option<Arc<Published>>>)> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let (tx, rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            wanted: AtomicBool::new(false),
            wake,
        });
        Ok((Publisher { shared, tx }, rx))
    }

    /// The descriptor to poll: readable when a scrape waits for a snapshot.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.shared.wake.as_fd()
    }

    /// Clears the eventfd and tells whether a snapshot is wanted.
    pub fn take_request(&self) -> bool {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.shared.wake, &mut buf);
        self.shared.wanted.swap(false, Ordering::AcqRel)
    }

    /// Publishes a snapshot (never blocks; replaces the previous one).
    pub fn publish(&self, snapshot: Snapshot) {
        self.tx.send_replace(Some(Arc::new(Published {
            taken: Instant::now(),
            snapshot,
        })));
    }
}
