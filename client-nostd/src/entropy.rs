//! Session salts, and why a rebooted device never reuses an AEAD nonce.
//!
//! The AEAD nonce of VLP §3 is `iv_random (8) || iv_counter (4)`. Within one session
//! `vlp-core`'s [`vlp_core::session::Session`] never repeats it: the counter only moves forward
//! and only on commit, and before it could wrap the prefix is re-derived with the next index.
//! What a microcontroller forgets across a reset is that state. This crate therefore starts
//! every boot with a **fresh 16-byte session salt drawn from the caller's entropy source** (a
//! hardware RNG: STM32 RNG, nRF RNG, RP2040 ROSC, ...), from which `iv_random` is derived
//! (`HKDF(salt, "varta-iv-prefix-v1\0" || 0)`). Two boots reuse a nonce only if their 64-bit
//! prefixes collide *and* their counters overlap: after `n` boots the chance of any prefix
//! collision is about `n² / 2^65` (10^6 boots: 3 · 10^-8).
//!
//! Optionally, the caller mixes in a **boot counter** it persists (flash, backup register):
//! [`salt_with_boot_counter`] XORs it into the salt's last four bytes. With a sound RNG this
//! changes nothing (the XOR of a uniform value is uniform); with a broken RNG that returns the
//! same bytes every boot it still makes every boot's salt, hence `iv_random`, different, as
//! long as the counter never repeats.
//!
//! As a last guard, salts that are all `0x00` or all `0xFF` (a dead or unclocked RNG
//! peripheral) are refused with [`Error::Entropy`].

use rand_core::TryCryptoRng;
pub use vlp_core::kdf::SALT_LEN;

use crate::error::Error;

/// Draws a session salt from `rng`.
///
/// # Errors
/// [`Error::Entropy`] if the RNG fails or returns an all-zero / all-one salt.
pub fn salt_from_rng<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<[u8; SALT_LEN], Error> {
    let mut salt = [0u8; SALT_LEN];
    rng.try_fill_bytes(&mut salt).map_err(|_| Error::Entropy)?;
    check_salt(salt)
}

/// Draws a session salt from `rng` and mixes in `boot_count`, a counter the caller persists
/// and increments at every boot (see the module docs).
///
/// # Errors
/// As [`salt_from_rng`].
pub fn salt_with_boot_counter<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    boot_count: u32,
) -> Result<[u8; SALT_LEN], Error> {
    let mut salt = [0u8; SALT_LEN];
    rng.try_fill_bytes(&mut salt).map_err(|_| Error::Entropy)?;
    // A dead RNG is refused before the counter could disguise it.
    check_salt(salt)?;
    for (s, b) in salt[SALT_LEN - 4..]
        .iter_mut()
        .zip(boot_count.to_le_bytes())
    {
        *s ^= b;
    }
    Ok(salt)
}

/// Refuses salts that betray a dead RNG.
///
/// # Errors
/// [`Error::Entropy`] for an all-`0x00` or all-`0xFF` salt.
pub fn check_salt(salt: [u8; SALT_LEN]) -> Result<[u8; SALT_LEN], Error> {
    if salt.iter().all(|&b| b == 0) || salt.iter().all(|&b| b == 0xFF) {
        return Err(Error::Entropy);
    }
    Ok(salt)
}
