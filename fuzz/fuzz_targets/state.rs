//! `state`: arbitrary bytes as an observer state file (and as the body of one with a valid
//! checksum) for varta-watch's `Tracker::restore`: never a panic; whatever loads holds the
//! table's invariants and snapshots to a fixpoint. The harness lives beside the codec, in
//! `varta_watch::tracker::fuzz::restore`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = varta_watch::tracker::fuzz::restore(data) {
        panic!("state file invariant broken: {broken}");
    }
});
