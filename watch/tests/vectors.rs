//! The published VLP v0.2 vectors through the observer's one decode pipeline: every valid
//! frame is accepted from its kernel-attested sender, every invalid one is refused with the
//! named rule, and both sealed datagrams open under their keys on a secure UDP listener.

use serde_json::Value;
use varta_watch::tracker::{Origin, Rejection, Tracker, TrackerConfig, UdpMode};
use vlp_core::{Frame, Key};

const DATA: &str = include_str!("../../vlp-core/tests/data/vectors.json");

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key(v: &Value) -> Key {
    Key::from_hex(v.as_str().unwrap()).unwrap()
}

#[test]
fn frame_vectors_through_the_unix_pipeline() {
    let data: Value = serde_json::from_str(DATA).unwrap();
    for v in data["frames_valid"].as_array().unwrap() {
        let wire = hex(v["wire_hex"].as_str().unwrap());
        let pid = v["pid"].as_u64().unwrap() as u32;
        // A fresh tracker per vector: each is the first frame of its agent.
        let mut t = Tracker::new(TrackerConfig {
            allowed_uids: vec![0],
            ..TrackerConfig::default()
        });
        let accepted = t
            .handle_datagram(1, &Origin::Unix { pid, uid: 0 }, &wire)
            .unwrap_or_else(|e| panic!("{}: {e}", v["id"]));
        assert_eq!(accepted.frame.emit().to_vec(), wire, "{}", v["id"]);
    }
    let mut t = Tracker::new(TrackerConfig {
        allowed_uids: vec![0],
        ..TrackerConfig::default()
    });
    for v in data["frames_invalid"].as_array().unwrap() {
        let wire = hex(v["wire_hex"].as_str().unwrap());
        let origin = Origin::Unix { pid: 2, uid: 0 };
        let err = t.handle_datagram(1, &origin, &wire).expect_err("refused");
        let Rejection::Decode(e) = err else {
            panic!("{}: refused as {err:?}, not by a decode rule", v["id"]);
        };
        let kind = e.kind();
        assert_eq!(kind, v["error_kind"].as_str().unwrap(), "{}", v["id"]);
    }
}

#[test]
fn sealed_vectors_open_on_a_secure_listener() {
    let data: Value = serde_json::from_str(DATA).unwrap();
    let mut opened = 0;
    for v in data["secure"].as_array().unwrap() {
        let mode = match v["kind"].as_str().unwrap() {
            "shared_key_seal" => UdpMode::Secure {
                keys: vec![key(&v["key_hex"])],
                master: None,
            },
            "master_key_seal" => UdpMode::Secure {
                keys: Vec::new(),
                master: Some(key(&v["master_key_hex"])),
            },
            _ => continue,
        };
        let mut t = Tracker::new(TrackerConfig {
            udp: vec![mode],
            ..TrackerConfig::default()
        });
        let wire = hex(v["expected_wire_hex"].as_str().unwrap());
        let accepted = t
            .handle_datagram(1, &Origin::Udp { listener: 0 }, &wire)
            .unwrap_or_else(|e| panic!("{}: {e}", v["id"]));
        let plain = Frame::parse(&hex(v["plaintext_hex"].as_str().unwrap())).unwrap();
        assert_eq!(accepted.frame, plain, "{}", v["id"]);
        // The same datagram again is a replay.
        assert!(matches!(
            t.handle_datagram(2, &Origin::Udp { listener: 0 }, &wire),
            Err(Rejection::Replay(_))
        ));
        opened += 1;
    }
    assert_eq!(opened, 2);
}
