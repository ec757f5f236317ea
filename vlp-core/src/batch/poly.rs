//! Poly1305 (RFC 8439 §2.5) over `D` independent messages at once, one message per 64-bit
//! lane of a [`Limbs`] value.
//!
//! Radix 2^26 (five 26-bit limbs, as poly1305-donna-32 and the usual SIMD Poly1305s): a block
//! is 25 independent 32x32->64-bit products and a carry chain, the same operations in every
//! lane, so one vector instruction serves every lane: `vpmuludq` multiplies four lanes under
//! AVX2, `pmuludq` two under SSE2, and the portable path is plain `u64` arithmetic. The
//! algorithm is written once over [`Limbs`]. No branch or index depends on a limb; the final
//! reduction selects with a mask. Messages here are whole 16-byte blocks (the AEAD pads what
//! it authenticates), so a partial final block never occurs.

use zeroize::Zeroize;

const MASK26: u32 = 0x03ff_ffff;

/// `D` lanes of 64 bits: the operations a radix-2^26 Poly1305 block needs.
pub(super) trait Limbs<const D: usize>: Copy + Zeroize {
    /// Each lane from one 32-bit word, zero-extended.
    fn load(words: &[u32; D]) -> Self;
    /// Every lane to memory.
    fn store(self, out: &mut [u64; D]);
    /// `v` in every lane.
    fn splat(v: u32) -> Self;
    /// Lane-wise 64-bit addition.
    fn add(self, other: Self) -> Self;
    /// Lane-wise product of the low 32 bits of each operand, 64 bits wide.
    fn mul32(self, other: Self) -> Self;
    fn and(self, other: Self) -> Self;
    fn or(self, other: Self) -> Self;
    fn shr<const N: i32>(self) -> Self;
    fn shl<const N: i32>(self) -> Self;
}

/// One lane in a `u64`: the portable path.
impl Limbs<1> for u64 {
    #[inline(always)]
    fn load(words: &[u32; 1]) -> u64 {
        u64::from(words[0])
    }
    #[inline(always)]
    fn store(self, out: &mut [u64; 1]) {
        out[0] = self;
    }
    #[inline(always)]
    fn splat(v: u32) -> u64 {
        u64::from(v)
    }
    #[inline(always)]
    fn add(self, other: u64) -> u64 {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn mul32(self, other: u64) -> u64 {
        u64::from(self as u32) * u64::from(other as u32)
    }
    #[inline(always)]
    fn and(self, other: u64) -> u64 {
        self & other
    }
    #[inline(always)]
    fn or(self, other: u64) -> u64 {
        self | other
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> u64 {
        self >> N
    }
    #[inline(always)]
    fn shl<const N: i32>(self) -> u64 {
        self << N
    }
}

pub(super) struct PolyLanes<P: Limbs<D>, const D: usize> {
    /// `r`, clamped, in 26-bit limbs.
    r: [P; 5],
    /// `5 r_1 .. 5 r_4`: what lies above 2^130 folds back multiplied by 5.
    r5: [P; 4],
    /// The accumulator, in 26-bit limbs (partially reduced between blocks: each < 2^27).
    h: [P; 5],
    /// `s`, four little-endian words per lane.
    s: [[u32; D]; 4],
}

impl<P: Limbs<D>, const D: usize> PolyLanes<P, D> {
    /// From the one-time keys `r || s`: words 0..8 of lanes 0..D of `key` (lanes beyond `D`
    /// are ignored). Clamps `r`.
    #[inline(always)]
    pub(super) fn new<const L: usize>(key: &[[u32; L]; 8]) -> PolyLanes<P, D> {
        let mut t: [[u32; D]; 4] = core::array::from_fn(|i| core::array::from_fn(|l| key[i][l]));
        // No `array::map` with a closure over `P`: see `block`.
        let (t0, t1, t2, t3) = (
            P::load(&t[0]),
            P::load(&t[1]),
            P::load(&t[2]),
            P::load(&t[3]),
        );
        t.zeroize();
        // Clamping (r &= 0x0ffffffc0ffffffc0ffffffc0fffffff) folded into the limb masks.
        let r = [
            t0.and(P::splat(0x03ff_ffff)),
            t0.shr::<26>().or(t1.shl::<6>()).and(P::splat(0x03ff_ff03)),
            t1.shr::<20>().or(t2.shl::<12>()).and(P::splat(0x03ff_c0ff)),
            t2.shr::<14>().or(t3.shl::<18>()).and(P::splat(0x03f0_3fff)),
            t3.shr::<8>().and(P::splat(0x000f_ffff)),
        ];
        let five = |x: P| x.shl::<2>().add(x);
        PolyLanes {
            r,
            r5: [five(r[1]), five(r[2]), five(r[3]), five(r[4])],
            h: [P::splat(0); 5],
            s: core::array::from_fn(|i| core::array::from_fn(|l| key[4 + i][l])),
        }
    }

    /// Absorbs one full block per lane, four little-endian words each: `h = (h + m + 2^128) *
    /// r`, partially reduced mod 2^130 - 5.
    #[inline(always)]
    pub(super) fn block(&mut self, m: &[[u32; D]; 4]) {
        let mask = P::splat(MASK26);
        // Spelled out rather than `array::map`: a closure that is not inlined would be compiled
        // without the caller's target features and call each intrinsic out of line.
        let (t0, t1, t2, t3) = (
            P::load(&m[0]),
            P::load(&m[1]),
            P::load(&m[2]),
            P::load(&m[3]),
        );
        let [r0, r1, r2, r3, r4] = self.r;
        let [s1, s2, s3, s4] = self.r5;
        let h = &mut self.h;
        // h += m + 2^128: limbs below 2^27.
        let h0 = h[0].add(t0.and(mask));
        let h1 = h[1].add(t0.shr::<26>().or(t1.shl::<6>()).and(mask));
        let h2 = h[2].add(t1.shr::<20>().or(t2.shl::<12>()).and(mask));
        let h3 = h[3].add(t2.shr::<14>().or(t3.shl::<18>()).and(mask));
        let h4 = h[4].add(t3.shr::<8>().or(P::splat(1 << 24)));
        // h *= r: products of < 2^27 by < 2^29, five per limb: each sum < 2^62.
        let dot = |a: [P; 5], b: [P; 5]| {
            a[0].mul32(b[0])
                .add(a[1].mul32(b[1]))
                .add(a[2].mul32(b[2]))
                .add(a[3].mul32(b[3]))
                .add(a[4].mul32(b[4]))
        };
        let hs = [h0, h1, h2, h3, h4];
        let d0 = dot(hs, [r0, s4, s3, s2, s1]);
        let d1 = dot(hs, [r1, r0, s4, s3, s2]);
        let d2 = dot(hs, [r2, r1, r0, s4, s3]);
        let d3 = dot(hs, [r3, r2, r1, r0, s4]);
        let d4 = dot(hs, [r4, r3, r2, r1, r0]);
        // Carry through the limbs; bits 130.. come back into limb 0 times 5.
        let d1 = d1.add(d0.shr::<26>());
        let d2 = d2.add(d1.shr::<26>());
        let d3 = d3.add(d2.shr::<26>());
        let d4 = d4.add(d3.shr::<26>());
        let c = d4.shr::<26>(); // < 2^36: times 5 by shift and add, not by a 32-bit multiply
        let e0 = d0.and(mask).add(c.shl::<2>()).add(c);
        h[0] = e0.and(mask);
        h[1] = d1.and(mask).add(e0.shr::<26>());
        h[2] = d2.and(mask);
        h[3] = d3.and(mask);
        h[4] = d4.and(mask);
    }

    /// Clears the accumulator of the lanes whose `keep` is 0 and leaves those whose `keep` is
    /// all ones: how a lane with no associated data skips the AAD block that its neighbours
    /// absorb (called right after the first block, when every accumulator started at zero).
    #[inline(always)]
    pub(super) fn keep(&mut self, keep: &[u32; D]) {
        // Zero-extended all-ones covers the limbs, which are below 2^32.
        let k = P::load(keep);
        for h in &mut self.h {
            *h = h.and(k);
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
        let mut limbs = [[0u64; D]; 5];
        for (h, out) in self.h.iter().zip(&mut limbs) {
            h.store(out);
        }
        let mut out = [[0u32; D]; 4];
        for l in 0..D {
            // Each limb is below 2^27.
            let [a, b, c, d, e] = &limbs;
            let (mut h0, mut h1, mut h2, mut h3, mut h4) = (
                a[l] as u32,
                b[l] as u32,
                c[l] as u32,
                d[l] as u32,
                e[l] as u32,
            );
            // Full carry: every limb below 2^26, h < 2^130 + small.
            h2 += h1 >> 26;
            h1 &= MASK26;
            h3 += h2 >> 26;
            h2 &= MASK26;
            h4 += h3 >> 26;
            h3 &= MASK26;
            h0 += (h4 >> 26) * 5;
            h4 &= MASK26;
            h1 += h0 >> 26;
            h0 &= MASK26;
            // g = h + 5 - 2^130; if it does not go negative then h >= p and g is h - p.
            let g0 = h0 + 5;
            let g1 = h1 + (g0 >> 26);
            let g2 = h2 + (g1 >> 26);
            let g3 = h3 + (g2 >> 26);
            let g4 = (h4 + (g3 >> 26)).wrapping_sub(1 << 26);
            let use_g = (g4 >> 31).wrapping_sub(1); // all ones if g4 >= 0. Branch-free.
            let pick = |h: u32, g: u32| (h & !use_g) | (g & MASK26 & use_g);
            let (h0, h1, h2, h3, h4) = (
                pick(h0, g0),
                pick(h1, g1),
                pick(h2, g2),
                pick(h3, g3),
                pick(h4, g4),
            );
            // Back to four 32-bit words (mod 2^128), plus s.
            let w = [
                h0 | (h1 << 26),
                (h1 >> 6) | (h2 << 20),
                (h2 >> 12) | (h3 << 14),
                (h3 >> 18) | (h4 << 8),
            ];
            let mut carry = 0u64;
            for i in 0..4 {
                carry += u64::from(w[i]) + u64::from(self.s[i][l]);
                out[i][l] = carry as u32;
                carry >>= 32;
            }
        }
        limbs.zeroize();
        out
    }

    /// Zeroizes the one-time keys and the accumulators.
    #[inline(always)]
    pub(super) fn wipe(&mut self) {
        self.r.zeroize();
        self.r5.zeroize();
        self.h.zeroize();
        self.s.zeroize();
    }
}
