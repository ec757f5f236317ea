//! Poly1305 (RFC 8439 §2.5) over `D` independent messages at once, word-major like the
//! ChaCha20 lanes: `h[limb][lane]`. Each step is a loop over the lanes with no dependence
//! between them, so the compiler turns it into vector multiplies where the enclosing function
//! has them (`vpmuludq` under AVX2: four 32x32->64-bit products per instruction) and the CPU
//! overlaps the lanes where it does not.
//!
//! The arithmetic is the envelope's: radix 2^32, four limbs plus a small fifth, the partial
//! reduction of OpenSSL's 32-bit `poly1305_blocks`, a branch-free final reduction. The clamping
//! of `r` keeps every sum of products below 2^63. Messages here are whole 16-byte blocks (the
//! AEAD pads what it authenticates), so a partial final block never occurs.

use zeroize::Zeroize;

pub(super) struct PolyLanes<const D: usize> {
    r: [[u32; D]; 4],
    h: [[u32; D]; 5],
    s: [[u32; D]; 4],
}

impl<const D: usize> PolyLanes<D> {
    /// From the one-time keys `r || s` as eight little-endian words per lane; clamps `r`.
    #[inline(always)]
    pub(super) fn new(key: &[[u32; D]; 8]) -> PolyLanes<D> {
        const CLAMP: [u32; 4] = [0x0fff_ffff, 0x0fff_fffc, 0x0fff_fffc, 0x0fff_fffc];
        PolyLanes {
            r: core::array::from_fn(|i| core::array::from_fn(|l| key[i][l] & CLAMP[i])),
            h: [[0; D]; 5],
            s: core::array::from_fn(|i| key[4 + i]),
        }
    }

    /// Absorbs one full block per lane, four little-endian words each: `h = (h + m + 2^128) *
    /// r`, partially reduced mod 2^130 - 5.
    #[inline(always)]
    pub(super) fn block(&mut self, m: &[[u32; D]; 4]) {
        let mul = |a: u32, b: u32| u64::from(a) * u64::from(b);
        for l in 0..D {
            let (r0, r1, r2, r3) = (self.r[0][l], self.r[1][l], self.r[2][l], self.r[3][l]);
            // r1..r3 are multiples of 4 below 2^28, so r_i * 5 / 4 = r_i + r_i / 4 < 2^29.
            let s1 = r1 + (r1 >> 2);
            let s2 = r2 + (r2 >> 2);
            let s3 = r3 + (r3 >> 2);
            let h = &mut self.h;
            // h += m + 2^128. h4 <= 4 on entry, so x4 <= 6.
            let d0 = u64::from(h[0][l]) + u64::from(m[0][l]);
            let d1 = u64::from(h[1][l]) + (d0 >> 32) + u64::from(m[1][l]);
            let d2 = u64::from(h[2][l]) + (d1 >> 32) + u64::from(m[2][l]);
            let d3 = u64::from(h[3][l]) + (d2 >> 32) + u64::from(m[3][l]);
            let (x0, x1, x2, x3) = (d0 as u32, d1 as u32, d2 as u32, d3 as u32);
            let x4 = h[4][l] + (d3 >> 32) as u32 + 1;
            // h *= r; what lies above 2^130 folds back times 5 (the s_i). Each sum < 2^63.
            let d0 = mul(x0, r0) + mul(x1, s3) + mul(x2, s2) + mul(x3, s1);
            let d1 = mul(x0, r1) + mul(x1, r0) + mul(x2, s3) + mul(x3, s2) + u64::from(x4 * s1);
            let d2 = mul(x0, r2) + mul(x1, r1) + mul(x2, r0) + mul(x3, s3) + u64::from(x4 * s2);
            let d3 = mul(x0, r3) + mul(x1, r2) + mul(x2, r1) + mul(x3, r0) + u64::from(x4 * s3);
            let d1 = d1 + (d0 >> 32);
            let d2 = d2 + (d1 >> 32);
            let d3 = d3 + (d2 >> 32);
            let t4 = x4 * r0 + (d3 >> 32) as u32; // < 2^31 + 2^30
            let c = u64::from((t4 >> 2) + (t4 & !3)); // 5 * (t4 >> 2) < 2^32
            let e0 = (d0 & 0xffff_ffff) + c;
            let e1 = (d1 & 0xffff_ffff) + (e0 >> 32);
            let e2 = (d2 & 0xffff_ffff) + (e1 >> 32);
            let e3 = (d3 & 0xffff_ffff) + (e2 >> 32);
            h[0][l] = e0 as u32;
            h[1][l] = e1 as u32;
            h[2][l] = e2 as u32;
            h[3][l] = e3 as u32;
            h[4][l] = (t4 & 3) + (e3 >> 32) as u32; // <= 4
        }
    }

    /// Clears the accumulator of the lanes whose `keep` is 0 and leaves those whose `keep` is
    /// all ones: how a lane with no associated data skips the AAD block that its neighbours
    /// absorb (called right after the first block, when every accumulator started at zero).
    #[inline(always)]
    pub(super) fn keep(&mut self, keep: &[u32; D]) {
        for limb in &mut self.h {
            for (h, k) in limb.iter_mut().zip(keep) {
                *h &= k;
            }
        }
    }

    /// The tags: `h` fully reduced mod 2^130 - 5, plus `s`, mod 2^128; four little-endian
    /// words per lane. Leaves the state for [`PolyLanes::wipe`].
    #[inline(always)]
    #[allow(
        clippy::needless_range_loop,
        reason = "word-major lanes: `l` indexes every limb array"
    )]
    pub(super) fn finish(&self) -> [[u32; D]; 4] {
        let mut out = [[0u32; D]; 4];
        for l in 0..D {
            let [h0, h1, h2, h3, h4] = [0, 1, 2, 3, 4].map(|i| self.h[i][l]);
            // g = h + 5; if it reaches 2^130 then h >= p and h - p is the low 130 bits of g.
            let g0 = u64::from(h0) + 5;
            let g1 = u64::from(h1) + (g0 >> 32);
            let g2 = u64::from(h2) + (g1 >> 32);
            let g3 = u64::from(h3) + (g2 >> 32);
            let g4 = h4 + (g3 >> 32) as u32;
            let use_g = 0u32.wrapping_sub(g4 >> 2); // all ones if g >= 2^130. Branch-free.
            let pick = |h: u32, g: u64| (h & !use_g) | (g as u32 & use_g);
            let w = [pick(h0, g0), pick(h1, g1), pick(h2, g2), pick(h3, g3)];
            let mut carry = 0u64;
            for i in 0..4 {
                carry += u64::from(w[i]) + u64::from(self.s[i][l]);
                out[i][l] = carry as u32;
                carry >>= 32;
            }
        }
        out
    }

    /// Zeroizes the one-time keys and the accumulators.
    #[inline(always)]
    pub(super) fn wipe(&mut self) {
        self.r.zeroize();
        self.h.zeroize();
        self.s.zeroize();
    }
}
