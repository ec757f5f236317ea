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
    #[arg(long)]
    pub rt: bool,
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
        while t0.elapsed() < deadline {
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
    let total = (400_000 * a.seconds as usize).max(BATCH);
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

fn run_gen(
    exe: &Path,
    cpu: usize,
    target: &[String],
    mode: &str,
    key: &str,
    secs: u64,
) -> Result<(u64, f64), String> {
    let mut cmd = Command::new(exe);
    cmd.arg("bench-gen")
        .args(target)
        .args(["--mode", mode, "--seconds", &secs.to_string()]);
    if !key.is_empty() {
        cmd.args(["--key-hex", key]);
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

/// The bare reference receiver: counts datagrams until `stop`.
fn bare_receiver(
    fd: RawFd,
    unix: bool,
    cpu: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        pin(cpu);
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
}

fn ingest_one(
    exe: &Path,
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
        Arc::clone(&stop_flag),
        Arc::clone(&count),
    );
    let key = if mode == "plain" { "" } else { key_hex };
    let (sent_b, secs_b) = run_gen(exe, a.load_cpu, &target, mode, key, a.seconds)?;
    std::thread::sleep(Duration::from_millis(200));
    stop_flag.store(true, Ordering::Relaxed);
    let _ = h.join();
    let bare = count.load(Ordering::Relaxed) as f64 / secs_b;
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
    let (mut obs, prom) = start_observer(exe, a.observer_cpu, &args, Stdio::null())?;
    let prom = prom.ok_or("observer has no metrics address")?;
    let (sent_o, secs_o) = run_gen(exe, a.load_cpu, &target, mode, key, a.seconds)?;
    std::thread::sleep(Duration::from_millis(300));
    let accepted = scrape(prom, "varta_frames_accepted_total").unwrap_or(0.0);
    stop(&mut obs);
    Ok(IngestRow {
        bare,
        observer: accepted / secs_o,
        bare_sent: sent_b as f64 / secs_b,
        obs_sent: sent_o as f64 / secs_o,
    })
}

fn set_passcred_and_buf(fd: RawFd) {
    let one: libc::c_int = 1;
    let size: libc::c_int = crate::listener::RCVBUF as libc::c_int;
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

/// Runs the selected benchmarks and prints figures.
///
/// # Errors
/// A one-line message if a phase cannot run.
pub fn run(a: &BenchArgs) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
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
        println!(
            "  {:<14} {:>12} {:>12} {:>7}   {:>12} {:>12}",
            "transport", "bare recv", "observer", "ratio", "sent(bare)", "sent(obs)"
        );
        for (name, mode) in [
            ("unix", "plain"),
            ("udp-plain", "plain"),
            ("udp-shared", "shared"),
            ("udp-master", "master"),
        ] {
            // Alternate bare and observer phases over several rounds and report medians, so
            // a burst of unrelated load on the machine skews one round, not the figure.
            let mut rows = Vec::new();
            for _ in 0..a.rounds.max(1) {
                match ingest_one(&exe, a, name, mode, &dir) {
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
            println!(
                "  {:<14} {:>12.0} {:>12.0} {:>6.1}%   {:>12.0} {:>12.0}   rounds: {}",
                name,
                bare,
                obs,
                ratio,
                med(&|r| r.bare_sent),
                med(&|r| r.obs_sent),
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
    if matches!(a.which, Which::All | Which::Stall) {
        stall_bench(&exe, a, false)?;
        if a.rt {
            stall_bench(&exe, a, true)?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
}
