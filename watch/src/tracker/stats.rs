//! Counters for metrics, kept by the core itself.

#[allow(unused_imports)] // reason: named in doc links only
use super::{AcceptKind, Event, Tracker, EVENT_QUEUE_CAP, KEY_CACHE_MAX};
use super::{Reason, ReasonClass};

/// Counters for metrics. Monotonic over the tracker's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`Tracker::handle_datagram`].
    pub datagrams: u64,
    /// Frames accepted (every [`AcceptKind`]).
    pub accepted: u64,
    /// Of which [`AcceptKind::Reordered`].
    pub reordered: u64,
    /// [`Event::NewAgent`] raised.
    pub new_agents: u64,
    /// [`Event::SessionRestart`] raised.
    pub restarts: u64,
    /// [`Event::Stalled`] raised.
    pub stalls: u64,
    /// [`Event::Recovered`] raised.
    pub recoveries: u64,
    /// [`Event::Died`] raised with `clean == false`.
    pub crashes: u64,
    /// [`Event::Died`] raised with `clean == true`.
    pub goodbyes: u64,
    /// [`Event::Evicted`] raised.
    pub evictions: u64,
    /// Events dropped because the shell did not drain the queue ([`EVENT_QUEUE_CAP`]).
    pub events_dropped: u64,
    /// Agent keys derived from a master key (first datagram of an agent, forged datagrams,
    /// and agents beyond [`KEY_CACHE_MAX`] slots).
    pub key_derivations: u64,
    pub(super) rejected: [u64; Reason::COUNT],
}

impl Stats {
    pub(super) const ZERO: Stats = Stats {
        datagrams: 0,
        accepted: 0,
        reordered: 0,
        new_agents: 0,
        restarts: 0,
        stalls: 0,
        recoveries: 0,
        crashes: 0,
        goodbyes: 0,
        evictions: 0,
        events_dropped: 0,
        key_derivations: 0,
        rejected: [0; Reason::COUNT],
    };

    /// Rejections counted under `r`.
    #[must_use]
    pub fn rejected(&self, r: Reason) -> u64 {
        self.rejected[r as usize]
    }

    /// Every reason with its count (zeros included), in [`Reason::ALL`] order.
    pub fn rejections(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.iter().map(|&r| (r, self.rejected[r as usize]))
    }

    /// Sum of the rejections of one class.
    #[must_use]
    pub fn rejected_class(&self, c: ReasonClass) -> u64 {
        self.rejections()
            .filter(|(r, _)| r.class() == c)
            .map(|(_, n)| n)
            .sum()
    }

    /// All rejections.
    #[must_use]
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}
