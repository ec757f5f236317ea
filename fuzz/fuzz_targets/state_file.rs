//! `state_file`: arbitrary bytes as the observer's whole state file (the sections around the
//! tracker codec, `varta_watch::daemon::state`): never a panic; whatever parses and restores
//! encodes again into a file that parses and restores to as many agents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varta_watch::daemon::state;
use varta_watch::tracker::{Tracker, TrackerConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = state::parse(data) else { return };
    let at = state::restore_mapping(&p.clocks, &p.clocks, 1 << 40);
    let Ok(t) = Tracker::restore(TrackerConfig::default(), p.tracker, at) else {
        return;
    };
    let mut again = Vec::new();
    state::encode(&t, at.tracker_now, &p.clocks, p.anchor, &mut again);
    let q = state::parse(&again).expect("a re-encoded state file parses");
    assert_eq!(q.anchor, p.anchor);
    let u = Tracker::restore(TrackerConfig::default(), q.tracker, at).expect("and restores");
    assert_eq!(u.len(), t.len());
});
