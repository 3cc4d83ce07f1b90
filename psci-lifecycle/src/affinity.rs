//! MPIDR affinity values as PSCI passes them (DEN0022 5.1.4 "CPU_ON", `target_cpu`; 5.1.5
//! "AFFINITY_INFO", `target_affinity` and `lowest_affinity_level`).
//!
//! The value is a copy of the MPIDR's affinity fields: Aff3 in bits [39:32] (SMC64/HVC64 calls
//! only: an SMC32 call has no room for it, so Aff3 is 0), Aff2 in [23:16], Aff1 in [15:8], Aff0
//! in [7:0]. "All other bits must be zero": a value with any of them set names no core, and the
//! call answers INVALID_PARAMETERS. (So MPIDR_EL1 as read, with its RES1 bit 31, is not a valid
//! `target_cpu`; Linux and kvm-unit-tests pass the masked hardware ID.)

/// The affinity fields of an MPIDR: Aff3 [39:32], Aff2 [23:16], Aff1 [15:8], Aff0 [7:0].
pub const MASK: u64 = 0xFF_00FF_FFFF;

/// The highest affinity level (Aff3).
pub const MAX_LEVEL: u32 = 3;

/// `raw` as an affinity value, or None if a bit outside the affinity fields is set.
pub fn parse(raw: u64) -> Option<u64> {
    (raw & !MASK == 0).then_some(raw)
}

/// The affinity fields compared at `lowest_affinity_level` `level`: the fields of that level and
/// above (AFFINITY_INFO ignores the ones below). None past Aff3.
pub fn level_mask(level: u32) -> Option<u64> {
    match level {
        0 => Some(MASK),
        1 => Some(MASK & !0xFF),
        2 => Some(MASK & !0xFFFF),
        3 => Some(MASK & !0xFF_FFFF),
        _ => None,
    }
}

/// The affinity value of an MPIDR register value (its affinity fields, the rest dropped).
pub fn of_mpidr(mpidr: u64) -> u64 {
    mpidr & MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_bits_outside_the_fields() {
        assert_eq!(parse(0x1_0000_0203), Some(0x1_0000_0203));
        assert_eq!(parse(0x8000_0000), None); // MPIDR bit 31 (RES1)
        assert_eq!(parse(1 << 24), None); // MT
        assert_eq!(parse(1 << 40), None);
    }

    #[test]
    fn levels() {
        assert_eq!(level_mask(0), Some(0xFF_00FF_FFFF));
        assert_eq!(level_mask(1), Some(0xFF_00FF_FF00));
        assert_eq!(level_mask(2), Some(0xFF_00FF_0000));
        assert_eq!(level_mask(3), Some(0xFF_0000_0000));
        assert_eq!(level_mask(4), None);
        assert_eq!(of_mpidr(0x8100_0003), 3);
    }
}
