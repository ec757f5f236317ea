//! `varta agent`: a heartbeat agent built on `varta-client` (the library users run), used by
//! the demo, the end-to-end tests and the benchmarks.
//!
//! It beats every `--interval-ms` over the Unix socket (`--socket`) or UDP (`--udp`, plain or
//! sealed with `--key-file` / `--master-key-file`), and can misbehave on purpose: hang for a
//! while (`--hang-after N --hang-ms M`), crash with a terminal frame (`--crash-after N`, payload
//! [`CRASH_PAYLOAD`], exit status 101), or say goodbye at the end (`--goodbye`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use varta_client::{BeatOutcome, Status, Varta};

/// Payload of the terminal frame `--crash-after` sends.
pub const CRASH_PAYLOAD: u32 = 0xDEAD;

/// Exit status after `--crash-after`, as a panicking Rust program's.
pub const CRASH_EXIT: i32 = 101;

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

/// Flags of `varta agent`.
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
    /// At a normal end, append `pid=P sent=N dropped=M` to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// What happened to the beats sent so far.
#[derive(Default)]
struct Tally {
    sent: u64,
    dropped: u64,
}

impl Tally {
    /// A dropped beat (queue full, observer restarting) costs nothing and the next one
    /// retries; a failed one means the library refused our input.
    fn count(&mut self, o: BeatOutcome) -> Result<(), String> {
        match o {
            BeatOutcome::Sent => self.sent += 1,
            BeatOutcome::Dropped(_) => self.dropped += 1,
            BeatOutcome::Failed(e) => return Err(format!("beat failed: {e}")),
        }
        Ok(())
    }
}

fn connect(a: &AgentArgs) -> Result<Varta, String> {
    let read = |p: &PathBuf, flag: &str| {
        vlp_core::keyfile::read_key_file(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
    };
    match (&a.socket, &a.udp) {
        (Some(p), _) => Varta::connect(p)
            .map(Varta::from)
            .map_err(|e| format!("--socket {}: cannot connect: {e}", p.display())),
        (None, Some(addr)) => {
            let v = match (&a.key_file, &a.master_key_file) {
                (Some(p), _) => {
                    Varta::connect_secure_udp(addr, read(p, "--key-file")?).map(Varta::from)
                }
                (None, Some(p)) => {
                    Varta::connect_secure_udp_with_master(addr, read(p, "--master-key-file")?)
                        .map(Varta::from)
                }
                (None, None) => Varta::connect_udp(addr).map(Varta::from),
            };
            v.map_err(|e| format!("--udp {addr}: cannot connect: {e}"))
        }
        (None, None) => Err("give --socket PATH or --udp ADDR".into()),
    }
}

/// Runs the agent; returns the process exit status.
///
/// # Errors
/// A one-line message for bad flags or files, or a refused beat.
pub fn run(a: &AgentArgs) -> Result<i32, String> {
    let mut varta = connect(a)?;
    let status = match a.status {
        AgentStatus::Ok => Status::Ok,
        AgentStatus::Degraded => Status::Degraded,
        AgentStatus::Critical => Status::Critical,
    };
    let interval = Duration::from_millis(a.interval_ms);
    let mut tally = Tally::default();
    let mut sent = 0u64;
    while a.count == 0 || sent < a.count {
        if a.crash_after == Some(sent) {
            tally.count(varta.terminal(CRASH_PAYLOAD))?;
            return Ok(CRASH_EXIT);
        }
        if a.hang_after == Some(sent) {
            match a.hang_ms {
                Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
                None => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
            }
        }
        // The payload counts beats, so a reader of the event stream can follow one agent.
        tally.count(varta.beat(status, u32::try_from(sent).unwrap_or(u32::MAX)))?;
        sent += 1;
        std::thread::sleep(interval);
    }
    if a.goodbye {
        tally.count(varta.goodbye())?;
    }
    if let Some(p) = &a.report {
        use std::io::Write;
        let line = format!(
            "pid={} sent={} dropped={}\n",
            std::process::id(),
            tally.sent,
            tally.dropped
        );
        // One short O_APPEND write: lines of concurrent agents do not interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| format!("--report {}: {e}", p.display()))?;
    }
    Ok(0)
}
