//! System registers the hypervisor traps and answers as RAZ/WI (reads as zero, writes ignored)
//! rather than UNDEF: the guest may use them, but sees nothing of the physical CPU's.
//!
//! - The RAS error record registers (FEAT_RAS; trapped by HCR_EL2.TERR): ERRIDR_EL1
//!   (S3_0_C5_C3_0), ERRSELR_EL1 (S3_0_C5_C3_1), ERXFR/ERXCTLR/ERXSTATUS/ERXADDR/ERXPFGF/
//!   ERXPFGCTL/ERXPFGCDN_EL1 (S3_0_C5_C4_0..6) and ERXMISC0..3_EL1 (S3_0_C5_C5_0..3).
//!   ERRIDR_EL1.NUM = 0 says "no error records", and with ERRSELR_EL1.SEL >= NUM the ERX*
//!   registers are RAZ/WI (Arm RAS specification, "ERRSELR_EL1"), so RAZ/WI for all of them is
//!   a CPU without records. KVM answers them the same way (`trap_raz_wi`).
//! - ACTLR_EL1 (S3_0_C1_C0_1; trapped by HCR_EL2.TACR): IMPLEMENTATION DEFINED auxiliary
//!   control; a guest may read-modify-write it, so it reads 0 and writes are ignored.

/// Whether the System register (op0, op1, CRn, CRm, op2) is answered as RAZ/WI.
pub fn is_raz_wi(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> bool {
    match (op0, op1, crn, crm, op2) {
        (3, 0, 5, 3, 0..=1) => true, // ERRIDR_EL1, ERRSELR_EL1
        (3, 0, 5, 4, 0..=6) => true, // ERXFR .. ERXPFGCDN
        (3, 0, 5, 5, 0..=3) => true, // ERXMISC0..3
        (3, 0, 1, 0, 1) => true,     // ACTLR_EL1
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ras_records_and_actlr() {
        assert!(is_raz_wi(3, 0, 5, 3, 0)); // ERRIDR_EL1
        assert!(is_raz_wi(3, 0, 5, 3, 1)); // ERRSELR_EL1
        assert!(is_raz_wi(3, 0, 5, 4, 2)); // ERXSTATUS_EL1
        assert!(is_raz_wi(3, 0, 5, 5, 1)); // ERXMISC1_EL1
        assert!(is_raz_wi(3, 0, 1, 0, 1)); // ACTLR_EL1
                                           // Neighbours are not: SCTLR_EL1, ESR_EL1 (S3_0_C5_C2_0), unallocated CRm 3 op2 2.
        assert!(!is_raz_wi(3, 0, 1, 0, 0));
        assert!(!is_raz_wi(3, 0, 5, 2, 0));
        assert!(!is_raz_wi(3, 0, 5, 3, 2));
        assert!(!is_raz_wi(3, 0, 5, 4, 7));
        // IMPLEMENTATION DEFINED space (TIDCP): UNDEF, not RAZ/WI.
        assert!(!is_raz_wi(3, 0, 15, 0, 0));
        assert!(!is_raz_wi(3, 0, 11, 0, 0));
    }
}
