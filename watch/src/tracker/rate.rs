//! Rate limits of the core: token buckets for beats per identity and for all beats, and the
//! budget of master-key derivations for identities the tracker does not know. Sans-I/O: every
//! decision takes `now`.
//!
//! # Where the beat limits sit, and why
//!
//! In the pipeline, after a datagram was decoded and authenticated and before the session
//! rules ([`Tracker::track`]): the identity a bucket is kept for is then the one the frame is
//! tracked under (kernel-attested pid, or the key that opened it), never a pid claimed by an
//! unauthenticated datagram. A bucket is only *checked* before the session rules and
//! *charged* once the frame was accepted, so replays, duplicates and refused frames cost no
//! tokens: nobody can empty another agent's bucket by replaying its captured datagrams.
//! Terminal frames (crash reports, goodbyes) are never limited. Per identity first, then
//! global; a frame refused by its own bucket does not charge the global one, so one agent
//! flooding cannot spend the fleet's budget. Refusals are [`Rejection::RateLimited`],
//! counted under the reason `rate_limited` and by scope ([`Tracker::rate_limited`]:
//! `per_pid`, `global`).
//!
//! Both limits are off unless configured: a fleet of 10,000 agents beating at 1 Hz is 10,000
//! beats/s, normal. With `--max-beat-rate N`, each identity may send N beats/s with a burst of
//! N; with `--global-beat-rate R --global-beat-burst B`, all identities together R/s, B at
//! once.
//!
//! # The derivation budget
//!
//! A master-key datagram for a pid the tracker does not know costs an HKDF derivation (two
//! HMAC-SHA256 passes) before its tag can be checked, so forged datagrams with invented pids
//! could make the observer derive keys flat out. Derivations for unknown identities are
//! bounded per second ([`RateConfig::derivations_per_sec`], burst of one second's worth); past
//! the budget the datagram is refused unopened ([`Rejection::DeriveBudget`]). A real new agent
//! refused that way is admitted with a later beat; known agents never need the budget.
//!
//! Every bucket is a GCRA ("virtual scheduling") cell: one `u64`, the theoretical arrival time
//! of the next conforming beat; integer arithmetic only.

use hashbrown::HashMap;

use super::pipeline::Verified;
use super::table::tag;
use super::{Accepted, Nanos, Rejection, Tracker};

/// Default [`RateConfig::derivations_per_sec`]: about 40 ms of HKDF per second on a 2020s
/// core, far above any fleet's rate of newly arriving agents.
pub const DEFAULT_DERIVATIONS_PER_SEC: u32 = 20_000;

/// The core's rate limits (see the module docs). The default: beat limits off, derivation
/// budget [`DEFAULT_DERIVATIONS_PER_SEC`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Beats per second per identity (`--max-beat-rate`); `None` or 0: off.
    pub per_identity: Option<u32>,
    /// Beats per second of all identities (`--global-beat-rate`); `None` or 0: off.
    pub global: Option<u32>,
    /// Burst of the global bucket (`--global-beat-burst`); `None`: one second's worth.
    pub global_burst: Option<u32>,
    /// Master-key derivations per second for unknown identities; 0: no bound.
    pub derivations_per_sec: u32,
}

impl Default for RateConfig {
    fn default() -> RateConfig {
        RateConfig {
            per_identity: None,
            global: None,
            global_burst: None,
            derivations_per_sec: DEFAULT_DERIVATIONS_PER_SEC,
        }
    }
}

/// Which bucket refused a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// The identity's own bucket (`reason="per_pid"`).
    PerPid,
    /// The global bucket (`reason="global"`).
    Global,
}

impl RateScope {
    /// The scope's one spelling (the `reason` label of `varta_rate_limited_total`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RateScope::PerPid => "per_pid",
            RateScope::Global => "global",
        }
    }
}

/// A GCRA cell's parameters: `interval` ns per token, `tolerance` = (burst − 1) × interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    /// `per_sec` tokens per second, `burst` at once; `None` when `per_sec` is 0.
    #[must_use]
    pub fn new(per_sec: u32, burst: u32) -> Option<Gcra> {
        if per_sec == 0 {
            return None;
        }
        let interval = (1_000_000_000 / u64::from(per_sec)).max(1);
        Some(Gcra {
            interval,
            tolerance: u64::from(burst.max(1) - 1).saturating_mul(interval),
        })
    }

    /// Whether a token is available at `now` for the cell whose theoretical arrival time is
    /// `tat`.
    #[must_use]
    pub fn conforms(&self, tat: Nanos, now: Nanos) -> bool {
        tat <= now.saturating_add(self.tolerance)
    }

    /// The cell's next theoretical arrival time once a token is taken at `now`.
    #[must_use]
    pub fn take(&self, tat: Nanos, now: Nanos) -> Nanos {
        tat.max(now).saturating_add(self.interval)
    }
}

/// The tracker's limiter state (bounded: one cell per identity, at most the tracker's
/// capacity).
#[derive(Debug)]
pub(crate) struct Limiter {
    per_identity: Option<Gcra>,
    cells: HashMap<u64, Nanos, foldhash::fast::RandomState>,
    max_cells: usize,
    global: Option<Gcra>,
    global_tat: Nanos,
    derive: Budget,
    limited: [u64; 2],
    /// Identities charged while every cell was in use (not limited; see `charge`).
    untracked: u64,
}

impl Limiter {
    pub(crate) fn new(cfg: &RateConfig, max_cells: usize) -> Limiter {
        let per = cfg.per_identity.and_then(|n| Gcra::new(n, n));
        let global = cfg
            .global
            .and_then(|n| Gcra::new(n, cfg.global_burst.unwrap_or(n)));
        let d = cfg.derivations_per_sec;
        Limiter {
            per_identity: per,
            cells: HashMap::default(),
            max_cells: max_cells.max(1),
            global,
            global_tat: 0,
            derive: Budget::new(d),
            limited: [0; 2],
            untracked: 0,
        }
    }

    fn beats_limited(&self) -> bool {
        self.per_identity.is_some() || self.global.is_some()
    }

    fn check(&mut self, tag: u64, now: Nanos) -> Result<(), RateScope> {
        if let Some(g) = self.per_identity {
            if !g.conforms(self.cells.get(&tag).copied().unwrap_or(0), now) {
                self.limited[0] += 1;
                return Err(RateScope::PerPid);
            }
        }
        if let Some(g) = self.global {
            if !g.conforms(self.global_tat, now) {
                self.limited[1] += 1;
                return Err(RateScope::Global);
            }
        }
        Ok(())
    }

    fn charge(&mut self, tag: u64, now: Nanos) {
        if let Some(g) = self.per_identity {
            if !self.cells.contains_key(&tag) && self.cells.len() >= self.max_cells {
                // Cells whose bucket is full again carry nothing: drop them.
                self.cells.retain(|_, tat| *tat > now);
            }
            if let Some(tat) = self.cells.get_mut(&tag) {
                *tat = g.take(*tat, now);
            } else if self.cells.len() < self.max_cells {
                self.cells.insert(tag, g.take(0, now));
            } else {
                self.untracked += 1;
            }
        }
        if let Some(g) = self.global {
            self.global_tat = g.take(self.global_tat, now);
        }
    }

    /// Takes one derivation from the budget; `false` when it is spent.
    pub(super) fn try_derive(&mut self, now: Nanos) -> bool {
        self.derive.try_take(now)
    }
}

/// A budget of `per_sec` takes per second, a second's worth at once (0: unbounded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    gcra: Option<Gcra>,
    tat: Nanos,
}

impl Budget {
    pub(crate) fn new(per_sec: u32) -> Budget {
        Budget {
            gcra: Gcra::new(per_sec, per_sec),
            tat: 0,
        }
    }

    /// Takes one; `false` when the budget is spent.
    pub(crate) fn try_take(&mut self, now: Nanos) -> bool {
        match self.gcra {
            None => true,
            Some(g) if g.conforms(self.tat, now) => {
                self.tat = g.take(self.tat, now);
                true
            }
            Some(_) => false,
        }
    }
}

impl Tracker {
    /// Sets the rate limits (see the module docs); replaces any earlier limits and their
    /// state.
    pub fn set_rate_limits(&mut self, cfg: &RateConfig) {
        self.rate = Limiter::new(cfg, self.table.capacity());
    }

    /// Beats refused by the rate limits, by scope: `[("per_pid", n), ("global", n)]`.
    #[must_use]
    pub fn rate_limited(&self) -> [(&'static str, u64); 2] {
        [
            (RateScope::PerPid.as_str(), self.rate.limited[0]),
            (RateScope::Global.as_str(), self.rate.limited[1]),
        ]
    }

    /// [`Tracker::track`] under the beat limits: checked before, charged on acceptance.
    pub(super) fn track_limited(&mut self, now: Nanos, v: Verified) -> Result<Accepted, Rejection> {
        if !self.rate.beats_limited() || v.frame.is_terminal() {
            return self.track(now, v);
        }
        let t = tag(v.listener, v.agent_key, v.frame.pid());
        self.rate
            .check(t, now)
            .map_err(|scope| Rejection::RateLimited { scope })?;
        let r = self.track(now, v);
        if r.is_ok() {
            self.rate.charge(t, now);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let g = Gcra::new(10, 3).unwrap();
        let mut tat = 0;
        let mut taken = 0;
        let now = 5_000_000_000;
        while g.conforms(tat, now) {
            tat = g.take(tat, now);
            taken += 1;
        }
        assert_eq!(taken, 3, "burst of 3 at one instant");
        // One token per 100 ms afterwards.
        assert!(!g.conforms(tat, now + 99_000_000));
        assert!(g.conforms(tat, now + 100_000_000));
        assert!(Gcra::new(0, 5).is_none());
    }

    #[test]
    fn per_identity_refusal_does_not_spend_the_global_bucket() {
        let mut l = Limiter::new(
            &RateConfig {
                per_identity: Some(2),
                global: Some(3),
                global_burst: Some(3),
                ..RateConfig::default()
            },
            16,
        );
        let now = 1_000_000_000;
        for _ in 0..2 {
            assert_eq!(l.check(1, now), Ok(()));
            l.charge(1, now);
        }
        assert_eq!(l.check(1, now), Err(RateScope::PerPid));
        assert_eq!(l.check(2, now), Ok(()));
        l.charge(2, now);
        assert_eq!(l.check(3, now), Err(RateScope::Global));
        assert_eq!(l.limited, [1, 1]);
    }

    #[test]
    fn cells_stay_bounded() {
        let mut l = Limiter::new(
            &RateConfig {
                per_identity: Some(1),
                ..RateConfig::default()
            },
            4,
        );
        for t in 0..100 {
            l.charge(t, 0);
        }
        assert_eq!(l.cells.len(), 4);
        assert_eq!(l.untracked, 96);
        // Once their buckets are full again, old cells make room.
        l.charge(1000, 10_000_000_000);
        assert!(l.cells.contains_key(&1000));
        assert!(l.cells.len() <= 4);
    }

    #[test]
    fn refused_frames_cost_no_tokens_and_terminal_frames_pass() {
        use super::super::{Origin, TrackerConfig};
        use vlp_core::{Frame, Status};
        let mut t = Tracker::new(TrackerConfig {
            allowed_uids: vec![0],
            ..TrackerConfig::default()
        });
        t.set_rate_limits(&RateConfig {
            per_identity: Some(2),
            ..RateConfig::default()
        });
        let o = Origin::Unix { pid: 9, uid: 0 };
        let beat = |n: u64| Frame::new(Status::Ok, 9, 1_000 + n, n, 0).unwrap().emit();
        let now = 1_000_000_000;
        assert!(t.handle_datagram(now, &o, &beat(1)).is_ok());
        // Replays of an accepted frame are refused by the session rules, not charged.
        for _ in 0..100 {
            let r = t.handle_datagram(now, &o, &beat(1));
            assert!(matches!(r, Err(Rejection::StaleNonce { .. })), "{r:?}");
        }
        assert!(t.handle_datagram(now, &o, &beat(2)).is_ok());
        assert_eq!(
            t.handle_datagram(now, &o, &beat(3)),
            Err(Rejection::RateLimited {
                scope: RateScope::PerPid
            })
        );
        assert_eq!(t.rate_limited(), [("per_pid", 1), ("global", 0)]);
        assert_eq!(t.stats().rejected(super::super::Reason::RateLimited), 1);
        // The bucket refills: one beat per 500 ms.
        let later = now + 500_000_000;
        assert!(t.handle_datagram(later, &o, &beat(4)).is_ok());
        assert!(t.handle_datagram(later, &o, &beat(5)).is_err());
        // A crash report is never limited.
        let crash = Frame::terminal(9, 2_000, 0xdead).unwrap().emit();
        assert!(t.handle_datagram(later, &o, &crash).is_ok());
    }

    #[test]
    fn derivation_budget_refills_with_time() {
        let mut l = Limiter::new(
            &RateConfig {
                derivations_per_sec: 100,
                ..RateConfig::default()
            },
            4,
        );
        let now = 1_000_000_000;
        let n = (0..1000).filter(|_| l.try_derive(now)).count();
        assert_eq!(n, 100);
        assert!(l.try_derive(now + 10_000_000));
        assert!(!l.try_derive(now + 10_000_000));
    }
}
