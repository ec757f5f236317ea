//! Sessions: how a verified frame of a known agent is taken (a beat, a reordering, a new
//! session, a late frame of a dead one), and the admission of a new identity.

use vlp_core::{Frame, Iv, ReplayError, ReplayWindow};

use super::pipeline::Verified;
use super::table::{tag, Agent, ListId, Phase, Side};
use super::{AcceptKind, Accepted, Event, Nanos, Rejection, Tracker, REORDER_SLACK};

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
            None => self.table.find(tag(v.listener, v.frame.pid())),
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
        let decision = match v.iv {
            Some(iv) => decide_secure(a, &iv, &v.frame, v.prechecked)?,
            None => decide_plain(a, &v.frame, now, self.threshold)?,
        };
        let a = &mut self.table.slab[slot as usize];
        if !v.frame.is_terminal() {
            a.beats += 1;
        }
        if let Some(iv) = v.iv {
            if a.window.stream() == Some(iv.random) {
                a.window.commit(&iv);
            } else if v.frame.is_terminal() {
                // A crash report from the agent's panic hook, which seals with a session of
                // its own: the current stream and its window stay, so the application's own
                // beats are still taken if the process lives on.
                a.set_side(Side::of(&iv));
            } else {
                if let Some(old) = a.window.stream() {
                    a.set_retired(old);
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
        a.set_last_ts(f.timestamp());
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
        if self.table.is_full() {
            // The longest-dead entry makes room; live and stalled agents are never pushed out.
            let Some(victim) = self.table.head(ListId::Dead) else {
                return Err(Rejection::CapacityExceeded);
            };
            self.evict(victim, now);
        }
        let f = v.frame;
        let mut a = Agent::EMPTY;
        a.pid = f.pid();
        a.listener = v.listener;
        a.last_nonce = if f.is_terminal() { 0 } else { f.nonce() };
        a.last_beat = now;
        a.beats = u64::from(!f.is_terminal());
        a.payload = f.payload();
        a.status = f.status().as_u8();
        if let Some(iv) = v.iv {
            a.set_secure();
            if f.is_terminal() {
                // As for a known agent: a terminal frame's stream is a side stream until a
                // regular beat names the session's own (the panic hook may report first).
                a.set_side(Side::of(&iv));
            } else {
                a.window.commit(&iv);
            }
        }
        a.set_last_ts(f.timestamp());
        let agent = a.id();
        let slot = self.table.insert(a);
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
}

/// Replay checks that need no decryption: the window, the retired stream and the side stream.
pub(super) fn precheck(a: &Agent, iv: &Iv) -> Result<(), Rejection> {
    if !a.secure() {
        return Ok(());
    }
    if a.window.stream() != Some(iv.random) {
        if a.retired() == Some(iv.random) {
            return Err(Rejection::RetiredStream);
        }
        if let Some(side) = a.side() {
            if side.fingerprint == Side::fingerprint_of(&iv.random) {
                // The terminal frame taken from this stream again: a replay. Anything sent
                // on it before that terminal frame belongs to a session that has ended.
                if iv.counter == side.counter {
                    return Err(Rejection::Replay(ReplayError::Replayed {
                        counter: iv.counter,
                    }));
                }
                if iv.counter < side.counter {
                    return Err(Rejection::AfterTerminal);
                }
            }
        }
    }
    a.window.check(iv).map_err(Rejection::Replay)
}

/// Session rules for a secure frame of a known agent (see the module docs).
pub(super) fn decide_secure(
    a: &Agent,
    iv: &Iv,
    f: &Frame,
    prechecked: bool,
) -> Result<Decision, Rejection> {
    if !prechecked {
        precheck(a, iv)?;
    }
    let same_stream = a.window.stream() == Some(iv.random);
    if !same_stream {
        if f.is_terminal() && a.is_dead() {
            // A later crash report on the side stream of an agent that is already dead
            // (another thread's panic) says nothing new; on any other stream it is a new
            // session (a recycled pid) that died at once.
            let side = a
                .side()
                .is_some_and(|s| s.fingerprint == Side::fingerprint_of(&iv.random));
            return if side {
                Err(Rejection::AfterTerminal)
            } else {
                Ok(Decision::Restart)
            };
        }
        // A stream not seen before: an IV rotation (nonce goes on), the panic hook's own
        // session reporting a crash of a live agent, or a new session.
        return Ok(
            if !a.is_dead() && (f.is_terminal() || f.nonce() > a.last_nonce) {
                Decision::Advance
            } else {
                Decision::Restart
            },
        );
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
    let (last_n, last_ts) = (a.last_nonce, a.last_ts());
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
