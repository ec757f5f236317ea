//! Key derivation, VLP v0.2 §4: HKDF-SHA256 (RFC 5869) with an empty salt.
//!
//! An empty salt and HKDF's default all-zero salt of hash length give the same PRK (HMAC pads
//! its key with zeros), so `Hkdf::new(None, ikm)` is exactly the spec's construction.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroize;

use crate::envelope::{Key, KEY_LEN};

/// HKDF info label of the per-agent key.
pub const AGENT_KEY_INFO: &[u8] = b"varta-agent-v1\0";
/// HKDF info label of the IV prefix.
pub const IV_PREFIX_INFO: &[u8] = b"varta-iv-prefix-v1\0";
/// HKDF info label of the (reserved) epoch key.
pub const EPOCH_KEY_INFO: &[u8] = b"varta-epoch-v1\0";
/// Length of the session salt an IV prefix is derived from.
pub const SALT_LEN: usize = 16;

fn expand(ikm: &[u8], label: &[u8], suffix: &[u8], okm: &mut [u8]) {
    let hk = Hkdf::<Sha256>::new(None, ikm);
    // The only failure is an output longer than 255 hash lengths; ours are 8 or 32 bytes.
    hk.expand_multi_info(&[label, suffix], okm)
        .expect("8 or 32 bytes is within HKDF-SHA256's output limit");
}

/// The per-agent key: IKM = master key, info = `"varta-agent-v1\0" || pid_le`.
#[must_use]
pub fn derive_agent_key(master: &Key, pid: u32) -> Key {
    let mut okm = [0u8; KEY_LEN];
    expand(
        master.as_bytes(),
        AGENT_KEY_INFO,
        &pid.to_le_bytes(),
        &mut okm,
    );
    let k = Key::from_bytes(okm);
    okm.zeroize();
    k
}

/// The 8-byte IV prefix (`iv_random`): IKM = session salt, info =
/// `"varta-iv-prefix-v1\0" || index_le`.
#[must_use]
pub fn derive_iv_prefix(salt: &[u8; SALT_LEN], index: u32) -> [u8; 8] {
    let mut okm = [0u8; 8];
    expand(salt, IV_PREFIX_INFO, &index.to_le_bytes(), &mut okm);
    okm
}

/// The reserved epoch key (not used on the wire): IKM = agent key, info =
/// `"varta-epoch-v1\0" || epoch_le`.
#[must_use]
pub fn derive_epoch_key(agent_key: &Key, epoch: u64) -> Key {
    let mut okm = [0u8; KEY_LEN];
    expand(
        agent_key.as_bytes(),
        EPOCH_KEY_INFO,
        &epoch.to_le_bytes(),
        &mut okm,
    );
    let k = Key::from_bytes(okm);
    okm.zeroize();
    k
}
