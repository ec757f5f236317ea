//! Test support for the control-socket and status-page tests: the REAL `varta-watch` daemon
//! (started through the shared harness, `common/observer.rs`) and real agent processes (the
//! `varta agent` tool beside it, `common/varta_tool.rs`, started through symbolic links so each
//! has the `comm` that classes match on). Needs `cargo build -p varta-tools` first.

#![allow(
    dead_code,
    reason = "each test file uses a different part of this module"
)]

#[path = "../common/observer.rs"]
pub mod observer;
#[path = "../common/varta_tool.rs"]
pub mod varta_tool;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use observer::Observer;
use varta_watch::control::client::Client;
use varta_watch::control::control_path;
use varta_watch::control::snapshot::StatusSnapshot;

/// The generous bound of every wait here.
pub const BOUND: Duration = Duration::from_secs(20);

/// The real daemon, in a directory of its own that is removed when it is dropped.
pub struct Daemon {
    pub obs: Observer,
    pub dir: PathBuf,
}

impl Daemon {
    /// `varta-watch run --socket DIR/s.sock --format json --prom-addr 127.0.0.1:0
    /// --threshold-ms THRESHOLD ARGS`, with `classes_toml` (`[[class]]` sections), when not
    /// empty, given as its `--config` file. `tag` names the directory (unique per test).
    pub fn start(tag: &str, threshold_ms: u64, classes_toml: &str, args: &[&str]) -> Daemon {
        let dir = observer::tmpdir(tag);
        let threshold = threshold_ms.to_string();
        let mut all = vec!["--threshold-ms", threshold.as_str()];
        let config;
        if !classes_toml.is_empty() {
            config = observer::write_file(&dir.join("watch.toml"), classes_toml, 0o600);
            all.extend(["--config", config.to_str().unwrap()]);
        }
        all.extend(args);
        let obs = Observer::start(&dir, &all);
        Daemon { obs, dir }
    }

    /// The agent socket (`--socket`); the control socket is this plus `.ctl`.
    pub fn socket(&self) -> &Path {
        self.obs.socket()
    }

    /// The control socket's path.
    pub fn control(&self) -> PathBuf {
        control_path(self.socket())
    }

    /// The status page's address (`--prom-addr`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.obs.prom.expect("metrics address"))
    }

    /// Polls the control socket until `pred` holds for a snapshot (bound: [`BOUND`]).
    ///
    /// # Panics
    /// After the bound, naming `what`, with the last snapshot and the daemon's stderr.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&StatusSnapshot) -> bool) -> StatusSnapshot {
        let deadline = Instant::now() + BOUND;
        let mut client = Client::connect(Some(self.socket())).unwrap();
        loop {
            let snap = client.status().unwrap();
            if pred(&snap) {
                return snap;
            }
            assert!(
                Instant::now() < deadline,
                "not within {BOUND:?}: {what}; last snapshot: {snap:#?}\nstderr:\n{}",
                self.obs.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A real agent beating into this daemon every 50 ms, its `comm` being `name`.
    pub fn agent(&self, name: &str) -> Agent {
        Agent::spawn(&self.dir, name, self.socket())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Stopped before its directory goes.
        let _ = self.obs.child.kill();
        let _ = self.obs.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real agent process: `varta agent` run through a symbolic link named `name` in `dir`, so
/// its `comm` (what classes match and names show) is `name`.
pub struct Agent(Child);

impl Agent {
    pub fn spawn(dir: &Path, name: &str, socket: &Path) -> Agent {
        let link = dir.join(name);
        if !link.exists() {
            let varta = varta_tool::beside(Path::new(observer::BIN));
            std::os::unix::fs::symlink(varta, &link).unwrap();
        }
        Agent(
            Command::new(&link)
                .args(["agent", "--interval-ms", "50", "--socket"])
                .arg(socket)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Freezes it (SIGSTOP): it stops beating without exiting.
    pub fn freeze(&self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.0),
            rustix::process::Signal::STOP,
        )
        .unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
