//! What the drop-in tests add to the daemon harness (`common/observer.rs`): command lines given
//! whole (`--format json` added), one generous bound for every wait, and files made in a
//! directory.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses part of the harness"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

#[path = "../common/observer.rs"]
mod observer;

pub use observer::{http_get, sample, tmpdir, Observer, Stdout, BIN, WAIT};

/// Writes `text` to `dir/name` with exactly `mode`.
pub fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    observer::write_file(&dir.join(name), text, mode)
}

/// Runs `varta-watch ARGS --format json` to its exit (for refusals): status and stderr.
pub fn run_to_exit(args: &[String]) -> (ExitStatus, String) {
    let mut all = args.to_vec();
    all.extend(["--format".into(), "json".into()]);
    let out = observer::run_bin(&all);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `varta-watch ARGS --format json` with environment variables added.
pub fn start_env(args: &[String], env: &[(&str, &Path)]) -> Observer {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .envs(env.iter().copied())
        .args(["--format", "json"]);
    Observer::spawn(cmd, Stdout::Read, None)
}

/// Polls `f` until it gives a value, at most [`WAIT`].
///
/// # Panics
/// After [`WAIT`], naming `what`.
pub fn wait_until<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    observer::wait_until(what, WAIT, f)
}
