//! A real `varta-watch` process for the drop-in tests: started with a command line, its
//! first stderr line read for the addresses it bound, its event lines (JSON) and further
//! stderr lines collected, HTTP requests made to its metrics address.

#![allow(dead_code, reason = "each test file uses part of the harness")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The observer binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_varta-watch");

/// Generous bound of every wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varta-compat-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `text` to `dir/name` with `mode`.
pub fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A running observer.
pub struct Observer {
    pub child: Child,
    pub first: String,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub prom: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
}

/// Runs `varta-watch ARGS --format json` to its exit (for refusals): status and stderr.
pub fn run_to_exit(args: &[String]) -> (ExitStatus, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--format", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Observer {
    /// Starts `varta-watch ARGS --format json` and waits for its `listening` line.
    ///
    /// # Panics
    /// When it exits instead, with its stderr.
    pub fn start(args: &[String]) -> Observer {
        Observer::start_env(args, &[])
    }

    /// [`Observer::start`] with environment variables added.
    pub fn start_env(args: &[String], env: &[(&str, &Path)]) -> Observer {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .args(["--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        if !first.contains("listening") {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            panic!("observer {args:?} failed: {first}{rest}");
        }
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
        let prom = addr_after("http://");
        let udp = addr_after("udp ");
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
            first,
            lines,
            stderr,
            prom,
            udp,
        }
    }

    /// Waits (up to [`WAIT`]) for an event line with every needle.
    pub fn wait_line(&self, needles: &[&str]) -> String {
        wait_until(&format!("event line with {needles:?}"), || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned()
        })
    }

    /// Event lines with every needle so far.
    pub fn count_lines(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits (up to [`WAIT`]) for a stderr line (after the first) containing `needle`.
    pub fn wait_stderr(&self, needle: &str) -> String {
        wait_until(&format!("stderr line with {needle:?}"), || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
    }

    /// `GET path` with an optional bearer token: status code and body.
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http_get(self.prom.expect("metrics address"), path, token)
    }

    /// Waits until `cond` holds on a scrape (made with `token`).
    pub fn wait_scrape(
        &self,
        token: Option<&str>,
        what: &str,
        cond: impl Fn(&str) -> bool,
    ) -> String {
        wait_until(what, || {
            let (code, body) = self.get("/metrics", token);
            (code == 200 && cond(&body)).then_some(body)
        })
    }

    /// Waits (up to [`WAIT`]) for the process to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_until("observer exit", || self.child.try_wait().unwrap())
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it gives a value, at most [`WAIT`].
///
/// # Panics
/// After [`WAIT`], naming `what`.
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 GET: status code and whole response (headers and body).
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let code = body
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body)
}

/// The value of the sample printed exactly as `series` (name and labels).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
