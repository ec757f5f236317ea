//! The one harness of the daemon integration tests: the real `varta-watch` binary started as
//! a child process, its first stderr line read for the addresses it bound, its stdout (JSON
//! event lines) and later stderr lines collected by reader threads, its metrics fetched over a
//! plain HTTP/1.1 request, and the process killed when the handle is dropped. Test files include
//! it with `#[path = "common/observer.rs"] mod observer;`.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The observer binary under test: `varta-watch` in the observer's tests; in the tools' tests
/// (which include this file too), `varta`, whose `observe` subcommand is the same daemon.
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_varta-watch") {
    Some(bin) => bin,
    None => match option_env!("CARGO_BIN_EXE_varta") {
        Some(bin) => bin,
        None => panic!("neither varta-watch nor varta is a binary of this package"),
    },
};

/// The subcommand of [`BIN`] that runs the daemon.
const RUN: &str = if option_env!("CARGO_BIN_EXE_varta-watch").is_some() {
    "run"
} else {
    "observe"
};

/// The generous default bound of a wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// The arguments [`Observer::start`] adds: JSON event lines and a metrics port the kernel picks.
pub const JSON_PROM: [&str; 4] = ["--format", "json", "--prom-addr", "127.0.0.1:0"];

/// A fresh, empty directory under the system temp dir, unique to this test process.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `text` to `path` (created or truncated), then sets exactly `mode` (not masked by the
/// umask, so tests can make deliberately unsafe files).
pub fn write_file(path: &Path, text: &str, mode: u32) -> PathBuf {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

/// `CLOCK_MONOTONIC` in ns (the clock agents put in frames).
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A plaintext frame stamped now.
pub fn frame(status: vlp_core::Status, pid: u32, nonce: u64) -> [u8; 32] {
    vlp_core::Frame::new(status, pid, mono_ns(), nonce, 0)
        .unwrap()
        .emit()
}

/// Runs `varta-watch ARGS` to its exit.
pub fn run_bin<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Polls `f` every 10 ms until it gives a value, at most `timeout`.
///
/// # Panics
/// After `timeout`, naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out ({timeout:?}) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The value of the sample printed exactly as `series` (name and labels), if present.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// [`sample`] of a series that must be present.
///
/// # Panics
/// When it is absent, with the page.
pub fn metric_in(body: &str, series: &str) -> f64 {
    sample(body, series).unwrap_or_else(|| panic!("no series {series} in\n{body}"))
}

/// The integer field `key` of a JSON event line.
pub fn num(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(&format!("\"{key}\":")).nth(1)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One HTTP/1.1 request (`body`: a JSON body to POST; none: a GET) with an optional bearer
/// token: status code and whole response.
///
/// # Errors
/// When the connection or the read fails.
fn http(
    addr: SocketAddr,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(WAIT))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let (method, content) = match body {
        Some(b) => (
            "POST",
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ),
        ),
        None => ("GET", String::new()),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}{content}Connection: close\r\n\r\n{}",
        body.unwrap_or("")
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, out))
}

/// `GET path` with an optional bearer token: status code and whole response.
///
/// # Errors
/// When the connection or the read fails.
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> io::Result<(u16, String)> {
    http(addr, path, None, token)
}

/// `POST path` with a JSON `body` and an optional bearer token: status code and whole response.
///
/// # Errors
/// When the connection or the read fails.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> io::Result<(u16, String)> {
    http(addr, path, Some(body), token)
}

/// How the observer's stdout is handled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stdout {
    /// Read line by line (see [`Observer::lines`]).
    Read,
    /// A pipe the test holds open and never reads (it fills up and blocks its writer).
    NeverRead,
    /// Discarded.
    Null,
}

type Shared<T> = Arc<Mutex<Vec<T>>>;

/// A running observer, killed when dropped.
pub struct Observer {
    pub child: Child,
    /// Its first stderr line (the `listening` line).
    pub first: String,
    pub prom: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    /// When it was spawned.
    pub started: Instant,
    socket: Option<PathBuf>,
    lines: Shared<(Instant, String)>,
    stderr: Shared<String>,
    readers: Vec<JoinHandle<()>>,
    /// The unread pipe, kept open ([`Stdout::NeverRead`]).
    held: Option<ChildStdout>,
}

fn collect<T: Send + 'static>(
    r: impl Read + Send + 'static,
    into: Shared<T>,
    wrap: fn(String) -> T,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(wrap(line));
        }
    })
}

fn has_all(line: &str, needles: &[&str]) -> bool {
    needles.iter().all(|n| line.contains(n))
}

impl Observer {
    /// `varta-watch run --socket DIR/s.sock --format json --prom-addr 127.0.0.1:0 ARGS` (`varta
    /// observe ...` in the tools' tests).
    pub fn start(dir: &Path, args: &[&str]) -> Observer {
        Observer::start_env(dir, args, &[] as &[(&str, &str)])
    }

    /// [`Observer::start`] with environment variables added.
    pub fn start_env<V: AsRef<OsStr>>(dir: &Path, args: &[&str], envs: &[(&str, V)]) -> Observer {
        let socket = dir.join("s.sock");
        let mut cmd = Command::new(BIN);
        cmd.arg(RUN)
            .arg("--socket")
            .arg(&socket)
            .args(JSON_PROM)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v)));
        Observer::spawn(cmd, Stdout::Read, Some(socket))
    }

    /// `varta-watch ARGS --format json`: the whole command line is the test's.
    pub fn start_raw<S: AsRef<OsStr>>(args: &[S]) -> Observer {
        let mut cmd = Command::new(BIN);
        cmd.args(args).args(["--format", "json"]);
        Observer::spawn(cmd, Stdout::Read, None)
    }

    /// Starts `cmd` (a `varta-watch` command, or a wrapper that execs one) as it is, and waits
    /// for its `listening` line; `socket` is the Unix socket it serves, if the test knows it.
    ///
    /// # Panics
    /// When it exits instead, with its stderr.
    pub fn spawn(mut cmd: Command, stdout: Stdout, socket: Option<PathBuf>) -> Observer {
        let started = Instant::now();
        let mut child = cmd
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
        if !first.contains("listening") {
            // Stopped first, so that reading the rest of its stderr cannot hang the test.
            let _ = child.kill();
            let _ = child.wait();
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            panic!("observer {cmd:?} failed: {first}{rest}");
        }
        let addr_after = |tag: &str| -> Option<SocketAddr> {
            first
                .split(tag)
                .nth(1)
                .and_then(|s| s.trim_start().split([',', ';', '/', ' ']).next())
                .and_then(|s| s.trim().parse().ok())
        };
        let prom = addr_after("http://");
        let udp = addr_after("udp ");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = vec![collect(err, Arc::clone(&stderr), |l| l)];
        let mut held = None;
        match stdout {
            Stdout::Read => readers.push(collect(
                child.stdout.take().unwrap(),
                Arc::clone(&lines),
                |l| (Instant::now(), l),
            )),
            Stdout::NeverRead => held = child.stdout.take(),
            Stdout::Null => {}
        }
        Observer {
            child,
            first,
            prom,
            udp,
            started,
            socket,
            lines,
            stderr,
            readers,
            held,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The Unix socket it serves.
    pub fn socket(&self) -> &Path {
        self.socket.as_deref().expect("observer socket")
    }

    /// A datagram socket connected to [`Observer::socket`].
    pub fn client(&self) -> UnixDatagram {
        let c = UnixDatagram::unbound().unwrap();
        c.connect(self.socket()).unwrap();
        c
    }

    /// The event lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Event lines with every needle so far.
    pub fn count(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| has_all(l, needles))
            .count()
    }

    /// Waits (up to `timeout`) for an event line with every needle; returns it with the time
    /// the reader thread took it.
    pub fn wait_for_timed(&self, needles: &[&str], timeout: Duration) -> (Instant, String) {
        let end = Instant::now() + timeout;
        loop {
            if let Some(x) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| has_all(l, needles))
            {
                return x.clone();
            }
            assert!(
                Instant::now() < end,
                "no line with {needles:?} within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                self.lines().join("\n"),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (up to `timeout`) for an event line with every needle.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        self.wait_for_timed(needles, timeout).1
    }

    /// The stderr lines after the first, joined.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (up to `timeout`) for a stderr line (after the first) with every needle.
    pub fn wait_stderr(&self, needles: &[&str], timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| has_all(l, needles))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "no stderr line with {needles:?} within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `GET path` on the metrics address with an optional bearer token: code and response.
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http_get(self.prom.expect("metrics address"), path, token).unwrap()
    }

    /// `POST path` with a JSON body on the observer's HTTP address.
    pub fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
        http_post(self.prom.expect("metrics address"), path, body, token).unwrap()
    }

    /// The metrics page, or `None` if it could not be fetched with a 200.
    pub fn try_scrape(&self) -> Option<String> {
        let (code, body) = http_get(self.prom?, "/metrics", None).ok()?;
        (code == 200).then_some(body)
    }

    /// The metrics page.
    ///
    /// # Panics
    /// Unless it comes with a 200.
    pub fn scrape(&self) -> String {
        let (code, body) = self.get("/metrics", None);
        assert_eq!(code, 200, "{body}");
        body
    }

    /// The value of `series` (name plus labels as printed), if present.
    pub fn try_metric(&self, series: &str) -> Option<f64> {
        sample(&self.scrape(), series)
    }

    /// The value of a present `series`.
    pub fn metric(&self, series: &str) -> f64 {
        metric_in(&self.scrape(), series)
    }

    /// Polls the metrics page until `cond` holds on it (a page that cannot be fetched does
    /// not), for at most `timeout`; returns that page.
    pub fn wait_scrape(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&str) -> bool,
    ) -> String {
        let end = Instant::now() + timeout;
        loop {
            let body = self.try_scrape();
            if let Some(body) = body.as_ref().filter(|b| cond(b)) {
                return body.clone();
            }
            assert!(
                Instant::now() < end,
                "timed out ({timeout:?}) waiting for {what}; last page:\n{}\nstderr:\n{}",
                body.unwrap_or_default(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until `series` satisfies `ok` (an absent series does not), for at most
    /// `timeout`; returns its value.
    fn wait_metric_by(
        &self,
        series: &str,
        want: &str,
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let what = format!("{series} {want}");
        let body = self.wait_scrape(&what, timeout, |b| sample(b, series).is_some_and(&ok));
        metric_in(&body, series)
    }

    /// Polls until `series` equals `want` (the loop handles datagrams asynchronously).
    pub fn wait_metric(&self, series: &str, want: f64, timeout: Duration) {
        self.wait_metric_by(series, &format!("= {want}"), timeout, |v| v == want);
    }

    /// Polls until `series` is at least `want`; returns its value.
    pub fn wait_metric_at_least(&self, series: &str, want: f64, timeout: Duration) -> f64 {
        self.wait_metric_by(series, &format!(">= {want}"), timeout, |v| v >= want)
    }

    /// Waits (up to `timeout`) for the process to exit on its own, then for the reader threads
    /// to take its last lines.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_until("observer exit", timeout, || self.child.try_wait().unwrap());
        // The readers end at EOF; a process the observer started may hold the pipes longer,
        // so this wait is bounded and not an assertion.
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end && !self.readers.iter().all(JoinHandle::is_finished) {
            std::thread::sleep(Duration::from_millis(5));
        }
        status
    }

    /// SIGTERM, then waits (bounded: a stuck observer fails the test) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        self.wait_exit(Duration::from_secs(20))
    }

    /// Sends `sig` to the observer.
    pub fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig).unwrap();
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a key file as the observer wants it: hex and a newline, mode 0600.
pub fn write_key(path: &Path, hex: &str) {
    write_file(path, &format!("{hex}\n"), 0o600);
}
