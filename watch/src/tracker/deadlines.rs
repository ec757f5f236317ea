//! Deadlines: stalls at `last_beat + threshold`, evictions `evict_after` later (see the
//! `table` module for why the list heads hold the earliest deadlines).

use super::streams::{Seen, SeenKind};
use super::table::{ListId, Phase};
use super::{Event, Nanos, Tracker};

impl Tracker {
    /// The deadline of `slot` by its phase.
    pub(super) fn deadline(&self, slot: u32) -> Nanos {
        let a = &self.table.slab[slot as usize];
        match a.phase() {
            Phase::Alive => a.last_beat.saturating_add(self.threshold),
            Phase::Stalled => a
                .last_beat
                .saturating_add(self.threshold)
                .saturating_add(self.evict_after),
            Phase::DeadCrash | Phase::DeadClean => a.last_beat.saturating_add(self.evict_after),
            Phase::Free => Nanos::MAX,
        }
    }

    /// The earliest deadline over the three list heads. A saturated deadline (`u64::MAX`)
    /// means "never".
    pub(super) fn earliest(&self) -> Option<(u32, Nanos)> {
        self.table
            .heads()
            .map(|s| (s, self.deadline(s)))
            .filter(|&(_, d)| d != Nanos::MAX)
            .min_by_key(|&(_, d)| d)
    }

    /// Fires `slot`'s deadline (which is `<= now`).
    pub(super) fn fire(&mut self, slot: u32, deadline: Nanos) {
        match self.table.slab[slot as usize].phase() {
            Phase::Alive => {
                self.table.unlink(slot);
                let a = &mut self.table.slab[slot as usize];
                a.set_phase(Phase::Stalled);
                a.stalls = a.stalls.saturating_add(1);
                let e = Event::Stalled {
                    at: deadline,
                    agent: a.id(),
                    last_beat: a.last_beat,
                    nonce: a.last_nonce,
                };
                self.table.push_back(ListId::Stalled, slot);
                self.push(e);
            }
            Phase::Stalled | Phase::DeadCrash | Phase::DeadClean => self.evict(slot, deadline),
            Phase::Free => {}
        }
    }

    pub(super) fn evict(&mut self, slot: u32, at: Nanos) {
        if self.table.slab[slot as usize].has_key() {
            if let Some(keys) = self.keys.as_mut() {
                keys.clear(slot);
            }
        }
        let a = &self.table.slab[slot as usize];
        let agent = a.id();
        if a.secure() {
            // The identity's streams outlive it: replays of them must not create it again.
            let mut h = self.histories.take(slot);
            if let Some(current) = a.window.stream() {
                h.remember(Seen {
                    random: current,
                    highest: a.window.highest(),
                    kind: SeenKind::LastCurrent,
                });
            }
            self.tombs.put(a.tag(), h);
        }
        self.table.remove(slot);
        self.push(Event::Evicted { at, agent });
    }

    /// Fires `slot`'s own overdue deadlines; `false` if that evicted it.
    pub(super) fn catch_up(&mut self, slot: u32, now: Nanos) -> bool {
        loop {
            let d = self.deadline(slot);
            if d == Nanos::MAX || d > now {
                return true;
            }
            let evicting = self.table.slab[slot as usize].phase() != Phase::Alive;
            self.fire(slot, d);
            if evicting {
                return false;
            }
        }
    }
}
