//! From parsed flags to a checked [`Config`]: defaults, ranges, keys, and the rules that tie
//! flags together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use vlp_core::Key;

use super::{Config, ConfigError, RunArgs, UdpConfig};

/// The longest millisecond setting: one year (`* 1_000_000` cannot overflow a `u64`).
pub const MAX_MS: u64 = 365 * 86_400_000;

/// The default socket path: `$XDG_RUNTIME_DIR/varta.sock`, else `/run/varta/varta.sock`.
#[must_use]
pub fn default_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("varta.sock"),
        _ => PathBuf::from("/run/varta/varta.sock"),
    }
}

fn read_key(path: &Path, flag: &'static str) -> Result<Key, ConfigError> {
    vlp_core::keyfile::read_key_file(path).map_err(|source| ConfigError::KeyFile {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// `value` (default `default`) checked against `min..=max`.
pub(super) fn ranged(
    flag: &'static str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::OutOfRange {
            flag,
            value: v,
            min,
            max,
        })
    }
}

/// A millisecond setting in nanoseconds, range-checked (at most [`MAX_MS`] unless `max` is
/// lower).
pub(super) fn ms_to_ns(
    flag: &'static str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    Ok(ranged(flag, value, default, min, max.min(MAX_MS))? * 1_000_000)
}

pub(super) fn usize_ranged(
    flag: &'static str,
    value: Option<usize>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let v = ranged(
        flag,
        value.map(|v| v as u64),
        default as u64,
        min as u64,
        max as u64,
    )?;
    // In range of a usize bound, so it fits.
    Ok(usize::try_from(v).unwrap_or(max))
}

/// A `u32` setting checked against `min..=max`.
pub(super) fn ranged_u32(
    flag: &'static str,
    value: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let v = ranged(flag, Some(value.into()), 0, min.into(), max.into())?;
    Ok(u32::try_from(v).unwrap_or(max))
}

impl RunArgs {
    /// Applies defaults and checks every flag (the `--config` file, if any, was already read
    /// into these flags by [`RunArgs::load`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad flag or file.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let socket_mode = match &self.socket_mode {
            None => 0o600,
            Some(s) => match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 => m,
                _ => return Err(ConfigError::SocketMode(s.clone())),
            },
        };
        let threshold_ns = ms_to_ns("threshold-ms", self.threshold_ms, 1000, 1, 86_400_000)?;
        let capacity = usize_ranged(
            "tracker-capacity",
            self.tracker_capacity,
            65_536,
            1,
            16 << 20,
        )?;
        let evict_after_ns = ms_to_ns("evict-after-ms", self.evict_after_ms, 600_000, 1, MAX_MS)?;

        let keyed = self.key_file.is_some()
            || !self.accepted_key_file.is_empty()
            || self.master_key_file.is_some();
        let udp = match self.udp_port {
            None => {
                if keyed || self.allow_plaintext_udp {
                    return Err(ConfigError::UdpOptionWithoutPort);
                }
                None
            }
            Some(port) => {
                if !keyed && !self.allow_plaintext_udp {
                    return Err(ConfigError::UdpWithoutAuth(port));
                }
                let mut keys = Vec::new();
                if let Some(p) = &self.key_file {
                    keys.push(read_key(p, "key-file")?);
                }
                // An accepted-key file holds one key per line (comments and blank lines
                // allowed), as the existing observer's do.
                for p in &self.accepted_key_file {
                    keys.extend(vlp_core::keyfile::read_key_list(p).map_err(|source| {
                        ConfigError::KeyFile {
                            flag: "accepted-key-file",
                            path: p.clone(),
                            source,
                        }
                    })?);
                }
                let master = match &self.master_key_file {
                    Some(p) => Some(read_key(p, "master-key-file")?),
                    None => None,
                };
                let ip = self
                    .udp_bind_addr
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let rcvbuf = usize_ranged(
                    "udp-rcvbuf-bytes",
                    self.udp_rcvbuf_bytes,
                    crate::listener::RCVBUF,
                    65_536,
                    (1 << 31) - 1,
                )?;
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
                return Err(ConfigError::NothingToListen);
            }
            None
        } else {
            Some(self.socket.clone().unwrap_or_else(default_socket))
        };

        let (recovery, shutdown_grace) =
            crate::recovery::settings::resolve(self).map_err(ConfigError::Recovery)?;
        let rt_priority = match self.rt_priority {
            Some(p) => {
                Some(u8::try_from(ranged("rt-priority", Some(p.into()), 0, 1, 99)?).unwrap_or(99))
            }
            None => None,
        };
        if matches!(&self.export_file, Some(p) if p.as_os_str().is_empty()) {
            return Err(ConfigError::EmptyPath("export-file"));
        }
        let export_max_bytes = ranged(
            "export-max-bytes",
            self.export_max_bytes,
            64 << 20,
            4096,
            u64::MAX,
        )?;
        let metrics_max_agents = usize_ranged(
            "metrics-max-agents",
            self.metrics_max_agents,
            10_000,
            0,
            16 << 20,
        )?;
        let http = crate::metrics::HttpLimits {
            max_connections: usize_ranged(
                "http-max-connections",
                self.http_max_connections,
                512,
                1,
                65_536,
            )?,
            header_timeout: std::time::Duration::from_nanos(ms_to_ns(
                "http-header-timeout-ms",
                self.http_header_timeout_ms,
                5_000,
                1,
                600_000,
            )?),
            idle_timeout: std::time::Duration::from_nanos(ms_to_ns(
                "http-idle-timeout-ms",
                self.http_idle_timeout_ms,
                30_000,
                1,
                3_600_000,
            )?),
        };

        let self_watchdog = match self.self_watchdog_secs {
            Some(s) => Some(std::time::Duration::from_secs(ranged(
                "self-watchdog-secs",
                Some(s),
                0,
                1,
                86_400,
            )?)),
            None => None,
        };
        let state = match &self.state_file {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(ConfigError::EmptyPath("state-file"))
            }
            Some(p) => Some(crate::daemon::state::StateConfig {
                path: p.clone(),
                interval_ns: ms_to_ns(
                    "state-interval-ms",
                    self.state_interval_ms,
                    1_000,
                    10,
                    86_400_000,
                )?,
            }),
            None => None,
        };
        let secure_off_loopback =
            matches!(&udp, Some(u) if !u.plaintext_only() && !u.addr.ip().is_loopback());
        let compat = self.compat.resolve(secure_off_loopback)?;
        let max_hold_ns = 1_000
            * ranged(
                "max-hold-us",
                self.max_hold_us,
                crate::listener::pace::MAX_HOLD_NS / 1_000,
                0,
                100_000,
            )?;
        let workers = self.workers()?;
        let deadline_spin_ns = 1_000
            * ranged(
                "deadline-spin-us",
                self.deadline_spin_us,
                DEADLINE_SPIN_US,
                0,
                10_000,
            )?;
        let me = rustix::process::geteuid().as_raw();
        let mut allowed_uids = vec![me];
        allowed_uids.extend(self.allow_uid.iter().copied().filter(|u| *u != me));

        Ok(Config {
            socket,
            socket_mode,
            threshold_ns,
            allowed_uids,
            udp,
            capacity,
            evict_after_ns,
            format: self.format.unwrap_or_default(),
            export_file: self.export_file.clone(),
            export_max_bytes,
            export_sync_every: self.export_file_sync_every.unwrap_or(0),
            export_format: self.export_format.unwrap_or_default(),
            rate: self.rate_config()?,
            prom_addr: self.prom_addr,
            metrics_max_agents,
            http,
            shutdown_grace,
            rt_priority,
            self_watchdog,
            policy: crate::policy::PolicyConfig {
                classes: self.class.clone(),
                names: Vec::new(),
            },
            class_defaults: crate::policy::config::defaults(threshold_ns, recovery.as_ref()),
            recovery,
            state,
            alerting: crate::alerting::settings::resolve(self)?,
            hw_watchdog: match &self.hw_watchdog {
                Some(p) if p.as_os_str().is_empty() => {
                    return Err(ConfigError::EmptyPath("hw-watchdog"))
                }
                p => p.clone(),
            },
            compat,
            max_hold_ns,
            workers,
            deadline_spin_ns,
        })
    }

    /// `--workers N|auto`: 1 to [`MAX_WORKERS`]; `auto` is the CPUs this process may run on.
    fn workers(&self) -> Result<usize, ConfigError> {
        let n = match self.workers.as_deref() {
            None => 1,
            Some("auto") => std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(MAX_WORKERS),
            Some(v) => match v.parse::<u64>() {
                Ok(n) => ranged("workers", Some(n), 1, 1, MAX_WORKERS as u64)? as usize,
                Err(_) => return Err(ConfigError::Workers(v.to_string())),
            },
        };
        Ok(n)
    }
}

/// `--deadline-spin-us` by default.
pub const DEADLINE_SPIN_US: u64 = 150;

/// Most receive threads `--workers` starts.
pub const MAX_WORKERS: usize = 64;

impl RunArgs {
    /// `--max-beat-rate`, `--global-beat-rate`, `--global-beat-burst`,
    /// `--max-key-derivations-per-sec`.
    fn rate_config(&self) -> Result<crate::tracker::RateConfig, ConfigError> {
        let rate = |flag, v: Option<u32>| -> Result<Option<u32>, ConfigError> {
            match v {
                Some(n) => Ok(Some(
                    u32::try_from(ranged(flag, Some(n.into()), 0, 0, 1_000_000_000)?)
                        .unwrap_or(u32::MAX),
                )),
                None => Ok(None),
            }
        };
        let global = rate("global-beat-rate", self.global_beat_rate)?.filter(|n| *n > 0);
        let global_burst = rate("global-beat-burst", self.global_beat_burst)?;
        if global_burst.is_some() && global.is_none() {
            return Err(ConfigError::Args(
                "--global-beat-burst needs --global-beat-rate".into(),
            ));
        }
        Ok(crate::tracker::RateConfig {
            per_identity: rate("max-beat-rate", self.max_beat_rate)?.filter(|n| *n > 0),
            global,
            global_burst: global_burst.map(|b| b.max(1)),
            derivations_per_sec: rate(
                "max-key-derivations-per-sec",
                self.max_key_derivations_per_sec,
            )?
            .unwrap_or(crate::tracker::DEFAULT_DERIVATIONS_PER_SEC),
        })
    }
}
