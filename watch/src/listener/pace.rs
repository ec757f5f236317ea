//! How long the loop may leave the Unix socket unread after a turn that read datagrams: few
//! wake-ups for many local agents.
//!
//! Every datagram on the Unix socket carries the kernel's receive time
//! ([`super::RecvBatch::stamp`]), so reading a batch later changes no beat's time and no
//! deadline; what a late read can cost is a full queue. (UDP sockets are not held: they are
//! read when readable, unstamped, so a busy network listener pays nothing for this.) The Unix socket queues only `net.unix.max_dgram_qlen` datagrams (often 10; senders
//! get `EAGAIN` beyond it), so the hold-off is sized from the rate just seen: at `r` datagrams
//! per second, the queue fills a quarter of its room in `room / (4 r)`. Senders are bursty
//! (agents started together beat together), so a turn that found the queue more than a
//! quarter full halves the hold-off at least, and one that found it half full ends hold-offs
//! until the queue is seen emptier (reading on readiness, as without pacing). The hold-off is at most
//! `max_hold`, never past the next deadline (the shell caps it; a deadline reads every socket
//! before it fires), and none after a turn that read nothing (an idle observer sleeps on its
//! sockets) or hit the per-turn bound (a flood is read flat out). Sans-I/O: time is an input.

/// Default longest hold-off (`--max-hold-us`): events (new agent, recovery) leave at most this
/// much after their datagram was received; their times are the datagrams' own.
pub const MAX_HOLD_NS: u64 = 4_000_000;

/// The hold-off state (see the module docs).
#[derive(Debug, Clone)]
pub struct Pace {
    /// Datagrams the smallest receive queue holds.
    room: u64,
    max_hold: u64,
    last_turn: Option<u64>,
    /// The last hold-off given.
    hold: u64,
}

impl Pace {
    /// A pace for sockets whose smallest queue holds `room` datagrams; `max_hold` 0 turns
    /// hold-offs off.
    #[must_use]
    pub fn new(room: u64, max_hold: u64) -> Pace {
        Pace {
            room,
            max_hold,
            last_turn: None,
            hold: 0,
        }
    }

    /// The room of the Unix socket's queue, `net.unix.max_dgram_qlen` (read from `/proc`;
    /// 10, the kernel's default, when it cannot be read).
    #[must_use]
    pub fn unix_room() -> u64 {
        std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(10)
    }

    /// After a turn at `now` that read `n` datagrams (`busy`: it hit the per-turn bound): how
    /// long to leave the sockets unread, ns (0: wait on them as usual).
    pub fn after_turn(&mut self, now: u64, n: u64, busy: bool) -> u64 {
        let since = now.saturating_sub(self.last_turn.unwrap_or(now));
        self.last_turn = Some(now);
        let quarter = (self.room / 4).max(1);
        self.hold = if busy || n == 0 || self.max_hold == 0 || since == 0 || n >= 2 * quarter {
            0
        } else {
            // Time for a quarter of the room to fill at this turn's rate: quarter / (n / since).
            let fill = u128::from(quarter) * u128::from(since) / u128::from(n);
            let fill = u64::try_from(fill).unwrap_or(u64::MAX).min(self.max_hold);
            if n > quarter {
                fill.min(self.hold / 2)
            } else {
                fill
            }
        };
        self.hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn hold_off_keeps_the_queue_three_quarters_empty_at_the_rate_seen() {
        // 512 datagrams of room, 10,000 datagrams/s: a quarter fills in 12.8 ms; capped.
        let mut p = Pace::new(512, MAX_HOLD_NS);
        assert_eq!(
            p.after_turn(100 * MS, 3, false),
            0,
            "first turn: no rate yet"
        );
        assert_eq!(p.after_turn(101 * MS, 10, false), MAX_HOLD_NS);
        // The default queue of 10 (a quarter: 2) at 2,000 datagrams/s: 1 ms.
        let mut p = Pace::new(10, MAX_HOLD_NS);
        p.after_turn(0, 1, false);
        assert_eq!(p.after_turn(MS, 2, false), MS);
        // Slower senders, longer hold-offs.
        assert_eq!(p.after_turn(2 * MS, 1, false), 2 * MS);
    }

    #[test]
    fn a_filling_queue_halves_the_hold_off_and_a_half_full_one_ends_it() {
        let mut p = Pace::new(512, MAX_HOLD_NS);
        p.after_turn(0, 1, false);
        assert_eq!(p.after_turn(MS, 10, false), MAX_HOLD_NS);
        // A burst: 200 read (over a quarter) after a 4 ms hold-off, a rate that alone would
        // allow 2.56 ms; halved instead.
        let t = MS + MAX_HOLD_NS;
        assert_eq!(p.after_turn(t, 200, false), MAX_HOLD_NS / 2);
        // Half full: read on readiness.
        assert_eq!(p.after_turn(t + MS, 256, false), 0);
        // Back to a calm rate.
        assert_eq!(p.after_turn(t + 2 * MS, 10, false), MAX_HOLD_NS);
    }

    #[test]
    fn no_hold_off_when_idle_flooded_or_off() {
        let mut p = Pace::new(512, MAX_HOLD_NS);
        p.after_turn(0, 1, false);
        assert_eq!(p.after_turn(MS, 0, false), 0, "nothing read");
        assert_eq!(p.after_turn(2 * MS, 1024, true), 0, "per-turn bound hit");
        let mut off = Pace::new(512, 0);
        off.after_turn(0, 1, false);
        assert_eq!(off.after_turn(MS, 10, false), 0);
        // Time going back never panics.
        assert_eq!(p.after_turn(0, 10, false), 0);
    }
}
