//! AMD SEV, SEV-ES and SEV-SNP launch digests: what the PSP measures while the hypervisor loads the
//! firmware and the initial vCPU states, predicted from the firmware file (docs/tee.md §1).
//!
//! The result equals sev-snp-measure 0.0.13's (the oracle the tests run) for modes `sev`, `seves`
//! and `snp` and VMM types QEMU, EC2 and GCE. Written here rather than taken from the `sev` crate,
//! whose EC2 VMSA predates EC2's rdx = 0x600 and which has no GCE type and no EPYC-Turin (§3).

pub mod error;
pub mod kernel_hashes;
pub mod ovmf_metadata;
pub mod page_info;
pub mod vmsa;

use kernel_hashes::KernelHashes;
use ovmf_metadata::{Ovmf, SectionType};
use page_info::{Chain, Ld, PageType, PAGE_SIZE};
use sha2::{Digest, Sha256};

pub use error::SnpError;
pub use vmsa::VmmType;

/// The guest's SEV generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevMode {
    Sev,
    SevEs,
    Snp,
}

/// Everything the digest depends on.
#[derive(Debug, Clone)]
pub struct LaunchInputs<'a> {
    /// SEV generation: SNP's PAGE_INFO chain or SEV/SEV-ES's SHA-256.
    pub mode: SevMode,
    /// vCPUs at launch: one VMSA each (SNP and SEV-ES; SEV ignores it).
    pub vcpus: u32,
    /// CPUID Fn0000_0001_EAX of the vCPU model; enters only QEMU's VMSAs.
    pub vcpu_sig: u32,
    /// The whole firmware image (OVMF.fd or a code volume), mapped to end at 4 GiB.
    pub ovmf: &'a [u8],
    /// Whose hypervisor: its VMSA register values and metadata-page rules.
    pub vmm: VmmType,
    /// VMSA SEV_FEATURES (SNP only; SEV-ES VMSAs carry 0).
    pub guest_features: u64,
    /// Direct boot with QEMU `kernel-hashes=on`.
    pub kernel_hashes: Option<KernelHashes>,
    /// SNP: a precomputed digest of the firmware pages ([`snp_ovmf_hash`]) that replaces them.
    pub snp_ovmf_hash: Option<Ld>,
}

/// The launch digest: 48 bytes for SNP, 32 (SHA-256) for SEV and SEV-ES.
pub fn launch_digest(inputs: &LaunchInputs) -> Result<Vec<u8>, SnpError> {
    if inputs.snp_ovmf_hash.is_some() && inputs.mode != SevMode::Snp {
        return Err(SnpError::OvmfHashNotSnp);
    }
    let ovmf = Ovmf::parse(inputs.ovmf)?;
    match inputs.mode {
        SevMode::Snp => snp_digest(&ovmf, inputs).map(|ld| ld.to_vec()),
        SevMode::SevEs | SevMode::Sev => sev_digest(&ovmf, inputs).map(|d| d.to_vec()),
    }
}

/// The SNP digest after the firmware pages alone (sev-snp-measure `--mode snp:ovmf-hash`).
pub fn snp_ovmf_hash(ovmf: &[u8]) -> Result<Ld, SnpError> {
    let ovmf = Ovmf::parse(ovmf)?;
    Ok(firmware_chain(&ovmf)?.ld())
}

fn firmware_chain(ovmf: &Ovmf) -> Result<Chain, SnpError> {
    if !ovmf.data().len().is_multiple_of(PAGE_SIZE) {
        return Err(SnpError::UnalignedFirmware(ovmf.data().len()));
    }
    let mut chain = Chain::default();
    chain.normal_pages(ovmf.gpa(), ovmf.data());
    Ok(chain)
}

fn pages_of(name: &'static str, size: u32) -> Result<u64, SnpError> {
    if !(size as usize).is_multiple_of(PAGE_SIZE) {
        return Err(SnpError::UnalignedSection(name, size));
    }
    Ok(size as u64 / PAGE_SIZE as u64)
}

fn snp_digest(ovmf: &Ovmf, inputs: &LaunchInputs) -> Result<Ld, SnpError> {
    if inputs.vcpus == 0 {
        return Err(SnpError::NoVcpus);
    }
    let mut chain = match inputs.snp_ovmf_hash {
        Some(seed) => Chain::from_seed(seed),
        None => firmware_chain(ovmf)?,
    };
    if inputs.kernel_hashes.is_some() && !ovmf.has_section(SectionType::SnpKernelHashes) {
        return Err(SnpError::NoKernelHashesSection);
    }
    // §1.4 step 2: the metadata sections in table order; EC2 measures the CPUID pages last.
    for s in ovmf.sections() {
        let gpa = s.gpa as u64;
        match s.kind {
            SectionType::SnpSecMem => {
                let kind = match inputs.vmm {
                    VmmType::Gce => PageType::Unmeasured,
                    VmmType::Qemu | VmmType::Ec2 => PageType::Zero,
                };
                chain.empty_pages(kind, gpa, pages_of("SNP_SEC_MEM", s.size)?);
            }
            SectionType::SnpSecrets => chain.empty_pages(PageType::Secrets, gpa, 1),
            SectionType::Cpuid if inputs.vmm == VmmType::Ec2 => {}
            SectionType::Cpuid => chain.empty_pages(PageType::Cpuid, gpa, 1),
            SectionType::SvsmCaa => {
                chain.empty_pages(PageType::Zero, gpa, pages_of("SVSM_CAA", s.size)?)
            }
            SectionType::SnpKernelHashes => match &inputs.kernel_hashes {
                Some(hashes) => {
                    if s.size as usize != PAGE_SIZE {
                        return Err(SnpError::KernelHashesSize(s.size));
                    }
                    let table_gpa = ovmf
                        .sev_hashes_table_gpa()
                        .ok_or(SnpError::NoSevHashTable)?;
                    let page = hashes
                        .page(table_gpa as usize & (PAGE_SIZE - 1))
                        .ok_or(SnpError::KernelHashesOffset(table_gpa))?;
                    chain.normal_pages(gpa, &page);
                }
                None => {
                    chain.empty_pages(PageType::Zero, gpa, pages_of("SNP_KERNEL_HASHES", s.size)?)
                }
            },
        }
    }
    if inputs.vmm == VmmType::Ec2 {
        for s in ovmf
            .sections()
            .iter()
            .filter(|s| s.kind == SectionType::Cpuid)
        {
            chain.empty_pages(PageType::Cpuid, s.gpa as u64, 1);
        }
    }
    // §1.4 step 3: one VMSA per vCPU.
    for page in vmsa_pages(ovmf, inputs, inputs.guest_features)? {
        chain.vmsa_page(&page);
    }
    Ok(chain.ld())
}

/// The VMSA pages in launch order: the BSP's, then one per AP.
fn vmsa_pages(
    ovmf: &Ovmf,
    inputs: &LaunchInputs,
    sev_features: u64,
) -> Result<Vec<[u8; PAGE_SIZE]>, SnpError> {
    let ap_eip = ovmf.sev_es_reset_eip()?;
    if inputs.vcpus > 1 && ap_eip == 0 {
        return Err(SnpError::NoApEip);
    }
    let bsp = vmsa::vmsa_page(vmsa::BSP_EIP, sev_features, inputs.vcpu_sig, inputs.vmm);
    let mut pages = vec![bsp];
    if inputs.vcpus > 1 {
        let ap = vmsa::vmsa_page(ap_eip, sev_features, inputs.vcpu_sig, inputs.vmm);
        pages.resize(inputs.vcpus as usize, ap);
    }
    Ok(pages)
}

/// SEV: SHA-256 of the firmware and the 176-byte kernel-hashes table; SEV-ES adds the VMSAs
/// (with SEV_FEATURES 0) (§1.7).
fn sev_digest(ovmf: &Ovmf, inputs: &LaunchInputs) -> Result<[u8; 32], SnpError> {
    let mut h = Sha256::new();
    h.update(ovmf.data());
    if let Some(hashes) = &inputs.kernel_hashes {
        if !ovmf.supports_sev_hashes_table() {
            return Err(SnpError::NoSevHashTable);
        }
        h.update(hashes.table());
    }
    if inputs.mode == SevMode::SevEs {
        if inputs.vcpus == 0 {
            return Err(SnpError::NoVcpus);
        }
        for page in vmsa_pages(ovmf, inputs, 0)? {
            h.update(page);
        }
    }
    Ok(h.finalize().into())
}
