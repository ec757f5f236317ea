//! The PID-namespace gate of Unix agents (`--allow-cross-namespace-agents`,
//! `--strict-namespace-check`).
//!
//! The kernel translates a Unix sender's pid into our namespace, so a beat from an agent in a
//! container is attested under a pid that means something only here; recovery acting on it
//! (or an operator reading it) could hit the wrong process if the namespaces are confused.
//! The gate compares the agent's `/proc/PID/ns/pid` with ours (device and inode) and refuses
//! an agent from another namespace unless allowed; an allowed one is tracked under the pid
//! the kernel attests in our namespace (its frames carry its own namespace's pid, which
//! means nothing here). An agent whose namespace cannot be read (gone already, or a sender
//! our namespace cannot see, attested as pid 0) is accepted, or refused under
//! `--strict-namespace-check`.
//!
//! Checking costs a `stat` (a path walk through `/proc`, several microseconds); verdicts are
//! remembered per pid (our namespace for [`RECHECK`], another or an unreadable one for
//! [`RECHECK_REFUSED`]) in a table of at most [`MAX_REMEMBERED`] pids (cleared when full), so
//! a beating agent costs one `stat` every ten seconds, not one per beat. A
//! process never changes its own PID namespace, so a verdict can only go stale when the pid
//! is reused by another process; until the recheck, such a process's frames still carry its
//! own namespace's pid, which the attested pid refutes (`pid_mismatch`) unless the
//! namespaces agree. The same verdict decides recovery: an agent of another
//! namespace is never recovered (`varta_recovery_refused_total{reason="cross_namespace_agent"}`),
//! its pid there naming another process.

use std::collections::HashMap;

use crate::tracker::Nanos;

/// Settings of the gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceGate {
    /// Accept agents of other namespaces.
    pub allow_cross: bool,
    /// Refuse agents whose namespace cannot be read.
    pub strict: bool,
}

/// How long a verdict of our own namespace is remembered.
pub const RECHECK: Nanos = 10_000_000_000;
/// How long another verdict (another namespace, or unreadable) is remembered.
pub const RECHECK_REFUSED: Nanos = 1_000_000_000;
/// Pids remembered at most.
pub const MAX_REMEMBERED: usize = 65_536;

/// What the gate found for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsVerdict {
    /// Our namespace.
    Same,
    /// Another namespace.
    Cross,
    /// Could not be read.
    Unknown,
}

/// The gate with its remembered verdicts and counts.
#[derive(Debug)]
pub struct NsGate {
    cfg: NamespaceGate,
    ours: Option<(u64, u64)>,
    seen: HashMap<u32, (NsVerdict, Nanos)>,
    /// Datagrams refused: agent in another namespace.
    pub refused_cross: u64,
    /// Datagrams refused: namespace unreadable (strict).
    pub refused_unknown: u64,
}

fn ns_of(path: &str) -> Option<(u64, u64)> {
    let st = rustix::fs::stat(path).ok()?;
    Some((st.st_dev, st.st_ino))
}

impl NsGate {
    /// A gate; reads our own namespace once.
    #[must_use]
    pub fn new(cfg: NamespaceGate) -> NsGate {
        NsGate {
            cfg,
            ours: ns_of("/proc/self/ns/pid"),
            seen: HashMap::new(),
            refused_cross: 0,
            refused_unknown: 0,
        }
    }

    fn verdict(&mut self, now: Nanos, pid: u32) -> NsVerdict {
        if let Some((v, at)) = self.seen.get(&pid) {
            // Our own namespace, the common case, is kept longest; a refusing verdict is
            // looked at again sooner, so a pid reused by an agent of ours is heard soon.
            let keep = if *v == NsVerdict::Same {
                RECHECK
            } else {
                RECHECK_REFUSED
            };
            if now.saturating_sub(*at) < keep {
                return *v;
            }
        }
        let fresh = match (self.ours, ns_of(&format!("/proc/{pid}/ns/pid"))) {
            (Some(a), Some(b)) if a == b => NsVerdict::Same,
            (Some(_), Some(_)) => NsVerdict::Cross,
            _ => NsVerdict::Unknown,
        };
        // A process that has just gone keeps the verdict it had while it could be seen.
        let v = match (fresh, self.seen.get(&pid)) {
            (NsVerdict::Unknown, Some((old, _))) => *old,
            (v, _) => v,
        };
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.clear();
        }
        self.seen.insert(pid, (v, now));
        v
    }

    /// Whether the Unix agent `pid` lives in another PID namespace (a remembered verdict, or
    /// a fresh look).
    pub fn is_cross(&mut self, now: Nanos, pid: u32) -> bool {
        self.verdict(now, pid) == NsVerdict::Cross
    }

    /// What becomes of a datagram of the Unix agent `pid` (refusals are counted): `None`
    /// refused, else the verdict it is admitted with ([`NsVerdict::Cross`] only when allowed).
    pub fn admit(&mut self, now: Nanos, pid: u32) -> Option<NsVerdict> {
        match self.verdict(now, pid) {
            NsVerdict::Cross if !self.cfg.allow_cross => {
                self.refused_cross += 1;
                None
            }
            NsVerdict::Unknown if self.cfg.strict => {
                self.refused_unknown += 1;
                None
            }
            v => Some(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_pid_is_in_our_namespace_and_a_missing_pid_is_unknown() {
        let me = std::process::id();
        let mut gate = NsGate::new(NamespaceGate::default());
        assert_eq!(gate.admit(0, me), Some(NsVerdict::Same));
        // Pid 0 has no /proc entry: unknown, accepted unless strict.
        assert_eq!(gate.admit(0, 0), Some(NsVerdict::Unknown));
        let mut strict = NsGate::new(NamespaceGate {
            allow_cross: false,
            strict: true,
        });
        assert_eq!(strict.admit(0, me), Some(NsVerdict::Same));
        assert_eq!(strict.admit(0, 0), None);
        assert_eq!(strict.refused_unknown, 1);
    }
}
