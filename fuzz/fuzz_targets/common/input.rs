//! The fuzz input read as fields, shared by the targets that include it.

/// Reads fixed-size fields off the front of the input, zero-padded when it runs out.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next `N` bytes (zeros past the end).
    pub fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    /// The next `n` bytes, fewer if the input ends first.
    #[allow(
        dead_code,
        reason = "not every target that includes this reads raw bytes"
    )]
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head.to_vec()
    }
}
