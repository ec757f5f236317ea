//! Direct delivery's flags (`--alertmanager-url`, `--alert-resend-ms`) into an
//! [`AlertingConfig`]; called by the config room's resolution.

use std::time::Duration;

use super::AlertingConfig;
use crate::config::{ConfigError, RunArgs};

/// Default of `--alert-resend-ms`: Alertmanager resolves an alert that stops coming after its
/// `resolve_timeout` (5 min by default) or at its `endsAt` (here [`super::book::VALIDITY_RESENDS`]
/// resend intervals), so 30 s keeps firing alerts firing with room for lost posts.
pub const DEFAULT_RESEND_MS: u64 = 30_000;
/// Range of `--alert-resend-ms`.
pub const RESEND_MS_RANGE: (u64, u64) = (100, 600_000);

/// The observer's name in its alerts' `observer` annotation: the host name (several observers
/// of one fleet are told apart by it), else `varta-watch`.
#[must_use]
pub fn observer_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "varta-watch".into())
}

/// Direct delivery's settings, or `None` without `--alertmanager-url`.
///
/// # Errors
/// A URL that is not `http://HOST[:PORT][/PREFIX]`, or `--alert-resend-ms` out of range (or
/// given without a URL, where it would silently do nothing).
pub fn resolve(args: &RunArgs) -> Result<Option<AlertingConfig>, ConfigError> {
    if args.alertmanager_url.is_empty() {
        if args.alert_resend_ms.is_some() {
            return Err(ConfigError::Alerting(
                "--alert-resend-ms needs --alertmanager-url".into(),
            ));
        }
        return Ok(None);
    }
    let mut cfg = AlertingConfig::new(&args.alertmanager_url, observer_name())
        .map_err(|e| ConfigError::Alerting(e.to_string()))?;
    let ms = args.alert_resend_ms.unwrap_or(DEFAULT_RESEND_MS);
    let (min, max) = RESEND_MS_RANGE;
    if !(min..=max).contains(&ms) {
        return Err(ConfigError::OutOfRange {
            flag: "alert-resend-ms",
            value: ms,
            min,
            max,
        });
    }
    cfg.resend_interval = Duration::from_millis(ms);
    if let Some(addr) = args.prom_addr.filter(|a| !a.ip().is_unspecified()) {
        cfg.generator_url = Some(format!("http://{addr}/metrics"));
    }
    Ok(Some(cfg))
}
