//! Flags of the original observer (`varta-watch` 0.2) that have no older name here: the HTTP
//! guard, the heartbeat file, the clock, the Unix socket's buffer, the eviction policy, the
//! PID-namespace gate, the iteration budget, a timed shutdown, and four flags of the old
//! design that are accepted and have no effect. Flattened into [`super::RunArgs`], so each is
//! a flag and a `--config` key like every other.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::ConfigError;
use crate::compat::{ClockSource, CompatConfig, EvictionPolicy, NamespaceGate, RateLimit};

/// `--signal-handler-mode` values (accepted for compatibility; no effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalHandlerMode {
    /// The original's direct `sigaction` path.
    Direct,
    /// The original's libc `signal` path.
    Libc,
}

/// The compatibility flags (see the module docs).
#[derive(Debug, Default, Args)]
pub struct CompatArgs {
    /// Require `Authorization: Bearer TOKEN` on every path of --prom-addr; TOKEN is the
    /// file's 64 hex characters (file regular, ours, not a symlink, 0600 or stricter, as a
    /// key file). Other requests get 401, counted in varta_prom_auth_failures_total.
    #[arg(long, value_name = "FILE")]
    pub prom_token_file: Option<PathBuf>,
    /// Scrapes of /metrics allowed per second and source IP (token bucket); beyond, 429,
    /// counted in varta_prom_rate_limited_total [default: no limit].
    #[arg(long, value_name = "N")]
    pub prom_rate_limit_per_sec: Option<u32>,
    /// Burst of the per-source-IP scrape bucket [default: 2 × --prom-rate-limit-per-sec].
    #[arg(long, value_name = "N")]
    pub prom_rate_limit_burst: Option<u32>,
    /// Rewrite this file every loop turn (at least once a second) with one line: a turn
    /// counter that only grows, then the Unix time; a script can restart the observer when
    /// the counter stops growing.
    #[arg(long, value_name = "FILE")]
    pub heartbeat_file: Option<PathBuf>,
    /// The observer's clock: `monotonic` (silence while the machine is suspended does not
    /// count) or `boottime` (it does: agents are stalled after a long suspend)
    /// [default: monotonic].
    #[arg(long, value_enum)]
    pub clock_source: Option<ClockSource>,
    /// Kernel receive buffer of the Unix socket, bytes; 0 keeps the kernel's default
    /// [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub uds_rcvbuf_bytes: Option<usize>,
    /// When the tracker is full: `strict` makes room only by evicting agents already
    /// stalled (or dead), `balanced` may also evict the agent silent longest [default: dead
    /// entries only, then unproven identities for proven newcomers].
    #[arg(long, value_enum)]
    pub tracker_eviction_policy: Option<EvictionPolicy>,
    /// Exit cleanly (status 0) after this many seconds of uptime.
    #[arg(long, value_name = "S")]
    pub shutdown_after_secs: Option<u64>,
    /// Allow secure UDP (keys given) on an address other than loopback.
    #[arg(long)]
    pub i_accept_secure_udp_non_loopback: bool,
    /// Accept Unix agents in another PID namespace than ours, tracked under the pid this
    /// observer sees (refused and counted in varta_rejections_total{reason="cross_namespace"}
    /// otherwise).
    #[arg(long)]
    pub allow_cross_namespace_agents: bool,
    /// Also refuse Unix agents whose PID namespace cannot be read (process gone, /proc
    /// hidden); without it they are accepted.
    #[arg(long)]
    pub strict_namespace_check: bool,
    /// A loop turn should take at most this long; sets the buckets of
    /// varta_observer_iteration_seconds and counts longer turns in
    /// varta_observer_iteration_over_budget_total [default: 250].
    #[arg(long, value_name = "MS")]
    pub iteration_budget_ms: Option<u64>,
    /// No effect (the original's poll granularity; this observer sleeps until the next
    /// deadline). Accepted for compatibility.
    #[arg(long, value_name = "MS")]
    pub read_timeout_ms: Option<u64>,
    /// No effect (the original's signal installation path). Accepted for compatibility.
    #[arg(long, value_enum)]
    pub signal_handler_mode: Option<SignalHandlerMode>,
    /// No effect (the original scanned slots to find a victim; this tracker keeps sorted
    /// lists). Accepted for compatibility.
    #[arg(long, value_name = "N")]
    pub eviction_scan_window: Option<u64>,
    /// No effect (scrapes are answered on their own thread and never delay the loop).
    /// Accepted for compatibility.
    #[arg(long, value_name = "MS")]
    pub scrape_budget_ms: Option<u64>,
}

impl CompatArgs {
    /// Checks the compatibility flags. `secure_udp_off_loopback` is whether a keyed UDP
    /// listener is configured on an address other than loopback.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the flag.
    pub fn resolve(&self, secure_udp_off_loopback: bool) -> Result<CompatConfig, ConfigError> {
        if secure_udp_off_loopback && !self.i_accept_secure_udp_non_loopback {
            return Err(ConfigError::SecureUdpOffLoopback);
        }
        let token = match &self.prom_token_file {
            Some(p) => Some(vlp_core::keyfile::read_key_file(p).map_err(|source| {
                ConfigError::KeyFile {
                    flag: "prom-token-file",
                    path: p.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let rate_limit = match (self.prom_rate_limit_per_sec, self.prom_rate_limit_burst) {
            (None, None) => None,
            (None, Some(_)) => return Err(ConfigError::BurstWithoutRate),
            (Some(rate), burst) => {
                let rate =
                    super::resolve::ranged_u32("prom-rate-limit-per-sec", rate, 1, 1_000_000)?;
                let burst = super::resolve::ranged_u32(
                    "prom-rate-limit-burst",
                    burst.unwrap_or(rate.saturating_mul(2)),
                    1,
                    1_000_000,
                )?;
                Some(RateLimit { rate, burst })
            }
        };
        if matches!(&self.heartbeat_file, Some(p) if p.as_os_str().is_empty()) {
            return Err(ConfigError::EmptyPath("heartbeat-file"));
        }
        let uds_rcvbuf = match self.uds_rcvbuf_bytes {
            None | Some(0) => self.uds_rcvbuf_bytes,
            v => Some(super::resolve::usize_ranged(
                "uds-rcvbuf-bytes",
                v,
                crate::listener::RCVBUF,
                4096,
                (1 << 31) - 1,
            )?),
        };
        let shutdown_after = match self.shutdown_after_secs {
            Some(s) => Some(Duration::from_secs(super::resolve::ranged(
                "shutdown-after-secs",
                Some(s),
                0,
                1,
                super::resolve::MAX_MS / 1000,
            )?)),
            None => None,
        };
        let iteration_budget = Duration::from_nanos(super::resolve::ms_to_ns(
            "iteration-budget-ms",
            self.iteration_budget_ms,
            250,
            1,
            3_600_000,
        )?);
        let mut no_effect = Vec::new();
        for (flag, given) in [
            ("read-timeout-ms", self.read_timeout_ms.is_some()),
            ("signal-handler-mode", self.signal_handler_mode.is_some()),
            ("eviction-scan-window", self.eviction_scan_window.is_some()),
            ("scrape-budget-ms", self.scrape_budget_ms.is_some()),
        ] {
            if given {
                no_effect.push(flag);
            }
        }
        Ok(CompatConfig {
            prom_token: token,
            prom_rate_limit: rate_limit,
            heartbeat_file: self.heartbeat_file.clone(),
            clock: self.clock_source.unwrap_or_default(),
            uds_rcvbuf,
            eviction: self.tracker_eviction_policy,
            shutdown_after,
            namespace_gate: NamespaceGate {
                allow_cross: self.allow_cross_namespace_agents,
                strict: self.strict_namespace_check,
            },
            iteration_budget,
            no_effect,
        })
    }
}
