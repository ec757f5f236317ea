//! What the state-file and fault tests add to the daemon harness (`common/observer.rs`): the
//! daemon started with the socket the test names, and real `varta agent` processes.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test crate uses its own part of the support module"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[path = "../common/observer.rs"]
mod observer;
#[path = "../common/varta_tool.rs"]
mod varta_tool;

pub use observer::{metric_in, num, tmpdir, Observer, Stdout, BIN, JSON_PROM};

pub fn agent_bin() -> PathBuf {
    varta_tool::beside(Path::new(BIN))
}

/// `kill(pid, sig)`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// `varta-watch run ARGS --format json --prom-addr 127.0.0.1:0`.
pub fn start(args: &[&str]) -> Observer {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").args(args);
    spawn(cmd)
}

/// Starts `cmd` (a `varta-watch run ...` command or a wrapper that execs one) with
/// `--format json --prom-addr 127.0.0.1:0` added, and waits for its "listening" line.
pub fn spawn(mut cmd: Command) -> Observer {
    cmd.args(JSON_PROM);
    Observer::spawn(cmd, Stdout::Read, None)
}

/// Real agent processes (`varta agent`), killed when dropped.
pub struct Agents(pub Vec<Child>);

impl Agents {
    /// Starts one `varta agent --socket SOCKET ARGS`.
    pub fn spawn(&mut self, socket: &Path, args: &[&str]) -> u32 {
        let c = Command::new(agent_bin())
            .arg("agent")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = c.id();
        self.0.push(c);
        pid
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether the agent processes are still running (none exited on an error).
pub fn all_running(agents: &mut Agents) -> bool {
    agents
        .0
        .iter_mut()
        .all(|c| matches!(c.try_wait(), Ok(None)))
}
