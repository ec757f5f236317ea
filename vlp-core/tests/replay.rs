//! The receiver's replay window: every counter exactly once under reordering within the
//! window, replays and too-old counters refused, new `iv_random` starts over; checked against
//! a reference model (a set of accepted counters per stream).

use std::collections::BTreeSet;

use proptest::prelude::*;
use vlp_core::replay::WINDOW;
use vlp_core::{Iv, ReplayError, ReplayWindow};

fn iv(stream: u8, counter: u32) -> Iv {
    Iv {
        random: [stream; 8],
        counter,
    }
}

/// The rule, written plainly: a set of accepted counters for the current stream and the
/// highest of them. A counter is refused if it is `WINDOW` or more below the highest (too old)
/// or already in the set (replayed); a new stream forgets everything.
#[derive(Default)]
struct Model {
    stream: Option<[u8; 8]>,
    accepted: BTreeSet<u32>,
}

impl Model {
    fn check(&self, iv: &Iv) -> Result<(), ReplayError> {
        if self.stream != Some(iv.random) {
            return Ok(());
        }
        let highest = *self
            .accepted
            .last()
            .expect("a followed stream has a counter");
        if iv.counter > highest {
            return Ok(());
        }
        if highest - iv.counter >= WINDOW {
            return Err(ReplayError::TooOld {
                counter: iv.counter,
                highest,
            });
        }
        if self.accepted.contains(&iv.counter) {
            return Err(ReplayError::Replayed {
                counter: iv.counter,
            });
        }
        Ok(())
    }

    fn commit(&mut self, iv: &Iv) {
        if self.stream != Some(iv.random) {
            self.stream = Some(iv.random);
            self.accepted.clear();
        }
        self.accepted.insert(iv.counter);
    }
}

#[test]
fn window_is_at_least_64() {
    const { assert!(WINDOW >= 64) };
}

#[test]
fn first_datagram_of_any_counter_accepted() {
    for c in [0, 1, 2, WINDOW, u32::MAX - 1, u32::MAX] {
        let w = ReplayWindow::new();
        assert_eq!(w.check(&iv(1, c)), Ok(()));
        assert_eq!(w.stream(), None);
    }
    assert_eq!(ReplayWindow::default(), ReplayWindow::new());
}

#[test]
fn replayed_and_too_old_errors() {
    let mut w = ReplayWindow::new();
    w.check_and_commit(&iv(1, 1000)).unwrap();
    assert_eq!(
        w.check_and_commit(&iv(1, 1000)),
        Err(ReplayError::Replayed { counter: 1000 })
    );
    // Oldest still inside the window, then the first one outside.
    let oldest = 1000 - (WINDOW - 1);
    assert_eq!(w.check(&iv(1, oldest)), Ok(()));
    assert_eq!(
        w.check(&iv(1, oldest - 1)),
        Err(ReplayError::TooOld {
            counter: oldest - 1,
            highest: 1000
        })
    );
    assert_eq!(
        w.check(&iv(1, 0)),
        Err(ReplayError::TooOld {
            counter: 0,
            highest: 1000
        })
    );
    // A refused check leaves the window as it was.
    let before = w;
    assert!(w.check_and_commit(&iv(1, 0)).is_err());
    assert_eq!(w, before);
    assert_eq!(ReplayError::Replayed { counter: 1 }.kind(), "replayed");
    assert_eq!(
        ReplayError::TooOld {
            counter: 1,
            highest: 2
        }
        .kind(),
        "too_old"
    );
    let s = ReplayError::TooOld {
        counter: 5,
        highest: 900,
    }
    .to_string();
    assert!(s.contains('5') && s.contains("900"), "{s}");
}

#[test]
fn counter_zero_and_one_starts_both_accepted() {
    // Python senders start at 0, Rust senders at 1 (§3).
    for start in [0u32, 1] {
        let mut w = ReplayWindow::new();
        for c in start..start + 300 {
            assert_eq!(w.check_and_commit(&iv(1, c)), Ok(()), "{c}");
        }
    }
}

#[test]
fn jump_beyond_window_forgets_old_bits() {
    let mut w = ReplayWindow::new();
    for c in 0..10 {
        w.check_and_commit(&iv(1, c)).unwrap();
    }
    w.check_and_commit(&iv(1, 10 + WINDOW * 3)).unwrap();
    // Everything below the new window is too old, everything inside it (but the top) is new.
    for c in 0..10 {
        assert!(matches!(
            w.check(&iv(1, c)),
            Err(ReplayError::TooOld { .. })
        ));
    }
    for c in 10 + WINDOW * 2 + 1..10 + WINDOW * 3 {
        assert_eq!(w.check(&iv(1, c)), Ok(()), "{c}");
    }
}

#[test]
fn counters_near_u32_max() {
    let mut w = ReplayWindow::new();
    let top = u32::MAX;
    for c in (top - 200..=top).rev().step_by(3) {
        // Descending: only the first WINDOW counters below the first one are accepted.
        let r = w.check_and_commit(&iv(1, c));
        if top - c < WINDOW {
            assert_eq!(r, Ok(()), "{c}");
        } else {
            assert!(matches!(r, Err(ReplayError::TooOld { .. })), "{c}");
        }
    }
    assert_eq!(
        w.check(&iv(1, top)),
        Err(ReplayError::Replayed { counter: top })
    );
}

#[test]
fn new_stream_starts_a_fresh_window_and_old_stream_is_forgotten() {
    let mut w = ReplayWindow::new();
    w.check_and_commit(&iv(1, 500)).unwrap();
    // A new iv_random with a low counter: a restarted sender.
    assert_eq!(w.check_and_commit(&iv(2, 1)), Ok(()));
    assert_eq!(w.stream(), Some([2; 8]));
    assert_eq!(
        w.check(&iv(2, 1)),
        Err(ReplayError::Replayed { counter: 1 })
    );
    // Switching back is a new stream again (the tracker's nonce rule handles stale replays).
    assert_eq!(w.check(&iv(1, 500)), Ok(()));
}

/// `commit` alone (no `check`) with a too-old counter neither panics nor changes what is
/// accepted.
#[test]
fn commit_of_too_old_counter_is_harmless() {
    let mut w = ReplayWindow::new();
    w.commit(&iv(1, 1000));
    w.commit(&iv(1, 3));
    assert_eq!(
        w.check(&iv(1, 1000)),
        Err(ReplayError::Replayed { counter: 1000 })
    );
    assert_eq!(w.check(&iv(1, 999)), Ok(()));
}

/// Arrival orders of `base..base + n` in which no counter arrives `WINDOW` or more behind the
/// highest already seen: sort by `counter + jitter`, jitter in `0..WINDOW`. (Counter `c`
/// arrives after `d` only if `d + j_d <= c + j_c`, so `d - c < WINDOW`.)
fn reordered_within_window() -> impl Strategy<Value = Vec<u32>> {
    (
        prop_oneof![Just(0u32), Just(1), any::<u32>().prop_map(|b| b / 2)],
        1usize..600,
    )
        .prop_flat_map(|(base, n)| {
            proptest::collection::vec(0..WINDOW, n).prop_map(move |jitter| {
                let mut order: Vec<(u64, u32)> = jitter
                    .iter()
                    .enumerate()
                    .map(|(i, &j)| (i as u64 + u64::from(j), base + i as u32))
                    .collect();
                order.sort();
                order.into_iter().map(|(_, c)| c).collect()
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every counter of a stream reordered within the window is accepted exactly once, and
    /// every second arrival of it is refused.
    #[test]
    fn reordering_within_width_accepts_each_exactly_once(order in reordered_within_window()) {
        let mut w = ReplayWindow::new();
        for &c in &order {
            prop_assert_eq!(w.check_and_commit(&iv(7, c)), Ok(()), "counter {}", c);
            prop_assert!(w.check(&iv(7, c)).is_err(), "immediate replay of {}", c);
        }
        // Afterwards every counter is refused: replayed inside the window, too old below it.
        let highest = *order.iter().max().unwrap();
        for &c in &order {
            let want = if highest - c < WINDOW {
                ReplayError::Replayed { counter: c }
            } else {
                ReplayError::TooOld { counter: c, highest }
            };
            prop_assert_eq!(w.check(&iv(7, c)), Err(want));
        }
    }

    /// Any permutation of at most WINDOW consecutive counters, with duplicates sprinkled in:
    /// the first arrival of each is accepted, every later one is `Replayed`.
    #[test]
    fn any_permutation_with_duplicates(
        base in any::<u32>().prop_map(|b| b / 2),
        perm in Just((0..WINDOW).collect::<Vec<u32>>()).prop_shuffle(),
        dups in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..200),
    ) {
        let mut order: Vec<u32> = perm.iter().map(|&c| base + c).collect();
        for (what, at) in dups {
            let c = order[what.index(order.len())];
            let at = at.index(order.len() + 1);
            order.insert(at, c);
        }
        let mut w = ReplayWindow::new();
        let mut seen = BTreeSet::new();
        for &c in &order {
            let r = w.check_and_commit(&iv(3, c));
            if seen.insert(c) {
                prop_assert_eq!(r, Ok(()), "first arrival of {}", c);
            } else {
                prop_assert_eq!(r, Err(ReplayError::Replayed { counter: c }));
            }
        }
        prop_assert_eq!(seen.len() as u32, WINDOW);
    }

    /// Arbitrary operations (check, commit after a passing check, bare check) over a few
    /// streams and counters clustered around a moving point agree exactly with the model; in
    /// particular no counter `WINDOW` or more below the highest is ever accepted.
    #[test]
    fn agrees_with_reference_model(
        ops in proptest::collection::vec((0u8..3, -300i64..300, any::<bool>()), 1..800),
        start in prop_oneof![Just(0u32), Just(u32::MAX - 400), any::<u32>()],
    ) {
        let mut w = ReplayWindow::new();
        let mut m = Model::default();
        let mut point = i64::from(start);
        for (stream, delta, commit) in ops {
            let c = (point + delta).clamp(0, i64::from(u32::MAX)) as u32;
            let x = iv(stream, c);
            let got = w.check(&x);
            prop_assert_eq!(got, m.check(&x), "check {:?}", x);
            if let Some(highest) = m.accepted.last() {
                if m.stream == Some(x.random) && *highest >= c && highest - c >= WINDOW {
                    prop_assert!(got.is_err());
                }
            }
            if got.is_ok() && commit {
                w.commit(&x);
                m.commit(&x);
                point = point.max(i64::from(c));
            }
            prop_assert_eq!(w.stream(), m.stream);
        }
    }
}
