//! The ChaCha20 block function (RFC 8439 §2.3) over several independent states at once.
//!
//! A lane group is `L` blocks laid out *word-major* ("vertical"): `input[w][l]` is word `w` of
//! lane `l`'s input state. One SIMD register then holds the same word of `L` states, every
//! step of a quarter round is one vector instruction for all lanes, and no shuffles are needed
//! between rounds. Only words 0..8 of each output block are produced: the envelope uses 32
//! bytes of each block (the Poly1305 one-time key from block 0, the keystream for the 32-byte
//! frame from block 1).

use zeroize::Zeroize;

/// `"expand 32-byte k"`, the first row of the ChaCha20 state (RFC 8439 §2.3).
pub(super) const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// Words of each output block that the envelope uses.
pub(super) const OUT_WORDS: usize = 8;

/// Computes `L` ChaCha20 blocks: `out[w][l]` = word `w` (of the first [`OUT_WORDS`]) of the
/// block for input state `input[..][l]`, input added (RFC 8439 §2.3).
pub(super) trait Kernel<const L: usize> {
    fn blocks(input: &[[u32; L]; 16], out: &mut [[u32; L]; OUT_WORDS]);
}

/// The same word of `L` states: the operations a quarter round needs.
pub(super) trait Word<const L: usize>: Copy {
    fn load(words: &[u32; L]) -> Self;
    fn store(self, out: &mut [u32; L]);
    fn add(self, other: Self) -> Self;
    fn xor(self, other: Self) -> Self;
    fn rotl16(self) -> Self;
    fn rotl12(self) -> Self;
    fn rotl8(self) -> Self;
    fn rotl7(self) -> Self;
}

/// One quarter round (RFC 8439 §2.1) on words `a, b, c, d` of every lane.
#[inline(always)]
fn quarter_round<W: Word<L>, const L: usize>(
    x: &mut [W; 16],
    a: usize,
    b: usize,
    c: usize,
    d: usize,
) {
    x[a] = x[a].add(x[b]);
    x[d] = x[d].xor(x[a]).rotl16();
    x[c] = x[c].add(x[d]);
    x[b] = x[b].xor(x[c]).rotl12();
    x[a] = x[a].add(x[b]);
    x[d] = x[d].xor(x[a]).rotl8();
    x[c] = x[c].add(x[d]);
    x[b] = x[b].xor(x[c]).rotl7();
}

/// The 20 rounds over `L` vertical lanes, then the addition of the input for the words kept.
/// Written once for every vector width; `#[inline(always)]` so that it compiles with the
/// target features of the function it lands in.
#[inline(always)]
pub(super) fn vertical_blocks<W: Word<L>, const L: usize>(
    input: &[[u32; L]; 16],
    out: &mut [[u32; L]; OUT_WORDS],
) {
    // Spelled out rather than `array::from_fn`: a closure that is not inlined would be
    // compiled without the caller's target features and call each intrinsic out of line.
    let i = input;
    let init: [W; 16] = [
        W::load(&i[0]),
        W::load(&i[1]),
        W::load(&i[2]),
        W::load(&i[3]),
        W::load(&i[4]),
        W::load(&i[5]),
        W::load(&i[6]),
        W::load(&i[7]),
        W::load(&i[8]),
        W::load(&i[9]),
        W::load(&i[10]),
        W::load(&i[11]),
        W::load(&i[12]),
        W::load(&i[13]),
        W::load(&i[14]),
        W::load(&i[15]),
    ];
    let mut x = init;
    for _ in 0..10 {
        quarter_round(&mut x, 0, 4, 8, 12);
        quarter_round(&mut x, 1, 5, 9, 13);
        quarter_round(&mut x, 2, 6, 10, 14);
        quarter_round(&mut x, 3, 7, 11, 15);
        quarter_round(&mut x, 0, 5, 10, 15);
        quarter_round(&mut x, 1, 6, 11, 12);
        quarter_round(&mut x, 2, 7, 8, 13);
        quarter_round(&mut x, 3, 4, 9, 14);
    }
    for (w, o) in out.iter_mut().enumerate() {
        x[w].add(init[w]).store(o);
    }
}

/// One lane in a plain `u32`: the portable path, also what every target can run.
impl Word<1> for u32 {
    #[inline(always)]
    fn load(words: &[u32; 1]) -> u32 {
        words[0]
    }
    #[inline(always)]
    fn store(self, out: &mut [u32; 1]) {
        out[0] = self;
    }
    #[inline(always)]
    fn add(self, other: u32) -> u32 {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn xor(self, other: u32) -> u32 {
        self ^ other
    }
    #[inline(always)]
    fn rotl16(self) -> u32 {
        self.rotate_left(16)
    }
    #[inline(always)]
    fn rotl12(self) -> u32 {
        self.rotate_left(12)
    }
    #[inline(always)]
    fn rotl8(self) -> u32 {
        self.rotate_left(8)
    }
    #[inline(always)]
    fn rotl7(self) -> u32 {
        self.rotate_left(7)
    }
}

/// The portable kernel: the lanes one after the other, each a single 16-word state, so a
/// 32-bit core with 13 general registers holds one state rather than spilling two.
pub(super) struct Portable;

impl<const L: usize> Kernel<L> for Portable {
    #[inline(always)]
    fn blocks(input: &[[u32; L]; 16], out: &mut [[u32; L]; OUT_WORDS]) {
        for l in 0..L {
            let mut one: [[u32; 1]; 16] = core::array::from_fn(|w| [input[w][l]]);
            let mut block = [[0u32; 1]; OUT_WORDS];
            vertical_blocks::<u32, 1>(&one, &mut block);
            for (o, b) in out.iter_mut().zip(&block) {
                o[l] = b[0];
            }
            one.zeroize();
            block.zeroize();
        }
    }
}
