//! Batched open: the secure datagrams of one receive batch opened together (VLP v0.2 §3).
//!
//! A receiver that reads datagrams in batches (`recvmmsg`) holds several sealed datagrams at
//! once, each possibly under a different key (per-agent keys). Opening one needs two ChaCha20
//! blocks (block 0 keys Poly1305, block 1 is the keystream of the 32-byte frame) and three or
//! four Poly1305 blocks. [`Backend::open`] computes the ChaCha20 blocks of several datagrams
//! in SIMD lanes, one lane per block, and the Poly1305 tags in parallel lanes:
//!
//! * AVX2 (x86-64, detected at run time): 8 lanes, 4 datagrams per group;
//! * SSE2 (x86-64 baseline): 4 lanes, 2 datagrams per group;
//! * portable: one block at a time; every target, and the fallback.
//!
//! Every path returns, job for job, exactly what [`SharedDatagram::open`] or
//! [`MasterDatagram::open`] returns for the same key and bytes: the same plaintext, the same
//! [`OpenError`] (the tests hold all paths to this and to the `chacha20poly1305` crate).
//!
//! Constant time: no branch or index depends on a key, keystream or plaintext byte; the tags
//! are compared with `subtle`; a datagram's plaintext is looked at only after its tag
//! verified. Branches depend on public facts only (lengths, the datagram layout, whether a tag
//! verified). Key schedules, keystream, one-time keys and plaintext copies are zeroized before
//! the call returns, as in the single open.
//!
//! No allocation: the caller provides the jobs and the storage for the results.
//!
//! ```
//! use vlp_core::batch::{Backend, Job, Opened};
//! use vlp_core::{Frame, Iv, Key, OpenError, SharedDatagram, Status};
//!
//! let backend = Backend::detect(); // once, at start-up
//! let keys = [Key::from_bytes([1; 32]), Key::from_bytes([2; 32])];
//! let iv = Iv { random: [7; 8], counter: 1 };
//! let frame = Frame::new(Status::Ok, 42, 1_000, 1, 0)?;
//! let good = SharedDatagram::seal(&keys[0], &iv, &frame);
//! let jobs = [Job::shared(&keys[0], &good.0), Job::shared(&keys[1], &good.0)];
//! let mut out: [Opened; 2] = [Err(OpenError::BadTag); 2];
//! backend.open(&jobs, &mut out);
//! assert_eq!(out, [Ok((iv, frame)), Err(OpenError::BadTag)]);
//! # Ok::<(), vlp_core::DecodeError>(())
//! ```
//!
//! A receiver with a replay window checks each datagram's clear [`Iv`] before it builds the
//! jobs, and re-checks right before it commits each opened one: two copies of one datagram in
//! the same batch both pass the first check.
//!
//! [`SharedDatagram::open`]: crate::SharedDatagram::open
//! [`MasterDatagram::open`]: crate::MasterDatagram::open

mod chacha;
mod poly;
#[cfg(target_arch = "x86_64")]
mod x86;

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use self::chacha::{Kernel, Portable, OUT_WORDS, SIGMA};
use self::poly::{Limbs, PolyLanes};
use crate::envelope::{Iv, Key, OpenError, MASTER_LEN, SHARED_LEN};
use crate::wire::{Frame, FRAME_LEN};

/// What opening one datagram yields: the same type as [`crate::SharedDatagram::open`].
pub type Opened = Result<(Iv, Frame), OpenError>;

/// The received bytes of one secure datagram, with the layout the receiver expects (the
/// listener knows whether it runs with a shared key or a master key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed<'a> {
    /// A shared-key datagram: must be 60 bytes (else [`OpenError::BadLength`]).
    Shared(&'a [u8]),
    /// A master-key datagram: must be 64 bytes; its clear pid is the associated data.
    Master(&'a [u8]),
}

/// One datagram to open and the key to open it with (for a master-key datagram, the agent key
/// derived for its clear pid, see [`crate::kdf::derive_agent_key`]).
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The key.
    pub key: &'a Key,
    /// The datagram.
    pub sealed: Sealed<'a>,
}

impl<'a> Job<'a> {
    /// A shared-key datagram under `key`.
    #[must_use]
    pub const fn shared(key: &'a Key, bytes: &'a [u8]) -> Job<'a> {
        Job {
            key,
            sealed: Sealed::Shared(bytes),
        }
    }

    /// A master-key datagram under the agent key `key`.
    #[must_use]
    pub const fn master(key: &'a Key, bytes: &'a [u8]) -> Job<'a> {
        Job {
            key,
            sealed: Sealed::Master(bytes),
        }
    }
}

/// The ways this build can open a batch; [`Backend`] is one this CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Path {
    /// One block at a time in plain 32-bit arithmetic: every target.
    Portable,
    /// 4 lanes in SSE2 registers (x86-64).
    Sse2,
    /// 8 lanes in AVX2 registers (x86-64 with AVX2).
    Avx2,
}

impl Path {
    /// Every path, narrowest first.
    pub const ALL: [Path; 3] = [Path::Portable, Path::Sse2, Path::Avx2];

    /// A short lower-case name, for logs and benchmark labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            Path::Sse2 => "sse2",
            Path::Avx2 => "avx2",
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Sse2,
    #[cfg(target_arch = "x86_64")]
    Avx2(x86::Avx2),
}

/// A batch-open implementation that this CPU can run. Obtain the fastest with
/// [`Backend::detect`] once and keep it; [`Backend::with_path`] forces one (tests, benches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend(Inner);

impl Backend {
    /// The widest path this CPU runs: AVX2 if present, else SSE2 on x86-64, else portable.
    /// (A CPUID query cached in an atomic: cheap, but callers on a hot path keep the result.)
    #[must_use]
    pub fn detect() -> Backend {
        Path::ALL
            .iter()
            .rev()
            .find_map(|&p| Backend::with_path(p))
            .unwrap_or(Backend(Inner::Portable))
    }

    /// The portable path, which every target runs.
    #[must_use]
    pub const fn portable() -> Backend {
        Backend(Inner::Portable)
    }

    /// `path` if this build and this CPU can run it, else `None`.
    #[must_use]
    pub fn with_path(path: Path) -> Option<Backend> {
        match path {
            Path::Portable => Some(Backend(Inner::Portable)),
            #[cfg(target_arch = "x86_64")]
            Path::Sse2 => Some(Backend(Inner::Sse2)),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => x86::Avx2::detect().map(|cpu| Backend(Inner::Avx2(cpu))),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Sse2 | Path::Avx2 => None,
        }
    }

    /// Which path this is.
    #[must_use]
    pub const fn path(self) -> Path {
        match self.0 {
            Inner::Portable => Path::Portable,
            #[cfg(target_arch = "x86_64")]
            Inner::Sse2 => Path::Sse2,
            #[cfg(target_arch = "x86_64")]
            Inner::Avx2(_) => Path::Avx2,
        }
    }

    /// Opens every job: `out[i]` becomes what the single open of `jobs[i]` returns
    /// ([`crate::SharedDatagram::open`] or [`crate::MasterDatagram::open`], a wrong length
    /// giving [`OpenError::BadLength`]). `out[jobs.len()..]` is left as it was. Any bytes,
    /// keys and batch length are fine: peer input never panics.
    ///
    /// # Panics
    /// If `out` is shorter than `jobs` (a caller's mistake, independent of the peers' bytes).
    pub fn open(self, jobs: &[Job<'_>], out: &mut [Opened]) {
        assert!(
            out.len() >= jobs.len(),
            "batch open: {} results for {} jobs",
            out.len(),
            jobs.len()
        );
        match self.0 {
            Inner::Portable => {
                for (j, o) in jobs.chunks(1).zip(out.chunks_mut(1)) {
                    open_group_portable(j, o);
                }
            }
            #[cfg(target_arch = "x86_64")]
            Inner::Sse2 => x86::open_sse2(jobs, out),
            #[cfg(target_arch = "x86_64")]
            Inner::Avx2(cpu) => x86::open_avx2(cpu, jobs, out),
        }
    }
}

/// Opens a batch with the widest path this CPU runs ([`Backend::detect`], then
/// [`Backend::open`]).
///
/// # Panics
/// If `out` is shorter than `jobs`.
pub fn open_batch(jobs: &[Job<'_>], out: &mut [Opened]) {
    Backend::detect().open(jobs, out);
}

/// The words of a ChaCha20 input state that hold the key.
const KEY_WORDS: core::ops::Range<usize> = 4..12;

/// The public parts of one datagram: everything but the key.
#[derive(Clone, Copy)]
struct Lane {
    /// The master-key pid (associated data), `None` for shared-key datagrams.
    aad: Option<u32>,
    iv: Iv,
    ct: [u32; 8],
    /// The received tag as two little-endian 64-bit words.
    tag: [u64; 2],
}

#[inline(always)]
fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

impl Lane {
    /// Checks the length for the layout and reads the clear fields (§3 tables).
    #[inline(always)]
    fn read(sealed: &Sealed<'_>) -> Result<Lane, OpenError> {
        let (aad, body) = match *sealed {
            Sealed::Shared(b) if b.len() == SHARED_LEN => (None, b),
            Sealed::Master(b) if b.len() == MASTER_LEN => (Some(le32(b, 0)), &b[4..]),
            Sealed::Shared(b) | Sealed::Master(b) => {
                return Err(OpenError::BadLength { len: b.len() })
            }
        };
        // Whole-word reads over exact chunks: no per-byte bounds checks, no closures (see
        // `chacha::vertical_blocks` on closures under target features).
        let mut words = [0u32; SHARED_LEN / 4];
        for (w, b) in words.iter_mut().zip(body.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let [r0, r1, counter, c0, c1, c2, c3, c4, c5, c6, c7, t0, t1, t2, t3] = words;
        let mut random = [0u8; 8];
        random[..4].copy_from_slice(&r0.to_le_bytes());
        random[4..].copy_from_slice(&r1.to_le_bytes());
        Ok(Lane {
            aad,
            iv: Iv { random, counter },
            ct: [c0, c1, c2, c3, c4, c5, c6, c7],
            tag: [
                u64::from(t0) | u64::from(t1) << 32,
                u64::from(t2) | u64::from(t3) << 32,
            ],
        })
    }

    /// Writes the ChaCha20 input states (RFC 8439 §2.3) for this datagram's key and nonce
    /// into lane `block0` (block counter 0) and lane `block1` (counter 1) of `input`.
    #[inline(always)]
    fn fill<const L: usize>(
        &self,
        key: &Key,
        input: &mut [[u32; L]; 16],
        block0: usize,
        block1: usize,
    ) {
        let k = key.as_bytes();
        let n = &self.iv.random;
        for lane in [block0, block1] {
            for (w, s) in SIGMA.iter().enumerate() {
                input[w][lane] = *s;
            }
            for i in 0..8 {
                input[KEY_WORDS.start + i][lane] = le32(k, i);
            }
            input[13][lane] = le32(n, 0);
            input[14][lane] = le32(n, 1);
            input[15][lane] = self.iv.counter;
        }
        input[12][block0] = 0;
        input[12][block1] = 1;
    }
}

/// After the tag verified: parse the frame with every rule of §2 and, for a master-key
/// datagram, require the sealed pid to equal the clear one. The same checks in the same order
/// as the single open.
#[inline(always)]
fn accept(aad: Option<u32>, iv: Iv, plain: &mut [u8; FRAME_LEN]) -> Opened {
    let frame = Frame::parse_array(plain).map_err(OpenError::Frame);
    plain.zeroize();
    let frame = frame?;
    match aad {
        Some(outer) if frame.pid() != outer => Err(OpenError::PidMismatch {
            outer,
            inner: frame.pid(),
        }),
        _ => Ok((iv, frame)),
    }
}

/// One word per lane from the datagrams present, 0 for absent lanes.
#[inline(always)]
fn per_lane<const D: usize>(lanes: &[Option<Lane>; D], f: impl Fn(&Lane) -> u32) -> [u32; D] {
    core::array::from_fn(|l| lanes[l].as_ref().map_or(0, &f))
}

/// Opens up to `D` datagrams as one group of `L = 2 D` ChaCha20 lanes (kernel `K`; lane `l`
/// is block 0 of datagram `l`, lane `D + l` its block 1) and `D` Poly1305 lanes (`P`). Lanes
/// of absent or mis-sized datagrams run on a zero state and are ignored. Written once;
/// `#[inline(always)]` so that each path compiles it with its own target features.
#[inline(always)]
fn open_group<K: Kernel<L>, P: Limbs<D>, const L: usize, const D: usize>(
    jobs: &[Job<'_>],
    out: &mut [Opened],
) {
    const { assert!(L == 2 * D) };
    let mut lanes: [Option<Lane>; D] = [None; D];
    let mut input = [[0u32; L]; 16];
    for (l, (job, o)) in jobs.iter().zip(out.iter_mut()).take(D).enumerate() {
        match Lane::read(&job.sealed) {
            Ok(lane) => {
                lane.fill(job.key, &mut input, l, D + l);
                lanes[l] = Some(lane);
            }
            Err(e) => *o = Err(e),
        }
    }
    if lanes.iter().all(Option::is_none) {
        return;
    }
    let mut ks = [[0u32; L]; OUT_WORDS];
    K::blocks(&input, &mut ks);
    // Only the key words are secret: the constants, counters and nonces are public.
    for w in &mut input[KEY_WORDS] {
        w.zeroize();
    }

    // Poly1305 over `aad || pad`, the two ciphertext blocks and the lengths (RFC 8439 §2.8).
    // Lanes 0..D hold block 0: the one-time keys.
    let mut poly = PolyLanes::<P, D>::new(&ks);
    let aad_len = per_lane(&lanes, |x| if x.aad.is_some() { 4 } else { 0 });
    if aad_len.iter().any(|&n| n != 0) {
        poly.block(&[
            per_lane(&lanes, |x| x.aad.unwrap_or(0)),
            [0; D],
            [0; D],
            [0; D],
        ]);
        // Lanes without associated data absorb no block: back to the empty accumulator.
        poly.keep(&core::array::from_fn(|l| {
            0u32.wrapping_sub(u32::from(aad_len[l] != 0))
        }));
    }
    let ct: [[u32; D]; 8] = core::array::from_fn(|w| per_lane(&lanes, |x| x.ct[w]));
    poly.block(&[ct[0], ct[1], ct[2], ct[3]]);
    poly.block(&[ct[4], ct[5], ct[6], ct[7]]);
    poly.block(&[aad_len, [0; D], [FRAME_LEN as u32; D], [0; D]]);
    let tags = poly.finish();
    poly.wipe();

    for (l, (lane, o)) in lanes.iter().zip(out.iter_mut()).enumerate() {
        let Some(lane) = lane else { continue };
        // Two 64-bit halves: each `subtle` comparison is an optimisation barrier call.
        let computed = [
            u64::from(tags[0][l]) | u64::from(tags[1][l]) << 32,
            u64::from(tags[2][l]) | u64::from(tags[3][l]) << 32,
        ];
        let verified: bool = lane.tag.ct_eq(&computed).into();
        *o = if verified {
            let mut plain = [0u8; FRAME_LEN];
            for (i, c) in lane.ct.iter().enumerate() {
                plain[4 * i..4 * i + 4].copy_from_slice(&(c ^ ks[i][D + l]).to_le_bytes());
            }
            accept(lane.aad, lane.iv, &mut plain)
        } else {
            Err(OpenError::BadTag)
        };
    }
    ks.zeroize();
}

/// One datagram on the portable path.
fn open_group_portable(jobs: &[Job<'_>], out: &mut [Opened]) {
    open_group::<Portable, u64, 2, 1>(jobs, out);
}

#[cfg(test)]
mod tests;
