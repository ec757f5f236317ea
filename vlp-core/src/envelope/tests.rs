extern crate std;

use std::vec;
use std::vec::Vec;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use proptest::prelude::*;

use super::*;
use crate::wire::Status;

/// The reference: the `chacha20poly1305` crate, sealing any 32 bytes in a shared layout.
fn crate_seal(key: &[u8; 32], iv: &Iv, aad: &[u8], plain: &[u8; 32]) -> [u8; SHARED_LEN] {
    let mut out = [0u8; SHARED_LEN];
    out[..12].copy_from_slice(&iv.nonce());
    let mut body = *plain;
    let tag = ChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(&iv.nonce().into(), aad, &mut body)
        .unwrap();
    out[12..44].copy_from_slice(&body);
    out[44..].copy_from_slice(&tag);
    out
}

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    s.chunks(2)
        .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// The general RFC 8439 §2.8 AEAD (any lengths) assembled from the same primitives the
/// envelope uses, so the RFC's own AEAD vector can check them.
fn general_seal(key: &Key, iv: &Iv, aad: &[u8], plain: &[u8]) -> (Vec<u8>, [u8; 16]) {
    let mut state = chacha20_state(key, iv);
    let block0 = chacha20_rounds(&state);
    let mut ct = Vec::new();
    for (n, chunk) in plain.chunks(64).enumerate() {
        set_block_counter(&mut state, n as u32 + 1);
        let ks = chacha20_rounds(&state);
        for (j, b) in chunk.iter().enumerate() {
            let w = block_word(&ks, &state, j / 4);
            ct.push(b ^ w.to_le_bytes()[j % 4]);
        }
    }
    set_block_counter(&mut state, 0);
    let otk: [u32; 8] = core::array::from_fn(|i| block_word(&block0, &state, i));
    let mut p = Poly1305::new(&otk);
    for part in [aad, &ct[..]] {
        for chunk in part.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            p.block(core::array::from_fn(|i| le32(&b, i)));
        }
    }
    p.block([aad.len() as u32, 0, ct.len() as u32, 0]);
    let mut tag = [0u8; 16];
    for (i, w) in p.finish().iter().enumerate() {
        tag[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    (ct, tag)
}

#[test]
fn rfc8439_2_3_2_block_function() {
    let k = Key::from_bytes(core::array::from_fn(|i| i as u8));
    // Nonce 00:00:00:09:00:00:00:4a:00:00:00:00, block counter 1.
    let iv = Iv {
        random: [0, 0, 0, 0x09, 0, 0, 0, 0x4a],
        counter: 0,
    };
    let mut state = chacha20_state(&k, &iv);
    set_block_counter(&mut state, 1);
    let x = chacha20_rounds(&state);
    let mut out = Vec::new();
    for i in 0..16 {
        out.extend_from_slice(&block_word(&x, &state, i).to_le_bytes());
    }
    let expected = hex(
        "10 f1 e7 e4 d1 3b 59 15 50 0f dd 1f a3 20 71 c4 c7 d1 f4 c7 33 c0 68 03 04 22 aa 9a
         c3 d4 6c 4e d2 82 64 46 07 9f aa 09 14 c2 d7 05 d9 8b 02 a2 b5 12 9c d1 de 16 4e b9
         cb d0 83 e8 a2 50 3c 4e",
    );
    assert_eq!(out, expected);
}

#[test]
fn rfc8439_2_8_2_aead() {
    let k = Key::from_bytes(core::array::from_fn(|i| 0x80 + i as u8));
    // Nonce 07:00:00:00:40:41:42:43:44:45:46:47.
    let iv = Iv {
        random: [0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43],
        counter: u32::from_le_bytes([0x44, 0x45, 0x46, 0x47]),
    };
    let aad = hex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7");
    let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
for the future, sunscreen would be it.";
    assert_eq!(plain.len(), 114);
    let (ct, tag) = general_seal(&k, &iv, &aad, plain);
    let expected_ct = hex(
        "d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2 a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7
         36 ee 62 d6 3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b 1a 71 de 0a 9e 06 0b 29
         05 d6 a5 b6 7e cd 3b 36 92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58 fa b3 24 e4
         fa d6 75 94 55 85 80 8b 48 31 d7 bc 3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b
         61 16",
    );
    assert_eq!(ct, expected_ct);
    assert_eq!(
        tag.to_vec(),
        hex("1a e1 0b 59 4f 09 e2 6a 7e 90 2e cb d0 60 06 91")
    );
}

fn any_iv() -> impl Strategy<Value = Iv> {
    (any::<[u8; 8]>(), any::<u32>()).prop_map(|(random, counter)| Iv { random, counter })
}

fn poly1305_ours(key: &[u32; 8], blocks: &[[u32; 4]]) -> Vec<u8> {
    let mut p = Poly1305::new(key);
    for b in blocks {
        p.block(*b);
    }
    p.finish().iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn poly1305_crate(key: &[u32; 8], blocks: &[[u32; 4]]) -> Vec<u8> {
    use poly1305::universal_hash::KeyInit as _;
    let kb: Vec<u8> = key.iter().flat_map(|w| w.to_le_bytes()).collect();
    let msg: Vec<u8> = blocks
        .iter()
        .flatten()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    poly1305::Poly1305::new(poly1305::Key::from_slice(&kb))
        .compute_unpadded(&msg)
        .to_vec()
}

/// The final reduction (h >= 2^130 - 5) and the carries out of every limb, which random
/// inputs practically never reach: small r with runs of near-all-ones blocks drive h to
/// just below, onto and just above the modulus; compared with the crate.
#[test]
fn poly1305_reduction_edges_equal_the_crate() {
    // RFC 8439 A.3 test vector #5: r = 2, s = 0, one block of 0xff bytes: tag 3.
    let mut key = [0u32; 8];
    key[0] = 2;
    let mut tag5 = [0u8; 16];
    tag5[0] = 3;
    assert_eq!(poly1305_ours(&key, &[[u32::MAX; 4]]), tag5);
    let mut at_or_above_p = 0;
    for r0 in 1..=5 {
        for s in [0, u32::MAX] {
            let key = [r0, 0, 0, 0, s, s, s, s];
            for fill in [u32::MAX, u32::MAX - 1, u32::MAX - 4, u32::MAX - 5, 0] {
                for n in 1..=4 {
                    for last in [fill, 0, 3] {
                        let mut blocks = vec![[fill; 4]; n];
                        blocks[n - 1][0] = last;
                        assert_eq!(
                            poly1305_ours(&key, &blocks),
                            poly1305_crate(&key, &blocks),
                            "key {key:x?} blocks {blocks:x?}"
                        );
                        let mut p = Poly1305::new(&key);
                        for b in &blocks {
                            p.block(*b);
                        }
                        let h = p.h;
                        at_or_above_p += usize::from(
                            h[4] > 3
                                || (h[4] == 3 && h[1..4] == [u32::MAX; 3] && h[0] >= 0xffff_fffb),
                        );
                    }
                }
            }
        }
    }
    // The sweep does reach the final subtraction of p.
    assert!(at_or_above_p > 0);
}

/// Limb values where carries and the final reduction are most likely to go wrong.
fn edge_word() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(3),
        Just(4),
        Just(5),
        Just(0xffff_fffa),
        Just(0xffff_fffb),
        Just(0xffff_fffc),
        Just(0xffff_fffe),
        Just(u32::MAX),
        Just(0x0fff_ffff),
        any::<u32>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Our Poly1305 equals the `poly1305` crate's on full-block messages built from edge
    /// limb values (all-ones blocks, h close to 2^130 - 5, extreme r and s).
    #[test]
    fn poly1305_equals_the_crate(
        key in proptest::array::uniform8(edge_word()),
        blocks in proptest::collection::vec(proptest::array::uniform4(edge_word()), 0..9),
    ) {
        let ours = poly1305_ours(&key, &blocks);
        let theirs = poly1305_crate(&key, &blocks);
        prop_assert_eq!(&ours[..], &theirs[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Our specialised seal equals the crate's for any key, nonce, 32 bytes and AAD form,
    /// and our open inverts the crate's seal.
    #[test]
    fn seal_and_open_equal_the_crate(
        k in any::<[u8; 32]>(),
        iv in any_iv(),
        plain in any::<[u8; 32]>(),
        pid in proptest::option::of(any::<u32>()),
    ) {
        let aad = pid.map(u32::to_le_bytes);
        let aad = aad.as_ref().map_or(&[][..], |a| &a[..]);
        let reference = crate_seal(&k, &iv, aad, &plain);
        let mut ours = [0u8; SHARED_LEN];
        ours[..12].copy_from_slice(&iv.nonce());
        ours[12..44].copy_from_slice(&plain);
        own_seal_body(&Key::from_bytes(k), &iv, pid, &mut ours);
        prop_assert_eq!(ours, reference);
        let mut opened = [0u8; FRAME_LEN];
        prop_assert_eq!(own_open_body(&Key::from_bytes(k), pid, &reference, &mut opened), Ok(iv));
        prop_assert_eq!(opened, plain);
    }

    /// On arbitrary datagrams (mostly forgeries, some authentic with one flipped bit) our
    /// open accepts exactly what the crate's decrypt accepts, with the same plaintext.
    #[test]
    fn open_agrees_with_the_crate(
        k in any::<[u8; 32]>(),
        iv in any_iv(),
        plain in any::<[u8; 32]>(),
        flip in proptest::option::of(0usize..SHARED_LEN * 8),
        junk in proptest::option::of(any::<[u8; 48]>()),
    ) {
        let mut d = crate_seal(&k, &iv, &[], &plain);
        if let Some(bit) = flip {
            d[bit / 8] ^= 1 << (bit % 8);
        }
        if let Some(j) = junk {
            d[12..].copy_from_slice(&j);
        }
        let mut body = [0u8; FRAME_LEN];
        body.copy_from_slice(&d[12..44]);
        let nonce: [u8; 12] = d[..12].try_into().unwrap();
        let theirs = ChaCha20Poly1305::new(&k.into())
            .decrypt_in_place_detached(&nonce.into(), &[], &mut body, d[44..].into())
            .map(|()| body);
        let mut opened = [0u8; FRAME_LEN];
        let ours = own_open_body(&Key::from_bytes(k), None, &d, &mut opened).map(|_| opened);
        prop_assert_eq!(ours.ok(), theirs.ok());
    }
}

fn key() -> Key {
    Key::from_bytes(core::array::from_fn(|i| i as u8))
}

#[test]
fn key_hex_errors() {
    assert_eq!(
        Key::from_hex("00").unwrap_err(),
        KeyError::BadLength { len: 2 }
    );
    let mut s = [b'a'; 64];
    s[10] = b'g';
    assert_eq!(
        Key::from_hex(core::str::from_utf8(&s).unwrap()).unwrap_err(),
        KeyError::BadHexDigit { index: 10 }
    );
    let k = Key::from_hex(" 000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F\n")
        .unwrap();
    assert_eq!(k, key());
}

#[test]
fn key_eq_and_tag_match_see_every_bit() {
    let base = [0x5au8; 32];
    assert!(Key::from_bytes(base) == Key::from_bytes(base));
    let tag = [0x0102_0304u32, 0x0506_0708, 0x090a_0b0c, 0x0d0e_0f10];
    let mut bytes = [0u8; TAG_LEN];
    for (i, w) in tag.iter().enumerate() {
        bytes[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    assert!(tag_matches(&bytes, &tag));
    for bit in 0..256 {
        let mut other = base;
        other[bit / 8] ^= 1 << (bit % 8);
        assert!(
            Key::from_bytes(base) != Key::from_bytes(other),
            "key bit {bit}"
        );
    }
    for bit in 0..128 {
        let mut other = bytes;
        other[bit / 8] ^= 1 << (bit % 8);
        assert!(!tag_matches(&other, &tag), "tag bit {bit}");
    }
    assert!(
        !tag_matches(&bytes[..15], &tag),
        "a short tag never matches"
    );
}

#[test]
fn key_debug_redacts() {
    extern crate std;
    let s = std::format!("{:?}", key());
    assert_eq!(s, "Key(<redacted>)");
}

#[test]
fn wrong_key_and_pid_mismatch() {
    let f = Frame::new(Status::Ok, 42, 1, 1, 0).unwrap();
    let iv = Iv {
        random: [7; 8],
        counter: 3,
    };
    let d = SharedDatagram::seal(&key(), &iv, &f);
    assert_eq!(d.open(&key()), Ok((iv, f)));
    assert_eq!(d.open(&Key::from_bytes([9; 32])), Err(OpenError::BadTag));

    let m = MasterDatagram::seal(&key(), &iv, &f);
    assert_eq!(m.pid(), 42);
    assert_eq!(m.open(&key()), Ok((iv, f)));
    // Changing the clear pid changes the AAD: the tag no longer verifies.
    let mut bad = m;
    bad.0[0] = 43;
    assert_eq!(bad.open(&key()), Err(OpenError::BadTag));
    // A frame for pid 42 sealed with the AAD of pid 43 verifies but must be refused.
    let mut forged = [0u8; MASTER_LEN];
    forged[..4].copy_from_slice(&43u32.to_le_bytes());
    let body: &mut [u8; SHARED_LEN] = (&mut forged[4..]).try_into().unwrap();
    seal_frame(&key(), &iv, Some(43), &f, body);
    assert_eq!(
        MasterDatagram(forged).open(&key()),
        Err(OpenError::PidMismatch {
            outer: 43,
            inner: 42
        })
    );
}

#[test]
fn seal_into_overwrites_the_whole_buffer_like_seal() {
    let f = Frame::new(Status::Degraded, 77, 5, 9, 0xFEED).unwrap();
    let iv = Iv {
        random: [3; 8],
        counter: 11,
    };
    let mut shared = [0xAA; SHARED_LEN];
    SharedDatagram::seal_into(&key(), &iv, &f, &mut shared);
    assert_eq!(shared, SharedDatagram::seal(&key(), &iv, &f).0);
    let mut master = [0x55; MASTER_LEN];
    MasterDatagram::seal_into(&key(), &iv, &f, &mut master);
    assert_eq!(master, MasterDatagram::seal(&key(), &iv, &f).0);
    assert_eq!(MasterDatagram(master).open(&key()), Ok((iv, f)));
}

#[test]
fn sealed_invalid_frame_is_frame_error() {
    // Seal bytes that are not a valid frame (pid 0) by hand.
    let iv = Iv {
        random: [1; 8],
        counter: 1,
    };
    let mut body = Frame::new(Status::Ok, 2, 1, 1, 0).unwrap().emit();
    body[4] = 0;
    let crc = crate::crc::crc32c(&body[..28]);
    body[28..].copy_from_slice(&crc.to_le_bytes());
    let out = crate_seal(key().as_bytes(), &iv, &[], &body);
    assert_eq!(
        SharedDatagram(out).open(&key()),
        Err(OpenError::Frame(DecodeError::BadPid(0)))
    );
}
