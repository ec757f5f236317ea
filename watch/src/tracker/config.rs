//! Who speaks and where: the listeners' configuration, the origin a shell reports for each
//! datagram, and the identity an agent is tracked under.

use std::fmt;
use std::net::SocketAddr;

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
    /// A datagram of UDP listener `listener` with its source address. Only plaintext
    /// listeners look at the address: a plain frame for a known pid from another address is
    /// refused ([`super::Rejection::OriginConflict`]) until that agent has been silent for the
    /// threshold. A shell that passes [`Origin::Udp`] for plaintext datagrams gets no origin
    /// checks; secure listeners ignore the address (the key authenticates the sender).
    UdpFrom {
        /// Index into [`TrackerConfig::udp`].
        listener: usize,
        /// The datagram's source address.
        source: SocketAddr,
    },
    /// A Unix sender the shell found in another PID namespace than the observer's and the
    /// operator admits (`--allow-cross-namespace-agents`). Its frames carry the pid of its
    /// own namespace; it is tracked under `pid`, the kernel-attested pid in ours (the one a
    /// recovery command can act on), and the frame's pid is not compared.
    UnixOtherNamespace {
        /// The sender's pid as this observer's namespace sees it.
        pid: u32,
        /// The sender's real uid.
        uid: u32,
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
    /// Agents tracked at most (`--tracker-capacity`); clamped to [`super::MAX_CAPACITY`].
    pub capacity: usize,
    /// Stalled entries are evicted this long after their stall, dead ones this long after
    /// their death.
    pub evict_after: Nanos,
    /// Unix senders whose uid is not here are refused.
    pub allowed_uids: Vec<u32>,
    /// One entry per UDP listener.
    pub udp: Vec<UdpMode>,
    /// Slots kept for identities nobody else can claim ([`AgentId::is_proven`]: kernel-attested
    /// Unix senders, per-agent keys): unproven identities (plain UDP, shared key) may fill at
    /// most `capacity - reserve`. `None`: a quarter of the capacity. Clamped to the capacity.
    pub proven_reserve: Option<usize>,
    /// Evicted secure identities whose streams are remembered (tombstones, least recently
    /// retired dropped first), so that replays of their captured datagrams do not create them
    /// again. `None`: as many as the capacity.
    pub tombstones: Option<usize>,
    /// What makes room when the table is full (`--tracker-eviction-policy`); `None`: dead
    /// entries, then (for proven newcomers only) unproven identities.
    pub eviction: Option<EvictionPolicy>,
}

/// What may be evicted to make room for a new agent when the table is full, after dead
/// entries. Either way an unproven newcomer can only displace unproven identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvictionPolicy {
    /// Only agents already stalled, the longest-stalled first.
    Strict,
    /// Stalled agents first, then the agent silent longest.
    Balanced,
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
            proven_reserve: None,
            tombstones: None,
            eviction: None,
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

/// Which key authenticated an identity's datagrams: part of the identity, so shared-key and
/// per-agent-key datagrams for the same pid on one listener are different agents (a holder of
/// the shared key cannot speak for a per-agent-key agent), and a `key_class` label keeps their
/// series apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum KeyClass {
    /// No key: the Unix socket (the kernel attests the pid) or plaintext UDP.
    #[default]
    None,
    /// The listener's shared key (60-byte datagrams, VLP v0.2 §3).
    Shared,
    /// The agent's own key, derived from the master key for its pid (64-byte datagrams, §4).
    Agent,
}

impl KeyClass {
    /// Every class, in declaration order.
    pub const ALL: [KeyClass; 3] = [KeyClass::None, KeyClass::Shared, KeyClass::Agent];

    /// The class's one spelling (the `key_class` label).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyClass::None => "none",
            KeyClass::Shared => "shared",
            KeyClass::Agent => "agent",
        }
    }
}

/// An agent's identity: the attested pid on the Unix socket, listener + key class + pid on UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId {
    /// Where the agent speaks.
    pub listener: Listener,
    /// Its pid (frame pid; equal to the kernel-attested pid on the Unix socket).
    pub pid: u32,
    /// The key its datagrams are authenticated with.
    pub key_class: KeyClass,
}

impl AgentId {
    /// The identity of a Unix-socket agent.
    #[must_use]
    pub const fn unix(pid: u32) -> AgentId {
        AgentId {
            listener: Listener::Unix,
            pid,
            key_class: KeyClass::None,
        }
    }

    /// The identity of an agent of UDP listener `listener` authenticated by `key_class`.
    #[must_use]
    pub const fn udp(listener: usize, key_class: KeyClass, pid: u32) -> AgentId {
        AgentId {
            listener: Listener::Udp(listener),
            pid,
            key_class,
        }
    }

    /// Whether the kernel vouched for the pid (Unix socket); recovery actions should be
    /// refused for unattested identities unless the operator opts in (VLP v0.2 §6).
    #[must_use]
    pub fn is_attested(&self) -> bool {
        self.listener == Listener::Unix
    }

    /// Whether no other sender can claim this identity: kernel-attested (Unix socket) or
    /// authenticated by the agent's own key. Capacity is reserved for these.
    #[must_use]
    pub fn is_proven(&self) -> bool {
        self.is_attested() || self.key_class == KeyClass::Agent
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.listener, self.key_class) {
            (Listener::Unix, _) => write!(f, "unix:{}", self.pid),
            (Listener::Udp(n), KeyClass::Agent) => write!(f, "udp{n}/agent:{}", self.pid),
            (Listener::Udp(n), _) => write!(f, "udp{n}:{}", self.pid),
        }
    }
}
