//! What the hardening tests share: the real `varta-watch` binary started with its stdout
//! wired as the test asks, its metrics scraped over HTTP, frames built with `vlp-core`.

#![allow(dead_code)] // reason: each test file uses a part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vlp_core::{Frame, Status};

pub const BIN: &str = env!("CARGO_BIN_EXE_varta-watch");

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-hard-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub fn frame(status: Status, pid: u32, nonce: u64) -> [u8; 32] {
    Frame::new(status, pid, mono_ns(), nonce, 0).unwrap().emit()
}

/// How the observer's stdout is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Read line by line into [`Observer::lines`].
    Read,
    /// A pipe the test holds open and never reads (it fills up and blocks its writer).
    NeverRead,
    /// Discarded.
    Null,
}

pub struct Observer {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub prom: SocketAddr,
    pub udp: Option<SocketAddr>,
    pub socket: PathBuf,
    /// The unread pipe, kept open ([`Stdout::NeverRead`]).
    pub held: Option<ChildStdout>,
}

impl Observer {
    /// `varta-watch run --socket DIR/s.sock --prom-addr 127.0.0.1:0 ARGS`.
    pub fn start(dir: &Path, stdout: Stdout, args: &[&str]) -> Observer {
        let socket = dir.join("s.sock");
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--socket")
            .arg(&socket)
            .args(["--prom-addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(if stdout == Stdout::Null {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.contains("listening"), "observer failed: {first}");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let e2 = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { break };
                e2.lock().unwrap().push(line);
            }
        });
        let addr_after = |tag: &str| -> Option<SocketAddr> {
            first
                .split(tag)
                .nth(1)
                .and_then(|s| s.split([',', ';', '/']).next())
                .and_then(|s| s.trim().parse().ok())
        };
        let prom = addr_after("http://").expect("metrics address");
        let udp = addr_after("udp ");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut held = None;
        match stdout {
            Stdout::Read => {
                let out = child.stdout.take().unwrap();
                let l2 = Arc::clone(&lines);
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        l2.lock().unwrap().push(line);
                    }
                });
            }
            Stdout::NeverRead => held = child.stdout.take(),
            Stdout::Null => {}
        }
        Observer {
            child,
            lines,
            stderr,
            prom,
            udp,
            socket,
            held,
        }
    }

    /// The metrics page, or `None` if it could not be fetched.
    pub fn try_scrape(&self) -> Option<String> {
        let mut s = TcpStream::connect(self.prom).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.starts_with("HTTP/1.1 200").then_some(body)
    }

    pub fn scrape(&self) -> String {
        self.try_scrape().expect("metrics page")
    }

    pub fn metric(&self, series: &str) -> f64 {
        metric_in(&self.scrape(), series)
    }

    /// Polls until `series` reaches at least `want`, for at most `bound`; returns the value.
    pub fn wait_metric_at_least(&self, series: &str, want: f64, bound: Duration) -> f64 {
        let end = Instant::now() + bound;
        loop {
            let v = self.metric(series);
            if v >= want {
                return v;
            }
            assert!(
                Instant::now() < end,
                "{series} = {v}, want >= {want}\n{}",
                self.scrape()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> UnixDatagram {
        let c = UnixDatagram::unbound().unwrap();
        c.connect(&self.socket).unwrap();
        c
    }

    pub fn count(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        self.child.wait().unwrap()
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
