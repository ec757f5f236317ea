//! Deadlines: stalls at `last_beat + threshold_of(class)`, evictions `evict_after` later (see
//! the `table` module for why the list heads hold the earliest deadlines).
//!
//! Threshold classes: the shell gives the distinct thresholds once
//! ([`Tracker::set_thresholds`], at setup and reload) and each agent's class once per session
//! ([`Tracker::set_threshold_class`]); a beat only appends the slot to its own class's list.

use super::streams::{Seen, SeenKind};
use super::table::{ListId, Phase, Table, MAX_THRESHOLD_CLASSES};
use super::{AgentId, Event, Nanos, Tracker};

/// The deadline of `slot` in `table` under `thresholds` and `evict_after`.
fn deadline_in(table: &Table, thresholds: &[Nanos], evict_after: Nanos, slot: u32) -> Nanos {
    let a = &table.slab[slot as usize];
    let threshold = thresholds
        .get(usize::from(table.class(slot)))
        .copied()
        .unwrap_or(thresholds[0]);
    match a.phase() {
        Phase::Alive => a.last_beat.saturating_add(threshold),
        Phase::Stalled => a
            .last_beat
            .saturating_add(threshold)
            .saturating_add(evict_after),
        Phase::DeadCrash | Phase::DeadClean => a.last_beat.saturating_add(evict_after),
        Phase::Free => Nanos::MAX,
    }
}

/// Most threshold classes [`Tracker::set_thresholds`] takes.
pub const MAX_THRESHOLDS: usize = MAX_THRESHOLD_CLASSES;

/// A refused [`Tracker::set_thresholds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    /// No thresholds, or more than [`MAX_THRESHOLDS`].
    #[error("threshold classes: between 1 and {MAX_THRESHOLDS}, got {0}")]
    Count(usize),
}

impl Tracker {
    /// The stall threshold of `slot`'s class.
    pub(super) fn threshold_of(&self, slot: u32) -> Nanos {
        self.thresholds
            .get(usize::from(self.table.class(slot)))
            .copied()
            .unwrap_or(self.thresholds[0])
    }

    /// The thresholds of the threshold classes, the default class's first.
    #[must_use]
    pub fn thresholds(&self) -> &[Nanos] {
        &self.thresholds
    }

    /// Replaces the threshold classes (`thresholds[0]` is the default class; a zero is taken
    /// as 1 ns) and gives every tracked agent its class from `class_of` (an index past the
    /// new list is the default class). Deadlines follow at once; no agent, replay window or
    /// counter is lost. O(n log n) in the agents tracked: for setup and reload, not per beat.
    ///
    /// # Errors
    /// [`ThresholdError::Count`]: none, or more than [`MAX_THRESHOLDS`]; nothing changes.
    pub fn set_thresholds(
        &mut self,
        thresholds: &[Nanos],
        mut class_of: impl FnMut(AgentId) -> u8,
    ) -> Result<(), ThresholdError> {
        if thresholds.is_empty() || thresholds.len() > MAX_THRESHOLDS {
            return Err(ThresholdError::Count(thresholds.len()));
        }
        self.thresholds = thresholds.iter().map(|&t| t.max(1)).collect();
        let (th, ev) = (self.thresholds.clone(), self.evict_after);
        self.table.rebuild(
            self.thresholds.len(),
            |a| class_of(a.id()),
            |t, s| deadline_in(t, &th, ev, s),
        );
        Ok(())
    }

    /// Puts `agent` in threshold class `class` (an index into [`Tracker::thresholds`]), once per
    /// agent session when the shell has resolved its class. Its pending deadline moves to the
    /// new threshold at once when its place in the new class's list is among the last
    /// `MAX_INSERT_STEPS` (64) (the usual case: the class is
    /// resolved right after a beat); otherwise the move waits for its next beat, which
    /// appends it to the new list in O(1), and until then the old threshold holds. Either
    /// way the cost is bounded, never a walk of the table. Returns `false` (and changes
    /// nothing) for an unknown agent or class.
    pub fn set_threshold_class(&mut self, agent: AgentId, class: u8) -> bool {
        if usize::from(class) >= self.thresholds.len() {
            return false;
        }
        let Some(slot) = self.slot_of(agent) else {
            return false;
        };
        if self.table.class(slot) == class {
            self.table.set_pending_class(slot, super::table::NO_PENDING);
            return true;
        }
        let list = match self.table.slab[slot as usize].phase() {
            Phase::Alive => Some(ListId::Alive),
            Phase::Stalled => Some(ListId::Stalled),
            Phase::DeadCrash | Phase::DeadClean | Phase::Free => None,
        };
        let Some(l) = list else {
            self.table.set_class(slot, class);
            return true;
        };
        let (th, ev) = (&self.thresholds, self.evict_after);
        // The key the slot will have in the new class.
        let new_deadline = |t: &Table, s: u32| {
            if s == slot {
                let thr = th[usize::from(class)];
                let a = &t.slab[s as usize];
                match l {
                    ListId::Alive => a.last_beat.saturating_add(thr),
                    _ => a.last_beat.saturating_add(thr).saturating_add(ev),
                }
            } else {
                deadline_in(t, th, ev, s)
            }
        };
        match self.table.sorted_position(l, class, slot, new_deadline) {
            Some(after) if after != slot => {
                self.table.unlink(slot);
                self.table.set_class(slot, class);
                self.table.link_after(l, slot, after);
            }
            _ => self.table.set_pending_class(slot, class),
        }
        true
    }

    /// The threshold class of a tracked agent.
    #[must_use]
    pub fn threshold_class(&self, agent: AgentId) -> Option<u8> {
        self.slot_of(agent).map(|s| self.table.class(s))
    }

    fn slot_of(&self, agent: AgentId) -> Option<u32> {
        let code = super::table::listener_code(agent.listener)?;
        self.table.find(super::table::tag(
            code,
            agent.key_class == super::KeyClass::Agent,
            agent.pid,
        ))
    }

    /// The deadline of `slot` by its phase.
    pub(super) fn deadline(&self, slot: u32) -> Nanos {
        deadline_in(&self.table, &self.thresholds, self.evict_after, slot)
    }

    /// The earliest deadline over the list heads. A saturated deadline (`u64::MAX`)
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
