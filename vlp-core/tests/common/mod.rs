//! Helpers shared by the integration tests: an independent, bit-at-a-time CRC-32C and a raw
//! frame writer that can produce frames breaking any rule of VLP v0.2 §2.
#![allow(dead_code)] // reason: each test crate uses a different subset of these helpers

/// CRC-32C computed one bit at a time straight from the definition in §1 (reflected
/// polynomial 0x82F63B78, init and final xor 0xFFFFFFFF): independent of `vlp_core::crc`.
pub fn ref_crc32c(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xFFFF_FFFF
}

/// The fields of a frame as raw wire values, any of which may be invalid.
#[derive(Debug, Clone, Copy)]
pub struct Raw {
    pub magic: [u8; 2],
    pub version: u8,
    pub status: u8,
    pub pid: u32,
    pub timestamp: u64,
    pub nonce: u64,
    pub payload: u32,
}

impl Raw {
    /// A valid Ok frame.
    pub fn valid() -> Raw {
        Raw {
            magic: *b"VA",
            version: 2,
            status: 0,
            pid: 1000,
            timestamp: 5,
            nonce: 1,
            payload: 0,
        }
    }

    /// The 32 bytes, with the correct CRC over bytes 0..28.
    pub fn bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..2].copy_from_slice(&self.magic);
        b[2] = self.version;
        b[3] = self.status;
        b[4..8].copy_from_slice(&self.pid.to_le_bytes());
        b[8..16].copy_from_slice(&self.timestamp.to_le_bytes());
        b[16..24].copy_from_slice(&self.nonce.to_le_bytes());
        b[24..28].copy_from_slice(&self.payload.to_le_bytes());
        fix_crc(&mut b);
        b
    }
}

/// Rewrites bytes 28..32 with the CRC-32C of bytes 0..28.
pub fn fix_crc(b: &mut [u8; 32]) {
    let crc = ref_crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC stored in bytes 28..32.
pub fn stored_crc(b: &[u8; 32]) -> u32 {
    u32::from_le_bytes([b[28], b[29], b[30], b[31]])
}
