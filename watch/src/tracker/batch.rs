//! A receive batch at once: [`Tracker::handle_batch`] opens every secure datagram of one
//! `recvmmsg` batch together ([`vlp_core::batch`], SIMD lanes where the CPU has them), then
//! runs each datagram through the one pipeline in arrival order with its open result at hand.
//!
//! Same decisions, counters and events as [`Tracker::handle_datagram`] one by one, by
//! construction: the batch only computes ahead what is a pure function of its inputs (an AEAD
//! open of given key and bytes; a master-key agent key, which depends on the master key and
//! the pid only, whether it was kept in the agent's slot or derived), and the pipeline takes
//! every decision again in order: the replay window and remembered streams are checked (again)
//! right before each datagram is committed, so two copies of one datagram in a batch, both
//! past the look-ahead check, are still told apart; derivations are counted where the one-by-one
//! path would derive. A datagram the look-ahead skipped (replayed, wrong length, no key) is
//! handled exactly as one by one, opened then if the pipeline gets that far.

use vlp_core::batch::{Job, Opened};
use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Iv, Key, MasterDatagram, OpenError};

use super::pipeline::open_shared;
use super::session::precheck;
use super::table::{listener_code, tag};
use super::{Accepted, Listener, Nanos, Origin, Rejection, Tracker, UdpMode};

/// Datagrams opened together at most: a `recvmmsg` batch of the daemon. Longer slices are
/// taken in chunks of this size.
pub const OPEN_BATCH: usize = 64;

/// What the look-ahead opened for one datagram, handed to the pipeline.
pub(super) enum Pre {
    /// A shared-key datagram opened with the listener's keys in turn.
    Shared(Result<(Iv, Frame), Rejection>),
    /// A master-key datagram opened with its agent key; `derived` is that key if the batch
    /// derived it (for the pipeline to keep in the agent's slot).
    Master {
        opened: Opened,
        derived: Option<Key>,
    },
}

/// The look-ahead's plan for one datagram.
#[derive(Clone, Copy)]
enum Plan {
    /// Nothing opened ahead: the pipeline does what it does one by one.
    Skip,
    /// Shared-key datagram of UDP listener `listener` (job under its first key).
    Shared { listener: usize },
    /// Master-key datagram under the key kept in `slot`.
    Kept { slot: u32 },
    /// Master-key datagram under `derived[at]`, derived by this batch.
    Derived { at: usize },
}

impl Tracker {
    /// Handles one receive batch: `batch[i]` is datagram `i`, its arrival time (the
    /// `now` [`Tracker::handle_datagram`] would get; the kernel's receive time, so a batch
    /// read late keeps each beat's own time) and who sent it. Secure datagrams are opened
    /// together first (see the module docs), then every datagram goes through the pipeline
    /// in order, exactly as [`Tracker::handle_datagram`] would take it; `each(i, result)`
    /// gets each outcome. Events are queued for [`Tracker::poll_event`].
    pub fn handle_batch(
        &mut self,
        batch: &[(Nanos, Origin, &[u8])],
        mut each: impl FnMut(usize, Result<Accepted, Rejection>),
    ) {
        for (c, chunk) in batch.chunks(OPEN_BATCH).enumerate() {
            // Nothing to open ahead in a batch of the Unix socket.
            let udp = chunk
                .iter()
                .any(|(_, o, _)| matches!(o, Origin::Udp { .. } | Origin::UdpFrom { .. }));
            let mut pre = if udp {
                self.open_ahead(chunk)
            } else {
                std::array::from_fn(|_| None)
            };
            for (i, (at, origin, bytes)) in chunk.iter().enumerate() {
                let r = self.handle_one(*at, origin, bytes, pre[i].take());
                each(c * OPEN_BATCH + i, r);
            }
        }
    }

    /// Which key opens which datagram of `chunk`, then one batched open.
    fn open_ahead(&self, chunk: &[(Nanos, Origin, &[u8])]) -> [Option<Pre>; OPEN_BATCH] {
        let n = chunk.len().min(OPEN_BATCH);
        let mut plan = [Plan::Skip; OPEN_BATCH];
        let mut derived: [Option<Key>; OPEN_BATCH] = std::array::from_fn(|_| None);
        // (listener code, pid) of each derived key, to derive once per agent per batch.
        let mut derived_for = [(0u16, 0u32); OPEN_BATCH];
        let mut n_derived = 0;
        for (i, (_, origin, bytes)) in chunk[..n].iter().enumerate() {
            let (Origin::Udp { listener } | Origin::UdpFrom { listener, .. }) = *origin else {
                continue;
            };
            let (Some(UdpMode::Secure { keys, master }), Some(code)) = (
                self.udp.get(listener),
                listener_code(Listener::Udp(listener)),
            ) else {
                continue;
            };
            plan[i] = match (bytes.len(), master) {
                (SHARED_LEN, _) if !keys.is_empty() => Plan::Shared { listener },
                (MASTER_LEN, Some(master)) => {
                    let Ok(d) = MasterDatagram::from_bytes(bytes) else {
                        continue;
                    };
                    let pid = d.pid();
                    let slot = self.table.find(tag(code, true, pid));
                    let mut kept = None;
                    if let Some(s) = slot {
                        let a = &self.table.slab[s as usize];
                        // A replay is refused before any decryption, as one by one.
                        if precheck(a, &self.histories, s, &d.iv()).is_err() {
                            continue;
                        }
                        if a.has_key() && self.keys.as_ref().is_some_and(|k| k.get(s).is_some()) {
                            kept = Some(s);
                        }
                    }
                    match kept {
                        Some(slot) => Plan::Kept { slot },
                        // An identity not tracked yet is left to the one-by-one path, whose
                        // key-derivation budget bounds the HKDF work a flood of forged pids
                        // costs (`rate`); once tracked, its key is kept and batched.
                        None if slot.is_none() => Plan::Skip,
                        None => {
                            let at = derived_for[..n_derived]
                                .iter()
                                .position(|&x| x == (code, pid))
                                .unwrap_or_else(|| {
                                    derived[n_derived] = Some(derive_agent_key(master, pid));
                                    derived_for[n_derived] = (code, pid);
                                    n_derived += 1;
                                    n_derived - 1
                                });
                            Plan::Derived { at }
                        }
                    }
                }
                _ => Plan::Skip,
            };
        }

        let mut jobs = Jobs::new();
        for (i, (_, _, bytes)) in chunk[..n].iter().enumerate() {
            let job = match plan[i] {
                Plan::Skip => None,
                Plan::Shared { listener } => match self.udp.get(listener) {
                    Some(UdpMode::Secure { keys, .. }) => {
                        keys.first().map(|k| Job::shared(k, bytes))
                    }
                    _ => None,
                },
                Plan::Kept { slot } => self
                    .keys
                    .as_ref()
                    .and_then(|k| k.get(slot))
                    .map(|k| Job::master(k, bytes)),
                Plan::Derived { at } => derived[at].as_ref().map(|k| Job::master(k, bytes)),
            };
            if let Some(job) = job {
                jobs.push(i, job);
            }
        }
        let out = jobs.open(self.backend);

        let mut pre: [Option<Pre>; OPEN_BATCH] = std::array::from_fn(|_| None);
        for (i, (_, _, bytes)) in chunk[..n].iter().enumerate() {
            let Some(opened) = out.get(i) else {
                continue;
            };
            pre[i] = match plan[i] {
                Plan::Skip => None,
                Plan::Shared { listener } => {
                    let keys = match self.udp.get(listener) {
                        Some(UdpMode::Secure { keys, .. }) => keys.as_slice(),
                        _ => &[],
                    };
                    Some(Pre::Shared(match opened {
                        // The first key did not fit: the others in turn, as one by one.
                        Err(OpenError::BadTag) if keys.len() > 1 => open_shared(&keys[1..], bytes),
                        other => other.map_err(Rejection::Open),
                    }))
                }
                Plan::Kept { .. } => Some(Pre::Master {
                    opened,
                    derived: None,
                }),
                Plan::Derived { at } => Some(Pre::Master {
                    opened,
                    derived: derived[at].take(),
                }),
            };
        }
        pre
    }

    /// Opens batches with `backend` instead of the widest path this CPU runs (tests and
    /// benchmarks compare the paths; every path gives the same bytes).
    pub fn set_open_backend(&mut self, backend: vlp_core::batch::Backend) {
        self.backend = backend;
    }
}

/// The AEAD jobs of one batch: datagram `i`'s job, if it has one, and one batched open of
/// them all.
pub(super) struct Jobs<'a> {
    jobs: [Option<Job<'a>>; OPEN_BATCH],
    of: [usize; OPEN_BATCH],
    n: usize,
}

impl<'a> Jobs<'a> {
    pub(super) fn new() -> Jobs<'a> {
        Jobs {
            jobs: [None; OPEN_BATCH],
            of: [usize::MAX; OPEN_BATCH],
            n: 0,
        }
    }

    /// `job` opens datagram `i` (`i < OPEN_BATCH`, each at most once).
    pub(super) fn push(&mut self, i: usize, job: Job<'a>) {
        if let (Some(slot), Some(of)) = (self.jobs.get_mut(self.n), self.of.get_mut(i)) {
            *slot = Some(job);
            *of = self.n;
            self.n += 1;
        }
    }

    /// Opens every job at once with `backend`.
    pub(super) fn open(self, backend: vlp_core::batch::Backend) -> Results {
        let mut out: [Opened; OPEN_BATCH] = [Err(OpenError::BadTag); OPEN_BATCH];
        if let Some(first) = self.jobs[0] {
            // Jobs `..n` are all `Some`; the filler beyond is never opened.
            let mut packed = [first; OPEN_BATCH];
            for (p, j) in packed.iter_mut().zip(&self.jobs[..self.n]) {
                if let Some(j) = j {
                    *p = *j;
                }
            }
            backend.open(&packed[..self.n], &mut out[..self.n]);
        }
        Results {
            out,
            of: self.of,
            n: self.n,
        }
    }
}

/// What [`Jobs::open`] opened.
pub(super) struct Results {
    out: [Opened; OPEN_BATCH],
    of: [usize; OPEN_BATCH],
    n: usize,
}

impl Results {
    /// Datagram `i`'s result, if it had a job.
    pub(super) fn get(&self, i: usize) -> Option<Opened> {
        self.of
            .get(i)
            .and_then(|&j| self.out[..self.n].get(j))
            .copied()
    }
}
