//! `worker_open`: the `tracker` target's operation sequences, every datagram also handed to a
//! twin tracker as receive workers hand it (opened by one of two `Opener`s, some under a stale
//! key generation, then `handle_opened`): outcomes and events must be the same as one by one,
//! and no panic (`varta_watch::tracker::fuzz::run_opened`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = varta_watch::tracker::fuzz::run_opened(data) {
        panic!("worker-opened handling differs: {broken}");
    }
});
