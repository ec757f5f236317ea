//! The 25 published VLP v0.2 conformance vectors, every one, byte for byte.

use serde_json::Value;
use vlp_core::crc::{crc32c, crc32c_hw, crc32c_nibble, crc32c_slice8};
use vlp_core::kdf::{derive_agent_key, derive_epoch_key, derive_iv_prefix};
use vlp_core::{Frame, Iv, Key, MasterDatagram, SharedDatagram, Status};

const DATA: &str = include_str!("data/vectors.json");

fn data() -> Value {
    serde_json::from_str(DATA).expect("vectors.json parses")
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    hx(v).try_into().expect("length")
}

fn status(name: &str) -> Status {
    match name {
        "ok" => Status::Ok,
        "degraded" => Status::Degraded,
        "critical" => Status::Critical,
        other => panic!("unknown status {other}"),
    }
}

#[test]
fn all_25_vectors_are_present() {
    let d = data();
    let n: usize = ["crc32c", "frames_valid", "frames_invalid", "secure"]
        .iter()
        .map(|k| d[k].as_array().unwrap().len())
        .sum();
    assert_eq!(n, 25);
}

#[test]
fn crc32c_vectors() {
    for v in data()["crc32c"].as_array().unwrap() {
        let input = hx(&v["input_hex"]);
        let want = u32::from_str_radix(v["crc_hex"].as_str().unwrap(), 16).unwrap();
        for f in [crc32c, crc32c_slice8, crc32c_nibble] {
            assert_eq!(f(&input), want, "{}", v["id"]);
        }
        if let Some(hw) = crc32c_hw(&input) {
            assert_eq!(hw, want, "{} (hardware)", v["id"]);
        }
    }
}

#[test]
fn valid_frames_encode_and_decode() {
    for v in data()["frames_valid"].as_array().unwrap() {
        let id = &v["id"];
        let f = Frame::new(
            status(v["status"].as_str().unwrap()),
            v["pid"].as_u64().unwrap() as u32,
            v["timestamp"].as_u64().unwrap(),
            v["nonce"].as_str().unwrap().parse().unwrap(),
            v["payload"].as_u64().unwrap() as u32,
        )
        .unwrap_or_else(|e| panic!("{id}: {e}"));
        let wire: [u8; 32] = arr(&v["wire_hex"]);
        assert_eq!(f.emit(), wire, "{id} encodes");
        assert_eq!(Frame::parse(&wire), Ok(f), "{id} decodes");
    }
}

#[test]
fn invalid_frames_fail_with_the_named_error() {
    let vs = data();
    let vs = vs["frames_invalid"].as_array().unwrap();
    assert_eq!(vs.len(), 9);
    for v in vs {
        let wire = hx(&v["wire_hex"]);
        let err = Frame::parse(&wire).expect_err("must be rejected");
        let kind = err.kind();
        // `error_kind` is the published variant name in snake_case, as `DecodeError::kind`
        // spells it (the other crates' vector tests compare against it).
        let published = v["error"].as_str().unwrap();
        let snake: String = published
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
                sep.into_iter()
                    .chain(std::iter::once(c.to_ascii_lowercase()))
            })
            .collect();
        assert_eq!(v["error_kind"].as_str().unwrap(), snake, "{}", v["id"]);
        assert_eq!(kind, snake, "{}", v["id"]);
    }
}

#[test]
fn secure_vectors() {
    let mut seen = 0;
    for v in data()["secure"].as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        match v["kind"].as_str().unwrap() {
            "shared_key_seal" => {
                let key = Key::from_hex(v["key_hex"].as_str().unwrap()).unwrap();
                let iv = Iv {
                    random: arr(&v["iv_random_hex"]),
                    counter: v["iv_counter"].as_u64().unwrap() as u32,
                };
                let frame = Frame::parse(&hx(&v["plaintext_hex"])).unwrap();
                let want: [u8; 60] = arr(&v["expected_wire_hex"]);
                let sealed = SharedDatagram::seal(&key, &iv, &frame);
                assert_eq!(sealed.0, want, "{id}");
                assert_eq!(
                    SharedDatagram::from_bytes(&want).unwrap().open(&key),
                    Ok((iv, frame))
                );
            }
            "master_key_seal" => {
                let master = Key::from_hex(v["master_key_hex"].as_str().unwrap()).unwrap();
                let pid = v["agent_pid"].as_u64().unwrap() as u32;
                let agent = derive_agent_key(&master, pid);
                assert_eq!(
                    agent.as_bytes(),
                    &arr::<32>(&v["derived_agent_key_hex"]),
                    "{id}"
                );
                let iv = Iv {
                    random: arr(&v["iv_random_hex"]),
                    counter: v["iv_counter"].as_u64().unwrap() as u32,
                };
                let frame = Frame::parse(&hx(&v["plaintext_hex"])).unwrap();
                let want: [u8; 64] = arr(&v["expected_wire_hex"]);
                assert_eq!(MasterDatagram::seal(&agent, &iv, &frame).0, want, "{id}");
                let d = MasterDatagram::from_bytes(&want).unwrap();
                assert_eq!(d.pid(), pid);
                assert_eq!(d.open(&agent), Ok((iv, frame)));
            }
            "kdf_agent_key" => {
                let master = Key::from_hex(v["master_key_hex"].as_str().unwrap()).unwrap();
                let k = derive_agent_key(&master, v["agent_id"].as_u64().unwrap() as u32);
                assert_eq!(k.as_bytes(), &arr::<32>(&v["expected_okm_hex"]), "{id}");
                let mut info = b"varta-agent-v1\0".to_vec();
                info.extend_from_slice(&42u32.to_le_bytes());
                assert_eq!(info, hx(&v["info_hex"]));
            }
            "kdf_iv_prefix" => {
                let salt: [u8; 16] = arr(&v["session_salt_hex"]);
                let p = derive_iv_prefix(&salt, v["prefix_index"].as_u64().unwrap() as u32);
                assert_eq!(p, arr::<8>(&v["expected_iv_prefix_hex"]), "{id}");
            }
            "kdf_epoch_key" => {
                let ak = Key::from_hex(v["agent_key_hex"].as_str().unwrap()).unwrap();
                let k = derive_epoch_key(&ak, v["epoch"].as_u64().unwrap());
                assert_eq!(k.as_bytes(), &arr::<32>(&v["expected_okm_hex"]), "{id}");
            }
            other => panic!("unknown kind {other}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 5);
}

/// When the project's shared spec directory sits beside the checkout (as in CI), the in-tree
/// copy must carry exactly its bytes.
#[test]
fn in_tree_copy_matches_published_file() {
    let published = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/spec/vlp-test-vectors.json");
    let Ok(text) = std::fs::read_to_string(&published) else {
        eprintln!(
            "published vectors not found at {}; in-tree copy used alone",
            published.display()
        );
        return;
    };
    let p: Value = serde_json::from_str(&text).unwrap();
    let ours = data();
    let hexes = |v: &Value, keys: &[&str]| -> Vec<String> {
        let mut out = Vec::new();
        for group in keys {
            for item in v[*group].as_array().unwrap() {
                for (k, val) in item.as_object().unwrap() {
                    if k.ends_with("_hex") {
                        out.push(val.as_str().unwrap().to_owned());
                    }
                }
            }
        }
        out.sort();
        out
    };
    assert_eq!(
        hexes(
            &p,
            &["crc32c_vectors", "frame_vectors", "secure_frame_vectors"]
        ),
        hexes(
            &ours,
            &["crc32c", "frames_valid", "frames_invalid", "secure"]
        )
    );
}
