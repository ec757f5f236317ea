//! The PID-namespace gate of Unix agents (`--allow-cross-namespace-agents`,
//! `--strict-namespace-check`).
//!
//! The kernel translates a Unix sender's pid into our namespace, so a beat from an agent in a
//! container is attested under a pid that means something only here; recovery acting on it
//! (or an operator reading it) could hit the wrong process if the namespaces are confused.
//! The gate compares the agent's `/proc/PID/ns/pid` with ours (device and inode) and refuses
//! an agent from another namespace unless allowed. An agent whose namespace cannot be read
//! (gone already, `/proc` hidden) is accepted, or refused under `--strict-namespace-check`.
//!
//! Checking costs a `stat`; verdicts are remembered per pid for [`RECHECK`] in a table of at
//! most [`MAX_REMEMBERED`] pids (cleared when full), so a beating agent costs one `stat` a
//! second, not one per beat.

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

/// How long a verdict is remembered.
pub const RECHECK: Nanos = 1_000_000_000;
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

    /// Whether the gate needs to look at all (it admits everything when cross-namespace
    /// agents are allowed and unknown ones are not refused).
    #[must_use]
    pub fn active(&self) -> bool {
        !(self.cfg.allow_cross && !self.cfg.strict)
    }

    fn verdict(&mut self, now: Nanos, pid: u32) -> NsVerdict {
        if let Some((v, at)) = self.seen.get(&pid) {
            if now.saturating_sub(*at) < RECHECK {
                return *v;
            }
        }
        let v = match (self.ours, ns_of(&format!("/proc/{pid}/ns/pid"))) {
            (Some(a), Some(b)) if a == b => NsVerdict::Same,
            (Some(_), Some(_)) => NsVerdict::Cross,
            _ => NsVerdict::Unknown,
        };
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.clear();
        }
        self.seen.insert(pid, (v, now));
        v
    }

    /// Whether a datagram of the Unix agent `pid` is admitted (refusals are counted).
    pub fn admit(&mut self, now: Nanos, pid: u32) -> bool {
        if !self.active() {
            return true;
        }
        match self.verdict(now, pid) {
            NsVerdict::Same => true,
            NsVerdict::Cross if self.cfg.allow_cross => true,
            NsVerdict::Cross => {
                self.refused_cross += 1;
                false
            }
            NsVerdict::Unknown if self.cfg.strict => {
                self.refused_unknown += 1;
                false
            }
            NsVerdict::Unknown => true,
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
        assert!(gate.admit(0, me));
        // Pid 0 has no /proc entry: unknown, accepted unless strict.
        assert!(gate.admit(0, 0));
        let mut strict = NsGate::new(NamespaceGate {
            allow_cross: false,
            strict: true,
        });
        assert!(strict.admit(0, me));
        assert!(!strict.admit(0, 0));
        assert_eq!(strict.refused_unknown, 1);
        assert!(!NsGate::new(NamespaceGate {
            allow_cross: true,
            strict: false
        })
        .active());
    }
}
