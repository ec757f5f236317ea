//! Key derivation, VLP v0.2 §4: HKDF-SHA256 (RFC 5869) with an empty salt.
//!
//! An empty salt and HKDF's default all-zero salt of hash length give the same PRK (HMAC pads
//! its key with zeros), so `Hkdf::new(None, ikm)` is exactly the spec's construction.

use sha2::compress256;
use sha2::digest::generic_array::GenericArray;
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

/// SHA-256's block and output lengths.
const BLOCK: usize = 64;
const HASH: usize = 32;
/// SHA-256's initial chaining value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

fn compress(state: &mut [u32; 8], block: &[u8; BLOCK]) {
    compress256(
        state,
        core::slice::from_ref(GenericArray::from_slice(block)),
    );
}

/// Absorbs `parts` into `state` (which has already absorbed `prior` bytes, a whole number of
/// blocks), pads, and writes the digest to `out`. The block buffer is zeroized.
fn finish(state: &mut [u32; 8], prior: u64, parts: &[&[u8]], out: &mut [u8; HASH]) {
    let mut block = [0u8; BLOCK];
    let mut fill = 0;
    let mut total = prior;
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            let n = rest.len().min(BLOCK - fill);
            block[fill..fill + n].copy_from_slice(&rest[..n]);
            fill += n;
            total += n as u64;
            rest = &rest[n..];
            if fill == BLOCK {
                compress(state, &block);
                fill = 0;
            }
        }
    }
    block[fill] = 0x80;
    block[fill + 1..].fill(0);
    if fill + 1 > BLOCK - 8 {
        compress(state, &block);
        block.fill(0);
    }
    block[BLOCK - 8..].copy_from_slice(&(total * 8).to_be_bytes());
    compress(state, &block);
    block.zeroize();
    for (o, w) in out.chunks_exact_mut(4).zip(state.iter()) {
        o.copy_from_slice(&w.to_be_bytes());
    }
}

/// HMAC-SHA256 (RFC 2104) of `parts` under a 32-byte key. Every intermediate (the padded key
/// blocks, both chaining states, the inner digest) is ours and zeroized before returning.
fn hmac(key: &[u8; HASH], parts: &[&[u8]], out: &mut [u8; HASH]) {
    // The key, zero-padded to a block, XOR ipad; then XOR (ipad ^ opad) turns it into the
    // outer block.
    let mut pad = [0x36u8; BLOCK];
    let mut inner = SHA256_IV;
    let mut outer = SHA256_IV;
    for (p, k) in pad.iter_mut().zip(key) {
        *p ^= k;
    }
    compress(&mut inner, &pad);
    for p in &mut pad {
        *p ^= 0x36 ^ 0x5c;
    }
    compress(&mut outer, &pad);
    pad.zeroize();
    let mut digest = [0u8; HASH];
    finish(&mut inner, BLOCK as u64, parts, &mut digest);
    finish(&mut outer, BLOCK as u64, &[&digest], out);
    digest.zeroize();
    inner.zeroize();
    outer.zeroize();
}

/// HKDF-SHA256 (RFC 5869) with an empty salt, for outputs of at most one hash length (every
/// VLP derivation): PRK = HMAC(0^32, ikm), OKM = HMAC(PRK, label || suffix || 0x01).
///
/// Written over `sha2`'s compression function rather than with the `hkdf` and `hmac` crates
/// because those keep the PRK-keyed HMAC states (which derive every agent's key) in values
/// they never zeroize; here the PRK and every chaining state live in our buffers and are
/// zeroized (`zeroize`) before returning. An empty salt and HKDF's default all-zero salt of
/// hash length give the same PRK (HMAC pads its key with zeros), so this is exactly the
/// spec's construction; the tests compare it with the `hkdf` crate and RFC 5869's vectors.
fn expand(ikm: &[u8], label: &[u8], suffix: &[u8], okm: &mut [u8]) {
    debug_assert!(okm.len() <= HASH, "one HKDF block is enough for VLP");
    let mut prk = [0u8; HASH];
    hmac(&[0u8; HASH], &[ikm], &mut prk);
    let mut t = [0u8; HASH];
    hmac(&prk, &[label, suffix, &[1]], &mut t);
    prk.zeroize();
    let n = okm.len().min(HASH);
    okm[..n].copy_from_slice(&t[..n]);
    t.zeroize();
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

#[cfg(test)]
mod tests {
    use super::*;
    use hkdf::Hkdf;
    use sha2::Sha256;

    fn reference(ikm: &[u8], label: &[u8], suffix: &[u8]) -> [u8; HASH] {
        let mut okm = [0u8; HASH];
        Hkdf::<Sha256>::new(None, ikm)
            .expand_multi_info(&[label, suffix], &mut okm)
            .unwrap();
        okm
    }

    #[test]
    fn rfc5869_case_3_empty_salt_and_info() {
        let mut okm = [0u8; HASH];
        expand(&[0x0b; 22], b"", b"", &mut okm);
        let want: [u8; 32] = [
            0x8d, 0xa4, 0xe7, 0x75, 0xa5, 0x63, 0xc1, 0x8f, 0x71, 0x5f, 0x80, 0x2a, 0x06, 0x3c,
            0x5a, 0x31, 0xb8, 0xa1, 0x1f, 0x5c, 0x5e, 0xe1, 0x87, 0x9e, 0xc3, 0x45, 0x4e, 0x5f,
            0x3c, 0x73, 0x8d, 0x2d,
        ];
        assert_eq!(okm, want);
    }

    #[test]
    fn same_bytes_as_the_hkdf_crate_at_every_padding_boundary() {
        // Message lengths around the one-block / two-block padding boundary (55, 56 bytes
        // after the key block) and beyond one block, in both HMACs.
        for ikm_len in [0, 1, 16, 32, 54, 55, 56, 57, 63, 64, 65, 130] {
            let ikm: [u8; 130] = core::array::from_fn(|i| (i * 7 + ikm_len) as u8);
            for label_len in [0, 15, 19, 50, 51, 55, 60, 70] {
                let label: [u8; 70] = core::array::from_fn(|i| (i * 3 + 1) as u8);
                let (ikm, label) = (&ikm[..ikm_len], &label[..label_len]);
                let mut okm = [0u8; HASH];
                expand(ikm, label, &[9, 8, 7, 6], &mut okm);
                assert_eq!(
                    okm,
                    reference(ikm, label, &[9, 8, 7, 6]),
                    "{ikm_len}/{label_len}"
                );
            }
        }
        let master = Key::from_bytes([0x42; 32]);
        for pid in [0, 2, 4242, u32::MAX] {
            assert_eq!(
                derive_agent_key(&master, pid).as_bytes(),
                &reference(master.as_bytes(), AGENT_KEY_INFO, &pid.to_le_bytes())
            );
        }
        assert_eq!(
            derive_iv_prefix(&[5; SALT_LEN], 3)[..],
            reference(&[5; SALT_LEN], IV_PREFIX_INFO, &3u32.to_le_bytes())[..8]
        );
    }
}
