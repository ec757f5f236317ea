//! In-process figures: the AEAD open cost per datagram (one at a time, and batched in SIMD
//! lanes as the observer opens a receive batch), and the observer core's whole cost per secure
//! datagram (open included) as the ingest benchmark feeds it, one by one and in batches of a
//! `recvmmsg` call. Best of 5 rounds (one small round with `--quick`): the figure is the cost
//! of the work, not of whoever else ran.

use std::time::Instant;

use varta_watch::tracker::{Origin, Tracker, TrackerConfig, UdpMode};
use vlp_core::batch::{Backend, Job, Opened};
use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Key, MasterDatagram, OpenError, SharedDatagram};

use crate::seal::{Identity, MAX_DATAGRAM};

/// `per_agent` beats of each of `agents` identities, round-robin, sealed by `make`.
fn sealed(agents: u32, per_agent: u32, make: impl Fn(u32) -> Identity) -> Vec<[u8; MAX_DATAGRAM]> {
    let mut ids: Vec<Identity> = (0..agents).map(|i| make(100_000 + i)).collect();
    let mut out = Vec::with_capacity((agents * per_agent) as usize);
    for k in 0..per_agent {
        for id in &mut ids {
            let mut b = [0u8; MAX_DATAGRAM];
            if id.next_beat(0, u64::from(k) + 1, &mut b).is_ok() {
                out.push(b);
            }
        }
    }
    out
}

/// Datagrams per batch in the batched figures: one `recvmmsg` call of the observer.
const BATCH: usize = varta_watch::listener::BATCH;

/// AEAD open ns per datagram, `[shared key, master key]` with the agent key at hand.
pub struct OpenCost {
    /// One datagram at a time.
    pub single: [f64; 2],
    /// Batches of [`BATCH`], on the widest path this CPU runs.
    pub batched: [f64; 2],
    /// That path's name.
    pub path: &'static str,
}

/// Batched open ns per datagram of `data` (datagrams of `len` bytes) under `key`.
fn batched_open_ns(data: &[[u8; MAX_DATAGRAM]], len: usize, key: &Key, master: bool) -> f64 {
    let backend = Backend::detect();
    let mut out: [Opened; BATCH] = [Err(OpenError::BadTag); BATCH];
    let mut ok = 0usize;
    let t = Instant::now();
    for chunk in data.chunks(BATCH) {
        let first = if master {
            Job::master(key, &chunk[0][..len])
        } else {
            Job::shared(key, &chunk[0][..len])
        };
        let mut jobs = [first; BATCH];
        for (j, d) in jobs.iter_mut().zip(chunk) {
            *j = if master {
                Job::master(key, &d[..len])
            } else {
                Job::shared(key, &d[..len])
            };
        }
        backend.open(&jobs[..chunk.len()], &mut out[..chunk.len()]);
        ok += out[..chunk.len()].iter().filter(|o| o.is_ok()).count();
    }
    let ns = t.elapsed().as_nanos() as f64 / data.len() as f64;
    std::hint::black_box(ok);
    ns
}

/// AEAD open ns per datagram, one at a time and batched.
#[must_use]
pub fn open_cost(quick: bool) -> OpenCost {
    let (n, rounds) = if quick { (500, 1) } else { (20_000, 5) };
    let key = Key::from_bytes([7; 32]);
    let shared = sealed(1, n, |pid| Identity::shared(pid, key.clone(), [1; 16]));
    let master = sealed(1, n, |pid| Identity::master(pid, &key, [1; 16]));
    let agent_key = derive_agent_key(&key, 100_000);
    let mut shared_ns = f64::MAX;
    let mut master_ns = f64::MAX;
    let mut batched = [f64::MAX; 2];
    let mut ok = 0usize;
    for _ in 0..rounds {
        batched[0] = batched[0].min(batched_open_ns(&shared, SHARED_LEN, &key, false));
        batched[1] = batched[1].min(batched_open_ns(&master, MASTER_LEN, &agent_key, true));
        let t = Instant::now();
        for d in &shared {
            ok += usize::from(
                SharedDatagram::from_bytes(&d[..SHARED_LEN]).is_ok_and(|d| d.open(&key).is_ok()),
            );
        }
        shared_ns = shared_ns.min(t.elapsed().as_nanos() as f64 / shared.len() as f64);
        let t = Instant::now();
        for d in &master {
            ok += usize::from(
                MasterDatagram::from_bytes(&d[..MASTER_LEN])
                    .is_ok_and(|d| d.open(&agent_key).is_ok()),
            );
        }
        master_ns = master_ns.min(t.elapsed().as_nanos() as f64 / master.len() as f64);
    }
    std::hint::black_box(ok);
    OpenCost {
        single: [shared_ns, master_ns],
        batched,
        path: Backend::detect().path().name(),
    }
}

/// The tracker's ns per secure datagram (open included), 1,000 agents round-robin, each on its
/// own stream; every run on a fresh tracker, so the master-key runs include one key
/// derivation per agent. Returns `[shared key, master key]` for datagrams handed one by one
/// (`handle_datagram`) and in batches of [`BATCH`] (`handle_batch`, the observer's path).
///
/// # Errors
/// A datagram was refused: the figure would not be the cost of ingest.
pub fn tracker_cost(quick: bool) -> Result<([f64; 2], [f64; 2]), String> {
    let (per_agent, rounds) = if quick { (2, 1) } else { (40, 5) };
    let key = Key::from_bytes([7; 32]);
    let shared = sealed(1_000, per_agent, |pid| {
        Identity::shared(pid, key.clone(), [3; 16])
    });
    let master = sealed(1_000, per_agent, |pid| Identity::master(pid, &key, [3; 16]));
    let origin = Origin::Udp { listener: 0 };
    let run = |mode: UdpMode, data: &[[u8; MAX_DATAGRAM]], len: usize, batched: bool| {
        let mut t = Tracker::new(TrackerConfig {
            threshold: 3_600_000_000_000,
            capacity: 65_536,
            evict_after: u64::MAX,
            allowed_uids: Vec::new(),
            udp: vec![mode],
            ..TrackerConfig::default()
        });
        let start = Instant::now();
        if batched {
            let mut items = [(0, origin, &[][..]); BATCH];
            for (now, chunk) in (1..).zip(data.chunks(BATCH)) {
                for (it, d) in items.iter_mut().zip(chunk) {
                    *it = (now, origin, &d[..len]);
                }
                t.handle_batch(&items[..chunk.len()], |_, r| {
                    let _ = std::hint::black_box(r);
                });
                while t.poll_event().is_some() {}
            }
        } else {
            for (now, d) in (1..).zip(data) {
                let _ = std::hint::black_box(t.handle_datagram(now, &origin, &d[..len]));
                while t.poll_event().is_some() {}
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / data.len() as f64;
        if t.stats().accepted == data.len() as u64 {
            Ok(ns)
        } else {
            Err(format!(
                "tracker accepted {} of {} datagrams",
                t.stats().accepted,
                data.len()
            ))
        }
    };
    let mut single = [f64::MAX; 2];
    let mut batched = [f64::MAX; 2];
    for _ in 0..rounds {
        for (slot, in_batches) in [(&mut single, false), (&mut batched, true)] {
            let mode = UdpMode::Secure {
                keys: vec![key.clone()],
                master: None,
            };
            slot[0] = slot[0].min(run(mode, &shared, SHARED_LEN, in_batches)?);
            let mode = UdpMode::Secure {
                keys: Vec::new(),
                master: Some(key.clone()),
            };
            slot[1] = slot[1].min(run(mode, &master, MASTER_LEN, in_batches)?);
        }
    }
    Ok((single, batched))
}
