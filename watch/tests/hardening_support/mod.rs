//! What the hardening tests add to the daemon harness (`common/observer.rs`): the daemon
//! started with its stdout wired as the test asks and no output format imposed, and lines
//! awaited in files the daemon writes.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses a part of this module"
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../common/observer.rs"]
mod observer;

pub use observer::{frame, metric_in, mono_ns, tmpdir, Observer, Stdout, BIN};

/// `varta-watch run --socket DIR/s.sock --prom-addr 127.0.0.1:0 ARGS`, stdout as `stdout` says.
pub fn start(dir: &Path, stdout: Stdout, args: &[&str]) -> Observer {
    let socket = dir.join("s.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--socket")
        .arg(&socket)
        .args(["--prom-addr", "127.0.0.1:0"])
        .args(args);
    Observer::spawn(cmd, stdout, Some(socket))
}

/// Lines of `path` (and nothing if it does not exist yet).
pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Waits (at most `bound`) for a line of `path` that has every needle.
pub fn wait_file_line(path: &Path, needles: &[&str], bound: Duration) -> String {
    let end = Instant::now() + bound;
    loop {
        if let Some(l) = file_lines(path)
            .into_iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return l;
        }
        assert!(
            Instant::now() < end,
            "no line with {needles:?} in {} within {bound:?}: {:?}",
            path.display(),
            file_lines(path)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
