//! The load generator (`varta bench-gen`, hidden): a separate process, pinned to the load CPU,
//! that sends datagrams with `sendmmsg` in batches of [`BATCH`] for a fixed time or count and
//! prints `sent COUNT NANOS`.
//!
//! Plain frames are built as they go (over the Unix socket they carry the generator's own pid,
//! which the kernel attests; over UDP they rotate over `--pids` identities). Secure datagrams
//! are sealed before the clock starts, round-robin over `--pids` identities, so the generator's
//! rate is the kernel's, not the AEAD's.
//!
//! Over UDP the generator sends from `--sources` sockets, one batch each in turn: an observer
//! with several `SO_REUSEPORT` receive sockets gets each source's datagrams on the socket the
//! kernel's 4-tuple hash picks, so one source would feed one receive thread only. Each identity
//! always sends from the same source (identity `i` from source `i mod sources`), as a real
//! agent does: a plaintext agent's source address is part of its identity, and one agent's
//! beats stay in order on one receive socket.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags};
use vlp_core::Key;

use crate::seal::{Identity, MAX_DATAGRAM};
use crate::sys;

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 64;

/// First pid of simulated UDP identities (well above real pids on a test machine).
pub const BASE_PID: u32 = 100_000;

/// UDP source sockets of the generator unless told otherwise: enough that the kernel's
/// 4-tuple hash spreads them over a few `SO_REUSEPORT` receive sockets.
pub const DEFAULT_SOURCES: u32 = 8;

/// The benchmarks' shared or master key (a benchmark secret, not a secret).
pub const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

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

impl GenMode {
    /// The flag spelling.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            GenMode::Plain => "plain",
            GenMode::Garbage => "garbage",
            GenMode::Shared => "shared",
            GenMode::Master => "master",
        }
    }

    /// Whether datagrams are sealed.
    #[must_use]
    pub const fn secure(self) -> bool {
        matches!(self, GenMode::Shared | GenMode::Master)
    }
}

/// Flags of the hidden `varta bench-gen`.
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
    /// Milliseconds to send.
    #[arg(long, default_value_t = 3000)]
    pub ms: u64,
    /// Distinct pids (UDP only; Unix frames carry our own pid).
    #[arg(long, default_value_t = 1000)]
    pub pids: u32,
    /// UDP source sockets (ports) to send from, one batch each in turn; identity `i` always
    /// sends from source `i mod N` (capped at `--pids`).
    #[arg(long, default_value_t = DEFAULT_SOURCES, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub sources: u32,
    /// Block in sendmmsg when the receiver's queue is full, instead of spinning.
    #[arg(long)]
    pub blocking: bool,
    /// Stop after this many datagrams (and at most `--ms`).
    #[arg(long)]
    pub count: Option<usize>,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Run under SCHED_FIFO at this priority.
    #[arg(long)]
    pub fifo: Option<i32>,
    /// Run at this nice level (a background flood).
    #[arg(long)]
    pub nice: Option<i32>,
}

/// Sends every buffer; with `spin`, a full receive queue (non-blocking socket) is retried at
/// once instead of sleeping (the sender owns its CPU). Returns how many were sent.
pub fn send_all(fd: BorrowedFd<'_>, bufs: &[&[u8]], spin: bool) -> usize {
    let iovs: Vec<[IoSlice<'_>; 1]> = bufs.iter().map(|b| [IoSlice::new(b)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = bufs
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut hdrs: Vec<MMsgHdr<'_>> = iovs
        .iter()
        .zip(controls.iter_mut())
        .map(|(iov, c)| MMsgHdr::new(iov, c))
        .collect();
    let mut sent = 0;
    while sent < hdrs.len() {
        match rustix::net::sendmmsg(fd, &mut hdrs[sent..], SendFlags::empty()) {
            Ok(0) => return sent,
            Ok(n) => sent += n,
            Err(e) if e == rustix::io::Errno::INTR || (spin && e == rustix::io::Errno::AGAIN) => {}
            // UDP: ECONNREFUSED or ENOBUFS; the rest of this batch is lost.
            Err(_) => return sent,
        }
    }
    sent
}

/// The load generator: prints `sent COUNT NANOS`.
///
/// # Errors
/// Bad arguments or socket errors, as one line.
pub fn run(a: &GenArgs) -> Result<i32, String> {
    if let Some(cpu) = a.cpu {
        sys::pin(0, cpu);
    }
    if let Some(p) = a.fifo {
        sys::set_fifo(p);
    }
    if let Some(n) = a.nice {
        sys::set_nice(n);
    }
    let me = std::process::id();
    let (socks, n_pids): (Vec<OwnedFd>, u32) = match (&a.unix, &a.udp) {
        (Some(p), _) => {
            let s = UnixDatagram::unbound().map_err(|e| e.to_string())?;
            s.connect(p).map_err(|e| format!("{}: {e}", p.display()))?;
            s.set_nonblocking(!a.blocking).map_err(|e| e.to_string())?;
            (vec![s.into()], 1)
        }
        (None, Some(addr)) => {
            let n_pids = a.pids.max(1);
            let socks = (0..a.sources.clamp(1, n_pids))
                .map(|_| {
                    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
                    s.connect(addr).map_err(|e| e.to_string())?;
                    Ok(s.into())
                })
                .collect::<Result<_, String>>()?;
            (socks, n_pids)
        }
        _ => return Err("give --unix or --udp".into()),
    };
    let pid_of = |i: u32| if a.unix.is_some() { me } else { BASE_PID + i };
    // Source `s` owns identities s, s + N, s + 2N, ...: each identity sends from one source.
    let n_src = socks.len();
    let owned = |s: usize| (0..n_pids).filter(move |i| *i as usize % n_src == s);
    let deadline = Duration::from_millis(a.ms);
    let limit = a.count.unwrap_or(usize::MAX);
    let mut count = 0usize;
    if !a.mode.secure() {
        let mut ids: Vec<Vec<Identity>> = (0..n_src)
            .map(|s| owned(s).map(|i| Identity::plain(pid_of(i))).collect())
            .collect();
        let mut next = vec![0usize; n_src];
        let mut frames = vec![[0u8; MAX_DATAGRAM]; BATCH];
        let t0 = Instant::now();
        for s in (0..n_src).cycle() {
            if t0.elapsed() >= deadline || count >= limit {
                break;
            }
            let mut len = 0;
            for f in &mut frames {
                let mine = &mut ids[s];
                let k = next[s] % mine.len();
                let id = &mut mine[k];
                next[s] += 1;
                len = id
                    .next_beat(0, sys::mono_ns(), f)
                    .map_err(|e| e.to_string())?;
                if a.mode == GenMode::Garbage {
                    // Flip a CRC byte: a bad-CRC rejection for every datagram.
                    f[28] ^= 0x5a;
                }
            }
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..len]).collect();
            count += send_all(socks[s].as_fd(), &refs, !a.blocking);
        }
        println!("sent {count} {}", t0.elapsed().as_nanos());
        return Ok(0);
    }
    // Secure: pre-seal round-robin over the pids (each into its source's stream), then send
    // for at most `ms`.
    let key = Key::from_hex(KEY_HEX).map_err(|e| e.to_string())?;
    let secs = usize::try_from(a.ms.div_ceil(1000)).unwrap_or(usize::MAX);
    let total = a
        .count
        .unwrap_or((400_000 * secs).max(BATCH))
        .max(n_pids as usize);
    let mut ids = Vec::with_capacity(n_pids as usize);
    for i in 0..n_pids {
        let salt = salt().map_err(|e| format!("getrandom: {e}"))?;
        ids.push(match a.mode {
            GenMode::Master => Identity::master(pid_of(i), &key, salt),
            _ => Identity::shared(pid_of(i), key.clone(), salt),
        });
    }
    let dlen = ids[0].datagram_len();
    let mut sealed: Vec<Vec<u8>> = (0..n_src)
        .map(|_| Vec::with_capacity(total.div_ceil(n_src) * dlen))
        .collect();
    let mut out = [0u8; MAX_DATAGRAM];
    for j in 0..total {
        let i = j % n_pids as usize;
        let n = ids[i]
            .next_beat(0, sys::mono_ns(), &mut out)
            .map_err(|e| e.to_string())?;
        sealed[i % n_src].extend_from_slice(&out[..n]);
    }
    let mut chunks: Vec<_> = sealed.iter().map(|s| s.chunks(BATCH * dlen)).collect();
    let t0 = Instant::now();
    'send: loop {
        let mut any = false;
        for (s, it) in chunks.iter_mut().enumerate() {
            if t0.elapsed() >= deadline {
                break 'send;
            }
            if let Some(chunk) = it.next() {
                any = true;
                let refs: Vec<&[u8]> = chunk.chunks(dlen).collect();
                count += send_all(socks[s].as_fd(), &refs, !a.blocking);
            }
        }
        if !any {
            break;
        }
    }
    println!("sent {count} {}", t0.elapsed().as_nanos());
    Ok(0)
}

fn salt() -> std::io::Result<[u8; 16]> {
    let mut s = [0u8; 16];
    let mut got = 0;
    while got < s.len() {
        match rustix::rand::getrandom(&mut s[got..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(s)
}

/// How one generator run is set up by the benchmarks.
pub struct GenRun<'a> {
    /// This executable.
    pub exe: &'a Path,
    /// `--unix PATH` or `--udp ADDR`.
    pub target: Vec<String>,
    /// Datagram kind.
    pub mode: GenMode,
    /// Send time limit.
    pub ms: u64,
    /// Distinct identities (UDP).
    pub pids: u32,
    /// UDP source sockets.
    pub sources: u32,
    /// Datagram limit.
    pub count: Option<usize>,
    /// Load CPU.
    pub cpu: usize,
    /// SCHED_FIFO 40.
    pub rt: bool,
}

impl GenRun<'_> {
    /// Runs the generator to completion: datagrams sent and the seconds it sent for.
    ///
    /// # Errors
    /// The generator could not start or said something unexpected.
    pub fn run(&self) -> Result<(u64, f64), String> {
        let mut cmd = Command::new(self.exe);
        cmd.arg("bench-gen")
            .args(&self.target)
            .args(["--mode", self.mode.name()])
            .args(["--ms", &self.ms.to_string()])
            .args(["--pids", &self.pids.to_string()])
            .args(["--sources", &self.sources.to_string()])
            .args(["--cpu", &self.cpu.to_string()]);
        if let Some(n) = self.count {
            cmd.args(["--count", &n.to_string()]);
        }
        if self.rt {
            cmd.args(["--fifo", "40"]);
        }
        let out = cmd
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
}
