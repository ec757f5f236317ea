//! `varta-watch bench`: the ingest and stall-precision benchmarks (they print figures; nothing
//! here asserts a timing).
//!
//! **Ingest.** A load generator (`varta-watch bench-gen`, a separate process pinned to the load
//! CPU) sends frames with `sendmmsg` in batches of 64 for a fixed time. It feeds, in the same
//! run, first a bare reference receiver (a thread of this process pinned to the observer CPU
//! that only calls `recvmmsg` on an identically configured socket and counts), then the real
//! observer (`varta-watch run`, pinned to the observer CPU), whose accepted-frame count is
//! scraped from its metrics endpoint. Transports: plain frames over the Unix socket
//! (kernel-attested, one agent: the generator's own pid), plain UDP and secure UDP
//! (shared-key and master-key datagrams, pre-sealed before the clock starts, round-robin over
//! 1,000 agent pids). The AEAD open cost per frame is measured in-process.
//!
//! On this machine the generator, not the receiver, is usually the limit, so frames/s alone
//! compare two receivers only when both are saturated. The bench therefore also reports each
//! receiver's CPU time per datagram (the bare receiver thread's `CLOCK_THREAD_CPUTIME_ID`, the
//! observer loop thread's `/proc/PID/task/PID/schedstat`, both over the generator's run and
//! the drain after it), user and kernel time included, and their ratio: the share of the bare
//! receiver's capacity the observer keeps when the CPU, not the sender, is the limit.
//! `--observer-exe` runs another build's observer under the same bench (before/after
//! comparisons in one session); `--transport` picks transports.
//!
//! **Stall precision.** An observer with threshold 200 ms pinned to the observer CPU; this
//! process, on the load CPU, keeps 1,000 plain-UDP agents beating at 10 Hz, silences one
//! victim at a time, and reads the observer's JSON event lines from a pipe: lateness = time the
//! stall line was read − (time the victim's last beat was sent + threshold). It therefore
//! includes the send→receive and pipe→reader latencies: an upper bound on the daemon's own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use vlp_core::{Frame, Key, Session, Status};

use crate::agent::{mono_ns, random_salt};

/// Which benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Ingest over every transport, then stall precision.
    All,
    /// Ingest throughput only.
    Ingest,
    /// Stall precision only.
    Stall,
    /// AEAD open cost per frame only.
    Open,
}

/// Flags of `varta-watch bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[arg(value_enum, default_value_t = Which::All)]
    pub which: Which,
    /// Seconds of load per ingest phase.
    #[arg(long, default_value_t = 2)]
    pub seconds: u64,
    /// Ingest rounds per transport (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// CPU for the observer and the bare receiver.
    #[arg(long, default_value_t = 0)]
    pub observer_cpu: usize,
    /// CPU for the load.
    #[arg(long, default_value_t = 1)]
    pub load_cpu: usize,
    /// Stall samples.
    #[arg(long, default_value_t = 60)]
    pub samples: usize,
    /// Live agents during the stall benchmark.
    #[arg(long, default_value_t = 1000)]
    pub agents: u32,
    /// Stall threshold of the stall benchmark.
    #[arg(long, default_value_t = 200)]
    pub threshold_ms: u64,
    /// During the stall benchmark, flood the observer's UDP port flat out from a niced process
    /// on the load CPU: `plain` (one agent beating flat out) or `garbage` (bad-CRC frames).
    #[arg(long, value_enum)]
    pub flood: Option<GenMode>,
    /// Also run the stall benchmark with the observer under `--rt-priority 50` (and the
    /// benchmark's sender and reader threads SCHED_FIFO too, so the instrument is not late).
    /// For ingest: run the bare receiver and the observer under SCHED_FIFO 50 and the
    /// generator under SCHED_FIFO 40, so other work on the machine does not preempt them and
    /// the figures compare the receivers, not the background load.
    #[arg(long)]
    pub rt: bool,
    /// Ingest transports to run (repeatable) [default: all].
    #[arg(long = "transport", value_enum)]
    pub transports: Vec<Transport>,
    /// The observer binary to measure (`varta-watch run ...`) [default: this one].
    #[arg(long, value_name = "PATH")]
    pub observer_exe: Option<PathBuf>,
    /// Ingest by draining instead of racing the generator (UDP transports): N datagrams are
    /// queued first (receiver stopped, receive buffer sized to hold them), then the receiver
    /// drains them with no sender running; rates are datagrams per CPU-second of the
    /// receiving thread, so they compare the receivers' own costs.
    #[arg(long, value_name = "N")]
    pub drain: Option<usize>,
}

/// Ingest transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Plain frames over the Unix socket.
    Unix,
    /// Plain frames over UDP.
    UdpPlain,
    /// Shared-key datagrams over UDP.
    UdpShared,
    /// Master-key datagrams over UDP.
    UdpMaster,
}

/// Generator modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenMode {
    /// 32-byte frames.
    Plain,
    /// 32-byte datagrams with a bad CRC (a garbage flood).
    Garbage,
    /// 60-byte shared-key datagrams.
    Shared,
    /// 64-byte master-key datagrams.
    Master,
}

/// Flags of the hidden `varta-watch bench-gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Unix socket target.
    #[arg(long)]
    pub unix: Option<PathBuf>,
    /// UDP target.
    #[arg(long)]
    pub udp: Option<SocketAddr>,
    /// Datagram kind.
    #[arg(long, value_enum, default_value_t = GenMode::Plain)]
    pub mode: GenMode,
    /// Key (shared or master) as 64 hex characters.
    #[arg(long)]
    pub key_hex: Option<String>,
    /// Seconds to send.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Distinct pids (UDP only; Unix frames carry our own pid).
    #[arg(long, default_value_t = 1000)]
    pub pids: u32,
    /// Block in sendmmsg when the receiver's queue is full, instead of spinning.
    #[arg(long)]
    pub blocking: bool,
    /// Stop after this many datagrams (and at most `--seconds`).
    #[arg(long)]
    pub count: Option<usize>,
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain bits; CPU_SET writes within it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pinned(cmd: &mut Command, cpu: usize) -> &mut Command {
    // SAFETY: the closure only calls sched_setaffinity, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            pin(cpu);
            Ok(())
        })
    }
}

// ---------------------------------------------------------------- generator

/// Sends every buffer; with `spin`, the socket is non-blocking and a full receive queue is
/// retried at once instead of sleeping (the sender owns its CPU).
fn sendmmsg_all(fd: RawFd, bufs: &[&[u8]], spin: bool) -> usize {
    let mut iovs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid (null name/control); iov pointers set below.
    let mut hdrs: Vec<libc::mmsghdr> = (0..bufs.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < hdrs.len() {
        // SAFETY: headers point at iovecs and buffers that outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs[sent..].as_mut_ptr(),
                (hdrs.len() - sent) as libc::c_uint,
                0,
            )
        };
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted
                || (spin && e.kind() == std::io::ErrorKind::WouldBlock)
            {
                continue;
            }
            // UDP: ECONNREFUSED or ENOBUFS; skip this batch.
            return sent;
        }
        sent += n as usize;
    }
    sent
}

/// The load generator: prints `sent COUNT NANOS`.
///
/// # Errors
/// Bad arguments or socket errors, as one line.
pub fn generator(a: &GenArgs) -> Result<i32, String> {
    const BATCH: usize = 64;
    let me = std::process::id();
    let fd_owner: Box<dyn AsRawFd> = match (&a.unix, &a.udp) {
        (Some(p), _) => {
            let s = UnixDatagram::unbound().map_err(|e| e.to_string())?;
            s.connect(p).map_err(|e| format!("{}: {e}", p.display()))?;
            s.set_nonblocking(!a.blocking).map_err(|e| e.to_string())?;
            Box::new(s)
        }
        (None, Some(addr)) => {
            let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            s.connect(addr).map_err(|e| e.to_string())?;
            Box::new(s)
        }
        _ => return Err("give --unix or --udp".into()),
    };
    let fd = fd_owner.as_raw_fd();
    let deadline = Duration::from_secs(a.seconds);
    let mut count = 0usize;
    if matches!(a.mode, GenMode::Plain | GenMode::Garbage) {
        let pids: Vec<u32> = if a.unix.is_some() {
            vec![me]
        } else {
            (0..a.pids.max(1)).map(|i| 100_000 + i).collect()
        };
        let mut nonces = vec![1u64; pids.len()];
        let mut frames = vec![[0u8; 32]; BATCH];
        let mut next = 0usize;
        let t0 = Instant::now();
        let limit = a.count.unwrap_or(usize::MAX);
        while t0.elapsed() < deadline && count < limit {
            for f in &mut frames {
                let i = next % pids.len();
                next += 1;
                let fr = Frame::new(Status::Ok, pids[i], mono_ns(), nonces[i], 0)
                    .map_err(|e| e.to_string())?;
                nonces[i] += 1;
                fr.emit_into(f);
                if a.mode == GenMode::Garbage {
                    f[28] ^= 0x5a;
                }
            }
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            count += sendmmsg_all(fd, &refs, !a.blocking);
        }
        println!("sent {count} {}", t0.elapsed().as_nanos());
        return Ok(0);
    }
    // Secure: pre-seal, round-robin over the pids, then send for at most `seconds`.
    let key =
        Key::from_hex(a.key_hex.as_deref().unwrap_or("")).map_err(|e| format!("--key-hex: {e}"))?;
    let n_pids = a.pids.max(1);
    let total = a.count.unwrap_or((400_000 * a.seconds as usize).max(BATCH));
    let mut sessions: Vec<(Session, Key)> = Vec::with_capacity(n_pids as usize);
    for i in 0..n_pids {
        let pid = 100_000 + i;
        let k = match a.mode {
            GenMode::Master => vlp_core::kdf::derive_agent_key(&key, pid),
            _ => key.clone(),
        };
        sessions.push((
            Session::secure(pid, random_salt().map_err(|e| e.to_string())?),
            k,
        ));
    }
    let mut sealed: Vec<Vec<u8>> = Vec::with_capacity(total);
    for j in 0..total {
        let (s, k) = &mut sessions[j % n_pids as usize];
        let beat = s
            .beat(Status::Ok, 0, mono_ns())
            .map_err(|e| e.to_string())?;
        let bytes = match a.mode {
            GenMode::Master => beat.seal_master(k).map_err(|e| e.to_string())?.0.to_vec(),
            _ => beat.seal_shared(k).map_err(|e| e.to_string())?.0.to_vec(),
        };
        s.commit(&beat).map_err(|e| e.to_string())?;
        sealed.push(bytes);
    }
    let t0 = Instant::now();
    let mut at = 0;
    while at < sealed.len() && t0.elapsed() < deadline {
        let end = (at + BATCH).min(sealed.len());
        let refs: Vec<&[u8]> = sealed[at..end].iter().map(Vec::as_slice).collect();
        count += sendmmsg_all(fd, &refs, !a.blocking);
        at = end;
    }
    println!("sent {count} {}", t0.elapsed().as_nanos());
    Ok(0)
}

// ---------------------------------------------------------------- helpers

/// Makes the calling thread SCHED_FIFO at `prio` (best effort: needs CAP_SYS_NICE).
fn set_fifo(prio: i32) {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a live local; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

fn run_gen(
    exe: &Path,
    cpu: usize,
    target: &[String],
    mode: &str,
    key: &str,
    secs: u64,
    rt: bool,
) -> Result<(u64, f64), String> {
    let mut cmd = Command::new(exe);
    cmd.arg("bench-gen")
        .args(target)
        .args(["--mode", mode, "--seconds", &secs.to_string()]);
    if !key.is_empty() {
        cmd.args(["--key-hex", key]);
    }
    if rt {
        // SAFETY: the closure only calls sched_setscheduler, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                set_fifo(40);
                Ok(())
            });
        }
    }
    let out = pinned(&mut cmd, cpu)
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| format!("generator: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().skip(1);
    let count: u64 = it.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        format!(
            "generator said {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let ns: f64 = it
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("generator output")?;
    Ok((count, ns / 1e9))
}

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live local the kernel writes.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Time thread `pid` (its main thread) spent on a CPU, ns (`/proc/PID/task/PID/schedstat`).
fn main_thread_cpu_ns(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The bare reference receiver: counts datagrams until `stop`; returns its CPU time, ns.
fn bare_receiver(
    fd: RawFd,
    unix: bool,
    cpu: usize,
    rt: bool,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        pin(cpu);
        if rt {
            set_fifo(50);
        }
        let cpu0 = thread_cpu_ns();
        let mut batch = crate::listener::RecvBatch::new();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        while !stop.load(Ordering::Relaxed) {
            match batch.recv_raw(fd, unix) {
                Ok(n) if n > 0 => {
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
                _ => {
                    // SAFETY: one valid pollfd; 50 ms timeout.
                    unsafe { libc::poll(&mut pfd, 1, 50) };
                }
            }
        }
        thread_cpu_ns() - cpu0
    })
}
fn scrape(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Starts `varta-watch run ARGS` pinned to `cpu`; waits for its "listening" line and returns
/// the child and its metrics address.
fn start_observer(
    exe: &Path,
    cpu: usize,
    args: &[String],
    stdout: Stdio,
) -> Result<(Child, Option<SocketAddr>), String> {
    let mut cmd = Command::new(exe);
    cmd.arg("run").args(args);
    let mut child = pinned(&mut cmd, cpu)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("observer: {e}"))?;
    let err = child.stderr.take().ok_or("observer stderr")?;
    let mut lines = BufReader::new(err).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    if !first.contains("listening") {
        let _ = child.kill();
        return Err(format!("observer did not start: {first}"));
    }
    std::thread::spawn(move || for _ in lines {});
    let prom = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok());
    Ok((child, prom))
}

fn stop(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let _ = child.wait();
}

// ---------------------------------------------------------------- ingest

struct IngestRow {
    bare: f64,
    observer: f64,
    bare_sent: f64,
    obs_sent: f64,
    /// CPU ns per datagram received by the bare receiver.
    bare_cpu: f64,
    /// CPU ns per frame accepted by the observer's loop thread.
    obs_cpu: f64,
}

fn ingest_one(
    exe: &Path,
    observer_exe: &Path,
    a: &BenchArgs,
    name: &'static str,
    mode: &str,
    dir: &Path,
) -> Result<IngestRow, String> {
    let key_hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let unix = name == "unix";
    // Phase 1: bare receiver.
    let stop_flag = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (target, keep): (Vec<String>, Box<dyn AsRawFd>) = if unix {
        let p = dir.join("bare.sock");
        let _ = std::fs::remove_file(&p);
        let s = UnixDatagram::bind(&p).map_err(|e| e.to_string())?;
        set_passcred_and_buf(s.as_raw_fd());
        (vec!["--unix".into(), p.display().to_string()], Box::new(s))
    } else {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        set_passcred_and_buf(s.as_raw_fd());
        let addr = s.local_addr().map_err(|e| e.to_string())?;
        (vec!["--udp".into(), addr.to_string()], Box::new(s))
    };
    let h = bare_receiver(
        keep.as_raw_fd(),
        unix,
        a.observer_cpu,
        a.rt,
        Arc::clone(&stop_flag),
        Arc::clone(&count),
    );
    let key = if mode == "plain" { "" } else { key_hex };
    let (sent_b, secs_b) = run_gen(exe, a.load_cpu, &target, mode, key, a.seconds, a.rt)?;
    std::thread::sleep(Duration::from_millis(200));
    stop_flag.store(true, Ordering::Relaxed);
    let bare_cpu_ns = h.join().unwrap_or(0);
    let received = count.load(Ordering::Relaxed);
    let bare = received as f64 / secs_b;
    drop(keep);

    // Phase 2: the observer.
    let mut args: Vec<String> = vec![
        "--threshold-ms".into(),
        "5000".into(),
        "--prom-addr".into(),
        "127.0.0.1:0".into(),
        "--format".into(),
        "json".into(),
    ];
    if a.rt {
        args.extend(["--rt-priority".into(), "50".into()]);
    }
    let kf = dir.join("key");
    let target = if unix {
        let p = dir.join("obs.sock");
        args.extend(["--socket".into(), p.display().to_string()]);
        vec!["--unix".into(), p.display().to_string()]
    } else {
        let port = free_udp_port()?;
        args.extend(["--no-socket".into(), "--udp-port".into(), port.to_string()]);
        if mode == "plain" {
            args.push("--allow-plaintext-udp".into());
        } else {
            write_key(&kf, key_hex)?;
            let flag = if mode == "master" {
                "--master-key-file"
            } else {
                "--key-file"
            };
            args.extend([flag.into(), kf.display().to_string()]);
        }
        vec!["--udp".into(), format!("127.0.0.1:{port}")]
    };
    let (mut obs, prom) = start_observer(observer_exe, a.observer_cpu, &args, Stdio::null())?;
    let prom = prom.ok_or("observer has no metrics address")?;
    let cpu0 = main_thread_cpu_ns(obs.id());
    let (sent_o, secs_o) = run_gen(exe, a.load_cpu, &target, mode, key, a.seconds, a.rt)?;
    std::thread::sleep(Duration::from_millis(300));
    let cpu1 = main_thread_cpu_ns(obs.id());
    let accepted = scrape(prom, "varta_frames_accepted_total").unwrap_or(0.0);
    stop(&mut obs);
    let obs_cpu = match (cpu0, cpu1) {
        (Some(c0), Some(c1)) => c1.saturating_sub(c0) as f64 / accepted.max(1.0),
        _ => f64::NAN,
    };
    Ok(IngestRow {
        bare,
        observer: accepted / secs_o,
        bare_sent: sent_b as f64 / secs_b,
        obs_sent: sent_o as f64 / secs_o,
        bare_cpu: bare_cpu_ns as f64 / received.max(1) as f64,
        obs_cpu,
    })
}

/// One drain round: per receiver, datagrams drained and the receiving thread's CPU ns.
struct DrainRow {
    bare_n: u64,
    bare_cpu: u64,
    obs_n: u64,
    obs_cpu: u64,
}

/// Whether thread `pid`'s main thread is asleep (state `S`): the observer waits in `ppoll`
/// only once its queue is empty.
fn main_thread_sleeping(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|t| t.trim_start().starts_with('S'))
        })
        .unwrap_or(false)
}

fn drain_one(
    exe: &Path,
    observer_exe: &Path,
    a: &BenchArgs,
    mode: &str,
    dir: &Path,
    n: usize,
) -> Result<DrainRow, String> {
    let key_hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let key = if mode == "plain" { "" } else { key_hex };
    // A small UDP datagram costs about 1 KiB of receive buffer (its skb's truesize).
    let rcvbuf = (n * 2048).clamp(1 << 22, (1 << 31) - 1);
    let gen_secs = 60;
    let count_arg = |t: &mut Vec<String>| t.extend(["--count".into(), n.to_string()]);

    // Bare receiver: queue, then drain on the observer CPU until the queue is empty.
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    set_passcred_and_buf_size(sock.as_raw_fd(), rcvbuf);
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let mut target = vec!["--udp".into(), addr.to_string()];
    count_arg(&mut target);
    run_gen(exe, a.load_cpu, &target, mode, key, gen_secs, a.rt)?;
    let fd = sock.as_raw_fd();
    let (cpu, rt) = (a.observer_cpu, a.rt);
    let (bare_n, bare_cpu) = std::thread::spawn(move || {
        pin(cpu);
        if rt {
            set_fifo(50);
        }
        let mut batch = crate::listener::RecvBatch::new();
        let cpu0 = thread_cpu_ns();
        let mut got = 0u64;
        while let Ok(k) = batch.recv_raw(fd, false) {
            if k == 0 {
                break;
            }
            got += k as u64;
        }
        (got, thread_cpu_ns() - cpu0)
    })
    .join()
    .map_err(|_| "bare receiver panicked")?;
    drop(sock);

    // The observer: started, stopped, queued, continued; done when its loop sleeps.
    let port = free_udp_port()?;
    let kf = dir.join("key");
    let mut args: Vec<String> = [
        "--threshold-ms",
        "3600000",
        "--prom-addr",
        "127.0.0.1:0",
        "--format",
        "json",
        "--no-socket",
        "--udp-port",
        &port.to_string(),
        "--udp-rcvbuf-bytes",
        &rcvbuf.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    if a.rt {
        args.extend(["--rt-priority".into(), "50".into()]);
    }
    if mode == "plain" {
        args.push("--allow-plaintext-udp".into());
    } else {
        write_key(&kf, key_hex)?;
        let flag = if mode == "master" {
            "--master-key-file"
        } else {
            "--key-file"
        };
        args.extend([flag.into(), kf.display().to_string()]);
    }
    let (mut obs, prom) = start_observer(observer_exe, a.observer_cpu, &args, Stdio::null())?;
    let prom = prom.ok_or("observer has no metrics address")?;
    let pid = obs.id();
    let signal = |sig| {
        if let Ok(p) = libc::pid_t::try_from(pid) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(p, sig) };
        }
    };
    // Let it reach its first ppoll before stopping it.
    std::thread::sleep(Duration::from_millis(100));
    signal(libc::SIGSTOP);
    let mut target = vec!["--udp".into(), format!("127.0.0.1:{port}")];
    count_arg(&mut target);
    let sent = run_gen(exe, a.load_cpu, &target, mode, key, gen_secs, a.rt);
    let cpu0 = main_thread_cpu_ns(pid);
    signal(libc::SIGCONT);
    // Resumed, it runs until the queue is empty, then sleeps in ppoll.
    std::thread::sleep(Duration::from_millis(5));
    let t0 = Instant::now();
    while !main_thread_sleeping(pid) && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_micros(500));
    }
    let cpu1 = main_thread_cpu_ns(pid);
    let accepted = scrape(prom, "varta_frames_accepted_total").unwrap_or(0.0);
    stop(&mut obs);
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

fn set_passcred_and_buf(fd: RawFd) {
    set_passcred_and_buf_size(fd, crate::listener::RCVBUF);
}

fn set_passcred_and_buf_size(fd: RawFd, bytes: usize) {
    let one: libc::c_int = 1;
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: plain setsockopt calls with live locals; failures are harmless (UDP ignores
    // SO_PASSCRED).
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            std::ptr::addr_of!(one).cast(),
            4,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::addr_of!(size).cast(),
            4,
        );
    }
}

fn free_udp_port() -> Result<u16, String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.port())
}

fn write_key(path: &Path, hex: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    writeln!(f, "{hex}").map_err(|e| e.to_string())
}

fn open_cost() -> (f64, f64) {
    let key = Key::from_bytes([7; 32]);
    let n = 20_000;
    let mut s = Session::secure(4242, [1; 16]);
    let agent_key = vlp_core::kdf::derive_agent_key(&key, 4242);
    let mut shared = Vec::with_capacity(n);
    let mut master = Vec::with_capacity(n);
    for _ in 0..n {
        let b = s.beat(Status::Ok, 0, 1).unwrap_or_else(|_| unreachable!());
        if let (Ok(x), Ok(y)) = (b.seal_shared(&key), b.seal_master(&agent_key)) {
            shared.push(x);
            master.push(y);
        }
        let _ = s.commit(&b);
    }
    // Best of 5 rounds: the figure is the cost of the work, not of whoever else ran.
    let mut shared_ns = f64::MAX;
    let mut master_ns = f64::MAX;
    let mut ok = 0;
    for _ in 0..5 {
        let t = Instant::now();
        for d in &shared {
            ok += usize::from(d.open(&key).is_ok());
        }
        shared_ns = shared_ns.min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for d in &master {
            ok += usize::from(d.open(&agent_key).is_ok());
        }
        master_ns = master_ns.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    std::hint::black_box(ok);
    (shared_ns, master_ns)
}

/// The observer core's whole cost per secure datagram (open included), as the ingest bench
/// feeds it: 1,000 agents round-robin, each on its own stream, pre-sealed. Best of 5 runs,
/// each on a fresh tracker (so the master-key runs include one derivation per agent).
fn core_cost() -> (f64, f64) {
    use crate::tracker::{Origin, Tracker, TrackerConfig, UdpMode};
    let key = Key::from_bytes([7; 32]);
    let agents = 1_000u32;
    let per_agent = 40u32;
    let mut shared = Vec::new();
    let mut master = Vec::new();
    let mut sessions: Vec<Session> = (0..agents)
        .map(|i| Session::secure(100_000 + i, [i as u8; 16]))
        .collect();
    let agent_keys: Vec<Key> = (0..agents)
        .map(|i| vlp_core::kdf::derive_agent_key(&key, 100_000 + i))
        .collect();
    for _ in 0..per_agent {
        for (s, k) in sessions.iter_mut().zip(&agent_keys) {
            let b = s.beat(Status::Ok, 0, 1).unwrap_or_else(|_| unreachable!());
            if let (Ok(x), Ok(y)) = (b.seal_shared(&key), b.seal_master(k)) {
                shared.push(x.0);
                master.push(y.0);
            }
            let _ = s.commit(&b);
        }
    }
    let origin = Origin::Udp { listener: 0 };
    let run = |mode: UdpMode, data: &mut dyn Iterator<Item = &[u8]>, n: usize| {
        let mut t = Tracker::new(TrackerConfig {
            threshold: 3_600_000_000_000,
            capacity: 65_536,
            evict_after: u64::MAX,
            allowed_uids: Vec::new(),
            udp: vec![mode],
            ..TrackerConfig::default()
        });
        let start = Instant::now();
        for (now, d) in (1..).zip(data) {
            let _ = std::hint::black_box(t.handle_datagram(now, &origin, d));
            while t.poll_event().is_some() {}
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(t.stats().accepted, n as u64, "every datagram accepted");
        ns
    };
    let mut shared_ns = f64::MAX;
    let mut master_ns = f64::MAX;
    for _ in 0..5 {
        let mode = UdpMode::Secure {
            keys: vec![key.clone()],
            master: None,
        };
        shared_ns = shared_ns.min(run(mode, &mut shared.iter().map(|d| &d[..]), shared.len()));
        let mode = UdpMode::Secure {
            keys: Vec::new(),
            master: Some(key.clone()),
        };
        master_ns = master_ns.min(run(mode, &mut master.iter().map(|d| &d[..]), master.len()));
    }
    (shared_ns, master_ns)
}

// ---------------------------------------------------------------- stall precision

fn stall_bench(exe: &Path, a: &BenchArgs, rt: bool) -> Result<(), String> {
    let n = a.agents.max(2);
    let threshold_ns = a.threshold_ms * 1_000_000;
    let port = free_udp_port()?;
    let args: Vec<String> = [
        "--no-socket",
        "--udp-port",
        &port.to_string(),
        "--allow-plaintext-udp",
        "--threshold-ms",
        &a.threshold_ms.to_string(),
        "--format",
        "json",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let mut args = args;
    args.extend(["--prom-addr".to_string(), "127.0.0.1:0".to_string()]);
    if rt {
        args.extend(["--rt-priority".to_string(), "50".to_string()]);
    }
    pin(a.load_cpu);
    let (mut obs, prom) = start_observer(exe, a.observer_cpu, &args, Stdio::piped())?;
    let out = obs.stdout.take().ok_or("observer stdout")?;
    let last_sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let silent_until: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let base_pid = 200_000u32;

    // Sender: all agents every 100 ms, in 10 slices of n/10 every 10 ms.
    let sender = {
        let (last_sent, silent_until, done) = (
            Arc::clone(&last_sent),
            Arc::clone(&silent_until),
            Arc::clone(&done),
        );
        std::thread::spawn(move || -> Result<(), String> {
            if rt {
                // Part of the instrument: a preempted sender would inflate the lateness.
                let param = libc::sched_param { sched_priority: 30 };
                // SAFETY: live local; pid 0 is this thread.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            }
            let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            sock.connect(("127.0.0.1", port))
                .map_err(|e| e.to_string())?;
            let mut nonces = vec![1u64; n as usize];
            let slices = 10u32;
            let mut slice = 0u32;
            let t0 = Instant::now();
            let mut tick = 0u64;
            while !done.load(Ordering::Relaxed) {
                let lo = slice * n / slices;
                let hi = (slice + 1) * n / slices;
                let mut bufs = Vec::with_capacity((hi - lo) as usize);
                let now = mono_ns();
                for i in lo..hi {
                    if silent_until[i as usize].load(Ordering::Relaxed) > now {
                        continue;
                    }
                    let f = Frame::new(Status::Ok, base_pid + i, now, nonces[i as usize], 0)
                        .map_err(|e| e.to_string())?;
                    nonces[i as usize] += 1;
                    bufs.push((i, f.emit()));
                }
                let refs: Vec<&[u8]> = bufs.iter().map(|(_, b)| &b[..]).collect();
                let t = mono_ns();
                sendmmsg_all(sock.as_raw_fd(), &refs, false);
                for (i, _) in &bufs {
                    last_sent[*i as usize].store(t, Ordering::Relaxed);
                }
                slice = (slice + 1) % slices;
                tick += 1;
                let next = t0 + Duration::from_millis(10 * tick);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            Ok(())
        })
    };

    // Reader: stall lines.
    let lateness = Arc::new(std::sync::Mutex::new(Vec::<(u32, f64)>::new()));
    let false_stalls = Arc::new(AtomicU64::new(0));
    let reader = {
        let (last_sent, silent_until, lateness, false_stalls) = (
            Arc::clone(&last_sent),
            Arc::clone(&silent_until),
            Arc::clone(&lateness),
            Arc::clone(&false_stalls),
        );
        std::thread::spawn(move || {
            if rt {
                // The measuring instrument must not be what is late: make the reader real-time
                // too when the observer is.
                let param = libc::sched_param { sched_priority: 40 };
                // SAFETY: live local; pid 0 is this thread.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            }
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let t = mono_ns();
                if !line.contains("\"kind\":\"stall\"") {
                    continue;
                }
                let pid: Option<u32> = line
                    .split("\"pid\":")
                    .nth(1)
                    .and_then(|s| s.split(',').next())
                    .and_then(|s| s.parse().ok());
                let Some(pid) = pid else { continue };
                let Some(i) = pid.checked_sub(base_pid).filter(|i| *i < n) else {
                    continue;
                };
                let i = i as usize;
                if silent_until[i].load(Ordering::Relaxed) == 0 {
                    false_stalls.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let late = t as f64 - (last_sent[i].load(Ordering::Relaxed) + threshold_ns) as f64;
                if let Ok(mut v) = lateness.lock() {
                    v.push((pid, late / 1e6));
                }
            }
        })
    };

    // Warm up 1 s, then silence victims one by one for 2.5 thresholds each, 1.5 apart.
    std::thread::sleep(Duration::from_secs(1));
    let silence = threshold_ns * 5 / 2;
    let gap = Duration::from_nanos(threshold_ns * 3 / 2);
    let mut flood = match a.flood {
        None => None,
        Some(mode) => {
            let secs = 2
                + (gap.as_secs_f64() * a.samples as f64) as u64
                + (silence + threshold_ns) / 1_000_000_000;
            let mut cmd = Command::new(exe);
            cmd.arg("bench-gen")
                .args(["--udp", &format!("127.0.0.1:{port}"), "--pids", "1"])
                .args(["--seconds", &secs.to_string()])
                .arg("--mode")
                .arg(if mode == GenMode::Garbage {
                    "garbage"
                } else {
                    "plain"
                });
            let cpu = a.load_cpu;
            // SAFETY: only async-signal-safe calls (sched_setaffinity, setpriority).
            unsafe {
                cmd.pre_exec(move || {
                    pin(cpu);
                    libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                    Ok(())
                });
            }
            Some(
                cmd.stdout(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("flood: {e}"))?,
            )
        }
    };
    for k in 0..a.samples {
        let victim = (k * 37) % n as usize;
        silent_until[victim].store(mono_ns() + silence, Ordering::Relaxed);
        std::thread::sleep(gap);
    }
    std::thread::sleep(Duration::from_nanos(silence + threshold_ns));
    done.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let received = prom.and_then(|p| scrape(p, "varta_datagrams_received_total"));
    let dropped = prom.and_then(|p| scrape(p, "varta_receive_queue_drops_total"));
    if let Some(f) = flood.as_mut() {
        let _ = f.kill();
        let _ = f.wait();
    }
    stop(&mut obs);
    let _ = reader.join();

    let mut v: Vec<f64> = lateness
        .lock()
        .map(|v| v.iter().map(|x| x.1).collect())
        .unwrap_or_default();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Err("no stall sample was observed".into());
    }
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "stall precision{}: threshold {} ms, {} live agents at 10 Hz (plain UDP), {} samples",
        if rt { " (observer SCHED_FIFO)" } else { "" },
        a.threshold_ms,
        n,
        v.len()
    );
    println!(
        "  lateness of the stall line after last beat + threshold: min {:.3} ms, median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        v[0],
        pct(0.5),
        pct(0.99),
        v[v.len() - 1]
    );
    if let Some(mode) = a.flood {
        println!(
            "  under a flat-out {} flood: observer received {:.0} datagrams in all",
            if mode == GenMode::Garbage {
                "garbage (bad CRC)"
            } else {
                "single-agent"
            },
            received.unwrap_or(0.0)
        );
    }
    println!(
        "  datagrams the kernel dropped on the observer's full receive queue: {:.0}",
        dropped.unwrap_or(0.0)
    );
    println!(
        "  false stalls (non-silenced agents): {}",
        false_stalls.load(Ordering::Relaxed)
    );
    Ok(())
}

fn drain_report(
    exe: &Path,
    observer_exe: &Path,
    a: &BenchArgs,
    name: &str,
    mode: &str,
    dir: &Path,
    n: usize,
) {
    let mut rows = Vec::new();
    for _ in 0..a.rounds.max(1) {
        match drain_one(exe, observer_exe, a, mode, dir, n) {
            Ok(r) => rows.push(r),
            Err(e) => println!("  {name:<14} round failed: {e}"),
        }
    }
    if rows.is_empty() {
        return;
    }
    let rate = |k: u64, ns: u64| k as f64 * 1e9 / ns.max(1) as f64;
    let med = |f: &dyn Fn(&DrainRow) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{:.0}%",
                100.0 * rate(r.obs_n, r.obs_cpu) / rate(r.bare_n, r.bare_cpu)
            )
        })
        .collect();
    println!(
        "  {:<14} {:>12.0} {:>12.0} {:>6.1}%   {:>9.0} {:>9.0}   {:>6.0} ns {:>6.0} ns   rounds: {}",
        name,
        med(&|r| rate(r.bare_n, r.bare_cpu)),
        med(&|r| rate(r.obs_n, r.obs_cpu)),
        med(&|r| 100.0 * rate(r.obs_n, r.obs_cpu) / rate(r.bare_n, r.bare_cpu)),
        med(&|r| r.bare_n as f64),
        med(&|r| r.obs_n as f64),
        med(&|r| r.bare_cpu as f64 / r.bare_n.max(1) as f64),
        med(&|r| r.obs_cpu as f64 / r.obs_n.max(1) as f64),
        ratios.join(" ")
    );
}

/// Runs the selected benchmarks and prints figures.
///
/// # Errors
/// A one-line message if a phase cannot run.
pub fn run(a: &BenchArgs) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let observer_exe = a.observer_exe.clone().unwrap_or_else(|| exe.clone());
    let dir = std::env::temp_dir().join(format!("varta-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    println!(
        "varta-watch bench: observer on CPU {}, load on CPU {}, {} s per phase; net.unix.max_dgram_qlen = {}",
        a.observer_cpu,
        a.load_cpu,
        a.seconds,
        std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen").unwrap_or_default().trim()
    );
    if matches!(a.which, Which::All | Which::Ingest) {
        println!(
            "ingest (frames/s, median of {} rounds; generator sends with sendmmsg x64):",
            a.rounds.max(1)
        );
        if a.observer_exe.is_some() {
            println!("  observer: {}", observer_exe.display());
        }
        if let Some(n) = a.drain {
            println!(
                "  drain mode: {n} datagrams queued, then drained with no sender running (datagrams per CPU-second of the receiving thread)"
            );
            println!(
                "  {:<14} {:>12} {:>12} {:>7}   {:>9} {:>9}   {:>9} {:>9}",
                "transport",
                "bare /cpu-s",
                "observer",
                "ratio",
                "bare n",
                "obs n",
                "ns bare",
                "ns obs"
            );
        } else {
            println!(
                "  {:<14} {:>12} {:>12} {:>7}   {:>12} {:>12}   {:>9} {:>9} {:>9}",
                "transport",
                "bare recv",
                "observer",
                "ratio",
                "sent(bare)",
                "sent(obs)",
                "cpu bare",
                "cpu obs",
                "cpu ratio"
            );
        }
        for (t, name, mode) in [
            (Transport::Unix, "unix", "plain"),
            (Transport::UdpPlain, "udp-plain", "plain"),
            (Transport::UdpShared, "udp-shared", "shared"),
            (Transport::UdpMaster, "udp-master", "master"),
        ] {
            if !a.transports.is_empty() && !a.transports.contains(&t) {
                continue;
            }
            if let Some(n) = a.drain {
                if t == Transport::Unix {
                    // The Unix socket queues max_dgram_qlen datagrams, not a buffer's worth.
                    println!("  {name:<14} (no drain mode: the socket queues only max_dgram_qlen datagrams)");
                    continue;
                }
                drain_report(&exe, &observer_exe, a, name, mode, &dir, n);
                continue;
            }
            // Alternate bare and observer phases over several rounds and report medians, so
            // a burst of unrelated load on the machine skews one round, not the figure.
            let mut rows = Vec::new();
            for _ in 0..a.rounds.max(1) {
                match ingest_one(&exe, &observer_exe, a, name, mode, &dir) {
                    Ok(r) => rows.push(r),
                    Err(e) => println!("  {name:<14} round failed: {e}"),
                }
            }
            if rows.is_empty() {
                continue;
            }
            let med = |f: &dyn Fn(&IngestRow) -> f64| {
                let mut v: Vec<f64> = rows.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let bare = med(&|r| r.bare);
            let obs = med(&|r| r.observer);
            // The ratio is the median of per-round ratios: each pairs two phases run
            // back to back, under the same background load.
            let ratio = med(&|r| 100.0 * r.observer / r.bare.max(1.0));
            let ratios: Vec<String> = rows
                .iter()
                .map(|r| format!("{:.0}%", 100.0 * r.observer / r.bare.max(1.0)))
                .collect();
            // CPU per datagram: ns; the ratio is the median of per-round bare/observer.
            let cpu_ratio = med(&|r| 100.0 * r.bare_cpu / r.obs_cpu);
            println!(
                "  {:<14} {:>12.0} {:>12.0} {:>6.1}%   {:>12.0} {:>12.0}   {:>6.0} ns {:>6.0} ns {:>8.1}%   rounds: {}",
                name,
                bare,
                obs,
                ratio,
                med(&|r| r.bare_sent),
                med(&|r| r.obs_sent),
                med(&|r| r.bare_cpu),
                med(&|r| r.obs_cpu),
                cpu_ratio,
                ratios.join(" ")
            );
        }
        let (s, m) = open_cost();
        println!("  AEAD open cost per frame: shared-key {s:.0} ns, master-key {m:.0} ns (agent key cached)");
    }
    if a.which == Which::Open {
        let (s, m) = open_cost();
        println!("AEAD open cost per frame: shared-key {s:.0} ns, master-key {m:.0} ns");
    }
    if matches!(a.which, Which::All | Which::Ingest | Which::Open) {
        let (s, m) = core_cost();
        println!(
            "  tracker per secure datagram (open included; 1,000 agents round-robin): shared-key {s:.0} ns, master-key {m:.0} ns"
        );
    }
    if matches!(a.which, Which::All | Which::Stall) {
        stall_bench(&exe, a, false)?;
        if a.rt {
            stall_bench(&exe, a, true)?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
}
