//! `varta_observer_iteration_seconds`: how long each loop turn's work took (from its wake-up
//! to its next sleep), in buckets scaled to `--iteration-budget-ms`, and how many turns took
//! longer than the budget. Fixed-size: a bucket array, a sum and two counts.

use std::time::Duration;

use crate::tracker::Nanos;

/// Upper bounds of the buckets as fractions of the budget (the last, `+Inf`, is implicit).
pub const BUCKET_FRACTIONS: [f64; 8] = [
    1.0 / 256.0,
    1.0 / 64.0,
    1.0 / 16.0,
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
];

/// Turn durations.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationHistogram {
    bounds: [Nanos; BUCKET_FRACTIONS.len()],
    budget: Nanos,
    /// Turns per bucket (not cumulative); the last is `+Inf`.
    counts: [u64; BUCKET_FRACTIONS.len() + 1],
    sum: Nanos,
    over_budget: u64,
}

impl IterationHistogram {
    /// Buckets for `budget`.
    #[must_use]
    pub fn new(budget: Duration) -> IterationHistogram {
        let budget = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
        // Exact for the budgets accepted (at most an hour: below 2^53 ns).
        let bounds = BUCKET_FRACTIONS.map(|f| (budget as f64 * f) as Nanos);
        IterationHistogram {
            bounds,
            budget,
            counts: [0; BUCKET_FRACTIONS.len() + 1],
            sum: 0,
            over_budget: 0,
        }
    }

    /// Records one turn that took `ns`.
    pub fn observe(&mut self, ns: Nanos) {
        let i = self
            .bounds
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum = self.sum.saturating_add(ns);
        if ns > self.budget {
            self.over_budget += 1;
        }
    }

    /// `(upper bound in seconds, turns in that bucket)`, `+Inf` last, not cumulative (the
    /// encoder accumulates).
    #[must_use]
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut v: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(self.counts)
            .map(|(b, c)| (*b as f64 / 1e9, c))
            .collect();
        // `f64::MAX` is how the encoder spells `+Inf`.
        v.push((f64::MAX, self.counts[self.bounds.len()]));
        v
    }

    /// Total seconds.
    #[must_use]
    pub fn sum_seconds(&self) -> f64 {
        self.sum as f64 / 1e9
    }

    /// Turns recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Turns longer than the budget.
    #[must_use]
    pub fn over_budget(&self) -> u64 {
        self.over_budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_land_in_budget_scaled_buckets() {
        let mut h = IterationHistogram::new(Duration::from_millis(256));
        h.observe(1_000_000); // 1 ms: the first bucket (budget/256)
        h.observe(100_000_000); // 100 ms: the budget/2 bucket
        h.observe(300_000_000); // over budget: the 2× bucket
        h.observe(5_000_000_000); // beyond 4×: +Inf
        let b = h.buckets();
        assert_eq!(b.len(), 9);
        assert_eq!(b[0], (0.001, 1));
        assert_eq!(b[4].1, 1);
        assert_eq!(b[6].1, 1);
        assert_eq!(b[8], (f64::MAX, 1));
        assert_eq!(h.count(), 4);
        assert_eq!(h.over_budget(), 2);
        assert!((h.sum_seconds() - 5.401).abs() < 1e-9);
    }
}
