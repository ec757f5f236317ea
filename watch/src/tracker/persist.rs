//! The state file's codec: the agent table as bytes and back, so an observer restart loses
//! neither agents, nor their stall clocks, nor the streams whose replays it must refuse.
//!
//! Sans-I/O like the rest of the core: [`Tracker::snapshot`] appends bytes to a buffer and
//! [`Tracker::restore`] reads a slice; writing the file (temporary file, fsync, rename) and
//! choosing the clock are the shell's. Observer time ([`Nanos`]) starts again in every process,
//! so times are carried on a clock the shell names ([`ClockMapping`]), one that keeps counting
//! across the restart (`CLOCK_BOOTTIME` on Linux): an agent that fell silent before the restart
//! stalls on time after it.
//!
//! # Format (version 1, little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `VARTASTF` |
//! | 2 | format version (1) |
//! | 2 | flags (0) |
//! | 8 | the shell's clock when the snapshot was taken |
//! | 8 | origin fingerprint seed |
//! | 4, 4 | number of agents, of tombstones |
//! | 184 each | agent: listener, flags, status, pid, last beat (shell clock), nonce, sender timestamp, beats, origin, stalls, payload, replay window (stream, highest, bitmap), history |
//! | 61 each | tombstone: identity, history (least recently written first) |
//! | 32 | SHA-256 of everything before it |
//!
//! A history is a count and [`STREAM_HISTORY`] entries of stream, highest counter and kind.
//! [`Tracker::restore`] checks everything before it builds anything: a corrupt, truncated,
//! foreign or inconsistent input is a [`PersistError`], never a panic and never a half-loaded
//! table. Counters ([`super::Stats`]) and master-derived keys are not carried over.

use std::fmt;

use sha2::{Digest, Sha256};
use vlp_core::{Iv, ReplayError, ReplayWindow, Status};

use super::streams::{History, Seen, SeenKind, STREAM_HISTORY};
use super::table::{Agent, ListId, Phase};
use super::{Nanos, Tracker, TrackerConfig, UdpMode};

/// The state file's magic bytes.
pub const STATE_MAGIC: [u8; 8] = *b"VARTASTF";
/// The format version [`Tracker::snapshot`] writes and [`Tracker::restore`] reads.
pub const STATE_VERSION: u16 = 1;

const HEADER_LEN: usize = 8 + 2 + 2 + 8 + 8 + 4 + 4;
const HISTORY_LEN: usize = 1 + STREAM_HISTORY * 13;
const WINDOW_LEN: usize = 1 + 8 + 4 + 16;
const AGENT_LEN: usize = 2 + 1 + 1 + 4 + 8 * 5 + 4 + 4 + WINDOW_LEN + HISTORY_LEN;
const TOMB_LEN: usize = 8 + HISTORY_LEN;
const SUM_LEN: usize = 32;
/// Bits of a replay window's bitmap (vlp-core's `replay::WINDOW`).
const WINDOW_BITS: u32 = 128;

/// One instant read on both clocks: the tracker's ([`Nanos`], the `now` the shell passes to
/// `handle_*`) and the shell's persistent clock (e.g. `CLOCK_BOOTTIME` in nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockMapping {
    /// Tracker time.
    pub tracker_now: Nanos,
    /// The persistent clock at the same instant.
    pub clock_now: u64,
}

/// Why a state file was not loaded. Nothing is loaded when any of these is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistError {
    /// Shorter than its header and checksum, or than its counts say.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// Not a state file (magic bytes differ).
    BadMagic,
    /// A state file of another format version.
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// Reserved flags set (a newer writer).
    UnknownFlags {
        /// The flags found.
        flags: u16,
    },
    /// The SHA-256 does not match the content (corruption, a torn write).
    BadChecksum,
    /// Longer than its counts say.
    TrailingBytes {
        /// Bytes the counts account for.
        expected: usize,
        /// Bytes present.
        len: usize,
    },
    /// A record holds a value no snapshot writes.
    BadRecord {
        /// `agent` or `tombstone`.
        kind: &'static str,
        /// Its index.
        index: usize,
        /// The field.
        field: &'static str,
    },
    /// An agent on a listener this configuration does not have, or of another kind (plain
    /// versus secure).
    ListenerMismatch {
        /// The agent's index.
        index: usize,
    },
    /// The same identity twice.
    DuplicateIdentity {
        /// The second record's index.
        index: usize,
    },
    /// More agents (or unproven agents) than this configuration has room for.
    TooManyAgents {
        /// Agents in the file.
        count: usize,
        /// Room in this configuration.
        room: usize,
    },
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Truncated { needed, len } => {
                write!(f, "state truncated: {len} bytes, {needed} needed")
            }
            PersistError::BadMagic => f.write_str("not a varta state file (bad magic)"),
            PersistError::UnsupportedVersion { found } => write!(
                f,
                "state format version {found}, this observer reads {STATE_VERSION}"
            ),
            PersistError::UnknownFlags { flags } => write!(f, "unknown state flags {flags:#x}"),
            PersistError::BadChecksum => f.write_str("state checksum mismatch"),
            PersistError::TrailingBytes { expected, len } => {
                write!(
                    f,
                    "state has {len} bytes, its counts account for {expected}"
                )
            }
            PersistError::BadRecord { kind, index, field } => {
                write!(f, "state {kind} {index}: invalid {field}")
            }
            PersistError::ListenerMismatch { index } => write!(
                f,
                "state agent {index}: its listener is not configured (or not of its kind)"
            ),
            PersistError::DuplicateIdentity { index } => {
                write!(f, "state agent {index}: identity appears twice")
            }
            PersistError::TooManyAgents { count, room } => {
                write!(f, "state holds {count} agents, room for {room}")
            }
        }
    }
}

impl std::error::Error for PersistError {}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        // Lengths are checked against the counts before any record is read.
        let mut out = [0u8; N];
        if let Some(s) = self.b.get(self.at..self.at + N) {
            out.copy_from_slice(s);
        }
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
}

fn put_history(out: &mut Vec<u8>, h: &History) {
    let entries: Vec<Seen> = h.iter().collect();
    out.push(u8::try_from(entries.len()).unwrap_or(0));
    for i in 0..STREAM_HISTORY {
        let s = entries.get(i).copied().unwrap_or_default();
        out.extend_from_slice(&s.random);
        out.extend_from_slice(&s.highest.to_le_bytes());
        out.push(s.kind as u8);
    }
}

fn get_history(r: &mut Reader<'_>) -> Option<History> {
    let len = usize::from(r.u8());
    let mut entries = [Seen::default(); STREAM_HISTORY];
    for e in &mut entries {
        e.random = r.take();
        e.highest = r.u32();
        e.kind = SeenKind::from_u8(r.u8())?;
    }
    (len <= STREAM_HISTORY).then(|| History::from_entries(&entries[..len]))
}

/// The bitmap of `w` (bit `i`: counter `highest - i` accepted), read through the window's own
/// check, the only view vlp-core gives of it.
fn window_bitmap(w: &ReplayWindow) -> u128 {
    let Some(random) = w.stream() else { return 0 };
    let mut bits = 0u128;
    for age in 0..WINDOW_BITS.min(w.highest().saturating_add(1)) {
        let iv = Iv {
            random,
            counter: w.highest() - age,
        };
        if let Err(ReplayError::Replayed { .. }) = w.check(&iv) {
            bits |= 1 << age;
        }
    }
    bits
}

/// A window over `random` with `highest` and `bits`, rebuilt by committing the counters.
fn window_from(random: [u8; 8], highest: u32, bits: u128) -> ReplayWindow {
    let mut w = ReplayWindow::new();
    w.commit(&Iv {
        random,
        counter: highest,
    });
    for age in 1..WINDOW_BITS.min(highest.saturating_add(1)) {
        if bits & (1 << age) != 0 {
            w.commit(&Iv {
                random,
                counter: highest - age,
            });
        }
    }
    w
}

impl Tracker {
    /// Appends the agent table to `out` in the state-file format (see the module docs).
    /// `at` names the current instant on the shell's persistent clock; the tracker's side of it
    /// should be [`Tracker::now`] or later.
    pub fn snapshot(&self, at: ClockMapping, out: &mut Vec<u8>) {
        let start = out.len();
        let to_clock = |t: Nanos| {
            at.clock_now
                .saturating_sub(at.tracker_now.saturating_sub(t))
        };
        out.reserve(
            HEADER_LEN + self.table.len() * AGENT_LEN + self.tombs.len() * TOMB_LEN + SUM_LEN,
        );
        out.extend_from_slice(&STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&at.clock_now.to_le_bytes());
        out.extend_from_slice(&self.origin_seed.to_le_bytes());
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        out.extend_from_slice(&count(self.table.len()));
        out.extend_from_slice(&count(self.tombs.len()));
        for (slot, a) in self.table.slab.iter().enumerate() {
            if a.phase() == Phase::Free {
                continue;
            }
            out.extend_from_slice(&a.listener.to_le_bytes());
            out.push(a.persisted_bits());
            out.push(a.status);
            out.extend_from_slice(&a.pid.to_le_bytes());
            for v in [
                to_clock(a.last_beat),
                a.last_nonce,
                a.last_ts,
                a.beats,
                a.origin,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&a.stalls.to_le_bytes());
            out.extend_from_slice(&a.payload.to_le_bytes());
            out.push(u8::from(a.window.stream().is_some()));
            out.extend_from_slice(&a.window.stream().unwrap_or_default());
            out.extend_from_slice(&a.window.highest().to_le_bytes());
            out.extend_from_slice(&window_bitmap(&a.window).to_le_bytes());
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            put_history(out, &self.histories.get(slot));
        }
        for t in self.tombs.iter() {
            out.extend_from_slice(&t.tag.to_le_bytes());
            put_history(out, &t.history);
        }
        let sum = Sha256::digest(&out[start..]);
        out.extend_from_slice(&sum);
    }

    /// A tracker for `cfg` holding the agent table of a state file written by
    /// [`Tracker::snapshot`]. `at` names the current instant on the tracker's clock and on the
    /// same persistent clock the snapshot used; an agent silent for `d` on that clock is
    /// silent for `d` here (times before the tracker's zero are clamped to it).
    ///
    /// # Errors
    /// A [`PersistError`] naming what is wrong; nothing is loaded then.
    pub fn restore(
        cfg: TrackerConfig,
        bytes: &[u8],
        at: ClockMapping,
    ) -> Result<Tracker, PersistError> {
        if bytes.len() < HEADER_LEN + SUM_LEN {
            return Err(PersistError::Truncated {
                needed: HEADER_LEN + SUM_LEN,
                len: bytes.len(),
            });
        }
        let mut r = Reader { b: bytes, at: 0 };
        if r.take::<8>() != STATE_MAGIC {
            return Err(PersistError::BadMagic);
        }
        let version = r.u16();
        if version != STATE_VERSION {
            return Err(PersistError::UnsupportedVersion { found: version });
        }
        let flags = r.u16();
        if flags != 0 {
            return Err(PersistError::UnknownFlags { flags });
        }
        let _written_at = r.u64();
        let seed = r.u64();
        let agents = r.u32() as usize;
        let tombs = r.u32() as usize;
        let expected = agents
            .checked_mul(AGENT_LEN)
            .and_then(|n| n.checked_add(tombs.checked_mul(TOMB_LEN)?))
            .and_then(|n| n.checked_add(HEADER_LEN + SUM_LEN))
            .unwrap_or(usize::MAX);
        if bytes.len() < expected {
            return Err(PersistError::Truncated {
                needed: expected,
                len: bytes.len(),
            });
        }
        if bytes.len() > expected {
            return Err(PersistError::TrailingBytes {
                expected,
                len: bytes.len(),
            });
        }
        let (body, sum) = bytes.split_at(bytes.len() - SUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(PersistError::BadChecksum);
        }

        let mut t = Tracker::new(cfg);
        t.now = at.tracker_now;
        t.origin_seed = seed;
        if agents > t.table.capacity() {
            return Err(PersistError::TooManyAgents {
                count: agents,
                room: t.table.capacity(),
            });
        }
        let from_clock = |c: u64| {
            at.tracker_now
                .saturating_sub(at.clock_now.saturating_sub(c))
        };
        let bad = |index, field| PersistError::BadRecord {
            kind: "agent",
            index,
            field,
        };
        let mut parsed: Vec<(Agent, History)> = Vec::with_capacity(agents);
        for index in 0..agents {
            let mut a = Agent::EMPTY;
            a.listener = r.u16();
            a.bits = Agent::from_persisted_bits(r.u8()).ok_or(bad(index, "flags"))?;
            a.status = r.u8();
            Status::from_u8(a.status).ok_or(bad(index, "status"))?;
            a.pid = r.u32();
            a.last_beat = from_clock(r.u64());
            a.last_nonce = r.u64();
            a.last_ts = r.u64();
            a.beats = r.u64();
            a.origin = r.u64();
            a.stalls = r.u32();
            a.payload = r.u32();
            let has_stream = r.u8();
            let random = r.take::<8>();
            let highest = r.u32();
            let bits = r.u128();
            a.window = match has_stream {
                0 => ReplayWindow::new(),
                1 => window_from(random, highest, bits),
                _ => return Err(bad(index, "window")),
            };
            let history = get_history(&mut r).ok_or(bad(index, "history"))?;
            let listener_ok = match a.listener {
                0 => !a.secure() && !a.agent_key(),
                n => match t.udp.get(usize::from(n - 1)) {
                    Some(UdpMode::Plain) => !a.secure() && !a.agent_key(),
                    Some(UdpMode::Secure { .. }) => a.secure(),
                    None => false,
                },
            };
            if !listener_ok {
                return Err(PersistError::ListenerMismatch { index });
            }
            if !a.secure() && (has_stream != 0 || !history.is_empty()) {
                return Err(bad(index, "window of a plain agent"));
            }
            parsed.push((a, history));
        }
        let mut tombstones = Vec::with_capacity(tombs.min(1 << 16));
        for index in 0..tombs {
            let tag = r.u64();
            let history = get_history(&mut r).ok_or(PersistError::BadRecord {
                kind: "tombstone",
                index,
                field: "history",
            })?;
            tombstones.push((tag, history));
        }
        let unproven = parsed.iter().filter(|(a, _)| !a.proven()).count();
        let room = t.table.capacity().saturating_sub(t.proven_reserve);
        if unproven > room {
            return Err(PersistError::TooManyAgents {
                count: unproven,
                room,
            });
        }
        // Deadline lists are kept in last-beat order: insert in that order.
        let mut order: Vec<usize> = (0..parsed.len()).collect();
        order.sort_by_key(|&i| parsed[i].0.last_beat);
        for i in order {
            let (a, history) = parsed[i].clone();
            if t.table.find(a.tag()).is_some() {
                return Err(PersistError::DuplicateIdentity { index: i });
            }
            let list = match a.phase() {
                Phase::Alive => ListId::Alive,
                Phase::Stalled => ListId::Stalled,
                Phase::DeadCrash | Phase::DeadClean | Phase::Free => ListId::Dead,
            };
            let secure = a.secure();
            let slot = t.table.insert(a);
            t.table.push_back(list, slot);
            if secure {
                *t.histories.get_mut(slot) = history;
            }
        }
        // Least recently written first, as written: the most recent survive a smaller bound.
        for (tag, history) in tombstones {
            t.tombs.put(tag, history);
        }
        Ok(t)
    }
}
