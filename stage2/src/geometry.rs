//! The shape of the table as VTCR_EL2 describes it: IPA size, start level, and how many tables
//! are concatenated at the start level.

use crate::desc::{level_shift, ENTRIES, PAGE_SIZE};
use crate::Error;

/// The most tables the architecture lets us concatenate at the start level (4 KiB granule).
const MAX_CONCATENATED: usize = 16;

/// Translation geometry for a 4 KiB granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    ipa_bits: u32,
    start_level: u8,
    root_entries: usize,
}

impl Geometry {
    /// The geometry for an `ipa_bits`-bit IPA space. With `start_level: None`, picks the level
    /// with the fewest levels that needs at most 16 concatenated root tables (as KVM does): 40
    /// bits start at level 1 with two concatenated tables, 39 at level 1 with one, 48 at level 0.
    ///
    /// # Errors
    /// [`Error::BadConfig`] if the IPA size or start level cannot be described by VTCR_EL2.
    pub fn new(ipa_bits: u32, start_level: Option<u8>) -> Result<Geometry, Error> {
        if !(25..=48).contains(&ipa_bits) {
            return Err(Error::BadConfig(
                "ipa_bits must be 25..=48 for a 4 KiB granule",
            ));
        }
        let fits = |level: u8| {
            ipa_bits > level_shift(level)
                && (1usize << (ipa_bits - level_shift(level))) <= ENTRIES * MAX_CONCATENATED
        };
        let start_level = match start_level {
            Some(l) if l <= 2 && fits(l) => l,
            Some(_) => return Err(Error::BadConfig("start level cannot cover this IPA size")),
            None => (0..=2)
                .rev()
                .find(|&l| fits(l))
                .ok_or(Error::BadConfig("no start level"))?,
        };
        Ok(Geometry {
            ipa_bits,
            start_level,
            root_entries: 1 << (ipa_bits - level_shift(start_level)),
        })
    }

    /// Bits of IPA translated.
    #[must_use]
    pub const fn ipa_bits(&self) -> u32 {
        self.ipa_bits
    }

    /// One past the highest IPA.
    #[must_use]
    pub const fn ipa_limit(&self) -> u64 {
        1 << self.ipa_bits
    }

    /// The level of the root table(s).
    #[must_use]
    pub const fn start_level(&self) -> u8 {
        self.start_level
    }

    /// Entries in the (possibly concatenated) root.
    #[must_use]
    pub const fn root_entries(&self) -> usize {
        self.root_entries
    }

    /// Pages the root occupies (concatenated tables); the root must be aligned to this many pages.
    #[must_use]
    pub const fn root_pages(&self) -> usize {
        self.root_entries.div_ceil(ENTRIES)
    }

    /// Root size in bytes.
    #[must_use]
    pub const fn root_bytes(&self) -> u64 {
        self.root_pages() as u64 * PAGE_SIZE
    }

    /// VTCR_EL2.T0SZ: the IPA size is 2^(64 - T0SZ).
    #[must_use]
    pub const fn t0sz(&self) -> u64 {
        64 - self.ipa_bits as u64
    }

    /// VTCR_EL2.SL0 for a 4 KiB granule: 0 starts at level 2, 1 at level 1, 2 at level 0.
    #[must_use]
    pub const fn sl0(&self) -> u64 {
        2 - self.start_level as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forty_bits_is_level1_two_tables() {
        let g = Geometry::new(40, None).unwrap();
        assert_eq!(
            (g.start_level(), g.root_entries(), g.root_pages()),
            (1, 1024, 2)
        );
        // The VTCR fields the QEMU notes recorded as working: T0SZ 24, SL0 1.
        assert_eq!((g.t0sz(), g.sl0()), (24, 1));
    }

    #[test]
    fn thirty_nine_and_forty_eight() {
        let g = Geometry::new(39, None).unwrap();
        assert_eq!((g.start_level(), g.root_pages(), g.t0sz()), (1, 1, 25));
        let g = Geometry::new(48, None).unwrap();
        assert_eq!((g.start_level(), g.root_entries(), g.sl0()), (0, 512, 2));
    }

    #[test]
    fn explicit_start_level_and_errors() {
        let g = Geometry::new(32, Some(1)).unwrap();
        assert_eq!(
            (g.start_level(), g.root_entries(), g.root_pages()),
            (1, 4, 1)
        );
        assert!(
            Geometry::new(48, Some(1)).is_err(),
            "2^18 root entries is over 16 tables"
        );
        assert!(Geometry::new(24, None).is_err());
        assert!(Geometry::new(49, None).is_err());
    }
}
