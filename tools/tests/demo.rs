//! The README's first command, `cargo run --release -p varta-tools -- demo`, shows a newcomer every kind of event within
//! its ten seconds: agents appearing, a stall, its recovery, a crash, and clean goodbyes.

use std::process::Command;

use serde_json::Value;

#[test]
fn demo_shows_beats_stall_recovery_crash_and_goodbye() {
    let out = Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(["demo", "--format", "json"])
        .output()
        .expect("varta demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let pids_of = |kind: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .filter_map(|e| e["pid"].as_u64())
            .collect()
    };
    let new = pids_of("new");
    assert!(new.len() >= 3, "three agents announced: {events:?}");
    let stalled = pids_of("stall");
    assert_eq!(
        stalled.len(),
        1,
        "exactly one stall (the hanging agent): {events:?}"
    );
    assert_eq!(
        pids_of("recovered"),
        stalled,
        "the stalled agent recovers after the recovery command resumes it"
    );
    let crashed = pids_of("crash");
    assert_eq!(crashed.len(), 1, "one crash: {events:?}");
    assert_ne!(
        crashed, stalled,
        "the crashing agent is not the hanging one"
    );
    assert!(
        !stalled.iter().any(|p| crashed.contains(p)),
        "no stall follows the crash report"
    );
    assert!(
        pids_of("goodbye").len() >= 2,
        "agents that end cleanly say goodbye: {events:?}"
    );
    // The stall is dated at its exact deadline: the last beat plus the demo's 1 s threshold.
    let stall = events.iter().find(|e| e["kind"] == "stall").unwrap();
    assert_eq!(
        stall["at_ns"].as_u64().unwrap(),
        stall["last_beat_ns"].as_u64().unwrap() + 1_000_000_000,
        "{stall}"
    );
}
