//! `open`: arbitrary datagrams against a fixed key never panic, and never open unless they are
//! exactly what sealing the opened frame with the opened IV produces. Half the inputs start
//! from a correctly sealed datagram (fields chosen by the fuzzer) and then alter it: any
//! alteration must fail with `BadTag`. Every tag verdict is also checked against the
//! `chacha20poly1305` crate (the envelope's own AEAD, feature `fast-aead`, must agree with it).
#![no_main]

#[path = "common/input.rs"]
mod input;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use input::Input;
use libfuzzer_sys::fuzz_target;
use vlp_core::envelope::{MASTER_LEN, SHARED_LEN};
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, Iv, Key, MasterDatagram, OpenError, SharedDatagram, Status};

/// The key of the published secure vectors (00 01 .. 1f), so the seed corpus (the vectors'
/// sealed datagrams, fuzz/seeds/open) opens and the success path is exercised from the start.
const KEY: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];

/// Whether the RustCrypto crate verifies the tag of `sealed` = iv (12) | ciphertext (32) | tag
/// (16) under `key` with associated data `aad`.
fn reference_accepts(key: &Key, aad: &[u8], sealed: &[u8]) -> bool {
    let mut body = [0u8; 32];
    body.copy_from_slice(&sealed[12..44]);
    ChaCha20Poly1305::new(key.as_bytes().into())
        .decrypt_in_place_detached(sealed[..12].into(), aad, &mut body, sealed[44..60].into())
        .is_ok()
}

fn raw_shared(key: &Key, bytes: &[u8]) {
    match SharedDatagram::from_bytes(bytes) {
        Ok(d) => {
            let got = d.open(key);
            assert_eq!(
                got != Err(OpenError::BadTag),
                reference_accepts(key, &[], bytes),
                "tag verdict differs from the reference AEAD"
            );
            if let Ok((iv, f)) = got {
                assert_eq!(SharedDatagram::seal(key, &iv, &f).0[..], *bytes);
            }
        }
        Err(e) => assert_eq!(e, OpenError::BadLength { len: bytes.len() }),
    }
}

fn raw_master(master: &Key, bytes: &[u8]) {
    match MasterDatagram::from_bytes(bytes) {
        Ok(d) => {
            // As an observer does: the agent key for the pid in the clear.
            let agent = derive_agent_key(master, d.pid());
            let got = d.open(&agent);
            assert_eq!(
                got != Err(OpenError::BadTag),
                reference_accepts(&agent, &bytes[..4], &bytes[4..]),
                "tag verdict differs from the reference AEAD"
            );
            if let Ok((iv, f)) = got {
                assert_eq!(f.pid(), d.pid());
                assert_eq!(MasterDatagram::seal(&agent, &iv, &f).0[..], *bytes);
            }
        }
        Err(e) => assert_eq!(e, OpenError::BadLength { len: bytes.len() }),
    }
}

/// A valid frame from fuzzer bytes, or `None` when the fields break a rule.
fn frame(inp: &mut Input) -> Option<(Iv, Frame)> {
    let [s] = inp.take::<1>();
    let status = Status::from_u8(s % 3)?;
    let pid = u32::from_le_bytes(inp.take());
    let ts = u64::from_le_bytes(inp.take());
    let nonce = u64::from_le_bytes(inp.take());
    let payload = u32::from_le_bytes(inp.take());
    let random = inp.take::<8>();
    let counter = u32::from_le_bytes(inp.take());
    let f = Frame::new(status, pid, ts, nonce, payload).ok()?;
    Some((Iv { random, counter }, f))
}

/// XORs the rest of the input into `d`; returns whether any byte changed.
fn mutate(d: &mut [u8], mask: &[u8]) -> bool {
    let mut changed = false;
    for (b, m) in d.iter_mut().zip(mask) {
        *b ^= m;
        changed |= *m != 0;
    }
    changed
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = Key::from_bytes(KEY);
    match mode % 4 {
        0 => raw_shared(&key, rest),
        1 => raw_master(&key, rest),
        2 => {
            let mut inp = Input(rest);
            let Some((iv, f)) = frame(&mut inp) else {
                return;
            };
            let mut d = SharedDatagram::seal(&key, &iv, &f);
            let changed = mutate(&mut d.0, inp.0);
            let got = d.open(&key);
            if changed {
                assert_eq!(got, Err(OpenError::BadTag));
            } else {
                assert_eq!(got, Ok((iv, f)));
            }
            raw_shared(&key, &d.0[..SHARED_LEN]);
        }
        _ => {
            let mut inp = Input(rest);
            let Some((iv, f)) = frame(&mut inp) else {
                return;
            };
            let agent = derive_agent_key(&key, f.pid());
            let mut d = MasterDatagram::seal(&agent, &iv, &f);
            let changed = mutate(&mut d.0, inp.0);
            let got = d.open(&agent);
            if changed {
                assert_eq!(got, Err(OpenError::BadTag));
            } else {
                assert_eq!(got, Ok((iv, f)));
            }
            raw_master(&key, &d.0[..MASTER_LEN]);
        }
    }
});
