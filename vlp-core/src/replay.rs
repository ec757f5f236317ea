//! The receiver's replay window over the AEAD counter, WireGuard-style.
//!
//! One window per sender stream. It remembers the highest counter committed and a bitmap of
//! the [`WINDOW`] counters at and below it, so datagrams reordered within the window are
//! accepted once, and replays or counters older than the window are refused. A datagram with a
//! different `iv_random` names a new counter stream (a restarted or forked sender, or an IV
//! rotation) and starts a fresh window.
//!
//! Protocol: [`ReplayWindow::check`] *before* decrypting (cheap refusal of floods of replays),
//! [`ReplayWindow::commit`] only after the tag verified (a forged datagram must never move the
//! window).
//!
//! **A window alone does not stop replays of an older stream.** It remembers one stream: an
//! authentic datagram recorded earlier from a *previous* stream (an `iv_random` the window has
//! moved away from) passes [`ReplayWindow::check`], verifies, and [`ReplayWindow::commit`]
//! then resets the window to that old stream, after which the current stream's datagrams are
//! checked against the wrong history. Callers must refuse such datagrams above the window:
//! the observer's tracker keeps the retired stream and refuses datagrams of it, and applies
//! the per-session nonce rule (a frame's nonce must increase within its session), so a
//! replayed old beat is dropped there before the window is committed.

use core::fmt;

use crate::envelope::Iv;

/// How many counters the window spans.
pub const WINDOW: u32 = 128;

/// Why a datagram's counter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReplayError {
    /// This counter was already accepted.
    Replayed {
        /// The counter.
        counter: u32,
    },
    /// The counter is more than [`WINDOW`] below the highest accepted one.
    TooOld {
        /// The counter.
        counter: u32,
        /// The highest accepted counter.
        highest: u32,
    },
}

impl ReplayError {
    /// A stable snake_case name, for metric labels.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            ReplayError::Replayed { .. } => "replayed",
            ReplayError::TooOld { .. } => "too_old",
        }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Replayed { counter } => write!(f, "AEAD counter {counter} replayed"),
            ReplayError::TooOld { counter, highest } => write!(
                f,
                "AEAD counter {counter} is older than the window (highest {highest}, width {WINDOW})"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReplayError {}

/// A sliding bitmap window over one sender's AEAD counters (see the module docs). It tracks a
/// single stream: committing a datagram of any other `iv_random`, an old one included, resets
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayWindow {
    stream: Option<[u8; 8]>,
    highest: u32,
    /// Bit `i` set: counter `highest - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// An empty window: the first datagram of any stream is accepted.
    #[must_use]
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            stream: None,
            highest: 0,
            seen: 0,
        }
    }

    /// Whether `iv` may be accepted. Does not change the window.
    ///
    /// # Errors
    /// [`ReplayError::Replayed`] or [`ReplayError::TooOld`].
    pub fn check(&self, iv: &Iv) -> Result<(), ReplayError> {
        if self.stream != Some(iv.random) || iv.counter > self.highest {
            return Ok(());
        }
        let age = self.highest - iv.counter;
        if age >= WINDOW {
            return Err(ReplayError::TooOld {
                counter: iv.counter,
                highest: self.highest,
            });
        }
        if self.seen & (1u128 << age) != 0 {
            return Err(ReplayError::Replayed {
                counter: iv.counter,
            });
        }
        Ok(())
    }

    /// Records `iv` as accepted. Call only after [`ReplayWindow::check`] passed and the tag
    /// verified. An `iv` of another stream (new *or* previously seen) replaces the window:
    /// refuse replays of retired streams before calling this (see the module docs).
    pub fn commit(&mut self, iv: &Iv) {
        if self.stream != Some(iv.random) {
            self.stream = Some(iv.random);
            self.highest = iv.counter;
            self.seen = 1;
        } else if iv.counter > self.highest {
            let shift = iv.counter - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = iv.counter;
        } else {
            let age = self.highest - iv.counter;
            if age < WINDOW {
                self.seen |= 1u128 << age;
            }
        }
    }

    /// [`ReplayWindow::check`] then [`ReplayWindow::commit`], for callers that have already
    /// authenticated the datagram.
    ///
    /// # Errors
    /// As [`ReplayWindow::check`]; the window is unchanged on error.
    pub fn check_and_commit(&mut self, iv: &Iv) -> Result<(), ReplayError> {
        self.check(iv)?;
        self.commit(iv);
        Ok(())
    }

    /// The highest counter committed on the current stream (0 before any commit).
    #[must_use]
    pub const fn highest(&self) -> u32 {
        self.highest
    }

    /// The stream (`iv_random`) the window currently follows, if any.
    #[must_use]
    pub const fn stream(&self) -> Option<[u8; 8]> {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(c: u32) -> Iv {
        Iv {
            random: [1; 8],
            counter: c,
        }
    }

    #[test]
    fn in_order_reorder_replay_too_old() {
        let mut w = ReplayWindow::new();
        for c in [0, 1, 2, 5, 4, 3] {
            assert_eq!(w.check_and_commit(&iv(c)), Ok(()), "counter {c}");
        }
        assert_eq!(w.check(&iv(4)), Err(ReplayError::Replayed { counter: 4 }));
        w.check_and_commit(&iv(200)).unwrap();
        assert_eq!(
            w.check(&iv(72)),
            Err(ReplayError::TooOld {
                counter: 72,
                highest: 200
            })
        );
        assert_eq!(w.check(&iv(73)), Ok(()));
        // A different iv_random starts over.
        let other = Iv {
            random: [2; 8],
            counter: 4,
        };
        assert_eq!(w.check_and_commit(&other), Ok(()));
        assert_eq!(w.stream(), Some([2; 8]));
    }

    /// The limit the module docs state: a replayed datagram of a retired stream passes the
    /// window and, committed, resets it to that stream (the tracker above must refuse it).
    #[test]
    fn replay_of_an_older_stream_resets_the_window() {
        let mut w = ReplayWindow::new();
        w.check_and_commit(&iv(7)).unwrap();
        let new = Iv {
            random: [2; 8],
            counter: 1,
        };
        w.check_and_commit(&new).unwrap();
        assert_eq!(w.check(&iv(7)), Ok(()), "the old stream is forgotten");
        w.commit(&iv(7));
        assert_eq!(w.stream(), Some([1; 8]));
        assert_eq!(
            w.check(&new),
            Ok(()),
            "and the new stream's history with it"
        );
    }

    #[test]
    fn check_does_not_commit() {
        let mut w = ReplayWindow::new();
        w.check(&iv(9)).unwrap();
        w.check_and_commit(&iv(3)).unwrap();
        assert_eq!(w.check(&iv(9)), Ok(()));
    }
}
