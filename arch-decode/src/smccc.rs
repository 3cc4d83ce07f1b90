//! SMC Calling Convention (Arm DEN 0028) decoding of a guest's HVC/SMC: the function ID and the
//! argument registers as the callee must see them.
//!
//! DEN 0028 section 2.5 ("SMC32/HVC32 argument passing") and 2.6: the function ID is always W0,
//! so x0[63:32] is ignored; bit 30 of the ID selects the SMC32/HVC32 (0) or SMC64/HVC64 (1)
//! convention, and for a 32-bit call only W1..W7 carry arguments: the upper halves of x1..x7
//! are ignored (the caller need not clear them).

/// SMCCC NOT_SUPPORTED (-1), as a register value.
pub const NOT_SUPPORTED: u64 = u64::MAX;

/// Function ID bit 30: the SMC64/HVC64 calling convention.
const SMC64: u32 = 1 << 30;

/// A decoded call: function ID and the arguments x1..x7, truncated for 32-bit calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Call {
    /// The function ID (W0).
    pub function: u32,
    /// Arguments 1..=7 (x1..x7; for SMC32/HVC32 only W1..W7, zero-extended). `args[0]` is x1.
    pub args: [u64; 7],
}

impl Call {
    /// Decodes a call from x0..x7.
    pub fn new(x: &[u64; 8]) -> Self {
        let function = x[0] as u32;
        let mut args = [0; 7];
        for (a, &r) in args.iter_mut().zip(&x[1..]) {
            *a = if is_64(function) { r } else { r & 0xFFFF_FFFF };
        }
        Self { function, args }
    }

    /// Argument `n` (1-based, as in "x1"); 0 past x7.
    pub fn arg(&self, n: usize) -> u64 {
        n.checked_sub(1)
            .and_then(|i| self.args.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// The function ID widened for comparing with 64-bit ABI constants.
    pub fn function_u64(&self) -> u64 {
        u64::from(self.function)
    }
}

/// Whether a function ID uses the SMC64/HVC64 convention (bit 30).
pub fn is_64(function: u32) -> bool {
    function & SMC64 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_id_is_w0() {
        let c = Call::new(&[0xDEAD_BEEF_8400_0000, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(c.function, 0x8400_0000); // PSCI_VERSION
        assert!(!is_64(c.function));
        assert!(is_64(0xC400_0003)); // CPU_ON_64
    }

    #[test]
    fn smc32_arguments_are_truncated() {
        let junk = 0xFFFF_FFFF_0000_0000;
        let x = [
            0x8400_000A,
            junk | 0x8400_0002,
            junk | 7,
            3,
            4,
            5,
            6,
            junk | 8,
        ];
        let c = Call::new(&x);
        assert_eq!(c.function, 0x8400_000A); // PSCI_FEATURES
        assert_eq!(c.arg(1), 0x8400_0002); // CPU_OFF
        assert_eq!(c.arg(2), 7);
        assert_eq!(c.arg(7), 8);
        assert_eq!(c.arg(8), 0);
        assert_eq!(c.arg(0), 0);
    }

    #[test]
    fn smc64_arguments_are_kept() {
        let x = [
            0xFFFF_FFFF_C400_0003,
            1 << 40,
            0x4000_0000_1234,
            0,
            0,
            0,
            0,
            0,
        ];
        let c = Call::new(&x);
        assert_eq!(c.function, 0xC400_0003);
        assert_eq!(c.arg(1), 1 << 40);
        assert_eq!(c.arg(2), 0x4000_0000_1234);
        assert_eq!(c.function_u64(), 0xC400_0003);
    }
}
