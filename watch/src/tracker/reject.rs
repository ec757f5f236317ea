//! Why a datagram was refused: [`Rejection`] (with the details) and [`Reason`] (what is
//! counted, with its one spelling).

use std::fmt;

use vlp_core::{DecodeError, OpenError, ReplayError};

#[allow(unused_imports)] // reason: named in doc links only
use super::{Origin, Stats};

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
    /// A secure datagram of a stream the agent left (an earlier session, or before an IV
    /// rotation): a replay.
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
    /// A secure datagram of a stream the tombstone of an evicted identity remembers: a replay
    /// of a session that ended before the eviction.
    EvictedStream,
    /// A terminal frame of a stalled agent on a stream other than its current one: it could
    /// be a replayed exit of an older session, so it does not end the stall.
    NotCurrentStream,
    /// A plaintext frame for a known pid from another source address than the agent's, before
    /// the agent has been silent for the threshold.
    OriginConflict,
    /// The tracker's room for unproven identities (plain UDP, shared key) is full; the rest is
    /// reserved for kernel-attested and per-agent-key identities.
    UnprovenCapacity,
    /// Over a beat rate limit (`--max-beat-rate`, `--global-beat-rate`; see `rate`).
    RateLimited {
        /// Which bucket refused it.
        scope: super::RateScope,
    },
    /// A master-key datagram of an unknown identity past the per-second budget of key
    /// derivations: refused unopened.
    DeriveBudget,
}

/// The stable reasons rejections are counted under; [`Reason::as_str`] is its one spelling (metric label, logs, docs).
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
    /// [`Rejection::EvictedStream`].
    EvictedStream,
    /// [`Rejection::NotCurrentStream`].
    NotCurrentStream,
    /// [`Rejection::OriginConflict`].
    OriginConflict,
    /// [`Rejection::UnprovenCapacity`].
    UnprovenCapacity,
    /// [`Rejection::RateLimited`].
    RateLimited,
    /// [`Rejection::DeriveBudget`].
    DeriveBudget,
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
    pub const COUNT: usize = 28;

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
        Reason::EvictedStream,
        Reason::NotCurrentStream,
        Reason::OriginConflict,
        Reason::UnprovenCapacity,
        Reason::RateLimited,
        Reason::DeriveBudget,
    ];

    /// The reason's one spelling (snake_case: metric label, logs, docs). The decode reasons equal [`DecodeError::kind`].
    #[must_use]
    pub const fn as_str(self) -> &'static str {
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
            Reason::EvictedStream => "evicted_stream",
            Reason::NotCurrentStream => "not_current_stream",
            Reason::OriginConflict => "origin_conflict",
            Reason::UnprovenCapacity => "unproven_capacity",
            Reason::RateLimited => "rate_limited",
            Reason::DeriveBudget => "derive_budget",
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
            Reason::Replayed
            | Reason::TooOld
            | Reason::RetiredStream
            | Reason::EvictedStream
            | Reason::NotCurrentStream => ReasonClass::Replay,
            Reason::CapacityExceeded | Reason::UnprovenCapacity => ReasonClass::Capacity,
            Reason::StaleNonce | Reason::AfterTerminal => ReasonClass::Stale,
            Reason::UidRefused
            | Reason::PlaintextRefused
            | Reason::NoKey
            | Reason::UnknownListener
            | Reason::OriginConflict
            | Reason::RateLimited
            | Reason::DeriveBudget => ReasonClass::Policy,
        }
    }

    pub(super) fn of_decode(e: &DecodeError) -> Reason {
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
            Rejection::EvictedStream => Reason::EvictedStream,
            Rejection::NotCurrentStream => Reason::NotCurrentStream,
            Rejection::OriginConflict => Reason::OriginConflict,
            Rejection::UnprovenCapacity => Reason::UnprovenCapacity,
            Rejection::RateLimited { .. } => Reason::RateLimited,
            Rejection::DeriveBudget => Reason::DeriveBudget,
        }
    }

    /// The counted reason's spelling (`code().as_str()`).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.code().as_str()
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
            Rejection::EvictedStream => {
                f.write_str("AEAD stream of an evicted identity's earlier session: replayed")
            }
            Rejection::NotCurrentStream => f.write_str(
                "terminal frame of a stalled agent on a stream other than its current one",
            ),
            Rejection::OriginConflict => f.write_str(
                "plaintext frame for a known pid from another source address within the threshold",
            ),
            Rejection::UnprovenCapacity => f.write_str(
                "room for unattested identities is full (the rest is reserved for attested ones)",
            ),
            Rejection::RateLimited { scope } => {
                write!(f, "over the {} beat rate limit", scope.as_str())
            }
            Rejection::DeriveBudget => {
                f.write_str("key derivations for unknown agents are over their per-second budget")
            }
        }
    }
}

impl std::error::Error for Rejection {}
