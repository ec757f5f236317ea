//! Shared harness of the recovery, audit and key tests: the real `varta-watch` binary on its
//! own socket, its JSON event lines and stderr collected, its metrics scraped over HTTP.
#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_varta-watch");

#[path = "../common/varta_tool.rs"]
mod varta_tool;

/// The `varta` tool, whose `agent` subcommand is a real agent process.
pub fn agent_bin() -> std::path::PathBuf {
    varta_tool::beside(std::path::Path::new(BIN))
}

/// CLOCK_MONOTONIC in ns (the clock agents put in frames).
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-rec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

type Lines = Arc<Mutex<Vec<String>>>;

pub struct Observer {
    pub child: Child,
    pub lines: Lines,
    pub errors: Lines,
    pub prom: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    pub socket: PathBuf,
}

fn collect(r: impl Read + Send + 'static, into: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    });
}

impl Observer {
    /// `varta-watch run --socket DIR/s.sock --format json --prom-addr 127.0.0.1:0 ARGS`, with
    /// `envs` added to its environment.
    pub fn start_env(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Observer {
        let socket = dir.join("s.sock");
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--socket")
            .arg(&socket)
            .args(["--format", "json", "--prom-addr", "127.0.0.1:0"])
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.contains("listening"), "observer failed: {first}");
        let errors = Arc::new(Mutex::new(Vec::new()));
        collect(err, Arc::clone(&errors));
        let addr_after = |tag: &str| -> Option<SocketAddr> {
            first
                .split(tag)
                .nth(1)
                .and_then(|s| s.split([',', ';', '/']).next())
                .and_then(|s| s.trim().parse().ok())
        };
        let prom = addr_after("http://");
        let udp = addr_after("udp ");
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), Arc::clone(&lines));
        Observer {
            child,
            lines,
            errors,
            prom,
            udp,
            socket,
        }
    }

    pub fn start(dir: &Path, args: &[&str]) -> Observer {
        Observer::start_env(dir, args, &[])
    }

    /// Waits (up to `secs`) for an event line containing every needle.
    pub fn wait_for(&self, needles: &[&str], secs: u64) -> String {
        wait_in(&self.lines, needles, secs)
    }

    /// Waits for a stderr line containing every needle.
    pub fn wait_stderr(&self, needles: &[&str], secs: u64) -> String {
        wait_in(&self.errors, needles, secs)
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
        let mut s = TcpStream::connect(self.prom.expect("metrics address")).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        body
    }

    pub fn metric(&self, series: &str) -> f64 {
        metric_in(&self.scrape(), series)
    }

    /// Polls the metric until it is at least `want`.
    pub fn wait_metric_at_least(&self, series: &str, want: f64) -> f64 {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(series);
            if v >= want {
                return v;
            }
            assert!(Instant::now() < end, "{series} = {v}, want >= {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A crashing agent (one beat, then a terminal frame): one recovery trigger. Returns its pid.
    pub fn crash_agent(&self) -> u32 {
        let mut c = Command::new(agent_bin())
            .arg("agent")
            .arg("--socket")
            .arg(&self.socket)
            .args(["--interval-ms", "1", "--crash-after", "1"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = c.id();
        assert_eq!(c.wait().unwrap().code(), Some(101));
        pid
    }

    /// SIGTERM, then waits for the exit (bounded: a stuck observer fails the test).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < end, "observer did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_in(lines: &Lines, needles: &[&str], secs: u64) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(l) = lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return l.clone();
        }
        assert!(
            Instant::now() < end,
            "no line with {needles:?}; got {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn metric_in(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
}

pub fn run_bin(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Writes `text` to a new file of mode `mode`.
pub fn write_file(path: &Path, text: &str, mode: u32) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
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
