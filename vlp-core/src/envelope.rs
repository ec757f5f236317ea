//! The secure envelope of VLP v0.2 §3: ChaCha20-Poly1305 (RFC 8439) over the 32-byte frame.
//!
//! ```text
//! shared key, 60 bytes, AAD empty:
//!   | 0..8 iv_random | 8..12 iv_counter LE | 12..44 ciphertext | 44..60 tag |
//! master key, 64 bytes, AAD = the 4 pid bytes:
//!   | 0..4 pid LE | 4..12 iv_random | 12..16 iv_counter LE | 16..48 ciphertext | 48..64 tag |
//! ```
//!
//! Sealing and opening work in place on fixed arrays: no allocation. Sealed datagrams are the
//! types [`SharedDatagram`] and [`MasterDatagram`], opened ones are [`Frame`]s. Opening
//! verifies the tag before any plaintext byte is looked at, then parses the frame with every
//! rule of §2, and for master-key datagrams requires the inner pid to equal the outer one.
//!
//! The replay window ([`crate::replay`]) is the caller's: read the unauthenticated [`Iv`]
//! with [`SharedDatagram::iv`], check it, open, and commit only on success.

use core::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::wire::{DecodeError, Frame, FRAME_LEN};

/// Key length in bytes.
pub const KEY_LEN: usize = 32;
/// AEAD nonce length: `iv_random (8) || iv_counter (4, LE)`.
pub const NONCE_LEN: usize = 12;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Length of a shared-key datagram.
pub const SHARED_LEN: usize = NONCE_LEN + FRAME_LEN + TAG_LEN;
/// Length of a master-key datagram.
pub const MASTER_LEN: usize = 4 + SHARED_LEN;

const _: () = assert!(SHARED_LEN == 60 && MASTER_LEN == 64);

/// A 256-bit key. Zeroized on drop; its `Debug` never shows the bytes and it has no `Display`.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for Key {}

/// Constant-time comparison: equality of keys must not leak where they differ.
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        core::hint::black_box(diff) == 0
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Why text is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KeyError {
    /// A key is exactly 64 hex characters.
    BadLength {
        /// Characters found (after trimming surrounding white space).
        len: usize,
    },
    /// A character that is not a hex digit.
    BadHexDigit {
        /// Its byte offset in the trimmed text.
        index: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::BadLength { len } => {
                write!(f, "a key is 64 hex characters, found {len}")
            }
            KeyError::BadHexDigit { index } => {
                write!(f, "character {index} of the key is not a hex digit")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyError {}

impl Key {
    /// Wraps raw key bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// Parses 64 hex characters (either case; surrounding white space ignored).
    ///
    /// # Errors
    /// [`KeyError::BadLength`] or [`KeyError::BadHexDigit`].
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let t = text.trim().as_bytes();
        if t.len() != 2 * KEY_LEN {
            return Err(KeyError::BadLength { len: t.len() });
        }
        let mut k = Key([0u8; KEY_LEN]);
        for (i, pair) in t.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(KeyError::BadHexDigit { index: 2 * i })?;
            let lo = hex_val(pair[1]).ok_or(KeyError::BadHexDigit { index: 2 * i + 1 })?;
            k.0[i] = (hi << 4) | lo;
        }
        Ok(k)
    }

    /// The raw bytes; for handing to a cipher or a KDF.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.0))
    }
}

const fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The AEAD nonce, split as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Iv {
    /// The 8 random (or HKDF-derived) bytes that name a counter stream.
    pub random: [u8; 8],
    /// The per-datagram counter, little-endian on the wire.
    pub counter: u32,
}

impl Iv {
    /// The 12-byte AEAD nonce `random || counter_le`.
    #[must_use]
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..8].copy_from_slice(&self.random);
        n[8..].copy_from_slice(&self.counter.to_le_bytes());
        n
    }

    fn read(b: &[u8]) -> Iv {
        let mut random = [0u8; 8];
        random.copy_from_slice(&b[..8]);
        Iv {
            random,
            counter: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// Why a secure datagram did not open. Each variant names the failed rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OpenError {
    /// Not 60 (shared-key) or 64 (master-key) bytes.
    BadLength {
        /// The length received.
        len: usize,
    },
    /// The Poly1305 tag did not verify: wrong key, or the datagram was altered.
    BadTag,
    /// The tag verified but the plaintext is not a valid frame.
    Frame(DecodeError),
    /// Master-key datagram whose decrypted pid differs from the pid in bytes 0..4.
    PidMismatch {
        /// The pid in the clear.
        outer: u32,
        /// The pid inside the frame.
        inner: u32,
    },
}

impl OpenError {
    /// A stable snake_case name of the failed rule, for metric labels.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            OpenError::BadLength { .. } => "bad_length",
            OpenError::BadTag => "bad_tag",
            OpenError::Frame(e) => e.kind(),
            OpenError::PidMismatch { .. } => "pid_mismatch",
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::BadLength { len } => write!(
                f,
                "secure datagram is {len} bytes, expected {SHARED_LEN} or {MASTER_LEN}"
            ),
            OpenError::BadTag => f.write_str("authentication tag did not verify"),
            OpenError::Frame(e) => write!(f, "sealed frame is invalid: {e}"),
            OpenError::PidMismatch { outer, inner } => {
                write!(f, "outer pid {outer} does not match sealed pid {inner}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for OpenError {}

/// A sealed shared-key datagram (60 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedDatagram(pub [u8; SHARED_LEN]);

/// A sealed master-key datagram (64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterDatagram(pub [u8; MASTER_LEN]);

fn seal_into(key: &Key, iv: &Iv, aad: &[u8], frame: &Frame, out: &mut [u8]) {
    // out = iv (12) | ciphertext (32) | tag (16)
    out[..8].copy_from_slice(&iv.random);
    out[8..12].copy_from_slice(&iv.counter.to_le_bytes());
    let body: &mut [u8; FRAME_LEN] = (&mut out[12..12 + FRAME_LEN])
        .try_into()
        .expect("slice is FRAME_LEN long by construction");
    frame.emit_into(body);
    let nonce = iv.nonce();
    let tag = key
        .cipher()
        // The only failure is a message longer than ChaCha20's 256 GiB limit; ours is 32 bytes.
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, body)
        .expect("a 32-byte message is within ChaCha20's length limit");
    out[12 + FRAME_LEN..].copy_from_slice(&tag);
}

fn open_from(key: &Key, aad: &[u8], sealed: &[u8]) -> Result<(Iv, Frame), OpenError> {
    let iv = Iv::read(sealed);
    let mut body = [0u8; FRAME_LEN];
    body.copy_from_slice(&sealed[12..12 + FRAME_LEN]);
    let tag = Tag::from_slice(&sealed[12 + FRAME_LEN..]);
    key.cipher()
        .decrypt_in_place_detached(Nonce::from_slice(&iv.nonce()), aad, &mut body, tag)
        .map_err(|_| OpenError::BadTag)?;
    let frame = Frame::parse_array(&body).map_err(OpenError::Frame);
    body.zeroize();
    Ok((iv, frame?))
}

impl SharedDatagram {
    /// Seals `frame` under `key` with the AEAD nonce `iv`.
    ///
    /// The caller guarantees that `(key, iv)` is never used twice; [`crate::session`] does.
    #[must_use]
    pub fn seal(key: &Key, iv: &Iv, frame: &Frame) -> SharedDatagram {
        let mut out = [0u8; SHARED_LEN];
        seal_into(key, iv, &[], frame, &mut out);
        SharedDatagram(out)
    }

    /// Views received bytes as a shared-key datagram.
    ///
    /// # Errors
    /// [`OpenError::BadLength`] unless `bytes` is 60 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<SharedDatagram, OpenError> {
        <[u8; SHARED_LEN]>::try_from(bytes)
            .map(SharedDatagram)
            .map_err(|_| OpenError::BadLength { len: bytes.len() })
    }

    /// The AEAD nonce in the clear (unauthenticated until [`SharedDatagram::open`] succeeds).
    #[must_use]
    pub fn iv(&self) -> Iv {
        Iv::read(&self.0)
    }

    /// Verifies the tag, decrypts and parses.
    ///
    /// # Errors
    /// [`OpenError::BadTag`] or [`OpenError::Frame`].
    pub fn open(&self, key: &Key) -> Result<(Iv, Frame), OpenError> {
        open_from(key, &[], &self.0)
    }
}

impl MasterDatagram {
    /// Seals `frame` under the agent key derived for `frame.pid()`; the pid goes in the clear
    /// and is bound as associated data.
    #[must_use]
    pub fn seal(agent_key: &Key, iv: &Iv, frame: &Frame) -> MasterDatagram {
        let mut out = [0u8; MASTER_LEN];
        let pid = frame.pid().to_le_bytes();
        out[..4].copy_from_slice(&pid);
        seal_into(agent_key, iv, &pid, frame, &mut out[4..]);
        MasterDatagram(out)
    }

    /// Views received bytes as a master-key datagram.
    ///
    /// # Errors
    /// [`OpenError::BadLength`] unless `bytes` is 64 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterDatagram, OpenError> {
        <[u8; MASTER_LEN]>::try_from(bytes)
            .map(MasterDatagram)
            .map_err(|_| OpenError::BadLength { len: bytes.len() })
    }

    /// The pid in the clear (unauthenticated until [`MasterDatagram::open`] succeeds); it
    /// selects the agent key to derive.
    #[must_use]
    pub fn pid(&self) -> u32 {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The AEAD nonce in the clear (unauthenticated).
    #[must_use]
    pub fn iv(&self) -> Iv {
        Iv::read(&self.0[4..])
    }

    /// Verifies the tag under `agent_key` (see [`crate::kdf::derive_agent_key`]), decrypts,
    /// parses, and checks the sealed pid against the clear one.
    ///
    /// # Errors
    /// [`OpenError::BadTag`], [`OpenError::Frame`] or [`OpenError::PidMismatch`].
    pub fn open(&self, agent_key: &Key) -> Result<(Iv, Frame), OpenError> {
        let (iv, frame) = open_from(agent_key, &self.0[..4], &self.0[4..])?;
        let outer = self.pid();
        if frame.pid() != outer {
            return Err(OpenError::PidMismatch {
                outer,
                inner: frame.pid(),
            });
        }
        Ok((iv, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    fn key() -> Key {
        Key::from_bytes(core::array::from_fn(|i| i as u8))
    }

    #[test]
    fn key_hex_errors() {
        assert_eq!(
            Key::from_hex("00").unwrap_err(),
            KeyError::BadLength { len: 2 }
        );
        let mut s = [b'a'; 64];
        s[10] = b'g';
        assert_eq!(
            Key::from_hex(core::str::from_utf8(&s).unwrap()).unwrap_err(),
            KeyError::BadHexDigit { index: 10 }
        );
        let k =
            Key::from_hex(" 000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F\n")
                .unwrap();
        assert_eq!(k, key());
    }

    #[test]
    fn key_debug_redacts() {
        extern crate std;
        let s = std::format!("{:?}", key());
        assert_eq!(s, "Key(<redacted>)");
    }

    #[test]
    fn wrong_key_and_pid_mismatch() {
        let f = Frame::new(Status::Ok, 42, 1, 1, 0).unwrap();
        let iv = Iv {
            random: [7; 8],
            counter: 3,
        };
        let d = SharedDatagram::seal(&key(), &iv, &f);
        assert_eq!(d.open(&key()), Ok((iv, f)));
        assert_eq!(d.open(&Key::from_bytes([9; 32])), Err(OpenError::BadTag));

        let m = MasterDatagram::seal(&key(), &iv, &f);
        assert_eq!(m.pid(), 42);
        assert_eq!(m.open(&key()), Ok((iv, f)));
        // Changing the clear pid changes the AAD: the tag no longer verifies.
        let mut bad = m;
        bad.0[0] = 43;
        assert_eq!(bad.open(&key()), Err(OpenError::BadTag));
        // A frame for pid 42 sealed with the AAD of pid 43 verifies but must be refused.
        let mut forged = [0u8; MASTER_LEN];
        forged[..4].copy_from_slice(&43u32.to_le_bytes());
        seal_into(&key(), &iv, &43u32.to_le_bytes(), &f, &mut forged[4..]);
        assert_eq!(
            MasterDatagram(forged).open(&key()),
            Err(OpenError::PidMismatch {
                outer: 43,
                inner: 42
            })
        );
    }

    #[test]
    fn sealed_invalid_frame_is_frame_error() {
        // Seal bytes that are not a valid frame (pid 0) by hand.
        let iv = Iv {
            random: [1; 8],
            counter: 1,
        };
        let mut out = [0u8; SHARED_LEN];
        out[..12].copy_from_slice(&iv.nonce());
        let mut body = Frame::new(Status::Ok, 2, 1, 1, 0).unwrap().emit();
        body[4] = 0;
        let crc = crate::crc::crc32c(&body[..28]);
        body[28..].copy_from_slice(&crc.to_le_bytes());
        let tag = key()
            .cipher()
            .encrypt_in_place_detached(Nonce::from_slice(&iv.nonce()), &[], &mut body)
            .unwrap();
        out[12..44].copy_from_slice(&body);
        out[44..].copy_from_slice(&tag);
        assert_eq!(
            SharedDatagram(out).open(&key()),
            Err(OpenError::Frame(DecodeError::BadPid(0)))
        );
    }
}
