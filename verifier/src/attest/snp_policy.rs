//! What a SEV-SNP report says about how its guest may be treated: the guest policy the host launched
//! it with (SNP_LAUNCH_START `POLICY`, copied into the report at 0x08) and the TCB the report was
//! made under (REPORTED_TCB, 0x180).
//!
//! The policy is chosen by whoever launches the guest — the host — and enforced by the AMD secure
//! processor. Read from a report whose signature verified, it is what the hardware enforced, so a
//! verifier can refuse the settings that give the host the guest's memory back:
//!
//! * **DEBUG** (bit 19): the host may use SNP_DBG_DECRYPT / SNP_DBG_ENCRYPT to read and write the
//!   guest's private memory. A debug guest's keys, disk key and workload are the host's.
//! * **MIGRATE_MA** (bit 18): a migration agent the host names may export the guest's state.
//!
//! Bit layout per the SEV-SNP firmware ABI specification (AMD #56860), "Guest Policy": bits 0–7
//! ABI_MINOR, 8–15 ABI_MAJOR, 16 SMT allowed, 17 reserved (must be 1), 18 MIGRATE_MA, 19 DEBUG,
//! 20 SINGLE_SOCKET.

use super::error::{ensure, Result};

/// Guest policy bits a verifier reads.
const SMT: u64 = 1 << 16;
const MIGRATE_MA: u64 = 1 << 18;
const DEBUG: u64 = 1 << 19;
const SINGLE_SOCKET: u64 = 1 << 20;

/// A report's guest policy (the raw u64 at report offset 0x08).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// The host may decrypt and encrypt the guest's memory with the firmware's debug commands.
    pub fn debug(self) -> bool {
        self.0 & DEBUG != 0
    }
    /// A host-chosen migration agent may be associated with the guest.
    pub fn migrate_ma(self) -> bool {
        self.0 & MIGRATE_MA != 0
    }
    /// The guest may run on a host with simultaneous multithreading enabled.
    pub fn smt(self) -> bool {
        self.0 & SMT != 0
    }
    /// The guest may run on one socket only.
    pub fn single_socket(self) -> bool {
        self.0 & SINGLE_SOCKET != 0
    }
    /// Minimum firmware ABI the guest was launched to require, as `major.minor`.
    pub fn abi(self) -> (u8, u8) {
        ((self.0 >> 8) as u8, self.0 as u8)
    }

    /// One line for a verdict: `0x30000 (ABI ≥ 0.0, SMT allowed, DEBUG off, MIGRATE_MA off)`.
    pub fn describe(self) -> String {
        let (major, minor) = self.abi();
        let on_off = |b: bool| if b { "on" } else { "off" };
        format!(
            "{:#x} (ABI ≥ {major}.{minor}, SMT {}, DEBUG {}, MIGRATE_MA {}{})",
            self.0,
            if self.smt() { "allowed" } else { "not allowed" },
            on_off(self.debug()),
            on_off(self.migrate_ma()),
            if self.single_socket() {
                ", single socket"
            } else {
                ""
            },
        )
    }

    /// Refuses a policy under which the host can read or export the guest's memory. Checked only
    /// on a report whose signature verified (the policy is the hardware's word then).
    pub fn require_confidential(self) -> Result<()> {
        ensure!(
            !self.debug(),
            Policy,
            "the SEV-SNP guest policy {} has DEBUG set: the host can read and change the guest's \
             memory (SNP_DBG_DECRYPT/ENCRYPT), so nothing this VM reports is confidential; \
             relaunch it without the debug policy bit (bit 19)",
            self.describe()
        );
        ensure!(
            !self.migrate_ma(),
            Policy,
            "the SEV-SNP guest policy {} has MIGRATE_MA set: a migration agent chosen by the host \
             may export the guest's state; relaunch it without bit 18",
            self.describe()
        );
        Ok(())
    }
}

/// A TCB version (REPORTED_TCB, CURRENT_TCB, …: 8 bytes) as its security patch levels.
///
/// Milan and Genoa: `[boot loader, TEE, reserved ×4, SNP, microcode]`; Turin: `[FMC, boot loader,
/// TEE, reserved ×3, SNP, microcode]` (the layout the VCEK's TCB extensions are checked against in
/// [`super::snp`]).
pub fn describe_tcb(tcb: [u8; 8], turin: bool) -> String {
    if turin {
        format!(
            "fmc {}, bl {}, tee {}, snp {}, ucode {}",
            tcb[0], tcb[1], tcb[2], tcb[6], tcb[7]
        )
    } else {
        format!(
            "bl {}, tee {}, snp {}, ucode {}",
            tcb[0], tcb[1], tcb[6], tcb[7]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policies of the shared samples, as SOURCES.md decodes them.
    #[test]
    fn sample_policies_decode_as_sources_md_states() {
        // go-sev-guest attestation.bin: "SMT allowed, debug allowed (raw 0xb0000)".
        let gosev = GuestPolicy(0xb0000);
        assert!(gosev.smt() && gosev.debug() && !gosev.migrate_ma());
        let e = gosev.require_confidential().unwrap_err();
        assert!(matches!(e, crate::attest::Error::Policy(_)), "{e:?}");
        assert!(e.to_string().contains("DEBUG set"), "{e}");
        // virtee report_milan.hex: policy 0x30000 (SMT allowed, reserved bit 17).
        let virtee = GuestPolicy(0x30000);
        assert!(virtee.smt() && !virtee.debug() && !virtee.migrate_ma());
        virtee.require_confidential().unwrap();
        // trustee idblock report: 0x3001f, ABI minor 31.
        assert_eq!(GuestPolicy(0x3001f).abi(), (0, 31));
    }

    #[test]
    fn migrate_ma_is_refused() {
        let e = GuestPolicy(0x30000 | 1 << 18)
            .require_confidential()
            .unwrap_err();
        assert!(e.to_string().contains("MIGRATE_MA set"), "{e}");
    }

    #[test]
    fn tcb_reads_as_sources_md_states() {
        // virtee report_milan.hex: reported_tcb 0300000000000873 (bl 3, tee 0, snp 8, ucode 115).
        let tcb: [u8; 8] = hex::decode("0300000000000873").unwrap().try_into().unwrap();
        assert_eq!(describe_tcb(tcb, false), "bl 3, tee 0, snp 8, ucode 115");
    }
}
