//! The initial VMSA (VM save area) of each vCPU, which SEV-ES and SNP measure (docs/tee.md §1.6),
//! and the vCPU signatures of QEMU's EPYC models.

use super::page_info::PAGE_SIZE;

/// Whose hypervisor launches the guest: each sets the initial vCPU state and the metadata pages
/// its own way (§1.4, §1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmType {
    Qemu,
    Ec2,
    Gce,
}

/// The BSP starts at the reset vector; APs at the EIP of the firmware's SEV-ES reset block.
pub const BSP_EIP: u32 = 0xFFFF_FFF0;

/// CPUID Fn0000_0001_EAX for a family, model and stepping (AMD CPUID specification #25481).
pub fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (fam_low, fam_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (fam_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (fam_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// QEMU's EPYC vCPU models (builtin_x86_defs) and their family/model/stepping: the table
/// sev-snp-measure 0.0.13 knows.
pub const VCPU_TYPES: &[(&str, u32, u32, u32)] = &[
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// The signature of a vCPU type by its QEMU name (exact spelling), if known.
pub fn vcpu_type_sig(name: &str) -> Option<u32> {
    VCPU_TYPES
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(_, f, m, s)| cpu_sig(f, m, s))
}

/// One segment register {u16 selector, u16 attrib, u32 limit, u64 base} (struct vmcb_seg).
fn seg(p: &mut [u8; PAGE_SIZE], at: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
    p[at..at + 2].copy_from_slice(&selector.to_le_bytes());
    p[at + 2..at + 4].copy_from_slice(&attrib.to_le_bytes());
    p[at + 4..at + 8].copy_from_slice(&limit.to_le_bytes());
    p[at + 8..at + 16].copy_from_slice(&base.to_le_bytes());
}

fn u64_at(p: &mut [u8; PAGE_SIZE], at: usize, v: u64) {
    p[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The VMSA page of a vCPU starting at `eip` (AMD APM vol. 2 table B-4 offsets; per-VMM register
/// values of §1.6). `vcpu_sig` only enters QEMU's VMSA (rdx); EC2 and GCE put 0x600 there.
pub fn vmsa_page(eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> [u8; PAGE_SIZE] {
    struct Regs {
        cs: u16,
        ss: u16,
        tr: u16,
        rdx: u64,
        g_pat: u64,
        mxcsr: u32,
        fcw: u16,
    }
    const PAT: u64 = 0x0007_0406_0007_0406;
    let r = match vmm {
        VmmType::Qemu => Regs {
            cs: 0x9b,
            ss: 0x93,
            tr: 0x8b,
            rdx: vcpu_sig as u64,
            g_pat: PAT,
            mxcsr: 0x1f80,
            fcw: 0x37f,
        },
        VmmType::Ec2 => Regs {
            cs: if eip == BSP_EIP { 0x9a } else { 0x9b },
            ss: 0x92,
            tr: 0x83,
            rdx: 0x600,
            g_pat: PAT,
            mxcsr: 0,
            fcw: 0,
        },
        VmmType::Gce => Regs {
            cs: 0x9b,
            ss: 0x93,
            tr: 0x8b,
            rdx: 0x600,
            g_pat: 0x0007_0106,
            mxcsr: 0,
            fcw: 0,
        },
    };
    let mut p = [0u8; PAGE_SIZE];
    for at in [0x00, 0x30, 0x40, 0x50] {
        seg(&mut p, at, 0, 0x93, 0xffff, 0); // es, ds, fs, gs
    }
    seg(
        &mut p,
        0x10,
        0xf000,
        r.cs,
        0xffff,
        (eip & 0xffff_0000) as u64,
    );
    seg(&mut p, 0x20, 0, r.ss, 0xffff, 0);
    seg(&mut p, 0x60, 0, 0, 0xffff, 0); // gdtr
    seg(&mut p, 0x70, 0, 0x82, 0xffff, 0); // ldtr
    seg(&mut p, 0x80, 0, 0, 0xffff, 0); // idtr
    seg(&mut p, 0x90, 0, r.tr, 0xffff, 0);
    u64_at(&mut p, 0xd0, 0x1000); // efer: KVM sets SVME
    u64_at(&mut p, 0x148, 0x40); // cr4: MCE
    u64_at(&mut p, 0x158, 0x10); // cr0
    u64_at(&mut p, 0x160, 0x400); // dr7
    u64_at(&mut p, 0x168, 0xffff_0ff0); // dr6
    u64_at(&mut p, 0x170, 0x2); // rflags
    u64_at(&mut p, 0x178, (eip & 0xffff) as u64); // rip
    u64_at(&mut p, 0x268, r.g_pat);
    u64_at(&mut p, 0x310, r.rdx);
    u64_at(&mut p, 0x3b0, sev_features);
    u64_at(&mut p, 0x3e8, 0x1); // xcr0
    p[0x408..0x40c].copy_from_slice(&r.mxcsr.to_le_bytes());
    p[0x410..0x412].copy_from_slice(&r.fcw.to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_of_docs_tee_md() {
        // §1.6's table of vCPU signatures.
        assert_eq!(vcpu_type_sig("EPYC-v4"), Some(0x800F12));
        assert_eq!(vcpu_type_sig("EPYC-Rome"), Some(0x830F10));
        assert_eq!(vcpu_type_sig("EPYC-Milan"), Some(0xA00F11));
        assert_eq!(vcpu_type_sig("EPYC-Genoa"), Some(0xA10F10));
        assert_eq!(vcpu_type_sig("EPYC-Turin"), Some(0xB00F00));
        assert_eq!(vcpu_type_sig("epyc"), None);
    }
}
