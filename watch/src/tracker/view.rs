//! Read-only views of tracked agents (metrics, status pages).

use vlp_core::Status;

use super::table::{Agent, Phase};
use super::{AgentId, Nanos};

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

    pub(super) fn of(a: &Agent) -> AgentView {
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
