//! `tracker`: arbitrary operation sequences (datagrams of every kind from a few agents,
//! clock advances, timeouts) against varta-watch's sans-I/O tracker; after every operation its
//! invariants must hold (at most one stall per silence run, len <= capacity, poll_timeout is
//! the earliest deadline, no panic). The operation encoding lives beside the tracker, in
//! `varta_watch::tracker::fuzz`, so the unit tests and this target share it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = varta_watch::tracker::fuzz::run(data) {
        panic!("tracker invariant broken: {broken}");
    }
});
