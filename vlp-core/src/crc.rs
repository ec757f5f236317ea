//! CRC-32C (Castagnoli), the frame checksum of VLP v0.2 §1.
//!
//! Reflected polynomial `0x82F63B78`, init `0xFFFF_FFFF`, reflected in and out, final xor
//! `0xFFFF_FFFF`. Two table-driven implementations share one definition:
//!
//! * [`crc32c_slice8`]: slicing-by-8 over eight 256-entry tables (8 KiB of constants), about
//!   four times faster per byte; the default on 64-bit targets, where 8 KiB is nothing.
//! * [`crc32c_nibble`]: a 16-entry table (64 bytes); the default elsewhere, so firmware keeps
//!   its flash budget.
//!
//! Both tables are computed at compile time; tests check the two agree on every input.

/// Reflected Castagnoli polynomial.
pub const POLY: u32 = 0x82F6_3B78;

const fn byte_table() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

const fn nibble_table() -> [u32; 16] {
    let mut t = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static SLICE8: [[u32; 256]; 8] = byte_table();
static NIBBLE: [u32; 16] = nibble_table();

/// CRC-32C with slicing-by-8 (8 KiB of tables).
#[must_use]
pub fn crc32c_slice8(data: &[u8]) -> u32 {
    let t = &SLICE8;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xFF) as usize]
            ^ t[2][((hi >> 8) & 0xFF) as usize]
            ^ t[1][((hi >> 16) & 0xFF) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    !crc
}

/// CRC-32C with a 16-entry table (64 bytes of constants), for small flash budgets.
#[must_use]
pub fn crc32c_nibble(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        crc = (crc >> 4) ^ NIBBLE[(crc & 0xF) as usize];
        crc = (crc >> 4) ^ NIBBLE[(crc & 0xF) as usize];
    }
    !crc
}

/// CRC-32C of `data`, with the implementation suited to the target (see the module docs).
#[must_use]
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_pointer_width = "64")]
    {
        crc32c_slice8(data)
    }
    #[cfg(not(target_pointer_width = "64"))]
    {
        crc32c_nibble(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_check_values() {
        for f in [crc32c_slice8, crc32c_nibble, crc32c] {
            assert_eq!(f(b""), 0x0000_0000);
            assert_eq!(f(b"a"), 0xC1D0_4330);
            assert_eq!(f(b"123456789"), 0xE306_9283);
        }
    }

    proptest::proptest! {
        #[test]
        fn implementations_agree(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            proptest::prop_assert_eq!(crc32c_slice8(&data), crc32c_nibble(&data));
        }
    }
}
