//! What the recovery, audit and key tests add to the daemon harness (`common/observer.rs`):
//! real agent processes that crash, and the processes and pid files recovery commands leave.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses a different part of the harness"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/observer.rs"]
mod observer;
#[path = "../common/varta_tool.rs"]
mod varta_tool;

pub use observer::{mono_ns, run_bin, tmpdir, write_file, Observer, BIN};

/// The `varta` tool, whose `agent` subcommand is a real agent process.
pub fn agent_bin() -> PathBuf {
    varta_tool::beside(Path::new(BIN))
}

/// A crashing agent on `obs`'s socket (one beat, then a terminal frame): one recovery
/// trigger. Returns its pid.
pub fn crash_agent(obs: &Observer) -> u32 {
    let mut c = Command::new(agent_bin())
        .arg("agent")
        .arg("--socket")
        .arg(obs.socket())
        .args(["--interval-ms", "1", "--crash-after", "1"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = c.id();
    assert_eq!(c.wait().unwrap().code(), Some(101));
    pid
}

/// Whether `pid` is gone (no such process, or a zombie waiting for whoever reaps orphans).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|t| t.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits (up to `secs`) for a file to hold a pid.
pub fn read_pid(path: &Path, secs: u64) -> u32 {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(p) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(Instant::now() < end, "{} never held a pid", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}
