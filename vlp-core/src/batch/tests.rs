//! The lane kernels against the RFC 8439 vectors, on every path this machine runs, with each
//! vector in every lane position (lanes must not leak into each other).

extern crate std;

use std::format;
use std::string::String;
use std::vec::Vec;

use super::chacha::{Kernel, Portable, OUT_WORDS};
use super::poly::PolyLanes;

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

/// RFC 8439 A.3 Poly1305 vectors whose messages are whole 16-byte blocks (#1, #5..#11),
/// several at once in the lanes, in every lane position.
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
        let mut p = PolyLanes::<D>::new(&key);
        // Lanes with shorter messages sit out the leading blocks (`keep` at zero), as a
        // shared-key datagram sits out the AAD block.
        let blocks = msgs.iter().map(|m| m.len() / 4).max().unwrap();
        for b in 0..blocks {
            let m: [[u32; D]; 4] = core::array::from_fn(|i| {
                core::array::from_fn(|l| {
                    let skip = blocks - msgs[l].len() / 4;
                    if b < skip {
                        0
                    } else {
                        msgs[l][4 * (b - skip) + i]
                    }
                })
            });
            p.block(&m);
            p.keep(&core::array::from_fn(|l| {
                if b < blocks - msgs[l].len() / 4 {
                    0
                } else {
                    u32::MAX
                }
            }));
        }
        let tags = p.finish();
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
