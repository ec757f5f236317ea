//! Who speaks and where: the listeners' configuration, the origin a shell reports for each
//! datagram, and the identity an agent is tracked under.

use std::fmt;

use vlp_core::Key;

use super::Nanos;

/// Which listener a datagram came in on, and what the shell knows of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Unix datagram socket; the kernel attested pid/uid via `SCM_CREDENTIALS`.
    Unix {
        /// The sender's real pid.
        pid: u32,
        /// The sender's real uid.
        uid: u32,
    },
    /// UDP listener number `listener` (index into [`TrackerConfig::udp`]). The source address
    /// is not part of it: identity is listener + pid, and the daemon does not ask the kernel
    /// for addresses it would not use (about 45 ns per datagram here).
    Udp {
        /// Index into [`TrackerConfig::udp`].
        listener: usize,
    },
}

/// What a UDP listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpMode {
    /// 32-byte plain frames (only by explicit operator opt-in).
    Plain,
    /// 60-byte shared-key datagrams (every key in `keys` is tried) and/or 64-byte master-key
    /// datagrams (agent key derived from `master` per pid, cached).
    Secure {
        /// Accepted shared keys (rotation set), tried in order.
        keys: Vec<Key>,
        /// Master key for per-agent keys.
        master: Option<Key>,
    },
}

/// The tracker's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Silence after which an agent is stalled (`--threshold-ms`); 0 is taken as 1 ns.
    pub threshold: Nanos,
    /// Agents tracked at most (`--tracker-capacity`); clamped to [`MAX_CAPACITY`].
    pub capacity: usize,
    /// Stalled entries are evicted this long after their stall, dead ones this long after
    /// their death.
    pub evict_after: Nanos,
    /// Unix senders whose uid is not here are refused.
    pub allowed_uids: Vec<u32>,
    /// One entry per UDP listener.
    pub udp: Vec<UdpMode>,
}

impl Default for TrackerConfig {
    /// Threshold 1 s, capacity 65,536, eviction after 10 minutes, no uid allowed, no UDP.
    fn default() -> TrackerConfig {
        TrackerConfig {
            threshold: 1_000_000_000,
            capacity: 65_536,
            evict_after: 600_000_000_000,
            allowed_uids: Vec::new(),
            udp: Vec::new(),
        }
    }
}

/// The listener part of an agent identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    /// The Unix socket: the pid is kernel-attested.
    Unix,
    /// UDP listener number n: the pid is what the frame claims (authenticated by the key in
    /// secure mode, not at all in plain mode).
    Udp(usize),
}

/// An agent's identity: the attested pid on the Unix socket, listener + pid on UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId {
    /// Where the agent speaks.
    pub listener: Listener,
    /// Its pid (frame pid; equal to the kernel-attested pid on the Unix socket).
    pub pid: u32,
}

impl AgentId {
    /// Whether the kernel vouched for the pid (Unix socket); recovery actions should be
    /// refused for unattested identities unless the operator opts in (VLP v0.2 §6).
    #[must_use]
    pub fn is_attested(&self) -> bool {
        self.listener == Listener::Unix
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.listener {
            Listener::Unix => write!(f, "unix:{}", self.pid),
            Listener::Udp(n) => write!(f, "udp{n}:{}", self.pid),
        }
    }
}
