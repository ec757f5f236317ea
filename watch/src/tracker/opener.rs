//! Opening off the table's thread: a receive worker (`--workers`) opens the secure datagrams
//! of its batches with an [`Opener`], and the table's owner takes each datagram with what was
//! opened for it ([`Tracker::handle_opened`]).
//!
//! What an opener computes is a pure function of the keys and the bytes (an AEAD open; a
//! master-key agent key, which depends on the master key and the pid only), so the owner's
//! decisions, counters and events are those of [`Tracker::handle_datagram`] one by one: the
//! replay window, the remembered streams, the derivation budget and every rule stay with the
//! table, checked again by the one pipeline. An opener holds no state of any identity; the
//! agent keys it keeps are a cache of derivations, kept only for keys that authenticated a
//! datagram (forged pids can neither fill nor evict it) and bounded. Its own derivation budget
//! bounds the HKDF work a flood of forged pids costs a worker; past it a datagram is handed on
//! unopened, and the owner treats it exactly as one by one.
//!
//! Keys change with a configuration reload: each [`Opened`] carries the key generation it was
//! opened under, and the owner ignores what was opened under another generation than its own.

use std::collections::HashMap;

use vlp_core::batch::{Backend, Job};
use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Key, MasterDatagram, OpenError};

use super::batch::{Jobs, Pre, OPEN_BATCH};
use super::pipeline::open_shared;
use super::rate::Budget;
use super::{Accepted, Nanos, Origin, Rejection, Tracker, UdpMode};

/// What a worker opened for one datagram, for [`Tracker::handle_opened`].
pub struct Opened {
    pre: Pre,
    generation: u64,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Opens secure datagrams ahead for the table's owner (see the module docs).
pub struct Opener {
    udp: Vec<UdpMode>,
    generation: u64,
    backend: Backend,
    /// `(listener, pid)` → agent key, for keys that authenticated a datagram.
    keys: HashMap<(usize, u32), Key, foldhash::fast::RandomState>,
    max_keys: usize,
    derive: Budget,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("generation", &self.generation)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for the UDP listeners `udp` (as configured at key generation `generation`),
    /// keeping at most `max_keys` agent keys and deriving at most `derivations_per_sec` (burst
    /// as many; 0 = unbounded) new ones.
    #[must_use]
    pub fn new(
        udp: Vec<UdpMode>,
        generation: u64,
        max_keys: usize,
        derivations_per_sec: u32,
    ) -> Opener {
        Opener {
            udp,
            generation,
            backend: Backend::detect(),
            keys: HashMap::default(),
            max_keys,
            derive: Budget::new(derivations_per_sec),
        }
    }

    /// The key generation this opener opens under.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes the keys of a configuration reload (key generation `generation`); kept agent keys
    /// are forgotten if a master key changed.
    pub fn rekey(&mut self, udp: Vec<UdpMode>, generation: u64) {
        let master = |m: &UdpMode| match m {
            UdpMode::Secure { master, .. } => master.clone(),
            UdpMode::Plain => None,
        };
        // Agent keys depend on the master key only: kept unless one changed.
        let same = udp.len() == self.udp.len()
            && udp
                .iter()
                .zip(&self.udp)
                .all(|(a, b)| master(a) == master(b));
        if !same {
            self.keys.clear();
        }
        self.udp = udp;
        self.generation = generation;
    }

    /// Opens the secure datagrams of `chunk` (`(arrival, origin, bytes)`, as for
    /// [`Tracker::handle_batch`]) into `out[i]`; `None` where nothing was opened ahead
    /// (plaintext, wrong length, no key, derivation budget spent). `now` feeds the derivation
    /// budget. At most [`OPEN_BATCH`] datagrams are taken.
    pub fn open(
        &mut self,
        now: Nanos,
        chunk: &[(Nanos, Origin, &[u8])],
        out: &mut [Option<Opened>],
    ) {
        let n = chunk.len().min(OPEN_BATCH).min(out.len());
        // Which listener's keys open datagram i, and `Some((listener, pid))` for a master-key
        // datagram (its key kept here, or derived into `derived[i]`).
        let mut plan: [Option<usize>; OPEN_BATCH] = [None; OPEN_BATCH];
        let mut master_of: [Option<(usize, u32)>; OPEN_BATCH] = [None; OPEN_BATCH];
        let mut derived: [Option<Key>; OPEN_BATCH] = std::array::from_fn(|_| None);
        for (i, (_, origin, bytes)) in chunk[..n].iter().enumerate() {
            out[i] = None;
            let (Origin::Udp { listener } | Origin::UdpFrom { listener, .. }) = *origin else {
                continue;
            };
            let Some(UdpMode::Secure { keys, master }) = self.udp.get(listener) else {
                continue;
            };
            match (bytes.len(), master) {
                (SHARED_LEN, _) if !keys.is_empty() => plan[i] = Some(listener),
                (MASTER_LEN, Some(master)) => {
                    let Ok(d) = MasterDatagram::from_bytes(bytes) else {
                        continue;
                    };
                    let id = (listener, d.pid());
                    if !self.keys.contains_key(&id) {
                        // Derived once per agent per batch.
                        let earlier = master_of[..i]
                            .iter()
                            .position(|m| *m == Some(id))
                            .and_then(|j| derived[j].clone());
                        let master = master.clone();
                        derived[i] = match earlier {
                            Some(k) => Some(k),
                            None if self.derive.try_take(now) => {
                                Some(derive_agent_key(&master, id.1))
                            }
                            None => continue,
                        };
                    }
                    plan[i] = Some(listener);
                    master_of[i] = Some(id);
                }
                _ => {}
            }
        }
        let mut jobs = Jobs::new();
        for (i, (_, _, bytes)) in chunk[..n].iter().enumerate() {
            let Some(listener) = plan[i] else {
                continue;
            };
            let job = match master_of[i] {
                Some(id) => self
                    .keys
                    .get(&id)
                    .or(derived[i].as_ref())
                    .map(|k| Job::master(k, bytes)),
                None => match self.udp.get(listener) {
                    Some(UdpMode::Secure { keys, .. }) => {
                        keys.first().map(|k| Job::shared(k, bytes))
                    }
                    _ => None,
                },
            };
            if let Some(job) = job {
                jobs.push(i, job);
            }
        }
        let opened = jobs.open(self.backend);
        for (i, (_, origin, bytes)) in chunk[..n].iter().enumerate() {
            let Some(result) = opened.get(i) else {
                continue;
            };
            let pre = match master_of[i] {
                Some(id) => {
                    // A key derived here goes to the owner, to keep as it would its own
                    // derivation; a key this worker kept already, the owner keeps too (no copy
                    // per beat).
                    let key = derived[i].take();
                    if result.is_ok() {
                        if let Some(k) = &key {
                            self.keep(id, k);
                        }
                    }
                    Pre::Master {
                        opened: result,
                        derived: key,
                    }
                }
                None => {
                    let (Origin::Udp { listener } | Origin::UdpFrom { listener, .. }) = *origin
                    else {
                        continue;
                    };
                    let keys = match self.udp.get(listener) {
                        Some(UdpMode::Secure { keys, .. }) => keys.as_slice(),
                        _ => &[],
                    };
                    Pre::Shared(match result {
                        // The first key did not fit: the others in turn, as one by one.
                        Err(OpenError::BadTag) if keys.len() > 1 => open_shared(&keys[1..], bytes),
                        other => other.map_err(Rejection::Open),
                    })
                }
            };
            out[i] = Some(Opened {
                pre,
                generation: self.generation,
            });
        }
    }

    /// Keeps an agent key that authenticated a datagram; a full cache starts over (bounded;
    /// the agents beating now come back at one derivation each).
    fn keep(&mut self, id: (usize, u32), key: &Key) {
        if self.keys.contains_key(&id) || self.max_keys == 0 {
            return;
        }
        if self.keys.len() >= self.max_keys {
            self.keys.clear();
        }
        self.keys.insert(id, key.clone());
    }
}

impl Tracker {
    /// Handles a batch whose secure datagrams an [`Opener`] opened: `batch[i]` as for
    /// [`Tracker::handle_batch`], `opened[i]` what was opened for it (taken). Same decisions,
    /// counters and events as [`Tracker::handle_datagram`] one by one; what was opened under
    /// another key generation than `generation` (the tracker's keys now) is ignored and the
    /// datagram opened here.
    pub fn handle_opened(
        &mut self,
        generation: u64,
        batch: &[(Nanos, Origin, &[u8])],
        opened: &mut [Option<Opened>],
        mut each: impl FnMut(usize, Result<Accepted, Rejection>),
    ) {
        for (i, (at, origin, bytes)) in batch.iter().enumerate() {
            let pre = opened
                .get_mut(i)
                .and_then(Option::take)
                .filter(|o| o.generation == generation)
                .map(|o| o.pre);
            let r = self.handle_one(*at, origin, bytes, pre);
            each(i, r);
        }
    }
}
