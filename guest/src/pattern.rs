//! The `demand` workload's data pattern and checksum, shared by the guest (which writes and
//! checksums) and the hypervisor (which recomputes both from the backing pages).

/// 64-bit words in a 4 KiB page.
pub const WORDS_PER_PAGE: u64 = 512;

/// Checksum starting value (FNV-1a offset basis).
pub const CHECKSUM_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// Per-page seed: a splitmix64 finalizer over (vCPU id, page number), so every page of every
/// vCPU holds different data and a page written to the wrong place is caught.
#[inline(always)]
pub fn page_seed(vcpu: u64, page: u64) -> u64 {
    let mut x = (vcpu << 40) ^ page ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The word at index `word` of a page whose seed is `seed`.
#[inline(always)]
pub fn word(seed: u64, word: u64) -> u64 {
    seed.wrapping_add(word.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Folds one word into the checksum (order-sensitive, so swapped words are caught too).
#[inline(always)]
pub fn checksum_step(sum: u64, value: u64) -> u64 {
    (sum ^ value)
        .wrapping_mul(0x0000_0100_0000_01b3)
        .rotate_left(17)
}
