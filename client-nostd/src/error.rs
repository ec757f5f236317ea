//! The client's errors: one small `Copy` enum naming the step that failed, with the stack's
//! error reduced to a [`StackError`] kind (the stacks' own error types differ and some, like
//! embedded-nal's, only promise `Debug`).

use core::fmt;

use vlp_core::SessionError;

/// What an IP stack said when it refused an operation, reduced to the kinds a heartbeat sender
/// can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StackError {
    /// The stack cannot take the datagram now (socket buffer full, `nb::WouldBlock`, ARP
    /// pending); poll the stack and try again. Nothing was consumed.
    WouldBlock,
    /// No route or no usable address for the destination (smoltcp `Unaddressable`,
    /// embassy-net `NoRoute`, `AddrNotAvailable`, ...).
    NoRoute,
    /// The socket is not bound to a local port.
    NotBound,
    /// The datagram does not fit the socket's buffer at all (retrying cannot help).
    TooLarge,
    /// The send failed in a way that does not say whether the datagram left the device (a
    /// timeout, an interrupted call, an allocation failure inside the stack). The agent counts
    /// it as sent: its nonce and IV are consumed, so a retry can never reuse them.
    Uncertain,
    /// Any other refusal of the stack (embedded-nal errors only promise `Debug`). Like
    /// [`StackError::Uncertain`], it may have happened after the datagram was queued, so the
    /// agent counts it as sent.
    Other,
}

impl StackError {
    /// Whether the stack certainly did not take the datagram ([`StackError::WouldBlock`],
    /// [`StackError::NoRoute`], [`StackError::NotBound`], [`StackError::TooLarge`]: refusals
    /// decided before anything was queued). Only these leave the agent's nonce and IV
    /// unconsumed for the retry; any other outcome may have put the datagram on the wire.
    #[must_use]
    pub const fn is_certain_refusal(&self) -> bool {
        !matches!(self, StackError::Uncertain | StackError::Other)
    }

    /// A stable snake_case name, for logs and counters.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            StackError::WouldBlock => "would_block",
            StackError::NoRoute => "no_route",
            StackError::NotBound => "not_bound",
            StackError::TooLarge => "too_large",
            StackError::Uncertain => "uncertain",
            StackError::Other => "other",
        }
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StackError::WouldBlock => "the stack cannot take the datagram now",
            StackError::NoRoute => "no route to the observer",
            StackError::NotBound => "the socket is not bound",
            StackError::TooLarge => "the datagram does not fit the socket buffer",
            StackError::Uncertain => "the send failed and may have left the device",
            StackError::Other => "the stack refused",
        })
    }
}

/// Why a beat was not sent (or may not have been).
///
/// Whenever this is returned the agent's state is unchanged (no frame nonce and no AEAD
/// counter consumed), except for [`Error::Send`] with a stack error that is not a certain
/// refusal ([`StackError::is_certain_refusal`]: [`StackError::Uncertain`],
/// [`StackError::Other`]): that datagram may have left the device, so its nonce and IV are
/// consumed and the retry uses the next ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// `vlp-core` refused to prepare or commit the beat: a frame rule of VLP §2 (Stall status,
    /// reserved pid), IV exhaustion (§3), or a stale prepared beat.
    Session(SessionError),
    /// A secure agent was used before [`crate::Agent::start`] gave it a session salt.
    NotStarted,
    /// The entropy source failed, or returned an all-zero / all-one salt.
    Entropy,
    /// [`crate::Agent::try_start`] was given the salt the agent's session already runs on:
    /// restarting would repeat its AEAD IVs from counter 1.
    SaltReused,
    /// Creating the UDP socket failed.
    Socket(StackError),
    /// Connecting (binding to a remote) the UDP socket failed.
    Connect(StackError),
    /// The stack refused the datagram, or the send failed with an uncertain outcome.
    Send(StackError),
    /// The global agent is borrowed (a re-entrant call from an interrupt or a panic inside a
    /// beat); nothing was done.
    Busy,
    /// The global agent has no agent installed yet.
    NotInstalled,
}

impl Error {
    /// Whether retrying later (after polling the stack) can succeed.
    #[must_use]
    pub const fn is_would_block(&self) -> bool {
        matches!(self, Error::Send(StackError::WouldBlock) | Error::Busy)
    }
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Error {
        Error::Session(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Session(e) => write!(f, "session: {e}"),
            Error::NotStarted => f.write_str("secure agent not started (no session salt yet)"),
            Error::Entropy => f.write_str("entropy source failed"),
            Error::SaltReused => {
                f.write_str("session salt already used by this agent (would repeat AEAD IVs)")
            }
            Error::Socket(e) => write!(f, "opening the UDP socket: {e}"),
            Error::Connect(e) => write!(f, "connecting the UDP socket: {e}"),
            Error::Send(e) => write!(f, "sending the beat: {e}"),
            Error::Busy => f.write_str("global agent busy"),
            Error::NotInstalled => f.write_str("no agent installed in the global agent"),
        }
    }
}

// `Display` already names the cause (`sending the beat: no route to the observer`), so `source`
// stays `None` rather than have error reporters print it twice.
#[cfg(feature = "std")]
impl std::error::Error for StackError {}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
