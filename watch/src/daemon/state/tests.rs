use super::format::{REQUIRED, SUM_LEN};
use super::*;
use crate::tracker::TrackerConfig;
use sha2::{Digest, Sha256};

fn tracker_with_agent() -> Tracker {
    let mut t = Tracker::new(cfg());
    let origin = crate::tracker::Origin::Unix { pid: 42, uid: 7 };
    let frame = vlp_core::Frame::new(vlp_core::Status::Ok, 42, 1, 1, 0).expect("valid");
    let _ = t.handle_datagram(5_000_000, &origin, &frame.emit());
    assert_eq!(t.len(), 1);
    t
}

#[test]
fn the_silences_section_round_trips_and_is_optional() {
    let t = tracker_with_agent();
    let clocks = Clocks::now();
    let mut out = Vec::new();
    encode_with(&t, 9, &clocks, None, Some(b"{\"x\":1}"), &mut out);
    assert_eq!(
        parse(&out).expect("parses").silences,
        Some(&b"{\"x\":1}"[..])
    );
    encode(&t, 9, &clocks, None, &mut out);
    assert_eq!(parse(&out).expect("parses").silences, None);
}

fn cfg() -> TrackerConfig {
    TrackerConfig {
        allowed_uids: vec![7],
        ..TrackerConfig::default()
    }
}

fn clocks() -> Clocks {
    Clocks {
        boot_id: *b"01234567-89ab-cdef-0123-456789abcdef",
        boottime: 10_000_000_000,
        wall: 1_700_000_000_000_000_000,
    }
}

#[test]
fn round_trip_keeps_sections() {
    let t = tracker_with_agent();
    let mut out = Vec::new();
    encode(&t, 6_000_000, &clocks(), Some((7, [9; 32])), &mut out);
    let p = parse(&out).expect("parses");
    assert_eq!(p.clocks, clocks());
    assert_eq!(p.anchor, Some((7, [9; 32])));
    let back = Tracker::restore(
        cfg(),
        p.tracker,
        restore_mapping(&p.clocks, &p.clocks, 6_000_000),
    )
    .expect("restores");
    assert_eq!(back.len(), 1);
}

#[test]
fn every_damage_is_a_named_error() {
    let t = tracker_with_agent();
    let mut out = Vec::new();
    encode(&t, 6_000_000, &clocks(), None, &mut out);
    assert_eq!(parse(&out[..out.len() - 1]), Err(ContentError::BadChecksum));
    assert!(matches!(
        parse(&out[..20]),
        Err(ContentError::Truncated { .. })
    ));
    let mut bad = out.clone();
    bad[0] ^= 1;
    assert_eq!(parse(&bad), Err(ContentError::BadMagic));
    let mut bad = out.clone();
    bad[8] = 9;
    assert_eq!(
        parse(&bad),
        Err(ContentError::UnsupportedVersion { found: 9 })
    );
    let mut bad = out.clone();
    bad[40] ^= 0xff;
    assert_eq!(parse(&bad), Err(ContentError::BadChecksum));
    assert!(parse(&[]).is_err());
}

/// A section written by a newer observer: skipped when optional, refused when required.
#[test]
fn unknown_sections_follow_their_flag() {
    let t = tracker_with_agent();
    let mut out = Vec::new();
    encode(&t, 6_000_000, &clocks(), None, &mut out);
    for (flags, ok) in [(0u16, true), (REQUIRED, false)] {
        let mut f = out[..out.len() - SUM_LEN].to_vec();
        f[10] = 3;
        // Section 99, empty.
        f.extend_from_slice(&99u16.to_le_bytes());
        f.extend_from_slice(&flags.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        let sum = Sha256::digest(&f);
        f.extend_from_slice(&sum);
        match parse(&f) {
            Ok(p) => assert!(ok && p.anchor.is_none()),
            Err(e) => assert!(!ok && e == ContentError::UnknownRequired { tag: 99 }),
        }
    }
}

#[test]
fn reboot_carries_the_wall_clock_gap() {
    let then = clocks();
    let mut now = clocks();
    now.boot_id[0] = b'f';
    now.boottime = 3_000_000_000;
    now.wall = then.wall + 5_000_000_000;
    let m = restore_mapping(&then, &now, 1_000);
    assert_eq!(m.clock_now, then.boottime + 5_000_000_000);
    let mut same = clocks();
    same.boottime = then.boottime + 2;
    assert_eq!(
        restore_mapping(&then, &same, 1_000).clock_now,
        then.boottime + 2
    );
    // Wall clock set back across a reboot: no gap, never a negative one.
    now.wall = then.wall - 1;
    assert_eq!(restore_mapping(&then, &now, 1_000).clock_now, then.boottime);
}

proptest::proptest! {
    /// Any bytes: a named error or a parse, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = parse(&bytes);
    }

    /// Any one flipped bit or cut of a good file is refused, never half-loaded.
    #[test]
    fn any_flip_or_cut_is_refused(at in 0usize..10_000, bit in 0u8..8, cut in 1usize..10_000) {
        let t = tracker_with_agent();
        let mut out = Vec::new();
        encode(&t, 6_000_000, &clocks(), Some((3, [4; 32])), &mut out);
        let mut flipped = out.clone();
        let at = at % out.len();
        flipped[at] ^= 1 << bit;
        proptest::prop_assert!(parse(&flipped).is_err());
        let cut = 1 + cut % out.len();
        proptest::prop_assert!(parse(&out[..out.len() - cut]).is_err());
    }
}

#[test]
fn the_audit_anchor_catches_a_cut_or_edited_file_at_start() {
    let (h1, h2) = ([1u8; 32], [2u8; 32]);
    assert_eq!(audit_anchor_mismatch(None, Some((5, h1))), None);
    assert_eq!(audit_anchor_mismatch(Some((5, h1)), None), None);
    assert_eq!(audit_anchor_mismatch(Some((5, h1)), Some((5, h1))), None);
    assert_eq!(
        audit_anchor_mismatch(Some((5, h1)), Some((7, h2))),
        None,
        "records after the last snapshot are not anchored yet"
    );
    assert!(audit_anchor_mismatch(Some((5, h1)), Some((4, h1))).is_some_and(|w| w.contains("cut")));
    assert!(
        audit_anchor_mismatch(Some((5, h1)), Some((5, h2))).is_some_and(|w| w.contains("edited"))
    );
}
