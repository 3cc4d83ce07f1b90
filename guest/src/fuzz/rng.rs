//! The fuzzer's PRNG: splitmix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number
//! generators", 2014), one per vCPU, seeded from the run's seed and the vCPU id so every vCPU has
//! its own stream and a run is replayed exactly by giving the same `seed=`.

/// A splitmix64 stream.
pub struct Rng(u64);

impl Rng {
    /// The stream of vCPU `id` for run seed `seed`.
    pub fn new(seed: u64, id: u64) -> Self {
        let mut r = Self(seed ^ id.wrapping_mul(0xA076_1D64_78BD_642F));
        // Decorrelate neighbouring ids and seeds before the first draw.
        r.next();
        r
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0; the modulo bias is irrelevant for a fuzzer).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `num`/`den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
