//! Sessions: how a verified frame of a known agent is taken (a beat, a reordering, a new
//! session, a late frame of a dead one), and the admission of a new identity.

use vlp_core::{Frame, Iv, ReplayWindow};

use super::pipeline::Verified;
use super::streams::{Histories, History, Seen, SeenKind};
use super::table::{tag, Agent, ListId, Phase};
use super::{
    AcceptKind, Accepted, Event, EvictionPolicy, Nanos, Rejection, Tracker, REORDER_SLACK,
};

/// How a frame of a known agent is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    Advance,
    Restart,
    Reordered,
}

impl Tracker {
    /// Session and liveness bookkeeping for a verified frame.
    pub(super) fn track(&mut self, now: Nanos, v: Verified) -> Result<Accepted, Rejection> {
        let mut slot = match v.looked_up {
            Some(found) => found,
            None => self.table.find(tag(v.listener, v.agent_key, v.frame.pid())),
        };
        if let Some(s) = slot {
            // Apply this agent's own overdue deadlines first, so the outcome does not depend
            // on when the shell last called handle_timeout.
            if !self.catch_up(s, now) {
                slot = None;
            }
        }
        let Some(slot) = slot else {
            return self.admit(now, v);
        };
        let a = &self.table.slab[slot as usize];
        let agent = a.id();
        if v.origin != 0
            && a.origin != 0
            && a.origin != v.origin
            && now < a.last_beat.saturating_add(self.threshold_of(slot))
        {
            return Err(Rejection::OriginConflict);
        }
        let decision = match v.iv {
            Some(iv) => decide_secure(a, &self.histories, slot, &iv, &v.frame, v.prechecked)?,
            None => decide_plain(a, &v.frame, now, self.threshold_of(slot))?,
        };
        let a = &mut self.table.slab[slot as usize];
        if !v.frame.is_terminal() {
            a.beats += 1;
        }
        if v.origin != 0 {
            a.origin = v.origin;
        }
        if let Some(iv) = v.iv {
            if a.window.stream() == Some(iv.random) {
                a.window.commit(&iv);
            } else if v.frame.is_terminal() {
                // A crash report from the agent's panic hook, which seals with a session of
                // its own: the current stream and its window stay, so the application's own
                // beats are still taken if the process lives on.
                self.histories.get_mut(slot).remember(Seen {
                    random: iv.random,
                    highest: iv.counter,
                    kind: SeenKind::CrashReport,
                });
            } else {
                if let Some(old) = a.window.stream() {
                    self.histories.get_mut(slot).remember(Seen {
                        random: old,
                        highest: a.window.highest(),
                        kind: SeenKind::Left,
                    });
                }
                a.window = ReplayWindow::new();
                a.window.commit(&iv);
            }
        }
        let accepted = |kind| Accepted {
            agent,
            frame: v.frame,
            kind,
        };
        if decision == Decision::Reordered {
            return Ok(accepted(AcceptKind::Reordered));
        }
        let f = v.frame;
        let was = a.phase();
        let old_status = a.status();
        let silent_for = now.saturating_sub(a.last_beat);
        // The frame becomes the agent's latest.
        a.last_ts = f.timestamp();
        a.payload = f.payload();
        a.last_beat = now;
        if !f.is_terminal() {
            a.last_nonce = f.nonce();
        } else if decision == Decision::Restart {
            a.last_nonce = 0;
        }
        a.status = f.status().as_u8();
        if was == Phase::Stalled && !(f.is_terminal() && decision == Decision::Advance) {
            self.push(Event::Recovered {
                at: now,
                agent,
                silent_for,
            });
        }
        if decision == Decision::Restart {
            self.push(Event::SessionRestart {
                at: now,
                agent,
                nonce: f.nonce(),
            });
        }
        if !f.is_terminal() && old_status != f.status() {
            self.push(Event::StatusChanged {
                at: now,
                agent,
                from: old_status,
                to: f.status(),
                payload: f.payload(),
            });
        }
        self.table.unlink(slot);
        if f.is_terminal() {
            self.die(slot, now, &f);
        } else {
            self.table.slab[slot as usize].set_phase(Phase::Alive);
            self.table.push_back(ListId::Alive, slot);
        }
        Ok(accepted(if decision == Decision::Restart {
            AcceptKind::Restart
        } else {
            AcceptKind::Beat
        }))
    }

    /// Marks an unlinked `slot` dead and queues it for eviction.
    pub(super) fn die(&mut self, slot: u32, now: Nanos, f: &Frame) {
        let clean = f.is_goodbye();
        let a = &mut self.table.slab[slot as usize];
        a.set_phase(if clean {
            Phase::DeadClean
        } else {
            Phase::DeadCrash
        });
        let agent = a.id();
        self.table.push_back(ListId::Dead, slot);
        self.push(Event::Died {
            at: now,
            agent,
            clean,
            payload: f.payload(),
        });
    }

    /// First frame of an identity.
    pub(super) fn admit(&mut self, now: Nanos, v: Verified) -> Result<Accepted, Rejection> {
        let id_tag = tag(v.listener, v.agent_key, v.frame.pid());
        if let Some(iv) = v.iv {
            // An evicted identity's tombstone: its old streams do not create it again.
            if let Some(seen) = self.tombs.get(id_tag).and_then(|h| h.find(&iv.random)) {
                seen.check(&iv, Rejection::EvictedStream)?;
            }
        }
        self.make_room(now, v.listener == 0 || v.agent_key)?;
        let f = v.frame;
        let mut a = Agent::EMPTY;
        a.pid = f.pid();
        a.listener = v.listener;
        a.last_nonce = if f.is_terminal() { 0 } else { f.nonce() };
        a.last_beat = now;
        a.beats = u64::from(!f.is_terminal());
        a.payload = f.payload();
        a.status = f.status().as_u8();
        a.origin = v.origin;
        a.last_ts = f.timestamp();
        if v.agent_key {
            a.set_agent_key();
        }
        let mut history = None;
        if let Some(iv) = v.iv {
            a.set_secure();
            let mut h = self.tombs.take(id_tag).unwrap_or(History::EMPTY);
            if f.is_terminal() {
                // As for a known agent: a terminal frame's stream is a crash report's own
                // until a regular beat names the session's (the panic hook may report first).
                h.remember(Seen {
                    random: iv.random,
                    highest: iv.counter,
                    kind: SeenKind::CrashReport,
                });
            } else {
                a.window.commit(&iv);
            }
            history = Some(h);
        }
        let agent = a.id();
        let slot = self.table.insert(a);
        if let Some(h) = history {
            *self.histories.get_mut(slot) = h;
        }
        self.push(Event::NewAgent {
            at: now,
            agent,
            status: f.status(),
            nonce: f.nonce(),
        });
        if f.is_terminal() {
            self.die(slot, now, &f);
        } else {
            self.table.slab[slot as usize].set_phase(Phase::Alive);
            self.table.push_back(ListId::Alive, slot);
        }
        Ok(Accepted {
            agent,
            frame: f,
            kind: AcceptKind::NewAgent,
        })
    }

    /// Makes room for a new identity, proven (kernel-attested or per-agent key) or not.
    ///
    /// Unproven identities fill at most `capacity - proven_reserve` slots; past that only a
    /// dead unproven entry makes room for another ([`Rejection::UnprovenCapacity`]). When the
    /// table is full, the longest-dead entry makes room; for a proven newcomer, if no entry
    /// is dead, the unproven entry with the earliest deadline is evicted (stalled ones
    /// first), counted in [`super::Stats::displaced`]. Proven live agents are never pushed
    /// out. With an [`EvictionPolicy`] (`--tracker-eviction-policy`), after dead entries the
    /// longest-stalled entry makes room (`strict`), then the longest-silent live one
    /// (`balanced`), among the classes the newcomer may displace (an unproven newcomer only
    /// unproven identities).
    fn make_room(&mut self, now: Nanos, proven: bool) -> Result<(), Rejection> {
        let quota = self.table.capacity().saturating_sub(self.proven_reserve);
        if !proven && self.table.unproven_len() >= quota {
            let dead = self.table.head(ListId::Dead, false);
            let by_policy = || match self.eviction? {
                EvictionPolicy::Strict => self.table.head(ListId::Stalled, false),
                EvictionPolicy::Balanced => self
                    .table
                    .head(ListId::Stalled, false)
                    .or_else(|| self.table.head(ListId::Alive, false)),
            };
            let Some(victim) = dead.or_else(by_policy) else {
                return Err(Rejection::UnprovenCapacity);
            };
            if dead.is_none() {
                self.stats.displaced += 1;
            }
            self.evict(victim, now);
            return Ok(());
        }
        if !self.table.is_full() {
            return Ok(());
        }
        let last_beat = |s: u32| self.table.slab[s as usize].last_beat;
        let dead = [
            self.table.head(ListId::Dead, false),
            self.table.head(ListId::Dead, true),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|&s| last_beat(s));
        if let Some(victim) = dead {
            self.evict(victim, now);
            return Ok(());
        }
        let victim = match self.eviction {
            None if proven => self
                .table
                .head(ListId::Stalled, false)
                .or_else(|| self.table.head(ListId::Alive, false)),
            None => None,
            Some(policy) => {
                // The longest-silent entry of a list among the classes this newcomer may
                // displace: an unproven identity never pushes out a proven one.
                let oldest = |list: ListId| {
                    [
                        Some(self.table.head(list, false)),
                        proven.then(|| self.table.head(list, true)),
                    ]
                    .into_iter()
                    .flatten()
                    .flatten()
                    .min_by_key(|&s| last_beat(s))
                };
                let stalled = oldest(ListId::Stalled);
                match policy {
                    EvictionPolicy::Strict => stalled,
                    EvictionPolicy::Balanced => stalled.or_else(|| oldest(ListId::Alive)),
                }
            }
        };
        if let Some(victim) = victim {
            self.stats.displaced += 1;
            self.evict(victim, now);
            return Ok(());
        }
        Err(Rejection::CapacityExceeded)
    }
}

/// Replay checks that need no decryption: the window, and the identity's remembered streams
/// (see the `streams` module).
pub(super) fn precheck(
    a: &Agent,
    histories: &Histories,
    slot: u32,
    iv: &Iv,
) -> Result<(), Rejection> {
    if !a.secure() {
        return Ok(());
    }
    if a.window.stream() != Some(iv.random) {
        if let Some(seen) = histories.get(slot).find(&iv.random) {
            seen.check(iv, Rejection::RetiredStream)?;
        }
    }
    a.window.check(iv).map_err(Rejection::Replay)
}

/// Session rules for a secure frame of a known agent (see the module docs).
pub(super) fn decide_secure(
    a: &Agent,
    histories: &Histories,
    slot: u32,
    iv: &Iv,
    f: &Frame,
    prechecked: bool,
) -> Result<Decision, Rejection> {
    if !prechecked {
        precheck(a, histories, slot, iv)?;
    }
    let same_stream = a.window.stream() == Some(iv.random);
    if !same_stream {
        if f.is_terminal() {
            if a.is_dead() {
                // A later crash report on a crash-report stream of an agent that is already
                // dead (another thread's panic) says nothing new; on any other stream it is
                // a new session (a recycled pid) that died at once.
                let report = histories
                    .get(slot)
                    .find(&iv.random)
                    .is_some_and(|s| s.kind == SeenKind::CrashReport);
                return if report {
                    Err(Rejection::AfterTerminal)
                } else {
                    Ok(Decision::Restart)
                };
            }
            if a.phase() == Phase::Stalled {
                // A stalled agent's exit must come on its current stream: an exit from any
                // other could be a replay of an older session's and would hide the hang.
                return Err(Rejection::NotCurrentStream);
            }
            // The panic hook's own session reporting a crash of a live agent.
            return Ok(Decision::Advance);
        }
        // A stream not seen before: an IV rotation (nonce goes on) or a new session.
        return Ok(if !a.is_dead() && f.nonce() > a.last_nonce {
            Decision::Advance
        } else {
            Decision::Restart
        });
    }
    // Same stream: the window already refused replays; the counter orders datagrams.
    let newer = iv.counter > a.window.highest();
    if a.is_dead() {
        return if f.is_terminal() || !newer {
            Err(Rejection::AfterTerminal)
        } else {
            Ok(Decision::Restart)
        };
    }
    if f.is_terminal() || f.nonce() > a.last_nonce {
        Ok(Decision::Advance)
    } else if !newer {
        Ok(Decision::Reordered)
    } else {
        // The counter went on but the nonce went back: the sender began a new session on
        // the same stream.
        Ok(Decision::Restart)
    }
}

/// Session rules for a plain frame of a known agent (see the module docs).
pub(super) fn decide_plain(
    a: &Agent,
    f: &Frame,
    now: Nanos,
    threshold: Nanos,
) -> Result<Decision, Rejection> {
    let (n, ts) = (f.nonce(), f.timestamp());
    let (last_n, last_ts) = (a.last_nonce, a.last_ts);
    if a.is_dead() {
        // last_ts is the terminal frame's timestamp, last_beat its arrival. A frame stamped
        // no later than the terminal one, arriving soon after it, is a late frame of the dead
        // session (reordered on the way); anything else is a new session.
        let late = ts <= last_ts
            && !far_below(n, last_n, ts, last_ts)
            && now < a.last_beat.saturating_add(threshold);
        return if f.is_terminal() || late {
            Err(Rejection::AfterTerminal)
        } else {
            Ok(Decision::Restart)
        };
    }
    if f.is_terminal() {
        return Ok(Decision::Advance);
    }
    if n > last_n {
        // The same session's clock never goes back (senders clamp it).
        return Ok(if ts >= last_ts {
            Decision::Advance
        } else {
            Decision::Restart
        });
    }
    if n == last_n && ts == last_ts {
        return Err(Rejection::StaleNonce {
            nonce: n,
            last: last_n,
        });
    }
    if ts >= last_ts || n == last_n {
        // Nonce back (or equal) while the clock went on, or the same nonce at another time:
        // not the session we know.
        return Ok(Decision::Restart);
    }
    if a.phase() == Phase::Stalled || far_below(n, last_n, ts, last_ts) {
        return Ok(Decision::Restart);
    }
    Err(Rejection::StaleNonce {
        nonce: n,
        last: last_n,
    })
}

/// Nonce and timestamp both started over: each at most half its last value, and the nonce
/// more than [`REORDER_SLACK`] below the last one.
pub(super) fn far_below(n: u64, last_n: u64, ts: u64, last_ts: u64) -> bool {
    n <= last_n / 2 && ts <= last_ts / 2 && last_n - n > REORDER_SLACK
}
