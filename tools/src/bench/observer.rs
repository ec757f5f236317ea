//! The observer under measurement: a child process (this binary's `observe`, or another
//! build's `varta-watch`), pinned to the observer CPU, read through `/proc` and its metrics.
//!
//! Its *ingest threads* are the event loop (the main thread, tid == pid) and, with
//! `--workers N` > 1, the receive threads (`varta-recv-K`) that read the UDP sockets and open
//! the datagrams before handing them to the loop: ingest CPU is the sum over all of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sys;

/// Name prefix of the observer's receive threads (`varta-recv-K`).
pub const RECV_THREAD: &str = "varta-recv";

/// Datagrams each receive thread read, labelled `worker="K"`.
const WORKER_DATAGRAMS: &str = "varta_receive_worker_datagrams_total";

/// Frames the observer accepted.
pub const ACCEPTED: &str = "varta_frames_accepted_total";

/// How long the accepted count must stay still for a drain to count as done.
pub const SETTLE: Duration = Duration::from_millis(50);

/// A drained queue: see [`Observer::wait_drained`].
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    /// From the wait's start to the moment every ingest thread was seen asleep for good.
    pub wall: Duration,
    /// Ingest CPU time then, ns.
    pub cpu_ns: u64,
    /// Frames accepted (total since start).
    pub accepted: f64,
}

/// The ingest threads of process `pid`: the main (event-loop) thread, then every receive
/// thread (`/proc/PID/task/TID/comm` starting with [`RECV_THREAD`]).
#[must_use]
pub fn ingest_threads(pid: u32) -> Vec<u32> {
    let mut tids = vec![pid];
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if tid != pid && comm.starts_with(RECV_THREAD) {
                tids.push(tid);
            }
        }
    }
    tids
}

/// `--workers N` for an observer with `n` receive workers; nothing for 1, the daemon's
/// default (so a build without the flag runs the 1-worker rounds).
#[must_use]
pub fn workers_args(n: u32) -> Vec<String> {
    if n > 1 {
        vec!["--workers".into(), n.to_string()]
    } else {
        Vec::new()
    }
}

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
    /// Starts the observer with `args` (and a metrics endpoint on an ephemeral port), every
    /// thread pinned to `cpu`, or free to run on every CPU when `cpu` is `None`; waits for its
    /// "listening" line.
    ///
    /// # Errors
    /// It could not start, or said something other than that it listens.
    pub fn start(
        exe: &ObserverExe,
        cpu: Option<usize>,
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
        place(child.id(), cpu);
        let err = child.stderr.take().ok_or("observer stderr")?;
        let mut lines = BufReader::new(err).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        if !first.contains("listening") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("observer did not start: {first}"));
        }
        // Threads started before the placement above (the metrics server) follow it too.
        place_process(child.id(), cpu);
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

    /// The ingest threads' ids: see [`ingest_threads`].
    #[must_use]
    pub fn ingest_threads(&self) -> Vec<u32> {
        ingest_threads(self.pid())
    }

    /// Ingest CPU time, ns: the main thread plus every receive thread (with one worker there
    /// are none, and this is the main thread's time). `None` if a thread could not be read.
    #[must_use]
    pub fn ingest_cpu_ns(&self) -> Option<u64> {
        let pid = self.pid();
        self.ingest_threads()
            .into_iter()
            .map(|tid| sys::task_cpu_ns(pid, tid))
            .sum()
    }

    /// Waits, at most `limit`, until a queued load is drained: every ingest thread sleeps
    /// (`S`) and the accepted count did not grow over [`SETTLE`]. Returns the time from the
    /// call to the first moment of the final quiet check, and the ingest CPU and accepted
    /// count read then.
    ///
    /// # Errors
    /// The limit passed first, or the observer's CPU time or metrics could not be read.
    pub fn wait_drained(&self, limit: Duration) -> Result<Drained, String> {
        let t0 = Instant::now();
        let pid = self.pid();
        let asleep = |tids: &[u32]| {
            tids.iter()
                .all(|t| sys::state(&format!("/proc/{pid}/task/{t}")) == Some('S'))
        };
        while t0.elapsed() < limit {
            let tids = self.ingest_threads();
            if !asleep(&tids) {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            let wall = t0.elapsed();
            let cpu = self
                .ingest_cpu_ns()
                .ok_or("cannot read the observer's CPU time")?;
            let before = self
                .scrape(ACCEPTED)
                .ok_or("cannot scrape the observer's metrics")?;
            std::thread::sleep(SETTLE);
            let after = self
                .scrape(ACCEPTED)
                .ok_or("cannot scrape the observer's metrics")?;
            if after == before && asleep(&tids) {
                return Ok(Drained {
                    wall,
                    cpu_ns: cpu,
                    accepted: after,
                });
            }
        }
        Err(format!(
            "the observer was still draining after {} s",
            limit.as_secs()
        ))
    }

    /// The first sample of metric `name` (any labels), if any.
    #[must_use]
    pub fn scrape(&self, name: &str) -> Option<f64> {
        scrape(self.prom, name)
    }

    /// Datagrams each receive thread read (`varta_receive_worker_datagrams_total`), by worker
    /// number; empty when the observer exports none.
    #[must_use]
    pub fn worker_datagrams(&self) -> Vec<(u32, f64)> {
        let mut v: Vec<(u32, f64)> = scrape_samples(self.prom, WORKER_DATAGRAMS)
            .into_iter()
            .filter_map(|(labels, x)| Some((label(&labels, "worker")?.parse().ok()?, x)))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
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

/// Pins thread `tid` (0: the calling thread) to `cpu`, or lets it run on every CPU.
pub(super) fn place(tid: u32, cpu: Option<usize>) {
    match cpu {
        Some(c) => sys::pin(tid, c),
        None => {
            // Every CPU there can be: the kernel keeps those that exist and are allowed.
            let mut set = rustix::thread::CpuSet::new();
            for c in 0..rustix::thread::CpuSet::MAX_CPU {
                set.set(c);
            }
            let target = i32::try_from(tid)
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            let _ = rustix::thread::sched_setaffinity(target, &set);
        }
    }
}

/// [`place`] for every thread of process `pid`.
fn place_process(pid: u32, cpu: Option<usize>) {
    if let Some(c) = cpu {
        sys::pin_process(pid, c);
        return;
    }
    place(pid, None);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
                place(tid, None);
            }
        }
    }
}

/// The first sample of metric `name` at `addr`.
#[must_use]
pub fn scrape(addr: SocketAddr, name: &str) -> Option<f64> {
    scrape_samples(addr, name).first().map(|(_, v)| *v)
}

/// Every sample of metric `name` at `addr`: its label set (`{...}`, or empty) and value.
#[must_use]
pub fn scrape_samples(addr: SocketAddr, name: &str) -> Vec<(String, f64)> {
    let Some(body) = metrics_body(addr) else {
        return Vec::new();
    };
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series[name.len()..].trim().to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metrics_body(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of label `key` in a `{k="v",...}` label set.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .find_map(|kv| kv.trim().strip_prefix(key)?.strip_prefix("=\""))
        .map(|v| v.trim_end_matches('"'))
}

/// A UDP port free at the time of the call.
///
/// # Errors
/// No socket could be bound.
pub fn free_udp_port() -> Result<u16, String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.port())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A thread named `name`, alive until `done` is sent or dropped; returns its tid.
    fn named(name: &str) -> (u32, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let (done, wait) = mpsc::channel::<()>();
        let h = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let tid = rustix::thread::gettid().as_raw_nonzero().get();
                tx.send(u32::try_from(tid).unwrap()).unwrap();
                let _ = wait.recv();
            })
            .unwrap();
        (rx.recv().unwrap(), done, h)
    }

    #[test]
    fn ingest_threads_are_the_main_thread_and_the_receive_threads() {
        let (r0, d0, h0) = named("varta-recv-0");
        let (r1, d1, h1) = named("varta-recv-1");
        let (other, d2, h2) = named("varta-metrics");
        let pid = std::process::id();
        let tids = ingest_threads(pid);
        assert_eq!(tids[0], pid, "the main thread first");
        assert!(tids.contains(&r0) && tids.contains(&r1), "{tids:?}");
        assert!(!tids.contains(&other), "{tids:?}");
        // Other tests of this binary may run their own threads, never named varta-recv.
        assert_eq!(tids.len(), 3, "{tids:?}");
        drop((d0, d1, d2));
        for h in [h0, h1, h2] {
            h.join().unwrap();
        }
    }

    #[test]
    fn worker_label_is_read_from_a_label_set() {
        assert_eq!(label(r#"{worker="1"}"#, "worker"), Some("1"));
        assert_eq!(label(r#"{a="x",worker="12"}"#, "worker"), Some("12"));
        assert_eq!(label(r#"{workers="3"}"#, "worker"), None);
        assert_eq!(label("", "worker"), None);
    }
}
