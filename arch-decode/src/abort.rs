//! Where the IPA of a stage-2 abort comes from: HPFAR_EL2 where the Arm ARM defines it, else a
//! stage-1 translation of FAR_EL2 (AT S1E1R). The decision is pure; the hypervisor runs the AT.
//!
//! Arm ARM D23.2 "HPFAR_EL2": for a Data or Instruction Abort taken to EL2, HPFAR_EL2 holds the
//! faulting IPA (FIPA) for a translation fault, an access flag fault or an address size fault at
//! stage 2, and for any stage-2 fault on an access made for a stage-1 translation table walk
//! (ESR.S1PTW = 1). For every other abort (a stage-2 permission fault on the access itself, a
//! synchronous external abort, a TLB conflict, ...) it is UNKNOWN, so the IPA must be found by
//! translating FAR_EL2 through the guest's stage 1 — as Linux KVM does in `__get_fault_info`.

/// The class of a fault status code (DFSC/IFSC bits [5:2] for the MMU faults).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultKind {
    /// Address size fault (FSC 0b0000xx).
    AddressSize,
    /// Translation fault (0b0001xx).
    Translation,
    /// Access flag fault (0b0010xx).
    AccessFlag,
    /// Permission fault (0b0011xx).
    Permission,
    /// Synchronous external abort, not on a walk (0b010000) or on a walk (0b0101xx).
    External,
    /// Anything else (alignment, TLB conflict, unsupported atomic, ...).
    Other,
}

/// Classifies a fault status code (Arm ARM "ISS encoding for an exception from a Data Abort",
/// DFSC).
pub fn fault_kind(fsc: u8) -> FaultKind {
    match fsc >> 2 {
        0b0000 => FaultKind::AddressSize,
        0b0001 => FaultKind::Translation,
        0b0010 => FaultKind::AccessFlag,
        0b0011 => FaultKind::Permission,
        _ if fsc == 0b01_0000 || fsc >> 2 == 0b0101 => FaultKind::External,
        _ => FaultKind::Other,
    }
}

/// The table level a translation/access-flag/permission/address-size fault was reported at
/// (FSC bits [1:0]).
pub fn fault_level(fsc: u8) -> u8 {
    fsc & 0b11
}

/// Whether HPFAR_EL2 holds the faulting IPA for an abort with this FSC and S1PTW (see the module
/// doc). False means: translate FAR_EL2 with AT S1E1R instead.
pub fn hpfar_valid(fsc: u8, s1ptw: bool) -> bool {
    if s1ptw {
        return true;
    }
    matches!(
        fault_kind(fsc),
        FaultKind::Translation | FaultKind::AccessFlag | FaultKind::AddressSize
    )
}

/// The IPA of a stage-2 abort from HPFAR_EL2 and FAR_EL2: HPFAR_EL2.FIPA (bits [43:4]) holds
/// IPA[51:12]; the page offset comes from FAR_EL2.
pub fn ipa_from_hpfar(hpfar: u64, far: u64) -> u64 {
    ((hpfar & 0x0000_0FFF_FFFF_FFF0) << 8) | (far & 0xFFF)
}

/// The IPA from a PAR_EL1 after AT S1E1R of FAR_EL2: None if the translation failed
/// (PAR_EL1.F = 1: the guest changed its stage 1 since the fault, so the access is re-run),
/// else PAR_EL1.PA (bits [51:12] for the 64-bit format with F = 0) plus FAR's page offset.
pub fn ipa_from_par(par: u64, far: u64) -> Option<u64> {
    if par & 1 != 0 {
        return None;
    }
    Some((par & 0x000F_FFFF_FFFF_F000) | (far & 0xFFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(fault_kind(0x00), FaultKind::AddressSize);
        assert_eq!(fault_kind(0x07), FaultKind::Translation);
        assert_eq!(fault_kind(0x0B), FaultKind::AccessFlag);
        assert_eq!(fault_kind(0x0D), FaultKind::Permission);
        assert_eq!(fault_kind(0x10), FaultKind::External);
        assert_eq!(fault_kind(0x15), FaultKind::External);
        assert_eq!(fault_kind(0x21), FaultKind::Other); // alignment
        assert_eq!(fault_kind(0x30), FaultKind::Other); // TLB conflict
        assert_eq!(fault_level(0x0E), 2);
    }

    #[test]
    fn hpfar_validity() {
        // Translation, access flag and address size faults: HPFAR is valid.
        for fsc in [0x04, 0x05, 0x06, 0x07, 0x09, 0x0A, 0x0B, 0x00, 0x03] {
            assert!(hpfar_valid(fsc, false), "fsc {fsc:#x}");
        }
        // A permission fault on the access itself: HPFAR is UNKNOWN, translate FAR.
        for fsc in [0x0D, 0x0E, 0x0F] {
            assert!(!hpfar_valid(fsc, false), "fsc {fsc:#x}");
            // ... but on a stage-1 walk it is valid.
            assert!(hpfar_valid(fsc, true), "fsc {fsc:#x} s1ptw");
        }
        // External aborts, alignment, TLB conflict: translate FAR.
        for fsc in [0x10, 0x15, 0x21, 0x30, 0x35] {
            assert!(!hpfar_valid(fsc, false), "fsc {fsc:#x}");
        }
    }

    #[test]
    fn ipa_sources() {
        // HPFAR FIPA = IPA >> 12 << 4.
        let ipa = 0x12_3456_7000u64;
        assert_eq!(ipa_from_hpfar(ipa >> 8, 0xFFFF_0ABC), ipa | 0xABC);
        // Bits outside FIPA (NS at 63, RES0 [3:0]) are ignored.
        assert_eq!(ipa_from_hpfar(ipa >> 8 | 1 << 63 | 0xF, 0x123), ipa | 0x123);
        // PAR: F = 0 gives the PA; attributes (top byte) and flags dropped.
        let par = 0xFF00_0000_4000_5000 | 0b1000_0000;
        assert_eq!(ipa_from_par(par, 0x8000_0FF8), Some(0x4000_5FF8));
        // F = 1: no translation.
        assert_eq!(ipa_from_par(0x809, 0x1000), None);
    }
}
