//! Ingest: a bare `recvmmsg` receiver against the observer, over each transport, two ways.
//!
//! * **Generator-bound** ([`race`]): the generator sends flat out for a fixed time, first to a
//!   bare receiver (a thread of this process, pinned to the observer CPU, making the observer's
//!   own `recvmmsg` calls on an identically configured socket and counting), then to the
//!   observer; frames/s of each, and each receiver's CPU time per datagram (the bare thread's
//!   `CLOCK_THREAD_CPUTIME_ID`, the observer loop thread's `/proc/PID/task/PID/schedstat`).
//! * **Receiver-bound** ([`drain`], UDP only): N datagrams are queued while the receiver is
//!   stopped (receive buffer sized to hold them), then drained with no sender running; the rate
//!   is datagrams per CPU-second of the receiving thread, so it compares the receivers' own
//!   costs. The Unix socket queues only `net.unix.max_dgram_qlen` datagrams, so it has no
//!   drain mode.

use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use varta_watch::listener::RecvBatch;

use super::gen::{GenMode, GenRun, KEY_HEX};
use super::observer::{free_udp_port, Observer, ObserverExe};
use super::{BenchArgs, Transport};
use crate::sys;

/// Kernel receive buffer of the bare receiver's socket (the observer's default).
const RCVBUF: usize = varta_watch::listener::RCVBUF;

/// One generator-bound round.
pub struct RaceRow {
    /// Frames/s the bare receiver counted.
    pub bare: f64,
    /// Frames/s the observer accepted.
    pub observer: f64,
    /// Frames/s the generator sent in each phase.
    pub bare_sent: f64,
    /// As above, observer phase.
    pub obs_sent: f64,
    /// CPU ns per datagram received by the bare receiver.
    pub bare_cpu: f64,
    /// CPU ns per frame accepted by the observer's loop thread.
    pub obs_cpu: f64,
}

/// One receiver-bound round: per receiver, datagrams drained and the receiving thread's CPU ns.
pub struct DrainRow {
    /// Bare receiver: datagrams.
    pub bare_n: u64,
    /// Bare receiver: CPU ns.
    pub bare_cpu: u64,
    /// Observer: frames accepted.
    pub obs_n: u64,
    /// Observer loop thread: CPU ns.
    pub obs_cpu: u64,
}

fn set_socket(fd: BorrowedFd<'_>, rcvbuf: usize) {
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

fn observer_args(t: Transport, dir: &Path, port: u16, rt: bool) -> Result<Vec<String>, String> {
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

/// One generator-bound round over transport `t`.
///
/// # Errors
/// A phase could not run.
pub fn race(
    exe: &Path,
    obs_exe: &ObserverExe,
    a: &BenchArgs,
    t: Transport,
    dir: &Path,
) -> Result<RaceRow, String> {
    let unix = t == Transport::Unix;
    let gen = |target: Vec<String>| GenRun {
        exe,
        target,
        mode: t.mode(),
        ms: a.phase_ms(),
        pids: 1000,
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

    // Phase 2: the observer.
    let port = free_udp_port()?;
    let mut args = observer_args(t, dir, port, a.rt)?;
    args.extend(["--threshold-ms".into(), "5000".into()]);
    let obs = Observer::start(obs_exe, a.observer_cpu, &args, false)?;
    let target = if unix {
        vec!["--unix".into(), dir.join("obs.sock").display().to_string()]
    } else {
        vec!["--udp".into(), format!("127.0.0.1:{port}")]
    };
    let cpu0 = obs.loop_cpu_ns();
    let sent_o = gen(target).run();
    std::thread::sleep(Duration::from_millis(300));
    let cpu1 = obs.loop_cpu_ns();
    let accepted = obs.scrape("varta_frames_accepted_total").unwrap_or(0.0);
    obs.stop();
    let (sent_o, secs_o) = sent_o?;
    let obs_cpu = match (cpu0, cpu1) {
        (Some(c0), Some(c1)) => c1.saturating_sub(c0) as f64 / accepted.max(1.0),
        _ => f64::NAN,
    };
    Ok(RaceRow {
        bare: received as f64 / secs_b,
        observer: accepted / secs_o,
        bare_sent: sent_b as f64 / secs_b,
        obs_sent: sent_o as f64 / secs_o,
        bare_cpu: bare_cpu_ns as f64 / received.max(1) as f64,
        obs_cpu,
    })
}

/// One receiver-bound round of `n` datagrams over UDP transport `t`.
///
/// # Errors
/// A phase could not run.
pub fn drain(
    exe: &Path,
    obs_exe: &ObserverExe,
    a: &BenchArgs,
    t: Transport,
    dir: &Path,
    n: usize,
) -> Result<DrainRow, String> {
    // A small UDP datagram costs about 1 KiB of receive buffer (its skb's truesize).
    let rcvbuf = (n * 2048).clamp(1 << 22, (1 << 31) - 1);
    let gen = |addr: String| GenRun {
        exe,
        target: vec!["--udp".into(), addr],
        mode: t.mode(),
        ms: 60_000,
        pids: 1000,
        count: Some(n),
        cpu: a.load_cpu,
        rt: a.rt,
    };

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

    // The observer: started, stopped, queued, continued; done when its loop sleeps.
    let port = free_udp_port()?;
    let mut args = observer_args(t, dir, port, a.rt)?;
    args.extend([
        "--threshold-ms".into(),
        "3600000".into(),
        "--udp-rcvbuf-bytes".into(),
        rcvbuf.to_string(),
    ]);
    let obs = Observer::start(obs_exe, a.observer_cpu, &args, false)?;
    let pid = obs.pid();
    // Let it reach its first wait before stopping it.
    std::thread::sleep(Duration::from_millis(100));
    sys::signal(pid, sys::STOP);
    let sent = gen(format!("127.0.0.1:{port}")).run();
    let cpu0 = obs.loop_cpu_ns();
    sys::signal(pid, sys::CONT);
    // Resumed, it runs until the queue is empty, then sleeps in its wait.
    std::thread::sleep(Duration::from_millis(5));
    let t0 = Instant::now();
    let task = format!("/proc/{pid}/task/{pid}");
    while sys::state(&task) != Some('S') && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_micros(500));
    }
    let cpu1 = obs.loop_cpu_ns();
    let accepted = obs.scrape("varta_frames_accepted_total").unwrap_or(0.0);
    obs.stop();
    sent?;
    let obs_cpu = match (cpu0, cpu1) {
        (Some(c0), Some(c1)) => c1.saturating_sub(c0),
        _ => return Err("cannot read the observer's CPU time".into()),
    };
    Ok(DrainRow {
        bare_n,
        bare_cpu,
        obs_n: accepted as u64,
        obs_cpu,
    })
}
