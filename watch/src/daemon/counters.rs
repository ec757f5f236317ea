//! The daemon's own counters. Rejections and events are counted by the tracker
//! ([`Tracker::stats`]); these are what only the shell sees.
//!
//! [`Tracker::stats`]: crate::tracker::Tracker::stats

/// Counters of the shell.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams received, by listener (index as in the daemon's listener list).
    pub datagrams: Vec<u64>,
    /// Unix datagrams without `SCM_CREDENTIALS` (cannot be attested): auth failures.
    pub no_credentials: u64,
    /// Recovery decisions (the one event kind the tracker does not raise).
    pub recoveries: u64,
    /// Loop turns that hit the per-turn batch bound.
    pub busy_turns: u64,
    /// `recvmmsg` errors other than would-block.
    pub recv_errors: u64,
    /// Starts at which the audit file did not reach, or differed from, the state file's anchor.
    pub audit_anchor_mismatches: u64,
    /// Datagrams longer than the receive buffer (cut by the kernel).
    pub truncated: u64,
    /// Unix datagrams whose control data (credentials) the kernel cut.
    pub ctrl_truncated: u64,
    /// Datagrams each receive worker read (`--workers`), by worker.
    pub by_worker: Vec<u64>,
}

impl Counters {
    /// Counts `n` datagrams read by receive worker `worker`.
    pub fn count_worker(&mut self, worker: usize, n: usize) {
        if self.by_worker.len() <= worker {
            self.by_worker.resize(worker + 1, 0);
        }
        self.by_worker[worker] += n as u64;
    }
}
