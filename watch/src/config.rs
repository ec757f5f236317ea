//! Command line and configuration file.
//!
//! Flags keep the names and meanings of the original observer (`--socket`, `--threshold-ms`,
//! `--udp-port`, `--key-file`, ...). `--config FILE` reads the same keys from TOML
//! (`threshold-ms = 500`); a flag given on the command line wins over the file. Everything is
//! checked here, before any socket is opened, so a bad flag or file gives one line naming the
//! problem and exit status 2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use vlp_core::Key;

use crate::recovery::RecoveryConfig;

/// `varta-watch`: the Varta observer.
#[derive(Debug, Parser)]
#[command(name = "varta-watch", version, about = "Varta observer: tracks heartbeat agents and reports stalls", long_about = None)]
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
    /// Silence agents for maintenance: add, list, expire.
    Silence(crate::control::client::SilenceArgs),
}

/// Output format of event lines on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The observer's flags. Every field is optional so the configuration file can fill it in.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunArgs {
    /// Read settings from this TOML file (same keys as the flags, e.g. `threshold-ms = 500`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Unix datagram socket path [default: $XDG_RUNTIME_DIR/varta.sock or /run/varta/varta.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Do not open the Unix socket (UDP only).
    #[arg(long)]
    #[serde(default)]
    pub no_socket: bool,
    /// Permission bits of the socket file, octal [default: 0600].
    #[arg(long, value_name = "OCTAL")]
    pub socket_mode: Option<String>,
    /// An agent silent for this long is stalled [default: 1000].
    #[arg(long, value_name = "MS")]
    pub threshold_ms: Option<u64>,
    /// Also accept Unix senders of this uid (repeatable; our own uid is always accepted).
    #[arg(long, value_name = "UID")]
    #[serde(default)]
    pub allow_uid: Vec<u32>,
    /// Listen for UDP agents on this port.
    #[arg(long, value_name = "PORT")]
    pub udp_port: Option<u16>,
    /// Address the UDP listener binds [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    pub udp_bind_addr: Option<IpAddr>,
    /// Accept plaintext (unauthenticated) UDP frames. Anyone who can reach the port can then
    /// claim any pid.
    #[arg(long)]
    #[serde(default)]
    pub allow_plaintext_udp: bool,
    /// Shared key for secure UDP (60-byte datagrams).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Further accepted shared keys, for rotation (repeatable).
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
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
    /// Rotate the export file to FILE.1 once it reaches this size [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub export_max_bytes: Option<u64>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR")]
    pub prom_addr: Option<SocketAddr>,
    /// At most this many per-agent series in a scrape [default: 10000].
    #[arg(long, value_name = "N")]
    pub metrics_max_agents: Option<usize>,
    /// Run this program when an agent stalls or crashes: "prog arg {pid} ..." (no shell;
    /// placeholders {pid} {listener} {agent} {status} {reason}). Alias: --recovery-cmd.
    #[arg(long = "recovery-exec", alias = "recovery-cmd", value_name = "CMD")]
    #[serde(rename = "recovery-exec", alias = "recovery-cmd")]
    pub recovery_cmd: Option<String>,
    /// Read the recovery command from this file (regular, not a symlink, ours, 0600 or stricter).
    #[arg(long, value_name = "FILE", conflicts_with = "recovery_cmd")]
    pub recovery_exec_file: Option<PathBuf>,
    /// Environment variable for the recovery program (repeatable); its environment is
    /// otherwise cleared to PATH=/usr/bin:/bin.
    #[arg(long, value_name = "KEY=VALUE")]
    #[serde(default)]
    pub recovery_env: Vec<String>,
    /// The recovery program inherits the observer's whole environment.
    #[arg(long)]
    #[serde(default)]
    pub recovery_inherit_env: bool,
    /// Capture the recovery program's stdout and stderr (bounded) into its event line.
    #[arg(long)]
    #[serde(default)]
    pub recovery_capture_stdio: bool,
    /// Bytes of captured output kept per run [default: 4096, max 1048576].
    #[arg(long, value_name = "N")]
    pub recovery_capture_bytes: Option<usize>,
    /// Also recover agents authenticated by their own per-agent (master-derived) key.
    #[arg(long)]
    #[serde(default)]
    pub recovery_allow_agent_keys: bool,
    /// Also recover shared-key secure UDP agents (any holder of the shared key can claim any pid).
    #[arg(long)]
    #[serde(default)]
    pub secure_udp_i_accept_recovery_on_unauthenticated_transport: bool,
    /// Also recover plaintext UDP agents (anyone who reaches the port can claim any pid).
    #[arg(long)]
    #[serde(default)]
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
    #[serde(default)]
    pub recovery_allow_unattested: bool,
    /// Run the loop under SCHED_FIFO with this priority (1-99), so stall deadlines are met
    /// even when other processes load the CPU (needs CAP_SYS_NICE).
    #[arg(long, value_name = "PRIO")]
    pub rt_priority: Option<u8>,
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
    /// Metrics address.
    pub prom_addr: Option<SocketAddr>,
    /// Per-agent series cap.
    pub metrics_max_agents: usize,
    /// Recovery program, policy, child settings and audit trail.
    pub recovery: Option<RecoveryConfig>,
    /// How long recovery children get between SIGTERM and SIGKILL at shutdown.
    pub shutdown_grace: std::time::Duration,
    /// SCHED_FIFO priority of the loop.
    pub rt_priority: Option<u8>,
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

/// A configuration problem: one line for the operator.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The default socket path: `$XDG_RUNTIME_DIR/varta.sock`, else `/run/varta/varta.sock`.
#[must_use]
pub fn default_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("varta.sock"),
        _ => PathBuf::from("/run/varta/varta.sock"),
    }
}

fn read_key(path: &Path, flag: &str) -> Result<Key, ConfigError> {
    vlp_core::keyfile::read_key_file(path)
        .map_err(|e| ConfigError(format!("{flag} {}: {e}", path.display())))
}

macro_rules! merge {
    ($cli:ident, $file:ident, $($f:ident),*) => {
        $( if $cli.$f.is_none() { $cli.$f = $file.$f.take(); } )*
    };
}

impl RunArgs {
    /// Merges the `--config` file (if any) under the flags and checks everything.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad flag, key or file.
    pub fn resolve(mut self) -> Result<Config, ConfigError> {
        if let Some(path) = self.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError(format!("--config {}: cannot read: {e}", path.display()))
            })?;
            let mut file: RunArgs = toml::from_str(&text).map_err(|e| {
                let msg = e.message().replace('\n', " ");
                ConfigError(format!("--config {}: {msg}", path.display()))
            })?;
            merge!(
                self,
                file,
                socket,
                socket_mode,
                threshold_ms,
                udp_port,
                udp_bind_addr,
                udp_rcvbuf_bytes,
                key_file,
                master_key_file,
                tracker_capacity,
                evict_after_ms,
                format,
                export_file,
                export_max_bytes,
                prom_addr,
                metrics_max_agents,
                recovery_cmd,
                recovery_debounce_ms,
                recovery_timeout_ms,
                recovery_exec_file,
                recovery_capture_bytes,
                recovery_audit_file,
                recovery_audit_key_file,
                recovery_audit_sync_every,
                recovery_audit_max_bytes,
                shutdown_grace_ms
            );
            self.recovery_env.append(&mut file.recovery_env);
            self.recovery_inherit_env |= file.recovery_inherit_env;
            self.recovery_capture_stdio |= file.recovery_capture_stdio;
            self.recovery_allow_agent_keys |= file.recovery_allow_agent_keys;
            self.secure_udp_i_accept_recovery_on_unauthenticated_transport |=
                file.secure_udp_i_accept_recovery_on_unauthenticated_transport;
            self.plaintext_udp_i_accept_recovery_on_unauthenticated_transport |=
                file.plaintext_udp_i_accept_recovery_on_unauthenticated_transport;
            self.no_socket |= file.no_socket;
            self.allow_plaintext_udp |= file.allow_plaintext_udp;
            self.recovery_allow_unattested |= file.recovery_allow_unattested;
            self.allow_uid.append(&mut file.allow_uid);
            self.accepted_key_file.append(&mut file.accepted_key_file);
        }

        let socket_mode = match &self.socket_mode {
            None => 0o600,
            Some(s) => match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 => m,
                _ => {
                    return err(format!(
                        "--socket-mode {s}: expected octal permission bits such as 0600"
                    ))
                }
            },
        };
        let threshold_ms = self.threshold_ms.unwrap_or(1000);
        if threshold_ms == 0 || threshold_ms > 86_400_000 {
            return err(format!(
                "--threshold-ms {threshold_ms}: must be between 1 and 86400000"
            ));
        }
        let capacity = self.tracker_capacity.unwrap_or(65_536);
        if capacity == 0 || capacity > 16 << 20 {
            return err(format!(
                "--tracker-capacity {capacity}: must be between 1 and 16777216"
            ));
        }
        let evict_after_ms = self.evict_after_ms.unwrap_or(600_000);
        if evict_after_ms == 0 {
            return err("--evict-after-ms 0: must be at least 1");
        }

        let keyed = self.key_file.is_some()
            || !self.accepted_key_file.is_empty()
            || self.master_key_file.is_some();
        let udp = match self.udp_port {
            None => {
                if keyed || self.allow_plaintext_udp {
                    return err("--key-file/--accepted-key-file/--master-key-file/--allow-plaintext-udp need --udp-port");
                }
                None
            }
            Some(port) => {
                if !keyed && !self.allow_plaintext_udp {
                    return err(format!(
                        "--udp-port {port}: give a key (--key-file, --accepted-key-file, --master-key-file) or opt in to unauthenticated frames with --allow-plaintext-udp"
                    ));
                }
                let mut keys = Vec::new();
                if let Some(p) = &self.key_file {
                    keys.push(read_key(p, "--key-file")?);
                }
                for p in &self.accepted_key_file {
                    keys.push(read_key(p, "--accepted-key-file")?);
                }
                let master = match &self.master_key_file {
                    Some(p) => Some(read_key(p, "--master-key-file")?),
                    None => None,
                };
                let ip = self
                    .udp_bind_addr
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let rcvbuf = self.udp_rcvbuf_bytes.unwrap_or(crate::listener::RCVBUF);
                if !(65_536..=(1 << 31) - 1).contains(&rcvbuf) {
                    return err(format!(
                        "--udp-rcvbuf-bytes {rcvbuf}: must be between 65536 and 2147483647"
                    ));
                }
                Some(UdpConfig {
                    addr: SocketAddr::new(ip, port),
                    rcvbuf,
                    plaintext: self.allow_plaintext_udp,
                    keys,
                    master,
                })
            }
        };
        let socket = if self.no_socket {
            if udp.is_none() {
                return err("--no-socket without --udp-port leaves nothing to listen on");
            }
            None
        } else {
            Some(self.socket.clone().unwrap_or_else(default_socket))
        };

        let (recovery, shutdown_grace) =
            crate::recovery::settings::resolve(&self).map_err(ConfigError)?;
        if let Some(p) = self.rt_priority {
            if !(1..=99).contains(&p) {
                return err(format!("--rt-priority {p}: must be between 1 and 99"));
            }
        }
        if let Some(p) = &self.export_file {
            if p.as_os_str().is_empty() {
                return err("--export-file: empty path");
            }
        }

        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let mut allowed_uids = vec![me];
        allowed_uids.extend(self.allow_uid.iter().copied().filter(|u| *u != me));

        Ok(Config {
            socket,
            socket_mode,
            threshold_ns: threshold_ms * 1_000_000,
            allowed_uids,
            udp,
            capacity,
            evict_after_ns: evict_after_ms * 1_000_000,
            format: self.format.unwrap_or_default(),
            export_file: self.export_file.clone(),
            export_max_bytes: self.export_max_bytes.unwrap_or(64 << 20).max(4096),
            prom_addr: self.prom_addr,
            metrics_max_agents: self.metrics_max_agents.unwrap_or(10_000),
            recovery,
            shutdown_grace,
            rt_priority: self.rt_priority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_flags_win() {
        let text = include_str!("../varta-watch.example.toml");
        let file: RunArgs = toml::from_str(text).unwrap();
        assert_eq!(file.threshold_ms, Some(1000));
        assert_eq!(file.allow_uid, vec![1000]);
        assert_eq!(file.format, Some(Format::Text));

        let dir = std::env::temp_dir().join(format!("varta-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "threshold-ms = 250\nformat = \"json\"\nallow-uid = [7]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "varta-watch",
            "--config",
            path.to_str().unwrap(),
            "--threshold-ms",
            "40",
            "--socket",
            "/tmp/x.sock",
        ])
        .unwrap();
        let cfg = cli.run.resolve().unwrap();
        assert_eq!(cfg.threshold_ns, 40_000_000, "the flag wins");
        assert_eq!(cfg.format, Format::Json, "the file fills in");
        assert!(cfg.allowed_uids.contains(&7));
        assert_eq!(cfg.socket_mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
