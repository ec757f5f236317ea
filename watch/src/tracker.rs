//! The observer's core: every datagram from every listener goes through
//! [`Tracker::handle_datagram`], every deadline through [`Tracker::handle_timeout`], and what
//! happened comes out of [`Tracker::poll_event`]. No clock reads, no I/O, no allocation per
//! datagram in steady state (sans-I/O, in the style of quinn-proto).
//!
//! # The decode pipeline
//!
//! One pipeline for every listener ([`Origin`]):
//!
//! * **Unix socket** (kernel-attested pid/uid): the uid must be allowed
//!   ([`Rejection::UidRefused`]), the 32 bytes must parse (VLP v0.2 §2,
//!   [`Rejection::Decode`]), and the frame's pid must equal the attested pid
//!   ([`Rejection::PidMismatch`], an authentication failure). Identity: the attested pid.
//! * **Plain UDP** (operator opt-in): parse; identity: listener + frame pid.
//! * **Secure UDP** (§3): a 32-byte plaintext is refused ([`Rejection::PlaintextRefused`]).
//!   A 64-byte master-key datagram carries its pid in the clear: the agent's replay window is
//!   checked *before* anything is decrypted (the same table lookup serves the whole
//!   datagram), the agent key is taken from the agent's slot (kept once it authenticated a
//!   datagram of that agent) or derived (§4), the datagram is opened, and the window is
//!   committed only once the tag verified and the tracker accepted the frame. A 60-byte shared-key datagram is opened with
//!   each accepted key in turn; its pid is sealed, so its window is checked right after the
//!   tag verifies (nothing else of the frame is looked at first) and committed on acceptance.
//!   Windows are kept per agent identity (listener + pid), not per source address, so agents
//!   behind one address do not disturb each other and reordering within the window is
//!   accepted ([`AcceptKind::Reordered`]).
//!
//! Every rejection is counted by its [`Reason`] in [`Stats`] and returned.
//!
//! # Sessions
//!
//! Per identity, nonces increase within a session. A frame whose nonce does not increase is a
//! duplicate or a reordering ([`Rejection::StaleNonce`]) *unless* it can only come from a new
//! session, which is then accepted at once ([`Event::SessionRestart`]): a recycled pid or a
//! restarted agent is never ignored until its nonce passes the old maximum. For plain frames
//! (no session id on the wire) a new session is recognised when the frame is inconsistent with
//! the old one (a nonce that went back while the sender's clock went forward, or a nonce that
//! went forward while the clock went back), when the agent was stalled, when it died more
//! than `threshold` ago (or the frame is stamped after its terminal frame), or when nonce
//! and timestamp both started over ("far below": each at most half its last value, and the
//! nonce more than [`REORDER_SLACK`] below). For secure frames the AEAD stream (`iv_random`,
//! drawn per process) names the session: a new stream whose nonce went back is a new session;
//! the previous session's stream is refused if it reappears ([`Rejection::RetiredStream`]).
//!
//! A terminal frame on a stream other than the current one is the panic hook's crash report:
//! VLP clients send it from a session of their own (own salt, so its own `iv_random`, nonce
//! `u64::MAX`). It raises [`Event::Died`] as any terminal frame does, but it neither retires
//! nor replaces the current stream: the entry remembers it as a *side stream* (a 32-bit
//! fingerprint of its `iv_random` and the highest counter taken, in the slot plain agents use
//! for the sender timestamp, so the entry stays at 96 bytes). The same datagram again is a
//! replay ([`ReplayError::Replayed`]), an older counter of that stream is
//! [`Rejection::AfterTerminal`], and a later terminal frame on it (another thread's panic) is a
//! new crash report if the agent had come back, [`Rejection::AfterTerminal`] while it is still
//! dead. If the process lives on after a thread's panic, its next beat on the current stream
//! is a dead agent's newer frame on the same stream: a new session ([`Event::SessionRestart`],
//! then [`Event::StatusChanged`] from Critical), and it is tracked (and stalls) as before. Only
//! one side stream is remembered: if a second one replaces it, replays of the first are judged
//! by the rules above alone (the same limit as the single retired stream).
//!
//! # Deadlines
//!
//! An agent with no accepted beat for `threshold` is stalled: exactly one [`Event::Stalled`]
//! per silence run, whose `at` is the exact deadline `last_beat + threshold`, whenever the
//! shell gets round to calling [`Tracker::handle_timeout`]; its next beat raises
//! [`Event::Recovered`]. A terminal frame raises [`Event::Died`] at once (`clean` for a
//! goodbye, §2 / `vlp_core::GOODBYE_PAYLOAD`) and no stall follows. Stalled entries are
//! evicted `evict_after` after their stall, dead ones `evict_after` after their death
//! ([`Event::Evicted`]); when the table is full, the longest-dead entry makes room for a new
//! agent, and if there is none the newcomer is refused ([`Rejection::CapacityExceeded`]).
//!
//! With one global threshold, deadlines fall in the order beats were accepted, so intrusive
//! lists over the agent slab keep the earliest deadline at their heads (see `table`): O(1) per
//! beat and per deadline, and [`Tracker::poll_timeout`] is `None` when there is nothing to wait
//! for. A beat for an agent whose own deadline has passed first applies that deadline (so the
//! outcome never depends on how promptly the shell calls `handle_timeout`).
//!
//! # Panic contract
//!
//! No method panics on any input: any bytes, any origin, any `now` (time going backwards is
//! clamped to the latest time seen).

pub mod fuzz;
mod keys;
mod table;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;

use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{
    DecodeError, Frame, Iv, Key, MasterDatagram, OpenError, ReplayError, ReplayWindow,
    SharedDatagram, Status, FRAME_LEN,
};

use keys::AgentKeys;
use table::{listener_code, tag, Agent, ListId, Phase, Side, Table};

/// Monotonic nanoseconds since the daemon started; the shell reads the clock, the core never
/// does.
pub type Nanos = u64;

/// How far below the last nonce a plain frame must be (besides nonce and timestamp both at
/// most half their last values) to be read as a restarted session rather than a reordering.
pub const REORDER_SLACK: u64 = 16;

/// Deadlines fired by one [`Tracker::handle_timeout`] call at most; if more are due,
/// [`Tracker::poll_timeout`] returns a time `<= now` and the shell calls again (after draining
/// events and serving its sockets, so a mass stall cannot starve ingestion).
pub const TIMEOUT_BATCH: usize = 1024;

/// Events held for the shell at most; past this, events are dropped and counted in
/// [`Stats::events_dropped`] (a shell that drains after every call never gets near it).
pub const EVENT_QUEUE_CAP: usize = 4 * TIMEOUT_BATCH;

/// Master-key agent keys are kept for the agents in the first this many table slots (32
/// bytes each, allocated as agents are admitted, so 4 MiB at most). Agents in later slots
/// (only with a capacity above this) cost one HKDF derivation per beat.
pub const KEY_CACHE_MAX: usize = 1 << 17;

/// Largest capacity the tracker accepts (slots are `u32`).
pub const MAX_CAPACITY: usize = (u32::MAX - 1) as usize;

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

/// What the tracker observed. `at` is observer time ([`Nanos`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// First accepted frame of an identity.
    NewAgent {
        /// Time of the frame.
        at: Nanos,
        /// Who.
        agent: AgentId,
        /// Its status.
        status: Status,
        /// Its nonce.
        nonce: u64,
    },
    /// A new session of a known identity (restarted agent, recycled pid).
    SessionRestart {
        /// Time of the frame.
        at: Nanos,
        /// Who.
        agent: AgentId,
        /// Nonce of the new session's first frame.
        nonce: u64,
    },
    /// A regular beat (the first of a restarted session included) changed the status.
    StatusChanged {
        /// Time of the beat.
        at: Nanos,
        /// Who.
        agent: AgentId,
        /// Previous status.
        from: Status,
        /// New status.
        to: Status,
        /// The beat's payload.
        payload: u32,
    },
    /// No accepted beat for the threshold.
    Stalled {
        /// The exact deadline: `last_beat + threshold`.
        at: Nanos,
        /// Who.
        agent: AgentId,
        /// When the last beat was accepted.
        last_beat: Nanos,
        /// Nonce of the last beat.
        nonce: u64,
    },
    /// A stalled agent beat again.
    Recovered {
        /// Time of the beat.
        at: Nanos,
        /// Who.
        agent: AgentId,
        /// Time since the previous beat.
        silent_for: Nanos,
    },
    /// A terminal frame: the agent is gone. Ends a silence run without [`Event::Recovered`].
    Died {
        /// Time of the frame.
        at: Nanos,
        /// Who.
        agent: AgentId,
        /// `true` for an announced clean exit (goodbye), `false` for a crash.
        clean: bool,
        /// The terminal frame's payload.
        payload: u32,
    },
    /// The entry was dropped (long silent, long dead, or making room when full).
    Evicted {
        /// The eviction deadline, or the time of the admission it made room for.
        at: Nanos,
        /// Who.
        agent: AgentId,
    },
}

impl Event {
    /// The event's time.
    #[must_use]
    pub fn at(&self) -> Nanos {
        match *self {
            Event::NewAgent { at, .. }
            | Event::SessionRestart { at, .. }
            | Event::StatusChanged { at, .. }
            | Event::Stalled { at, .. }
            | Event::Recovered { at, .. }
            | Event::Died { at, .. }
            | Event::Evicted { at, .. } => at,
        }
    }

    /// The agent the event is about.
    #[must_use]
    pub fn agent(&self) -> AgentId {
        match *self {
            Event::NewAgent { agent, .. }
            | Event::SessionRestart { agent, .. }
            | Event::StatusChanged { agent, .. }
            | Event::Stalled { agent, .. }
            | Event::Recovered { agent, .. }
            | Event::Died { agent, .. }
            | Event::Evicted { agent, .. } => agent,
        }
    }

    /// A stable snake_case name of the event kind (TSV export, JSON, logs).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Event::NewAgent { .. } => "new_agent",
            Event::SessionRestart { .. } => "session_restart",
            Event::StatusChanged { .. } => "status_changed",
            Event::Stalled { .. } => "stalled",
            Event::Recovered { .. } => "recovered",
            Event::Died { .. } => "died",
            Event::Evicted { .. } => "evicted",
        }
    }
}

/// How an accepted frame was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptKind {
    /// First frame of a new identity.
    NewAgent,
    /// The next beat (or the terminal frame) of the current session.
    Beat,
    /// First frame of a new session of a known identity.
    Restart,
    /// A secure datagram reordered within the replay window: authentic and not seen before,
    /// counted as a beat, but older than the newest one, so it changes no state.
    Reordered,
}

/// A frame the tracker accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Who sent it.
    pub agent: AgentId,
    /// The frame.
    pub frame: Frame,
    /// How it was taken.
    pub kind: AcceptKind,
}

/// Why a datagram was refused. Every rejection is counted in [`Stats`] by its [`Reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a valid plain frame (§1, §2), or a length no listener mode accepts.
    Decode(DecodeError),
    /// A secure datagram did not open: [`OpenError::BadTag`] under every key (a decrypt
    /// failure), a sealed frame that breaks §2, or a master-key datagram whose sealed pid
    /// differs from its clear pid (an authentication failure).
    Open(OpenError),
    /// The AEAD counter was seen already or is older than the agent's replay window.
    Replay(ReplayError),
    /// A secure datagram from the agent's previous session's AEAD stream: a replay.
    RetiredStream,
    /// The frame's pid is not the kernel-attested pid: an authentication failure.
    PidMismatch {
        /// The pid the kernel attested.
        attested: u32,
        /// The pid the frame claims.
        claimed: u32,
    },
    /// The Unix sender's uid is not allowed.
    UidRefused {
        /// The sender's uid.
        uid: u32,
    },
    /// The tracker is full and no dead entry can make room.
    CapacityExceeded,
    /// The nonce did not increase and the frame is not a new session: a duplicate or a
    /// reordering.
    StaleNonce {
        /// The frame's nonce.
        nonce: u64,
        /// The last accepted nonce of the session.
        last: u64,
    },
    /// A frame of a session that already ended with a terminal frame.
    AfterTerminal,
    /// A 32-byte plaintext frame on a secure listener.
    PlaintextRefused,
    /// A secure datagram of a kind this listener has no key for (60 bytes without shared
    /// keys, 64 bytes without a master key).
    NoKey {
        /// The datagram's length.
        len: usize,
    },
    /// [`Origin::Udp`] named a listener the configuration does not have (a shell bug).
    UnknownListener {
        /// The listener number.
        listener: usize,
    },
}

/// The stable reasons rejections are counted under; [`Reason::label`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// [`DecodeError::BadLength`].
    BadLength,
    /// [`DecodeError::BadMagic`].
    BadMagic,
    /// [`DecodeError::BadVersion`].
    BadVersion,
    /// [`DecodeError::BadCrc`].
    BadCrc,
    /// [`DecodeError::BadStatus`].
    BadStatus,
    /// [`DecodeError::StallOnWire`].
    StallOnWire,
    /// [`DecodeError::BadPid`].
    BadPid,
    /// [`DecodeError::BadTimestamp`].
    BadTimestamp,
    /// [`DecodeError::BadNonce`].
    BadNonce,
    /// [`OpenError::BadTag`]: a decrypt failure.
    BadTag,
    /// [`OpenError::PidMismatch`]: an authentication failure.
    SealedPidMismatch,
    /// [`Rejection::PidMismatch`]: an authentication failure.
    PidMismatch,
    /// [`ReplayError::Replayed`].
    Replayed,
    /// [`ReplayError::TooOld`].
    TooOld,
    /// [`Rejection::RetiredStream`].
    RetiredStream,
    /// [`Rejection::UidRefused`].
    UidRefused,
    /// [`Rejection::CapacityExceeded`].
    CapacityExceeded,
    /// [`Rejection::StaleNonce`].
    StaleNonce,
    /// [`Rejection::AfterTerminal`].
    AfterTerminal,
    /// [`Rejection::PlaintextRefused`].
    PlaintextRefused,
    /// [`Rejection::NoKey`].
    NoKey,
    /// [`Rejection::UnknownListener`].
    UnknownListener,
}

/// Which family of metrics a [`Reason`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonClass {
    /// A frame that breaks §1/§2 (plain or sealed): `varta_decode_errors_total{kind}`.
    Decode,
    /// An identity that does not hold up: `varta_frame_auth_failures_total`.
    Auth,
    /// A tag that does not verify: `varta_frame_decrypt_failures_total`.
    Decrypt,
    /// Replayed or too-old secure datagrams.
    Replay,
    /// Full table: `varta_tracker_capacity_exceeded_total`.
    Capacity,
    /// Valid, authentic, but not new (duplicates, reorderings of plain frames, after death).
    Stale,
    /// Refused by policy or configuration (uid, plaintext on a secure listener, no key,
    /// unknown listener).
    Policy,
}

impl Reason {
    /// Number of reasons.
    pub const COUNT: usize = 22;

    /// Every reason, in declaration order (pre-registering metric labels).
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::BadLength,
        Reason::BadMagic,
        Reason::BadVersion,
        Reason::BadCrc,
        Reason::BadStatus,
        Reason::StallOnWire,
        Reason::BadPid,
        Reason::BadTimestamp,
        Reason::BadNonce,
        Reason::BadTag,
        Reason::SealedPidMismatch,
        Reason::PidMismatch,
        Reason::Replayed,
        Reason::TooOld,
        Reason::RetiredStream,
        Reason::UidRefused,
        Reason::CapacityExceeded,
        Reason::StaleNonce,
        Reason::AfterTerminal,
        Reason::PlaintextRefused,
        Reason::NoKey,
        Reason::UnknownListener,
    ];

    /// Stable snake_case label. The decode reasons equal [`DecodeError::kind`].
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Reason::BadLength => "bad_length",
            Reason::BadMagic => "bad_magic",
            Reason::BadVersion => "bad_version",
            Reason::BadCrc => "bad_crc",
            Reason::BadStatus => "bad_status",
            Reason::StallOnWire => "stall_on_wire",
            Reason::BadPid => "bad_pid",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadNonce => "bad_nonce",
            Reason::BadTag => "bad_tag",
            Reason::SealedPidMismatch => "sealed_pid_mismatch",
            Reason::PidMismatch => "pid_mismatch",
            Reason::Replayed => "replayed",
            Reason::TooOld => "too_old",
            Reason::RetiredStream => "retired_stream",
            Reason::UidRefused => "uid_refused",
            Reason::CapacityExceeded => "capacity_exceeded",
            Reason::StaleNonce => "stale_nonce",
            Reason::AfterTerminal => "after_terminal",
            Reason::PlaintextRefused => "plaintext_refused",
            Reason::NoKey => "no_key",
            Reason::UnknownListener => "unknown_listener",
        }
    }

    /// The metric family.
    #[must_use]
    pub const fn class(self) -> ReasonClass {
        match self {
            Reason::BadLength
            | Reason::BadMagic
            | Reason::BadVersion
            | Reason::BadCrc
            | Reason::BadStatus
            | Reason::StallOnWire
            | Reason::BadPid
            | Reason::BadTimestamp
            | Reason::BadNonce => ReasonClass::Decode,
            Reason::BadTag => ReasonClass::Decrypt,
            Reason::SealedPidMismatch | Reason::PidMismatch => ReasonClass::Auth,
            Reason::Replayed | Reason::TooOld | Reason::RetiredStream => ReasonClass::Replay,
            Reason::CapacityExceeded => ReasonClass::Capacity,
            Reason::StaleNonce | Reason::AfterTerminal => ReasonClass::Stale,
            Reason::UidRefused
            | Reason::PlaintextRefused
            | Reason::NoKey
            | Reason::UnknownListener => ReasonClass::Policy,
        }
    }

    fn of_decode(e: &DecodeError) -> Reason {
        match e {
            DecodeError::BadLength { .. } => Reason::BadLength,
            DecodeError::BadMagic => Reason::BadMagic,
            DecodeError::BadVersion => Reason::BadVersion,
            DecodeError::BadCrc { .. } => Reason::BadCrc,
            DecodeError::BadStatus(_) => Reason::BadStatus,
            DecodeError::StallOnWire => Reason::StallOnWire,
            DecodeError::BadPid(_) => Reason::BadPid,
            DecodeError::BadTimestamp(_) => Reason::BadTimestamp,
            DecodeError::BadNonce { .. } => Reason::BadNonce,
        }
    }
}

impl Rejection {
    /// The counted reason.
    #[must_use]
    pub fn code(&self) -> Reason {
        match self {
            Rejection::Decode(e) => Reason::of_decode(e),
            Rejection::Open(OpenError::BadLength { .. }) => Reason::BadLength,
            Rejection::Open(OpenError::BadTag) => Reason::BadTag,
            Rejection::Open(OpenError::Frame(e)) => Reason::of_decode(e),
            Rejection::Open(OpenError::PidMismatch { .. }) => Reason::SealedPidMismatch,
            Rejection::Replay(ReplayError::Replayed { .. }) => Reason::Replayed,
            Rejection::Replay(ReplayError::TooOld { .. }) => Reason::TooOld,
            Rejection::RetiredStream => Reason::RetiredStream,
            Rejection::PidMismatch { .. } => Reason::PidMismatch,
            Rejection::UidRefused { .. } => Reason::UidRefused,
            Rejection::CapacityExceeded => Reason::CapacityExceeded,
            Rejection::StaleNonce { .. } => Reason::StaleNonce,
            Rejection::AfterTerminal => Reason::AfterTerminal,
            Rejection::PlaintextRefused => Reason::PlaintextRefused,
            Rejection::NoKey { .. } => Reason::NoKey,
            Rejection::UnknownListener { .. } => Reason::UnknownListener,
        }
    }

    /// Stable snake_case label for metrics (`code().label()`).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.code().label()
    }

    /// The metric family (`code().class()`).
    #[must_use]
    pub fn class(&self) -> ReasonClass {
        self.code().class()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Decode(e) => write!(f, "decode error: {e}"),
            Rejection::Open(e) => write!(f, "secure datagram refused: {e}"),
            Rejection::Replay(e) => write!(f, "replay window: {e}"),
            Rejection::RetiredStream => {
                f.write_str("AEAD stream of the agent's previous session: replayed")
            }
            Rejection::PidMismatch { attested, claimed } => write!(
                f,
                "frame claims pid {claimed} but the kernel attests pid {attested}"
            ),
            Rejection::UidRefused { uid } => write!(f, "sender uid {uid} is not allowed"),
            Rejection::CapacityExceeded => f.write_str("tracker is at capacity"),
            Rejection::StaleNonce { nonce, last } => write!(
                f,
                "nonce {nonce} does not increase past {last}: duplicate or reordered"
            ),
            Rejection::AfterTerminal => {
                f.write_str("frame of a session that already sent its terminal frame")
            }
            Rejection::PlaintextRefused => {
                f.write_str("plaintext frame on a secure listener refused")
            }
            Rejection::NoKey { len } => {
                write!(
                    f,
                    "{len}-byte secure datagram but no key of that kind is configured"
                )
            }
            Rejection::UnknownListener { listener } => {
                write!(f, "no UDP listener number {listener} is configured")
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// Counters for metrics. Monotonic over the tracker's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`Tracker::handle_datagram`].
    pub datagrams: u64,
    /// Frames accepted (every [`AcceptKind`]).
    pub accepted: u64,
    /// Of which [`AcceptKind::Reordered`].
    pub reordered: u64,
    /// [`Event::NewAgent`] raised.
    pub new_agents: u64,
    /// [`Event::SessionRestart`] raised.
    pub restarts: u64,
    /// [`Event::Stalled`] raised.
    pub stalls: u64,
    /// [`Event::Recovered`] raised.
    pub recoveries: u64,
    /// [`Event::Died`] raised with `clean == false`.
    pub crashes: u64,
    /// [`Event::Died`] raised with `clean == true`.
    pub goodbyes: u64,
    /// [`Event::Evicted`] raised.
    pub evictions: u64,
    /// Events dropped because the shell did not drain the queue ([`EVENT_QUEUE_CAP`]).
    pub events_dropped: u64,
    /// Agent keys derived from a master key (first datagram of an agent, forged datagrams,
    /// and agents beyond [`KEY_CACHE_MAX`] slots).
    pub key_derivations: u64,
    rejected: [u64; Reason::COUNT],
}

impl Stats {
    const ZERO: Stats = Stats {
        datagrams: 0,
        accepted: 0,
        reordered: 0,
        new_agents: 0,
        restarts: 0,
        stalls: 0,
        recoveries: 0,
        crashes: 0,
        goodbyes: 0,
        evictions: 0,
        events_dropped: 0,
        key_derivations: 0,
        rejected: [0; Reason::COUNT],
    };

    /// Rejections counted under `r`.
    #[must_use]
    pub fn rejected(&self, r: Reason) -> u64 {
        self.rejected[r as usize]
    }

    /// Every reason with its count (zeros included), in [`Reason::ALL`] order.
    pub fn rejections(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.iter().map(|&r| (r, self.rejected[r as usize]))
    }

    /// Sum of the rejections of one class.
    #[must_use]
    pub fn rejected_class(&self, c: ReasonClass) -> u64 {
        self.rejections()
            .filter(|(r, _)| r.class() == c)
            .map(|(_, n)| n)
            .sum()
    }

    /// All rejections.
    #[must_use]
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

/// An agent's liveness state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentState {
    /// Beating within the threshold.
    Alive,
    /// Silent for the threshold or longer.
    Stalled,
    /// Sent its terminal frame.
    Dead {
        /// Goodbye (clean exit) rather than a crash.
        clean: bool,
    },
}

impl AgentState {
    /// Lower-case name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::Alive => "alive",
            AgentState::Stalled => "stalled",
            AgentState::Dead { clean: true } => "exited",
            AgentState::Dead { clean: false } => "crashed",
        }
    }
}

/// A snapshot of one tracked agent, for metrics and status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentView {
    /// Who.
    pub id: AgentId,
    /// Last wire status (Critical after a terminal frame).
    pub status: Status,
    /// Liveness.
    pub state: AgentState,
    /// Regular beats accepted from this identity (all sessions, reordered ones included);
    /// terminal frames (crash reports, goodbyes) are not beats: they are counted as events.
    pub beats: u64,
    /// Stalls raised for this identity (all sessions).
    pub stalls: u64,
    /// Observer time of the last accepted beat or terminal frame.
    pub last_beat: Nanos,
    /// Nonce of the last accepted regular beat of the current session.
    pub nonce: u64,
    /// Payload of the last accepted frame.
    pub payload: u32,
    /// Whether the agent speaks through a secure listener.
    pub secure: bool,
}

impl AgentView {
    /// The status as `varta_status{pid}` reports it: the wire status, or [`Status::Stall`]
    /// while stalled.
    #[must_use]
    pub fn reported_status(&self) -> Status {
        if self.state == AgentState::Stalled {
            Status::Stall
        } else {
            self.status
        }
    }

    fn of(a: &Agent) -> AgentView {
        AgentView {
            id: a.id(),
            status: a.status(),
            state: match a.phase() {
                Phase::Stalled => AgentState::Stalled,
                Phase::DeadCrash => AgentState::Dead { clean: false },
                Phase::DeadClean => AgentState::Dead { clean: true },
                Phase::Alive | Phase::Free => AgentState::Alive,
            },
            beats: a.beats,
            stalls: u64::from(a.stalls),
            last_beat: a.last_beat,
            nonce: a.last_nonce,
            payload: a.payload,
            secure: a.secure(),
        }
    }
}

/// A frame that passed decoding and authentication, on its way into the table.
struct Verified {
    listener: u16,
    frame: Frame,
    iv: Option<Iv>,
    /// The identity's table lookup, if the pipeline made it already (master-key datagrams,
    /// whose pid is in the clear): `Some(slot)` or `Some(None)` for "not tracked". Nothing
    /// changes the table between that lookup and [`Tracker::track`], so it is not repeated.
    looked_up: Option<Option<u32>>,
    /// The replay checks ([`precheck`]) passed on `looked_up`'s entry already.
    prechecked: bool,
}

/// How a frame of a known agent is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Advance,
    Restart,
    Reordered,
}

/// The observer core (see the module docs).
pub struct Tracker {
    threshold: Nanos,
    evict_after: Nanos,
    allowed_uids: Vec<u32>,
    udp: Vec<UdpMode>,
    table: Table,
    keys: Option<AgentKeys>,
    events: VecDeque<Event>,
    stats: Stats,
    now: Nanos,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("threshold", &self.threshold)
            .field("evict_after", &self.evict_after)
            .field("len", &self.table.len())
            .field("udp_listeners", &self.udp.len())
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker for `cfg`. Memory for agents is taken as they arrive (up to the capacity);
    /// with a master key configured, agent keys are kept per slot as agents are admitted (see
    /// [`KEY_CACHE_MAX`]).
    #[must_use]
    pub fn new(cfg: TrackerConfig) -> Tracker {
        let capacity = cfg.capacity.min(MAX_CAPACITY);
        let has_master = cfg.udp.iter().any(|m| {
            matches!(
                m,
                UdpMode::Secure {
                    master: Some(_),
                    ..
                }
            )
        });
        Tracker {
            threshold: cfg.threshold.max(1),
            evict_after: cfg.evict_after,
            allowed_uids: cfg.allowed_uids,
            udp: cfg.udp,
            table: Table::new(capacity),
            keys: has_master.then(|| AgentKeys::new(capacity.min(KEY_CACHE_MAX))),
            events: VecDeque::with_capacity(64),
            stats: Stats::ZERO,
            now: 0,
        }
    }

    /// The one decode pipeline every listener uses (see the module docs): length, decode or
    /// open, replay window, authentication and uid checks, then the agent's session and nonce.
    /// Events it raises are queued for [`Tracker::poll_event`].
    ///
    /// # Errors
    /// The [`Rejection`]; it is counted in [`Stats`] before it is returned.
    pub fn handle_datagram(
        &mut self,
        now: Nanos,
        origin: &Origin,
        bytes: &[u8],
    ) -> Result<Accepted, Rejection> {
        let now = self.clock(now);
        self.stats.datagrams += 1;
        let r = self.pipeline(now, origin, bytes);
        match &r {
            Ok(a) => {
                self.stats.accepted += 1;
                if a.kind == AcceptKind::Reordered {
                    self.stats.reordered += 1;
                }
            }
            Err(e) => self.stats.rejected[e.code() as usize] += 1,
        }
        r
    }

    /// Fires deadlines `<= now` in deadline order (stalls, evictions), at most
    /// [`TIMEOUT_BATCH`] per call.
    pub fn handle_timeout(&mut self, now: Nanos) {
        let now = self.clock(now);
        for _ in 0..TIMEOUT_BATCH {
            match self.earliest() {
                Some((slot, deadline)) if deadline <= now => self.fire(slot, deadline),
                _ => break,
            }
        }
    }

    /// The earliest pending deadline; `None` if nothing is pending (no agents, or only agents
    /// that will never be evicted). A value `<= now` means "call
    /// [`Tracker::handle_timeout`] again now".
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.earliest().map(|(_, d)| d)
    }

    /// The next event raised by the `handle_*` calls, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Counters for metrics.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every tracked agent, in table order.
    pub fn agents(&self) -> impl Iterator<Item = AgentView> + '_ {
        self.table.iter().map(AgentView::of)
    }

    /// One agent.
    #[must_use]
    pub fn agent(&self, id: AgentId) -> Option<AgentView> {
        let code = listener_code(id.listener)?;
        let slot = self.table.find(tag(code, id.pid))?;
        Some(AgentView::of(&self.table.slab[slot as usize]))
    }

    /// Agents tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no agent is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Bytes of heap held by the agent table (slab and index); the master-key agent keys (32
    /// bytes per slot, master-key listeners only, at most [`KEY_CACHE_MAX`] slots) and the
    /// event queue are not included.
    #[must_use]
    pub fn table_heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    /// The latest `now` seen (time given to the tracker never goes backwards).
    #[must_use]
    pub fn now(&self) -> Nanos {
        self.now
    }

    fn clock(&mut self, now: Nanos) -> Nanos {
        self.now = self.now.max(now);
        self.now
    }

    fn push(&mut self, e: Event) {
        if self.events.len() >= EVENT_QUEUE_CAP {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    fn pipeline(
        &mut self,
        now: Nanos,
        origin: &Origin,
        bytes: &[u8],
    ) -> Result<Accepted, Rejection> {
        let v = match *origin {
            Origin::Unix { pid, uid } => {
                if !self.allowed_uids.contains(&uid) {
                    return Err(Rejection::UidRefused { uid });
                }
                let frame = Frame::parse(bytes).map_err(Rejection::Decode)?;
                if frame.pid() != pid {
                    return Err(Rejection::PidMismatch {
                        attested: pid,
                        claimed: frame.pid(),
                    });
                }
                Verified {
                    listener: 0,
                    frame,
                    iv: None,
                    looked_up: None,
                    prechecked: false,
                }
            }
            Origin::Udp { listener, .. } => {
                let (Some(mode), Some(code)) = (
                    self.udp.get(listener),
                    listener_code(Listener::Udp(listener)),
                ) else {
                    return Err(Rejection::UnknownListener { listener });
                };
                match mode {
                    UdpMode::Plain => Verified {
                        listener: code,
                        frame: Frame::parse(bytes).map_err(Rejection::Decode)?,
                        iv: None,
                        looked_up: None,
                        prechecked: false,
                    },
                    UdpMode::Secure { keys, master } => match bytes.len() {
                        FRAME_LEN => return Err(Rejection::PlaintextRefused),
                        SHARED_LEN => {
                            let (iv, frame) = open_shared(keys, bytes)?;
                            Verified {
                                listener: code,
                                frame,
                                iv: Some(iv),
                                looked_up: None,
                                prechecked: false,
                            }
                        }
                        MASTER_LEN => {
                            let Some(master) = master else {
                                return Err(Rejection::NoKey { len: MASTER_LEN });
                            };
                            let d = MasterDatagram::from_bytes(bytes).map_err(Rejection::Open)?;
                            let slot = self.table.find(tag(code, d.pid()));
                            // Replay window first: a flood of replays costs a lookup, not an
                            // AEAD pass. The same lookup finds the agent's kept key.
                            let mut kept = None;
                            if let Some(s) = slot {
                                let a = &self.table.slab[s as usize];
                                precheck(a, &d.iv())?;
                                if a.has_key() {
                                    kept = self.keys.as_ref().and_then(|k| k.get(s));
                                }
                            }
                            let (iv, frame, new_key) = match kept {
                                Some(k) => {
                                    let (iv, frame) = d.open(k).map_err(Rejection::Open)?;
                                    (iv, frame, None)
                                }
                                None => {
                                    self.stats.key_derivations += 1;
                                    let k = derive_agent_key(master, d.pid());
                                    let (iv, frame) = d.open(&k).map_err(Rejection::Open)?;
                                    (iv, frame, Some(k))
                                }
                            };
                            let pid = frame.pid();
                            let r = self.track(
                                now,
                                Verified {
                                    listener: code,
                                    frame,
                                    iv: Some(iv),
                                    looked_up: Some(slot),
                                    prechecked: true,
                                },
                            );
                            if let (Some(k), Ok(_)) = (new_key, &r) {
                                // It opened an accepted datagram of this agent: keep it in
                                // the agent's slot (a second lookup, once per agent).
                                if let Some(s) = self.table.find(tag(code, pid)) {
                                    self.keep_key(s, k);
                                }
                            }
                            return r;
                        }
                        len => return Err(Rejection::Decode(DecodeError::BadLength { len })),
                    },
                }
            }
        };
        self.track(now, v)
    }

    /// Session and liveness bookkeeping for a verified frame.
    fn track(&mut self, now: Nanos, v: Verified) -> Result<Accepted, Rejection> {
        let mut slot = match v.looked_up {
            Some(found) => found,
            None => self.table.find(tag(v.listener, v.frame.pid())),
        };
        if let Some(s) = slot {
            // Apply this agent's own overdue deadlines first, so the outcome does not depend
            // on when the shell last called handle_timeout.
            if !self.catch_up(s, now) {
                slot = None;
            }
        }
        let Some(slot) = slot else {
            return self.admit(now, v);
        };
        let a = &self.table.slab[slot as usize];
        let agent = a.id();
        let decision = match v.iv {
            Some(iv) => decide_secure(a, &iv, &v.frame, v.prechecked)?,
            None => decide_plain(a, &v.frame, now, self.threshold)?,
        };
        let a = &mut self.table.slab[slot as usize];
        if !v.frame.is_terminal() {
            a.beats += 1;
        }
        if let Some(iv) = v.iv {
            if a.window.stream() == Some(iv.random) {
                a.window.commit(&iv);
            } else if v.frame.is_terminal() {
                // A crash report from the agent's panic hook, which seals with a session of
                // its own: the current stream and its window stay, so the application's own
                // beats are still taken if the process lives on.
                a.set_side(Side::of(&iv));
            } else {
                if let Some(old) = a.window.stream() {
                    a.set_retired(old);
                }
                a.window = ReplayWindow::new();
                a.window.commit(&iv);
            }
        }
        let accepted = |kind| Accepted {
            agent,
            frame: v.frame,
            kind,
        };
        if decision == Decision::Reordered {
            return Ok(accepted(AcceptKind::Reordered));
        }
        let f = v.frame;
        let was = a.phase();
        let old_status = a.status();
        let silent_for = now.saturating_sub(a.last_beat);
        // The frame becomes the agent's latest.
        a.set_last_ts(f.timestamp());
        a.payload = f.payload();
        a.last_beat = now;
        if !f.is_terminal() {
            a.last_nonce = f.nonce();
        } else if decision == Decision::Restart {
            a.last_nonce = 0;
        }
        a.status = f.status().as_u8();
        if was == Phase::Stalled && !(f.is_terminal() && decision == Decision::Advance) {
            self.stats.recoveries += 1;
            self.push(Event::Recovered {
                at: now,
                agent,
                silent_for,
            });
        }
        if decision == Decision::Restart {
            self.stats.restarts += 1;
            self.push(Event::SessionRestart {
                at: now,
                agent,
                nonce: f.nonce(),
            });
        }
        if !f.is_terminal() && old_status != f.status() {
            self.push(Event::StatusChanged {
                at: now,
                agent,
                from: old_status,
                to: f.status(),
                payload: f.payload(),
            });
        }
        self.table.unlink(slot);
        if f.is_terminal() {
            self.die(slot, now, &f);
        } else {
            self.table.slab[slot as usize].set_phase(Phase::Alive);
            self.table.push_back(ListId::Alive, slot);
        }
        Ok(accepted(if decision == Decision::Restart {
            AcceptKind::Restart
        } else {
            AcceptKind::Beat
        }))
    }

    /// Marks an unlinked `slot` dead and queues it for eviction.
    fn die(&mut self, slot: u32, now: Nanos, f: &Frame) {
        let clean = f.is_goodbye();
        let a = &mut self.table.slab[slot as usize];
        a.set_phase(if clean {
            Phase::DeadClean
        } else {
            Phase::DeadCrash
        });
        let agent = a.id();
        self.table.push_back(ListId::Dead, slot);
        if clean {
            self.stats.goodbyes += 1;
        } else {
            self.stats.crashes += 1;
        }
        self.push(Event::Died {
            at: now,
            agent,
            clean,
            payload: f.payload(),
        });
    }

    /// First frame of an identity.
    fn admit(&mut self, now: Nanos, v: Verified) -> Result<Accepted, Rejection> {
        if self.table.is_full() {
            // The longest-dead entry makes room; live and stalled agents are never pushed out.
            let Some(victim) = self.table.head(ListId::Dead) else {
                return Err(Rejection::CapacityExceeded);
            };
            self.evict(victim, now);
        }
        let f = v.frame;
        let mut a = Agent::EMPTY;
        a.pid = f.pid();
        a.listener = v.listener;
        a.last_nonce = if f.is_terminal() { 0 } else { f.nonce() };
        a.last_beat = now;
        a.beats = u64::from(!f.is_terminal());
        a.payload = f.payload();
        a.status = f.status().as_u8();
        if let Some(iv) = v.iv {
            a.set_secure();
            if f.is_terminal() {
                // As for a known agent: a terminal frame's stream is a side stream until a
                // regular beat names the session's own (the panic hook may report first).
                a.set_side(Side::of(&iv));
            } else {
                a.window.commit(&iv);
            }
        }
        a.set_last_ts(f.timestamp());
        let agent = a.id();
        let slot = self.table.insert(a);
        self.stats.new_agents += 1;
        self.push(Event::NewAgent {
            at: now,
            agent,
            status: f.status(),
            nonce: f.nonce(),
        });
        if f.is_terminal() {
            self.die(slot, now, &f);
        } else {
            self.table.slab[slot as usize].set_phase(Phase::Alive);
            self.table.push_back(ListId::Alive, slot);
        }
        Ok(Accepted {
            agent,
            frame: f,
            kind: AcceptKind::NewAgent,
        })
    }

    /// The deadline of `slot` by its phase.
    fn deadline(&self, slot: u32) -> Nanos {
        let a = &self.table.slab[slot as usize];
        match a.phase() {
            Phase::Alive => a.last_beat.saturating_add(self.threshold),
            Phase::Stalled => a
                .last_beat
                .saturating_add(self.threshold)
                .saturating_add(self.evict_after),
            Phase::DeadCrash | Phase::DeadClean => a.last_beat.saturating_add(self.evict_after),
            Phase::Free => Nanos::MAX,
        }
    }

    /// The earliest deadline over the three list heads. A saturated deadline (`u64::MAX`)
    /// means "never".
    fn earliest(&self) -> Option<(u32, Nanos)> {
        [ListId::Alive, ListId::Stalled, ListId::Dead]
            .into_iter()
            .filter_map(|l| self.table.head(l))
            .map(|s| (s, self.deadline(s)))
            .filter(|&(_, d)| d != Nanos::MAX)
            .min_by_key(|&(_, d)| d)
    }

    /// Fires `slot`'s deadline (which is `<= now`).
    fn fire(&mut self, slot: u32, deadline: Nanos) {
        match self.table.slab[slot as usize].phase() {
            Phase::Alive => {
                self.table.unlink(slot);
                let a = &mut self.table.slab[slot as usize];
                a.set_phase(Phase::Stalled);
                a.stalls = a.stalls.saturating_add(1);
                let e = Event::Stalled {
                    at: deadline,
                    agent: a.id(),
                    last_beat: a.last_beat,
                    nonce: a.last_nonce,
                };
                self.table.push_back(ListId::Stalled, slot);
                self.stats.stalls += 1;
                self.push(e);
            }
            Phase::Stalled | Phase::DeadCrash | Phase::DeadClean => self.evict(slot, deadline),
            Phase::Free => {}
        }
    }

    /// Keeps a master-derived agent key in `slot`'s key store (if the slot is within it).
    fn keep_key(&mut self, slot: u32, key: Key) {
        if let Some(keys) = self.keys.as_mut() {
            if keys.store(slot, key) {
                self.table.slab[slot as usize].set_has_key();
            }
        }
    }

    fn evict(&mut self, slot: u32, at: Nanos) {
        if self.table.slab[slot as usize].has_key() {
            if let Some(keys) = self.keys.as_mut() {
                keys.clear(slot);
            }
        }
        let agent = self.table.slab[slot as usize].id();
        self.table.remove(slot);
        self.stats.evictions += 1;
        self.push(Event::Evicted { at, agent });
    }

    /// Fires `slot`'s own overdue deadlines; `false` if that evicted it.
    fn catch_up(&mut self, slot: u32, now: Nanos) -> bool {
        loop {
            let d = self.deadline(slot);
            if d == Nanos::MAX || d > now {
                return true;
            }
            let evicting = self.table.slab[slot as usize].phase() != Phase::Alive;
            self.fire(slot, d);
            if evicting {
                return false;
            }
        }
    }

    /// Checks the structural invariants of the table (lists sorted by deadline, phases match
    /// lists, index and slab agree, length within capacity) and of the deadline clock
    /// (`poll_timeout` is the earliest deadline of any agent). Walks every agent: for tests and
    /// fuzzing, not for the hot path.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut on_lists = 0usize;
        let mut min_deadline: Option<Nanos> = None;
        for (l, want) in [
            (ListId::Alive, "alive"),
            (ListId::Stalled, "stalled"),
            (ListId::Dead, "dead"),
        ] {
            let mut prev: Option<Nanos> = None;
            for s in self.table.walk(l) {
                let a = &self.table.slab[s as usize];
                let ok = match l {
                    ListId::Alive => a.phase() == Phase::Alive,
                    ListId::Stalled => a.phase() == Phase::Stalled,
                    ListId::Dead => a.is_dead(),
                };
                if !ok {
                    return Err(format!(
                        "slot {s} on the {want} list in phase {:?}",
                        a.phase()
                    ));
                }
                let d = self.deadline(s);
                if prev.is_some_and(|p| p > d) {
                    return Err(format!("{want} list out of deadline order at slot {s}"));
                }
                prev = Some(d);
                if self.table.find(a.tag()) != Some(s) {
                    return Err(format!("slot {s} not indexed"));
                }
                if d != Nanos::MAX {
                    min_deadline = Some(min_deadline.map_or(d, |m| m.min(d)));
                }
                on_lists += 1;
            }
        }
        if on_lists != self.table.len() {
            return Err(format!(
                "{on_lists} agents on lists, table says {}",
                self.table.len()
            ));
        }
        if self.table.iter().count() != self.table.len() {
            return Err("slab live count differs from len".into());
        }
        if self.table.len() > self.table_capacity() {
            return Err("len exceeds capacity".into());
        }
        if self.poll_timeout() != min_deadline {
            return Err(format!(
                "poll_timeout {:?} but earliest deadline {min_deadline:?}",
                self.poll_timeout()
            ));
        }
        Ok(())
    }

    fn table_capacity(&self) -> usize {
        self.table.capacity()
    }
}

/// Replay checks that need no decryption: the window, the retired stream and the side stream.
fn precheck(a: &Agent, iv: &Iv) -> Result<(), Rejection> {
    if !a.secure() {
        return Ok(());
    }
    if a.window.stream() != Some(iv.random) {
        if a.retired() == Some(iv.random) {
            return Err(Rejection::RetiredStream);
        }
        if let Some(side) = a.side() {
            if side.fingerprint == Side::fingerprint_of(&iv.random) {
                // The terminal frame taken from this stream again: a replay. Anything sent
                // on it before that terminal frame belongs to a session that has ended.
                if iv.counter == side.counter {
                    return Err(Rejection::Replay(ReplayError::Replayed {
                        counter: iv.counter,
                    }));
                }
                if iv.counter < side.counter {
                    return Err(Rejection::AfterTerminal);
                }
            }
        }
    }
    a.window.check(iv).map_err(Rejection::Replay)
}

fn open_shared(keys: &[Key], bytes: &[u8]) -> Result<(Iv, Frame), Rejection> {
    if keys.is_empty() {
        return Err(Rejection::NoKey { len: SHARED_LEN });
    }
    let d = SharedDatagram::from_bytes(bytes).map_err(Rejection::Open)?;
    for k in keys {
        match d.open(k) {
            Ok(ok) => return Ok(ok),
            Err(OpenError::BadTag) => {}
            Err(e) => return Err(Rejection::Open(e)),
        }
    }
    Err(Rejection::Open(OpenError::BadTag))
}

/// Session rules for a secure frame of a known agent (see the module docs).
fn decide_secure(a: &Agent, iv: &Iv, f: &Frame, prechecked: bool) -> Result<Decision, Rejection> {
    if !prechecked {
        precheck(a, iv)?;
    }
    let same_stream = a.window.stream() == Some(iv.random);
    if !same_stream {
        if f.is_terminal() && a.is_dead() {
            // A later crash report on the side stream of an agent that is already dead
            // (another thread's panic) says nothing new; on any other stream it is a new
            // session (a recycled pid) that died at once.
            let side = a
                .side()
                .is_some_and(|s| s.fingerprint == Side::fingerprint_of(&iv.random));
            return if side {
                Err(Rejection::AfterTerminal)
            } else {
                Ok(Decision::Restart)
            };
        }
        // A stream not seen before: an IV rotation (nonce goes on), the panic hook's own
        // session reporting a crash of a live agent, or a new session.
        return Ok(
            if !a.is_dead() && (f.is_terminal() || f.nonce() > a.last_nonce) {
                Decision::Advance
            } else {
                Decision::Restart
            },
        );
    }
    // Same stream: the window already refused replays; the counter orders datagrams.
    let newer = iv.counter > a.window.highest();
    if a.is_dead() {
        return if f.is_terminal() || !newer {
            Err(Rejection::AfterTerminal)
        } else {
            Ok(Decision::Restart)
        };
    }
    if f.is_terminal() || f.nonce() > a.last_nonce {
        Ok(Decision::Advance)
    } else if !newer {
        Ok(Decision::Reordered)
    } else {
        // The counter went on but the nonce went back: the sender began a new session on
        // the same stream.
        Ok(Decision::Restart)
    }
}

/// Session rules for a plain frame of a known agent (see the module docs).
fn decide_plain(a: &Agent, f: &Frame, now: Nanos, threshold: Nanos) -> Result<Decision, Rejection> {
    let (n, ts) = (f.nonce(), f.timestamp());
    let (last_n, last_ts) = (a.last_nonce, a.last_ts());
    if a.is_dead() {
        // last_ts is the terminal frame's timestamp, last_beat its arrival. A frame stamped
        // no later than the terminal one, arriving soon after it, is a late frame of the dead
        // session (reordered on the way); anything else is a new session.
        let late = ts <= last_ts
            && !far_below(n, last_n, ts, last_ts)
            && now < a.last_beat.saturating_add(threshold);
        return if f.is_terminal() || late {
            Err(Rejection::AfterTerminal)
        } else {
            Ok(Decision::Restart)
        };
    }
    if f.is_terminal() {
        return Ok(Decision::Advance);
    }
    if n > last_n {
        // The same session's clock never goes back (senders clamp it).
        return Ok(if ts >= last_ts {
            Decision::Advance
        } else {
            Decision::Restart
        });
    }
    if n == last_n && ts == last_ts {
        return Err(Rejection::StaleNonce {
            nonce: n,
            last: last_n,
        });
    }
    if ts >= last_ts || n == last_n {
        // Nonce back (or equal) while the clock went on, or the same nonce at another time:
        // not the session we know.
        return Ok(Decision::Restart);
    }
    if a.phase() == Phase::Stalled || far_below(n, last_n, ts, last_ts) {
        return Ok(Decision::Restart);
    }
    Err(Rejection::StaleNonce {
        nonce: n,
        last: last_n,
    })
}

/// Nonce and timestamp both started over: each at most half its last value, and the nonce
/// more than [`REORDER_SLACK`] below the last one.
fn far_below(n: u64, last_n: u64, ts: u64, last_ts: u64) -> bool {
    n <= last_n / 2 && ts <= last_ts / 2 && last_n - n > REORDER_SLACK
}
