//! Byte-driven operation sequences with invariant checks, for fuzzing the tracker from another
//! crate (the cargo-fuzz workspace in `fuzz/`):
//!
//! ```ignore
//! fuzz_target!(|data: &[u8]| {
//!     if let Err(why) = varta_watch::tracker::fuzz::run(data) {
//!         panic!("tracker invariant broken: {why}");
//!     }
//! });
//! ```
//!
//! [`run`] decodes `data` into operations on a tracker with the fixed [`config`]: raw bytes on
//! every origin (Unix with allowed and refused uids, plain UDP with and without a source
//! address, secure UDP, an unknown listener), well-formed frames with chosen pid / status /
//! nonce / timestamp / terminal flag,
//! shared-key and master-key datagrams with chosen streams and counters (so replay windows,
//! restarts and retired streams are reached), and time passing with the deadlines served as a
//! shell would. After every operation it checks the invariants: no panic; events never from
//! the future; at most one `Stalled` per silence run, at exactly `last_beat + threshold`;
//! `Recovered` only after a stall; `len() <= capacity`; `poll_timeout()` is `None` exactly
//! when no agent is tracked, is the earliest deadline, and is never due right after the
//! deadlines were served; and [`Tracker::check_invariants`].

use std::collections::HashMap;

use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Iv, Key, MasterDatagram, SharedDatagram, Status};

use sha2::{Digest, Sha256};

use super::{
    AcceptKind, AgentId, ClockMapping, Event, Nanos, Origin, Tracker, TrackerConfig, UdpMode,
};

/// Threshold of [`config`].
pub const THRESHOLD: Nanos = 100;
/// Eviction delay of [`config`].
pub const EVICT_AFTER: Nanos = 300;
/// Capacity of [`config`] (small, so capacity refusals and dead-entry reuse are reached).
pub const CAPACITY: usize = 6;
/// The Unix uid [`config`] allows (uid 1 is refused).
pub const ALLOWED_UID: u32 = 0;

/// The shared key of UDP listener 1.
#[must_use]
pub fn shared_key() -> Key {
    Key::from_bytes([0x5a; 32])
}

/// The master key of UDP listener 1.
#[must_use]
pub fn master_key() -> Key {
    Key::from_bytes([0xa5; 32])
}

/// The fixed configuration: UDP listener 0 plain, listener 1 secure (a wrong key first, then
/// [`shared_key`], and [`master_key`]).
#[must_use]
pub fn config() -> TrackerConfig {
    TrackerConfig {
        threshold: THRESHOLD,
        capacity: CAPACITY,
        evict_after: EVICT_AFTER,
        allowed_uids: vec![ALLOWED_UID],
        udp: vec![
            UdpMode::Plain,
            UdpMode::Secure {
                keys: vec![Key::from_bytes([1; 32]), shared_key()],
                master: Some(master_key()),
            },
        ],
        // Small, so the reserve for proven identities and dropped tombstones are reached.
        proven_reserve: Some(2),
        tombstones: Some(3),
        eviction: None,
    }
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// Invariant bookkeeping over the event stream.
#[derive(Default)]
struct Watch {
    stalled: HashMap<AgentId, bool>,
    last_beat: HashMap<AgentId, Nanos>,
}

impl Watch {
    fn events(&mut self, t: &mut Tracker, now: Nanos) -> Result<(), String> {
        while let Some(e) = t.poll_event() {
            if e.at() > now {
                return Err(format!("event from the future (now {now}): {e:?}"));
            }
            let s = self.stalled.entry(e.agent()).or_insert(false);
            match e {
                Event::Stalled { at, last_beat, .. } => {
                    if *s {
                        return Err(format!("second Stalled in one silence run: {e:?}"));
                    }
                    if at != last_beat + THRESHOLD {
                        return Err(format!("Stalled not at last_beat + threshold: {e:?}"));
                    }
                    if self.last_beat.get(&e.agent()) != Some(&last_beat) {
                        return Err(format!("Stalled names a beat that was not accepted: {e:?}"));
                    }
                    *s = true;
                }
                Event::Recovered { .. } => {
                    if !*s {
                        return Err(format!("Recovered without a stall: {e:?}"));
                    }
                    *s = false;
                }
                Event::Died { .. } | Event::Evicted { .. } | Event::NewAgent { .. } => *s = false,
                Event::SessionRestart { .. } | Event::StatusChanged { .. } => {
                    if *s {
                        return Err(format!("{e:?} of a stalled agent without Recovered"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs the operations `data` encodes (see the module docs) and checks the invariants after
/// each.
///
/// # Errors
/// A description of the first broken invariant.
pub fn run(data: &[u8]) -> Result<(), String> {
    run_with(data, None)
}

/// [`run`], with every datagram also handed to a twin tracker the way receive workers hand
/// it (opened by one of two [`super::Opener`]s in turn, each with a derivation budget of 2 per
/// second, then [`Tracker::handle_opened`]; now and then under a stale key generation): each
/// outcome and every event must be the same.
///
/// # Errors
/// A description of the first broken invariant or difference.
pub fn run_opened(data: &[u8]) -> Result<(), String> {
    let openers = [0, 1].map(|_| super::Opener::new(config().udp, 0, 8, 2));
    run_with(data, Some((Tracker::new(config()), openers, 0)))
}

type Twin = (Tracker, [super::Opener; 2], usize);

/// One datagram into `t` (and the twin, if any), outcomes compared.
fn feed(
    t: &mut Tracker,
    twin: &mut Option<Twin>,
    now: Nanos,
    origin: &Origin,
    bytes: &[u8],
) -> Result<Result<crate::tracker::Accepted, crate::tracker::Rejection>, String> {
    let r = t.handle_datagram(now, origin, bytes);
    if let Some((t2, openers, turn)) = twin.as_mut() {
        *turn += 1;
        let item = [(now, *origin, bytes)];
        let mut opened = [None];
        openers[*turn % 2].open(now, &item, &mut opened);
        // Every seventh datagram as if opened before a reload: opened again by the table.
        let generation = u64::from(*turn % 7 == 0);
        let mut r2 = None;
        t2.handle_opened(generation, &item, &mut opened, |_, r| r2 = Some(r));
        if r2.as_ref() != Some(&r) {
            return Err(format!("worker-opened outcome {r2:?}, one by one {r:?}"));
        }
    }
    Ok(r)
}

/// The twin's queued events must be `t`'s (the twin's are taken; `t`'s stay for the watcher).
fn same_events(t: &Tracker, twin: &mut Option<Twin>) -> Result<(), String> {
    if let Some((t2, ..)) = twin.as_mut() {
        let mine: Vec<Event> = t.events.iter().cloned().collect();
        let theirs: Vec<Event> = t2.events.drain(..).collect();
        if mine != theirs {
            return Err(format!(
                "events differ: {mine:?} vs worker-opened {theirs:?}"
            ));
        }
    }
    Ok(())
}

fn run_with(data: &[u8], mut twin: Option<Twin>) -> Result<(), String> {
    let mut t = Tracker::new(config());
    let mut w = Watch::default();
    let mut b = Bytes(data);
    let mut now: Nanos = 0;
    while let Some(op) = b.u8() {
        let a = b.u8().unwrap_or(0);
        let c = b.u8().unwrap_or(0);
        let pid = 2 + u32::from(a % 8);
        let res = match op % 7 {
            0 => {
                let uid = u32::from(c & 1);
                let n = usize::from(c >> 1) % 70;
                let raw = b.take(n).to_vec();
                Some(feed(
                    &mut t,
                    &mut twin,
                    now,
                    &Origin::Unix { pid, uid },
                    &raw,
                )?)
            }
            1 | 2 => {
                let nonce = u64::from(b.u8().unwrap_or(0) % 40);
                let ts = u64::from(b.u8().unwrap_or(0) % 40);
                let status = Status::from_u8(c % 3).unwrap_or(Status::Ok);
                let f = match c >> 5 {
                    0 => Frame::terminal(pid, ts, u32::from(c)),
                    1 => Frame::goodbye(pid, ts),
                    _ => Frame::new(status, pid, ts, nonce, 0),
                };
                let Ok(f) = f else { continue };
                let origin = if op % 7 == 1 {
                    Origin::Unix {
                        // Now and then another process claims the pid: an auth failure.
                        pid: if c & 0x10 != 0 && c & 0x08 != 0 {
                            pid + 1
                        } else {
                            pid
                        },
                        uid: ALLOWED_UID,
                    }
                } else if c & 0x04 != 0 {
                    // Plaintext UDP with its source address: one of two senders.
                    Origin::UdpFrom {
                        listener: 0,
                        source: std::net::SocketAddr::from(([10, 0, 0, 1 + (c & 1)], 4000)),
                    }
                } else {
                    Origin::Udp { listener: 0 }
                };
                Some(feed(&mut t, &mut twin, now, &origin, &f.emit())?)
            }
            3 | 4 => {
                let nonce = u64::from(b.u8().unwrap_or(0) % 40);
                let counter = u32::from(b.u8().unwrap_or(0));
                let f = if c & 0x80 != 0 {
                    Frame::terminal(pid, nonce, 0)
                } else {
                    Frame::new(Status::Ok, pid, nonce, nonce, 0)
                };
                let Ok(f) = f else { continue };
                let iv = Iv {
                    random: [c % 4; 8],
                    counter,
                };
                let mut d = if op % 7 == 3 {
                    SharedDatagram::seal(&shared_key(), &iv, &f).0.to_vec()
                } else {
                    MasterDatagram::seal(&derive_agent_key(&master_key(), pid), &iv, &f)
                        .0
                        .to_vec()
                };
                if c & 0x40 != 0 {
                    let i = usize::from(a) % d.len();
                    d[i] ^= 1;
                }
                let origin = Origin::Udp { listener: 1 };
                Some(feed(&mut t, &mut twin, now, &origin, &d)?)
            }
            5 => {
                let n = usize::from(c) % 70;
                let raw = b.take(n).to_vec();
                let origin = Origin::Udp {
                    listener: usize::from(a % 3),
                };
                Some(feed(&mut t, &mut twin, now, &origin, &raw)?)
            }
            _ => {
                now += u64::from(a) * u64::from(c % 4 + 1);
                while let Some(d) = t.poll_timeout() {
                    if d > now {
                        break;
                    }
                    t.handle_timeout(now);
                    if let Some((t2, ..)) = twin.as_mut() {
                        t2.handle_timeout(now);
                    }
                    same_events(&t, &mut twin)?;
                    w.events(&mut t, now)?;
                }
                if t.poll_timeout().is_some_and(|d| d <= now) {
                    return Err("a deadline is still due after serving timeouts".into());
                }
                None
            }
        };
        if let Some(Ok(acc)) = res {
            if acc.kind != AcceptKind::Reordered {
                w.last_beat.insert(acc.agent, t.now());
            }
        }
        same_events(&t, &mut twin)?;
        w.events(&mut t, now)?;
        if t.len() > CAPACITY {
            return Err(format!("len {} > capacity {CAPACITY}", t.len()));
        }
        if t.poll_timeout().is_none() != t.is_empty() {
            return Err("poll_timeout is None exactly when no agent is tracked".into());
        }
        t.check_invariants()?;
    }
    Ok(())
}

/// The clock mapping [`restore`] uses.
pub const RESTORE_AT: ClockMapping = ClockMapping {
    tracker_now: 1_000,
    clock_now: 5_000,
};

/// Feeds `data` to [`Tracker::restore`] (with the fixed [`config`]) twice: as a whole file,
/// and as the body of a version-1 file with a valid checksum (magic, version and flags
/// prepended, SHA-256 appended), so the record parser is reached past the checksum. Whatever
/// restores must hold the table's invariants, and snapshotting it must be a fixpoint:
/// restoring the snapshot and snapshotting again gives the same bytes.
///
/// # Errors
/// A description of the first broken invariant.
pub fn restore(data: &[u8]) -> Result<(), String> {
    let mut framed = Vec::with_capacity(data.len() + 44);
    framed.extend_from_slice(&super::STATE_MAGIC);
    framed.extend_from_slice(&super::STATE_VERSION.to_le_bytes());
    framed.extend_from_slice(&0u16.to_le_bytes());
    framed.extend_from_slice(data);
    let sum = Sha256::digest(&framed);
    framed.extend_from_slice(&sum);
    for bytes in [data, &framed[..]] {
        let Ok(t) = Tracker::restore(config(), bytes, RESTORE_AT) else {
            continue;
        };
        t.check_invariants()?;
        let mut once = Vec::new();
        t.snapshot(RESTORE_AT, &mut once);
        let r = Tracker::restore(config(), &once, RESTORE_AT)
            .map_err(|e| format!("a snapshot of a restored table does not restore: {e}"))?;
        r.check_invariants()?;
        let mut twice = Vec::new();
        r.snapshot(RESTORE_AT, &mut twice);
        if once != twice {
            return Err("snapshot -> restore -> snapshot is not a fixpoint".into());
        }
    }
    Ok(())
}
