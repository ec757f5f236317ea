//! The metrics room: Prometheus metrics over HTTP, served on a thread of its own.
//!
//! The receive loop owns every counter as a plain integer and never shares them behind a lock.
//! The HTTP side ([`serve`], [`router`]: axum on a current-thread tokio runtime) never makes the loop wait:
//!
//! * the loop publishes a [`Snapshot`] through a `tokio::sync::watch` channel
//!   ([`Publisher::publish`]: replaces the value, never blocks, never allocates on the other
//!   side's behalf);
//! * a scrape that finds the last snapshot older than [`FRESH`] asks for a new one (a flag and
//!   an eventfd the loop polls, [`Publisher::take_request`]) and waits for it a bounded time;
//!   if the loop is busy it is answered from the last snapshot, whose `varta_watch_uptime_seconds`
//!   then stops advancing, which is how a wedged loop shows on a dashboard;
//! * many scrapes at once are answered from one snapshot.
//!
//! An idle observer is not woken by anything but a scrape. The HTTP side bounds what hostile
//! clients can take ([`HttpLimits`]): concurrent connections (the rest are closed at once and
//! counted), header-read and idle timeouts, request size. Routes are declared in one place,
//! [`http::router`].

mod guard;
mod http;
mod link;
mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use guard::{Guard, Peer, ScrapeLimiter, MAX_SOURCES};
pub use http::{router, serve, AppState};
pub use link::{Published, Publisher, FRESH};
pub use snapshot::{AgentRow, Snapshot};

/// Bounds of the HTTP side, from `--http-*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request's headers.
    pub header_timeout: Duration,
    /// Time a connection may be silent both ways.
    pub idle_timeout: Duration,
}

/// Largest request head (request line and headers) read, bytes; hyper's lower bound.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Largest request body accepted by any route, bytes.
pub const MAX_REQUEST_BODY: usize = 4096;

/// The HTTP side's own counters (shared atomics: both sides are the HTTP thread's tasks).
#[derive(Debug, Default)]
pub struct HttpCounters {
    dropped_capacity: AtomicU64,
    dropped_header_timeout: AtomicU64,
    dropped_idle: AtomicU64,
    auth_failures: AtomicU64,
    rate_limited: AtomicU64,
}

impl HttpCounters {
    /// Requests refused for a missing or wrong bearer token.
    #[must_use]
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures.load(Ordering::Relaxed)
    }

    /// Scrapes refused by the per-source rate limit.
    #[must_use]
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Connections closed by reason, every reason present (at zero) from the first scrape.
    #[must_use]
    pub fn dropped(&self) -> [(&'static str, u64); 3] {
        [
            ("capacity", self.dropped_capacity.load(Ordering::Relaxed)),
            (
                "header_timeout",
                self.dropped_header_timeout.load(Ordering::Relaxed),
            ),
            ("idle", self.dropped_idle.load(Ordering::Relaxed)),
        ]
    }
}
