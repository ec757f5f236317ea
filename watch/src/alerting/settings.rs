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

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn load(args: &[&str]) -> Result<Option<AlertingConfig>, ConfigError> {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        RunArgs::load(&argv).map(|c| c.alerting)
    }

    #[test]
    fn urls_resend_interval_and_generator_url() {
        assert!(load(&[]).unwrap().is_none());
        let c = load(&[
            "--alertmanager-url",
            "http://127.0.0.1:9093",
            "--alertmanager-url",
            "http://127.0.0.2:9093/am",
            "--alert-resend-ms",
            "1500",
            "--prom-addr",
            "127.0.0.1:9465",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.resend_interval, Duration::from_millis(1500));
        assert_eq!(
            c.generator_url.as_deref(),
            Some("http://127.0.0.1:9465/metrics")
        );
        let d = load(&[
            "--alertmanager-url",
            "http://am:9093",
            "--prom-addr",
            "0.0.0.0:9465",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(d.resend_interval, Duration::from_millis(DEFAULT_RESEND_MS));
        assert_eq!(d.generator_url, None, "a wildcard address links nowhere");
        assert!(!d.observer.is_empty());
    }

    #[test]
    fn refusals_name_the_flag() {
        let msg = |args: &[&str]| load(args).unwrap_err().to_string();
        assert!(msg(&["--alertmanager-url", "https://am:9093"]).starts_with("--alertmanager-url"));
        assert!(msg(&["--alert-resend-ms", "500"]).contains("needs --alertmanager-url"));
        assert_eq!(
            msg(&[
                "--alertmanager-url",
                "http://am:9093",
                "--alert-resend-ms",
                "10"
            ]),
            "--alert-resend-ms 10: must be between 100 and 600000"
        );
    }
}
