//! `replay`: arbitrary sequences of (stream, counter, action) operations against
//! `ReplayWindow` and a plain reference model: the set of counters accepted on the current
//! stream, refused when `WINDOW` or more below the highest or already present, forgotten when
//! another `iv_random` arrives. Every `check` must agree with the model exactly.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use vlp_core::replay::WINDOW;
use vlp_core::{Iv, ReplayError, ReplayWindow};

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
            Ok(())
        } else if highest - iv.counter >= WINDOW {
            Err(ReplayError::TooOld {
                counter: iv.counter,
                highest,
            })
        } else if self.accepted.contains(&iv.counter) {
            Err(ReplayError::Replayed {
                counter: iv.counter,
            })
        } else {
            Ok(())
        }
    }

    fn commit(&mut self, iv: &Iv) {
        if self.stream != Some(iv.random) {
            self.stream = Some(iv.random);
            self.accepted.clear();
        }
        self.accepted.insert(iv.counter);
        // Counters far below the window can never matter again (they are too old for good).
        let highest = *self.accepted.last().expect("just inserted");
        let floor = highest.saturating_sub(2 * WINDOW);
        self.accepted = self.accepted.split_off(&floor);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut w = ReplayWindow::new();
    let mut m = Model::default();
    let mut point: u32 = 0;
    let mut ops = data;
    // Each operation: a tag byte, then a 1-byte (relative) or 4-byte (absolute) counter.
    while let Some((&tag, rest)) = ops.split_first() {
        let stream = [tag & 0x03; 8];
        let absolute = tag & 0x04 != 0;
        let action = (tag >> 3) & 0x03;
        let counter = if absolute {
            let Some((c, rest)) = rest.split_first_chunk::<4>() else {
                break;
            };
            ops = rest;
            u32::from_le_bytes(*c)
        } else {
            let Some((&d, rest)) = rest.split_first() else {
                break;
            };
            ops = rest;
            // Near the moving point: -160..=95, straddling the window's edge.
            point.wrapping_add_signed(i32::from(d as i8) - 32)
        };
        let iv = Iv {
            random: stream,
            counter,
        };
        let got = w.check(&iv);
        assert_eq!(got, m.check(&iv), "check {iv:?}");
        match action {
            // check, then commit if it passed (the receiver's protocol)
            0 | 1 if got.is_ok() => {
                w.commit(&iv);
                m.commit(&iv);
                assert!(w.check(&iv).is_err(), "accepted twice: {iv:?}");
            }
            // check_and_commit
            2 => {
                assert_eq!(w.check_and_commit(&iv), got);
                if got.is_ok() {
                    m.commit(&iv);
                }
            }
            // a bare commit (a caller skipping check): must not panic nor desynchronise
            3 => {
                w.commit(&iv);
                m.commit(&iv);
            }
            _ => {}
        }
        assert_eq!(w.stream(), m.stream);
        if let Some(&h) = m.accepted.last() {
            point = h;
        }
    }
});
