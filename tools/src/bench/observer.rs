//! The observer under measurement: a child process (this binary's `observe`, or another
//! build's `varta-watch`), pinned to the observer CPU, read through `/proc` and its metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::sys;

/// Which program runs the observer.
#[derive(Debug, Clone)]
pub struct ObserverExe {
    program: PathBuf,
    /// `observe` for this binary; nothing for `varta-watch`, whose default command runs it.
    prefix: Vec<&'static str>,
}

impl ObserverExe {
    /// This binary's linked-in observer, or `varta-watch` at `path`.
    #[must_use]
    pub fn new(own: &Path, other: Option<&Path>) -> ObserverExe {
        match other {
            Some(p) => ObserverExe {
                program: p.to_path_buf(),
                prefix: Vec::new(),
            },
            None => ObserverExe {
                program: own.to_path_buf(),
                prefix: vec!["observe"],
            },
        }
    }

    /// What the report names.
    #[must_use]
    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            self.program.display().to_string()
        } else {
            "the observer linked into this binary (varta-watch's code, this build)".into()
        }
    }
}

/// A running observer.
pub struct Observer {
    /// The child.
    pub child: Child,
    /// Its metrics endpoint.
    pub prom: SocketAddr,
    /// Its stdout, when asked for.
    pub stdout: Option<ChildStdout>,
}

impl Observer {
    /// Starts the observer with `args` (and a metrics endpoint on an ephemeral port), pinned
    /// to `cpu`; waits for its "listening" line.
    ///
    /// # Errors
    /// It could not start, or said something other than that it listens.
    pub fn start(
        exe: &ObserverExe,
        cpu: usize,
        args: &[String],
        want_stdout: bool,
    ) -> Result<Observer, String> {
        let mut child = Command::new(&exe.program)
            .args(&exe.prefix)
            .args(args)
            .args(["--prom-addr", "127.0.0.1:0", "--format", "json"])
            .stdin(Stdio::null())
            .stdout(if want_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("observer: {e}"))?;
        sys::pin(child.id(), cpu);
        let err = child.stderr.take().ok_or("observer stderr")?;
        let mut lines = BufReader::new(err).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        if !first.contains("listening") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("observer did not start: {first}"));
        }
        // Threads started before the pin above (the metrics server) follow it too.
        sys::pin_process(child.id(), cpu);
        std::thread::spawn(move || for _ in lines {});
        let prom = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no metrics address in {first:?}"))?;
        let stdout = child.stdout.take();
        Ok(Observer {
            child,
            prom,
            stdout,
        })
    }

    /// The pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time of the loop (main) thread, ns.
    #[must_use]
    pub fn loop_cpu_ns(&self) -> Option<u64> {
        sys::task_cpu_ns(self.pid(), self.pid())
    }

    /// The first sample of metric `name` (any labels), if any.
    #[must_use]
    pub fn scrape(&self, name: &str) -> Option<f64> {
        scrape(self.prom, name)
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        let _ = sys::signal(self.child.id(), sys::TERM);
        let _ = self.child.wait();
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first sample of metric `name` at `addr`.
#[must_use]
pub fn scrape(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A UDP port free at the time of the call.
///
/// # Errors
/// No socket could be bound.
pub fn free_udp_port() -> Result<u16, String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.port())
}
