//! The daemon's own counters. Rejections are counted by the tracker ([`Tracker::stats`]);
//! these are what only the shell sees. Event kinds are counted here, in one place, by the
//! label each [`Row`](crate::output::Row) carries.
//!
//! [`Tracker::stats`]: crate::tracker::Tracker::stats

/// Event kinds counted in `varta_events_total{kind}`, every one present from the first scrape.
pub const EVENT_KINDS: [&str; 9] = [
    "new",
    "restart",
    "status",
    "stall",
    "recovered",
    "crash",
    "goodbye",
    "evicted",
    "recovery",
];

/// Counters of the shell.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams received, by listener (index as in the daemon's listener list).
    pub datagrams: Vec<u64>,
    /// Unix datagrams without `SCM_CREDENTIALS` (cannot be attested): auth failures.
    pub no_credentials: u64,
    /// Events emitted, by [`EVENT_KINDS`] index.
    pub events: [u64; EVENT_KINDS.len()],
    /// Loop turns that hit the per-turn batch bound.
    pub busy_turns: u64,
    /// `recvmmsg` errors other than would-block.
    pub recv_errors: u64,
}

impl Counters {
    /// Counts one event of `kind`.
    pub fn event(&mut self, kind: &str) {
        if let Some(i) = EVENT_KINDS.iter().position(|k| *k == kind) {
            self.events[i] += 1;
        }
    }

    /// `(kind, count)` for every event kind.
    pub fn events(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        EVENT_KINDS.iter().copied().zip(self.events.iter().copied())
    }
}
