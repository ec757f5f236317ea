//! Batched open (`vlp_core::batch`) on every path this machine runs: job for job the same
//! result as the single open, and the same tag verdict and plaintext as the `chacha20poly1305`
//! crate, for batches of every length 0..=16 mixing keys, layouts and every way to fail.

mod common;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use common::Raw;
use proptest::prelude::*;
use vlp_core::batch::{open_batch, Backend, Job, Opened, Path, Sealed};
use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::{DecodeError, Frame, Iv, Key, MasterDatagram, OpenError, SharedDatagram, Status};

/// Every path this machine runs; prints the ones it cannot.
fn backends() -> Vec<Backend> {
    Path::ALL
        .iter()
        .filter_map(|&p| {
            let b = Backend::with_path(p);
            if b.is_none() {
                eprintln!("path {p} does not run on this machine: not tested here");
            }
            b
        })
        .collect()
}

/// The single open the batch must agree with.
fn single(job: &Job<'_>) -> Opened {
    match job.sealed {
        Sealed::Shared(b) => SharedDatagram::from_bytes(b)?.open(job.key),
        Sealed::Master(b) => MasterDatagram::from_bytes(b)?.open(job.key),
    }
}

/// The reference AEAD: `Some(plaintext)` if the crate verifies the tag.
fn reference(job: &Job<'_>) -> Option<[u8; 32]> {
    let (aad, body) = match job.sealed {
        Sealed::Shared(b) if b.len() == SHARED_LEN => (&[][..], b),
        Sealed::Master(b) if b.len() == MASTER_LEN => (&b[..4], &b[4..]),
        _ => return None,
    };
    let mut plain: [u8; 32] = body[12..44].try_into().unwrap();
    ChaCha20Poly1305::new(job.key.as_bytes().into())
        .decrypt_in_place_detached(body[..12].into(), aad, &mut plain, body[44..].into())
        .ok()
        .map(|()| plain)
}

/// Opens `jobs` on `backend` and checks every result against the single open and the crate.
fn check(backend: Backend, jobs: &[Job<'_>]) -> Vec<Opened> {
    // Storage longer than the batch: the tail must be left alone.
    let sentinel: Opened = Err(OpenError::BadLength { len: usize::MAX });
    let mut out = vec![sentinel; jobs.len() + 3];
    backend.open(jobs, &mut out);
    for (i, job) in jobs.iter().enumerate() {
        let path = backend.path();
        assert_eq!(out[i], single(job), "{path}: job {i} of {}", jobs.len());
        match (&out[i], reference(job)) {
            (Ok((_, f)), Some(plain)) => assert_eq!(f.emit(), plain, "{path}: job {i}"),
            (Err(OpenError::BadTag | OpenError::BadLength { .. }), None) => {}
            (Err(OpenError::Frame(_) | OpenError::PidMismatch { .. }), Some(_)) => {}
            (got, theirs) => panic!("{path}: job {i}: {got:?} but the crate says {theirs:?}"),
        }
    }
    assert!(
        out[jobs.len()..].iter().all(|o| *o == sentinel),
        "tail touched"
    );
    out
}

fn key(seed: u8) -> Key {
    Key::from_bytes(core::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ seed))
}

fn iv(n: u32) -> Iv {
    Iv {
        random: n.to_le_bytes().repeat(2).try_into().unwrap(),
        counter: n.wrapping_mul(0x9e37_79b9),
    }
}

fn frame(pid: u32) -> Frame {
    Frame::new(Status::Ok, pid, 1_000 + u64::from(pid), 7, 0xABCD).unwrap()
}

/// The bytes of a shared-key datagram sealed with the crate over any 32 bytes (how to get an
/// authentic datagram that carries an invalid frame), with `aad` as associated data.
fn crate_seal(key: &Key, iv: &Iv, aad: &[u8], plain: &[u8; 32]) -> [u8; SHARED_LEN] {
    let mut body = *plain;
    let tag = ChaCha20Poly1305::new(key.as_bytes().into())
        .encrypt_in_place_detached(&iv.nonce().into(), aad, &mut body)
        .unwrap();
    let mut out = [0u8; SHARED_LEN];
    out[..12].copy_from_slice(&iv.nonce());
    out[12..44].copy_from_slice(&body);
    out[44..].copy_from_slice(&tag);
    out
}

#[test]
fn cpufeatures_detection_agrees_with_std() {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            Backend::with_path(Path::Sse2).is_some(),
            "SSE2 is x86-64 baseline"
        );
        assert_eq!(
            Backend::with_path(Path::Avx2).is_some(),
            std::is_x86_feature_detected!("avx2")
        );
        let best = if std::is_x86_feature_detected!("avx2") {
            Path::Avx2
        } else {
            Path::Sse2
        };
        assert_eq!(Backend::detect().path(), best);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        assert_eq!(Backend::with_path(Path::Sse2), None);
        assert_eq!(Backend::with_path(Path::Avx2), None);
        assert_eq!(Backend::detect().path(), Path::Portable);
    }
    assert_eq!(Backend::portable().path(), Path::Portable);
}

/// One datagram of each outcome, under per-datagram keys, in one batch; every path and every
/// rotation of the batch (so each outcome meets each lane position and group boundary).
#[test]
fn every_outcome_in_one_batch() {
    let keys: Vec<Key> = (0..8).map(key).collect();
    // (key, master layout, bytes, the error expected or `None`: opens).
    let mut bufs: Vec<(usize, bool, Vec<u8>, Option<OpenError>)> = Vec::new();
    let ok = None;
    // Shared, valid.
    bufs.push((
        0,
        false,
        SharedDatagram::seal(&keys[0], &iv(1), &frame(11))
            .0
            .to_vec(),
        ok,
    ));
    // Master, valid.
    bufs.push((
        1,
        true,
        MasterDatagram::seal(&keys[1], &iv(2), &frame(12))
            .0
            .to_vec(),
        ok,
    ));
    // Shared under another key.
    let mut d = SharedDatagram::seal(&keys[3], &iv(3), &frame(13))
        .0
        .to_vec();
    bufs.push((2, false, d.clone(), Some(OpenError::BadTag)));
    // Master with one flipped ciphertext bit.
    d = MasterDatagram::seal(&keys[3], &iv(4), &frame(14))
        .0
        .to_vec();
    d[20] ^= 0x10;
    bufs.push((3, true, d, Some(OpenError::BadTag)));
    // Master with the clear pid changed (the AAD).
    d = MasterDatagram::seal(&keys[4], &iv(5), &frame(15))
        .0
        .to_vec();
    d[0] ^= 1;
    bufs.push((4, true, d, Some(OpenError::BadTag)));
    // Wrong lengths for the layout.
    bufs.push((
        5,
        false,
        vec![0u8; MASTER_LEN],
        Some(OpenError::BadLength { len: MASTER_LEN }),
    ));
    bufs.push((
        5,
        true,
        vec![0u8; SHARED_LEN],
        Some(OpenError::BadLength { len: SHARED_LEN }),
    ));
    bufs.push((5, true, Vec::new(), Some(OpenError::BadLength { len: 0 })));
    // Authentic, but the frame has pid 0.
    let mut raw = Raw::valid();
    raw.pid = 0;
    d = crate_seal(&keys[6], &iv(6), &[], &raw.bytes()).to_vec();
    bufs.push((6, false, d, Some(OpenError::Frame(DecodeError::BadPid(0)))));
    // Authentic, frame of pid 42 sealed under the AAD of pid 43.
    let mut m = 43u32.to_le_bytes().to_vec();
    m.extend_from_slice(&crate_seal(
        &keys[7],
        &iv(7),
        &43u32.to_le_bytes(),
        &frame(42).emit(),
    ));
    bufs.push((
        7,
        true,
        m,
        Some(OpenError::PidMismatch {
            outer: 43,
            inner: 42,
        }),
    ));
    // Shared, valid, key 7 (a key seen twice in one batch).
    bufs.push((
        7,
        false,
        SharedDatagram::seal(&keys[7], &iv(8), &frame(18))
            .0
            .to_vec(),
        ok,
    ));

    for backend in backends() {
        for rot in 0..bufs.len() {
            let mut order: Vec<_> = bufs.iter().collect();
            order.rotate_left(rot);
            let jobs: Vec<Job<'_>> = order
                .iter()
                .map(|(k, master, b, _)| {
                    if *master {
                        Job::master(&keys[*k], b)
                    } else {
                        Job::shared(&keys[*k], b)
                    }
                })
                .collect();
            let out = check(backend, &jobs);
            for ((_, _, _, want), got) in order.iter().zip(&out) {
                match want {
                    None => assert!(got.is_ok(), "{}: {got:?}", backend.path()),
                    Some(e) => assert_eq!(got, &Err(*e), "{}", backend.path()),
                }
            }
        }
    }
}

#[test]
fn empty_batch_and_default_entry_point() {
    let k = key(1);
    let d = SharedDatagram::seal(&k, &iv(9), &frame(5));
    let mut out: [Opened; 2] = [Err(OpenError::BadTag); 2];
    open_batch(&[], &mut out);
    assert_eq!(out, [Err(OpenError::BadTag); 2]);
    open_batch(&[Job::shared(&k, &d.0)], &mut out);
    assert_eq!(out[0], Ok((iv(9), frame(5))));
    for backend in backends() {
        check(backend, &[]);
    }
}

#[test]
#[should_panic(expected = "2 results for 3 jobs")]
fn short_result_storage_is_a_caller_error() {
    let k = key(2);
    let d = [0u8; SHARED_LEN];
    let jobs = [Job::shared(&k, &d); 3];
    let mut out: [Opened; 2] = [Err(OpenError::BadTag); 2];
    Backend::portable().open(&jobs, &mut out);
}

/// How one generated datagram is made.
#[derive(Debug, Clone)]
enum Make {
    /// Sealed correctly.
    Valid,
    /// Sealed, then one bit flipped.
    Flip(usize),
    /// Sealed under a different key than the one the job opens with.
    WrongKey,
    /// Random bytes of the right length: a forgery.
    Junk(Vec<u8>),
    /// Any 32 bytes sealed authentically (mostly invalid frames).
    AnyPlain([u8; 32]),
    /// Master layout: a valid frame sealed with another pid's AAD.
    OtherPid(u32),
    /// A length other than the layout's.
    Length(usize),
}

fn make() -> impl Strategy<Value = Make> {
    prop_oneof![
        4 => Just(Make::Valid),
        2 => (0usize..MASTER_LEN * 8).prop_map(Make::Flip),
        1 => Just(Make::WrongKey),
        1 => proptest::collection::vec(any::<u8>(), MASTER_LEN).prop_map(Make::Junk),
        1 => any::<[u8; 32]>().prop_map(Make::AnyPlain),
        1 => any::<u32>().prop_map(Make::OtherPid),
        1 => (0usize..80).prop_map(Make::Length),
    ]
}

#[derive(Debug, Clone)]
struct Spec {
    key: usize,
    master: bool,
    iv: ([u8; 8], u32),
    pid: u32,
    make: Make,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0usize..4,
        any::<bool>(),
        any::<([u8; 8], u32)>(),
        1u32..u32::MAX,
        make(),
    )
        .prop_map(|(key, master, iv, pid, make)| Spec {
            key,
            master,
            iv,
            pid,
            make,
        })
}

fn build(s: &Spec, keys: &[Key]) -> Vec<u8> {
    let iv = Iv {
        random: s.iv.0,
        counter: s.iv.1,
    };
    let key = &keys[s.key];
    let f = Frame::new(Status::Degraded, s.pid, u64::from(s.pid) << 3, 9, s.iv.1).unwrap();
    let seal = |k: &Key| -> Vec<u8> {
        if s.master {
            MasterDatagram::seal(k, &iv, &f).0.to_vec()
        } else {
            SharedDatagram::seal(k, &iv, &f).0.to_vec()
        }
    };
    let len = if s.master { MASTER_LEN } else { SHARED_LEN };
    match &s.make {
        Make::Valid => seal(key),
        Make::Flip(bit) => {
            let mut d = seal(key);
            let bit = bit % (len * 8);
            d[bit / 8] ^= 1 << (bit % 8);
            d
        }
        Make::WrongKey => seal(&keys[(s.key + 1) % keys.len()]),
        Make::Junk(j) => j[..len].to_vec(),
        Make::AnyPlain(p) => {
            if s.master {
                let mut d = s.pid.to_le_bytes().to_vec();
                d.extend_from_slice(&crate_seal(key, &iv, &s.pid.to_le_bytes(), p));
                d
            } else {
                crate_seal(key, &iv, &[], p).to_vec()
            }
        }
        Make::OtherPid(outer) => {
            let mut d = outer.to_le_bytes().to_vec();
            d.extend_from_slice(&crate_seal(key, &iv, &outer.to_le_bytes(), &f.emit()));
            if !s.master {
                d.drain(..4);
            }
            d
        }
        Make::Length(n) => {
            let n = if *n == len { n + 1 } else { *n };
            let mut d = seal(key);
            d.resize(n, 0xA5);
            d
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random batches of every length 0..=16 mixing valid and invalid datagrams, keys and
    /// layouts: on every path, each result equals the single open and the crate's verdict.
    #[test]
    fn batches_equal_single_open_and_the_crate(
        seeds in any::<[u8; 4]>(),
        specs in proptest::collection::vec(spec(), 0..=16),
    ) {
        let keys: Vec<Key> = seeds.iter().map(|&s| key(s)).collect();
        let bufs: Vec<Vec<u8>> = specs.iter().map(|s| build(s, &keys)).collect();
        let jobs: Vec<Job<'_>> = specs
            .iter()
            .zip(&bufs)
            .map(|(s, b)| if s.master { Job::master(&keys[s.key], b) } else { Job::shared(&keys[s.key], b) })
            .collect();
        let mut results = Vec::new();
        for backend in backends() {
            results.push(check(backend, &jobs));
        }
        // All paths agree (each already equals the single open; this names a differing path).
        for r in &results[1..] {
            prop_assert_eq!(r, &results[0]);
        }
    }
}

/// Every batch length 0..=16 with all datagrams valid (so every lane of every group carries a
/// real datagram), then with all of them forged: exact outcomes on every path.
#[test]
fn every_length_all_valid_and_all_forged() {
    let keys: Vec<Key> = (0..16).map(|i| key(i * 3)).collect();
    for n in 0..=16usize {
        let bufs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let pid = 100 + i as u32;
                if i % 3 == 0 {
                    MasterDatagram::seal(&keys[i], &iv(pid), &frame(pid))
                        .0
                        .to_vec()
                } else {
                    SharedDatagram::seal(&keys[i], &iv(pid), &frame(pid))
                        .0
                        .to_vec()
                }
            })
            .collect();
        let jobs: Vec<Job<'_>> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if i % 3 == 0 {
                    Job::master(&keys[i], b)
                } else {
                    Job::shared(&keys[i], b)
                }
            })
            .collect();
        let forged: Vec<Vec<u8>> = bufs
            .iter()
            .map(|b| {
                let mut b = b.clone();
                let last = b.len() - 1;
                b[last] ^= 0x80;
                b
            })
            .collect();
        let forged_jobs: Vec<Job<'_>> = forged
            .iter()
            .zip(&jobs)
            .map(|(b, j)| match j.sealed {
                Sealed::Master(_) => Job::master(j.key, b),
                Sealed::Shared(_) => Job::shared(j.key, b),
            })
            .collect();
        for backend in backends() {
            let out = check(backend, &jobs);
            for (i, o) in out.iter().take(n).enumerate() {
                let pid = 100 + i as u32;
                assert_eq!(
                    o,
                    &Ok((iv(pid), frame(pid))),
                    "{} n={n} i={i}",
                    backend.path()
                );
            }
            let out = check(backend, &forged_jobs);
            assert!(out[..n].iter().all(|o| *o == Err(OpenError::BadTag)));
        }
    }
}
