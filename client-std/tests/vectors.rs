//! The published VLP v0.2 vectors through this crate's public frame API (the `Frame`,
//! `Status` and `DecodeError` it re-exports for programs written against the original client):
//! valid frames encode to the published bytes and decode back, invalid ones fail with the
//! named error.

use serde_json::Value;
use varta_client::{Frame, Status, FRAME_LEN};

const DATA: &str = include_str!("../../vlp-core/tests/data/vectors.json");

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn valid_frame_vectors_encode_and_decode() {
    let data: Value = serde_json::from_str(DATA).unwrap();
    let vectors = data["frames_valid"].as_array().unwrap();
    assert_eq!(vectors.len(), 6);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let status = match v["status"].as_str().unwrap() {
            "ok" => Status::Ok,
            "degraded" => Status::Degraded,
            _ => Status::Critical,
        };
        let frame = Frame::new(
            status,
            v["pid"].as_u64().unwrap() as u32,
            v["timestamp"].as_u64().unwrap(),
            v["nonce"].as_str().unwrap().parse().unwrap(),
            v["payload"].as_u64().unwrap() as u32,
        )
        .unwrap();
        let mut wire = [0u8; FRAME_LEN];
        frame.encode(&mut wire);
        assert_eq!(wire.to_vec(), hex(v["wire_hex"].as_str().unwrap()), "{id}");
        assert_eq!(Frame::decode(&wire), Ok(frame), "{id}");
    }
}

#[test]
fn invalid_frame_vectors_fail_with_the_named_error() {
    let data: Value = serde_json::from_str(DATA).unwrap();
    let vectors = data["frames_invalid"].as_array().unwrap();
    assert_eq!(vectors.len(), 9);
    for v in vectors {
        let wire: [u8; FRAME_LEN] = hex(v["wire_hex"].as_str().unwrap()).try_into().unwrap();
        let kind = Frame::decode(&wire).expect_err("rejected").kind();
        assert_eq!(kind, v["error_kind"].as_str().unwrap(), "{}", v["id"]);
    }
}
