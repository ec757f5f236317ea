//! Counters for metrics, kept by the core itself.

#[allow(unused_imports)] // reason: named in doc links only
use super::{AcceptKind, Event, Tracker, EVENT_QUEUE_CAP, KEY_CACHE_MAX};
use super::{EventKind, Reason, ReasonClass};

/// Counters for metrics. Monotonic over the tracker's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`Tracker::handle_datagram`].
    pub datagrams: u64,
    /// Frames accepted (every [`AcceptKind`]).
    pub accepted: u64,
    /// Of which [`AcceptKind::Reordered`].
    pub reordered: u64,
    /// Events dropped because the shell did not drain the queue ([`EVENT_QUEUE_CAP`]).
    pub events_dropped: u64,
    /// Agent keys derived from a master key (first datagram of an agent, forged datagrams,
    /// and agents beyond [`KEY_CACHE_MAX`] slots).
    pub key_derivations: u64,
    /// Unproven identities evicted while live to make room for a proven one (kernel-attested
    /// or per-agent key) in a full table.
    pub displaced: u64,
    pub(super) rejected: [u64; Reason::COUNT],
    pub(super) events: [u64; EventKind::COUNT],
}

impl Stats {
    pub(super) const ZERO: Stats = Stats {
        datagrams: 0,
        accepted: 0,
        reordered: 0,
        events_dropped: 0,
        key_derivations: 0,
        displaced: 0,
        rejected: [0; Reason::COUNT],
        events: [0; EventKind::COUNT],
    };

    /// Events of kind `k` raised (dropped ones included: see [`Stats::events_dropped`]);
    /// always 0 for [`EventKind::Recovery`], which the shell raises.
    #[must_use]
    pub fn events(&self, k: EventKind) -> u64 {
        self.events[k as usize]
    }

    /// Every event kind with its count (zeros included), in [`EventKind::ALL`] order.
    pub fn event_counts(&self) -> impl Iterator<Item = (EventKind, u64)> + '_ {
        EventKind::ALL.iter().map(|&k| (k, self.events[k as usize]))
    }

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
