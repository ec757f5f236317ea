//! The policy sections' place in the observer's configuration: the default class from the
//! global settings, and the check that runs before any socket is opened (and again on reload).

use super::class::Defaults;
use super::PolicyConfig;
use crate::config::{Config, ConfigError};
use crate::recovery::RecoveryConfig;

/// The default class: the global threshold, recovery command and debounce.
#[must_use]
pub fn defaults(threshold_ns: u64, recovery: Option<&RecoveryConfig>) -> Defaults {
    Defaults {
        threshold_ns,
        recovery: recovery.map(|r| r.template.clone()),
        recovery_debounce_ns: recovery.map_or(0, |r| r.debounce),
    }
}

/// Puts the file's sections before the `--class` flags (first match wins, the file first)
/// and checks them all.
///
/// # Errors
/// [`ConfigError::Policy`] naming the bad section or the rule: a class's own recovery command
/// runs through the observer's recovery engine, so it needs recovery enabled.
pub fn checked(mut cfg: Config, file: PolicyConfig) -> Result<Config, ConfigError> {
    let flags = std::mem::take(&mut cfg.policy.classes);
    cfg.policy.classes = file.classes;
    cfg.policy.classes.extend(flags);
    cfg.policy.names = file.names;
    cfg.policy
        .build(&cfg.class_defaults)
        .map_err(|e| ConfigError::Policy(e.to_string()))?;
    if cfg.recovery.is_none() {
        if let Some(c) = cfg.policy.classes.iter().find(|c| c.recovery_cmd.is_some()) {
            return Err(ConfigError::Policy(format!(
                "[[class]] {:?}: recovery-cmd needs recovery enabled (--recovery-exec)",
                c.name
            )));
        }
    }
    Ok(cfg)
}
