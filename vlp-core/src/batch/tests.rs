//! The lane kernels against the RFC 8439 vectors, on every path this machine runs, with each
//! vector in every lane position (lanes must not leak into each other).

extern crate std;

use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use super::chacha::{Kernel, Portable, OUT_WORDS};
use super::poly::{Limbs, PolyLanes};

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    s.chunks(2)
        .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn words(b: &[u8]) -> Vec<u32> {
    b.chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// One ChaCha20 block vector: key, block counter, nonce, and the first 32 bytes of the block.
struct BlockVector {
    key: &'static str,
    counter: u32,
    nonce: &'static str,
    first_32: &'static str,
}

const BLOCK_VECTORS: [BlockVector; 6] = [
    // §2.3.2.
    BlockVector {
        key: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        counter: 1,
        nonce: "000000090000004a00000000",
        first_32: "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e",
    },
    // §2.6.2, Poly1305 key generation: block 0 is the one-time key.
    BlockVector {
        key: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        counter: 0,
        nonce: "000000000001020304050607",
        first_32: "8ad5a08b905f81cc815040274ab29471a833b637e3fd0da508dbb8e2fdd1a646",
    },
    // A.1 #1.
    BlockVector {
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        counter: 0,
        nonce: "000000000000000000000000",
        first_32: "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7",
    },
    // A.1 #2.
    BlockVector {
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        counter: 1,
        nonce: "000000000000000000000000",
        first_32: "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed",
    },
    // A.1 #4.
    BlockVector {
        key: "00ff000000000000000000000000000000000000000000000000000000000000",
        counter: 2,
        nonce: "000000000000000000000000",
        first_32: "72d54dfbf12ec44b362692df94137f328fea8da73990265ec1bbbea1ae9af0ca",
    },
    // A.1 #5.
    BlockVector {
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        counter: 0,
        nonce: "000000000000000000000002",
        first_32: "c2c64d378cd536374ae204b9ef933fcd1a8b2288b3dfa49672ab765b54ee27c7",
    },
];

fn state(v: &BlockVector) -> [u32; 16] {
    let k = words(&hex(v.key));
    let n = words(&hex(v.nonce));
    let mut s = [0u32; 16];
    s[..4].copy_from_slice(&super::chacha::SIGMA);
    s[4..12].copy_from_slice(&k);
    s[12] = v.counter;
    s[13..].copy_from_slice(&n);
    s
}

/// Runs `blocks` with each vector in each lane (the other lanes holding the other vectors)
/// and checks every lane's output.
fn check_kernel<const L: usize>(
    name: &str,
    blocks: impl Fn(&[[u32; L]; 16], &mut [[u32; L]; OUT_WORDS]),
) {
    for shift in 0..L {
        let pick = |l: usize| &BLOCK_VECTORS[(l + shift) % BLOCK_VECTORS.len()];
        let states: Vec<[u32; 16]> = (0..L).map(|l| state(pick(l))).collect();
        let input: [[u32; L]; 16] =
            core::array::from_fn(|w| core::array::from_fn(|l| states[l][w]));
        let mut out = [[0u32; L]; OUT_WORDS];
        blocks(&input, &mut out);
        for l in 0..L {
            let got: Vec<u32> = out.iter().map(|w| w[l]).collect();
            assert_eq!(
                got,
                words(&hex(pick(l).first_32)),
                "{name}: lane {l}, vector {}",
                (l + shift) % BLOCK_VECTORS.len()
            );
        }
    }
}

#[test]
fn portable_kernel_rfc8439_blocks() {
    check_kernel::<1>("portable x1", <Portable as Kernel<1>>::blocks);
    check_kernel::<2>("portable x2", <Portable as Kernel<2>>::blocks);
    check_kernel::<8>("portable x8", <Portable as Kernel<8>>::blocks);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn sse2_kernel_rfc8439_blocks() {
    check_kernel::<4>("sse2", super::x86::blocks_sse2);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_kernel_rfc8439_blocks() {
    let Some(cpu) = super::x86::Avx2::detect() else {
        std::eprintln!("this CPU has no AVX2: the AVX2 kernel is not run here");
        return;
    };
    check_kernel::<8>("avx2", |i, o| super::x86::blocks_avx2(cpu, i, o));
}

/// Tags of `D` lanes: lane `l` absorbs `blocks[skip[l]..]` (leading blocks it skips are
/// cleared with `keep`, as a shared-key datagram skips the AAD block).
#[inline(always)]
fn poly_tags<P: Limbs<D>, const D: usize>(
    key: &[[u32; D]; 8],
    blocks: &[[[u32; D]; 4]],
    skip: &[usize; D],
) -> [[u32; D]; 4] {
    let mut p = PolyLanes::<P, D>::new(key);
    for (b, m) in blocks.iter().enumerate() {
        p.block(m);
        p.keep(&core::array::from_fn(|l| {
            if b < skip[l] {
                0
            } else {
                u32::MAX
            }
        }));
    }
    let tags = p.finish();
    p.wipe();
    tags
}

/// One-time keys of `N` lanes, word-major.
type LaneKeys<const N: usize> = [[u32; N]; 8];
/// One message block of `N` lanes, word-major.
type LaneBlock<const N: usize> = [[u32; N]; 4];

/// `poly_tags` on every Poly1305 lane type this machine runs, 4 lanes at a time (the SSE2 type
/// as two pairs, the portable one lane by lane); all must agree, and the result is returned.
fn poly_tags_every_path(
    key: &[[u32; 4]; 8],
    blocks: &[[[u32; 4]; 4]],
    skip: &[usize; 4],
) -> [[u32; 4]; 4] {
    // Lanes `lanes` of the 4-lane inputs, as a `N`-lane problem.
    fn narrow<const N: usize>(
        key: &[[u32; 4]; 8],
        blocks: &[[[u32; 4]; 4]],
        skip: &[usize; 4],
        first: usize,
    ) -> (LaneKeys<N>, Vec<LaneBlock<N>>, [usize; N]) {
        let pick = |w: &[u32; 4]| -> [u32; N] { core::array::from_fn(|l| w[first + l]) };
        (
            key.map(|w| pick(&w)),
            blocks.iter().map(|b| b.map(|w| pick(&w))).collect(),
            core::array::from_fn(|l| skip[first + l]),
        )
    }
    let mut portable = [[0u32; 4]; 4];
    for first in 0..4 {
        let (k, b, s) = narrow::<1>(key, blocks, skip, first);
        let t = poly_tags::<u64, 1>(&k, &b, &s);
        for (row, t) in portable.iter_mut().zip(&t) {
            row[first] = t[0];
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut sse2 = [[0u32; 4]; 4];
        for first in [0, 2] {
            let (k, b, s) = narrow::<2>(key, blocks, skip, first);
            let t = poly_tags::<super::x86::Sse2Limbs, 2>(&k, &b, &s);
            for (row, t) in sse2.iter_mut().zip(&t) {
                row[first..first + 2].copy_from_slice(t);
            }
        }
        assert_eq!(
            sse2, portable,
            "sse2 Poly1305 lanes differ from the portable ones"
        );
        if super::x86::Avx2::detect().is_some() {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(
                key: &[[u32; 4]; 8],
                blocks: &[[[u32; 4]; 4]],
                skip: &[usize; 4],
            ) -> [[u32; 4]; 4] {
                poly_tags::<super::x86::Avx2Limbs, 4>(key, blocks, skip)
            }
            // SAFETY: the CPU reported AVX2.
            let t = unsafe { avx2(key, blocks, skip) };
            assert_eq!(
                t, portable,
                "avx2 Poly1305 lanes differ from the portable ones"
            );
        }
    }
    portable
}

/// RFC 8439 A.3 Poly1305 vectors whose messages are whole 16-byte blocks (#1, #5..#11),
/// several at once in the lanes, in every lane position, on every lane type.
#[test]
fn poly_lanes_rfc8439_vectors() {
    // (key r || s, message, tag)
    let ones = "ffffffffffffffffffffffffffffffff";
    let vectors: [(String, String, &str); 8] = [
        (
            "00".repeat(32),
            "00".repeat(64),
            "00000000000000000000000000000000",
        ),
        (
            format!("02{}", "00".repeat(31)),
            ones.into(),
            "03000000000000000000000000000000",
        ),
        (
            format!("02{}{}", "00".repeat(15), ones),
            format!("02{}", "00".repeat(15)),
            "03000000000000000000000000000000",
        ),
        (
            format!("01{}", "00".repeat(31)),
            format!("{ones}f0ffffffffffffffffffffffffffffff11{}", "00".repeat(15)),
            "05000000000000000000000000000000",
        ),
        (
            format!("01{}", "00".repeat(31)),
            format!("{ones}fbfefefefefefefefefefefefefefefe{}", "01".repeat(16)),
            "00000000000000000000000000000000",
        ),
        (
            format!("02{}", "00".repeat(31)),
            "fdffffffffffffffffffffffffffffff".into(),
            "faffffffffffffffffffffffffffffff",
        ),
        (
            format!("0100000000000000040000000000000000{}", "00".repeat(15)),
            "e33594d7505e43b900000000000000003394d7505e4379cd01000000000000000000000000000000000000000000000001000000000000000000000000000000".into(),
            "14000000000000005500000000000000",
        ),
        (
            format!("0100000000000000040000000000000000{}", "00".repeat(15)),
            "e33594d7505e43b900000000000000003394d7505e4379cd010000000000000000000000000000000000000000000000".into(),
            "13000000000000000000000000000000",
        ),
    ];
    const D: usize = 4;
    for shift in 0..vectors.len() {
        let pick = |l: usize| &vectors[(l + shift) % vectors.len()];
        let keys: Vec<Vec<u32>> = (0..D).map(|l| words(&hex(&pick(l).0))).collect();
        let msgs: Vec<Vec<u32>> = (0..D).map(|l| words(&hex(&pick(l).1))).collect();
        let key: [[u32; D]; 8] = core::array::from_fn(|w| core::array::from_fn(|l| keys[l][w]));
        // Shorter messages are right-aligned: their lanes skip the leading blocks.
        let n = msgs.iter().map(|m| m.len() / 4).max().unwrap();
        let skip: [usize; D] = core::array::from_fn(|l| n - msgs[l].len() / 4);
        let blocks: Vec<[[u32; D]; 4]> = (0..n)
            .map(|b| {
                core::array::from_fn(|i| {
                    core::array::from_fn(|l| {
                        if b < skip[l] {
                            0
                        } else {
                            msgs[l][4 * (b - skip[l]) + i]
                        }
                    })
                })
            })
            .collect();
        let tags = poly_tags_every_path(&key, &blocks, &skip);
        for l in 0..D {
            let got: Vec<u32> = tags.iter().map(|t| t[l]).collect();
            assert_eq!(
                got,
                words(&hex(pick(l).2)),
                "lane {l} vector {}",
                (l + shift) % vectors.len()
            );
        }
    }
}

fn poly_crate(key: &[u32; 8], blocks: &[[u32; 4]]) -> [u32; 4] {
    use poly1305::universal_hash::KeyInit as _;
    let kb: Vec<u8> = key.iter().flat_map(|w| w.to_le_bytes()).collect();
    let msg: Vec<u8> = blocks
        .iter()
        .flatten()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let tag = poly1305::Poly1305::new(poly1305::Key::from_slice(&kb)).compute_unpadded(&msg);
    core::array::from_fn(|i| u32::from_le_bytes(tag[4 * i..4 * i + 4].try_into().unwrap()))
}

/// Limb values where carries and the final reduction are most likely to go wrong.
fn edge_word() -> impl proptest::strategy::Strategy<Value = u32> {
    use proptest::prelude::*;
    prop_oneof![
        Just(0),
        Just(1),
        Just(2),
        Just(5),
        Just(0x03ff_ffff),
        Just(0x0400_0000),
        Just(0xffff_fffa),
        Just(0xffff_fffb),
        Just(0xffff_fffe),
        Just(u32::MAX),
        Just(0x0fff_ffff),
        any::<u32>(),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Four lanes of edge-valued keys and messages (h driven near 2^130 - 5, extreme r and
    /// s): each lane's tag equals the `poly1305` crate's.
    #[test]
    fn poly_lanes_equal_the_crate(
        keys in proptest::array::uniform4(proptest::array::uniform8(edge_word())),
        blocks in proptest::collection::vec(
            proptest::array::uniform4(proptest::array::uniform4(edge_word())), 0..6),
    ) {
        const D: usize = 4;
        let key: [[u32; D]; 8] = core::array::from_fn(|w| core::array::from_fn(|l| keys[l][w]));
        let lanes: Vec<[[u32; D]; 4]> = blocks
            .iter()
            .map(|b| core::array::from_fn(|i| core::array::from_fn(|l| b[l][i])))
            .collect();
        let tags = poly_tags_every_path(&key, &lanes, &[0; D]);
        for l in 0..D {
            let lane_blocks: Vec<[u32; 4]> = blocks.iter().map(|b| b[l]).collect();
            let got: [u32; 4] = core::array::from_fn(|i| tags[i][l]);
            proptest::prop_assert_eq!(got, poly_crate(&keys[l], &lane_blocks), "lane {}", l);
        }
    }
}

/// Sweeps h onto, just below and just above 2^130 - 5 (small r, runs of near-all-ones
/// blocks), which random inputs practically never reach.
#[test]
fn poly_lanes_reduction_edges_equal_the_crate() {
    for r0 in 1..=5u32 {
        for s in [0, u32::MAX] {
            let key = [r0, 0, 0, 0, s, s, s, s];
            for fill in [u32::MAX, u32::MAX - 1, u32::MAX - 4, u32::MAX - 5, 0] {
                for n in 1..=4 {
                    for last in [fill, 0, 3] {
                        let mut blocks = vec![[fill; 4]; n];
                        blocks[n - 1][0] = last;
                        let lanes: [[u32; 4]; 8] = key.map(|w| [w; 4]);
                        let m: Vec<[[u32; 4]; 4]> =
                            blocks.iter().map(|b| b.map(|w| [w; 4])).collect();
                        let got: [u32; 4] = poly_tags_every_path(&lanes, &m, &[0; 4]).map(|w| w[0]);
                        assert_eq!(got, poly_crate(&key, &blocks), "key {key:x?} {blocks:x?}");
                    }
                }
            }
        }
    }
}
