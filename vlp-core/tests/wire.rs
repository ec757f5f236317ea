//! The plain frame (VLP v0.2 §1–2): golden bytes per field, one test per `DecodeError`
//! variant with its exact fields, the order of the eight rules, and properties (round trip,
//! no panic on any input).

mod common;

use common::{fix_crc, ref_crc32c, stored_crc, Raw};
use proptest::prelude::*;
use vlp_core::crc::{crc32c, crc32c_hw, crc32c_nibble, crc32c_slice8};
use vlp_core::{DecodeError, Frame, Status, FRAME_LEN, GOODBYE_PAYLOAD, NONCE_TERMINAL};

fn frame(status: Status, pid: u32, timestamp: u64, nonce: u64, payload: u32) -> Frame {
    Frame::new(status, pid, timestamp, nonce, payload).expect("valid fields")
}

fn base() -> Frame {
    frame(Status::Ok, 1000, 5, 1, 0)
}

// ---------------------------------------------------------------------------------------------
// Golden bytes, field by field.

/// A frame written out by hand from the table of §1 (not from any vector): every field has a
/// distinct byte pattern so a misplaced or byte-swapped field shows.
#[test]
fn golden_frame_by_hand() {
    let f = frame(
        Status::Degraded,
        0x0403_0201,
        0x0C0B_0A09_0807_0605,
        0x1413_1211_100F_0E0D,
        0x1817_1615,
    );
    let mut want = [
        0x56, 0x41, // magic "VA"
        0x02, // version
        0x01, // status Degraded
        0x01, 0x02, 0x03, 0x04, // pid LE
        0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, // timestamp LE
        0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x12, 0x13, 0x14, // nonce LE
        0x15, 0x16, 0x17, 0x18, // payload LE
        0, 0, 0, 0, // crc, filled below
    ];
    fix_crc(&mut want);
    assert_eq!(f.emit(), want);
    assert_eq!(Frame::parse(&want), Ok(f));
}

/// The smallest valid frame, bytes from the published vector `frame-ok-minimal` (CRC included).
#[test]
fn golden_minimal_frame() {
    let want: [u8; 32] = [
        0x56, 0x41, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe4, 0x11,
        0x6b, 0xaa,
    ];
    assert_eq!(frame(Status::Ok, 2, 0, 1, 0).emit(), want);
    assert_eq!(ref_crc32c(&want[..28]), 0xaa6b_11e4);
}

#[test]
fn golden_magic_and_version() {
    let b = base().emit();
    assert_eq!(&b[0..2], &[0x56, 0x41]);
    assert_eq!(&b[0..2], b"VA");
    assert_eq!(b[2], 0x02);
}

#[test]
fn golden_status_byte() {
    for (s, byte) in [
        (Status::Ok, 0u8),
        (Status::Degraded, 1),
        (Status::Critical, 2),
    ] {
        let b = frame(s, 1000, 5, 1, 0).emit();
        assert_eq!(b[3], byte, "{s}");
        assert_eq!(s.as_u8(), byte);
        assert_eq!(Status::from_u8(byte), Some(s));
    }
    assert_eq!(Status::Stall.as_u8(), 3);
    assert_eq!(Status::from_u8(3), Some(Status::Stall));
    for b in 4..=255u8 {
        assert_eq!(Status::from_u8(b), None);
    }
    assert_eq!(
        [
            Status::Ok,
            Status::Degraded,
            Status::Critical,
            Status::Stall
        ]
        .map(Status::name),
        ["ok", "degraded", "critical", "stall"]
    );
}

/// Changing one field changes exactly that field's bytes (plus the CRC), little-endian.
#[test]
fn golden_each_integer_field_little_endian_in_place() {
    let b0 = base().emit();
    let check = |b: [u8; 32], range: std::ops::Range<usize>, want: &[u8]| {
        assert_eq!(&b[range.clone()], want, "field {range:?}");
        for i in 0..28 {
            if !range.contains(&i) {
                assert_eq!(b[i], b0[i], "byte {i} outside {range:?} changed");
            }
        }
        assert_eq!(stored_crc(&b), ref_crc32c(&b[..28]));
    };
    check(
        frame(Status::Ok, 0xDEAD_BEEF, 5, 1, 0).emit(),
        4..8,
        &[0xEF, 0xBE, 0xAD, 0xDE],
    );
    check(
        frame(Status::Ok, 1000, 0x0123_4567_89AB_CDEF, 1, 0).emit(),
        8..16,
        &[0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01],
    );
    check(
        frame(Status::Ok, 1000, 5, 0xFEDC_BA98_7654_3210, 0).emit(),
        16..24,
        &[0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE],
    );
    check(
        frame(Status::Ok, 1000, 5, 1, 0xCAFE_F00D).emit(),
        24..28,
        &[0x0D, 0xF0, 0xFE, 0xCA],
    );
    // Extremes that are still legal.
    check(
        frame(Status::Ok, u32::MAX, 5, 1, 0).emit(),
        4..8,
        &[0xFF; 4],
    );
    check(
        frame(Status::Ok, 1000, u64::MAX - 1, 1, 0).emit(),
        8..16,
        &[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    );
    check(frame(Status::Ok, 1000, 5, 0, 0).emit(), 16..24, &[0; 8]);
}

#[test]
fn golden_crc_field() {
    let b = base().emit();
    let crc = ref_crc32c(&b[..28]);
    assert_eq!(&b[28..32], &crc.to_le_bytes());
    // The CRC covers exactly bytes 0..28: the published CRC vectors of 32 zero and 32 0xFF bytes.
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
}

#[test]
fn golden_terminal_and_goodbye() {
    let t = Frame::terminal(2, 999, 0).unwrap();
    let b = t.emit();
    assert_eq!(b[3], 2, "terminal is Critical");
    assert_eq!(&b[16..24], &[0xFF; 8]);
    assert!(t.is_terminal() && !t.is_goodbye());
    let g = Frame::goodbye(2, 999).unwrap();
    assert_eq!(&g.emit()[24..28], b"BYE!");
    assert_eq!(g.payload(), GOODBYE_PAYLOAD);
    assert!(g.is_terminal() && g.is_goodbye());
    // A Critical frame with the goodbye payload but a regular nonce is neither.
    let c = frame(Status::Critical, 2, 999, 7, GOODBYE_PAYLOAD);
    assert!(!c.is_terminal() && !c.is_goodbye());
}

#[test]
fn emit_into_and_aliases_agree_with_emit() {
    let f = frame(Status::Critical, 77, 123, 456, 789);
    let mut a = [0xAAu8; FRAME_LEN];
    f.emit_into(&mut a);
    let mut b = [0x55u8; FRAME_LEN];
    f.encode(&mut b);
    assert_eq!(a, f.emit());
    assert_eq!(b, f.emit());
    assert_eq!(Frame::decode(&a), Ok(f));
    assert_eq!(Frame::parse_array(&a), Ok(f));
}

// ---------------------------------------------------------------------------------------------
// One test per DecodeError variant, with its exact fields.

#[test]
fn error_bad_length() {
    let good = base().emit();
    for len in (0..=100).filter(|&l| l != FRAME_LEN) {
        let mut v = good.to_vec();
        v.resize(len, 0);
        assert_eq!(Frame::parse(&v), Err(DecodeError::BadLength { len }));
    }
    // A valid frame with one trailing byte is still refused.
    let mut long = good.to_vec();
    long.push(0);
    assert_eq!(Frame::parse(&long), Err(DecodeError::BadLength { len: 33 }));
    assert_eq!(
        Frame::parse(&good[..31]),
        Err(DecodeError::BadLength { len: 31 })
    );
    assert_eq!(Frame::parse(&[]), Err(DecodeError::BadLength { len: 0 }));
}

#[test]
fn error_bad_magic() {
    for magic in [
        [0x00, 0x41],
        [0x56, 0x00],
        [0x41, 0x56],
        [0xFF, 0xFF],
        *b"va",
    ] {
        let b = Raw {
            magic,
            ..Raw::valid()
        }
        .bytes();
        assert_eq!(Frame::parse(&b), Err(DecodeError::BadMagic), "{magic:02x?}");
    }
}

#[test]
fn error_bad_version() {
    for version in [0x00, 0x01, 0x03, 0x20, 0xFF] {
        let b = Raw {
            version,
            ..Raw::valid()
        }
        .bytes();
        assert_eq!(Frame::parse(&b), Err(DecodeError::BadVersion), "{version}");
    }
}

#[test]
fn error_bad_crc_reports_computed_and_stored() {
    let good = base().emit();
    let computed = ref_crc32c(&good[..28]);

    // A corrupted CRC field: expected is the CRC of the bytes, actual the stored value.
    let mut b = good;
    b[29] ^= 0x10;
    assert_eq!(
        Frame::parse(&b),
        Err(DecodeError::BadCrc {
            expected: computed,
            actual: computed ^ 0x0000_1000,
        })
    );

    // A corrupted body byte: expected is the CRC of the corrupted body, actual the original.
    for i in 3..28 {
        let mut b = good;
        b[i] ^= 0x01;
        assert_eq!(
            Frame::parse(&b),
            Err(DecodeError::BadCrc {
                expected: ref_crc32c(&b[..28]),
                actual: computed,
            }),
            "byte {i}"
        );
    }

    // An all-zero CRC field.
    let mut b = good;
    b[28..].fill(0);
    assert_eq!(
        Frame::parse(&b),
        Err(DecodeError::BadCrc {
            expected: computed,
            actual: 0
        })
    );
}

#[test]
fn error_bad_status_every_byte_above_3() {
    for status in 4..=255u8 {
        let b = Raw {
            status,
            ..Raw::valid()
        }
        .bytes();
        assert_eq!(Frame::parse(&b), Err(DecodeError::BadStatus(status)));
    }
}

#[test]
fn error_stall_on_wire() {
    let b = Raw {
        status: 3,
        ..Raw::valid()
    }
    .bytes();
    assert_eq!(Frame::parse(&b), Err(DecodeError::StallOnWire));
    assert_eq!(
        Frame::new(Status::Stall, 1000, 5, 1, 0),
        Err(DecodeError::StallOnWire)
    );
}

#[test]
fn error_bad_pid_zero_and_one_only() {
    for pid in [0u32, 1] {
        let b = Raw {
            pid,
            ..Raw::valid()
        }
        .bytes();
        assert_eq!(Frame::parse(&b), Err(DecodeError::BadPid(pid)));
        assert_eq!(
            Frame::new(Status::Ok, pid, 5, 1, 0),
            Err(DecodeError::BadPid(pid))
        );
    }
    for pid in [2u32, 3, u32::MAX] {
        let b = Raw {
            pid,
            ..Raw::valid()
        }
        .bytes();
        assert_eq!(Frame::parse(&b).map(|f| f.pid()), Ok(pid));
    }
}

#[test]
fn error_bad_timestamp_only_u64_max() {
    let b = Raw {
        timestamp: u64::MAX,
        ..Raw::valid()
    }
    .bytes();
    assert_eq!(Frame::parse(&b), Err(DecodeError::BadTimestamp(u64::MAX)));
    assert_eq!(
        Frame::new(Status::Ok, 1000, u64::MAX, 1, 0),
        Err(DecodeError::BadTimestamp(u64::MAX))
    );
    let b = Raw {
        timestamp: u64::MAX - 1,
        ..Raw::valid()
    }
    .bytes();
    assert_eq!(Frame::parse(&b).map(|f| f.timestamp()), Ok(u64::MAX - 1));
}

#[test]
fn error_bad_nonce_terminal_without_critical() {
    for (byte, status) in [(0u8, Status::Ok), (1, Status::Degraded)] {
        let b = Raw {
            status: byte,
            nonce: u64::MAX,
            ..Raw::valid()
        }
        .bytes();
        assert_eq!(
            Frame::parse(&b),
            Err(DecodeError::BadNonce {
                nonce: NONCE_TERMINAL,
                status
            })
        );
        assert_eq!(
            Frame::new(status, 1000, 5, NONCE_TERMINAL, 0),
            Err(DecodeError::BadNonce {
                nonce: NONCE_TERMINAL,
                status
            })
        );
    }
    // Legal: terminal with Critical, and nonce 0 (a wrapped counter) with any status.
    let b = Raw {
        status: 2,
        nonce: u64::MAX,
        ..Raw::valid()
    }
    .bytes();
    assert!(Frame::parse(&b).unwrap().is_terminal());
    for status in 0..=2u8 {
        let b = Raw {
            status,
            nonce: 0,
            ..Raw::valid()
        }
        .bytes();
        assert_eq!(Frame::parse(&b).map(|f| f.nonce()), Ok(0));
    }
}

#[test]
fn error_kinds_and_display() {
    let all = [
        DecodeError::BadLength { len: 7 },
        DecodeError::BadMagic,
        DecodeError::BadVersion,
        DecodeError::BadCrc {
            expected: 0x1234_5678,
            actual: 0x9ABC_DEF0,
        },
        DecodeError::BadStatus(9),
        DecodeError::StallOnWire,
        DecodeError::BadPid(1),
        DecodeError::BadTimestamp(u64::MAX),
        DecodeError::BadNonce {
            nonce: u64::MAX,
            status: Status::Degraded,
        },
    ];
    // KINDS lists every kind once, in rule order.
    assert_eq!(all.map(|e| e.kind()), DecodeError::KINDS);
    let text = all.map(|e| e.to_string());
    assert!(
        text[0].contains('7') && text[0].contains("32"),
        "{}",
        text[0]
    );
    assert!(text[3].contains("0x12345678") && text[3].contains("0x9abcdef0"));
    assert!(text[4].contains('9'));
    assert!(text[6].contains('1'));
    assert!(text[8].contains("degraded"));
    #[cfg(feature = "std")]
    {
        let err: &dyn std::error::Error = &all[1];
        assert!(!err.to_string().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Rule order: a frame breaking several rules reports the first.

#[test]
fn rule_order_examples() {
    let all_bad = Raw {
        magic: *b"XX",
        version: 1,
        status: 3,
        pid: 0,
        timestamp: u64::MAX,
        nonce: u64::MAX,
        payload: 0,
    };
    let with_bad_crc = |r: Raw| {
        let mut b = r.bytes();
        b[28] ^= 0xFF;
        b
    };
    // Rules 1, 2, 3, 5, 6, 7, 8 broken: rule 1.
    assert_eq!(
        Frame::parse(&with_bad_crc(all_bad)),
        Err(DecodeError::BadMagic)
    );
    // Rules 1 and 3: rule 1.
    assert_eq!(
        Frame::parse(&with_bad_crc(Raw {
            magic: *b"XX",
            ..Raw::valid()
        })),
        Err(DecodeError::BadMagic)
    );
    // Rules 2, 3, ...: rule 2.
    assert_eq!(
        Frame::parse(&with_bad_crc(Raw {
            magic: *b"VA",
            ..all_bad
        })),
        Err(DecodeError::BadVersion)
    );
    // Rules 3 and 4: rule 3 (the status byte is not trusted before the CRC).
    let b = with_bad_crc(Raw {
        status: 200,
        ..Raw::valid()
    });
    assert!(matches!(Frame::parse(&b), Err(DecodeError::BadCrc { .. })));
    // Rules 4, 6, 7, 8: rule 4.
    let b = Raw {
        status: 4,
        pid: 1,
        timestamp: u64::MAX,
        nonce: u64::MAX,
        ..Raw::valid()
    }
    .bytes();
    assert_eq!(Frame::parse(&b), Err(DecodeError::BadStatus(4)));
    // Rules 5, 6, 7, 8: rule 5.
    let b = Raw {
        status: 3,
        pid: 0,
        timestamp: u64::MAX,
        nonce: u64::MAX,
        ..Raw::valid()
    }
    .bytes();
    assert_eq!(Frame::parse(&b), Err(DecodeError::StallOnWire));
    // Rules 6, 7, 8: rule 6.
    let b = Raw {
        pid: 0,
        timestamp: u64::MAX,
        nonce: u64::MAX,
        ..Raw::valid()
    }
    .bytes();
    assert_eq!(Frame::parse(&b), Err(DecodeError::BadPid(0)));
    // Rules 7, 8: rule 7.
    let b = Raw {
        timestamp: u64::MAX,
        nonce: u64::MAX,
        ..Raw::valid()
    }
    .bytes();
    assert_eq!(Frame::parse(&b), Err(DecodeError::BadTimestamp(u64::MAX)));
}

/// Which rules a generated frame breaks; rules 4 and 5 share the status byte.
#[derive(Debug, Clone, Copy)]
enum StatusCase {
    Valid(u8),
    Above3(u8),
    Stall,
}

fn status_case() -> impl Strategy<Value = StatusCase> {
    prop_oneof![
        (0u8..=2).prop_map(StatusCase::Valid),
        (4u8..=255).prop_map(StatusCase::Above3),
        Just(StatusCase::Stall),
    ]
}

/// The spec's decoder, written independently as the reference: the first broken rule.
fn model_error(r: &Raw, crc_ok: bool, stored: u32, computed: u32) -> Option<DecodeError> {
    if r.magic != *b"VA" {
        return Some(DecodeError::BadMagic);
    }
    if r.version != 2 {
        return Some(DecodeError::BadVersion);
    }
    if !crc_ok {
        return Some(DecodeError::BadCrc {
            expected: computed,
            actual: stored,
        });
    }
    if r.status > 3 {
        return Some(DecodeError::BadStatus(r.status));
    }
    if r.status == 3 {
        return Some(DecodeError::StallOnWire);
    }
    if r.pid <= 1 {
        return Some(DecodeError::BadPid(r.pid));
    }
    if r.timestamp == u64::MAX {
        return Some(DecodeError::BadTimestamp(r.timestamp));
    }
    if r.nonce == u64::MAX && r.status != 2 {
        let status = Status::from_u8(r.status).unwrap();
        return Some(DecodeError::BadNonce {
            nonce: r.nonce,
            status,
        });
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Properties.

fn any_status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        Just(Status::Degraded),
        Just(Status::Critical)
    ]
}

/// Integers that hit the rule boundaries often.
fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0u64),
        Just(1),
        Just(2),
        Just(u64::MAX),
        Just(u64::MAX - 1)
    ]
}

fn edgy_u32() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), Just(0u32), Just(1), Just(2), Just(u32::MAX)]
}

/// Every valid frame (fields drawn with boundary values, filtered through the rules).
fn valid_frame() -> impl Strategy<Value = Frame> {
    (any_status(), edgy_u32(), edgy_u64(), edgy_u64(), edgy_u32())
        .prop_filter_map("fields break a rule", |(s, pid, ts, nonce, payload)| {
            Frame::new(s, pid, ts, nonce, payload).ok()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_emit_round_trip(f in valid_frame()) {
        let b = f.emit();
        prop_assert_eq!(Frame::parse(&b), Ok(f));
        // The accessors return the fields as written, at their offsets.
        prop_assert_eq!(b[3], f.status().as_u8());
        prop_assert_eq!(&b[4..8], &f.pid().to_le_bytes());
        prop_assert_eq!(&b[8..16], &f.timestamp().to_le_bytes());
        prop_assert_eq!(&b[16..24], &f.nonce().to_le_bytes());
        prop_assert_eq!(&b[24..28], &f.payload().to_le_bytes());
        prop_assert_eq!(stored_crc(&b), ref_crc32c(&b[..28]));
    }

    /// Frame::new accepts exactly the field combinations the rules allow.
    #[test]
    fn new_agrees_with_the_model(
        s in 0u8..=3, pid in edgy_u32(), ts in edgy_u64(), nonce in edgy_u64(), payload in any::<u32>()
    ) {
        let r = Raw { status: s, pid, timestamp: ts, nonce, payload, ..Raw::valid() };
        let want = model_error(&r, true, 0, 0);
        let got = Frame::new(Status::from_u8(s).unwrap(), pid, ts, nonce, payload);
        prop_assert_eq!(got.err(), want);
    }

    /// Any combination of broken rules yields exactly the first one, with its fields.
    #[test]
    fn first_broken_rule_wins(
        magic_bad in any::<bool>(),
        magic in any::<[u8; 2]>(),
        version_bad in any::<bool>(),
        version in any::<u8>(),
        crc_bad in any::<bool>(),
        crc_xor in 1u32..,
        status in status_case(),
        pid in edgy_u32(),
        ts in edgy_u64(),
        nonce in edgy_u64(),
        payload in any::<u32>(),
    ) {
        let status = match status {
            StatusCase::Valid(b) | StatusCase::Above3(b) => b,
            StatusCase::Stall => 3,
        };
        let r = Raw {
            magic: if magic_bad && magic != *b"VA" { magic } else { *b"VA" },
            version: if version_bad && version != 2 { version } else { 2 },
            status, pid, timestamp: ts, nonce, payload,
        };
        let mut b = r.bytes();
        let computed = stored_crc(&b);
        if crc_bad {
            b[28..].copy_from_slice(&(computed ^ crc_xor).to_le_bytes());
        }
        let want = model_error(&r, !crc_bad, stored_crc(&b), computed);
        let got = Frame::parse(&b);
        match want {
            Some(e) => prop_assert_eq!(got, Err(e)),
            None => {
                let f = got.expect("model says valid");
                prop_assert_eq!(f.emit(), b);
            }
        }
    }

    /// No input of any length panics, and whatever parses re-emits to the same bytes.
    #[test]
    fn parse_never_panics_any_length(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        match Frame::parse(&bytes) {
            Ok(f) => prop_assert_eq!(&f.emit()[..], &bytes[..]),
            Err(DecodeError::BadLength { len }) => {
                prop_assert_eq!(len, bytes.len());
                prop_assert_ne!(len, FRAME_LEN);
            }
            Err(_) => prop_assert_eq!(bytes.len(), FRAME_LEN),
        }
    }

    /// 32 random bytes with the header and CRC fixed up reach the later rules; still no panic,
    /// and the outcome matches the model.
    #[test]
    fn parse_deep_random_frames(mut b in any::<[u8; 32]>(), fix_header in any::<bool>(), small_status in any::<bool>()) {
        if fix_header {
            b[0..3].copy_from_slice(&[0x56, 0x41, 0x02]);
            if small_status { b[3] &= 0x03; }
            fix_crc(&mut b);
        }
        let r = Raw {
            magic: [b[0], b[1]],
            version: b[2],
            status: b[3],
            pid: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            timestamp: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            nonce: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            payload: u32::from_le_bytes(b[24..28].try_into().unwrap()),
        };
        let computed = ref_crc32c(&b[..28]);
        let want = model_error(&r, computed == stored_crc(&b), stored_crc(&b), computed);
        let got = Frame::parse(&b);
        match want {
            Some(e) => prop_assert_eq!(got, Err(e)),
            None => prop_assert_eq!(got.map(|f| f.emit()), Ok(b)),
        }
    }

    /// The CRC implementations (the hardware one where the CPU has it) and the bitwise reference
    /// agree on inputs of any length.
    #[test]
    fn crc_implementations_agree(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let r = ref_crc32c(&data);
        prop_assert_eq!(crc32c(&data), r);
        prop_assert_eq!(crc32c_slice8(&data), r);
        prop_assert_eq!(crc32c_nibble(&data), r);
        if let Some(hw) = crc32c_hw(&data) {
            prop_assert_eq!(hw, r);
        }
    }
}
