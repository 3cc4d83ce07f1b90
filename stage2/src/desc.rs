//! VMSAv8-64 stage-2 descriptors for the 4 KiB granule (Arm ARM D8.3, "Translation table
//! descriptor formats"), and the attribute set the rest of the crate speaks in.
//!
//! Bit layout used here:
//! ```text
//!  63..59  58..55  54..53  52  51   47..12      10  9..8  7..6   5..2     1    0
//!  ignored  SW     XN      C   DBM  output addr  AF  SH    S2AP   MemAttr  type valid
//! ```
//! `type` is 1 for a table (levels 0-2) or a page (level 3), 0 for a block (levels 1-2).
//!
//! Two software states live in *invalid* descriptors (bit 0 clear: the hardware ignores every
//! other bit, Arm ARM D8.3.1): [`Pte::LOCKED`] (a break-before-make or a prune in progress) and
//! [`Pte::zapped`] (cleared by a shared range operation, waiting for its batched invalidation).

/// Levels of the 4 KiB-granule walk: 0 is the top, 3 holds pages.
pub const LAST_LEVEL: u8 = 3;
/// Entries in one 4 KiB table.
pub const ENTRIES: usize = 512;
/// Size of a table page and of the smallest mapping.
pub const PAGE_SIZE: u64 = 4096;

const VALID: u64 = 1 << 0;
const TYPE_TABLE_OR_PAGE: u64 = 1 << 1;
const MEMATTR_SHIFT: u32 = 2;
const MEMATTR_MASK: u64 = 0b1111 << MEMATTR_SHIFT;
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
const SH_SHIFT: u32 = 8;
const SH_INNER: u64 = 0b11 << SH_SHIFT;
const AF: u64 = 1 << 10;
/// Stage-2 DBM (bit 51, FEAT_HAFDBS with VTCR_EL2.HD = 1): the hardware may set S2AP[1] on the
/// first write instead of taking a permission fault. DBM = 1 with S2AP[1] = 0 is
/// "writable-clean", DBM = 1 with S2AP[1] = 1 "writable-dirty" (Arm ARM, VMSAv8-64 "Hardware
/// management of the dirty state": at stage 2, S2AP[1] is the dirty state).
const DBM: u64 = 1 << 51;
/// Where a zapped entry keeps the number of the CPU that zapped it (+1); ignored by hardware.
const ZAP_OWNER_SHIFT: u32 = 12;
/// Stage-2 XN[1] (bit 54): execute-never at EL1 and EL0. XN[0] (bit 53) is only meaningful with
/// FEAT_XNX and we never set it, so both ELs see the same permission.
const XN: u64 = 1 << 54;
const OA_MASK: u64 = 0x0000_FFFF_FFFF_F000;
/// Software bits [58:55]: ignored by the walker, free for us.
const SW_SHIFT: u32 = 55;
const SW_MASK: u64 = 0b1111 << SW_SHIFT;

/// Stage-2 MemAttr[3:0] with HCR_EL2.FWB = 0: outer and inner Write-Back cacheable.
const MEMATTR_NORMAL_WB: u64 = 0b1111;
/// Stage-2 MemAttr[3:0] with HCR_EL2.FWB = 1: MemAttr[3] RES0, MemAttr[2] = 1 and
/// MemAttr[1:0] = 0b10, "Normal Write-Back" whatever stage 1 says.
const MEMATTR_FWB_FORCE_WB: u64 = 0b0110;
/// Stage-2 MemAttr[3:0] for Device-nGnRE; the same with either HCR_EL2.FWB value (FWB = 0:
/// MemAttr[3:2] = 0b00 is Device; FWB = 1: MemAttr[2] = 0 is Device), [1:0] = 0b01 is nGnRE.
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001;

/// How a leaf's MemAttr[3:0] (descriptor bits [5:2]) encodes its memory type. The meaning of
/// the field depends on HCR_EL2.FWB, so the table must be written for the value the hypervisor
/// programs (Arm ARM D8.6.5 and D8.6.6, "Stage 2 memory type and Cacheability attributes when
/// FWB is disabled / enabled").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MemAttrEncoding {
    /// HCR_EL2.FWB = 0: stage 2 is combined with stage 1 and the stricter type wins, so guest
    /// RAM is MemAttr = 0b1111 (outer and inner Write-Back) and a guest whose stage 1 says
    /// Non-cacheable (or whose caches are off without HCR_EL2.DC) accesses memory uncached.
    #[default]
    Combined,
    /// HCR_EL2.FWB = 1 (FEAT_S2FWB): guest RAM is MemAttr = 0b0110, which forces Normal
    /// Write-Back whatever stage 1 says, so the guest's accesses are always coherent with the
    /// hypervisor's cacheable view and no cache maintenance is needed for it.
    ForcedWriteBack,
}

impl MemAttrEncoding {
    /// MemAttr[3:0] for `mem` in this encoding.
    #[must_use]
    pub const fn memattr(self, mem: MemType) -> u64 {
        match (self, mem) {
            (MemAttrEncoding::Combined, MemType::NormalWb) => MEMATTR_NORMAL_WB,
            (MemAttrEncoding::ForcedWriteBack, MemType::NormalWb) => MEMATTR_FWB_FORCE_WB,
            (_, MemType::Device) => MEMATTR_DEVICE_NGNRE,
        }
    }
}

/// `log2` of the span one entry at `level` maps: 39, 30, 21, 12 for levels 0..3.
#[must_use]
pub const fn level_shift(level: u8) -> u32 {
    12 + 9 * (LAST_LEVEL - level) as u32
}

/// Bytes one entry at `level` maps.
#[must_use]
pub const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

/// The size of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    /// A level-3 page.
    Page4K,
    /// A level-2 block.
    Block2M,
    /// A level-1 block.
    Block1G,
}

impl Size {
    /// The level at which a leaf of this size lives.
    #[must_use]
    pub const fn level(self) -> u8 {
        match self {
            Size::Page4K => 3,
            Size::Block2M => 2,
            Size::Block1G => 1,
        }
    }

    /// Bytes mapped.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        level_size(self.level())
    }

    /// The leaf size at `level`, if a leaf may live there with a 4 KiB granule.
    #[must_use]
    pub const fn at_level(level: u8) -> Option<Size> {
        match level {
            3 => Some(Size::Page4K),
            2 => Some(Size::Block2M),
            1 => Some(Size::Block1G),
            _ => None,
        }
    }
}

/// Memory type of a stage-2 mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Normal memory, Write-Back cacheable, Inner Shareable: guest RAM.
    NormalWb,
    /// Device-nGnRE: passthrough MMIO.
    Device,
}

/// Access permissions a stage-2 entry grants (S2AP and XN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Perms {
    /// S2AP[0]: the guest may read.
    pub read: bool,
    /// S2AP[1]: the guest may write.
    pub write: bool,
    /// Not XN: the guest may execute.
    pub exec: bool,
}

impl Perms {
    /// Read, write and execute.
    pub const RWX: Perms = Perms {
        read: true,
        write: true,
        exec: true,
    };
    /// Read and execute, no write (what write-protect leaves).
    pub const RX: Perms = Perms {
        read: true,
        write: false,
        exec: true,
    };
    /// Read and write, no execute.
    pub const RW: Perms = Perms {
        read: true,
        write: true,
        exec: false,
    };
    /// Read only.
    pub const R: Perms = Perms {
        read: true,
        write: false,
        exec: false,
    };
    /// Write only (used as a "relax by adding write" request).
    pub const W: Perms = Perms {
        read: false,
        write: true,
        exec: false,
    };
    /// Execute only (used as a "relax by adding exec" request).
    pub const X: Perms = Perms {
        read: false,
        write: false,
        exec: true,
    };

    /// The union of two permission sets.
    #[must_use]
    pub const fn union(self, other: Perms) -> Perms {
        Perms {
            read: self.read || other.read,
            write: self.write || other.write,
            exec: self.exec || other.exec,
        }
    }

    /// Whether every permission in `other` is also in `self`.
    #[must_use]
    pub const fn contains(self, other: Perms) -> bool {
        (self.read || !other.read) && (self.write || !other.write) && (self.exec || !other.exec)
    }
}

/// Everything about a leaf except its output address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// Memory type (MemAttr).
    pub mem: MemType,
    /// Access permissions (S2AP, XN).
    pub perms: Perms,
    /// Software bits [58:55], free for the hypervisor (0..=15).
    pub sw: u8,
}

impl Attrs {
    /// Guest RAM, readable, writable and executable.
    #[must_use]
    pub const fn normal_rwx() -> Attrs {
        Attrs {
            mem: MemType::NormalWb,
            perms: Perms::RWX,
            sw: 0,
        }
    }

    /// Guest RAM with the given permissions.
    #[must_use]
    pub const fn normal(perms: Perms) -> Attrs {
        Attrs {
            mem: MemType::NormalWb,
            perms,
            sw: 0,
        }
    }

    /// Passthrough device memory, read/write, never executable.
    #[must_use]
    pub const fn device_rw() -> Attrs {
        Attrs {
            mem: MemType::Device,
            perms: Perms::RW,
            sw: 0,
        }
    }

    fn bits(self, enc: MemAttrEncoding) -> u64 {
        let memattr = enc.memattr(self.mem);
        let mut bits = (memattr << MEMATTR_SHIFT) | SH_INNER | AF;
        bits |= perm_bits(self.perms);
        bits |= (u64::from(self.sw) << SW_SHIFT) & SW_MASK;
        bits
    }
}

fn perm_bits(p: Perms) -> u64 {
    let mut bits = 0;
    if p.read {
        bits |= S2AP_R;
    }
    if p.write {
        bits |= S2AP_W;
    }
    if !p.exec {
        bits |= XN;
    }
    bits
}

/// One stage-2 descriptor value, as read from or to be written to a table.
///
/// The classification needs the level: bits[1:0] = 0b11 is a table at levels 0-2 but a page at
/// level 3.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pte(pub u64);

impl core::fmt::Debug for Pte {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pte({:#x})", self.0)
    }
}

impl Pte {
    /// An empty entry: invalid, maps nothing, not counted in its table's refcount.
    pub const EMPTY: Pte = Pte(0);

    /// A locked entry: some CPU owns it mid-break-before-make (or mid-prune). It is *invalid*
    /// (bit 0 clear), so the hardware walker treats it as a translation fault and can never cache
    /// it; bit 10 set makes it distinct from [`Pte::EMPTY`] so software walkers see it is taken.
    pub const LOCKED: Pte = Pte(AF);

    /// A zapped entry: invalid (bit 0 clear, so the hardware walker faults and caches nothing),
    /// distinct from [`Pte::EMPTY`] and [`Pte::LOCKED`] (bit 1 set), tagged with the CPU whose
    /// shared range operation cleared it. It means "cleared; the invalidation covering the old
    /// translation has not completed yet": nobody may fill it (a fault returns `Retry`), nobody
    /// ever waits for it, a prune or another range operation may take it over, and only its
    /// owner releases it to EMPTY once its one batched invalidation has completed.
    #[must_use]
    pub const fn zapped(cpu: usize) -> Pte {
        Pte(AF | TYPE_TABLE_OR_PAGE | (((cpu as u64) + 1) << ZAP_OWNER_SHIFT))
    }

    /// Cleared by a shared range operation and waiting for its invalidation (any owner).
    #[must_use]
    pub const fn is_zapped(self) -> bool {
        self.0 & (VALID | TYPE_TABLE_OR_PAGE | AF) == (TYPE_TABLE_OR_PAGE | AF)
    }

    /// LOCKED or zapped: invalid but not free, so it must not be filled.
    #[must_use]
    pub const fn is_busy(self) -> bool {
        self.is_locked() || self.is_zapped()
    }

    /// A table descriptor pointing at the table page at `pa`.
    #[must_use]
    pub const fn table(pa: u64) -> Pte {
        Pte((pa & OA_MASK) | TYPE_TABLE_OR_PAGE | VALID)
    }

    /// A leaf (page at level 3, block at levels 1-2) mapping `pa` with `attrs`, its memory type
    /// encoded for `enc` (the HCR_EL2.FWB value the table is used with).
    #[must_use]
    #[inline]
    pub fn leaf(pa: u64, level: u8, attrs: Attrs, enc: MemAttrEncoding) -> Pte {
        debug_assert!(
            pa & (level_size(level) - 1) == 0,
            "leaf output not aligned to its size"
        );
        let ty = if level == LAST_LEVEL {
            TYPE_TABLE_OR_PAGE
        } else {
            0
        };
        Pte((pa & OA_MASK) | attrs.bits(enc) | ty | VALID)
    }

    /// Bit 0: the hardware walker uses this entry.
    #[must_use]
    pub const fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// Zero: nothing here and nobody working on it.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Owned by some CPU mid-update.
    #[must_use]
    pub const fn is_locked(self) -> bool {
        self.0 == Pte::LOCKED.0
    }

    /// A table descriptor (only possible above the last level).
    #[must_use]
    pub const fn is_table(self, level: u8) -> bool {
        level < LAST_LEVEL && self.0 & (VALID | TYPE_TABLE_OR_PAGE) == (VALID | TYPE_TABLE_OR_PAGE)
    }

    /// A valid page or block descriptor.
    #[must_use]
    pub const fn is_leaf(self, level: u8) -> bool {
        self.is_valid() && !self.is_table(level)
    }

    /// The output address (the next table's PA for a table descriptor).
    #[must_use]
    pub const fn addr(self) -> u64 {
        self.0 & OA_MASK
    }

    /// The attributes of a valid leaf written with encoding `enc`.
    #[must_use]
    pub fn attrs(self, enc: MemAttrEncoding) -> Attrs {
        let mem = if (self.0 & MEMATTR_MASK) >> MEMATTR_SHIFT == enc.memattr(MemType::NormalWb) {
            MemType::NormalWb
        } else {
            MemType::Device
        };
        Attrs {
            mem,
            perms: self.perms(),
            // The mask keeps four bits, so the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation)]
            sw: ((self.0 & SW_MASK) >> SW_SHIFT) as u8,
        }
    }

    /// The permissions of a valid leaf (S2AP and XN; independent of the MemAttr encoding).
    #[must_use]
    pub const fn perms(self) -> Perms {
        Perms {
            read: self.0 & S2AP_R != 0,
            write: self.0 & S2AP_W != 0,
            exec: self.0 & XN == 0,
        }
    }

    /// This leaf with its permissions replaced by `perms`; every other bit unchanged.
    #[must_use]
    pub fn with_perms(self, perms: Perms) -> Pte {
        Pte((self.0 & !(S2AP_R | S2AP_W | XN)) | perm_bits(perms))
    }

    /// Whether `self` and `other` differ only in their permission bits (and in the access flag
    /// and DBM, which the hardware and the dirty-log and aging operations change in place).
    #[must_use]
    pub const fn same_but_perms(self, other: Pte) -> bool {
        let mask = !(S2AP_R | S2AP_W | XN | AF | DBM);
        self.0 & mask == other.0 & mask
    }

    /// The access flag (bit 10) of a valid leaf: set by the hardware on the first access when
    /// VTCR_EL2.HA = 1, else an access with AF = 0 takes an Access flag fault (Arm ARM, VMSAv8-64
    /// "Hardware management of the Access flag").
    #[must_use]
    pub const fn young(self) -> bool {
        self.0 & AF != 0
    }

    /// This leaf with the access flag set or cleared.
    #[must_use]
    pub const fn with_young(self, young: bool) -> Pte {
        if young {
            Pte(self.0 | AF)
        } else {
            Pte(self.0 & !AF)
        }
    }

    /// The DBM bit (bit 51) of a valid leaf.
    #[must_use]
    pub const fn dbm(self) -> bool {
        self.0 & DBM != 0
    }

    /// This leaf with DBM set or cleared.
    #[must_use]
    pub const fn with_dbm(self, dbm: bool) -> Pte {
        if dbm {
            Pte(self.0 | DBM)
        } else {
            Pte(self.0 & !DBM)
        }
    }

    /// This leaf with S2AP[1] (write) set or cleared, every other bit unchanged.
    #[must_use]
    pub const fn with_write(self, write: bool) -> Pte {
        if write {
            Pte(self.0 | S2AP_W)
        } else {
            Pte(self.0 & !S2AP_W)
        }
    }

    /// Entry `i` of the fully populated table that replaces this block (at `level`) in an eager
    /// split: a leaf one level down mapping the `i`-th sub-span, with every attribute bit (memory
    /// type, permissions, AF, DBM, software bits) of the block.
    #[must_use]
    pub const fn split_child(self, level: u8, i: u64) -> Pte {
        let child = level + 1;
        let ty = if child == LAST_LEVEL {
            TYPE_TABLE_OR_PAGE
        } else {
            0
        };
        let attrs = self.0 & !(OA_MASK | TYPE_TABLE_OR_PAGE);
        Pte(attrs | (self.addr() + i * level_size(child)) | ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HCR_EL2.FWB = 0, the encoding of every test that is not about FWB.
    const C: MemAttrEncoding = MemAttrEncoding::Combined;
    /// HCR_EL2.FWB = 1.
    const F: MemAttrEncoding = MemAttrEncoding::ForcedWriteBack;

    #[test]
    fn page_descriptor_matches_arm_arm_layout() {
        // The value the QEMU notes recorded as working for guest RAM: PA | 0x7FF would be
        // "valid page, MemAttr 0b1111, S2AP RW, SH inner, AF" (bits 0-10 all set).
        let p = Pte::leaf(0x4000_1000, 3, Attrs::normal_rwx(), C);
        assert_eq!(p.0, 0x4000_1000 | 0x7FF);
        assert!(p.is_valid() && p.is_leaf(3) && !p.is_table(3));
        assert_eq!(p.addr(), 0x4000_1000);
        assert_eq!(p.attrs(C), Attrs::normal_rwx());
    }

    #[test]
    fn fwb_normal_memory_forces_write_back_and_device_is_unchanged() {
        // Arm ARM D8.6.6 (FWB enabled): MemAttr[3] RES0, MemAttr[2] = 1 and [1:0] = 0b10 is
        // "Normal Write-Back" whatever stage 1 says; bits [5:2] = 0b0110.
        let p = Pte::leaf(0x4000_1000, 3, Attrs::normal_rwx(), F);
        assert_eq!((p.0 >> 2) & 0xF, 0b0110);
        assert_eq!(p.0 & (1 << 5), 0, "MemAttr[3] is RES0 with FWB");
        // Every other bit is the FWB = 0 descriptor's.
        let c = Pte::leaf(0x4000_1000, 3, Attrs::normal_rwx(), C);
        assert_eq!(p.0 & !(0xF << 2), c.0 & !(0xF << 2));
        assert_eq!(p.attrs(F), Attrs::normal_rwx());
        // Read with the other encoding, 0b0110 is not write-back (FWB = 0: outer Non-cacheable,
        // inner Write-Through): the encoding must match HCR_EL2.FWB.
        assert_eq!(p.attrs(C).mem, MemType::Device);
        assert_eq!(c.attrs(F).mem, MemType::Device);
        // Device-nGnRE is 0b0001 in both encodings.
        let d = Pte::leaf(0x0900_0000, 3, Attrs::device_rw(), F);
        assert_eq!((d.0 >> 2) & 0xF, 0b0001);
        assert_eq!(d, Pte::leaf(0x0900_0000, 3, Attrs::device_rw(), C));
        assert_eq!(d.attrs(F), Attrs::device_rw());
        // Permission changes keep the encoding.
        let ro = p.with_perms(Perms::R);
        assert_eq!(ro.attrs(F), Attrs::normal(Perms::R));
        assert_eq!(ro.perms(), Perms::R);
    }

    #[test]
    fn block_descriptor_has_type_bit_clear() {
        let b = Pte::leaf(0x4020_0000, 2, Attrs::normal_rwx(), C);
        assert_eq!(b.0 & 0b11, 0b01, "a block is valid with bit 1 clear");
        assert!(b.is_leaf(2) && !b.is_table(2));
        let g = Pte::leaf(0x4000_0000, 1, Attrs::normal_rwx(), C);
        assert_eq!(g.0 & 0b11, 0b01);
    }

    #[test]
    fn table_descriptor_is_addr_or_0b11() {
        let t = Pte::table(0x8000_3000);
        assert_eq!(t.0, 0x8000_3000 | 0b11);
        assert!(t.is_table(0) && t.is_table(2));
        // The same bits at level 3 are a page, not a table.
        assert!(!t.is_table(3) && t.is_leaf(3));
    }

    #[test]
    fn locked_is_invalid_and_distinct() {
        assert!(!Pte::LOCKED.is_valid());
        assert!(Pte::LOCKED.is_locked() && !Pte::LOCKED.is_empty());
        assert!(!Pte::EMPTY.is_locked());
        for level in 0..=3 {
            assert!(!Pte::LOCKED.is_table(level) && !Pte::LOCKED.is_leaf(level));
        }
    }

    #[test]
    fn permission_bits() {
        let ro = Pte::leaf(0x1000, 3, Attrs::normal(Perms::R), C);
        assert_eq!(ro.0 & (1 << 6), 1 << 6, "S2AP[0] read");
        assert_eq!(ro.0 & (1 << 7), 0, "S2AP[1] write clear");
        assert_eq!(ro.0 & (1 << 54), 1 << 54, "XN[1] set: not executable");
        assert_eq!(ro.0 & (1 << 53), 0, "XN[0] never set");
        let rw = ro.with_perms(Perms::RWX);
        assert_eq!(rw, Pte::leaf(0x1000, 3, Attrs::normal_rwx(), C));
        assert!(ro.same_but_perms(rw));
        assert!(!ro.same_but_perms(Pte::leaf(0x2000, 3, Attrs::normal(Perms::R), C)));
    }

    #[test]
    fn device_memattr_and_sw_bits() {
        let d = Pte::leaf(
            0x0900_0000,
            3,
            Attrs {
                sw: 0b1010,
                ..Attrs::device_rw()
            },
            C,
        );
        assert_eq!((d.0 >> 2) & 0xF, 0b0001, "Device-nGnRE");
        assert_eq!((d.0 >> 55) & 0xF, 0b1010);
        assert_eq!(
            d.attrs(C),
            Attrs {
                sw: 0b1010,
                ..Attrs::device_rw()
            }
        );
    }

    #[test]
    fn zapped_is_invalid_tagged_and_distinct() {
        for cpu in [0, 1, 7, 4095] {
            let z = Pte::zapped(cpu);
            assert!(!z.is_valid() && z.is_zapped() && z.is_busy() && !z.is_locked());
            assert!(!z.is_empty());
            for level in 0..=3 {
                assert!(!z.is_table(level) && !z.is_leaf(level));
            }
        }
        assert_ne!(Pte::zapped(0), Pte::zapped(1));
        assert!(!Pte::LOCKED.is_zapped() && Pte::LOCKED.is_busy());
        assert!(!Pte::EMPTY.is_busy());
        // No valid descriptor is zapped.
        assert!(!Pte::table(0x1000).is_zapped());
        assert!(!Pte::leaf(0x1000, 3, Attrs::normal_rwx(), C).is_zapped());
    }

    #[test]
    fn af_dbm_and_split_children() {
        let p = Pte::leaf(0x20_0000, 2, Attrs::normal(Perms::RX), C);
        assert!(p.young() && !p.dbm());
        let old = p.with_young(false);
        assert_eq!(old.0 & (1 << 10), 0);
        assert!(old.is_leaf(2) && old.same_but_perms(p));
        let clean = p.with_dbm(true);
        assert_eq!(clean.0 & (1 << 51), 1 << 51);
        assert!(!clean.perms().write);
        assert!(clean.with_write(true).perms().write);
        // A 2 MiB block splits into 4 KiB pages with its attributes.
        let c = clean.split_child(2, 3);
        assert!(c.is_leaf(3) && c.dbm());
        assert_eq!(c.addr(), 0x20_3000);
        assert_eq!(
            c,
            Pte::leaf(0x20_3000, 3, Attrs::normal(Perms::RX), C).with_dbm(true)
        );
        // A 1 GiB block into 2 MiB blocks.
        let g = Pte::leaf(0x4000_0000, 1, Attrs::normal_rwx(), C);
        assert_eq!(
            g.split_child(1, 511),
            Pte::leaf(0x4000_0000 + 511 * (2 << 20), 2, Attrs::normal_rwx(), C)
        );
    }

    #[test]
    fn level_sizes() {
        assert_eq!(level_size(3), 4096);
        assert_eq!(level_size(2), 2 << 20);
        assert_eq!(level_size(1), 1 << 30);
        assert_eq!(level_size(0), 512 << 30);
        assert_eq!(Size::Block2M.bytes(), 2 << 20);
        assert_eq!(Size::at_level(0), None);
    }

    #[test]
    fn perms_algebra() {
        assert!(Perms::RWX.contains(Perms::RW));
        assert!(!Perms::RX.contains(Perms::W));
        assert_eq!(Perms::RX.union(Perms::W), Perms::RWX);
    }
}
