//! `beat`: a small command-line Varta agent, for trying an observer out and for the
//! observer's own end-to-end tests. Its flags and output are a stable interface.
//!
//! ```text
//! cargo run -p varta-client --example beat -- \
//!     (--socket PATH | --udp ADDR)
//!     [--key-file F | --master-key-file F | --agent-key-file F --agent-id N]
//!     [--interval-ms N] [--count N] [--status S] [--payload N]
//!     [--hang-after N] [--crash-after N] [--goodbye]
//!     [--reconnect-after N] [--wait-for-observer] [--quiet]
//! ```
//!
//! | flag | meaning |
//! |---|---|
//! | `--socket PATH` | Unix datagram socket of the observer |
//! | `--udp ADDR` | UDP address of the observer (`host:port`) |
//! | `--key-file F` | with `--udp`: seal with the shared key in F (60-byte datagrams) |
//! | `--master-key-file F` | with `--udp`: seal with the key derived from the master key in F (64-byte datagrams) |
//! | `--agent-key-file F` | with `--udp` and `--agent-id N`: seal with this agent's own key in F (derived from the master for N); frames carry N as their pid |
//! | `--agent-id N` | the agent id the `--agent-key-file` key was derived for |
//! | `--interval-ms N` | pause between beats, default 1000 |
//! | `--count N` | beats to send, then exit; 0 (default) = forever |
//! | `--status S` | `ok` (default), `degraded`, `critical`, or `stall` (refused by the library: tests that) |
//! | `--payload N` | u32 payload of every beat, default 0 |
//! | `--hang-after N` | after N beats stop beating but stay alive (sleep until killed): a hung process |
//! | `--crash-after N` | after N beats panic, with the panic handler installed (terminal frame, exit 101) |
//! | `--goodbye` | after the last beat (`--count`), send the clean-exit frame |
//! | `--reconnect-after N` | `Varta::set_reconnect_after(N)`; default: the library's (1) |
//! | `--wait-for-observer` | if connecting fails, retry every interval instead of exiting 1 |
//! | `--quiet` | no per-beat lines |
//!
//! Output, one line each on stdout (flushed per line):
//! `pid=<pid>` first (the agent id with `--agent-key-file`); per beat `beat n=<i> nonce=<nonce> outcome=<sent|dropped:<reason>|failed:<error>>`
//! (`<reason>` is `kernel_queue_full`, `no_observer`, `peer_gone` or `storage_full`);
//! `goodbye outcome=...` for `--goodbye`; `hanging` for `--hang-after`; last
//! `done sent=<n> dropped=<n> failed=<n>`.
//!
//! Exit status: 0 done; 1 could not connect; 2 bad arguments or key file; 3 some beat failed
//! (e.g. `--status stall`); 101 `--crash-after`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, ValueEnum};
use varta_client::vlp_core::keyfile::read_key_file;
use varta_client::{BeatOutcome, Key, Status, Varta};

#[derive(Parser, Debug)]
#[command(name = "beat", about = "A command-line Varta agent")]
#[command(group(ArgGroup::new("observer").required(true).args(["socket", "udp"])))]
#[command(group(ArgGroup::new("key").args(["key_file", "master_key_file", "agent_key_file"])))]
struct Args {
    /// Unix datagram socket of the observer.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// UDP address of the observer (host:port).
    #[arg(long, value_name = "ADDR")]
    udp: Option<String>,
    /// Seal with the shared key in this file (requires --udp).
    #[arg(long, value_name = "F", conflicts_with = "socket")]
    key_file: Option<PathBuf>,
    /// Seal with the per-agent key derived from the master key in this file (requires --udp).
    #[arg(long, value_name = "F", conflicts_with = "socket")]
    master_key_file: Option<PathBuf>,
    /// Seal with this agent's own key in this file (requires --udp and --agent-id).
    #[arg(
        long,
        value_name = "F",
        conflicts_with = "socket",
        requires = "agent_id"
    )]
    agent_key_file: Option<PathBuf>,
    /// The agent id the --agent-key-file key was derived for; frames carry it as their pid.
    #[arg(long, value_name = "N", requires = "agent_key_file")]
    agent_id: Option<u32>,
    /// Pause between beats, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    interval_ms: u64,
    /// Beats to send before exiting; 0 = forever.
    #[arg(long, value_name = "N", default_value_t = 0)]
    count: u64,
    /// Status of every beat.
    #[arg(long, value_name = "S", value_enum, default_value_t = StatusArg::Ok)]
    status: StatusArg,
    /// Payload of every beat.
    #[arg(long, value_name = "N", default_value_t = 0)]
    payload: u32,
    /// After N beats, stop beating but stay alive.
    #[arg(long, value_name = "N")]
    hang_after: Option<u64>,
    /// After N beats, panic (with the panic handler installed).
    #[arg(long, value_name = "N")]
    crash_after: Option<u64>,
    /// Send the clean-exit (goodbye) frame after the last beat.
    #[arg(long)]
    goodbye: bool,
    /// Reconnect after N consecutive curable drops (0 = never).
    #[arg(long, value_name = "N")]
    reconnect_after: Option<u32>,
    /// Keep retrying to connect, every interval, instead of exiting.
    #[arg(long)]
    wait_for_observer: bool,
    /// No per-beat output.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StatusArg {
    Ok,
    Degraded,
    Critical,
    Stall,
}

impl From<StatusArg> for Status {
    fn from(s: StatusArg) -> Status {
        match s {
            StatusArg::Ok => Status::Ok,
            StatusArg::Degraded => Status::Degraded,
            StatusArg::Critical => Status::Critical,
            StatusArg::Stall => Status::Stall,
        }
    }
}

/// The envelope chosen by the key flags.
#[derive(Clone)]
enum Sealing {
    Plain,
    Shared(Key),
    Master(Key),
    Agent(u32, Key),
}

fn connect(args: &Args, sealing: &Sealing) -> std::io::Result<Varta> {
    match (&args.socket, &args.udp, sealing) {
        (Some(path), _, _) => Varta::connect(path).map(Varta::from),
        (None, Some(addr), Sealing::Plain) => Varta::connect_udp(addr.as_str()).map(Varta::from),
        (None, Some(addr), Sealing::Shared(k)) => {
            Varta::connect_secure_udp(addr.as_str(), k.clone()).map(Varta::from)
        }
        (None, Some(addr), Sealing::Master(k)) => {
            Varta::connect_secure_udp_with_master(addr.as_str(), k.clone()).map(Varta::from)
        }
        (None, Some(addr), Sealing::Agent(id, k)) => {
            Varta::connect_secure_udp_with_agent_key(addr.as_str(), *id, k.clone()).map(Varta::from)
        }
        // clap's required group makes this unreachable; answer it anyway rather than panic.
        (None, None, _) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "one of --socket or --udp is required",
        )),
    }
}

fn install_crash_handler(args: &Args, sealing: &Sealing) -> std::io::Result<()> {
    match (&args.socket, &args.udp, sealing) {
        (Some(path), _, _) => varta_client::install_panic_handler(path),
        (None, Some(addr), Sealing::Plain) => {
            varta_client::install_panic_handler_udp(addr.as_str())
        }
        (None, Some(addr), Sealing::Shared(k)) => {
            varta_client::install_panic_handler_secure_udp(addr.as_str(), k.clone())
        }
        (None, Some(addr), Sealing::Master(k)) => {
            varta_client::install_panic_handler_secure_udp_with_master(addr.as_str(), k.clone())
        }
        (None, Some(addr), Sealing::Agent(id, k)) => {
            varta_client::install_panic_handler_secure_udp_with_agent_key(
                addr.as_str(),
                *id,
                k.clone(),
            )
        }
        (None, None, _) => Ok(()),
    }
}

fn load_key(path: &Path) -> Result<Key, ExitCode> {
    read_key_file(path).map_err(|e| {
        eprintln!("beat: key file {}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn outcome_text(o: BeatOutcome) -> String {
    match o {
        BeatOutcome::Sent => "sent".to_owned(),
        BeatOutcome::Dropped(r) => format!("dropped:{}", r.name()),
        BeatOutcome::Failed(e) => format!("failed:{e}"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sealing = match (&args.key_file, &args.master_key_file, &args.agent_key_file) {
        (Some(f), _, _) => match load_key(f) {
            Ok(k) => Sealing::Shared(k),
            Err(code) => return code,
        },
        (None, Some(f), _) => match load_key(f) {
            Ok(k) => Sealing::Master(k),
            Err(code) => return code,
        },
        (None, None, Some(f)) => match (load_key(f), args.agent_id) {
            (Ok(k), Some(id)) => Sealing::Agent(id, k),
            (Err(code), _) => return code,
            // clap's `requires` makes this unreachable; answer it anyway rather than panic.
            (Ok(_), None) => {
                eprintln!("beat: --agent-key-file needs --agent-id");
                return ExitCode::from(2);
            }
        },
        (None, None, None) => Sealing::Plain,
    };
    let interval = Duration::from_millis(args.interval_ms);
    match &sealing {
        Sealing::Agent(id, _) => println!("pid={id}"),
        _ => println!("pid={}", std::process::id()),
    }

    let mut varta = loop {
        match connect(&args, &sealing) {
            Ok(v) => break v,
            Err(e) if args.wait_for_observer => {
                if !args.quiet {
                    println!("waiting for observer: {e}");
                }
                std::thread::sleep(interval);
            }
            Err(e) => {
                eprintln!("beat: cannot connect to the observer: {e}");
                return ExitCode::from(1);
            }
        }
    };
    if let Some(n) = args.reconnect_after {
        varta.set_reconnect_after(n);
    }
    if args.crash_after.is_some() {
        if let Err(e) = install_crash_handler(&args, &sealing) {
            eprintln!("beat: cannot install the panic handler: {e}");
            return ExitCode::from(1);
        }
    }

    let status = Status::from(args.status);
    let (mut sent, mut dropped, mut failed) = (0u64, 0u64, 0u64);
    let mut n: u64 = 0;
    while args.count == 0 || n < args.count {
        if args.hang_after == Some(n) {
            println!("hanging");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        if args.crash_after == Some(n) {
            panic!("beat: --crash-after {n} reached");
        }
        let nonce = varta.next_nonce();
        let outcome = varta.beat(status, args.payload);
        n += 1;
        match outcome {
            BeatOutcome::Sent => sent += 1,
            BeatOutcome::Dropped(_) => dropped += 1,
            BeatOutcome::Failed(_) => failed += 1,
        }
        if !args.quiet {
            println!("beat n={n} nonce={nonce} outcome={}", outcome_text(outcome));
        }
        if args.count == 0 || n < args.count {
            std::thread::sleep(interval);
        }
    }
    // --hang-after/--crash-after equal to --count act after the last beat.
    if args.hang_after == Some(n) {
        println!("hanging");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if args.crash_after == Some(n) {
        panic!("beat: --crash-after {n} reached");
    }
    if args.goodbye {
        println!("goodbye outcome={}", outcome_text(varta.goodbye()));
    }
    println!("done sent={sent} dropped={dropped} failed={failed}");
    if failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
