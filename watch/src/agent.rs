//! `varta-watch agent`: a small heartbeat agent built on `vlp_core::Session`, used by the demo,
//! the integration tests and the benchmarks, so they run with nothing but this binary.
//!
//! It beats every `--interval-ms` over the Unix socket (`--socket`) or UDP (`--udp`, plain or
//! sealed with `--key-file` / `--master-key-file`), and can misbehave on purpose: hang for a
//! while (`--hang-after N --hang-ms M`), crash with a terminal frame (`--crash-after N`), or say
//! goodbye at the end (`--goodbye`).

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use vlp_core::{Beat, Key, Session, Status};

/// Status sent by the agent.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AgentStatus {
    /// Ok.
    Ok,
    /// Degraded.
    Degraded,
    /// Critical.
    Critical,
}

/// Flags of `varta-watch agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Unix socket of the observer.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "udp",
        required_unless_present = "udp"
    )]
    pub socket: Option<PathBuf>,
    /// UDP address of the observer.
    #[arg(long, value_name = "ADDR")]
    pub udp: Option<SocketAddr>,
    /// Seal with this shared key (UDP).
    #[arg(
        long,
        value_name = "FILE",
        requires = "udp",
        conflicts_with = "master_key_file"
    )]
    pub key_file: Option<PathBuf>,
    /// Seal with the key derived from this master key for our pid (UDP).
    #[arg(long, value_name = "FILE", requires = "udp")]
    pub master_key_file: Option<PathBuf>,
    /// Milliseconds between beats.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub interval_ms: u64,
    /// Stop after this many beats (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub count: u64,
    /// Status to report.
    #[arg(long, value_enum, default_value_t = AgentStatus::Ok)]
    pub status: AgentStatus,
    /// After this many beats, stop beating (hang) ...
    #[arg(long, value_name = "N")]
    pub hang_after: Option<u64>,
    /// ... for this long, then beat again (default: hang until killed).
    #[arg(long, value_name = "MS")]
    pub hang_ms: Option<u64>,
    /// After this many beats, send a terminal frame and exit with status 101 (a crash).
    #[arg(long, value_name = "N")]
    pub crash_after: Option<u64>,
    /// Announce a clean exit (goodbye) after the last beat.
    #[arg(long)]
    pub goodbye: bool,
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes on this host.
#[must_use]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into a local timespec; CLOCK_MONOTONIC is always available.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// 16 bytes of OS entropy for a session salt.
///
/// # Errors
/// The `getrandom` error.
pub fn random_salt() -> std::io::Result<[u8; 16]> {
    let mut s = [0u8; 16];
    let mut got = 0;
    while got < s.len() {
        // SAFETY: writes at most the remaining length into our local buffer.
        let n = unsafe { libc::getrandom(s[got..].as_mut_ptr().cast(), s.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            got += n as usize;
        }
    }
    Ok(s)
}

enum Transport {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

enum Seal {
    Plain,
    Shared(Key),
    Master(Key),
}

struct Agent {
    session: Session,
    transport: Transport,
    seal: Seal,
}

impl Agent {
    fn send(&mut self, beat: &Beat) -> Result<(), String> {
        let bytes: Vec<u8> = match &self.seal {
            Seal::Plain => beat.emit().to_vec(),
            Seal::Shared(k) => beat.seal_shared(k).map_err(|e| e.to_string())?.0.to_vec(),
            Seal::Master(k) => beat.seal_master(k).map_err(|e| e.to_string())?.0.to_vec(),
        };
        let sent = match &self.transport {
            Transport::Unix(s) => s.send(&bytes),
            Transport::Udp(s) => s.send(&bytes),
        };
        match sent {
            Ok(_) => self.session.commit(beat).map_err(|e| e.to_string()),
            // A refused send consumes nothing (the session is unchanged); the next beat retries.
            Err(_) => Ok(()),
        }
    }
}

/// Runs the agent; returns the process exit status.
///
/// # Errors
/// A one-line message for bad flags or files.
pub fn run(a: &AgentArgs) -> Result<i32, String> {
    let pid = std::process::id();
    let transport = match (&a.socket, &a.udp) {
        (Some(p), _) => {
            let s = UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
            s.connect(p)
                .map_err(|e| format!("--socket {}: cannot connect: {e}", p.display()))?;
            Transport::Unix(s)
        }
        (None, Some(addr)) => {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().map_err(|_| "bind address")?
            } else {
                "[::]:0".parse().map_err(|_| "bind address")?
            };
            let s = UdpSocket::bind(bind).map_err(|e| format!("udp bind: {e}"))?;
            s.connect(addr)
                .map_err(|e| format!("--udp {addr}: cannot connect: {e}"))?;
            Transport::Udp(s)
        }
        (None, None) => return Err("give --socket PATH or --udp ADDR".into()),
    };
    let read = |p: &PathBuf, flag: &str| {
        vlp_core::keyfile::read_key_file(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
    };
    let seal = match (&a.key_file, &a.master_key_file) {
        (Some(p), _) => Seal::Shared(read(p, "--key-file")?),
        (None, Some(p)) => Seal::Master(vlp_core::kdf::derive_agent_key(
            &read(p, "--master-key-file")?,
            pid,
        )),
        (None, None) => Seal::Plain,
    };
    let session = match seal {
        Seal::Plain => Session::plain(pid),
        _ => Session::secure(pid, random_salt().map_err(|e| format!("getrandom: {e}"))?),
    };
    let mut agent = Agent {
        session,
        transport,
        seal,
    };
    let status = match a.status {
        AgentStatus::Ok => Status::Ok,
        AgentStatus::Degraded => Status::Degraded,
        AgentStatus::Critical => Status::Critical,
    };
    let interval = Duration::from_millis(a.interval_ms);
    let mut sent = 0u64;
    loop {
        if a.count != 0 && sent >= a.count {
            break;
        }
        if a.crash_after == Some(sent) {
            let beat = agent
                .session
                .terminal(0xDEAD, mono_ns())
                .map_err(|e| e.to_string())?;
            agent.send(&beat)?;
            return Ok(101);
        }
        if a.hang_after == Some(sent) {
            match a.hang_ms {
                Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
                None => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
            }
        }
        let beat = agent
            .session
            .beat(status, sent as u32, mono_ns())
            .map_err(|e| e.to_string())?;
        agent.send(&beat)?;
        sent += 1;
        std::thread::sleep(interval);
    }
    if a.goodbye {
        let beat = agent
            .session
            .goodbye(mono_ns())
            .map_err(|e| e.to_string())?;
        agent.send(&beat)?;
    }
    Ok(0)
}
