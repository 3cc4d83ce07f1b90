//! Where the IPA of a stage-2 abort comes from: HPFAR_EL2 where the Arm ARM defines it, else a
//! stage-1 translation of FAR_EL2 (AT S1E1R). The decision is pure; the hypervisor runs the AT.
//!
//! Arm ARM D23.2 "HPFAR_EL2": for a Data or Instruction Abort taken to EL2, HPFAR_EL2 holds the
//! faulting IPA (FIPA) for a translation fault, an access flag fault or an address size fault at
//! stage 2, and, for a stage-2 fault on an access made for a stage-1 translation table walk
//! (ESR.S1PTW = 1), also for a permission fault — but only for those four fault kinds: a
//! synchronous external abort or TLB conflict on a walk leaves it UNKNOWN too. For every other
//! abort (a stage-2 permission fault on the access itself, an external abort, a TLB conflict,
//! ...) it is UNKNOWN. Of those, only the permission fault needs the IPA (it is served by the
//! stage-2 fault path): it is found by translating FAR_EL2 through the guest's stage 1 — as
//! Linux KVM does in `__get_fault_info`. The others are answered without an address (`plan`),
//! so the AT never runs for them.

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
    /// TLB conflict abort (0b110000).
    TlbConflict,
    /// Anything else (alignment, unsupported atomic update, parity/ECC, ...).
    Other,
}

/// The FSC of a TLB conflict abort.
pub const FSC_TLB_CONFLICT: u8 = 0b11_0000;

/// Classifies a fault status code (Arm ARM "ISS encoding for an exception from a Data Abort",
/// DFSC).
pub fn fault_kind(fsc: u8) -> FaultKind {
    match fsc >> 2 {
        0b0000 => FaultKind::AddressSize,
        0b0001 => FaultKind::Translation,
        0b0010 => FaultKind::AccessFlag,
        0b0011 => FaultKind::Permission,
        _ if fsc == 0b01_0000 || fsc >> 2 == 0b0101 => FaultKind::External,
        _ if fsc == FSC_TLB_CONFLICT => FaultKind::TlbConflict,
        _ => FaultKind::Other,
    }
}

/// The table level a translation/access-flag/permission/address-size fault was reported at
/// (FSC bits [1:0]).
pub fn fault_level(fsc: u8) -> u8 {
    fsc & 0b11
}

/// Whether HPFAR_EL2 holds the faulting IPA for an abort with this FSC and S1PTW (see the module
/// doc): translation, access flag and address size faults always; permission faults only on a
/// stage-1 walk (S1PTW = 1); nothing else, on a walk or not.
pub fn hpfar_valid(fsc: u8, s1ptw: bool) -> bool {
    match fault_kind(fsc) {
        FaultKind::Translation | FaultKind::AccessFlag | FaultKind::AddressSize => true,
        FaultKind::Permission => s1ptw,
        _ => false,
    }
}

/// What the hypervisor does with a stage-2 abort, decided from the syndrome alone, before any
/// address is computed: the fault is classified first, so no AT runs for a fault that needs no
/// IPA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Plan {
    /// A translation, access flag or address size fault, or a permission fault on a stage-1
    /// walk: the IPA is HPFAR_EL2.FIPA plus FAR_EL2's page offset.
    Hpfar,
    /// A permission fault on the access itself: HPFAR_EL2 is UNKNOWN; the IPA is FAR_EL2
    /// translated by AT S1E1R (and the access is re-run if that fails).
    TranslateFar,
    /// A synchronous external abort (on a walk or not): the memory system's error, forwarded to
    /// the guest whatever the address.
    ForwardExternal,
    /// A TLB conflict abort: the TLB holds overlapping entries (Arm ARM D8 "TLB conflict
    /// aborts"); invalidate this CPU's stage 1 and 2 entries for the VMID and re-run.
    TlbConflict,
    /// Any other fault code (alignment, unsupported atomic hardware update, ...) reported to EL2:
    /// nothing the hypervisor can repair; an injected synchronous external abort.
    InjectExternal,
}

/// The plan for an abort with fault status `fsc`, ESR.S1PTW and ESR.FnV (`far_valid` = !FnV).
/// A permission fault without a valid FAR (which the Arm ARM does not produce: FnV is only set
/// for external aborts) cannot be translated, so it gets an injected external abort rather than
/// a re-run that could loop.
pub fn plan(fsc: u8, s1ptw: bool, far_valid: bool) -> Plan {
    match fault_kind(fsc) {
        FaultKind::Translation | FaultKind::AccessFlag | FaultKind::AddressSize => Plan::Hpfar,
        FaultKind::Permission if s1ptw => Plan::Hpfar,
        FaultKind::Permission if far_valid => Plan::TranslateFar,
        FaultKind::Permission => Plan::InjectExternal,
        FaultKind::External => Plan::ForwardExternal,
        FaultKind::TlbConflict => Plan::TlbConflict,
        FaultKind::Other => Plan::InjectExternal,
    }
}

/// The answer to an abort at an IPA outside every memslot and emulated device.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unbacked {
    /// At or above 2^`ipa_bits`, the IPA size the guest is told (ID_AA64MMFR0_EL1.PARange): an
    /// Address size fault at level 0, as if the output address exceeded PARange (Arm ARM
    /// "Address size fault"; KVM `kvm_inject_size_fault`).
    AddressSizeFault,
    /// A cache maintenance instruction (ESR.CM = 1, e.g. DC CIVAC) to an address that is not
    /// RAM: nothing there can be cached, so the maintenance has nothing to do; the instruction
    /// is skipped (KVM: "this range cannot be cached... skip the instruction").
    SkipCacheMaintenance,
    /// Anything else: an injected synchronous external abort (nothing answers at that address).
    ExternalAbort,
}

/// The answer for an abort at `ipa` outside every memslot and device, for a guest with an
/// `ipa_bits` IPA space; `cache_maintenance` is ESR.CM (data aborts only).
pub fn unbacked(ipa: u64, ipa_bits: u32, cache_maintenance: bool) -> Unbacked {
    if ipa >> ipa_bits != 0 {
        Unbacked::AddressSizeFault
    } else if cache_maintenance {
        Unbacked::SkipCacheMaintenance
    } else {
        Unbacked::ExternalAbort
    }
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
        assert_eq!(fault_kind(0x30), FaultKind::TlbConflict);
        assert_eq!(fault_kind(0x31), FaultKind::Other); // unsupported atomic update
        assert_eq!(fault_level(0x0E), 2);
    }

    #[test]
    fn hpfar_validity() {
        // Translation, access flag and address size faults: HPFAR is valid, walk or not.
        for fsc in [0x04, 0x05, 0x06, 0x07, 0x09, 0x0A, 0x0B, 0x00, 0x03] {
            assert!(hpfar_valid(fsc, false), "fsc {fsc:#x}");
            assert!(hpfar_valid(fsc, true), "fsc {fsc:#x} s1ptw");
        }
        // A permission fault on the access itself: HPFAR is UNKNOWN, translate FAR.
        for fsc in [0x0D, 0x0E, 0x0F] {
            assert!(!hpfar_valid(fsc, false), "fsc {fsc:#x}");
            // ... but on a stage-1 walk it is valid.
            assert!(hpfar_valid(fsc, true), "fsc {fsc:#x} s1ptw");
        }
        // External aborts (on a walk too), alignment, TLB conflict: never valid.
        for fsc in [0x10, 0x14, 0x15, 0x17, 0x21, 0x30, 0x35] {
            assert!(!hpfar_valid(fsc, false), "fsc {fsc:#x}");
            assert!(!hpfar_valid(fsc, true), "fsc {fsc:#x} s1ptw");
        }
    }

    #[test]
    fn plans_classify_before_any_address() {
        // Only a permission fault on the access itself runs AT.
        for fsc in [0x0D, 0x0E, 0x0F] {
            assert_eq!(plan(fsc, false, true), Plan::TranslateFar);
            assert_eq!(plan(fsc, true, true), Plan::Hpfar);
            assert_eq!(plan(fsc, false, false), Plan::InjectExternal);
        }
        for fsc in [0x00, 0x07, 0x0B] {
            assert_eq!(plan(fsc, false, true), Plan::Hpfar);
        }
        // External aborts (not on a walk, on a walk at each level): forwarded, no AT, no HPFAR.
        for fsc in [0x10, 0x14, 0x15, 0x16, 0x17] {
            assert_eq!(plan(fsc, false, true), Plan::ForwardExternal, "{fsc:#x}");
            assert_eq!(plan(fsc, true, false), Plan::ForwardExternal, "{fsc:#x}");
        }
        assert_eq!(plan(0x30, false, true), Plan::TlbConflict);
        assert_eq!(plan(0x30, true, true), Plan::TlbConflict);
        // Alignment, unsupported atomic hardware update, parity: injected.
        for fsc in [0x21, 0x31, 0x18, 0x3F] {
            assert_eq!(plan(fsc, false, true), Plan::InjectExternal, "{fsc:#x}");
        }
    }

    #[test]
    fn unbacked_answers() {
        // At or above 2^40: address size fault, also for cache maintenance.
        assert_eq!(unbacked(1 << 44, 40, false), Unbacked::AddressSizeFault);
        assert_eq!(unbacked(1 << 40, 40, true), Unbacked::AddressSizeFault);
        // Below: cache maintenance is skipped, anything else aborts.
        assert_eq!(
            unbacked((1 << 40) - 1, 40, true),
            Unbacked::SkipCacheMaintenance
        );
        assert_eq!(
            unbacked(0x0900_0000, 40, true),
            Unbacked::SkipCacheMaintenance
        );
        assert_eq!(unbacked(0xFF_C000_0000, 40, false), Unbacked::ExternalAbort);
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
