//! The x86-64 lane groups: SSE2 (4 lanes, baseline on x86-64) and AVX2 (8 lanes, detected at
//! run time with `cpufeatures`). Two lanes per datagram (ChaCha20 blocks 0 and 1), so a group
//! opens 2 (SSE2) or 4 (AVX2) datagrams.
//!
//! The vector types below are only ever created inside a group function (or the unit tests'
//! equivalents): the SSE2 ones are the target's baseline, and the AVX2 ones only run inside
//! [`open_group_avx2`], which is reachable only through an [`Avx2`] token, which exists only
//! when the CPU reported AVX2.

use core::arch::x86_64::{
    __m128i, __m256i, _mm256_add_epi32, _mm256_add_epi64, _mm256_and_si256, _mm256_cvtepu32_epi64,
    _mm256_loadu_si256, _mm256_mul_epu32, _mm256_or_si256, _mm256_set1_epi64x, _mm256_setr_epi8,
    _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_slli_epi64, _mm256_srli_epi32,
    _mm256_srli_epi64, _mm256_storeu_si256, _mm256_xor_si256, _mm_add_epi32, _mm_add_epi64,
    _mm_and_si128, _mm_loadl_epi64, _mm_loadu_si128, _mm_mul_epu32, _mm_or_si128, _mm_set1_epi64x,
    _mm_setzero_si128, _mm_shufflehi_epi16, _mm_shufflelo_epi16, _mm_slli_epi32, _mm_slli_epi64,
    _mm_srli_epi32, _mm_srli_epi64, _mm_storeu_si128, _mm_unpacklo_epi32, _mm_xor_si128,
};

use zeroize::Zeroize;

use super::chacha::{vertical_blocks, Kernel, Word, OUT_WORDS};
use super::poly::Limbs;
use super::{open_group, Job, Opened};

cpufeatures::new!(cpuid_avx2, "avx2");

/// Proof that this CPU runs AVX2: the only way to reach the AVX2 group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Avx2(());

impl Avx2 {
    /// `Some` if the CPU (and the OS, for the wide registers) supports AVX2.
    pub(super) fn detect() -> Option<Avx2> {
        cpuid_avx2::get().then_some(Avx2(()))
    }
}

/// Four lanes in an SSE2 register.
#[derive(Clone, Copy)]
struct Sse2Word(__m128i);

// SSE2 is part of the x86-64 baseline: its arithmetic intrinsics are safe to call in any
// function since Rust 1.87, and needed `unsafe` before (the crate's MSRV is 1.81).
#[allow(
    unused_unsafe,
    reason = "SSE2 intrinsics became safe on x86-64 in Rust 1.87"
)]
impl Word<4> for Sse2Word {
    #[inline(always)]
    fn load(words: &[u32; 4]) -> Sse2Word {
        // SAFETY: `words` is 16 readable bytes; `loadu` has no alignment requirement.
        Sse2Word(unsafe { _mm_loadu_si128(words.as_ptr().cast()) })
    }
    #[inline(always)]
    fn store(self, out: &mut [u32; 4]) {
        // SAFETY: `out` is 16 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), self.0) }
    }
    #[inline(always)]
    fn add(self, other: Sse2Word) -> Sse2Word {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Word(unsafe { _mm_add_epi32(self.0, other.0) })
    }
    #[inline(always)]
    fn xor(self, other: Sse2Word) -> Sse2Word {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Word(unsafe { _mm_xor_si128(self.0, other.0) })
    }
    #[inline(always)]
    fn rotl16(self) -> Sse2Word {
        // Swapping the 16-bit halves of each word: two shuffles instead of shifts and an or.
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Word(unsafe { _mm_shufflehi_epi16::<0xb1>(_mm_shufflelo_epi16::<0xb1>(self.0)) })
    }
    #[inline(always)]
    fn rotl12(self) -> Sse2Word {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Word(unsafe {
            _mm_or_si128(_mm_slli_epi32::<12>(self.0), _mm_srli_epi32::<20>(self.0))
        })
    }
    #[inline(always)]
    fn rotl8(self) -> Sse2Word {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Word(unsafe { _mm_or_si128(_mm_slli_epi32::<8>(self.0), _mm_srli_epi32::<24>(self.0)) })
    }
    #[inline(always)]
    fn rotl7(self) -> Sse2Word {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Word(unsafe { _mm_or_si128(_mm_slli_epi32::<7>(self.0), _mm_srli_epi32::<25>(self.0)) })
    }
}

/// Eight lanes in an AVX2 register. Values of this type exist only inside
/// [`open_group_avx2`] (see the module docs), which is what makes its methods sound.
#[derive(Clone, Copy)]
struct Avx2Word(__m256i);

impl Word<8> for Avx2Word {
    #[inline(always)]
    fn load(words: &[u32; 8]) -> Avx2Word {
        // SAFETY: `words` is 32 readable bytes, `loadu` has no alignment requirement; AVX2 is
        // present (this runs only inside `open_group_avx2`).
        Avx2Word(unsafe { _mm256_loadu_si256(words.as_ptr().cast()) })
    }
    #[inline(always)]
    fn store(self, out: &mut [u32; 8]) {
        // SAFETY: `out` is 32 writable bytes, no alignment requirement; AVX2 is present.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), self.0) }
    }
    #[inline(always)]
    fn add(self, other: Avx2Word) -> Avx2Word {
        // SAFETY: AVX2 is present (this runs only inside `open_group_avx2`).
        Avx2Word(unsafe { _mm256_add_epi32(self.0, other.0) })
    }
    #[inline(always)]
    fn xor(self, other: Avx2Word) -> Avx2Word {
        // SAFETY: AVX2 is present (this runs only inside `open_group_avx2`).
        Avx2Word(unsafe { _mm256_xor_si256(self.0, other.0) })
    }
    #[inline(always)]
    fn rotl16(self) -> Avx2Word {
        // SAFETY: AVX2 is present (this runs only inside `open_group_avx2`).
        Avx2Word(unsafe {
            let m = _mm256_setr_epi8(
                2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, //
                2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
            );
            _mm256_shuffle_epi8(self.0, m)
        })
    }
    #[inline(always)]
    fn rotl12(self) -> Avx2Word {
        // SAFETY: AVX2 is present (this runs only inside `open_group_avx2`).
        Avx2Word(unsafe {
            _mm256_or_si256(
                _mm256_slli_epi32::<12>(self.0),
                _mm256_srli_epi32::<20>(self.0),
            )
        })
    }
    #[inline(always)]
    fn rotl8(self) -> Avx2Word {
        // SAFETY: AVX2 is present (this runs only inside `open_group_avx2`).
        Avx2Word(unsafe {
            let m = _mm256_setr_epi8(
                3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, //
                3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14,
            );
            _mm256_shuffle_epi8(self.0, m)
        })
    }
    #[inline(always)]
    fn rotl7(self) -> Avx2Word {
        // SAFETY: AVX2 is present (this runs only inside `open_group_avx2`).
        Avx2Word(unsafe {
            _mm256_or_si256(
                _mm256_slli_epi32::<7>(self.0),
                _mm256_srli_epi32::<25>(self.0),
            )
        })
    }
}

/// Two 64-bit Poly1305 lanes in an SSE2 register.
#[derive(Clone, Copy)]
pub(super) struct Sse2Limbs(__m128i);

impl Zeroize for Sse2Limbs {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

#[allow(
    unused_unsafe,
    reason = "SSE2 intrinsics became safe on x86-64 in Rust 1.87"
)]
impl Limbs<2> for Sse2Limbs {
    #[inline(always)]
    fn load(words: &[u32; 2]) -> Sse2Limbs {
        // SAFETY: `words` is 8 readable bytes, `loadl` reads 8 with no alignment requirement;
        // SSE2 is baseline on x86-64.
        Sse2Limbs(unsafe {
            _mm_unpacklo_epi32(_mm_loadl_epi64(words.as_ptr().cast()), _mm_setzero_si128())
        })
    }
    #[inline(always)]
    fn store(self, out: &mut [u64; 2]) {
        // SAFETY: `out` is 16 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), self.0) }
    }
    #[inline(always)]
    fn splat(v: u32) -> Sse2Limbs {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Limbs(unsafe { _mm_set1_epi64x(i64::from(v)) })
    }
    #[inline(always)]
    fn add(self, other: Sse2Limbs) -> Sse2Limbs {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Limbs(unsafe { _mm_add_epi64(self.0, other.0) })
    }
    #[inline(always)]
    fn mul32(self, other: Sse2Limbs) -> Sse2Limbs {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Limbs(unsafe { _mm_mul_epu32(self.0, other.0) })
    }
    #[inline(always)]
    fn and(self, other: Sse2Limbs) -> Sse2Limbs {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Limbs(unsafe { _mm_and_si128(self.0, other.0) })
    }
    #[inline(always)]
    fn or(self, other: Sse2Limbs) -> Sse2Limbs {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Limbs(unsafe { _mm_or_si128(self.0, other.0) })
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Sse2Limbs {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Limbs(unsafe { _mm_srli_epi64::<N>(self.0) })
    }
    #[inline(always)]
    fn shl<const N: i32>(self) -> Sse2Limbs {
        // SAFETY: SSE2 is baseline on x86-64.
        Sse2Limbs(unsafe { _mm_slli_epi64::<N>(self.0) })
    }
}

/// Four 64-bit Poly1305 lanes in an AVX2 register; like [`Avx2Word`], only ever created
/// inside code compiled for, and run on, AVX2.
#[derive(Clone, Copy)]
pub(super) struct Avx2Limbs(__m256i);

impl Zeroize for Avx2Limbs {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Limbs<4> for Avx2Limbs {
    #[inline(always)]
    fn load(words: &[u32; 4]) -> Avx2Limbs {
        // SAFETY: `words` is 16 readable bytes, `loadu` has no alignment requirement; AVX2 is
        // present (see the type's docs).
        Avx2Limbs(unsafe { _mm256_cvtepu32_epi64(_mm_loadu_si128(words.as_ptr().cast())) })
    }
    #[inline(always)]
    fn store(self, out: &mut [u64; 4]) {
        // SAFETY: `out` is 32 writable bytes, no alignment requirement; AVX2 is present.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), self.0) }
    }
    #[inline(always)]
    fn splat(v: u32) -> Avx2Limbs {
        // SAFETY: AVX2 is present (see the type's docs).
        Avx2Limbs(unsafe { _mm256_set1_epi64x(i64::from(v)) })
    }
    #[inline(always)]
    fn add(self, other: Avx2Limbs) -> Avx2Limbs {
        // SAFETY: AVX2 is present (see the type's docs).
        Avx2Limbs(unsafe { _mm256_add_epi64(self.0, other.0) })
    }
    #[inline(always)]
    fn mul32(self, other: Avx2Limbs) -> Avx2Limbs {
        // SAFETY: AVX2 is present (see the type's docs).
        Avx2Limbs(unsafe { _mm256_mul_epu32(self.0, other.0) })
    }
    #[inline(always)]
    fn and(self, other: Avx2Limbs) -> Avx2Limbs {
        // SAFETY: AVX2 is present (see the type's docs).
        Avx2Limbs(unsafe { _mm256_and_si256(self.0, other.0) })
    }
    #[inline(always)]
    fn or(self, other: Avx2Limbs) -> Avx2Limbs {
        // SAFETY: AVX2 is present (see the type's docs).
        Avx2Limbs(unsafe { _mm256_or_si256(self.0, other.0) })
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Avx2Limbs {
        // SAFETY: AVX2 is present (see the type's docs).
        Avx2Limbs(unsafe { _mm256_srli_epi64::<N>(self.0) })
    }
    #[inline(always)]
    fn shl<const N: i32>(self) -> Avx2Limbs {
        // SAFETY: AVX2 is present (see the type's docs).
        Avx2Limbs(unsafe { _mm256_slli_epi64::<N>(self.0) })
    }
}

struct Sse2Kernel;

impl Kernel<4> for Sse2Kernel {
    #[inline(always)]
    fn blocks(input: &[[u32; 4]; 16], out: &mut [[u32; 4]; OUT_WORDS]) {
        vertical_blocks::<Sse2Word, 4>(input, out);
    }
}

struct Avx2Kernel;

impl Kernel<8> for Avx2Kernel {
    #[inline(always)]
    fn blocks(input: &[[u32; 8]; 16], out: &mut [[u32; 8]; OUT_WORDS]) {
        vertical_blocks::<Avx2Word, 8>(input, out);
    }
}

/// Opens up to 2 datagrams with SSE2.
#[inline(never)]
pub(super) fn open_group_sse2(jobs: &[Job<'_>], out: &mut [Opened]) {
    open_group::<Sse2Kernel, Sse2Limbs, 4, 2>(jobs, out);
}

/// Opens up to 4 datagrams with AVX2; the whole group (ChaCha20 and the Poly1305 lanes) is
/// compiled with AVX2 enabled.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
unsafe fn open_group_avx2(jobs: &[Job<'_>], out: &mut [Opened]) {
    open_group::<Avx2Kernel, Avx2Limbs, 8, 4>(jobs, out);
}

/// Opens a batch in groups of 2 with SSE2 (a last single datagram on the portable path).
pub(super) fn open_sse2(jobs: &[Job<'_>], out: &mut [Opened]) {
    for (j, o) in jobs.chunks(2).zip(out.chunks_mut(2)) {
        if j.len() == 2 {
            open_group_sse2(j, o);
        } else {
            super::open_group_portable(j, o);
        }
    }
}

/// Opens a batch in groups of 4 with AVX2; a remainder of 2 goes to SSE2 and of 1 to the
/// portable path, which cost less than a mostly empty AVX2 group.
pub(super) fn open_avx2(_cpu: Avx2, jobs: &[Job<'_>], out: &mut [Opened]) {
    for (j, o) in jobs.chunks(4).zip(out.chunks_mut(4)) {
        match j.len() {
            1 => super::open_group_portable(j, o),
            2 => open_group_sse2(j, o),
            // SAFETY: an `Avx2` token exists only when the CPU reported AVX2.
            _ => unsafe { open_group_avx2(j, o) },
        }
    }
}

/// The SSE2 kernel alone, for the unit tests' RFC 8439 block vectors.
#[cfg(test)]
pub(super) fn blocks_sse2(input: &[[u32; 4]; 16], out: &mut [[u32; 4]; OUT_WORDS]) {
    Sse2Kernel::blocks(input, out);
}

/// The AVX2 kernel alone, for the unit tests' RFC 8439 block vectors.
#[cfg(test)]
pub(super) fn blocks_avx2(_cpu: Avx2, input: &[[u32; 8]; 16], out: &mut [[u32; 8]; OUT_WORDS]) {
    #[target_feature(enable = "avx2")]
    unsafe fn run(input: &[[u32; 8]; 16], out: &mut [[u32; 8]; OUT_WORDS]) {
        Avx2Kernel::blocks(input, out);
    }
    // SAFETY: an `Avx2` token exists only when the CPU reported AVX2.
    unsafe { run(input, out) }
}
