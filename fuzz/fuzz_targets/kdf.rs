//! `kdf`: the observer's hand-written HKDF-SHA256 (`vlp_core::kdf`, written over `sha2`'s
//! compression function so every intermediate can be zeroized) against the `hkdf` crate, for
//! arbitrary master keys, pids, session salts, IV indexes and epochs (VLP v0.2 §4). A
//! difference is a wire incompatibility: an agent provisioned with `varta-watch key derive`
//! would not be accepted.
#![no_main]

use hkdf::Hkdf;
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use vlp_core::kdf::{
    derive_agent_key, derive_epoch_key, derive_iv_prefix, AGENT_KEY_INFO, EPOCH_KEY_INFO,
    IV_PREFIX_INFO,
};
use vlp_core::Key;

fn reference<const N: usize>(ikm: &[u8], label: &[u8], suffix: &[u8]) -> [u8; N] {
    let mut info = label.to_vec();
    info.extend_from_slice(suffix);
    let mut okm = [0u8; N];
    Hkdf::<Sha256>::new(None, ikm)
        .expand(&info, &mut okm)
        .unwrap();
    okm
}

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; 32 + 4 + 16 + 4 + 8];
    let n = data.len().min(buf.len());
    buf[..n].copy_from_slice(&data[..n]);
    let master: [u8; 32] = buf[..32].try_into().unwrap();
    let pid = u32::from_le_bytes(buf[32..36].try_into().unwrap());
    let salt: [u8; 16] = buf[36..52].try_into().unwrap();
    let index = u32::from_le_bytes(buf[52..56].try_into().unwrap());
    let epoch = u64::from_le_bytes(buf[56..64].try_into().unwrap());

    let k = derive_agent_key(&Key::from_bytes(master), pid);
    assert_eq!(
        *k.as_bytes(),
        reference::<32>(&master, AGENT_KEY_INFO, &pid.to_le_bytes())
    );
    // Another id, another key: a per-agent key speaks for its own id only.
    let other = derive_agent_key(&Key::from_bytes(master), pid ^ 1);
    assert_ne!(k.as_bytes(), other.as_bytes());
    assert_eq!(
        derive_iv_prefix(&salt, index),
        reference::<8>(&salt, IV_PREFIX_INFO, &index.to_le_bytes())
    );
    assert_eq!(
        *derive_epoch_key(&k, epoch).as_bytes(),
        reference::<32>(k.as_bytes(), EPOCH_KEY_INFO, &epoch.to_le_bytes())
    );
});
