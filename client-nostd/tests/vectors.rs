//! The published VLP v0.2 vectors through the firmware client's own send path: an `Agent`
//! driven to each vector's pid, nonce and time emits exactly the published bytes.
#![cfg(feature = "testing")]

use serde_json::Value;
use varta_client_nostd::{Agent, Kind, StackError, Status};

const DATA: &str = include_str!("../../vlp-core/tests/data/vectors.json");

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_valid_frame_vector_is_what_the_agent_sends() {
    let data: Value = serde_json::from_str(DATA).unwrap();
    let vectors = data["frames_valid"].as_array().unwrap();
    assert_eq!(vectors.len(), 6);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let pid = v["pid"].as_u64().unwrap() as u32;
        let ts = v["timestamp"].as_u64().unwrap();
        let nonce: u64 = v["nonce"].as_str().unwrap().parse().unwrap();
        let payload = v["payload"].as_u64().unwrap() as u32;
        let status = match v["status"].as_str().unwrap() {
            "ok" => Status::Ok,
            "degraded" => Status::Degraded,
            _ => Status::Critical,
        };
        let mut agent = Agent::plain(pid);
        agent.try_start(*b"vectors-boot-slt").unwrap();
        let kind = if nonce == u64::MAX {
            Kind::Terminal(payload)
        } else {
            agent.session_mut().set_next_nonce(nonce);
            Kind::Beat(status, payload)
        };
        let mut sent = Vec::new();
        let mut capture = |b: &[u8]| -> Result<(), StackError> {
            sent.push(b.to_vec());
            Ok(())
        };
        agent.try_send(&mut capture, kind, ts).unwrap();
        assert_eq!(sent, vec![hex(v["wire_hex"].as_str().unwrap())], "{id}");
    }
}
