//! Ingest: a bare `recvmmsg` receiver against the observer, over each transport, two ways, the
//! observer at each of the asked receive-worker counts (`--workers`; UDP only: the Unix socket
//! is always read by the event loop).
//!
//! * **Generator-bound** ([`race`]): the generator sends flat out for a fixed time, first to a
//!   bare receiver (a thread of this process, pinned to the observer CPU, making the observer's
//!   own `recvmmsg` calls on an identically configured socket and counting), then to the
//!   observer at each worker count; frames/s of each, and each receiver's CPU time per datagram
//!   (the bare thread's `CLOCK_THREAD_CPUTIME_ID`; the observer's ingest threads, main loop plus
//!   receive threads, from `/proc/PID/task/TID/schedstat`, see [`Observer::ingest_cpu_ns`]).
//! * **Receiver-bound** ([`drain`], UDP only): N datagrams are queued while the receiver is
//!   stopped (receive buffer sized to hold them), then drained with no sender running; the rate
//!   is datagrams per CPU-second of the receiving threads, so it compares the receivers' own
//!   costs (the wall-clock drain, nothing pinned, is [`super::wall`]). The Unix socket queues only `net.unix.max_dgram_qlen` datagrams, so it has no
//!   drain mode.
//!
//! Every round of one transport drives every receiver with the same generator settings (the
//! same `--sources`), so the figures of one row are comparable.

use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use varta_watch::listener::RecvBatch;

use super::gen::{GenMode, GenRun, KEY_HEX};
use super::observer::{free_udp_port, workers_args, Observer, ObserverExe, ACCEPTED};
use super::{BenchArgs, Transport};
use crate::sys;

/// Kernel receive buffer of the bare receiver's socket (the observer's default).
const RCVBUF: usize = varta_watch::listener::RCVBUF;

/// Datagrams each receive thread read, by worker number (empty with one worker, or when the
/// observer exports no per-worker counts).
pub type Spread = Vec<(u32, f64)>;

/// One receiver's generator-bound phase.
#[derive(Debug, Clone)]
pub struct RacePhase {
    /// Frames/s the receiver counted (the observer: accepted).
    pub rate: f64,
    /// Frames/s the generator sent.
    pub sent: f64,
    /// CPU ns per datagram received (the observer: per frame accepted, all ingest threads).
    pub cpu: f64,
    /// The observer's per-worker counts.
    pub spread: Spread,
}

/// One generator-bound round: the bare receiver, then the observer at each worker count.
pub struct RaceRound {
    /// The bare receiver.
    pub bare: RacePhase,
    /// The observer, one entry per asked worker count, in order.
    pub observer: Vec<Result<RacePhase, String>>,
}

/// One receiver's receiver-bound phase.
#[derive(Debug, Clone)]
pub struct DrainPhase {
    /// Datagrams drained (the observer: frames accepted).
    pub n: u64,
    /// CPU ns of the receiving threads.
    pub cpu: u64,
    /// The observer's per-worker counts.
    pub spread: Spread,
}

impl DrainPhase {
    /// Datagrams per CPU-second.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.n as f64 * 1e9 / self.cpu.max(1) as f64
    }

    /// CPU ns per datagram.
    #[must_use]
    pub fn ns_each(&self) -> f64 {
        self.cpu as f64 / self.n.max(1) as f64
    }
}

/// One receiver-bound round: the bare receiver, then the observer at each worker count.
pub struct DrainRound {
    /// The bare receiver.
    pub bare: DrainPhase,
    /// The observer, one entry per asked worker count, in order.
    pub observer: Vec<Result<DrainPhase, String>>,
}

pub(super) fn set_socket(fd: BorrowedFd<'_>, rcvbuf: usize) {
    // Failures are harmless: UDP ignores SO_PASSCRED, and the forced size needs
    // CAP_NET_ADMIN (the plain size is then the fallback).
    let _ = rustix::net::sockopt::set_socket_passcred(fd, true);
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(fd, rcvbuf).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, rcvbuf);
    }
}

/// The bare reference receiver: counts datagrams until `stop`; returns its CPU time, ns.
fn bare_receiver(
    sock: OwnedFd,
    unix: bool,
    cpu: usize,
    rt: bool,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        sys::pin(0, cpu);
        if rt {
            sys::set_fifo(50);
        }
        let cpu0 = sys::thread_cpu_ns();
        let mut batch = RecvBatch::new();
        let fd = sock.as_raw_fd();
        let timeout = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        while !stop.load(Ordering::Relaxed) {
            match batch.recv_raw(fd, unix) {
                Ok(n) if n > 0 => {
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
                _ => {
                    let mut p = [rustix::event::PollFd::new(
                        &sock,
                        rustix::event::PollFlags::IN,
                    )];
                    let _ = rustix::event::poll(&mut p, Some(&timeout));
                }
            }
        }
        sys::thread_cpu_ns() - cpu0
    })
}

pub(super) fn observer_args(
    t: Transport,
    dir: &Path,
    port: u16,
    rt: bool,
) -> Result<Vec<String>, String> {
    let mut args: Vec<String> = Vec::new();
    if rt {
        args.extend(["--rt-priority".into(), "50".into()]);
    }
    if t == Transport::Unix {
        args.extend([
            "--socket".into(),
            dir.join("obs.sock").display().to_string(),
        ]);
        return Ok(args);
    }
    args.extend(["--no-socket".into(), "--udp-port".into(), port.to_string()]);
    match t.mode() {
        GenMode::Shared | GenMode::Master => {
            let kf = dir.join("key");
            sys::write_key(&kf, KEY_HEX).map_err(|e| format!("{}: {e}", kf.display()))?;
            let flag = if t.mode() == GenMode::Master {
                "--master-key-file"
            } else {
                "--key-file"
            };
            args.extend([flag.into(), kf.display().to_string()]);
        }
        _ => args.push("--allow-plaintext-udp".into()),
    }
    Ok(args)
}

/// The receive buffer that holds `n` queued datagrams: a small UDP datagram costs about
/// 1 KiB of it (its skb's truesize).
pub(super) fn drain_rcvbuf(n: usize) -> usize {
    (n * 2048).clamp(1 << 22, (1 << 31) - 1)
}

/// The generator of a receiver-bound round: `n` datagrams of transport `t` to `addr`.
pub(super) fn drain_gen<'a>(
    exe: &'a Path,
    a: &BenchArgs,
    t: Transport,
    n: usize,
    addr: String,
) -> GenRun<'a> {
    GenRun {
        exe,
        target: vec!["--udp".into(), addr],
        mode: t.mode(),
        ms: 60_000,
        pids: 1000,
        sources: a.sources,
        count: Some(n),
        cpu: a.load_cpu,
        rt: a.rt,
    }
}

/// The observer's flags in a receiver-bound round: on UDP `port` with `w` receive workers, a
/// receive buffer of `rcvbuf` bytes, and no stall while it is stopped.
///
/// # Errors
/// The key file cannot be written.
pub(super) fn drain_observer_args(
    t: Transport,
    dir: &Path,
    port: u16,
    rt: bool,
    rcvbuf: usize,
    w: u32,
) -> Result<Vec<String>, String> {
    let mut args = observer_args(t, dir, port, rt)?;
    args.extend([
        "--threshold-ms".into(),
        "3600000".into(),
        "--udp-rcvbuf-bytes".into(),
        rcvbuf.to_string(),
    ]);
    args.extend(workers_args(w));
    Ok(args)
}

/// One generator-bound round over transport `t`: the bare receiver, then the observer at each
/// of `workers` receive-worker counts.
///
/// # Errors
/// The bare phase could not run (an observer phase's failure is in its entry).
pub fn race(
    exe: &Path,
    obs_exe: &ObserverExe,
    a: &BenchArgs,
    t: Transport,
    dir: &Path,
    workers: &[u32],
) -> Result<RaceRound, String> {
    let unix = t == Transport::Unix;
    let gen = |target: Vec<String>| GenRun {
        exe,
        target,
        mode: t.mode(),
        ms: a.phase_ms(),
        pids: 1000,
        sources: a.sources,
        // --quick caps the datagrams too: sealing them first must take no time either.
        count: a.quick.then_some(20_000),
        cpu: a.load_cpu,
        rt: a.rt,
    };
    // Phase 1: bare receiver.
    let stop_flag = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (target, keep): (Vec<String>, OwnedFd) = if unix {
        let p = dir.join("bare.sock");
        let _ = std::fs::remove_file(&p);
        let s = UnixDatagram::bind(&p).map_err(|e| e.to_string())?;
        set_socket(s.as_fd(), RCVBUF);
        (vec!["--unix".into(), p.display().to_string()], s.into())
    } else {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        set_socket(s.as_fd(), RCVBUF);
        let addr = s.local_addr().map_err(|e| e.to_string())?;
        (vec!["--udp".into(), addr.to_string()], s.into())
    };
    let h = bare_receiver(
        keep.try_clone().map_err(|e| e.to_string())?,
        unix,
        a.observer_cpu,
        a.rt,
        Arc::clone(&stop_flag),
        Arc::clone(&count),
    );
    let sent_b = gen(target).run();
    std::thread::sleep(Duration::from_millis(200));
    stop_flag.store(true, Ordering::Relaxed);
    let bare_cpu_ns = h.join().unwrap_or(0);
    drop(keep);
    let (sent_b, secs_b) = sent_b?;
    let received = count.load(Ordering::Relaxed);
    let bare = RacePhase {
        rate: received as f64 / secs_b,
        sent: sent_b as f64 / secs_b,
        cpu: bare_cpu_ns as f64 / received.max(1) as f64,
        spread: Vec::new(),
    };

    // Then the observer, at each worker count.
    let observer = workers
        .iter()
        .map(|&w| {
            let port = free_udp_port()?;
            let mut args = observer_args(t, dir, port, a.rt)?;
            args.extend(["--threshold-ms".into(), "5000".into()]);
            args.extend(workers_args(w));
            let obs = Observer::start(obs_exe, Some(a.observer_cpu), &args, false)?;
            let target = if unix {
                vec!["--unix".into(), dir.join("obs.sock").display().to_string()]
            } else {
                vec!["--udp".into(), format!("127.0.0.1:{port}")]
            };
            let cpu0 = obs.ingest_cpu_ns();
            let sent = gen(target).run();
            std::thread::sleep(Duration::from_millis(300));
            let cpu1 = obs.ingest_cpu_ns();
            let accepted = obs.scrape(ACCEPTED).unwrap_or(0.0);
            let spread = obs.worker_datagrams();
            obs.stop();
            let (sent, secs) = sent?;
            let cpu = match (cpu0, cpu1) {
                (Some(c0), Some(c1)) => c1.saturating_sub(c0) as f64 / accepted.max(1.0),
                _ => f64::NAN,
            };
            Ok(RacePhase {
                rate: accepted / secs,
                sent: sent as f64 / secs,
                cpu,
                spread,
            })
        })
        .collect();
    Ok(RaceRound { bare, observer })
}

/// One receiver-bound round of `n` datagrams over UDP transport `t`: the bare receiver, then
/// the observer at each of `workers` receive-worker counts.
///
/// # Errors
/// The bare phase could not run (an observer phase's failure is in its entry).
pub fn drain(
    exe: &Path,
    obs_exe: &ObserverExe,
    a: &BenchArgs,
    t: Transport,
    dir: &Path,
    n: usize,
    workers: &[u32],
) -> Result<DrainRound, String> {
    let rcvbuf = drain_rcvbuf(n);
    let gen = |addr: String| drain_gen(exe, a, t, n, addr);

    // Bare receiver: queue, then drain on the observer CPU until the queue is empty.
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    set_socket(sock.as_fd(), rcvbuf);
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    gen(addr.to_string()).run()?;
    let fd = sock.as_raw_fd();
    let (cpu, rt) = (a.observer_cpu, a.rt);
    let (bare_n, bare_cpu) = std::thread::spawn(move || {
        sys::pin(0, cpu);
        if rt {
            sys::set_fifo(50);
        }
        let mut batch = RecvBatch::new();
        let cpu0 = sys::thread_cpu_ns();
        let mut got = 0u64;
        while let Ok(k) = batch.recv_raw(fd, false) {
            if k == 0 {
                break;
            }
            got += k as u64;
        }
        (got, sys::thread_cpu_ns() - cpu0)
    })
    .join()
    .map_err(|_| "bare receiver panicked")?;
    drop(sock);
    let bare = DrainPhase {
        n: bare_n,
        cpu: bare_cpu,
        spread: Vec::new(),
    };

    // The observer: started, stopped, queued, continued; done when it is drained.
    let observer = workers
        .iter()
        .map(|&w| {
            let port = free_udp_port()?;
            let args = drain_observer_args(t, dir, port, a.rt, rcvbuf, w)?;
            let obs = Observer::start(obs_exe, Some(a.observer_cpu), &args, false)?;
            let pid = obs.pid();
            // Let it reach its first wait before stopping it.
            std::thread::sleep(Duration::from_millis(100));
            sys::signal(pid, sys::STOP);
            let sent = gen(format!("127.0.0.1:{port}")).run();
            let cpu0 = obs.ingest_cpu_ns();
            sys::signal(pid, sys::CONT);
            // Resumed, it runs until the queues are empty, then sleeps in its waits.
            std::thread::sleep(Duration::from_millis(5));
            let done = obs.wait_drained(Duration::from_secs(120));
            let spread = obs.worker_datagrams();
            obs.stop();
            sent?;
            let done = done?;
            let cpu0 = cpu0.ok_or("cannot read the observer's CPU time")?;
            Ok(DrainPhase {
                n: done.accepted as u64,
                cpu: done.cpu_ns.saturating_sub(cpu0),
                spread,
            })
        })
        .collect();
    Ok(DrainRound { bare, observer })
}
