//! Checks the recovery, audit and shutdown flags and turns them into a [`RecoveryConfig`].
//! Kept here, beside what they configure, so the configuration shell only calls [`resolve`].

use std::time::Duration;

use super::audit::Chain;
use super::{
    AuditConfig, CommandTemplate, Policy, RecoveryConfig, DEFAULT_CAPTURE_BYTES, MAX_CAPTURE_BYTES,
};
use crate::config::RunArgs;

/// Default `--recovery-audit-max-bytes`.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 << 20;
/// Smallest accepted `--recovery-audit-max-bytes` (a few records).
pub const MIN_AUDIT_MAX_BYTES: u64 = 4096;
/// Default `--audit-fsync-budget-ms` and `--audit-rotation-budget-ms`.
pub const DEFAULT_AUDIT_BUDGET_MS: u64 = 50;
/// Default and minimum `--shutdown-grace-ms`.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 5000;
/// Minimum `--shutdown-grace-ms`.
pub const MIN_SHUTDOWN_GRACE_MS: u64 = 100;
/// Largest millisecond setting (one day): no overflow in `* 1_000_000`.
const MAX_MS: u64 = 86_400_000;

fn ms(flag: &str, v: u64, min: u64) -> Result<u64, String> {
    if !(min..=MAX_MS).contains(&v) {
        return Err(format!("{flag} {v}: must be between {min} and {MAX_MS}"));
    }
    Ok(v * 1_000_000)
}

/// The recovery settings (`None` without a command) and the shutdown grace.
///
/// # Errors
/// One line naming the flag and what is wrong with it.
pub fn resolve(a: &RunArgs) -> Result<(Option<RecoveryConfig>, Duration), String> {
    let grace_ns = ms(
        "--shutdown-grace-ms",
        a.shutdown_grace_ms.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
        MIN_SHUTDOWN_GRACE_MS,
    )?;
    let grace = Duration::from_nanos(grace_ns);
    let template = match (&a.recovery_cmd, &a.recovery_exec_file) {
        (Some(_), Some(_)) => {
            return Err("--recovery-exec and --recovery-exec-file: give one, not both".into())
        }
        (Some(s), None) => {
            Some(CommandTemplate::parse(s).map_err(|e| format!("--recovery-exec {s:?}: {e}"))?)
        }
        (None, Some(p)) => Some(
            CommandTemplate::from_file(p)
                .map_err(|e| format!("--recovery-exec-file {}: {e}", p.display()))?,
        ),
        (None, None) => None,
    };
    let timeout = ms(
        "--recovery-timeout-ms",
        a.recovery_timeout_ms.unwrap_or(30_000),
        1,
    )?;
    let debounce = ms(
        "--recovery-debounce-ms",
        a.recovery_debounce_ms.unwrap_or(10_000),
        0,
    )?;
    let mut env = Vec::new();
    for kv in &a.recovery_env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                env.push((k.to_owned(), v.to_owned()));
            }
            _ => return Err(format!("--recovery-env {kv:?}: expected KEY=VALUE")),
        }
    }
    let capture_bytes = match (a.recovery_capture_stdio, a.recovery_capture_bytes) {
        (_, Some(n)) if n == 0 || n > MAX_CAPTURE_BYTES => {
            return Err(format!(
                "--recovery-capture-bytes {n}: must be between 1 and {MAX_CAPTURE_BYTES}"
            ))
        }
        (true, n) => Some(n.unwrap_or(DEFAULT_CAPTURE_BYTES)),
        (false, _) => None,
    };
    let sync_every = a.recovery_audit_sync_every.unwrap_or(1);
    if sync_every == 0 {
        return Err("--recovery-audit-sync-every 0: must be at least 1".into());
    }
    let max_bytes = a
        .recovery_audit_max_bytes
        .unwrap_or(DEFAULT_AUDIT_MAX_BYTES);
    if max_bytes < MIN_AUDIT_MAX_BYTES {
        return Err(format!(
            "--recovery-audit-max-bytes {max_bytes}: must be at least {MIN_AUDIT_MAX_BYTES}"
        ));
    }
    let chain = match &a.recovery_audit_key_file {
        None => Chain::Sha256,
        Some(p) => {
            if a.recovery_audit_file.is_none() {
                return Err("--recovery-audit-key-file needs --recovery-audit-file".into());
            }
            let k = vlp_core::keyfile::read_key_file(p)
                .map_err(|e| format!("--recovery-audit-key-file {}: {e}", p.display()))?;
            Chain::Hmac(zeroize::Zeroizing::new(*k.as_bytes()))
        }
    };
    let audit = match &a.recovery_audit_file {
        Some(p) if p.as_os_str().is_empty() => {
            return Err("--recovery-audit-file: empty path".into())
        }
        Some(p) => Some(AuditConfig {
            path: p.clone(),
            chain,
            sync_every,
            max_bytes,
            sync_interval: match ms(
                "--audit-sync-interval-ms",
                a.audit_sync_interval_ms.unwrap_or(0),
                0,
            )? {
                0 => None,
                ns => Some(Duration::from_nanos(ns)),
            },
            fsync_budget: Duration::from_nanos(ms(
                "--audit-fsync-budget-ms",
                a.audit_fsync_budget_ms.unwrap_or(DEFAULT_AUDIT_BUDGET_MS),
                1,
            )?),
            rotation_budget: Duration::from_nanos(ms(
                "--audit-rotation-budget-ms",
                a.audit_rotation_budget_ms
                    .unwrap_or(DEFAULT_AUDIT_BUDGET_MS),
                1,
            )?),
        }),
        None => None,
    };
    let Some(template) = template else {
        if audit.is_some() {
            return Err("--recovery-audit-file needs a recovery command (--recovery-exec)".into());
        }
        return Ok((None, grace));
    };
    let unattested = a.recovery_allow_unattested;
    let policy = Policy {
        allow_agent_keys: a.recovery_allow_agent_keys,
        allow_shared_key_udp: unattested
            || a.secure_udp_i_accept_recovery_on_unauthenticated_transport,
        allow_plaintext_udp: unattested
            || a.plaintext_udp_i_accept_recovery_on_unauthenticated_transport,
    };
    Ok((
        Some(RecoveryConfig {
            template,
            debounce,
            timeout,
            policy,
            env,
            inherit_env: a.recovery_inherit_env,
            capture_bytes,
            audit,
        }),
        grace,
    ))
}
