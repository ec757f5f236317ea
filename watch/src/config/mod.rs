//! Command line and configuration file: the config room.
//!
//! Flags keep the names and meanings of the original observer (`--socket`, `--threshold-ms`,
//! `--udp-port`, `--key-file`, ...). Every setting is defined once, as a field of [`RunArgs`]
//! (clap derive); `--config FILE` reads the same names as TOML keys through that same
//! definition ([`mod@file`]), so no setting can exist on the command line and be ignored in a file.
//! A flag given on the command line wins over the file. Everything is checked here
//! ([`RunArgs::resolve`]), before any socket is opened, so a bad flag or file gives one line naming the
//! problem ([`ConfigError`]) and exit status 2.

pub mod compat;
mod error;
pub mod file;
mod resolve;

pub use error::ConfigError;
pub use resolve::{default_socket, MAX_WORKERS};

use std::ffi::OsString;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use vlp_core::Key;

use crate::recovery::RecoveryConfig;

/// `varta-watch`: the Varta observer.
#[derive(Debug, Parser)]
#[command(name = "varta-watch", version, about = "Varta observer: tracks heartbeat agents and reports stalls", long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without a subcommand, run the observer.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Observer flags (when no subcommand is given).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the observer (the default).
    Run(Box<RunArgs>),
    /// Audit trail tools: `audit verify FILE…` checks the recovery audit chain.
    Audit(crate::recovery::verify::AuditArgs),
    /// Key provisioning: `key derive` writes an agent's own key from the master key.
    Key(crate::keytool::KeyArgs),
    /// Every agent's state from a running observer (stalled first).
    Status(crate::control::client::StatusArgs),
    /// Tell a running observer to reload its configuration (SIGHUP to the pid behind the
    /// control socket).
    Reload(crate::control::client::ReloadArgs),
    /// Silence agents for maintenance: add, list, expire.
    Silence(crate::control::client::SilenceArgs),
    /// State-file tools: `state anchor FILE` prints the audit anchor it records.
    State(crate::daemon::state::StateArgs),
}

/// Output format of event lines on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The observer's flags: the one definition of every setting. Each is also a key of the
/// `--config` file (the flag without `--`); defaults are applied in [`RunArgs::resolve`], so that an
/// absent flag can be told from a default one.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Read settings from this TOML file (same keys as the flags, e.g. `threshold-ms = 500`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unix datagram socket path [default: $XDG_RUNTIME_DIR/varta.sock or /run/varta/varta.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Do not open the Unix socket (UDP only).
    #[arg(long)]
    pub no_socket: bool,
    /// Permission bits of the socket file, octal [default: 0600].
    #[arg(long, value_name = "OCTAL")]
    pub socket_mode: Option<String>,
    /// An agent silent for this long is stalled [default: 1000].
    #[arg(long, value_name = "MS")]
    pub threshold_ms: Option<u64>,
    /// Also accept Unix senders of this uid (repeatable; our own uid is always accepted).
    #[arg(long, value_name = "UID")]
    pub allow_uid: Vec<u32>,
    /// Listen for UDP agents on this port.
    #[arg(long, value_name = "PORT")]
    pub udp_port: Option<u16>,
    /// Address the UDP listener binds [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    pub udp_bind_addr: Option<IpAddr>,
    /// Accept plaintext (unauthenticated) UDP frames. Anyone who can reach the port can then
    /// claim any pid. Alias: --i-accept-plaintext-udp.
    #[arg(long, alias = "i-accept-plaintext-udp")]
    pub allow_plaintext_udp: bool,
    /// Shared key for secure UDP (60-byte datagrams).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Further accepted shared keys, for rotation (repeatable).
    #[arg(long, value_name = "FILE")]
    pub accepted_key_file: Vec<PathBuf>,
    /// Master key for secure UDP with per-agent derived keys (64-byte datagrams).
    #[arg(long, value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Kernel receive buffer of the UDP listener; beats arriving while it is full are
    /// dropped by the kernel (varta_receive_queue_drops_total) [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub udp_rcvbuf_bytes: Option<usize>,
    /// Maximum number of tracked agents [default: 65536].
    #[arg(long, value_name = "N")]
    pub tracker_capacity: Option<usize>,
    /// Forget stalled or dead agents after this long [default: 600000].
    #[arg(long, value_name = "MS")]
    pub evict_after_ms: Option<u64>,
    /// Event line format on stdout [default: text].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Append events to this TSV file (observer_ns, kind, pid, nonce, status, detail).
    #[arg(long, value_name = "FILE")]
    pub export_file: Option<PathBuf>,
    /// Rotate the export file once it reaches this size, keeping 5 generations FILE.1 …
    /// FILE.5 [default: 67108864]. Alias: --export-file-max-bytes.
    #[arg(long, alias = "export-file-max-bytes", value_name = "BYTES")]
    pub export_max_bytes: Option<u64>,
    /// fdatasync the export file every N records; 0: only at rotation and shutdown
    /// [default: 0].
    #[arg(long, value_name = "N")]
    pub export_file_sync_every: Option<u32>,
    /// Line format of the export file: `compat` (the existing Varta observer's six columns) or
    /// `varta` (our event kinds and details) [default: compat].
    #[arg(long, value_enum)]
    pub export_format: Option<crate::output::ExportFormat>,
    /// Refuse beats of one agent beyond N per second (burst N), counted in
    /// varta_rate_limited_total{reason="per_pid"}; 0 or absent: off.
    #[arg(long, value_name = "N")]
    pub max_beat_rate: Option<u32>,
    /// Refuse beats of all agents together beyond N per second, counted in
    /// varta_rate_limited_total{reason="global"}; 0 or absent: off.
    #[arg(long, value_name = "N")]
    pub global_beat_rate: Option<u32>,
    /// Burst of --global-beat-rate [default: one second's worth].
    #[arg(long, value_name = "N")]
    pub global_beat_burst: Option<u32>,
    /// Master-key derivations per second for agents not yet tracked (a flood of forged pids
    /// costs at most this much HKDF work); 0: no bound [default: 20000].
    #[arg(long, value_name = "N")]
    pub max_key_derivations_per_sec: Option<u32>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR")]
    pub prom_addr: Option<SocketAddr>,
    /// At most this many per-agent series in a scrape [default: 10000].
    #[arg(long, value_name = "N")]
    pub metrics_max_agents: Option<usize>,
    /// Most HTTP connections served at once; further ones are closed at once and counted in
    /// varta_prom_connections_dropped_total{reason="capacity"} [default: 512].
    #[arg(long, value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// Close an HTTP connection whose request headers have not all arrived after this long
    /// [default: 5000].
    #[arg(long, value_name = "MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// Close an HTTP connection that has sent or received nothing for this long [default:
    /// 30000].
    #[arg(long, value_name = "MS")]
    pub http_idle_timeout_ms: Option<u64>,
    /// Run this program when an agent stalls or crashes: "prog arg {pid} ..." (no shell;
    /// placeholders {pid} {listener} {agent} {status} {reason}). Alias: --recovery-cmd.
    #[arg(long = "recovery-exec", alias = "recovery-cmd", value_name = "CMD")]
    pub recovery_cmd: Option<String>,
    /// Read the recovery command from this file (regular, not a symlink, ours, 0600 or stricter).
    #[arg(long, value_name = "FILE", conflicts_with = "recovery_cmd")]
    pub recovery_exec_file: Option<PathBuf>,
    /// Environment variable for the recovery program (repeatable); its environment is
    /// otherwise cleared to PATH=/usr/bin:/bin.
    #[arg(long, value_name = "KEY=VALUE")]
    pub recovery_env: Vec<String>,
    /// The recovery program inherits the observer's whole environment.
    #[arg(long)]
    pub recovery_inherit_env: bool,
    /// Capture the recovery program's stdout and stderr (bounded) into its event line.
    #[arg(long)]
    pub recovery_capture_stdio: bool,
    /// Bytes of captured output kept per run [default: 4096, max 1048576].
    #[arg(long, value_name = "N")]
    pub recovery_capture_bytes: Option<usize>,
    /// Also recover agents authenticated by their own per-agent (master-derived) key.
    #[arg(long)]
    pub recovery_allow_agent_keys: bool,
    /// Also recover shared-key secure UDP agents (any holder of the shared key can claim any pid).
    #[arg(long)]
    pub secure_udp_i_accept_recovery_on_unauthenticated_transport: bool,
    /// Also recover plaintext UDP agents (anyone who reaches the port can claim any pid).
    #[arg(long)]
    pub plaintext_udp_i_accept_recovery_on_unauthenticated_transport: bool,
    /// Append a chained, tamper-evident record of every recovery decision to this file.
    #[arg(long, value_name = "FILE")]
    pub recovery_audit_file: Option<PathBuf>,
    /// Chain audit records with HMAC-SHA256 under this key (64 hex) instead of SHA-256.
    #[arg(long, value_name = "FILE")]
    pub recovery_audit_key_file: Option<PathBuf>,
    /// fdatasync the audit file every N records [default: 1; 0 is refused].
    #[arg(long, value_name = "N")]
    pub recovery_audit_sync_every: Option<u32>,
    /// Rotate the audit file at this size, keeping 5 generations [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub recovery_audit_max_bytes: Option<u64>,
    /// Also fdatasync the audit file once this long has passed since its last sync; 0: only
    /// every --recovery-audit-sync-every records [default: 0].
    #[arg(long, value_name = "MS")]
    pub audit_sync_interval_ms: Option<u64>,
    /// An audit fdatasync slower than this is counted in
    /// varta_recovery_audit_over_budget_total{op="fsync"} (the loop waits for it) [default: 50].
    #[arg(long, value_name = "MS")]
    pub audit_fsync_budget_ms: Option<u64>,
    /// An audit file rotation slower than this is counted in
    /// varta_recovery_audit_over_budget_total{op="rotation"} [default: 50].
    #[arg(long, value_name = "MS")]
    pub audit_rotation_budget_ms: Option<u64>,
    /// At shutdown, recovery children get SIGTERM, then SIGKILL after this long
    /// [default: 5000, min 100].
    #[arg(long, value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// At most one recovery run per agent per this long [default: 10000].
    #[arg(long, value_name = "MS")]
    pub recovery_debounce_ms: Option<u64>,
    /// Kill a recovery program (and its process group) still running after this long; counted
    /// as outcome `timeout` [default: 30000].
    #[arg(long, value_name = "MS")]
    pub recovery_timeout_ms: Option<u64>,
    /// Also run recovery for UDP agents, whose pid is claimed rather than kernel-attested
    /// (both --*-i-accept-recovery-on-unauthenticated-transport flags).
    #[arg(long)]
    pub recovery_allow_unattested: bool,
    /// Abort (for the service manager to restart us) when the loop has not turned for this
    /// many seconds, checked from a second thread; the loop then turns at least every S/2.
    #[arg(long, value_name = "S")]
    pub self_watchdog_secs: Option<u64>,
    /// Run the loop under SCHED_FIFO with this priority (1-99), so stall deadlines are met
    /// even when other processes load the CPU (needs CAP_SYS_NICE).
    #[arg(long, value_name = "PRIO")]
    pub rt_priority: Option<u8>,
    /// A class of agents with its own policy, `NAME:KEY=VALUE,...` with matchers (unit, exe,
    /// comm, uid, pid, listener, key) and settings (threshold-ms, recovery, severity,
    /// label.NAME); repeatable, first match wins, after the file's `[[class]]` sections.
    #[arg(long = "class", value_name = "NAME:KEY=VALUE,...")]
    pub class: Vec<crate::policy::class::ClassConfig>,
    /// Flags of the original observer without an older name here.
    #[command(flatten)]
    pub compat: compat::CompatArgs,
    /// Keep the agent table in this file across restarts (snapshotted periodically and at
    /// SIGTERM/SIGINT, restored at start; ours, mode 0600, not a symlink).
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Snapshot the state file this often [default: 1000].
    #[arg(long, value_name = "MS", requires = "state_file")]
    pub state_interval_ms: Option<u64>,
    /// Post alerts straight to this Alertmanager (base URL such as http://127.0.0.1:9093;
    /// repeatable, one per instance of an HA cluster) the moment an agent stalls or crashes,
    /// and resolve them when it recovers or exits.
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Vec<String>,
    /// Re-send active alerts to Alertmanager this often [default: 30000].
    #[arg(long, value_name = "MS")]
    pub alert_resend_ms: Option<u64>,
    /// Pet this hardware watchdog device (e.g. /dev/watchdog0) while the loop turns, at least
    /// every half of its timeout; magic close (`V`) on a clean exit.
    #[arg(long, value_name = "PATH")]
    pub hw_watchdog: Option<PathBuf>,
    /// Longest time the Unix socket is left unread after a turn that read datagrams, so many
    /// agents cost few wake-ups (beats keep their kernel receive times; the hold-off adapts
    /// to the queue's room, net.unix.max_dgram_qlen, and ends at every deadline); 0: read on
    /// every wake-up [default: 4000].
    #[arg(long, value_name = "US")]
    pub max_hold_us: Option<u64>,
    /// The loop stops sleeping this long before an agent's deadline and polls instead, so a
    /// stall is reported the moment it is due (a timer wake-up can be later than that on a
    /// virtual machine); costs at most this much CPU per deadline approached; 0: sleep until
    /// the deadline [default: 150].
    #[arg(long, value_name = "US")]
    pub deadline_spin_us: Option<u64>,
    /// Receive threads for the UDP listener: N `SO_REUSEPORT` sockets, each read and its
    /// secure datagrams opened by its own thread, every opened frame handed to the one table
    /// (replay windows and deadlines stay in one place); `auto`: one per CPU. The Unix socket
    /// is read by the event loop [default: 1].
    #[arg(long, value_name = "N|auto")]
    pub workers: Option<String>,
}

/// Fully checked settings.
#[derive(Debug)]
pub struct Config {
    /// Unix socket path, if enabled.
    pub socket: Option<PathBuf>,
    /// Socket file mode.
    pub socket_mode: u32,
    /// Stall threshold, ns.
    pub threshold_ns: u64,
    /// Accepted Unix uids (our euid first).
    pub allowed_uids: Vec<u32>,
    /// UDP listener.
    pub udp: Option<UdpConfig>,
    /// Tracker capacity.
    pub capacity: usize,
    /// Eviction age, ns.
    pub evict_after_ns: u64,
    /// Output format.
    pub format: Format,
    /// TSV export.
    pub export_file: Option<PathBuf>,
    /// Rotation size.
    pub export_max_bytes: u64,
    /// Export fdatasync period, records (0: rotation and shutdown only).
    pub export_sync_every: u32,
    /// Export line format.
    pub export_format: crate::output::ExportFormat,
    /// Beat rate limits and the key-derivation budget.
    pub rate: crate::tracker::RateConfig,
    /// Metrics address.
    pub prom_addr: Option<SocketAddr>,
    /// Per-agent series cap.
    pub metrics_max_agents: usize,
    /// Limits of the HTTP side.
    pub http: crate::metrics::HttpLimits,
    /// Recovery program, policy, child settings and audit trail.
    pub recovery: Option<RecoveryConfig>,
    /// How long recovery children get between SIGTERM and SIGKILL at shutdown.
    pub shutdown_grace: std::time::Duration,
    /// SCHED_FIFO priority of the loop.
    pub rt_priority: Option<u8>,
    /// Abort when the loop has not turned for this long.
    pub self_watchdog: Option<std::time::Duration>,
    /// `[[class]]` (file, then `--class`) and `[[name]]` sections, checked.
    pub policy: crate::policy::PolicyConfig,
    /// What the default class holds: the global threshold and recovery settings.
    pub class_defaults: crate::policy::class::Defaults,
    /// Settings of the original observer's flags (HTTP guard, heartbeat file, clock, ...).
    pub compat: crate::compat::CompatConfig,
    /// The state file.
    pub state: Option<crate::daemon::state::StateConfig>,
    /// Direct Alertmanager delivery.
    pub alerting: Option<crate::alerting::AlertingConfig>,
    /// Hardware watchdog device to pet.
    pub hw_watchdog: Option<PathBuf>,
    /// Longest hold-off of the Unix socket, ns (0: none).
    pub max_hold_ns: u64,
    /// Receive threads of the UDP listener (1: the event loop reads it).
    pub workers: usize,
    /// How long before a deadline the loop polls instead of sleeping, ns.
    pub deadline_spin_ns: u64,
}

/// The UDP listener's settings.
#[derive(Debug)]
pub struct UdpConfig {
    /// Bind address.
    pub addr: SocketAddr,
    /// Kernel receive buffer, bytes.
    pub rcvbuf: usize,
    /// Plaintext allowed.
    pub plaintext: bool,
    /// Shared keys (first = --key-file).
    pub keys: Vec<Key>,
    /// Master key.
    pub master: Option<Key>,
}

impl UdpConfig {
    /// No key is configured: the listener takes plaintext frames only.
    #[must_use]
    pub fn plaintext_only(&self) -> bool {
        self.keys.is_empty() && self.master.is_none()
    }
}

impl RunArgs {
    /// The clap command holding exactly the observer's flags (no program name), the one
    /// parser of both the command line and the configuration file.
    #[must_use]
    pub fn command() -> clap::Command {
        RunArgs::augment_args(
            clap::Command::new("varta-watch")
                .no_binary_name(true)
                .args_override_self(true),
        )
    }

    fn parse(args: &[OsString]) -> Result<RunArgs, String> {
        RunArgs::command()
            .try_get_matches_from(args)
            .and_then(|m| RunArgs::from_arg_matches(&m))
            .map_err(|e| first_line(&e))
    }

    /// Parses the observer's arguments `argv` (without the program name), reads the
    /// `--config` file if one is named, and checks everything.
    ///
    /// The file's keys become arguments placed before `argv`, so the command line wins.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad flag, key or file.
    pub fn load(argv: &[OsString]) -> Result<Config, ConfigError> {
        let cli = RunArgs::parse(argv).map_err(ConfigError::Args)?;
        let Some(path) = cli.config.clone() else {
            let cfg = cli.resolve()?;
            return crate::policy::config::checked(cfg, crate::policy::PolicyConfig::default());
        };
        let text = file::read_checked(&path)?;
        let sections = file::policy_sections(&path, &text)?;
        let mut all = file::to_args(&path, &text, &RunArgs::command())?;
        // The file's arguments alone first, so that a bad value is reported as the file's.
        RunArgs::parse(&all).map_err(|msg| ConfigError::FileValue {
            path: path.clone(),
            msg,
        })?;
        all.extend(argv.iter().cloned());
        let cfg = RunArgs::parse(&all).map_err(ConfigError::Args)?.resolve()?;
        crate::policy::config::checked(cfg, sections)
    }
}

/// Parses the command line of program `prog` as `T`; `--help` and `--version` are printed and
/// end the program with status 0, a bad argument with one line naming it (clap's usage block
/// would bury it) and status 2.
///
/// # Errors
/// The exit code to end with, after its output was printed.
pub fn parse_or_exit<T: clap::Parser>(prog: &str) -> Result<T, std::process::ExitCode> {
    use clap::error::ErrorKind;
    T::try_parse().map_err(|e| {
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        eprintln!("{prog}: {} (see --help)", first_line(&e));
        std::process::ExitCode::from(2)
    })
}

/// The first non-empty line of a clap error, without its `error: ` prefix.
#[must_use]
pub fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("bad arguments")
        .trim_start_matches("error: ")
        .to_string()
}

#[cfg(test)]
mod tests;
