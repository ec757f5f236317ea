//! Shared by the state-file and fault tests: the real observer binary with its stdout (JSON
//! event lines) and stderr collected, real `varta agent` processes, metrics scraped over HTTP.
#![allow(
    dead_code,
    reason = "each test crate uses its own part of the support module"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../common/varta_tool.rs"]
mod varta_tool;

pub const BIN: &str = env!("CARGO_BIN_EXE_varta-watch");

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-state-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn agent_bin() -> PathBuf {
    varta_tool::beside(Path::new(BIN))
}

/// `kill(pid, sig)`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A running observer.
pub struct Observer {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub prom: SocketAddr,
    pub started: Instant,
}

impl Observer {
    /// `varta-watch run ARGS --format json --prom-addr 127.0.0.1:0`.
    pub fn start(args: &[&str]) -> Observer {
        let mut cmd = Command::new(BIN);
        cmd.arg("run").args(args);
        Observer::spawn(cmd)
    }

    /// Starts `cmd` (a `varta-watch run ...` command or a wrapper that execs one) with
    /// `--format json --prom-addr 127.0.0.1:0` added, and waits for its "listening" line.
    pub fn spawn(mut cmd: Command) -> Observer {
        let started = Instant::now();
        let mut child = cmd
            .args(["--format", "json", "--prom-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.contains("listening"), "observer failed: {first}");
        let prom = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.trim().parse().ok())
            .expect("metrics address");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let e2 = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                e2.lock().unwrap().push(line);
            }
        });
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push(line);
            }
        });
        Observer {
            child,
            lines,
            stderr,
            prom,
            started,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (up to `secs`) for an event line containing every needle.
    pub fn wait_for(&self, needles: &[&str], secs: u64) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "no line with {needles:?}; stdout:\n{}\nstderr:\n{}",
                self.lines().join("\n"),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (up to `secs`) for a stderr line containing `needle`.
    pub fn wait_stderr(&self, needle: &str, secs: u64) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "no stderr line with {needle:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn count(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    pub fn scrape(&self) -> String {
        let mut s = TcpStream::connect(self.prom).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        body
    }

    pub fn metric(&self, series: &str) -> f64 {
        metric_in(&self.scrape(), series)
    }

    /// Polls until `series` is at least `want` (up to `secs`); returns its value.
    pub fn wait_metric_at_least(&self, series: &str, want: f64, secs: u64) -> f64 {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let body = self.scrape();
            let v = metric_in(&body, series);
            if v >= want {
                return v;
            }
            assert!(
                Instant::now() < end,
                "{series} = {v}, want >= {want}\n{body}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no snapshot, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        signal(self.child.id(), libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "observer ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        // The reader threads end at EOF; give them a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        (status, self.lines(), self.stderr())
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_in(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
}

/// The integer field `key` of a JSON event line.
pub fn num(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(&format!("\"{key}\":")).nth(1)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
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
