//! A seeded random permutation of `0..n` in O(1) memory (the guest has no heap and its region is
//! not mapped yet): a full-period LCG over `0..2^b` (`c` odd, `a` = 1 mod 4, Hull-Dobell), each
//! value scrambled by a bijection of `b`-bit integers (xorshift, then multiply by an odd
//! constant), and values >= n skipped (2^b < 2n, so at most half are).

use crate::pattern::page_seed;

/// The pages of a region in a seeded random order.
pub struct Order {
    n: u64,
    bits: u32,
    mask: u64,
    a: u64,
    c: u64,
    x: u64,
    left: u64,
}

impl Order {
    /// A permutation of `0..n` seeded by `seed` (the vCPU id: each vCPU has its own order).
    pub fn new(n: u64, seed: u64) -> Self {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        };
        let r = page_seed(seed, 0x5eed);
        Self {
            n,
            bits,
            mask,
            a: (r << 2 | 1) & mask,
            c: (r >> 17 | 1) & mask,
            x: (r >> 31) & mask,
            left: n,
        }
    }

    fn scramble(&self, x: u64) -> u64 {
        let s = self.bits / 2 + 1;
        let y = if s < self.bits { x ^ (x >> s) } else { x };
        y.wrapping_mul(0x9e37_79b9_7f4a_7c15) & self.mask
    }
}

impl Iterator for Order {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        loop {
            self.x = self.x.wrapping_mul(self.a).wrapping_add(self.c) & self.mask;
            let v = self.scramble(self.x);
            if v < self.n {
                self.left -= 1;
                return Some(v);
            }
        }
    }
}
