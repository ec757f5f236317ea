//! What the tracker reports: [`Event`]s for the shell, [`Accepted`] for the caller of
//! [`super::Tracker::handle_datagram`].

use vlp_core::{Frame, Status};

use super::{AgentId, Nanos};

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

    /// The event's kind (its one spelling is [`EventKind::as_str`]).
    #[must_use]
    pub fn kind(&self) -> EventKind {
        match self {
            Event::NewAgent { .. } => EventKind::New,
            Event::SessionRestart { .. } => EventKind::Restart,
            Event::StatusChanged { .. } => EventKind::Status,
            Event::Stalled { .. } => EventKind::Stall,
            Event::Recovered { .. } => EventKind::Recovered,
            Event::Died { clean: false, .. } => EventKind::Crash,
            Event::Died { clean: true, .. } => EventKind::Goodbye,
            Event::Evicted { .. } => EventKind::Evicted,
        }
    }
}

/// The kinds of event an observer reports, with their one spelling ([`EventKind::as_str`]):
/// the `kind` column of the TSV export, the `kind` field of JSON lines, the word of text
/// lines, and the `kind` label of `varta_events_total`. Every kind but
/// [`EventKind::Recovery`] is raised by the tracker and counted in [`super::Stats::events`];
/// recovery decisions are the shell's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// [`Event::NewAgent`].
    New,
    /// [`Event::SessionRestart`].
    Restart,
    /// [`Event::StatusChanged`].
    Status,
    /// [`Event::Stalled`].
    Stall,
    /// [`Event::Recovered`].
    Recovered,
    /// [`Event::Died`] with `clean == false` (a crash report).
    Crash,
    /// [`Event::Died`] with `clean == true` (an announced clean exit).
    Goodbye,
    /// [`Event::Evicted`].
    Evicted,
    /// A recovery decision of the shell (started, skipped, failed); never raised by the
    /// tracker.
    Recovery,
}

impl EventKind {
    /// Number of kinds.
    pub const COUNT: usize = 9;

    /// Every kind, in declaration order (pre-registering metric labels, docs).
    pub const ALL: [EventKind; EventKind::COUNT] = [
        EventKind::New,
        EventKind::Restart,
        EventKind::Status,
        EventKind::Stall,
        EventKind::Recovered,
        EventKind::Crash,
        EventKind::Goodbye,
        EventKind::Evicted,
        EventKind::Recovery,
    ];

    /// The kind's one spelling (TSV, JSON, text, metric label).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Restart => "restart",
            EventKind::Status => "status",
            EventKind::Stall => "stall",
            EventKind::Recovered => "recovered",
            EventKind::Crash => "crash",
            EventKind::Goodbye => "goodbye",
            EventKind::Evicted => "evicted",
            EventKind::Recovery => "recovery",
        }
    }

    /// The kind spelled `s` ([`EventKind::as_str`] read back).
    #[must_use]
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl core::fmt::Display for EventKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
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
