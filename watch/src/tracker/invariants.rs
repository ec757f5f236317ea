//! Structural self-checks for tests and fuzzing.

use super::table::{ListId, Phase};
use super::{Nanos, Tracker};

impl Tracker {
    /// Checks the structural invariants of the table (lists sorted by deadline, phases match
    /// lists, index and slab agree, length within capacity) and of the deadline clock
    /// (`poll_timeout` is the earliest deadline of any agent). Walks every agent: for tests and
    /// fuzzing, not for the hot path.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut on_lists = 0usize;
        let mut min_deadline: Option<Nanos> = None;
        let lists = (0..self.table.classes()).flat_map(|c| {
            [
                (ListId::Alive, "alive", c, false),
                (ListId::Alive, "alive", c, true),
                (ListId::Stalled, "stalled", c, false),
                (ListId::Stalled, "stalled", c, true),
            ]
        });
        let dead = [
            (ListId::Dead, "dead", 0, false),
            (ListId::Dead, "dead", 0, true),
        ];
        for (l, want, class, proven) in lists.chain(dead) {
            let mut prev: Option<Nanos> = None;
            for s in self.table.walk(l, class, proven) {
                let a = &self.table.slab[s as usize];
                if l != ListId::Dead && usize::from(self.table.class(s)) != class {
                    return Err(format!("slot {s} on the list of another threshold class"));
                }
                if a.proven() != proven {
                    return Err(format!("slot {s} on the wrong attestation list"));
                }
                let ok = match l {
                    ListId::Alive => a.phase() == Phase::Alive,
                    ListId::Stalled => a.phase() == Phase::Stalled,
                    ListId::Dead => a.is_dead(),
                };
                if !ok {
                    return Err(format!(
                        "slot {s} on the {want} list in phase {:?}",
                        a.phase()
                    ));
                }
                let d = self.deadline(s);
                if prev.is_some_and(|p| p > d) {
                    return Err(format!("{want} list out of deadline order at slot {s}"));
                }
                prev = Some(d);
                if self.table.find(a.tag()) != Some(s) {
                    return Err(format!("slot {s} not indexed"));
                }
                if d != Nanos::MAX {
                    min_deadline = Some(min_deadline.map_or(d, |m| m.min(d)));
                }
                on_lists += 1;
            }
        }
        if on_lists != self.table.len() {
            return Err(format!(
                "{on_lists} agents on lists, table says {}",
                self.table.len()
            ));
        }
        if self.table.iter().count() != self.table.len() {
            return Err("slab live count differs from len".into());
        }
        if self.table.len() > self.table_capacity() {
            return Err("len exceeds capacity".into());
        }
        let unproven = self.table.iter().filter(|a| !a.proven()).count();
        if unproven != self.table.unproven_len() {
            return Err("unproven count differs from the table's".into());
        }
        if unproven > self.table_capacity().saturating_sub(self.proven_reserve) {
            return Err(format!("{unproven} unproven identities exceed their room"));
        }
        if self.poll_timeout() != min_deadline {
            return Err(format!(
                "poll_timeout {:?} but earliest deadline {min_deadline:?}",
                self.poll_timeout()
            ));
        }
        Ok(())
    }

    pub(super) fn table_capacity(&self) -> usize {
        self.table.capacity()
    }
}
