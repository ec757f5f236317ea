//! Shared by the operations tests (`watch/tests/ops_*.rs`): the operations stack on loopback
//! (webhook receiver, real Alertmanager and Prometheus, the real daemon, real agents), whose one
//! definition lives with the alert-latency benchmark in `tools/src/bench/alert/stack.rs`, and
//! here what the tests add: the binaries Cargo built and the repository's `deploy/` files.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a different subset"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[path = "../../../tools/src/bench/alert/stack.rs"]
mod stack;
#[path = "../common/varta_tool.rs"]
mod varta_tool;

pub use stack::{
    free_port, http_get, tmpdir, wait, Agent, Alertmanager, Observer as Daemon, Prometheus, Webhook,
};

/// The `varta-watch` binary Cargo built for these tests.
pub fn varta_watch() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_varta-watch"))
}

/// The repository root (its `deploy/` files are under test).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real daemon (`varta-watch run`) and the `varta` tool beside it for agents.
pub fn programs() -> stack::Programs {
    let watch = varta_watch();
    stack::Programs {
        varta: varta_tool::beside(&watch),
        observer: (watch, vec!["run".into()]),
    }
}

/// Starts the real daemon with `args` (see [`stack::Observer::start`]).
pub fn daemon(dir: &Path, args: &[&str]) -> Daemon {
    Daemon::start(&programs(), dir, args, &[])
}

/// [`daemon`] with extra environment variables.
pub fn daemon_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Daemon {
    Daemon::start(&programs(), dir, args, env)
}

/// The shipped Alertmanager routing, pointed at `webhook` (see [`stack::write_am_config`]).
pub fn write_am_config(dir: &Path, webhook: &Webhook) -> PathBuf {
    stack::write_am_config(&repo_root(), dir, webhook)
}

/// A real Prometheus with the shipped rules (see [`stack::Prometheus::start`]).
pub fn prometheus(
    dir: &Path,
    targets: &[SocketAddr],
    alertmanagers: &[&Alertmanager],
) -> Prometheus {
    Prometheus::start(&repo_root(), dir, targets, alertmanagers)
}
