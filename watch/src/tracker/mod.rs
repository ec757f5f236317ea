//! The observer's core: every datagram from every listener goes through
//! [`Tracker::handle_datagram`], every deadline through [`Tracker::handle_timeout`], and what
//! happened comes out of [`Tracker::poll_event`]. No clock reads, no I/O, no allocation per
//! datagram in steady state (sans-I/O, in the style of quinn-proto).
//!
//! # Rooms
//!
//! | file | concern |
//! |---|---|
//! | `config` | listeners' configuration, [`Origin`], identity ([`AgentId`], [`KeyClass`]) |
//! | `pipeline` | the one decode/accept pipeline (uid, decode, open, replay precheck) |
//! | `batch` | a receive batch's secure datagrams opened together, then the pipeline |
//! | `opener` | the same open on a receive worker's thread ([`Opener`]), taken by [`Tracker::handle_opened`] |
//! | `session` | how a verified frame is taken (beat, reordering, restart, death), admission and capacity |
//! | `streams` | remembered streams per identity, tombstones of evicted ones |
//! | `deadlines` | stalls and evictions |
//! | `table` | the slab, its index and the deadline lists |
//! | `keys` | master-derived agent keys per slot |
//! | `rate` | beat rate limits per identity and global, the key-derivation budget |
//! | `events`, `reject`, `stats`, `view` | what comes out: [`Event`]/[`EventKind`], [`Rejection`]/[`Reason`], [`Stats`], [`AgentView`] |
//! | `persist` | the state file's codec ([`Tracker::snapshot`], [`Tracker::restore`]) |
//! | `invariants`, `fuzz` (feature `fuzz`) | self-checks and the fuzz entry points |
//!
//! # The decode pipeline
//!
//! One pipeline for every listener ([`Origin`]):
//!
//! * **Unix socket** (kernel-attested pid/uid): the uid must be allowed
//!   ([`Rejection::UidRefused`]), the 32 bytes must parse (VLP v0.2 §2,
//!   [`Rejection::Decode`]), and the frame's pid must equal the attested pid
//!   ([`Rejection::PidMismatch`], an authentication failure). Identity: the attested pid.
//! * **Plain UDP** (operator opt-in): parse; identity: listener + frame pid. With the source
//!   address ([`Origin::UdpFrom`]), a known pid speaking from another address is refused
//!   ([`Rejection::OriginConflict`]) until it has been silent for the threshold.
//! * **Secure UDP** (§3): a 32-byte plaintext is refused ([`Rejection::PlaintextRefused`]).
//!   A 64-byte master-key datagram carries its pid in the clear: the agent's replay window and
//!   remembered streams are checked *before* anything is decrypted (the same table lookup
//!   serves the whole datagram), the agent key is taken from the agent's slot (kept once it
//!   authenticated a datagram of that agent) or derived (§4), the datagram is opened, and the
//!   window is committed only once the tag verified and the tracker accepted the frame. A
//!   60-byte shared-key datagram is opened with each accepted key in turn; its pid is sealed,
//!   so its window is checked right after the tag verifies and committed on acceptance.
//!   Identity: listener + key class + pid ([`KeyClass`]: a holder of the shared key cannot
//!   speak for a per-agent-key agent of the same pid). Windows are kept per identity, not per
//!   source address, and reordering within the window is accepted ([`AcceptKind::Reordered`]).
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
//! drawn per process) names the session: a new stream whose nonce went back is a new session.
//!
//! Streams an identity left (the last [`STREAM_HISTORY`]) are refused whatever their counter
//! ([`Rejection::RetiredStream`]), so cycling captured datagrams of older sessions cannot make
//! a hung agent look alive, restarted or exited; an evicted identity's streams are kept as a
//! tombstone ([`TrackerConfig::tombstones`], [`Rejection::EvictedStream`]) and in the state
//! file. A stalled agent's terminal frame must come on its current stream
//! ([`Rejection::NotCurrentStream`]).
//!
//! A terminal frame on another stream of a live agent is the panic hook's crash report: VLP
//! clients send it from a session of their own (own salt, so its own `iv_random`, nonce
//! `u64::MAX`). It raises [`Event::Died`] as any terminal frame does, but it neither retires
//! nor replaces the current stream: the identity remembers it as a crash-report stream with
//! the counter taken. The same datagram again is a replay ([`vlp_core::ReplayError::Replayed`]), an
//! older counter of that stream is [`Rejection::AfterTerminal`], and a later terminal frame
//! on it (another thread's panic) is a new crash report if the agent had come back,
//! [`Rejection::AfterTerminal`] while it is still dead. If the process lives on after a
//! thread's panic, its next beat on the current stream is a dead agent's newer frame on the
//! same stream: a new session ([`Event::SessionRestart`], then [`Event::StatusChanged`] from
//! Critical), and it is tracked (and stalls) as before.
//!
//! # Deadlines and capacity
//!
//! An agent with no accepted beat for `threshold` is stalled: exactly one [`Event::Stalled`]
//! per silence run, whose `at` is the exact deadline `last_beat + threshold`, whenever the
//! shell gets round to calling [`Tracker::handle_timeout`]; its next beat raises
//! [`Event::Recovered`]. A terminal frame raises [`Event::Died`] at once (`clean` for a
//! goodbye, §2 / `vlp_core::GOODBYE_PAYLOAD`) and no stall follows. Stalled entries are
//! evicted `evict_after` after their stall, dead ones `evict_after` after their death
//! ([`Event::Evicted`]).
//!
//! Unproven identities (plain UDP, shared key) fill at most `capacity - proven_reserve` slots
//! ([`Rejection::UnprovenCapacity`]); the rest is kept for kernel-attested and per-agent-key
//! identities ([`AgentId::is_proven`]). When the table is full the longest-dead entry makes
//! room; a proven newcomer otherwise displaces an unproven entry ([`Stats::displaced`]); if
//! neither is possible the newcomer is refused ([`Rejection::CapacityExceeded`]).
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
//! clamped to the latest time seen), and [`Tracker::restore`] returns an error for any bytes
//! it cannot load.

mod batch;
mod config;
mod deadlines;
mod events;
#[cfg(feature = "fuzz")]
pub mod fuzz;
mod invariants;
mod keys;
mod opener;
mod persist;
mod pipeline;
mod rate;
mod reject;
mod rekey;
mod session;
mod stats;
mod streams;
mod table;
#[cfg(test)]
mod tests;
mod view;

use std::collections::VecDeque;
use std::fmt;

pub use batch::OPEN_BATCH;
pub use config::{AgentId, EvictionPolicy, KeyClass, Listener, Origin, TrackerConfig, UdpMode};
pub use deadlines::{ThresholdError, MAX_THRESHOLDS};
pub use events::{AcceptKind, Accepted, Event, EventKind};
pub use opener::{Opened, Opener};
pub use persist::{ClockMapping, PersistError, STATE_MAGIC, STATE_VERSION};
pub use rate::{Gcra, RateConfig, RateScope, DEFAULT_DERIVATIONS_PER_SEC};
pub use reject::{Reason, ReasonClass, Rejection};
pub use rekey::RekeyError;
pub use stats::Stats;
pub use streams::STREAM_HISTORY;
pub use view::{AgentState, AgentView};

use keys::AgentKeys;
use streams::{Histories, Tombstones};
use table::{listener_code, tag, Table};

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

/// The observer core (see the module docs).
pub struct Tracker {
    /// Stall threshold per threshold class; `[0]` is the default class (the configured
    /// `threshold`). See [`Tracker::set_thresholds`].
    thresholds: Vec<Nanos>,
    evict_after: Nanos,
    allowed_uids: Vec<u32>,
    udp: Vec<UdpMode>,
    table: Table,
    keys: Option<AgentKeys>,
    /// Earlier streams of tracked secure identities, per slot.
    histories: Histories,
    /// Streams of evicted secure identities.
    tombs: Tombstones,
    /// Slots reserved for proven identities ([`AgentId::is_proven`]).
    proven_reserve: usize,
    /// What a full table evicts for a newcomer, beyond dead entries.
    eviction: Option<EvictionPolicy>,
    /// Key of the IPv6 source-address fingerprints (persisted with the table).
    origin_seed: u64,
    /// How [`Tracker::handle_batch`] opens secure datagrams (the widest SIMD path here).
    backend: vlp_core::batch::Backend,
    events: VecDeque<Event>,
    stats: Stats,
    now: Nanos,
    /// Beat limits and the key-derivation budget (`rate`).
    rate: rate::Limiter,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("thresholds", &self.thresholds)
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
        let has_secure = cfg.udp.iter().any(|m| matches!(m, UdpMode::Secure { .. }));
        // Histories and tombstones exist for secure identities only; room for the first
        // agents is taken now, as the table does, so steady state does not allocate.
        let early = if has_secure { capacity.min(1024) } else { 0 };
        let tombstones = cfg.tombstones.unwrap_or(capacity);
        let seed = {
            use core::hash::BuildHasher;
            foldhash::fast::RandomState::default().hash_one(0x5eed_u64)
        };
        Tracker {
            thresholds: vec![cfg.threshold.max(1)],
            evict_after: cfg.evict_after,
            allowed_uids: cfg.allowed_uids,
            udp: cfg.udp,
            table: Table::new(capacity),
            keys: has_master.then(|| AgentKeys::new(capacity.min(KEY_CACHE_MAX))),
            histories: Histories::with_capacity(early),
            tombs: Tombstones::new(tombstones, early),
            proven_reserve: cfg.proven_reserve.unwrap_or(capacity / 4).min(capacity),
            eviction: cfg.eviction,
            origin_seed: seed,
            backend: vlp_core::batch::Backend::detect(),
            events: VecDeque::with_capacity(64),
            stats: Stats::ZERO,
            now: 0,
            rate: rate::Limiter::new(&RateConfig::default(), capacity),
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
        self.handle_one(now, origin, bytes, None)
    }

    /// [`Tracker::handle_datagram`], with what the batched path opened ahead.
    fn handle_one(
        &mut self,
        now: Nanos,
        origin: &Origin,
        bytes: &[u8],
        pre: Option<batch::Pre>,
    ) -> Result<Accepted, Rejection> {
        let now = self.clock(now);
        self.stats.datagrams += 1;
        let r = self.pipeline(now, origin, bytes, pre);
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
        let slot = self
            .table
            .find(tag(code, id.key_class == KeyClass::Agent, id.pid))?;
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
        self.stats.events[e.kind() as usize] += 1;
        if self.events.len() >= EVENT_QUEUE_CAP {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }
}
