//! The secure envelope (VLP v0.2 §3): golden layout against an independent reference sealer,
//! one test per `OpenError` variant, the order of the checks, and properties (round trip, no
//! panic on any input, no single flipped bit ever opens).

mod common;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use common::{ref_crc32c, Raw};
use proptest::prelude::*;
use vlp_core::envelope::{KEY_LEN, MASTER_LEN, SHARED_LEN};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{
    DecodeError, Frame, Iv, Key, KeyError, MasterDatagram, OpenError, SharedDatagram, Status,
};

fn key() -> Key {
    Key::from_bytes(core::array::from_fn(|i| (i as u8).wrapping_mul(7)))
}

fn iv() -> Iv {
    Iv {
        random: *b"\x11\x22\x33\x44\x55\x66\x77\x88",
        counter: 0x0102_0304,
    }
}

fn frame(pid: u32) -> Frame {
    Frame::new(Status::Degraded, pid, 12_345, 6, 0xABCD).unwrap()
}

/// Seals any 32 bytes (valid frame or not) with the `chacha20poly1305` crate directly, laid out
/// from the tables of §3: the reference the crate's sealing is compared against, and the way to
/// produce authentic datagrams that carry invalid frames.
fn ref_seal(key: &[u8; KEY_LEN], iv: &Iv, aad: &[u8], plain: &[u8; 32]) -> [u8; SHARED_LEN] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&iv.random);
    nonce[8..].copy_from_slice(&iv.counter.to_le_bytes());
    let mut body = *plain;
    let tag = ChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(&nonce.into(), aad, &mut body)
        .unwrap();
    let mut out = [0u8; SHARED_LEN];
    out[..12].copy_from_slice(&nonce);
    out[12..44].copy_from_slice(&body);
    out[44..].copy_from_slice(&tag);
    out
}

fn ref_seal_master(key: &[u8; KEY_LEN], iv: &Iv, pid: u32, plain: &[u8; 32]) -> [u8; MASTER_LEN] {
    let mut out = [0u8; MASTER_LEN];
    out[..4].copy_from_slice(&pid.to_le_bytes());
    out[4..].copy_from_slice(&ref_seal(key, iv, &pid.to_le_bytes(), plain));
    out
}

// ---------------------------------------------------------------------------------------------
// Golden layout.

#[test]
fn shared_layout_matches_reference() {
    let f = frame(4242);
    let d = SharedDatagram::seal(&key(), &iv(), &f);
    assert_eq!(d.0, ref_seal(key().as_bytes(), &iv(), &[], &f.emit()));
    assert_eq!(&d.0[0..8], &iv().random);
    assert_eq!(&d.0[8..12], &[0x04, 0x03, 0x02, 0x01], "counter is LE");
    assert_ne!(&d.0[12..44], &f.emit(), "body is encrypted");
    assert_eq!(d.iv(), iv());
    assert_eq!(
        iv().nonce(),
        *b"\x11\x22\x33\x44\x55\x66\x77\x88\x04\x03\x02\x01"
    );
}

#[test]
fn master_layout_matches_reference() {
    let f = frame(0x0A0B_0C0D);
    let d = MasterDatagram::seal(&key(), &iv(), &f);
    assert_eq!(
        d.0,
        ref_seal_master(key().as_bytes(), &iv(), 0x0A0B_0C0D, &f.emit())
    );
    assert_eq!(
        &d.0[0..4],
        &[0x0D, 0x0C, 0x0B, 0x0A],
        "pid in the clear, LE"
    );
    assert_eq!(&d.0[4..12], &iv().random);
    assert_eq!(&d.0[12..16], &[0x04, 0x03, 0x02, 0x01]);
    assert_eq!(d.pid(), 0x0A0B_0C0D);
    assert_eq!(d.iv(), iv());
    // The pid is bound as AAD: the same frame sealed without it differs in the tag only.
    let plain = SharedDatagram::seal(&key(), &iv(), &f);
    assert_eq!(&d.0[4..48], &plain.0[..44]);
    assert_ne!(&d.0[48..], &plain.0[44..]);
}

#[test]
fn open_round_trip_and_from_bytes() {
    let f = frame(77);
    let d = SharedDatagram::seal(&key(), &iv(), &f);
    let d2 = SharedDatagram::from_bytes(&d.0).unwrap();
    assert_eq!(d2, d);
    assert_eq!(d2.open(&key()), Ok((iv(), f)));
    let m = MasterDatagram::seal(&key(), &iv(), &f);
    let m2 = MasterDatagram::from_bytes(&m.0).unwrap();
    assert_eq!(m2.open(&key()), Ok((iv(), f)));
}

// ---------------------------------------------------------------------------------------------
// One test per OpenError variant.

#[test]
fn open_error_bad_length() {
    let d = SharedDatagram::seal(&key(), &iv(), &frame(5));
    for len in (0..=130).filter(|&l| l != SHARED_LEN) {
        let mut v = d.0.to_vec();
        v.resize(len, 0);
        assert_eq!(
            SharedDatagram::from_bytes(&v),
            Err(OpenError::BadLength { len })
        );
    }
    let m = MasterDatagram::seal(&key(), &iv(), &frame(5));
    for len in (0..=130).filter(|&l| l != MASTER_LEN) {
        let mut v = m.0.to_vec();
        v.resize(len, 0);
        assert_eq!(
            MasterDatagram::from_bytes(&v),
            Err(OpenError::BadLength { len })
        );
    }
}

#[test]
fn open_error_bad_tag_wrong_key() {
    let f = frame(5);
    let wrong = Key::from_bytes([0x42; 32]);
    assert_eq!(
        SharedDatagram::seal(&key(), &iv(), &f).open(&wrong),
        Err(OpenError::BadTag)
    );
    assert_eq!(
        MasterDatagram::seal(&key(), &iv(), &f).open(&wrong),
        Err(OpenError::BadTag)
    );
    // Master datagrams: the agent key of another pid does not open it.
    let master = key();
    let d = MasterDatagram::seal(&derive_agent_key(&master, 5), &iv(), &f);
    assert_eq!(d.open(&derive_agent_key(&master, 5)), Ok((iv(), f)));
    assert_eq!(
        d.open(&derive_agent_key(&master, 6)),
        Err(OpenError::BadTag)
    );
    assert_eq!(d.open(&master), Err(OpenError::BadTag));
}

#[test]
fn open_error_bad_tag_wrong_iv_or_swapped_parts() {
    let f = frame(5);
    let a = SharedDatagram::seal(&key(), &iv(), &f);
    let b = SharedDatagram::seal(
        &key(),
        &Iv {
            counter: iv().counter + 1,
            ..iv()
        },
        &f,
    );
    // The ciphertext and tag of one IV under the clear IV of another.
    let mut mixed = a;
    mixed.0[..12].copy_from_slice(&b.0[..12]);
    assert_eq!(mixed.open(&key()), Err(OpenError::BadTag));
    // A tag taken from another datagram.
    let mut mixed = a;
    mixed.0[44..].copy_from_slice(&b.0[44..]);
    assert_eq!(mixed.open(&key()), Err(OpenError::BadTag));
    // All zeros.
    assert_eq!(
        SharedDatagram([0; SHARED_LEN]).open(&key()),
        Err(OpenError::BadTag)
    );
    assert_eq!(
        MasterDatagram([0; MASTER_LEN]).open(&key()),
        Err(OpenError::BadTag)
    );
}

/// Every decode error, sealed with a valid tag, surfaces as `OpenError::Frame(that error)`.
#[test]
fn open_error_frame_for_every_decode_error() {
    let cases: Vec<([u8; 32], DecodeError)> = {
        let mut v = Vec::new();
        let r = Raw::valid();
        v.push((Raw { magic: *b"XA", ..r }.bytes(), DecodeError::BadMagic));
        v.push((Raw { version: 1, ..r }.bytes(), DecodeError::BadVersion));
        let mut bad_crc = r.bytes();
        bad_crc[31] ^= 0x80;
        let computed = ref_crc32c(&bad_crc[..28]);
        v.push((
            bad_crc,
            DecodeError::BadCrc {
                expected: computed,
                actual: computed ^ 0x8000_0000,
            },
        ));
        v.push((Raw { status: 7, ..r }.bytes(), DecodeError::BadStatus(7)));
        v.push((Raw { status: 3, ..r }.bytes(), DecodeError::StallOnWire));
        v.push((Raw { pid: 1, ..r }.bytes(), DecodeError::BadPid(1)));
        v.push((
            Raw {
                timestamp: u64::MAX,
                ..r
            }
            .bytes(),
            DecodeError::BadTimestamp(u64::MAX),
        ));
        v.push((
            Raw {
                nonce: u64::MAX,
                ..r
            }
            .bytes(),
            DecodeError::BadNonce {
                nonce: u64::MAX,
                status: Status::Ok,
            },
        ));
        v
    };
    for (plain, err) in cases {
        assert_eq!(Frame::parse(&plain), Err(err), "fixture");
        let d = SharedDatagram(ref_seal(key().as_bytes(), &iv(), &[], &plain));
        assert_eq!(d.open(&key()), Err(OpenError::Frame(err)), "shared {err:?}");
        let pid = u32::from_le_bytes(plain[4..8].try_into().unwrap());
        let m = MasterDatagram(ref_seal_master(key().as_bytes(), &iv(), pid, &plain));
        assert_eq!(m.open(&key()), Err(OpenError::Frame(err)), "master {err:?}");
    }
}

#[test]
fn open_error_pid_mismatch() {
    let f = frame(42);
    // An authentic datagram (AAD = the clear pid 43) carrying a frame of pid 42.
    let m = MasterDatagram(ref_seal_master(key().as_bytes(), &iv(), 43, &f.emit()));
    assert_eq!(
        m.open(&key()),
        Err(OpenError::PidMismatch {
            outer: 43,
            inner: 42
        })
    );
    // Just rewriting the clear pid of a genuine datagram breaks the tag instead.
    let mut m = MasterDatagram::seal(&key(), &iv(), &f);
    m.0[..4].copy_from_slice(&43u32.to_le_bytes());
    assert_eq!(m.open(&key()), Err(OpenError::BadTag));
}

#[test]
fn open_check_order() {
    // The tag comes first: an invalid frame or a pid mismatch behind a bad tag is BadTag.
    let invalid = Raw {
        pid: 0,
        ..Raw::valid()
    }
    .bytes();
    let mut d = SharedDatagram(ref_seal(key().as_bytes(), &iv(), &[], &invalid));
    d.0[50] ^= 1;
    assert_eq!(d.open(&key()), Err(OpenError::BadTag));
    let mut m = MasterDatagram(ref_seal_master(
        key().as_bytes(),
        &iv(),
        43,
        &frame(42).emit(),
    ));
    m.0[60] ^= 1;
    assert_eq!(m.open(&key()), Err(OpenError::BadTag));
    // The frame comes before the pid comparison: an invalid frame under a mismatching clear
    // pid reports the frame's rule.
    let m = MasterDatagram(ref_seal_master(key().as_bytes(), &iv(), 43, &invalid));
    assert_eq!(
        m.open(&key()),
        Err(OpenError::Frame(DecodeError::BadPid(0)))
    );
}

#[test]
fn open_error_kinds_and_display() {
    assert_eq!(OpenError::BadLength { len: 3 }.kind(), "bad_length");
    assert_eq!(OpenError::BadTag.kind(), "bad_tag");
    assert_eq!(
        OpenError::Frame(DecodeError::StallOnWire).kind(),
        "stall_on_wire"
    );
    assert_eq!(
        OpenError::PidMismatch { outer: 1, inner: 2 }.kind(),
        "pid_mismatch"
    );
    let s = OpenError::BadLength { len: 3 }.to_string();
    assert!(
        s.contains('3') && s.contains("60") && s.contains("64"),
        "{s}"
    );
    let s = OpenError::PidMismatch {
        outer: 43,
        inner: 42,
    }
    .to_string();
    assert!(s.contains("43") && s.contains("42"), "{s}");
    let s = OpenError::Frame(DecodeError::BadPid(1)).to_string();
    assert!(s.contains("pid 1"), "{s}");
}

#[test]
fn key_parsing_and_redaction() {
    let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let k = Key::from_hex(hex).unwrap();
    assert_eq!(
        k.as_bytes(),
        &core::array::from_fn::<u8, 32, _>(|i| i as u8)
    );
    assert_eq!(Key::from_hex(&hex.to_uppercase()).unwrap(), k);
    assert_eq!(Key::from_hex(&format!("  {hex}\n")).unwrap(), k);
    assert_eq!(Key::from_hex(""), Err(KeyError::BadLength { len: 0 }));
    assert_eq!(
        Key::from_hex(&hex[..63]),
        Err(KeyError::BadLength { len: 63 })
    );
    assert_eq!(
        Key::from_hex(&format!("{hex}0")),
        Err(KeyError::BadLength { len: 65 })
    );
    let mut bad = hex.to_owned();
    bad.replace_range(63..64, "x");
    assert_eq!(
        Key::from_hex(&bad),
        Err(KeyError::BadHexDigit { index: 63 })
    );
    // Multi-byte UTF-8 of the right byte length is not hex.
    let mut utf = "é".to_owned();
    utf.push_str(&hex[2..]);
    assert_eq!(Key::from_hex(&utf), Err(KeyError::BadHexDigit { index: 0 }));
    assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    assert!(!format!("{k:?}").contains("0102"));
    assert_ne!(k, Key::from_bytes([0; 32]));
}

// ---------------------------------------------------------------------------------------------
// Properties.

fn any_frame() -> impl Strategy<Value = Frame> {
    (0u8..=2, 2u32.., 0u64..u64::MAX, any::<u64>(), any::<u32>()).prop_map(
        |(s, pid, ts, nonce, payload)| {
            let status = Status::from_u8(s).unwrap();
            let nonce = if status == Status::Critical || nonce != u64::MAX {
                nonce
            } else {
                0
            };
            Frame::new(status, pid, ts, nonce, payload).unwrap()
        },
    )
}

fn any_iv() -> impl Strategy<Value = Iv> {
    (any::<[u8; 8]>(), any::<u32>()).prop_map(|(random, counter)| Iv { random, counter })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn seal_open_round_trip(k in any::<[u8; 32]>(), iv in any_iv(), f in any_frame()) {
        let key = Key::from_bytes(k);
        let d = SharedDatagram::seal(&key, &iv, &f);
        prop_assert_eq!(d.0, ref_seal(&k, &iv, &[], &f.emit()));
        prop_assert_eq!(d.open(&key), Ok((iv, f)));
        let m = MasterDatagram::seal(&key, &iv, &f);
        prop_assert_eq!(m.0, ref_seal_master(&k, &iv, f.pid(), &f.emit()));
        prop_assert_eq!(m.open(&key), Ok((iv, f)));
    }

    /// Bytes of any length never panic in from_bytes + open, and random bytes never open.
    #[test]
    fn arbitrary_bytes_never_panic_nor_open(bytes in proptest::collection::vec(any::<u8>(), 0..140)) {
        let key = key();
        match SharedDatagram::from_bytes(&bytes) {
            Ok(d) => {
                prop_assert_eq!(bytes.len(), SHARED_LEN);
                prop_assert_eq!(&d.iv().random[..], &bytes[..8]);
                prop_assert_eq!(d.open(&key), Err(OpenError::BadTag));
            }
            Err(e) => prop_assert_eq!(e, OpenError::BadLength { len: bytes.len() }),
        }
        match MasterDatagram::from_bytes(&bytes) {
            Ok(d) => {
                prop_assert_eq!(bytes.len(), MASTER_LEN);
                prop_assert_eq!(&d.pid().to_le_bytes()[..], &bytes[..4]);
                prop_assert_eq!(d.open(&key), Err(OpenError::BadTag));
            }
            Err(e) => prop_assert_eq!(e, OpenError::BadLength { len: bytes.len() }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every single-bit flip of a sealed datagram, at every position, is refused with BadTag.
    /// (992 opens per case; 64 cases keep the debug-build run to a few seconds.)
    #[test]
    fn no_single_bit_flip_opens(k in any::<[u8; 32]>(), iv in any_iv(), f in any_frame()) {
        let key = Key::from_bytes(k);
        let d = SharedDatagram::seal(&key, &iv, &f);
        for bit in 0..SHARED_LEN * 8 {
            let mut x = d;
            x.0[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(x.open(&key), Err(OpenError::BadTag), "shared bit {}", bit);
        }
        let m = MasterDatagram::seal(&key, &iv, &f);
        for bit in 0..MASTER_LEN * 8 {
            let mut x = m;
            x.0[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(x.open(&key), Err(OpenError::BadTag), "master bit {}", bit);
        }
    }
}
