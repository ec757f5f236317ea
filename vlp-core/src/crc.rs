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
//!
//! On x86_64, [`crc32c`] uses the SSE4.2 `crc32` instruction ([`crc32c_hw`]) when the CPU has
//! it: known at compile time with `target_feature = "sse4.2"` (e.g. `-C target-cpu=native`),
//! otherwise found once at run time with `cpuid` (which, unlike `is_x86_feature_detected!`,
//! needs no `std`; SSE4.2 adds no register state, so the CPUID bit alone is enough). The
//! instruction computes exactly this CRC, about five times faster than slicing-by-8 on a frame.

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
    let mut rest = chunks.remainder();
    if let [a, b, c, d, tail @ ..] = rest {
        // Slicing-by-4 for a 4-byte remainder (a frame's 28 bytes end with one).
        let w = u32::from_le_bytes([*a, *b, *c, *d]) ^ crc;
        crc = t[3][(w & 0xFF) as usize]
            ^ t[2][((w >> 8) & 0xFF) as usize]
            ^ t[1][((w >> 16) & 0xFF) as usize]
            ^ t[0][(w >> 24) as usize];
        rest = tail;
    }
    for &b in rest {
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

/// CRC-32C with the SSE4.2 `crc32` instruction, or `None` where the CPU (or the target
/// architecture) has no such instruction.
#[must_use]
#[inline]
pub fn crc32c_hw(data: &[u8]) -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    if x86::has_sse42() {
        // SAFETY: `has_sse42` confirmed the CPU supports SSE4.2, the only requirement of
        // `crc32c_sse42` beyond a valid slice.
        return Some(unsafe { x86::crc32c_sse42(data) });
    }
    let _ = data;
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    #[cfg(not(target_feature = "sse4.2"))]
    use core::sync::atomic::{AtomicU8, Ordering};

    /// Whether the CPU has SSE4.2: a constant when the build enables it.
    #[cfg(target_feature = "sse4.2")]
    #[inline(always)]
    pub(super) fn has_sse42() -> bool {
        true
    }

    /// 0: not yet probed, 1: absent, 2: present.
    #[cfg(not(target_feature = "sse4.2"))]
    static SSE42: AtomicU8 = AtomicU8::new(0);

    /// Whether the CPU has SSE4.2: CPUID leaf 1, ECX bit 20, probed once.
    #[cfg(not(target_feature = "sse4.2"))]
    #[inline]
    pub(super) fn has_sse42() -> bool {
        match SSE42.load(Ordering::Relaxed) {
            2 => true,
            1 => false,
            _ => probe(),
        }
    }

    #[cfg(not(target_feature = "sse4.2"))]
    #[cold]
    fn probe() -> bool {
        #[allow(unused_unsafe)] // reason: `__cpuid` is an unsafe fn before Rust 1.94, safe after
        // SAFETY: CPUID leaf 1 exists on every x86_64 processor.
        let ecx = unsafe { core::arch::x86_64::__cpuid(1) }.ecx;
        let present = ecx & (1 << 20) != 0;
        SSE42.store(if present { 2 } else { 1 }, Ordering::Relaxed);
        present
    }

    /// CRC-32C of `data` with the `crc32` instruction (it uses the Castagnoli polynomial).
    ///
    /// # Safety
    /// The CPU must support SSE4.2.
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn crc32c_sse42(data: &[u8]) -> u32 {
        let mut crc = u64::from(!0u32);
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            #[allow(unused_unsafe)] // reason: the intrinsic is an unsafe fn before Rust 1.87
            // SAFETY: SSE4.2 is enabled for this function and present per the caller.
            let next = unsafe { _mm_crc32_u64(crc, w) };
            crc = next;
        }
        let mut crc = crc as u32;
        let mut rest = chunks.remainder();
        if let [a, b, c, d, tail @ ..] = rest {
            let w = u32::from_le_bytes([*a, *b, *c, *d]);
            #[allow(unused_unsafe)] // reason: the intrinsic is an unsafe fn before Rust 1.87
            // SAFETY: as above.
            let next = unsafe { _mm_crc32_u32(crc, w) };
            crc = next;
            rest = tail;
        }
        for &b in rest {
            #[allow(unused_unsafe)] // reason: the intrinsic is an unsafe fn before Rust 1.87
            // SAFETY: as above.
            let next = unsafe { _mm_crc32_u8(crc, b) };
            crc = next;
        }
        !crc
    }
}

/// CRC-32C of `data`, with the implementation suited to the target (see the module docs).
#[must_use]
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(c) = crc32c_hw(data) {
        return c;
    }
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

    #[test]
    fn hardware_path_matches_cpu() {
        extern crate std;
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            crc32c_hw(b"").is_some(),
            std::arch::is_x86_feature_detected!("sse4.2")
        );
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(crc32c_hw(b"123456789"), None);
        if let Some(c) = crc32c_hw(b"123456789") {
            assert_eq!(c, 0xE306_9283);
        }
    }

    proptest::proptest! {
        #[test]
        fn implementations_agree(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            proptest::prop_assert_eq!(crc32c_slice8(&data), crc32c_nibble(&data));
            if let Some(hw) = crc32c_hw(&data) {
                proptest::prop_assert_eq!(hw, crc32c_nibble(&data));
            }
        }
    }
}
